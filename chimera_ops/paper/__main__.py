"""``python -m chimera_ops.paper``: start-up checks, signal handling, serve until stopped.

Exit codes: 0 clean stop, 2 bad flags, 3 PostgreSQL or Redis unusable at start,
4 cannot listen on the HTTP port, 70 the crash fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Generator

import psycopg
import uvicorn
from psycopg_pool import PoolTimeout

from chimera_ops.aio import within
from chimera_ops.paper.app import build_app
from chimera_ops.paper.cache import RedisCache, check_redis
from chimera_ops.paper.config import EngineConfig, load_config
from chimera_ops.paper.engine import Engine
from chimera_ops.paper.store import PgStore, StartupError, one_line, prepare_database
from chimera_ops.redact import dsn_password, redact_text

EXIT_DEPENDENCY = 3
EXIT_PORT = 4
log = logging.getLogger("chimera.paper")


class _RedactingFormatter(logging.Formatter):
    """Plain lines; any DSN password that slipped into a message is masked."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record), self._secrets)


def _setup_logging(cfg: EngineConfig) -> None:
    secrets = tuple(
        s for s in (dsn_password(cfg.pg_dsn), dsn_password(cfg.redis_url), cfg.control_token) if s
    )
    formatter = _RedactingFormatter(secrets)
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(formatter)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(formatter)
    err.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [out, err]
    root.setLevel(logging.INFO)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the engine's handlers decide how to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(cfg: EngineConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only
    # then. Without it, uvicorn's separate header and body writes meet Nagle plus the client's
    # delayed ACK, and every request on a kept-alive connection took ~40 ms longer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((cfg.host, cfg.port))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def run(cfg: EngineConfig) -> int:
    """Run the engine until SIGTERM/SIGINT; return the process exit code."""
    # 1. Dependencies first, with plain one-shot connections: a failure here is ONE line.
    try:
        await prepare_database(cfg.pg_dsn, cfg.connect_timeout)
        await check_redis(cfg.redis_url, cfg.connect_timeout)
    except StartupError as exc:
        print(f"chimera-paper: {exc}", file=sys.stderr, flush=True)
        return EXIT_DEPENDENCY
    try:
        sock = _bind(cfg)
    except OSError as exc:
        print(
            f"chimera-paper: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_PORT

    _setup_logging(cfg)
    store = PgStore(cfg.pg_dsn, cfg.pg_pool_min, cfg.pg_pool_max)
    cache = RedisCache(cfg.redis_url, cfg.redis_pool_max, cfg.redis_prefix)
    try:
        await store.open(timeout=cfg.connect_timeout + 5)
        engine = Engine(cfg, store, cache)
        engine.adopt(await store.load(cfg.symbols))
        # Persist the adopted/forced state and any cancellations before taking traffic.
        await engine.flush(timeout=cfg.connect_timeout + 5)
    except (TimeoutError, OSError, psycopg.Error, PoolTimeout) as exc:
        # The database vanished between the start-up check and opening the pool.
        print(f"chimera-paper: cannot use PostgreSQL: {one_line(exc)}", file=sys.stderr, flush=True)
        sock.close()
        await asyncio.gather(store.close(), cache.close(), return_exceptions=True)
        return EXIT_DEPENDENCY

    engine.start()
    server = _Server(
        uvicorn.Config(
            build_app(engine),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serve = asyncio.create_task(server.serve(sockets=[sock]))
    log.info(
        "serving on http://%s:%d (symbols=%s rate=%s/s faults=%s)",
        cfg.host,
        cfg.port,
        ",".join(cfg.symbols),
        cfg.rate,
        cfg.faults,
    )
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({serve, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("stopping")
    # Trading stops before the listener closes, so a halt is visible to a last state query.
    # Bounded: every step has its own timeout, and this deadline guarantees "exit within a few
    # seconds" even if one of them misbehaves (a supervisor would SIGKILL us anyway).
    try:
        await within(engine.shutdown(), timeout=SHUTDOWN_DEADLINE_S)
    except TimeoutError:
        log.error("shutdown did not finish within %ss; exiting anyway", SHUTDOWN_DEADLINE_S)
        return 1
    server.should_exit = True
    with contextlib.suppress(asyncio.TimeoutError, Exception):
        await within(serve, timeout=3.0)
    stopper.cancel()
    if serve in done and serve.exception() is not None:
        return 1
    return 0


SHUTDOWN_DEADLINE_S = 8.0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    cfg = load_config(argv)
    try:
        return asyncio.run(run(cfg))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
