"""AlertSink against a real local HTTP receiver (http.server in a thread)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chimera_ops.alerts import AlertPolicy, AlertsConfig, AlertSink
from tests.services import free_port


class Receiver:
    """Collects POSTed JSON bodies; `fail_first` answers 500 to that many requests."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with receiver.lock:
                    if receiver.fail_first > 0:
                        receiver.fail_first -= 1
                        status = 500
                    else:
                        receiver.bodies.append(body)
                        receiver.paths.append(self.path)
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T0/B0/SECRETPATH"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    rec.thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def sink_for(url: str, **kwargs: object) -> AlertSink:
    config = AlertsConfig.model_validate({"webhook": {"url": url, "timeout": "2s"}, **kwargs})
    return AlertSink(config, host="test-host")


def test_one_alert_per_incident_over_20_ticks_then_resolved(receiver: Receiver) -> None:
    async def scenario() -> AlertSink:
        sink = sink_for(receiver.url)
        for tick in range(20):
            await sink.fire(
                "engine:liveness",
                "engine",
                "critical",
                "liveness probe failing",
                {"tick": tick, "probe": "http://127.0.0.1:8701/health"},
            )
        assert await sink.resolve("engine:liveness", "liveness probe passing again")
        assert not await sink.resolve("engine:liveness")  # only once
        await sink.aclose()
        return sink

    sink = asyncio.run(scenario())
    assert [b["severity"] for b in receiver.bodies] == ["critical", "resolved"]
    first, resolved = receiver.bodies
    assert first["key"] == "engine:liveness"
    assert first["component"] == "engine"
    assert first["host"] == "test-host"
    assert first["details"]["tick"] == 0
    assert "liveness probe failing" in first["text"]
    assert resolved["component"] == "engine"
    assert resolved["summary"] == "liveness probe passing again"
    assert sink.stats.sent == 2
    assert sink.stats.deduplicated == 19
    assert sink.stats.failed == 0


def test_server_error_is_retried(receiver: Receiver) -> None:
    receiver.fail_first = 1

    async def scenario() -> AlertSink:
        sink = sink_for(receiver.url)
        assert await sink.fire("redis:pool", "redis", "warning", "pool at 85%")
        await sink.aclose()
        return sink

    sink = asyncio.run(scenario())
    assert len(receiver.bodies) == 1
    assert sink.stats.sent == 1 and sink.stats.failed == 0


def test_rate_limit_sends_one_summary(receiver: Receiver) -> None:
    now = [0.0]
    policy = AlertPolicy(repeat_interval=None, rate_max=2, rate_per=60, clock=lambda: now[0])

    async def scenario() -> AlertSink:
        # 2 per minute on a fake clock: the burst of 5 loses 3, then the bucket refills.
        config = AlertsConfig.model_validate({"webhook": {"url": receiver.url}})
        sink = AlertSink(config, policy=policy)
        for i in range(5):
            await sink.fire(f"k{i}", "engine", "warning", f"alert {i}")
        await sink.tick()
        now[0] += 61
        await sink.tick()
        await sink.tick()
        await sink.aclose()
        return sink

    sink = asyncio.run(scenario())
    keys = [b["key"] for b in receiver.bodies]
    assert keys[:2] == ["k0", "k1"]
    assert keys.count("chimera:alerts-suppressed") == 1
    summary = receiver.bodies[-1]
    assert summary["details"]["dropped"] == 3
    assert summary["text"].startswith("[WARNING]")
    assert "3 alerts suppressed" in summary["summary"]
    assert sink.stats.suppressed == 3 and sink.stats.summaries == 1


def test_unreachable_webhook_never_raises_and_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook/SECRETPATH"

    async def scenario() -> AlertSink:
        sink = sink_for(url)
        caplog.set_level(logging.DEBUG)
        assert not await sink.fire("postgres:down", "postgres", "critical", "down")
        # The failed send is not recorded as delivered: the next tick tries again.
        assert not await sink.fire("postgres:down", "postgres", "critical", "down")
        sink.fire_background("postgres:down", "postgres", "critical", "down")
        await sink.aclose()
        return sink

    sink = asyncio.run(scenario())
    assert sink.stats.failed == 3
    assert sink.stats.sent == 0
    assert sink.stats.last_error and "Connect" in sink.stats.last_error
    assert "not delivered" in caplog.text
    assert "SECRETPATH" not in caplog.text


def test_webhook_url_from_env_and_disabled_sink(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHIMERA_TEST_HOOK", receiver.url)

    async def scenario() -> None:
        config = AlertsConfig.model_validate({"webhook": {"url_env": "CHIMERA_TEST_HOOK"}})
        sink = AlertSink(config)
        assert sink.enabled
        assert await sink.fire("a", "engine", "warning", "x")
        await sink.aclose()
        disabled = AlertSink(AlertsConfig())
        assert not disabled.enabled
        assert not await disabled.fire("a", "engine", "warning", "x")
        await disabled.aclose()

    asyncio.run(scenario())
    assert len(receiver.bodies) == 1
