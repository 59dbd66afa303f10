"""`chimera-ops init --from-compose FILE [--out F]`: write a config from a compose file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from chimera_ops.cli.common import EXIT_OK, EXIT_USAGE


@click.command("init")
@click.option(
    "--from-compose",
    "compose_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The docker compose file to read (docker-compose.yml).",
)
@click.option(
    "--out",
    "out",
    default="chimera-ops.yaml",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the config ('-' for stdout).",
)
@click.option("--force", is_flag=True, help="Overwrite --out when it exists.")
def init(compose_file: Path, out: Path, force: bool) -> None:
    """Write a chimera-ops config that watches every service of a compose file.

    Exit 0 when written (and `config check` passes on it), 2 when the compose file cannot be
    read or parsed (file:line) or --out exists without --force.
    """
    from chimera_ops.config import ConfigError, parse_config
    from chimera_ops.docker.compose_import import config_from_compose, read_compose

    try:
        text = config_from_compose(read_compose(compose_file), str(compose_file), compose_file)
        target = Path("-") if str(out) == "-" else out
        base = Path.cwd() if str(out) == "-" else out.resolve().parent
        # The output must pass `config check` as written: validate before writing anything.
        parse_config(text, str(target), environ={}, base_dir=base)
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        sys.exit(EXIT_USAGE)
    if str(out) == "-":
        click.echo(text, nl=False)
        sys.exit(EXIT_OK)
    if out.exists() and not force:
        click.echo(f"{out} exists; pass --force to overwrite it", err=True)
        sys.exit(EXIT_USAGE)
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out} from {compose_file}: `chimera-ops --config {out} config check`")
    sys.exit(EXIT_OK)
