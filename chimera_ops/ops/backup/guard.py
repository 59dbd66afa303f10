"""What stops a restore: a restore never runs under a live trading engine."""

from __future__ import annotations

import asyncio
import os

from chimera_ops.config import ChimeraConfig

STOPPED_STATES = {"stopped", "exited", "fatal"}


def restore_blockers(cfg: ChimeraConfig) -> list[str]:
    """Why a restore must not start now (empty: it may). Each reason says what to do."""
    from chimera_ops.client import AgentClient, AgentUnavailable
    from chimera_ops.trading import EngineControl, TradingControlError

    out = []
    engines = cfg.engines()
    try:
        doc = AgentClient(cfg.agent.state_dir, timeout=10).status()
        states = {c["name"]: c["state"] for c in doc["components"]}
    except AgentUnavailable:
        states = {}
    for name in engines:
        state = states.get(name)
        if state is not None and state not in STOPPED_STATES:
            out.append(
                f"engine {name} is {state} under the agent: `chimera-ops halt-trading --wait` "
                f"then `chimera-ops stop {name}` first"
            )
            continue
        comp = cfg.components[name]
        assert comp.trading is not None
        control = EngineControl(name, comp.trading, {**os.environ, **comp.env})
        try:
            answer = asyncio.run(control.state())
        except TradingControlError:
            continue  # nothing answers: the engine is not running
        out.append(
            f"engine {name} answers at {control.target} (trading "
            f"{'halted' if answer.halted else 'ACTIVE'}): stop it before a restore"
        )
    return out
