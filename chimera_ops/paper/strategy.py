"""A deliberately simple quoting strategy: rest limit orders around the price, re-quote stale ones."""

from __future__ import annotations

import random
from dataclasses import dataclass

from chimera_ops.paper.book import Order, Side


@dataclass(frozen=True)
class Quote:
    """An order the strategy wants placed."""

    symbol: str
    side: Side
    price: float
    qty: int


class QuotingStrategy:
    """Places buy limits below and sell limits above the price; cancels far or old orders.

    Decisions are pure functions of (price, open orders, tick) plus a seeded RNG, so a run is
    reproducible for a given ``--seed``.
    """

    def __init__(
        self,
        seed: int,
        orders_per_tick: int,
        max_open: int,
        offset: float = 0.0008,
        max_age_ticks: int = 300,
    ) -> None:
        self._rng = random.Random(seed ^ 0x5EED)
        self.orders_per_tick = orders_per_tick
        self.max_open = max_open
        self.offset = offset
        self.max_age_ticks = max_age_ticks

    def to_cancel(self, price: float, open_orders: list[Order], tick: int) -> list[Order]:
        """Orders that drifted too far from the price or rested too long."""
        limit = self.offset * 4
        return [
            order
            for order in open_orders
            if abs(order.price - price) / price > limit
            or tick - order.placed_tick > self.max_age_ticks
        ]

    def quotes(self, symbol: str, price: float, open_count: int) -> list[Quote]:
        """New orders for this tick, never more than the open-order cap allows."""
        room = min(self.orders_per_tick, self.max_open - open_count)
        quotes: list[Quote] = []
        for _ in range(max(0, room)):
            side: Side = "buy" if self._rng.random() < 0.5 else "sell"
            distance = self.offset * self._rng.uniform(0.1, 1.5)
            limit = price * (1 - distance) if side == "buy" else price * (1 + distance)
            quotes.append(Quote(symbol, side, round(limit, 8), self._rng.randint(1, 5)))
        return quotes
