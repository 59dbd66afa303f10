"""Pure pieces of the paper engine: redaction, config, feed, book, strategy, write buffer."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from chimera_ops.paper.book import Fill, Order, OrderBook, fill_id_for
from chimera_ops.paper.buffer import StateRow, WriteBuffer
from chimera_ops.paper.config import load_config, parse_symbols
from chimera_ops.paper.feed import PriceFeed
from chimera_ops.paper.strategy import QuotingStrategy
from chimera_ops.redact import redact_dsn, redact_text

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("postgresql://user:s%40cret@host:5433/db", "postgresql://user:***@host:5433/db"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("host=h user=u password=secret dbname=d", "host=h user=u password=*** dbname=d"),
        ("postgresql://u@h/db?password=secret", "postgresql://u@h/db?password=***"),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected


def test_redact_text_masks_literal_secrets_and_embedded_urls() -> None:
    text = "failed for postgresql://a:b@c/d with token XYZ123"
    assert redact_text(text, ("XYZ123",)) == "failed for postgresql://a:***@c/d with token ***"


def test_parse_symbols() -> None:
    assert parse_symbols("3") == ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    assert len(parse_symbols("40")) == 40
    assert len(set(parse_symbols("40"))) == 40
    assert parse_symbols("btcusdt, ETHUSDT") == ("BTCUSDT", "ETHUSDT")
    for bad in ("0", "", "BTC-USDT", "BTCUSDT,BTCUSDT"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_symbols(bad)


def test_config_reads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHIMERA_PG_DSN", "postgresql://x@h/db")
    monkeypatch.setenv("CHIMERA_CONTROL_TOKEN", "tok")
    monkeypatch.delenv("CHIMERA_REDIS_URL", raising=False)
    cfg = load_config(["--port", "9000", "--faults", "--symbols", "2"])
    assert cfg.pg_dsn == "postgresql://x@h/db"
    assert cfg.redis_url == "redis://127.0.0.1:6379/0"
    assert cfg.control_token == "tok"
    assert cfg.faults and cfg.port == 9000 and cfg.symbols == ("BTCUSDT", "ETHUSDT")


def test_feed_is_deterministic_per_seed_and_positive() -> None:
    a, b, c = (PriceFeed(("BTCUSDT", "SOLUSDT"), seed) for seed in (1, 1, 2))
    path_a = [a.step() for _ in range(2000)]
    assert path_a == [b.step() for _ in range(2000)]
    assert path_a != [c.step() for _ in range(2000)]
    assert all(p > 0 for tick in path_a for p in tick.values())


def _order(oid: str, side: str, price: float, symbol: str = "BTCUSDT") -> Order:
    return Order(oid, "boot", 1, symbol, side, price, 1, "open", T0, T0)  # type: ignore[arg-type]


def test_book_crossing() -> None:
    book = OrderBook(("BTCUSDT", "ETHUSDT"))
    buy, sell = _order("b", "buy", 99.0), _order("s", "sell", 101.0)
    book.add(buy)
    book.add(sell)
    assert book.crossing("BTCUSDT", 100.0) == []
    assert book.crossing("BTCUSDT", 99.0) == [buy]
    assert book.crossing("BTCUSDT", 101.5) == [sell]
    assert book.crossing("ETHUSDT", 1.0) == []
    book.remove(buy)
    assert book.count() == 1 and book.count("ETHUSDT") == 0


def test_strategy_respects_open_order_cap() -> None:
    strat = QuotingStrategy(seed=3, orders_per_tick=5, max_open=6)
    assert len(strat.quotes("BTCUSDT", 100.0, open_count=0)) == 5
    assert len(strat.quotes("BTCUSDT", 100.0, open_count=4)) == 2
    assert strat.quotes("BTCUSDT", 100.0, open_count=6) == []
    for quote in strat.quotes("BTCUSDT", 100.0, 0):
        assert (quote.price < 100.0) if quote.side == "buy" else (quote.price > 100.0)
        assert quote.qty >= 1


def test_strategy_cancels_far_and_old_orders() -> None:
    strat = QuotingStrategy(seed=3, orders_per_tick=1, max_open=6, max_age_ticks=10)
    near, far, old = _order("n", "buy", 99.99), _order("f", "buy", 90.0), _order("o", "buy", 99.99)
    near.placed_tick, far.placed_tick, old.placed_tick = 95, 95, 80
    assert strat.to_cancel(100.0, [near, far, old], tick=100) == [far, old]


def _fill(order: Order, seq: int) -> Fill:
    return Fill(fill_id_for(order.order_id), order.order_id, "boot", seq, order.symbol,
                order.side, order.price, order.qty, T0)  # fmt: skip


def test_buffer_put_back_keeps_order_and_prefers_newer_rows() -> None:
    buf = WriteBuffer()
    o1 = _order("o1", "buy", 1.0)
    buf.add_order(o1)
    o1.status = "filled"
    buf.add_order(o1)
    buf.add_fill(_fill(o1, 1))
    buf.set_state(StateRow("halted", T0, "x"))
    batch = buf.take()
    assert [r.status for r in batch.orders] == ["filled"]  # coalesced to the latest
    assert buf.pending() == 0

    o2 = _order("o2", "sell", 2.0)
    buf.add_order(o2)
    buf.add_fill(_fill(o2, 2))
    buf.put_back(batch)  # failed commit comes back in front of newer fills
    retry = buf.take()
    assert [f.seq for f in retry.fills] == [1, 2]
    assert {r.order_id for r in retry.orders} == {"o1", "o2"}
    assert retry.state == StateRow("halted", T0, "x")


def test_buffer_put_back_does_not_overwrite_newer_order_state() -> None:
    buf = WriteBuffer()
    order = _order("o", "buy", 1.0)
    buf.add_order(order)
    batch = buf.take()
    order.status = "cancelled"
    buf.add_order(order)
    buf.put_back(batch)
    assert [r.status for r in buf.take().orders] == ["cancelled"]


def test_buffer_take_caps_fills_and_keeps_their_orders() -> None:
    buf = WriteBuffer()
    orders = [_order(f"o{i}", "buy", 1.0) for i in range(5)]
    for i, order in enumerate(orders, 1):
        order.status = "filled"
        buf.add_order(order)
        buf.add_fill(_fill(order, i))
    lone = _order("lone", "sell", 1.0)
    buf.add_order(lone)
    first = buf.take(max_rows=3)
    assert [f.seq for f in first.fills] == [1, 2, 3]
    assert {r.order_id for r in first.orders} == {"o0", "o1", "o2"}
    second = buf.take(max_rows=1)
    assert [f.seq for f in second.fills] == [4]
    assert {r.order_id for r in second.orders} == {"o3"}
    rest = buf.take()
    assert [f.seq for f in rest.fills] == [5]
    assert {r.order_id for r in rest.orders} == {"o4", "lone"}
