"""`chimera-ops config check`: OK, or every error with file, line and field path."""

from __future__ import annotations

import sys

import click

from chimera_ops.cli.common import EXIT_OK, EXIT_USAGE, CliContext, emit_json, json_option, pass_cli


@click.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@json_option
@pass_cli
def check(cli_ctx: CliContext, as_json: bool) -> None:
    """Validate the config file; exit 0 when valid, 2 with every error otherwise."""
    from chimera_ops.config import ConfigError, load_config
    from chimera_ops.config_locate import resolve_config_path

    path = resolve_config_path(cli_ctx.config_path)
    try:
        cfg = load_config(cli_ctx.config_path)
    except ConfigError as exc:
        if as_json:
            emit_json(
                {
                    "ok": False,
                    "file": str(path),
                    "errors": [
                        {"file": i.source, "line": i.line, "path": i.path, "message": i.message}
                        for i in exc.issues
                    ],
                }
            )
        else:
            click.echo(f"{path}: {len(exc.issues)} error(s)", err=True)
            for issue in exc.issues:
                click.echo(f"  {issue}", err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        emit_json(
            {
                "ok": True,
                "file": str(path),
                "components": cfg.start_order(),
                "state_dir": str(cfg.agent.state_dir),
            }
        )
    else:
        click.echo(
            f"OK {path}: {len(cfg.components)} components, start order "
            f"{' -> '.join(cfg.start_order()) or '(none)'}"
        )
    sys.exit(EXIT_OK)
