"""Writes waiting for PostgreSQL: coalesced order updates, ordered fills, the trading state."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from chimera_ops.paper.book import Fill, Order


@dataclass(frozen=True)
class OrderRow:
    """The latest known state of one order, as it will be written."""

    order_id: str
    boot_id: str
    seq: int
    symbol: str
    side: str
    price: float
    qty: int
    status: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, order: Order) -> OrderRow:
        """Snapshot an order (the live object keeps changing)."""
        return cls(
            order.order_id,
            order.boot_id,
            order.seq,
            order.symbol,
            order.side,
            order.price,
            order.qty,
            order.status,
            order.created_at,
            order.updated_at,
        )


@dataclass(frozen=True)
class StateRow:
    """Persisted trading state (operator intent: survives a restart)."""

    trading: str
    since: datetime
    reason: str


@dataclass
class Batch:
    """One transaction's worth of writes."""

    orders: list[OrderRow] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    state: StateRow | None = None

    def empty(self) -> bool:
        """True when there is nothing to write."""
        return not self.orders and not self.fills and self.state is None


class WriteBuffer:
    """Accumulates writes between flushes.

    Order updates are coalesced by order id (only the latest status matters); fills keep their
    order so each boot's fill sequence is committed as a gap-free prefix. A failed batch is put
    back *in front of* newer writes, never after them.
    """

    def __init__(self) -> None:
        self._orders: dict[str, OrderRow] = {}
        self._fills: list[Fill] = []
        self._state: StateRow | None = None

    def add_order(self, order: Order) -> None:
        """Queue the current state of an order."""
        self._orders[order.order_id] = OrderRow.of(order)

    def add_fill(self, fill: Fill) -> None:
        """Queue a fill (its order must be queued too, in the same or an earlier batch)."""
        self._fills.append(fill)

    def set_state(self, state: StateRow) -> None:
        """Queue the trading state."""
        self._state = state

    def pending(self) -> int:
        """Number of rows waiting."""
        return len(self._orders) + len(self._fills) + (1 if self._state else 0)

    def take(self, max_rows: int | None = None) -> Batch:
        """Remove and return up to ``max_rows`` fills plus orders (everything by default).

        A fill's order always travels in the same batch (or an earlier one), never later, so
        the foreign key holds; orders whose fill is still queued stay queued with it.
        """
        if max_rows is None or self.pending() <= max_rows:
            batch = Batch(list(self._orders.values()), self._fills, self._state)
            self._orders, self._fills, self._state = {}, [], None
            return batch
        fills, self._fills = self._fills[:max_rows], self._fills[max_rows:]
        needed = {fill.order_id for fill in fills}
        waiting = {fill.order_id for fill in self._fills}
        room = max(0, max_rows - len(fills))
        orders: list[OrderRow] = []
        for order_id, row in list(self._orders.items()):
            if order_id in needed or (order_id not in waiting and room > 0):
                if order_id not in needed:
                    room -= 1
                orders.append(row)
                del self._orders[order_id]
        batch = Batch(orders=orders, fills=fills, state=self._state)
        self._state = None
        return batch

    def put_back(self, batch: Batch) -> None:
        """Return a batch that failed to commit; newer queued rows win over its rows."""
        merged: dict[str, OrderRow] = {row.order_id: row for row in batch.orders}
        merged.update(self._orders)
        self._orders = merged
        self._fills = batch.fills + self._fills
        if self._state is None and batch.state is not None:
            self._state = replace(batch.state)
