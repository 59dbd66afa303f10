"""Engine settings: command-line flags plus ``CHIMERA_*`` environment variables."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass

# Names used when ``--symbols`` is a count; beyond this list synthetic names are generated.
KNOWN_SYMBOLS = (
    "BTCUSDT",
    "ETHUSDT",
    "SOLUSDT",
    "BNBUSDT",
    "XRPUSDT",
    "ADAUSDT",
    "DOGEUSDT",
    "AVAXUSDT",
    "DOTUSDT",
    "LINKUSDT",
    "LTCUSDT",
    "TRXUSDT",
    "ATOMUSDT",
    "UNIUSDT",
    "NEARUSDT",
    "APTUSDT",
)
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/chimera_paper"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs to run, validated once at start."""

    host: str
    port: int
    pg_dsn: str
    redis_url: str
    redis_prefix: str
    control_token: str | None
    symbols: tuple[str, ...]
    seed: int
    rate: float
    orders_per_tick: int
    max_open_per_symbol: int
    faults: bool
    start_halted: bool
    pg_pool_min: int
    pg_pool_max: int
    redis_pool_max: int
    flush_interval: float
    stale_after: float
    connect_timeout: float
    exchange_rate_limit: int = 600  # requests/min the simulated exchange declares


def parse_symbols(value: str) -> tuple[str, ...]:
    """``"5"`` -> the first five known symbols; ``"BTCUSDT,ETHUSDT"`` -> that list."""
    value = value.strip()
    if value.isdigit():
        count = int(value)
        if count < 1:
            raise argparse.ArgumentTypeError("--symbols must be at least 1")
        names = list(KNOWN_SYMBOLS[:count])
        names += [f"SYM{i:03d}USDT" for i in range(len(names), count)]
        return tuple(names)
    names = [part.strip().upper() for part in value.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--symbols is empty")
    for name in names:
        if not _SYMBOL_RE.match(name):
            raise argparse.ArgumentTypeError(f"bad symbol name {name!r}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("--symbols has duplicates")
    return tuple(names)


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The engine's command line (``python -m chimera_ops.paper --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m chimera_ops.paper",
        description="chimera-ops reference paper-trading engine. "
        "Env: CHIMERA_PG_DSN, CHIMERA_REDIS_URL, CHIMERA_CONTROL_TOKEN.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="HTTP listen address")
    parser.add_argument("--port", type=int, default=8000, help="HTTP listen port")
    parser.add_argument("--seed", type=int, default=1, help="price feed and strategy seed")
    parser.add_argument(
        "--symbols",
        type=parse_symbols,
        default=parse_symbols("3"),
        help="symbol count (e.g. 3) or comma list (BTCUSDT,ETHUSDT); default 3",
    )
    parser.add_argument(
        "--rate", type=_positive_float, default=10.0, help="feed ticks per second (default 10)"
    )
    parser.add_argument(
        "--orders-per-tick",
        type=_positive_int,
        default=1,
        help="new orders the strategy may place per symbol per tick (default 1)",
    )
    parser.add_argument(
        "--max-open", type=_positive_int, default=6, help="open orders per symbol (default 6)"
    )
    parser.add_argument("--faults", action="store_true", help="enable /faults/* routes")
    parser.add_argument(
        "--start-halted", action="store_true", help="start (and persist) trading halted"
    )
    parser.add_argument("--pg-pool-min", type=_positive_int, default=2)
    parser.add_argument("--pg-pool-max", type=_positive_int, default=8)
    parser.add_argument("--redis-pool-max", type=_positive_int, default=8)
    parser.add_argument(
        "--redis-prefix", default="paper", help="key prefix in Redis (default 'paper')"
    )
    parser.add_argument(
        "--flush-interval",
        type=_positive_float,
        default=0.2,
        help="seconds between bulk writes to PostgreSQL (default 0.2)",
    )
    parser.add_argument(
        "--stale-after",
        type=_positive_float,
        default=5.0,
        help="feed older than this many seconds makes /health 503 (default 5)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=5.0,
        help="seconds to wait for PostgreSQL/Redis at start (default 5)",
    )
    parser.add_argument(
        "--exchange-rate-limit",
        type=_positive_int,
        default=600,
        help="requests per minute the simulated exchange allows (default 600)",
    )
    return parser


def load_config(argv: list[str] | None = None) -> EngineConfig:
    """Parse argv and the environment into an :class:`EngineConfig` (exits 2 on bad flags)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pg_pool_min > args.pg_pool_max:
        parser.error("--pg-pool-min must be <= --pg-pool-max")
    if not 0 < args.port < 65536:
        parser.error("--port must be 1..65535")
    token = os.environ.get("CHIMERA_CONTROL_TOKEN") or None
    return EngineConfig(
        host=args.host,
        port=args.port,
        pg_dsn=os.environ.get("CHIMERA_PG_DSN") or DEFAULT_PG_DSN,
        redis_url=os.environ.get("CHIMERA_REDIS_URL") or DEFAULT_REDIS_URL,
        redis_prefix=args.redis_prefix,
        control_token=token,
        symbols=args.symbols,
        seed=args.seed,
        rate=args.rate,
        orders_per_tick=args.orders_per_tick,
        max_open_per_symbol=args.max_open,
        faults=args.faults,
        start_halted=args.start_halted,
        pg_pool_min=args.pg_pool_min,
        pg_pool_max=args.pg_pool_max,
        redis_pool_max=args.redis_pool_max,
        flush_interval=args.flush_interval,
        stale_after=args.stale_after,
        connect_timeout=args.connect_timeout,
        exchange_rate_limit=args.exchange_rate_limit,
    )
