"""The engine proper: tick loop, order lifecycle, trading state, write-behind to PG and Redis."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chimera_ops.aio import within
from chimera_ops.paper.book import Fill, Order, OrderBook, fill_id_for
from chimera_ops.paper.buffer import StateRow, WriteBuffer
from chimera_ops.paper.cache import RedisCache
from chimera_ops.paper.config import EngineConfig
from chimera_ops.paper.feed import PriceFeed
from chimera_ops.paper.metrics import EngineMetrics
from chimera_ops.paper.ratelimit import RequestMeter
from chimera_ops.paper.store import PersistedState, PgStore, one_line
from chimera_ops.paper.strategy import Quote, QuotingStrategy

log = logging.getLogger("chimera.paper")

# One transaction writes at most this many rows, so a halt waiting on the flush lock waits
# for one bounded batch, not for a whole backlog.
MAX_ROWS_PER_BATCH = 5_000
# Above this many buffered rows the strategy stops quoting (fills of resting orders still
# happen): a slow or absent database throttles trading instead of growing memory without bound.
MAX_PENDING_ROWS = 20_000
BACKOFF_MAX = 5.0


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _DepHealth:
    """Up/down of one dependency, with the reason it is down; logs each transition once."""

    name: str
    up: bool = True
    reason: str = ""

    def ok(self) -> None:
        if not self.up:
            log.warning("%s recovered", self.name)
        self.up, self.reason = True, ""

    def fail(self, reason: str) -> None:
        if self.up:
            log.error("%s lost: %s", self.name, reason)
        self.up, self.reason = False, reason


class Engine:
    """One paper-trading engine: owns the feed, the book, the strategy and both stores.

    Everything runs on one asyncio loop, so state is mutated without locks; only flushes are
    serialised (the writer loop and a halt may both want to flush).
    """

    def __init__(self, cfg: EngineConfig, store: PgStore, cache: RedisCache) -> None:
        self.cfg = cfg
        self.store = store
        self.cache = cache
        self.metrics = EngineMetrics()
        self.metrics.register_pools({"postgres": store.stats, "redis": cache.stats})
        self.feed = PriceFeed(cfg.symbols, cfg.seed)
        # Read at scrape time: a frozen tick loop must show up as a growing lag.
        self.metrics.feed_lag.set_function(self.feed.lag_seconds)
        self.book = OrderBook(cfg.symbols)
        self.strategy = QuotingStrategy(cfg.seed, cfg.orders_per_tick, cfg.max_open_per_symbol)
        self.buffer = WriteBuffer()
        self.metrics.pending_writes.set_function(self.buffer.pending)
        self.requests = RequestMeter()
        self.metrics.exchange_limit.set(cfg.exchange_rate_limit)
        self.metrics.exchange_per_minute.set_function(
            lambda: self.requests.per_minute(time.monotonic())
        )
        self.metrics.exchange_peak.set_function(self.requests.peak)
        self.boot_id = uuid.uuid4().hex[:12]
        self._order_seq = itertools.count(1)
        self._fill_seq = itertools.count(1)
        self.trading = "active"
        self.since = time.time()
        self.reason = "started"
        self.positions: dict[str, int] = {}
        self.fills_committed = 0
        self.db = _DepHealth("postgres")
        self.redis = _DepHealth("redis")
        self.stopping = False
        self._flush_lock = asyncio.Lock()
        self._cache_dirty = True
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = time.time()
        self.health_delay = 0.0  # set by the slow-health fault
        # The stuck-orders fault: the exchange neither fills nor confirms cancels, so open
        # orders never drain (what a halt's drain timeout is for).
        self.stuck_orders = False

    # ----------------------------------------------------------------- lifecycle
    def adopt(self, persisted: PersistedState) -> None:
        """Take over what the previous run left: trading state, open orders, positions."""
        self.positions = dict(persisted.positions)
        self.fills_committed = persisted.fills
        if persisted.state is not None:
            self.trading = persisted.state.trading
            self.since = persisted.state.since.timestamp()
            self.reason = persisted.state.reason
        else:
            self._set_state("active", "first start")
        if self.cfg.start_halted and self.trading != "halted":
            self._set_state("halted", "started with --start-halted")
        for order in persisted.open_orders:
            order.placed_tick = 0
            self.book.add(order)
        if self.trading == "halted" and self.book.count():
            # Halted means no exposure: orders a crashed run left open are cancelled now.
            self.cancel_all()
        self.metrics.halted.set(1 if self.trading == "halted" else 0)
        self.metrics.open_orders.set(self.book.count())
        log.info(
            "boot %s: trading=%s (%s), %d open orders adopted, %d fills on record",
            self.boot_id,
            self.trading,
            self.reason,
            self.book.count(),
            self.fills_committed,
        )

    def start(self) -> None:
        """Start the background loops."""
        for coro in (
            self._tick_loop(),
            self._writer_loop(),
            self._cache_loop(),
            self._health_loop(),
        ):
            self._tasks.append(asyncio.create_task(coro))

    async def shutdown(self) -> None:
        """Graceful stop: stop trading, cancel open orders, flush, close pools.

        The *persisted* trading state is left as it is: a restart after SIGTERM resumes what
        the operator last asked for; an operator halt is what survives restarts.
        """
        self.stopping = True
        if self.trading != "halted":
            self.trading, self.reason, self.since = "halted", "shutting down", time.time()
        cancelled = self.cancel_all()
        log.info("shutdown: %d open orders cancelled; stopping loops", cancelled)
        for task in self._tasks:
            task.cancel()
        # Bounded: a loop that swallowed its cancellation must not hold the exit hostage.
        _, stuck = await asyncio.wait(self._tasks, timeout=2.0) if self._tasks else ((), ())
        if stuck:
            names = ", ".join(task.get_coro().__name__ for task in stuck)  # type: ignore[union-attr]
            log.error("shutdown: loops still running after cancel: %s", names)
        log.info("shutdown: loops stopped; flushing")
        flushed = await self.flush(timeout=3.0)
        pending = self.buffer.pending()
        if not flushed or pending:
            log.error("shutdown: %d rows could not be written to PostgreSQL", pending)
        try:
            await within(self._push_cache(), timeout=1.0)
        except Exception as exc:  # noqa: BLE001 - best effort on the way out
            log.warning("shutdown: redis push failed: %s", one_line(exc))
        log.info("shutdown: closing pools")
        await asyncio.gather(self.store.close(), self.cache.close(), return_exceptions=True)
        log.info(
            "shutdown complete: %d orders cancelled, %d fills on record",
            cancelled,
            self.fills_committed,
        )

    # ----------------------------------------------------------------- trading
    def _set_state(self, trading: str, reason: str) -> None:
        self.trading, self.reason, self.since = trading, reason, time.time()
        self.buffer.set_state(StateRow(trading, datetime.fromtimestamp(self.since, UTC), reason))
        self.metrics.halted.set(1 if trading == "halted" else 0)
        self._cache_dirty = True

    def state(self) -> dict[str, Any]:
        """The control-contract state document."""
        return {
            "trading": self.trading,
            "open_orders": self.book.count(),
            "since": self.since,
            "reason": self.reason,
        }

    async def halt(self, reason: str, cancel_open_orders: bool) -> dict[str, Any]:
        """Stop new orders (and cancel open ones); idempotent. Waits for the write to commit."""
        changed = self.trading != "halted"
        if changed:
            self._set_state("halted", reason)
            log.warning("trading halted: %s", reason)
        cancelled = self.cancel_all() if cancel_open_orders else 0
        persisted = await self.flush(timeout=3.0)
        return {**self.state(), "changed": changed, "cancelled": cancelled, "persisted": persisted}

    async def resume(self, reason: str) -> dict[str, Any]:
        """Allow new orders again; idempotent."""
        changed = self.trading != "active"
        if changed:
            self._set_state("active", reason)
            log.warning("trading resumed: %s", reason)
        persisted = await self.flush(timeout=3.0)
        return {**self.state(), "changed": changed, "persisted": persisted}

    def cancel_all(self) -> int:
        """Cancel every open order; returns how many."""
        if self.stuck_orders:
            log.warning("cancel of %d open orders not confirmed (stuck-orders)", self.book.count())
            return 0
        now = _now()
        orders = self.book.open_orders()
        for order in orders:
            self._cancel(order, now)
        return len(orders)

    def _place(self, quote: Quote, now: datetime, tick: int) -> None:
        seq = next(self._order_seq)
        order = Order(
            order_id=f"{self.boot_id}-{seq}",
            boot_id=self.boot_id,
            seq=seq,
            symbol=quote.symbol,
            side=quote.side,
            price=quote.price,
            qty=quote.qty,
            status="open",
            created_at=now,
            updated_at=now,
            placed_tick=tick,
        )
        self.book.add(order)
        self.buffer.add_order(order)
        self.metrics.orders.labels(quote.symbol).inc()
        self._exchange_request()

    def _cancel(self, order: Order, now: datetime) -> None:
        order.status, order.updated_at = "cancelled", now
        self.book.remove(order)
        self.buffer.add_order(order)
        self.metrics.cancels.inc()
        self._exchange_request()

    def _exchange_request(self) -> None:
        self.requests.hit(time.monotonic())
        self.metrics.exchange_requests.inc()

    def _fill(self, order: Order, now: datetime) -> None:
        order.status, order.updated_at = "filled", now
        self.book.remove(order)
        self.buffer.add_order(order)
        self.buffer.add_fill(
            Fill(
                fill_id=fill_id_for(order.order_id),
                order_id=order.order_id,
                boot_id=self.boot_id,
                seq=next(self._fill_seq),
                symbol=order.symbol,
                side=order.side,
                price=order.price,
                qty=order.qty,
                filled_at=now,
            )
        )

    def tick(self) -> None:
        """One feed step: fill crossed orders, then (if trading) cancel stale and quote."""
        prices = self.feed.step()
        tick = self.feed.ticks
        now = _now()
        trading = self.trading == "active" and not self.stopping
        if trading and self.buffer.pending() > MAX_PENDING_ROWS:
            trading = False
            self.metrics.throttled_ticks.inc()
        for symbol, price in prices.items():
            for order in [] if self.stuck_orders else self.book.crossing(symbol, price):
                self._fill(order, now)
            if trading:
                for order in self.strategy.to_cancel(price, self.book.open_orders(symbol), tick):
                    self._cancel(order, now)
                for quote in self.strategy.quotes(symbol, price, self.book.count(symbol)):
                    self._place(quote, now, tick)
        self.metrics.open_orders.set(self.book.count())

    async def _tick_loop(self) -> None:
        # Ticks are scheduled against a fixed timeline; when the loop falls behind it catches
        # up in bursts (bounded), so --rate is the real average rate under load.
        period = 1.0 / self.cfg.rate
        max_burst = max(1, int(self.cfg.rate * 0.25))
        next_at = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            due = min(max_burst, int((now - next_at) / period) + 1)
            for _ in range(due):
                self.tick()
            next_at += due * period
            if now - next_at > 1.0:
                next_at = now  # too far behind: drop the backlog instead of spiralling
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    # ----------------------------------------------------------------- persistence
    async def flush(self, timeout: float = 10.0) -> bool:
        """Write what is buffered *now*, in bounded batches, within ``timeout`` seconds.

        Rows queued while flushing are left for the next flush: under a load the writer cannot
        keep up with, "until empty" would never return. True when every row that was pending
        at the call has committed.
        """
        deadline = time.monotonic() + timeout
        async with self._flush_lock:
            target = self.buffer.pending()
            written = 0
            while written < target and self.buffer.pending():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                batch = self.buffer.take(MAX_ROWS_PER_BATCH)
                rows = len(batch.orders) + len(batch.fills) + (1 if batch.state else 0)
                started = time.monotonic()
                try:
                    positions = await within(self.store.write_batch(batch), remaining)
                except asyncio.CancelledError:
                    self.buffer.put_back(batch)
                    raise
                except Exception as exc:  # noqa: BLE001 - any failure: keep the rows, retry later
                    self.buffer.put_back(batch)
                    self.metrics.flush_errors.inc()
                    self.db.fail(f"write failed: {one_line(exc)}")
                    self.metrics.db_up.set(0)
                    return False
                written += rows
                self.metrics.flush_seconds.observe(time.monotonic() - started)
                # A fill counts only now that its transaction has committed.
                self.fills_committed += len(batch.fills)
                self.metrics.fills.inc(len(batch.fills))
                if positions:
                    self.positions.update(positions)
                    self._cache_dirty = True
                self.db.ok()
                self.metrics.db_up.set(1)
            return True

    async def _writer_loop(self) -> None:
        failures = 0
        while not self.stopping:
            ok = await self.flush()
            failures = 0 if ok else failures + 1
            delay = self.cfg.flush_interval if ok else min(BACKOFF_MAX, 0.2 * 2**failures)
            await asyncio.sleep(delay)

    async def _push_cache(self) -> None:
        dirty = self._cache_dirty
        state = {
            "trading": self.trading,
            "since": repr(self.since),
            "reason": self.reason,
            "open_orders": str(self.book.count()),
            "boot_id": self.boot_id,
        }
        await self.cache.push(self.feed.prices(), dict(self.positions) if dirty else None, state)
        if dirty:
            self._cache_dirty = False

    async def _cache_loop(self) -> None:
        failures = 0
        while not self.stopping:
            try:
                await within(self._push_cache(), timeout=5.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                failures += 1
                self._cache_dirty = True  # re-send everything once Redis is back
                self.redis.fail(f"write failed: {one_line(exc)}")
                self.metrics.redis_up.set(0)
                await asyncio.sleep(min(BACKOFF_MAX, 0.2 * 2**failures))
                continue
            failures = 0
            self.redis.ok()
            self.metrics.redis_up.set(1)
            await asyncio.sleep(0.25)

    async def _health_loop(self) -> None:
        while not self.stopping:
            # Pings run concurrently so one dead server does not delay noticing the other.
            pg, rd = await asyncio.gather(
                self.store.ping(2.0), self.cache.ping(2.0), return_exceptions=True
            )
            if isinstance(pg, BaseException):
                stats = self.store.stats()
                self.db.fail(
                    f"ping failed: {one_line(pg)} "
                    f"(pool {stats['in_use']}/{stats['max']} in use, {stats['waiting']} waiting)"
                )
                self.metrics.db_up.set(0)
            elif not self.buffer.pending() or self.db.up:
                # A good ping while old writes still fail is not recovery yet: the writer decides.
                self.db.ok()
                self.metrics.db_up.set(1)
            if isinstance(rd, BaseException):
                self.redis.fail(f"ping failed: {one_line(rd)}")
                self.metrics.redis_up.set(0)
            await asyncio.sleep(1.0)

    # ----------------------------------------------------------------- health
    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, document) for /health: DB, Redis, feed staleness."""
        lag = self.feed.lag_seconds()
        reasons: list[str] = []
        if not self.db.up:
            reasons.append(f"postgres: {self.db.reason}")
        if not self.redis.up:
            reasons.append(f"redis: {self.redis.reason}")
        if lag > self.cfg.stale_after:
            reasons.append(f"feed stale: last tick {lag:.1f}s ago")
        doc: dict[str, Any] = {
            "status": "ok" if not reasons else "unhealthy",
            "reason": "; ".join(reasons) if reasons else None,
            "postgres": "up" if self.db.up else "down",
            "redis": "up" if self.redis.up else "down",
            "feed_lag_seconds": round(lag, 3),
            "trading": self.trading,
            "open_orders": self.book.count(),
            "pending_writes": self.buffer.pending(),
            "fills_committed": self.fills_committed,
            "boot_id": self.boot_id,
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }
        return not reasons, doc
