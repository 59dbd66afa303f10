"""`chimera-ops status` as people and scripts read it (issue 8, items 2 and 9): at 80 columns
and piped, nothing but free text wraps; `status NAME` in detail; no restart promised without an
agent; a memory slope only once it means something."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.harness import REPO, AgentProcess, child, wait_for
from tests.services import free_port

HEADER_WORDS = ("component", "state", "pid", "uptime", "restarts", "memory", "health", "reason")


def status_piped(config: Path, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    """`chimera-ops status ARGS` with stdout a pipe (not a terminal) and COLUMNS set."""
    env = {**os.environ, "COLUMNS": str(columns)}
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "chimera_ops", "--config", str(config), "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=str(REPO),
    )


def split_words(text: str, words: list[str]) -> list[tuple[str, str]]:
    """(fragment, word) for every token that is a cut-off start of a known word."""
    found = []
    known = set(words)
    for line in text.splitlines():
        tokens = re.split(r"[\s│┃|:,()]+", line)
        for token in tokens:
            if len(token) < 3 or token in known:
                continue
            for word in words:
                if word.startswith(token):
                    found.append((token, word))
    return found


def test_twenty_components_piped_at_80_columns_keep_every_name_whole(agent_factory):
    names = [f"victim{i}" for i in range(20)]
    agent: AgentProcess = agent_factory(
        {"components": {n: {"runtime": "process", "command": child("sleep")} for n in names}}
    ).start()
    wait_for(
        lambda: all(c["state"] == "running" for c in agent.status()["components"]),
        timeout=60,
        what="all twenty running",
    )
    result = status_piped(agent.config_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # `chimera-ops status | grep -c victim1`: victim1 and victim10..victim19.
    assert sum("victim1" in line for line in lines) == 11, result.stdout
    pids = {c["name"]: c["pid"] for c in agent.status()["components"]}
    for name in names:
        (line,) = [line for line in lines if re.search(rf"\b{name}\b", line)]
        assert "running" in line and str(pids[name]) in line, line
    assert split_words(result.stdout, [*names, "running", *HEADER_WORDS]) == []


def test_demo_like_stack_at_80_columns_splits_no_word(
    agent_factory, postgres_service, redis_service
):
    port = free_port()
    agent = agent_factory(
        {
            "components": {
                "postgres": {
                    "runtime": "external",
                    "readiness": {"tcp": "127.0.0.1:5432", "period": "1s"},
                    "liveness": {"postgres": postgres_service, "period": "2s"},
                },
                "redis": {
                    "runtime": "external",
                    "readiness": {"tcp": "127.0.0.1:6379", "period": "1s"},
                    "liveness": {"redis": redis_service, "period": "2s"},
                },
                "engine": {
                    "runtime": "process",
                    "command": child("http", port),
                    "depends_on": ["postgres", "redis"],
                    "readiness": {"http": f"http://127.0.0.1:{port}/health", "period": "1s"},
                    "liveness": {"http": f"http://127.0.0.1:{port}/health", "period": "1s"},
                    "monitors": {
                        "memory": {"limit": "1GiB", "period": "1s"},
                        "pools": {
                            "postgres": {"dsn": postgres_service},
                            "redis": {"url": redis_service},
                            "app": {"metrics_url": f"http://127.0.0.1:{port}/metrics"},
                            "period": "1s",
                        },
                    },
                },
            }
        }
    ).start()
    agent.wait_state("engine", "running")

    def pools_line() -> str | None:
        out = status_piped(agent.config_path).stdout
        return out if "engine db pool" in out and "pg server" in out else None

    text = wait_for(pools_line, timeout=30, what="the pools line")
    words = ["postgres", "redis", "engine", "running", *HEADER_WORDS]
    assert split_words(text, words) == [], text
    # Whose pool is whose: the servers' totals and the engine's own pool.
    assert re.search(r"pg server \d+/\d+", text) and re.search(r"redis clients \d+/\d+", text)
    assert "engine db pool 1/8" in text
    for width in (80, 200):
        wide = status_piped(agent.config_path, columns=width).stdout
        assert split_words(wide, words) == [], wide
    # The wide table abbreviates the probe roles and says what the letters mean.
    assert "L liveness, R readiness" in status_piped(agent.config_path, columns=200).stdout


def test_status_name_shows_one_component_in_detail(agent_factory):
    port = free_port()
    agent = agent_factory(
        {
            "components": {
                "db": {"runtime": "process", "command": child("sleep")},
                "engine": {
                    "runtime": "process",
                    "command": child("http", port),
                    "depends_on": ["db"],
                    "readiness": {"http": f"http://127.0.0.1:{port}/health", "period": "1s"},
                },
            }
        }
    ).start()
    first = agent.wait_state("engine", "running")
    os.kill(first["pid"], signal.SIGKILL)
    engine = wait_for(
        lambda: (c := agent.component("engine"))["state"] == "running" and c["restarts"] == 1 and c,
        what="engine restarted",
    )
    result = status_piped(agent.config_path, "engine")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for expected in (
        "engine (process): running",
        f"pid {engine['pid']}, up ",
        "restarts 1 (consecutive failures 1)",
        f"readiness passing  http http://127.0.0.1:{port}/health",
        " 0 failures in a row",
        "depends on db",
        f"log file {agent.state_dir / 'logs' / 'engine.log'}",
    ):
        assert expected in text, (expected, text)
    (last_exit,) = [line for line in text.splitlines() if "last exit" in line]
    assert "killed by SIGKILL" in last_exit and "restarting in" not in last_exit, last_exit
    if engine.get("last_exit_at"):  # its time, where the agent records it (issue 8, item 2)
        assert "ago" in last_exit, last_exit
    assert "db (process)" not in text
    doc = json.loads(status_piped(agent.config_path, "--json", "engine").stdout)
    assert [c["name"] for c in doc["components"]] == ["engine"]

    unknown = status_piped(agent.config_path, "nope")
    assert unknown.returncode == 2
    assert "unknown component 'nope'" in unknown.stderr
    assert "known components: db, engine" in unknown.stderr


def test_no_agent_view_of_a_component_in_backoff_promises_no_restart(agent_factory):
    agent = agent_factory(
        {
            "components": {
                "crasher": {
                    "runtime": "process",
                    "command": child("crash", 0.2, 1),
                    # A long backoff: the agent is killed while it still waits.
                    "restart": {"backoff": {"first": "60s", "initial": "60s", "max": "60s"}},
                }
            }
        }
    ).start()
    backoff = agent.wait_state("crasher", "backoff")
    assert "restarting in" in backoff["reason"]  # what the agent said while it was there
    agent.stop(signal.SIGKILL)
    for args in ([], ["crasher"], ["--json"]):
        result = status_piped(agent.config_path, *args)
        assert result.returncode == 1, result.stderr
        assert "restarting in" not in result.stdout, result.stdout
        assert "not supervised now" in result.stdout, result.stdout
        assert "backoff" in result.stdout
    doc = json.loads(status_piped(agent.config_path, "--json").stdout)
    (comp,) = doc["components"]
    assert comp["last_known_state"] == "backoff" and "exit code 1" in comp["last_exit"]


def test_memory_slope_appears_only_once_significant(agent_factory):
    agent = agent_factory(
        {
            "components": {
                "leaky": {
                    "runtime": "process",
                    "command": child("leak", 5),
                    "monitors": {
                        "memory": {
                            "limit": "2GiB",
                            "period": "0.5s",
                            "leak": {"window": "60s", "min_samples": 12, "min_span": "8s"},
                        }
                    },
                }
            }
        }
    ).start()
    agent.wait_state("leaky", "running")

    def early() -> str | None:
        # A slope exists from 3 samples on; under 12 it is not significant and must not show.
        text = status_piped(agent.config_path, "leaky", columns=200).stdout
        found = re.search(r"no significant trend \((\d+) samples\)", text)
        return text if found and 3 <= int(found.group(1)) < 12 else None

    text = wait_for(early, timeout=30, what="a detail view with 3..11 samples")
    assert "/s" not in text, text

    def significant() -> str | None:
        text = status_piped(agent.config_path, columns=200).stdout
        return text if re.search(r"memory \+[\d.]+ MiB/s", text) else None

    wait_for(significant, timeout=60, what="the significant slope in status")
    doc = json.loads(status_piped(agent.config_path, "--json").stdout)
    assert doc["components"][0]["memory"]["slope_significant"] is True
