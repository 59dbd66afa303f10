"""The Alertmanager sink against a real Alertmanager (Debian `prometheus-alertmanager`, started
here on a private port): an alert appears with Prometheus' labels and annotations, a silence
suppresses it, a resolution ends it, it is re-sent while it holds, and an unreachable
Alertmanager costs the agent nothing but a counter and a bounded queue."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import pytest

from chimera_ops.alerts import AlertsConfig, AlertSink
from tests.harness import child, wait_for
from tests.services import free_port, wait_tcp


class Alertmanager:
    """A private Alertmanager: no cluster, a null receiver, its own storage dir."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        assert binary, "Debian's prometheus-alertmanager is required (.ci/run installs it)"
        self.binary = binary
        self.dir = directory
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (directory / "am.yml").write_text(
            'route: {receiver: "null", group_wait: 1s}\nreceivers: [{name: "null"}]\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Alertmanager:
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.dir / 'am.yml'}",
                f"--storage.path={self.dir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "am.log", "ab"),  # noqa: SIM115 - owned by the child
        )
        wait_tcp("127.0.0.1", self.port, timeout=30)
        wait_for(lambda: urlopen(f"{self.url}/-/ready", timeout=2).status == 200, what="ready")
        return self

    def alerts(self) -> list[dict[str, Any]]:
        with urlopen(f"{self.url}/api/v2/alerts", timeout=5) as response:
            return json.load(response)  # type: ignore[no-any-return]

    def silence(self, **matchers: str) -> str:
        now = datetime.now(UTC)
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in matchers.items()
            ],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "test",
            "comment": "maintenance",
        }
        request = Request(
            f"{self.url}/api/v2/silences",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urlopen(request, timeout=5) as response:
            return str(json.load(response)["silenceID"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture
def alertmanager(short_tmp: Path) -> Iterator[Alertmanager]:
    am = Alertmanager(short_tmp).start()
    yield am
    am.stop()


def sink_for(url: str, **alertmanager: Any) -> tuple[AlertSink, list[str]]:
    failures: list[str] = []
    config = AlertsConfig.model_validate(
        {"alertmanager": {"url": url, "resend_interval": "1s", "timeout": "2s", **alertmanager}}
    )
    return AlertSink(config, host="test-host", on_failure=failures.append), failures


async def until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "it") -> Any:
    """wait_for inside the event loop (the sink posts from this loop)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await asyncio.to_thread(predicate)
        except OSError as exc:
            last = exc
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _ours(am: Alertmanager, alertname: str) -> list[dict[str, Any]]:
    return [a for a in am.alerts() if a["labels"].get("alertname") == alertname]


def test_alert_appears_silence_suppresses_resolution_ends(alertmanager: Alertmanager) -> None:
    async def scenario() -> None:
        sink, failures = sink_for(alertmanager.url, labels={"env": "test"})
        await sink.fire(
            "engine:memory:leak",
            "engine",
            "warning",
            "RSS grows 2 MB/s, limit in 40 min (postgresql://u:hunter2@db/x)",
            {"slope_bytes_per_s": 2e6},
        )
        found = await until(lambda: _ours(alertmanager, "ChimeraMemoryLeak"), what="the alert")
        alert = found[0]
        assert alert["labels"] == {
            "alertname": "ChimeraMemoryLeak",
            "component": "engine",
            "severity": "warning",
            "instance": "test-host",
            "key": "engine:memory:leak",
            "env": "test",
        }
        notes = alert["annotations"]
        assert notes["summary"].startswith("RSS grows 2 MB/s")
        assert "hunter2" not in json.dumps(notes), "free text is redacted"
        assert "slope_bytes_per_s=2000000.0" in notes["description"]
        assert notes["runbook_url"] == "runbooks/memory-leak.md"
        assert alert["status"]["state"] == "active"

        silence = await asyncio.to_thread(
            alertmanager.silence, component="engine", alertname="ChimeraMemoryLeak"
        )

        def suppressed() -> bool:
            current = _ours(alertmanager, "ChimeraMemoryLeak")
            return bool(current) and current[0]["status"]["silencedBy"] == [silence]

        await until(suppressed, what="the silence to suppress it")
        assert _ours(alertmanager, "ChimeraMemoryLeak")[0]["status"]["state"] == "suppressed"

        await sink.resolve("engine:memory:leak", "RSS flat again")
        await until(lambda: not _ours(alertmanager, "ChimeraMemoryLeak"), what="it to end")
        assert failures == []
        await sink.aclose()

    asyncio.run(scenario())


def test_escalation_ends_the_warning_and_holding_alerts_are_resent(
    alertmanager: Alertmanager,
) -> None:
    async def scenario() -> None:
        sink, _ = sink_for(alertmanager.url)
        await sink.fire("db:pool:saturation", "db", "warning", "pool 85% used", {})
        await until(lambda: _ours(alertmanager, "ChimeraPoolSaturation"), what="the warning")
        await sink.fire("db:pool:saturation", "db", "critical", "pool 99% used", {})

        def only_critical() -> bool:
            found = _ours(alertmanager, "ChimeraPoolSaturation")
            return [a["labels"]["severity"] for a in found] == ["critical"]

        await until(only_critical, what="the critical one alone")
        first = _ours(alertmanager, "ChimeraPoolSaturation")[0]
        assert first["annotations"]["runbook_url"] == "runbooks/db-connection-failure.md"
        first_end = datetime.fromisoformat(first["endsAt"].replace("Z", "+00:00"))
        # Re-sent while it holds: endsAt moves on, and the alert outlives the first endsAt.
        await until(
            lambda: datetime.now(UTC) > first_end + timedelta(seconds=1), what="first endsAt"
        )
        later = _ours(alertmanager, "ChimeraPoolSaturation")
        assert later and later[0]["status"]["state"] == "active"
        assert later[0]["startsAt"] == first["startsAt"], "the incident keeps its start"
        assert datetime.fromisoformat(later[0]["endsAt"].replace("Z", "+00:00")) > first_end
        await sink.aclose()

    asyncio.run(scenario())


def test_unreachable_alertmanager_queues_with_a_bound_retries_and_counts(
    short_tmp: Path,
) -> None:
    am = Alertmanager(short_tmp)  # not started yet: nothing listens on its port

    async def scenario() -> None:
        sink, failures = sink_for(am.url, max_queue=2)
        started = time.monotonic()
        for n in range(3):
            await sink.fire(f"e{n}:state", f"e{n}", "critical", f"e{n} is fatal", {})
            await sink.resolve(f"e{n}:state", "running again")
        await sink.fire("engine:state", "engine", "critical", "engine is fatal", {})
        assert time.monotonic() - started < 5, "firing never waits for Alertmanager"
        assert sink.alertmanager is not None
        await until(lambda: len(failures) >= 2, what="failed posts, retried")
        assert set(failures) == {"alertmanager"}
        assert sink.alertmanager.dropped == 1 and len(sink.alertmanager.resolved) == 2
        await asyncio.to_thread(am.start)
        found = await until(
            lambda: _ours(am, "ChimeraComponentState"), timeout=60, what="delivery once it is up"
        )
        assert [a["labels"]["component"] for a in found] == ["engine"]
        await until(lambda: not sink.alertmanager.resolved, what="the queue to drain")
        await sink.aclose()

    try:
        asyncio.run(scenario())
    finally:
        am.stop()


def _metric(port: int, name: str, **labels: str) -> float | None:
    text = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or line.startswith(f"{name}{{{want},"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_agent_alerts_reach_alertmanager_and_resolve(
    agent_factory, alertmanager: Alertmanager
) -> None:
    engine_port, metrics_port = free_port(), free_port()
    agent = agent_factory(
        {
            "agent": {
                "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
                "alerts": {"alertmanager": {"url": alertmanager.url, "resend_interval": "2s"}},
            },
            "components": {
                "engine": {
                    "runtime": "process",
                    "command": child("http", engine_port),
                    "readiness": {
                        "http": f"http://127.0.0.1:{engine_port}/health",
                        "period": "0.5s",
                        "timeout": "0.3s",
                        "failure_threshold": 2,
                    },
                }
            },
        }
    ).start()
    engine = agent.wait_state("engine", "running")
    os.kill(engine["pid"], signal.SIGSTOP)  # frozen: readiness fails, the engine is unhealthy
    try:
        found = wait_for(
            lambda: _ours(alertmanager, "ChimeraComponentState"), timeout=60, what="alert"
        )
        assert found[0]["labels"]["component"] == "engine"
        assert found[0]["labels"]["severity"] == "critical"
        assert "unhealthy" in found[0]["annotations"]["summary"]
    finally:
        os.kill(engine["pid"], signal.SIGCONT)
    agent.wait_state("engine", "running", timeout=60)
    wait_for(lambda: not _ours(alertmanager, "ChimeraComponentState"), timeout=60, what="resolved")
    failures = _metric(metrics_port, "chimera_alert_delivery_failures_total", sink="alertmanager")
    assert failures == 0.0


def test_agent_with_unreachable_alertmanager_counts_failures_and_keeps_supervising(
    agent_factory,
) -> None:
    metrics_port = free_port()
    agent = agent_factory(
        {
            "agent": {
                "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
                "alerts": {"alertmanager": {"url": f"http://127.0.0.1:{free_port()}"}},
            },
            # Crashes at once: backoff -> alert -> a post that cannot be delivered.
            "components": {"engine": {"runtime": "process", "command": child("crash", 0.1, 3)}},
        }
    ).start()

    def counted() -> float:
        value = _metric(metrics_port, "chimera_alert_delivery_failures_total", sink="alertmanager")
        return value or 0.0

    wait_for(counted, timeout=60, what="alertmanager delivery failures counted")
    # Still supervising: it keeps restarting the crashing engine and answers the CLI.
    restarts = agent.component("engine")["restarts"]
    wait_for(lambda: agent.component("engine")["restarts"] > restarts, timeout=60, what="more")
