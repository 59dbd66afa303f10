"""PostgreSQL: database/schema bootstrap, the bounded connection pool, bulk writes, recovery reads."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from chimera_ops.aio import within
from chimera_ops.paper.book import Order
from chimera_ops.paper.buffer import Batch, StateRow
from chimera_ops.redact import dsn_password, redact_dsn, redact_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS paper_orders (
    order_id   text PRIMARY KEY,
    boot_id    text NOT NULL,
    seq        bigint NOT NULL,
    symbol     text NOT NULL,
    side       text NOT NULL CHECK (side IN ('buy', 'sell')),
    price      double precision NOT NULL,
    qty        bigint NOT NULL CHECK (qty > 0),
    status     text NOT NULL CHECK (status IN ('open', 'filled', 'cancelled')),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS paper_orders_open_idx ON paper_orders (symbol) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS paper_orders_created_idx ON paper_orders (created_at);
CREATE TABLE IF NOT EXISTS paper_fills (
    fill_id   text PRIMARY KEY,
    order_id  text NOT NULL UNIQUE REFERENCES paper_orders (order_id),
    boot_id   text NOT NULL,
    seq       bigint NOT NULL,
    symbol    text NOT NULL,
    side      text NOT NULL,
    price     double precision NOT NULL,
    qty       bigint NOT NULL,
    filled_at timestamptz NOT NULL,
    UNIQUE (boot_id, seq)
);
CREATE TABLE IF NOT EXISTS paper_positions (
    symbol     text PRIMARY KEY,
    qty        bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS paper_trading_state (
    id         smallint PRIMARY KEY CHECK (id = 1),
    trading    text NOT NULL CHECK (trading IN ('active', 'halted')),
    since      timestamptz NOT NULL,
    reason     text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""

# Orders: one statement for the whole batch. A terminal status never goes back to 'open'
# (a retried, older snapshot must not resurrect a filled order).
_UPSERT_ORDERS = """
INSERT INTO paper_orders
    (order_id, boot_id, seq, symbol, side, price, qty, status, created_at, updated_at)
SELECT * FROM unnest(
    %s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[],
    %s::float8[], %s::bigint[], %s::text[], %s::timestamptz[], %s::timestamptz[])
ON CONFLICT (order_id) DO UPDATE
    SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at
    WHERE paper_orders.status = 'open'
"""

# Fills and positions in one statement: only fills actually inserted (not already present
# from an earlier, ambiguous commit) move the position, so a retry can never double count.
_INSERT_FILLS = """
WITH ins AS (
    INSERT INTO paper_fills
        (fill_id, order_id, boot_id, seq, symbol, side, price, qty, filled_at)
    SELECT * FROM unnest(
        %s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[],
        %s::float8[], %s::bigint[], %s::timestamptz[])
    ON CONFLICT (fill_id) DO NOTHING
    RETURNING symbol, CASE WHEN side = 'buy' THEN qty ELSE -qty END AS delta
), agg AS (
    SELECT symbol, sum(delta)::bigint AS delta FROM ins GROUP BY symbol
)
INSERT INTO paper_positions (symbol, qty, updated_at)
SELECT symbol, delta, now() FROM agg
ON CONFLICT (symbol) DO UPDATE
    SET qty = paper_positions.qty + EXCLUDED.qty, updated_at = now()
RETURNING symbol, qty
"""

_UPSERT_STATE = """
INSERT INTO paper_trading_state (id, trading, since, reason, updated_at)
VALUES (1, %s, %s, %s, now())
ON CONFLICT (id) DO UPDATE
    SET trading = EXCLUDED.trading, since = EXCLUDED.since, reason = EXCLUDED.reason,
        updated_at = now()
"""


_MISSING_DB = re.compile(r'database ".*" does not exist')


class StartupError(Exception):
    """A dependency is unusable at start; the message is one redacted line."""


def one_line(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """Collapse an exception message to one redacted line (libpq errors span several)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return redact_text(text or type(exc).__name__, secrets)


async def _connect(dsn: str, timeout: float, autocommit: bool = False) -> psycopg.AsyncConnection:
    # connect_timeout bounds each host attempt inside libpq; within() bounds the whole thing.
    return await within(
        psycopg.AsyncConnection.connect(
            dsn, connect_timeout=max(1, int(timeout)), autocommit=autocommit
        ),
        timeout=timeout + 1,
    )


async def prepare_database(dsn: str, timeout: float) -> None:
    """Make sure the database of ``dsn`` exists (create it via ``postgres``) and has the schema.

    Raises :class:`StartupError` with a single redacted line on any failure.
    """
    secrets = tuple(p for p in (dsn_password(dsn),) if p)
    where = redact_dsn(dsn)
    try:
        try:
            conn = await _connect(dsn, timeout)
        except psycopg.OperationalError as exc:
            # libpq reports a missing database as a connection failure without a SQLSTATE;
            # its message is the only reliable signal.
            if not _MISSING_DB.search(str(exc)):
                raise
            await _create_database(dsn, timeout)
            conn = await _connect(dsn, timeout)
        # Two engines starting at once could race on CREATE TABLE IF NOT EXISTS; a
        # transaction-level advisory lock serialises the bootstrap.
        async with conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(704231)")
            await conn.execute(SCHEMA)
    except StartupError:
        raise
    except (TimeoutError, OSError, psycopg.Error) as exc:
        raise StartupError(f"cannot use PostgreSQL at {where}: {one_line(exc, secrets)}") from None


async def _create_database(dsn: str, timeout: float) -> None:
    params = conninfo_to_dict(dsn)
    dbname = str(params.get("dbname") or "")
    if not dbname:
        raise StartupError(f"no database name in {redact_dsn(dsn)}")
    admin_dsn = make_conninfo(dsn, dbname="postgres")
    conn = await _connect(admin_dsn, timeout, autocommit=True)
    async with conn:
        # DuplicateDatabase: another process created it between our two attempts.
        with contextlib.suppress(errors.DuplicateDatabase):
            await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


@dataclass(frozen=True)
class PersistedState:
    """What a previous run left in the database."""

    state: StateRow | None
    open_orders: list[Order]
    positions: dict[str, int]
    fills: int


class PgStore:
    """The engine's bounded psycopg pool and every query it runs."""

    def __init__(self, dsn: str, min_size: int, max_size: int) -> None:
        self.dsn = dsn
        self.max_size = max_size
        # check= validates a connection on checkout, so connections killed by a server restart
        # are replaced instead of failing the first write after recovery. reconnect_timeout is
        # long: the engine waits for its database, it does not give up on it.
        self.pool: AsyncConnectionPool = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            open=False,
            name="paper-pg",
            timeout=5.0,
            reconnect_timeout=24 * 3600.0,
            max_idle=300.0,
            check=AsyncConnectionPool.check_connection,
            kwargs={"connect_timeout": 3, "application_name": "chimera-paper"},
        )

    async def open(self, timeout: float) -> None:
        """Open the pool and wait for ``min_size`` connections."""
        await self.pool.open(wait=True, timeout=timeout)

    async def close(self) -> None:
        """Close the pool (waits briefly for connections in use)."""
        await self.pool.close(timeout=2.0)

    def stats(self) -> dict[str, int]:
        """Pool size, connections in use, requests waiting, max size."""
        raw = self.pool.get_stats()
        size = raw.get("pool_size", 0)
        available = raw.get("pool_available", 0)
        return {
            "size": size,
            "in_use": max(0, size - available),
            "waiting": raw.get("requests_waiting", 0),
            "max": self.max_size,
        }

    async def ping(self, timeout: float) -> None:
        """``SELECT 1`` through the pool; raises on any failure."""
        async with self.pool.connection(timeout=timeout) as conn:
            await within(conn.execute("SELECT 1"), timeout=timeout)

    async def write_batch(self, batch: Batch) -> dict[str, int]:
        """Write a batch in ONE transaction; return the new positions of the symbols it moved."""
        positions: dict[str, int] = {}
        async with self.pool.connection(timeout=5.0) as conn, conn.transaction():
            cur = conn.cursor()
            if batch.orders:
                rows = batch.orders
                await cur.execute(
                    _UPSERT_ORDERS,
                    (
                        [r.order_id for r in rows],
                        [r.boot_id for r in rows],
                        [r.seq for r in rows],
                        [r.symbol for r in rows],
                        [r.side for r in rows],
                        [r.price for r in rows],
                        [r.qty for r in rows],
                        [r.status for r in rows],
                        [r.created_at for r in rows],
                        [r.updated_at for r in rows],
                    ),
                )
            if batch.fills:
                fills = batch.fills
                await cur.execute(
                    _INSERT_FILLS,
                    (
                        [f.fill_id for f in fills],
                        [f.order_id for f in fills],
                        [f.boot_id for f in fills],
                        [f.seq for f in fills],
                        [f.symbol for f in fills],
                        [f.side for f in fills],
                        [f.price for f in fills],
                        [f.qty for f in fills],
                        [f.filled_at for f in fills],
                    ),
                )
                for symbol, qty in await cur.fetchall():
                    positions[str(symbol)] = int(qty)
            if batch.state is not None:
                state = batch.state
                await cur.execute(_UPSERT_STATE, (state.trading, state.since, state.reason))
        return positions

    async def load(self, symbols: tuple[str, ...]) -> PersistedState:
        """Read the trading state, open orders and positions a previous run left behind."""
        async with self.pool.connection(timeout=10.0) as conn:
            cur = conn.cursor()
            await cur.execute("SELECT trading, since, reason FROM paper_trading_state WHERE id = 1")
            row = await cur.fetchone()
            state = StateRow(str(row[0]), row[1], str(row[2])) if row else None
            await cur.execute(
                "SELECT order_id, boot_id, seq, symbol, side, price, qty, created_at, updated_at"
                " FROM paper_orders WHERE status = 'open' AND symbol = ANY(%s)"
                " ORDER BY created_at",
                (list(symbols),),
            )
            orders = [_order_from_row(r) for r in await cur.fetchall()]
            await cur.execute("SELECT symbol, qty FROM paper_positions")
            positions = {str(s): int(q) for s, q in await cur.fetchall()}
            await cur.execute("SELECT count(*) FROM paper_fills")
            count_row = await cur.fetchone()
            fills = int(count_row[0]) if count_row else 0
        return PersistedState(state=state, open_orders=orders, positions=positions, fills=fills)


def _order_from_row(row: tuple[Any, ...]) -> Order:
    order_id, boot_id, seq, symbol, side, price, qty, created_at, updated_at = row
    created: datetime = created_at
    updated: datetime = updated_at
    return Order(
        order_id=str(order_id),
        boot_id=str(boot_id),
        seq=int(seq),
        symbol=str(symbol),
        side="buy" if side == "buy" else "sell",
        price=float(price),
        qty=int(qty),
        status="open",
        created_at=created,
        updated_at=updated,
    )
