"""Seeded synthetic price feed: a geometric random walk with volatility bursts."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

# Rough starting prices so the numbers look familiar; unknown symbols get a seeded price.
_BASE_PRICES = {
    "BTCUSDT": 60_000.0,
    "ETHUSDT": 3_000.0,
    "SOLUSDT": 150.0,
    "BNBUSDT": 550.0,
    "XRPUSDT": 0.55,
    "ADAUSDT": 0.45,
    "DOGEUSDT": 0.12,
    "AVAXUSDT": 35.0,
}


@dataclass
class _SymbolWalk:
    price: float
    burst_ticks_left: int = 0


@dataclass
class PriceFeed:
    """Deterministic (for a given seed) multi-symbol price generator.

    ``step()`` advances every symbol by one tick. Volatility is ``base_vol`` per tick most of
    the time; with probability ``burst_prob`` a burst starts that multiplies it by
    ``burst_factor`` for a random number of ticks (this is what makes fills come in waves).
    """

    symbols: tuple[str, ...]
    seed: int
    base_vol: float = 0.0004
    burst_prob: float = 0.005
    burst_factor: float = 6.0
    _rng: random.Random = field(init=False, repr=False)
    _walks: dict[str, _SymbolWalk] = field(init=False, repr=False)
    last_tick_wall: float = field(init=False, default=0.0)
    last_tick_mono: float = field(init=False, default=0.0)
    ticks: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._walks = {}
        for symbol in self.symbols:
            base = _BASE_PRICES.get(symbol) or round(self._rng.uniform(1.0, 100.0), 4)
            self._walks[symbol] = _SymbolWalk(price=base)
        now_mono = time.monotonic()
        self.last_tick_mono = now_mono
        self.last_tick_wall = time.time()

    def step(self) -> dict[str, float]:
        """Advance one tick; return the new price of every symbol."""
        prices: dict[str, float] = {}
        for symbol, walk in self._walks.items():
            if walk.burst_ticks_left > 0:
                walk.burst_ticks_left -= 1
                vol = self.base_vol * self.burst_factor
            else:
                if self._rng.random() < self.burst_prob:
                    walk.burst_ticks_left = self._rng.randint(20, 120)
                vol = self.base_vol
            walk.price *= math.exp(self._rng.gauss(0.0, vol))
            prices[symbol] = walk.price
        self.ticks += 1
        self.last_tick_mono = time.monotonic()
        self.last_tick_wall = time.time()
        return prices

    def price(self, symbol: str) -> float:
        """Last price of ``symbol`` (KeyError if unknown)."""
        return self._walks[symbol].price

    def prices(self) -> dict[str, float]:
        """Last price of every symbol."""
        return {symbol: walk.price for symbol, walk in self._walks.items()}

    def lag_seconds(self) -> float:
        """Seconds since the last tick (monotonic clock, so wall-clock jumps do not matter)."""
        return max(0.0, time.monotonic() - self.last_tick_mono)
