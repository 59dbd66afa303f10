"""Halting an engine before the agent stops it: an operator `stop`/`restart` of a trading
component, `stop --all`, and the agent's own shutdown.

A stop of an engine cancels its open orders whatever happens (a graceful engine cancels them on
SIGTERM, a killed one leaves them to the venue). Halting it through its control contract first
makes that explicit and countable: the engine says how many orders the halt cancelled, and the
count is recorded like every other halt (`trading.record_trading`: a `trading` event, an
`orders_cancelled` event), so "14 orders were cancelled" is never silent.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from chimera_ops.states import State

if TYPE_CHECKING:
    from chimera_ops.store import Store
    from chimera_ops.trading_spec import TradingConfig


# Nothing runs to halt: its control contract would only time out.
DOWN = frozenset({State.STOPPED, State.EXITED, State.FATAL, State.BACKOFF, State.UNKNOWN})


@dataclass
class EngineHalt:
    """What halting one engine did: its state before, what the halt cancelled, or the error."""

    component: str
    was: str | None = None  # "active" | "halted" before the halt; None when unreadable
    open_orders_before: int | None = None
    open_orders: int | None = None  # after the halt
    cancelled: int | None = None
    halted: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """One line for people: what the halt did."""
        if not self.halted:
            return f"could not halt trading first ({self.error})"
        if self.was == "halted" and not self.cancelled:
            return "trading was already halted, no open order cancelled"
        return f"trading halted first, {self.cancelled or 0} open orders cancelled"


async def _halt_one(name: str, trading: TradingConfig, reason: str) -> EngineHalt:
    from chimera_ops.trading import EngineControl, TradingControlError

    result = EngineHalt(name)
    try:
        control = EngineControl(name, trading)
        before = await control.state()
        result.was, result.open_orders_before = before.trading, before.open_orders
        after = await control.halt(reason)
    except TradingControlError as exc:
        result.error = str(exc)
        return result
    result.halted, result.open_orders = True, after.open_orders
    reported = after.extra.get("cancelled")
    if isinstance(reported, int) and not isinstance(reported, bool) and reported >= 0:
        result.cancelled = reported
    else:  # the contract's `cancelled` is optional: what was open and no longer is
        result.cancelled = max(0, before.open_orders - after.open_orders)
    return result


def _row(halt: EngineHalt) -> dict[str, Any]:
    """A halt as a row of `trading.run_on_engines`, the shape `record_trading` records."""
    return {
        "component": halt.component,
        "trading": "halted" if halt.halted else None,
        "open_orders": halt.open_orders,
        "ok": halt.halted,
        "error": halt.error,
        "cancelled": halt.cancelled,
    }


async def halt_engines(
    engines: dict[str, TradingConfig], reason: str, store: Store | None, who: str = "operator"
) -> list[EngineHalt]:
    """Halt every engine concurrently (one frozen engine delays no other), cancelling open
    orders; recorded per engine with the count (or the error) as every halt is."""
    from chimera_ops.trading import record_trading

    results = list(await asyncio.gather(*(_halt_one(n, t, reason) for n, t in engines.items())))
    if store is not None:
        record_trading(store.add_event, "halt", [_row(r) for r in results], who, reason, "agent")
    return results


async def resume_engine(name: str, trading: TradingConfig, reason: str, store: Store | None) -> str:
    """Resume one engine after an operator restart found it back `running`; '' or the error."""
    from chimera_ops.trading import EngineControl, TradingControlError, record_trading

    row: dict[str, Any] = {"component": name, "trading": None, "open_orders": None}
    try:
        state = await EngineControl(name, trading).resume(reason)
    except TradingControlError as exc:
        row.update(ok=False, error=str(exc))
    else:
        row.update(ok=True, error=None, trading=state.trading, open_orders=state.open_orders)
    if store is not None:
        record_trading(store.add_event, "resume", [row], "operator", reason, "agent")
    return str(row["error"] or "")
