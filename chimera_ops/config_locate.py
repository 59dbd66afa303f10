"""Finding the config file and, cheaply, the state_dir in it (no pydantic).

`chimera-ops status` must answer fast: with an agent running, all it needs is the agent's socket,
which lives in `agent.state_dir`. Full validation (config.py) costs more than the whole status
round trip, so status reads just this one field and validates the file only when no agent answers.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def state_dir_hint(explicit: str | os.PathLike[str] | None) -> Path | None:
    """`agent.state_dir` as the validated config would resolve it, or None if unreadable."""
    import yaml

    path = resolve_config_path(explicit)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    agent = data.get("agent") if isinstance(data, dict) else None
    raw = os.environ.get(STATE_DIR_ENV) or (agent or {}).get("state_dir", "./var")
    if not isinstance(raw, str | os.PathLike):
        return None
    state_dir = Path(raw)
    return state_dir if state_dir.is_absolute() else (path.resolve().parent / state_dir).resolve()
