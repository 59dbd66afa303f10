"""The `chimera-ops` click group. Each command lives in its own thin module, imported only when
that command runs (click's lazy-group pattern): `chimera-ops status` must start fast."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from chimera_ops import __version__
from chimera_ops.cli.common import CliContext

# command name -> "module:attribute" under chimera_ops.cli
COMMANDS = {
    "agent": "agent_cmd:agent",
    "status": "status:status",
    "start": "control:start",
    "stop": "control:stop",
    "restart": "control:restart",
    "events": "events:events",
    "audit": "audit_cmd:audit",
    "config": "config_cmd:config",
    "probe": "probe:probe",
    "doctor": "doctor_cmd:doctor",
    "incidents": "incidents_cmd:incidents",
    "init": "init_cmd:init",
    "halt-trading": "trading_cmd:halt_trading",
    "resume-trading": "trading_cmd:resume_trading",
    "trading-state": "trading_cmd:trading_state",
    "emergency-stop": "control:emergency_stop",
    "procedure": "procedure_cmd:procedure",
    "backup": "backup_cmd:backup",
    "restore": "backup_cmd:restore",
    "collect-logs": "bundle_cmd:collect_logs",
    "logs": "logs_cmd:logs",
    "maintenance": "maintenance_cmd:maintenance",
    "runbook": "runbook_cmd:runbook",
    "install-service": "service_cmd:install_service",
    "completion": "completion_cmd:completion",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(f"chimera_ops.cli.{module}"), attribute)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        as_json = "--json" in ctx.args  # the subcommand's arguments (emptied by invoke)
        try:
            return super().invoke(ctx)
        except Exception as exc:
            store_error(exc, as_json)
            raise


def store_error(exc: Exception, as_json: bool) -> None:
    """A store that cannot be read is one clear line and the next step (exit 1), never a
    traceback; any other exception is left alone."""
    sqlite3 = sys.modules.get("sqlite3")  # not imported: the error cannot be one of its own
    if sqlite3 is None or not isinstance(exc, sqlite3.Error):
        return
    from chimera_ops.cli.common import EXIT_PROBLEM, fail
    from chimera_ops.store import StoreDamaged, is_damage

    if isinstance(exc, StoreDamaged) or is_damage(exc):
        fail(
            str(exc) if isinstance(exc, StoreDamaged) else f"the store is damaged ({exc})",
            EXIT_PROBLEM,
            "start the agent (`chimera-ops agent`): it sets the damaged file aside as "
            "chimera.db.damaged-<UTC> and starts a fresh store; or move chimera.db away",
            as_json,
        )
    fail(
        f"the store cannot be used: {exc}",
        EXIT_PROBLEM,
        "check the state dir (free space, permissions), then run the command again",
        as_json,
    )


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chimera-ops")
@click.option(
    "--config",
    "config_path",
    envvar="CHIMERA_OPS_CONFIG",
    type=click.Path(dir_okay=False),
    help="Config file (default: $CHIMERA_OPS_CONFIG or ./chimera-ops.yaml).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Watchdog agent and operations CLI for a small trading stack.

    Exit codes: 0 ok, 1 problem found, 2 usage or config error.
    """
    ctx.obj = CliContext(config_path=config_path)


def main(*args: Any) -> None:
    """Console-script entry point."""
    cli(prog_name="chimera-ops")
