"""Shell-completion sources: component names from the config, runbook names from
`runbooks/`, backup set ids from the backup dir. Given to click as `shell_complete=`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from chimera_ops.config import ChimeraConfig

RUNBOOK_DIR = Path(__file__).resolve().parents[2] / "runbooks"


def _config(ctx: click.Context) -> ChimeraConfig | None:
    """The config the command line names (or the default one); None when it does not load.
    Completion must never print an error into the user's prompt."""
    from chimera_ops.config import ConfigError, load_config

    root = ctx.find_root()
    try:
        return load_config(root.params.get("config_path"))
    except (ConfigError, OSError, ValueError):
        return None


def _matching(
    names: list[str], incomplete: str, help_of: dict[str, str] | None = None
) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem

    help_of = help_of or {}
    return [CompletionItem(n, help=help_of.get(n)) for n in names if n.startswith(incomplete)]


def complete_component(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Component names of the config, with their runtime as the help text."""
    config = _config(ctx)
    if config is None:
        return []
    runtimes: dict[str, str] = {name: c.runtime for name, c in config.components.items()}
    return _matching(sorted(runtimes), incomplete, runtimes)


def runbook_names(directory: Path = RUNBOOK_DIR) -> list[str]:
    """The runbooks shipped in `runbooks/` (file names without .md, README excluded)."""
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.md") if p.stem.lower() != "readme")


def complete_runbook(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Runbook names, for a `runbook` command's NAME argument."""
    return _matching(runbook_names(), incomplete)


def complete_backup_set(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """`latest` and the ids of the complete backup sets, newest first."""
    config = _config(ctx)
    if config is None or config.backup is None:
        return []
    from chimera_ops.ops.backup.sets import list_sets

    return _matching(["latest", *(s.id for s in list_sets(config.backup.dir))], incomplete)
