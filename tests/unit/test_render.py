"""The status renderer with plain values: layouts by width, no split names, wording of figures."""

from __future__ import annotations

import io
import re
from typing import Any

from rich.console import Console

from chimera_ops.cli.render import (
    HEALTH_LEGEND,
    component_detail,
    direct_listing,
    format_last_exit,
    memory_trend,
    pack,
    pool_figures,
    render_listing,
    status_listing,
    strip_restart_promise,
)

NOW = 1_800_000_000.0


def _print(renderable: Any, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=False, color_system=None).print(
        renderable, crop=False
    )
    return out.getvalue()


def _component(name: str, **extra: Any) -> dict[str, Any]:
    comp: dict[str, Any] = {
        "name": name,
        "runtime": "process",
        "state": "running",
        "reason": "ready",
        "pid": 4321,
        "uptime_s": 65.0,
        "restarts": 0,
        "last_exit": None,
        "health": {
            "liveness": {"status": "passing", "last_result": {"latency_s": 0.003}},
            "readiness": {"status": "failing", "last_result": {"latency_s": 1.002}},
        },
        "memory": {"rss_bytes": 50 * 1024 * 1024},
    }
    comp.update(extra)
    return comp


def test_strip_restart_promise_drops_only_the_promise():
    assert strip_restart_promise("killed by SIGKILL; restarting in 1s") == "killed by SIGKILL"
    assert strip_restart_promise("exit code 1; restarting in 0.1s") == "exit code 1"
    assert strip_restart_promise("exit code 1: boom; restarting in 60s, try 3") == (
        "exit code 1: boom, try 3"
    )
    assert strip_restart_promise("probes passing") == "probes passing"
    assert strip_restart_promise(None) == ""


def test_last_exit_says_when_and_promises_nothing():
    comp = {"last_exit": "exit 0 by operator restart", "last_exit_at": NOW - 120}
    assert format_last_exit(comp, NOW) == "exit 0 by operator restart, 2m00s ago"
    assert format_last_exit({"last_exit": "killed by SIGKILL; restarting in 1s"}, NOW) == (
        "killed by SIGKILL"
    )
    assert format_last_exit({"last_exit": None}, NOW) == ""


def test_memory_slope_is_shown_only_once_significant():
    noisy = {"rss_bytes": 1, "slope_bytes_per_s": 2048.0, "slope_significant": False}
    assert memory_trend(noisy) == []
    assert memory_trend({**noisy, "slope_significant": True}) == ["+2.0 KiB/s"]
    # The older agent document, without the flag, is treated as not significant.
    assert memory_trend({"rss_bytes": 1, "slope_bytes_per_s": 2048.0}) == []
    assert memory_trend({"forecast_s": 600.0}) == ["limit in 10m00s"]


def test_pools_say_whose_pool_it_is():
    comp = _component(
        "engine",
        monitors={
            "pool": {
                "postgres": {"connections": 3, "max_connections": 100, "by_state": {}},
                "redis": {"connected_clients": 5, "maxclients": 10000},
                "app": {"postgres": {"in_use": 0.0, "max": 8.0}, "cache": {"size": 4.0}},
            }
        },
    )
    assert pool_figures(comp) == [
        "pg server 3/100",
        "redis clients 5/10000",
        "engine pg pool 0/8",
        "engine cache pool 0/4",
    ]


def test_pack_never_splits_an_item_and_keeps_to_the_width():
    items = ["pg server 3/100", "redis clients 5/10000", "engine pg pool 0/8", "engine x pool 1/2"]
    lines = pack("engine: pools ", items, 50)
    assert len(lines) > 1 and all(len(line) <= 50 for line in lines)
    joined = " ".join(lines)
    for item in items:
        assert item in joined
    assert pack("p: ", ["a-very-long-item-wider-than-the-line"], 10) == [
        "p: a-very-long-item-wider-than-the-line"
    ]


def test_wide_console_gets_the_table_with_a_legend():
    doc = {"components": [_component("engine"), _component("postgres", runtime="external")]}
    text = _print(render_listing(status_listing(doc, NOW), 160), 160)
    assert "┃ component ┃" in text
    assert "L ok 3ms" in text and "R FAIL 1002ms" in text
    assert HEALTH_LEGEND in text


def test_narrow_console_keeps_every_name_state_and_pid_whole():
    doc = {
        "components": [
            _component(f"victim{i}", reason="a reason long enough to need folding " * 3)
            for i in range(20)
        ]
    }
    text = _print(render_listing(status_listing(doc, NOW), 80), 80)
    lines = text.splitlines()
    assert sum("victim1" in line for line in lines) == 11
    for i in range(20):
        (line,) = [line for line in lines if re.search(rf"\bvictim{i}\b", line)]
        assert "running" in line and "4321" in line and "1m05s" in line
    assert lines[0].split() == ["component", "state", "pid", "uptime", "restarts", "memory"]
    # The narrow layout spells the probe roles out: no legend needed.
    assert "liveness ok 3ms, readiness FAIL 1002ms" in text and HEALTH_LEGEND not in text


def test_a_name_wider_than_the_console_is_not_cut():
    name = "a-component-with-a-name-much-longer-than-forty-columns"
    text = _print(render_listing(status_listing({"components": [_component(name)]}, NOW), 40), 40)
    assert any(name in line for line in text.splitlines())


def test_running_component_shows_its_last_exit_with_the_time():
    comp = _component(
        "engine", restarts=1, last_exit="exit 0 by operator restart", last_exit_at=NOW - 120
    )
    for width in (80, 200):
        text = _print(render_listing(status_listing({"components": [comp]}, NOW), width), width)
        assert "last exit: exit 0 by operator restart, 2m00s ago" in text


def test_direct_listing_promises_no_restart():
    comp = {
        "name": "engine",
        "state": "unknown",
        "last_known_state": "backoff",
        "reason": "not supervised now (no agent); last known backoff: exit code 1",
        "pid": None,
        "reachable": False,
        "reachable_target": "127.0.0.1:8701",
        "restarts": 1,
        "last_exit": "exit code 1; restarting in 1s",
    }
    for width in (80, 200):
        text = _print(render_listing(direct_listing({"components": [comp]}, NOW), width), width)
        assert "restarting in" not in text
        assert "NO 127.0.0.1:8701" in text and "backoff" in text


def test_component_detail_names_every_part():
    comp = _component(
        "engine",
        restarts=2,
        consecutive_failures=1,
        since=NOW - 30,
        last_exit="killed by SIGKILL",
        last_exit_at=NOW - 90,
        depends_on=["postgres", "redis"],
        log_file="/srv/var/logs/engine.log",
        alerts={"engine:memory:leak": "warning"},
        trading={"trading": "active", "open_orders": 3},
        monitors={"memory": {"samples": 4, "limit_bytes": 1 << 30}, "cpu": {"cpu_percent": 2.5}},
    )
    comp["health"]["readiness"].update(
        consecutive_failures=3,
        consecutive_successes=0,
        last_result={"ok": False, "reason": "connection refused", "at": NOW - 2},
    )
    text = _print(component_detail(comp, {"readiness": "http http://x/health"}, NOW), 100)
    for expected in (
        "engine (process): running",
        "pid 4321, up 1m05s",
        "restarts 2 (consecutive failures 1)",
        "last exit killed by SIGKILL, 1m30s ago",
        "readiness failing  http http://x/health",
        "last FAILED 2.0s ago: connection refused",
        "0 successes, 3 failures in a row",
        "no significant trend (4 samples)",
        "cpu 2.5%",
        "WARNING engine:memory:leak",
        "trading ACTIVE, 3 open orders",
        "depends on postgres, redis",
        "log file /srv/var/logs/engine.log",
    ):
        assert expected in text, (expected, text)
