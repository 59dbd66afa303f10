"""Redis: last prices, positions and trading state, through a bounded blocking pool."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

from chimera_ops.aio import within
from chimera_ops.paper.store import StartupError, one_line
from chimera_ops.redact import redact_dsn


class CountingBlockingPool(aioredis.BlockingConnectionPool):
    """A blocking pool that also counts callers waiting for a connection.

    redis-py exposes no waiting count; the agent's pool monitor needs it to tell "pool full
    and callers queueing" from "pool full but idle".
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = 0

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        self.waiting += 1
        try:
            return await super().get_connection()
        finally:
            self.waiting -= 1

    def stats(self) -> dict[str, int]:
        """Pool size, connections in use, waiting callers, max size."""
        available = len(self._available_connections)
        in_use = len(self._in_use_connections)
        return {
            "size": available + in_use,
            "in_use": in_use,
            "waiting": self.waiting,
            "max": int(self.max_connections),
        }


class RedisCache:
    """Writes the engine's hot state to Redis under ``<prefix>:*`` keys."""

    def __init__(self, url: str, max_connections: int, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.pool = CountingBlockingPool.from_url(
            url,
            max_connections=max_connections,
            timeout=5,
            socket_connect_timeout=3,
            socket_timeout=5,
            health_check_interval=15,
        )
        self.client = aioredis.Redis(connection_pool=self.pool)

    @property
    def keys(self) -> dict[str, str]:
        """The Redis keys the engine writes."""
        return {
            "prices": f"{self.prefix}:prices",
            "positions": f"{self.prefix}:positions",
            "state": f"{self.prefix}:state",
        }

    def stats(self) -> dict[str, int]:
        """Pool gauges."""
        return self.pool.stats()

    async def ping(self, timeout: float) -> None:
        """PING; raises on failure."""
        await within(self.client.ping(), timeout=timeout)

    async def push(
        self,
        prices: dict[str, float],
        positions: dict[str, int] | None,
        state: dict[str, str] | None,
    ) -> None:
        """Write prices (and positions / state when given) atomically, in one round trip."""
        async with self.client.pipeline(transaction=True) as pipe:
            if prices:
                pipe.hset(self.keys["prices"], mapping={k: repr(v) for k, v in prices.items()})
            if positions is not None:
                key = self.keys["positions"]
                pipe.delete(key)
                if positions:
                    pipe.hset(key, mapping={k: str(v) for k, v in positions.items()})
            if state is not None:
                state_map: dict[Any, Any] = dict(state)  # redis stubs want a wider key type
                pipe.hset(self.keys["state"], mapping=state_map)
            await pipe.execute()

    async def close(self) -> None:
        """Close the client and its pool."""
        await self.client.aclose()
        await self.pool.aclose()


async def check_redis(url: str, timeout: float) -> None:
    """Connect and PING once at start; :class:`StartupError` with one redacted line otherwise."""
    client = aioredis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        await within(client.ping(), timeout=timeout + 1)
    except (TimeoutError, OSError, aioredis.RedisError) as exc:
        raise StartupError(f"cannot use Redis at {redact_dsn(url)}: {one_line(exc)}") from None
    finally:
        await client.aclose()
