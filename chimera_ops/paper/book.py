"""Orders, fills and the engine's in-memory book of open orders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Side = Literal["buy", "sell"]
OrderStatus = Literal["open", "filled", "cancelled"]


@dataclass
class Order:
    """A simulated limit order. ``order_id`` is unique across engine runs (boot id + seq)."""

    order_id: str
    boot_id: str
    seq: int
    symbol: str
    side: Side
    price: float
    qty: int
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    placed_tick: int = 0


@dataclass(frozen=True)
class Fill:
    """A full fill of one order.

    ``fill_id`` is derived from the order id, so the same fill can be written any number of
    times (retries after an ambiguous commit) and is stored once.
    """

    fill_id: str
    order_id: str
    boot_id: str
    seq: int
    symbol: str
    side: Side
    price: float
    qty: int
    filled_at: datetime

    @property
    def signed_qty(self) -> int:
        """Position change: buys add, sells subtract."""
        return self.qty if self.side == "buy" else -self.qty


def fill_id_for(order_id: str) -> str:
    """Deterministic fill id: one order fills at most once, fully."""
    return f"{order_id}:f"


class OrderBook:
    """Open orders per symbol. Pure in-memory state, mutated only by the engine loop."""

    def __init__(self, symbols: tuple[str, ...]) -> None:
        self._open: dict[str, dict[str, Order]] = {symbol: {} for symbol in symbols}

    def add(self, order: Order) -> None:
        """Track a new open order."""
        self._open[order.symbol][order.order_id] = order

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders of one symbol, or of all symbols."""
        if symbol is not None:
            return list(self._open[symbol].values())
        return [order for orders in self._open.values() for order in orders.values()]

    def count(self, symbol: str | None = None) -> int:
        """Number of open orders (of one symbol, or in total)."""
        if symbol is not None:
            return len(self._open[symbol])
        return sum(len(orders) for orders in self._open.values())

    def crossing(self, symbol: str, price: float) -> list[Order]:
        """Open orders the price has crossed: buys at or above it, sells at or below it."""
        return [
            order
            for order in self._open[symbol].values()
            if (order.side == "buy" and price <= order.price)
            or (order.side == "sell" and price >= order.price)
        ]

    def remove(self, order: Order) -> None:
        """Forget an order that is no longer open."""
        self._open[order.symbol].pop(order.order_id, None)
