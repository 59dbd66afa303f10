"""Finding the config file and, cheaply, the state_dir in it (no pydantic).

With no --config, no $CHIMERA_OPS_CONFIG and no ./chimera-ops.yaml, the config of the one agent
running (agent/registry.py) is used instead (`running_agents`; the CLI says so).

`chimera-ops status` must answer fast: with an agent running, all it needs is the agent's socket,
which lives in `agent.state_dir`. Full validation (config.py) costs more than the whole status
round trip, so status reads just this one field and validates the file only when no agent answers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chimera_ops.agent.registry import AgentEntry

DEFAULT_CONFIG_NAME = "chimera-ops.yaml"
CONFIG_ENV = "CHIMERA_OPS_CONFIG"
STATE_DIR_ENV = "CHIMERA_AGENT__STATE_DIR"


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """--config, else $CHIMERA_OPS_CONFIG, else ./chimera-ops.yaml."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return Path(DEFAULT_CONFIG_NAME)


def config_given(explicit: str | os.PathLike[str] | None) -> bool:
    """True when there is a config to use without asking the registry: --config,
    $CHIMERA_OPS_CONFIG, or ./chimera-ops.yaml."""
    return bool(explicit or os.environ.get(CONFIG_ENV)) or Path(DEFAULT_CONFIG_NAME).exists()


def running_agents() -> list[AgentEntry]:
    """The live agents in the runtime registry (stale entries are cleaned on the way).

    Only agents that know their config file count: the CLI needs a file to load.
    """
    from chimera_ops.agent.registry import live_agents

    return [entry for entry in live_agents() if entry.config]


def state_dir_hint(explicit: str | os.PathLike[str] | None) -> Path | None:
    """`agent.state_dir` as the validated config would resolve it, or None if unreadable."""
    import yaml

    path = resolve_config_path(explicit)
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: faster, as safe
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    agent = data.get("agent") if isinstance(data, dict) else None
    raw = os.environ.get(STATE_DIR_ENV) or (agent or {}).get("state_dir", "./var")
    if not isinstance(raw, str | os.PathLike):
        return None
    state_dir = Path(raw)
    return state_dir if state_dir.is_absolute() else (path.resolve().parent / state_dir).resolve()
