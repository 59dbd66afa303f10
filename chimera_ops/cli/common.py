"""What every command shares: the config, exit codes, JSON vs rich output, failing cleanly."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from rich.console import Console

    from chimera_ops.client import AgentClient
    from chimera_ops.config import ChimeraConfig

EXIT_OK = 0
EXIT_PROBLEM = 1  # the command worked and found something wrong (or could not do its job)
EXIT_USAGE = 2  # bad arguments or config


class CliContext:
    """Carried in click's ctx.obj."""

    def __init__(self, config_path: str | None) -> None:
        self._explicit = config_path
        self._located = False
        self._config_path = config_path
        self._config: ChimeraConfig | None = None
        self._no_agent_found = False

    @property
    def config_path(self) -> str | None:
        """--config or $CHIMERA_OPS_CONFIG; else the running agent's config when there is no
        ./chimera-ops.yaml; else None (the default path). Looked up once, on first use, so
        commands that need no config never touch the registry."""
        if not self._located:
            self._located = True
            self._config_path = self._locate()
        return self._config_path

    def _locate(self) -> str | None:
        from chimera_ops.config_locate import STATE_DIR_ENV, config_given, running_agents

        if config_given(self._explicit):
            return self._explicit
        agents = running_agents()
        if not agents:
            self._no_agent_found = True
            return None
        if len(agents) > 1:
            from rich.markup import escape

            listing = "".join(
                f"\n  pid {a.pid}  config {a.config}  state_dir {a.state_dir}" for a in agents
            )
            fail(
                escape(f"{len(agents)} chimera-ops agents are running:{listing}"),
                EXIT_USAGE,
                "say which one with --config FILE (or CHIMERA_OPS_CONFIG)",
            )
        agent = agents[0]
        # The agent's own state_dir wins over the file's, so a state_dir it was started with
        # from the environment is where the CLI looks for its socket and store too.
        os.environ.setdefault(STATE_DIR_ENV, agent.state_dir)
        click.echo(f"using the running agent's config {agent.config} (pid {agent.pid})", err=True)
        return agent.config

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
                if self._no_agent_found:
                    from chimera_ops.agent.registry import runtime_dirs

                    where = ", ".join(str(d) for d in runtime_dirs())
                    err.print(
                        f"  and no running agent was found (looked in {where})",
                        markup=False,
                        highlight=False,
                    )
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


def refuse_flags(names: list[str], why: str, as_json: bool = False) -> None:
    """Exit 2 naming the first of these options (parameter names) given on the command line.

    A flag that does not apply is refused, never silently ignored: `restart engine --dry-run`
    once really restarted the engine because `--dry-run` only meant something with `--safe`.
    """
    from click.core import ParameterSource

    ctx = click.get_current_context()
    for param in ctx.command.params:
        if (
            param.name in names
            and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
        ):
            flag = max(param.opts, key=len) if param.opts else param.name
            fail(f"{flag} {why}", EXIT_USAGE, "nothing was done; see --help", as_json)


def agent_client(cfg: ChimeraConfig, why: str, as_json: bool, timeout: float = 180) -> AgentClient:
    """The client of the config's agent; exit 1 (saying `why` it is needed) when none runs."""
    from chimera_ops.client import AgentClient

    client = AgentClient(cfg.agent.state_dir, timeout=timeout)
    if not client.path.exists():
        fail(
            f"no agent is running on {cfg.agent.state_dir}; {why}",
            EXIT_PROBLEM,
            "start it with `chimera-ops agent` (or your service manager), then retry",
            as_json,
        )
    return client
