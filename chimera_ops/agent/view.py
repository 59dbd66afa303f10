"""The agent as its control API and its status document see it: the few attributes and
calls they use.

`agent/loop.py` builds the API (and the status document) over its `Agent`, which has all of
these; they depend on this protocol, not on the loop, so they and the loop do not import each
other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from chimera_ops.agent.jobs import JobRunner
    from chimera_ops.agent.metrics import AgentMetrics
    from chimera_ops.agent.unit import Unit
    from chimera_ops.agent.watch import Watcher
    from chimera_ops.alerts import AlertSink
    from chimera_ops.config import ChimeraConfig
    from chimera_ops.store import Store


class AgentView(Protocol):
    """What the control API reads and calls on the running agent."""

    config: ChimeraConfig
    store: Store | None
    metrics: AgentMetrics
    watcher: Watcher | None
    alerts: AlertSink | None
    jobs: JobRunner | None
    order: list[str]
    units: dict[str, Unit]
    state_dir: Path
    started_at: float
    last_tick: float
    tick_lag: float

    def unit(self, name: str) -> Unit:
        """The unit of a component (UnknownComponent lists the known ones)."""
        ...

    async def restart(self, name: str, reason: str) -> None:
        """An operator restart of one component."""
        ...

    def status(self) -> dict[str, Any]:
        """The status document (`chimera-ops status --json`)."""
        ...
