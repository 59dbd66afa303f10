"""`chimera-ops agent`: run the watchdog in the foreground."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from chimera_ops.cli.common import EXIT_PROBLEM, CliContext, fail, pass_cli
from chimera_ops.logfmt import FORMATS
from chimera_ops.logfmt import configure as configure_logging


@click.command()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option(
    "--log-format",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    envvar="CHIMERA_OPS_LOG_FORMAT",
    help="json: one object a line (time, level, component, event, reason) for Loki/journald.",
)
@pass_cli
def agent(cli_ctx: CliContext, verbose: bool, log_format: str) -> None:
    """Run the agent in the foreground until SIGTERM or Ctrl-C.

    On SIGTERM/SIGINT it stops the components in reverse dependency order and exits 0.
    """
    cfg = cli_ctx.config()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    configure_logging(logging.DEBUG if verbose else logging.INFO, log_format)
    from chimera_ops.agent.lock import AgentAlreadyRunning
    from chimera_ops.agent.loop import Agent

    try:
        code = asyncio.run(Agent(cfg).run())
    except AgentAlreadyRunning as exc:
        fail(str(exc), EXIT_PROBLEM)
    except RuntimeError as exc:
        fail(str(exc), EXIT_PROBLEM)
    sys.exit(code)
