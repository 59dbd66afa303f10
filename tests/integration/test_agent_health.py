"""Issue 4 through the real agent: liveness restarts a frozen child (with an incident), the memory
monitor alerts on a leak before the limit and restarts at it, a sawtooth is not a leak, an external
PostgreSQL that stops turns unhealthy and back, the webhook gets one alert per incident, and
/metrics parses."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.request import urlopen

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import child, wait_for
from tests.services import free_port, private_postgres


def _freeze_until_replaced(agent, timeout: float = 30.0) -> dict:
    """SIGSTOP the running engine; wait until a new pid runs; check liveness killed the old one."""
    agent.wait_state("engine", "running")
    # Frozen once the agent's liveness probe has seen it answer (before, the start grace holds).
    frozen = wait_for(
        lambda: (c := agent.component("engine"))["health"]["liveness"]["status"] == "passing" and c,
        what="liveness passing",
    )
    os.kill(frozen["pid"], signal.SIGSTOP)

    def replaced():
        comp = agent.component("engine")
        return comp if comp["state"] == "running" and comp["pid"] != frozen["pid"] else None

    wait_for(replaced, timeout=timeout, what="frozen engine replaced")
    kills = [e for e in agent.events("engine") if e["kind"] == "kill"]
    assert kills and "liveness probe failed" in kills[0]["reason"]
    return frozen


def test_sigstopped_child_is_restarted_by_liveness_with_incident(agent_factory):
    port = free_port()
    agent = agent_factory(
        {
            "components": {
                "engine": {
                    "runtime": "process",
                    "command": child("http", port),
                    "readiness": {"http": f"http://127.0.0.1:{port}/health", "period": "0.3s"},
                    "liveness": {
                        "http": f"http://127.0.0.1:{port}/health",
                        "period": "0.3s",
                        "timeout": "0.5s",
                        "failure_threshold": 2,
                    },
                    "restart": {"policy": "on-failure", "backoff": {"initial": "0.2s"}},
                    "stop": {"grace": "1s"},
                }
            }
        }
    ).start()
    frozen = _freeze_until_replaced(agent)
    listing = json.loads(agent.cli("incidents", "--json").stdout)["incidents"]
    assert len(listing) == 1 and listing[0]["component"] == "engine"
    shown = agent.cli("incidents", "show", listing[0]["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    incident = json.loads(shown.stdout)
    assert "liveness" in incident["incident"]["reason"]
    assert any(not p["ok"] for p in incident["probes"])
    assert str(frozen["pid"]) in json.dumps(incident["processes"])
    assert incident["stack"], "a stack dump (or the reason there is none) is recorded"


@pytest.mark.slow
def test_leak_alerts_before_the_limit_and_restarts_at_it(agent_factory):
    agent = agent_factory(
        {
            "components": {
                "leaky": {
                    "runtime": "process",
                    "command": child("leak", 5),
                    "restart": {"policy": "always", "backoff": {"initial": "0.2s"}},
                    "monitors": {
                        "memory": {
                            "limit": "200MiB",
                            "for": 2,
                            "period": "0.5s",
                            "leak": {
                                "window": "60s",
                                "min_samples": 12,
                                "min_span": "8s",
                                "horizon": "1h",
                            },
                        }
                    },
                }
            }
        }
    ).start()
    first = agent.wait_state("leaky", "running")
    wait_for(
        lambda: agent.component("leaky")["restarts"] >= 1, timeout=90, what="restart at the limit"
    )
    events = agent.events("leaky")
    leak = next(
        e for e in events if e["kind"] == "alert" and "leak" in (e["data"] or {}).get("key", "")
    )
    kill = next(e for e in events if e["kind"] == "kill")
    assert "memory" in kill["reason"]
    assert leak["ts"] < kill["ts"], "the leak alert comes before the restart at the limit"
    assert agent.component("leaky")["pid"] != first["pid"]


@pytest.mark.slow
def test_sawtooth_memory_is_not_a_leak(agent_factory):
    agent = agent_factory(
        {
            "components": {
                "saw": {
                    "runtime": "process",
                    "command": child("saw", 60, 4),
                    "monitors": {
                        "memory": {
                            "limit": "1GiB",
                            "period": "0.5s",
                            "leak": {
                                "window": "60s",
                                "min_samples": 12,
                                "min_span": "8s",
                                "horizon": "1h",
                            },
                        }
                    },
                }
            }
        }
    ).start()
    agent.wait_state("saw", "running")
    time.sleep(40)
    comp = agent.component("saw")
    assert comp["memory"]["rss_bytes"] > 0
    assert comp["monitors"]["memory"]["samples"] >= 40
    leaks = [e for e in agent.events("saw") if e["kind"] == "alert"]
    assert leaks == [], leaks
    assert comp["restarts"] == 0


def test_stopped_private_postgres_turns_unhealthy_and_back(agent_factory):
    with private_postgres() as pg:
        agent = agent_factory(
            {
                "components": {
                    "db": {
                        "runtime": "external",
                        "liveness": {
                            "postgres": {"dsn": pg.dsn},
                            "period": "0.3s",
                            "timeout": "2s",
                            "failure_threshold": 2,
                        },
                    }
                }
            }
        ).start()
        agent.wait_state("db", "running")
        pg.stop()
        unhealthy = agent.wait_state("db", "unhealthy")
        assert "postgres" in unhealthy["reason"]
        pg.start()
        agent.wait_state("db", "running")
        assert agent.component("db")["restarts"] == 0  # external: reported, never restarted


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_gets_one_alert_per_incident_and_metrics_parse(agent_factory):
    _Receiver.received = []
    hook_port, dead_port, metrics_port = free_port(), free_port(), free_port()
    server = ThreadingHTTPServer(("127.0.0.1", hook_port), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        agent = agent_factory(
            {
                "agent": {
                    "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
                    "alerts": {"webhook": {"url": f"http://127.0.0.1:{hook_port}/hook"}},
                },
                "components": {
                    "broker": {
                        "runtime": "external",
                        "readiness": {
                            "tcp": f"127.0.0.1:{dead_port}",
                            "period": "0.1s",
                            "failure_threshold": 1,
                        },
                    }
                },
            }
        ).start()
        agent.wait_state("broker", "unhealthy")
        time.sleep(3)  # ~30 failing probe ticks
        alerts = [a for a in _Receiver.received if a.get("key") == "broker:state"]
        assert len(alerts) == 1, alerts
        assert alerts[0]["severity"] == "critical" and "text" in alerts[0]

        text = urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        up = [
            s for s in families["chimera_component_up"].samples if s.labels["component"] == "broker"
        ]
        assert up[0].value == 0
        state = {
            s.labels["state"]: s.value
            for s in families["chimera_component_state"].samples
            if s.labels["component"] == "broker"
        }
        assert state["unhealthy"] == 1 and state["running"] == 0
        probe = [
            s for s in families["chimera_probe_success"].samples if s.labels["probe"] == "readiness"
        ]
        assert probe[0].value == 0
        assert "chimera_component_restarts" in families
    finally:
        server.shutdown()


def test_liveness_kill_grace_cuts_the_wait_for_a_process_that_ignores_sigterm(agent_factory):
    # stop.grace is long (a graceful operator stop may take its time), but a frozen process
    # cannot act on SIGTERM: the liveness probe's kill_grace decides how long a kill waits.
    port = free_port()
    agent = agent_factory(
        {
            "components": {
                "engine": {
                    "runtime": "process",
                    "command": child("stubborn", port),
                    "liveness": {
                        "http": f"http://127.0.0.1:{port}/health",
                        "period": "0.3s",
                        "timeout": "0.5s",
                        "failure_threshold": 2,
                        "kill_grace": "0.5s",
                    },
                    "stop": {"grace": "60s"},
                }
            }
        }
    ).start()
    # Replaced within 30 s, well inside stop.grace: only kill_grace can explain that.
    _freeze_until_replaced(agent)
    # A graceful stop would wait out the 60 s stop.grace; the death guard ends the child.
    agent.stop(signal.SIGKILL)


def test_pool_monitor_waits_until_the_component_is_ready(agent_factory):
    # A service that takes 2 s to listen: sampling its pools while it starts would raise (and
    # page) a "cannot scrape" alert on every start or restart.
    port = free_port()
    agent = agent_factory(
        {
            "components": {
                "engine": {
                    "runtime": "process",
                    "command": child("slow-http", 2, port),
                    "readiness": {"http": f"http://127.0.0.1:{port}/health", "period": "0.3s"},
                    "monitors": {
                        "pools": {
                            "app": {"metrics_url": f"http://127.0.0.1:{port}/metrics"},
                            "period": "0.3s",
                        }
                    },
                }
            }
        }
    ).start()
    agent.wait_state("engine", "running")
    wait_for(
        lambda: agent.component("engine")["monitors"].get("pool", {}).get("app"),
        timeout=10,
        what="app pools sampled once ready",
    )
    alerts = [e for e in agent.events("engine") if e["kind"] == "alert"]
    assert alerts == [], alerts
