"""What every command shares: the config, exit codes, JSON vs rich output, failing cleanly."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from rich.console import Console

    from chimera_ops.config import ChimeraConfig

EXIT_OK = 0
EXIT_PROBLEM = 1  # the command worked and found something wrong (or could not do its job)
EXIT_USAGE = 2  # bad arguments or config


@dataclass
class CliContext:
    """Carried in click's ctx.obj."""

    config_path: str | None
    _config: ChimeraConfig | None = field(default=None, repr=False)

    def config(self) -> ChimeraConfig:
        """The validated config; a config error prints every issue and exits 2."""
        if self._config is None:
            from chimera_ops.config import ConfigError, load_config

            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                err = stderr_console()
                err.print("[bold red]config error[/]")
                for issue in exc.issues:
                    err.print(f"  {issue}", markup=False, highlight=False)
                sys.exit(EXIT_USAGE)
        return self._config


pass_cli = click.make_pass_decorator(CliContext)


def stdout_console() -> Console:
    from rich.console import Console

    return Console()


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def emit_json(data: Any) -> None:
    """Machine output: one JSON document on stdout."""
    click.echo(json.dumps(data, indent=2, default=str))


def fail(
    message: str, code: int = EXIT_PROBLEM, hint: str | None = None, as_json: bool = False
) -> NoReturn:
    """Print an error (and what to do next) and exit with a documented code."""
    if as_json:
        emit_json({"error": message, "hint": hint, "exit_code": code})
    else:
        err = stderr_console()
        err.print(f"[bold red]error:[/] {message}", highlight=False)
        if hint:
            err.print(f"[yellow]next:[/] {hint}", highlight=False)
    sys.exit(code)


def unknown_component(name: str, known: list[str], as_json: bool = False) -> NoReturn:
    """The standard answer to a component name the config does not define (exit 2)."""
    listing = ", ".join(sorted(known)) or "(none configured)"
    fail(f"unknown component {name!r}", EXIT_USAGE, f"known components: {listing}", as_json)


def json_option(func: Any) -> Any:
    """The `--json` flag every command has."""
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")(
        func
    )
