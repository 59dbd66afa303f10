"""Redaction rules, exact counts, no over-redaction, and exactness across read boundaries."""

from __future__ import annotations

import pytest

from chimera_ops.ops.bundle.scrub import StreamScrubber, TracebackFinder
from chimera_ops.redact import RULE_NAMES, Redactor, is_secret_name, redact_text

PLANTED = {
    "secret_key_value": [
        "BITGET_API_KEY=k1aaaa",
        "BINANCE_API_SECRET: s2bbbb",
        "EXCHANGE_SECRET_B64=s3cccc",
        "OKX_PASSPHRASE=p4dddd",
        "password=p5eeee",
    ],
    "quoted_secret_key": ["{'ACCESS-SIGN': 'g6ffff'}", '{"api_key": "j7gggg"}'],
    "signature_param": ["/api?symbol=BTCUSDT&signature=h8hhhh"],
    "auth_header": ["Authorization: Bearer b9iiii", "Authorization: Basic c10jjjj"],
    "url_credentials": ["postgresql://trader:u11kkkk@db:5432/app", "amqp://guest:u12llll@mq/"],
    "jwt": ["cookie eyJhbGciOiJI.eyJzdWIiOiIx.t13mmmm"],
    "cloud_access_key": ["AKIAABCDEFGHIJKLMNOP", "AIza" + "x" * 35],
}
ORDINARY = [
    "2024-05-01T12:00:00.123Z stdout INFO order_id=ord-000123 symbol=BTCUSDT side=buy "
    "price=64123.50 size=0.0150 ts=1700000000123 status=filled latency_ms=12",
    '{"bid": 64120.5, "ask": 64121.0, "seq": 991, "order_id": "o-77", "qty": 3}',
    'FATAL: password authentication failed for user "bob" port=5432',
    "tokens=5 passed=12 keyboard=ok author=alice PWD=/srv/app ACCESS-TIMESTAMP: 1700000000000",
    "GET /api/v3/ticker?symbol=ETHUSDT&limit=100 200 OK 3.2ms",
]


def test_each_rule_counts_exactly_what_was_planted() -> None:
    redactor = Redactor()
    for rule, samples in PLANTED.items():
        for sample in samples:
            out = redactor.redact(sample)
            assert "***" in out, (rule, out)
    counts = redactor.summary()
    for rule, samples in PLANTED.items():
        assert counts[rule] == len(samples), (rule, counts)
    assert set(counts) == set(RULE_NAMES)


def test_ordinary_lines_are_not_touched() -> None:
    redactor = Redactor(["hunter2secret"])
    for line in ORDINARY:
        assert redactor.redact(line) == line
        assert redact_text(line) == line
    assert sum(redactor.counts.values()) == 0


def test_known_values_anywhere_any_format() -> None:
    redactor = Redactor(["Zq9!value-1", "multi\nline-secret"])
    out = redactor.redact('a Zq9!value-1b, json {"x":"Zq9!value-1"} and line-secret')
    assert "Zq9!value-1" not in out and "line-secret" not in out
    assert redactor.counts["known_value"] == 3
    assert Redactor(["abc"]).too_short == 1  # too short to match verbatim, said


def test_overlapping_known_values_leave_nothing() -> None:
    redactor = Redactor(["abcdef123", "def123xyz"])
    assert redactor.redact("<abcdef123xyz>") == "<***>"


@pytest.mark.parametrize("feed", [1, 2, 3, 5, 7, 13, 64])
def test_exact_across_read_boundaries(feed: int) -> None:
    secret = "kn0wn-Secret-Value"
    text = (
        f"2024-05-01T12:00:00.000Z stdout login {secret} ok\n"
        "2024-05-01T12:00:00.001Z stdout BITGET_API_KEY=abcdefghijkl price=1.5\n"
        "2024-05-01T12:00:00.002Z stderr -----BEGIN EC PRIVATE KEY-----\n"
        "2024-05-01T12:00:00.003Z stderr MHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\n"
        "2024-05-01T12:00:00.004Z stderr -----END EC PRIVATE KEY-----\n"
        "2024-05-01T12:00:00.005Z stdout order_id=ord-1 price=64123.50\n"
    ).encode()
    whole = Redactor([secret]).redact_bytes(text)
    scrubber = StreamScrubber(Redactor([secret]))
    out = b"".join(scrubber.feed(text[i : i + feed]) for i in range(0, len(text), feed))
    out += scrubber.flush()
    assert out == whole
    assert secret.encode() not in out and b"abcdefghijkl" not in out and b"MHcCAQEE" not in out
    assert out.endswith(b"order_id=ord-1 price=64123.50\n")
    assert scrubber.redactor.summary()["pem_private_key"] == 1


def test_a_long_unterminated_key_is_masked_to_its_end() -> None:
    scrubber = StreamScrubber(Redactor())
    body = b"".join(b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=%06d\n" % i for i in range(3000))
    out = scrubber.feed(b"-----BEGIN PRIVATE KEY-----\n" + body[: len(body) // 2])
    out += scrubber.feed(body[len(body) // 2 :] + b"-----END PRIVATE KEY-----\nafter\n")
    out += scrubber.flush()
    assert b"QUJDREVG" not in out and out.endswith(b"after\n")


def test_tracebacks_are_found_in_the_stream() -> None:
    finder = TracebackFinder()
    finder.feed(
        b"2024-05-01T12:00:00.000Z stderr Traceback (most recent call last):\n"
        b'2024-05-01T12:00:00.000Z stderr   File "x.py", line 1, in <module>\n'
    )
    finder.feed(b"2024-05-01T12:00:00.000Z stderr ValueError: boom\nnext\n")
    assert list(finder.found) == [
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\nValueError: boom'
    ]


def test_secret_names() -> None:
    for name in (
        "BITGET_API_KEY",
        "BINANCE_SECRET",
        "X_SECRET_B64",
        "OKX_PASSPHRASE",
        "CHIMERA_CONTROL_TOKEN",
        "DB_PASSWORD",
        "Authorization",
    ):
        assert is_secret_name(name), name
    for name in ("PATH", "HOME", "PWD", "OLDPWD", "CHIMERA_PG_DSN", "TOKENS", "LANG"):
        assert not is_secret_name(name), name


def test_self_test_passes() -> None:
    from chimera_ops.ops.bundle.selftest import run_self_test

    report = run_self_test()
    assert report["ok"], report["checks"]
    assert {c["rule"] for c in report["checks"]} == set(RULE_NAMES)
