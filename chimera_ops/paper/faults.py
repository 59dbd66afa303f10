"""Opt-in fault injection (``--faults``): real crashes, freezes, leaks and pool exhaustion.

These exist so the agent's detection and recovery can be tested against real failures. The
routes are only mounted when the engine was started with ``--faults``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chimera_ops.paper.engine import Engine
from chimera_ops.paper.httputil import HttpError, check_token, json_object

log = logging.getLogger("chimera.paper.faults")

CRASH_EXIT_CODE = 70
MAX_LEAK_MB_PER_S = 1024.0
MAX_HOLD = 1000
MAX_HEALTH_DELAY = 600.0


class FaultInjector:
    """State of the running faults: leaked memory, held connections."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.leak_rate_mb_s = 0.0
        self._leaked: list[bytes] = []
        self.leaked_bytes = 0
        self._leak_task: asyncio.Task[None] | None = None
        self._holders: list[asyncio.Task[None]] = []
        self.held = {"postgres": 0, "redis": 0}

    # ----------------------------------------------------------------- leak
    def set_leak(self, mb_per_s: float) -> None:
        """Allocate and keep ``mb_per_s`` MiB every second (0 stops growth, keeps what leaked)."""
        self.leak_rate_mb_s = mb_per_s
        if mb_per_s > 0 and (self._leak_task is None or self._leak_task.done()):
            self._leak_task = asyncio.create_task(self._leak_loop())

    async def _leak_loop(self) -> None:
        step = 0.1
        carry = 0.0
        while self.leak_rate_mb_s > 0:
            carry += self.leak_rate_mb_s * 1024 * 1024 * step
            size = int(carry)
            carry -= size
            if size:
                # b"x" * n writes every page, so the memory is really resident (a zeroed
                # bytearray could stay virtual and never show up in RSS).
                self._leaked.append(b"x" * size)
                self.leaked_bytes += size
                self.engine.metrics.leaked_bytes.set(self.leaked_bytes)
            await asyncio.sleep(step)

    # ----------------------------------------------------------------- pools
    def hold(self, pool: str, count: int) -> None:
        """Check out ``count`` connections of ``pool`` and keep them (callers may queue)."""
        for _ in range(count):
            factory = self._hold_pg if pool == "postgres" else self._hold_redis
            self._holders.append(asyncio.create_task(factory()))

    async def _hold_pg(self) -> None:
        # No timeout: beyond max_size this task queues like any starved caller would.
        conn = await self.engine.store.pool.getconn(timeout=24 * 3600.0)
        self.held["postgres"] += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.held["postgres"] -= 1
            await self.engine.store.pool.putconn(conn)

    async def _hold_redis(self) -> None:
        pool = self.engine.cache.pool
        try:
            conn = await pool.get_connection()
        except Exception as exc:  # noqa: BLE001 - the pool's own timeout: the caller gave up
            log.warning("fault: could not hold a redis connection: %s", exc)
            return
        self.held["redis"] += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.held["redis"] -= 1
            await pool.release(conn)

    async def release(self) -> int:
        """Give back every held connection (and drop queued hold requests)."""
        tasks, self._holders = self._holders, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    def describe(self) -> dict[str, Any]:
        """Current fault state."""
        return {
            "leak_mb_per_s": self.leak_rate_mb_s,
            "leaked_bytes": self.leaked_bytes,
            "held_connections": dict(self.held),
            "hold_requests": len(self._holders),
            "health_delay_s": self.engine.health_delay,
            "stuck_orders": self.engine.stuck_orders,
        }


def _finite_number(body: dict[str, Any], key: str) -> float:
    if key not in body:
        raise HttpError(400, f"field {key!r} is required")
    value = float(body[key])
    if not math.isfinite(value):
        raise HttpError(400, f"field {key!r} must be finite")
    return value


def fault_routes(engine: Engine, injector: FaultInjector) -> list[Route]:
    """The /faults/* routes (only mounted with --faults)."""
    token = engine.cfg.control_token
    number = (int, float)

    async def crash(request: Request) -> JSONResponse:
        check_token(request, token)
        await json_object(request, {})

        async def die() -> None:
            log.error("fault: crashing with exit code %d", CRASH_EXIT_CODE)
            os._exit(CRASH_EXIT_CODE)  # no cleanup, no flush: a real crash

        return JSONResponse(
            {"fault": "crash", "exit_code": CRASH_EXIT_CODE}, background=BackgroundTask(die)
        )

    async def freeze(request: Request) -> JSONResponse:
        check_token(request, token)
        await json_object(request, {})

        async def block() -> None:
            log.error("fault: freezing the event loop forever")
            # Blocks the loop thread itself: no HTTP, no ticks, no writes, and SIGTERM handlers
            # (which run on the loop) never fire. Only SIGKILL ends it, as with a real hang.
            while True:
                time.sleep(3600)

        return JSONResponse({"fault": "freeze"}, background=BackgroundTask(block))

    async def leak(request: Request) -> JSONResponse:
        check_token(request, token)
        body = await json_object(request, {"mb_per_s": number})
        rate = _finite_number(body, "mb_per_s")
        if rate < 0:
            raise HttpError(400, "field 'mb_per_s' must be >= 0")
        if rate > MAX_LEAK_MB_PER_S:
            raise HttpError(400, f"field 'mb_per_s' must be <= {MAX_LEAK_MB_PER_S}")
        injector.set_leak(rate)
        return JSONResponse({"fault": "leak", **injector.describe()})

    async def hold_connections(request: Request) -> JSONResponse:
        check_token(request, token)
        body = await json_object(request, {"count": int, "pool": str})
        count = body.get("count")
        if not isinstance(count, int) or not 0 < count <= MAX_HOLD:
            raise HttpError(400, f"field 'count' is required, 1..{MAX_HOLD}")
        pool = body.get("pool", "postgres")
        if pool not in ("postgres", "redis"):
            raise HttpError(400, "field 'pool' must be 'postgres' or 'redis'")
        injector.hold(pool, count)
        await asyncio.sleep(0.05)  # let the holders check out what is free right away
        return JSONResponse({"fault": "hold-connections", "pool": pool, **injector.describe()})

    async def release_connections(request: Request) -> JSONResponse:
        check_token(request, token)
        await json_object(request, {})
        released = await injector.release()
        return JSONResponse({"fault": "release-connections", "released": released})

    async def slow_health(request: Request) -> JSONResponse:
        check_token(request, token)
        body = await json_object(request, {"delay_s": number})
        delay = _finite_number(body, "delay_s")
        if not 0 <= delay <= MAX_HEALTH_DELAY:
            raise HttpError(400, f"field 'delay_s' must be 0..{MAX_HEALTH_DELAY}")
        engine.health_delay = delay
        return JSONResponse({"fault": "slow-health", **injector.describe()})

    async def stuck_orders(request: Request) -> JSONResponse:
        check_token(request, token)
        body = await json_object(request, {"stuck": bool})
        engine.stuck_orders = bool(body.get("stuck", True))
        return JSONResponse({"fault": "stuck-orders", **injector.describe()})

    async def status(request: Request) -> JSONResponse:
        check_token(request, token)
        return JSONResponse(injector.describe())

    return [
        Route("/faults", status, methods=["GET"]),
        Route("/faults/crash", crash, methods=["POST"]),
        Route("/faults/freeze", freeze, methods=["POST"]),
        Route("/faults/leak", leak, methods=["POST"]),
        Route("/faults/hold-connections", hold_connections, methods=["POST"]),
        Route("/faults/release-connections", release_connections, methods=["POST"]),
        Route("/faults/slow-health", slow_health, methods=["POST"]),
        Route("/faults/stuck-orders", stuck_orders, methods=["POST"]),
    ]
