"""`chimera-ops completion bash|zsh|fish`: click's completion script.

Install: `eval "$(chimera-ops completion bash)"` in ~/.bashrc (zsh: ~/.zshrc), or
`chimera-ops completion fish > ~/.config/fish/completions/chimera-ops.fish`. The names
components, runbooks and backup sets complete with come from `cli/complete.py`.
"""

from __future__ import annotations

import sys

import click

from chimera_ops.cli.common import EXIT_OK, EXIT_USAGE, emit_json, fail, json_option

PROG = "chimera-ops"
COMPLETE_VAR = "_CHIMERA_OPS_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def script(shell: str, command: click.Command) -> str:
    """click's completion script for `shell`."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - SHELLS are click's own
        raise ValueError(shell)
    return cls(command, {}, PROG, COMPLETE_VAR).source()


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@json_option
@click.pass_context
def completion(ctx: click.Context, shell: str, as_json: bool) -> None:
    """Print the shell completion script for bash, zsh or fish.

    bash/zsh: eval "$(chimera-ops completion bash)"; fish: chimera-ops completion fish >
    ~/.config/fish/completions/chimera-ops.fish. Component, runbook and backup-set names
    complete from the config and the store.
    """
    root = ctx.find_root().command
    try:
        text = script(shell, root)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc), EXIT_USAGE, as_json=as_json)
    if as_json:
        emit_json({"shell": shell, "script": text, "env_var": COMPLETE_VAR})
    else:
        click.echo(text)
    sys.exit(EXIT_OK)
