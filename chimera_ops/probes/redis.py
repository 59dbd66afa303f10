"""Redis probe: PING and INFO, with the client-pool figures in the details."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from chimera_ops.probes.base import Probe, ProbeResult
from chimera_ops.probes.postgres import resolve_secret
from chimera_ops.probes.spec import RedisProbeSpec
from chimera_ops.redact import redact_text

INFO_FIELDS = ("connected_clients", "rejected_connections", "blocked_clients", "used_memory")


def url_target(url: str) -> str:
    """host:port/db of a Redis URL, never its credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


async def redis_figures(client: aioredis.Redis) -> dict[str, Any]:
    """INFO figures plus `maxclients` (CONFIG GET may be renamed or forbidden: then omitted)."""
    info = await client.info()
    figures: dict[str, Any] = {name: info[name] for name in INFO_FIELDS if name in info}
    try:
        config = await client.config_get("maxclients")
        maxclients = config.get("maxclients")
        if maxclients is not None:
            figures["maxclients"] = int(maxclients)
    except ResponseError:
        pass
    return figures


class RedisProbe(Probe):
    """PING + INFO on a fresh connection (a pooled one would hide an exhausted server)."""

    kind = "redis"

    def __init__(
        self, spec: RedisProbeSpec, timeout: float, env: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(timeout)
        self.spec = spec
        self.env = env if env is not None else os.environ

    def _url(self) -> tuple[str | None, str | None]:
        return resolve_secret(self.spec.url, self.spec.url_env, self.env)

    def describe(self) -> str:
        url, _ = self._url()
        return url_target(url) if url else f"${self.spec.url_env}"

    async def check(self) -> ProbeResult:
        url, why = self._url()
        if url is None:
            return ProbeResult(ok=False, reason=f"redis URL unavailable: {why}")
        target = url_target(url)
        secrets = [urlsplit(url).password]
        client = aioredis.from_url(
            url,
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,
            single_connection_client=True,
        )
        try:
            await client.ping()
            details = await redis_figures(client)
        except (RedisError, OSError) as exc:
            message = redact_text(str(exc), secrets)
            return ProbeResult(ok=False, reason=f"redis {target}: {type(exc).__name__}: {message}")
        finally:
            await client.aclose()
        return ProbeResult(ok=True, reason=f"redis {target} PONG", details=details)
