"""Probes and monitors, side by side with Monit 5.33 (and supervisord for the overhead).

1. freeze: SIGSTOP of an HTTP child -> its replacement answers /health (N trials);
2. leak lead time: a child leaking 5 MiB/s towards a 1 GiB limit; seconds between the
   chimera-ops leak alert and the limit, vs Monit's `if totalmem > 1 GB then restart`;
3. overhead: 20 components x 3 probes at a 1 s period, agent CPU and RSS over 60 s,
   vs supervisord (no probes) and Monit (20 port checks, `set daemon 1`).

Writes bench/results/freeze_leak.md; exits 2 when a part could not run (its rows say why).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MONIT,
    MONIT_CYCLE,
    NOT_INSTALLED,
    SUPERVISORD,
    ChimeraAgent,
    Monit,
    Section,
    Supervisord,
    Usage,
    child_argv,
    end_tagged,
    fmt,
    free_port,
    freeze_trials,
    health_ok,
    leak_argv,
    measure,
    measure_groups,
    median,
    mib,
    monit_http_check,
    monit_process_check,
    p90,
    tagged_pids,
    temp_dir,
    verdict,
    wait_for,
    write_results,
)

FREEZE_TRIALS = 5
SETTLE = 3.5
LEAK_MIB_PER_S = 5.0
LIMIT = 1024**3
LEAK_TIMEOUT = 330.0
OVERHEAD_COMPONENTS = 20
OVERHEAD_SECONDS = 60.0

LIVENESS = {"period": "1s", "timeout": "1s", "failure_threshold": 2}
RESTART_DEFAULT: dict[str, Any] = {
    "policy": "always",
    "backoff": {"reset_after": "2s"},
    "crash_loop": {"max_restarts": 100, "window": "5m"},
}
MEMORY_MONITOR = {
    "limit": "1GiB",
    "for": 3,
    "period": "1s",
    "leak": {"window": "60s", "min_span": "30s", "horizon": "1h", "min_samples": 12},
}


class NotRun(Exception):
    """A part that could not run; the message goes into its table row."""


# --------------------------------------------------------------------------- freeze


def freeze_chimera(restart: dict[str, Any]) -> list[float]:
    """SIGSTOP trials under chimera-ops with an http liveness probe."""
    tmp = temp_dir("frz")
    tag = str(tmp)
    port = free_port()
    agent = ChimeraAgent(
        tmp,
        {
            "agent": {},
            "components": {
                "web": {
                    "runtime": "process",
                    "command": child_argv("http", port, tag=tag),
                    "liveness": {"http": f"http://127.0.0.1:{port}/health", **LIVENESS},
                    "restart": restart,
                    "stop": {"grace": "2s"},
                }
            },
        },
    )
    try:
        agent.start()
        return freeze_trials(port, FREEZE_TRIALS, SETTLE)
    finally:
        agent.stop()
        end_tagged(tag)


def freeze_monit() -> list[float]:
    """SIGSTOP trials under Monit with a port/http check."""
    if MONIT is None:
        raise NotRun(NOT_INSTALLED)
    tmp = temp_dir("frz-m")
    tag = str(tmp)
    port = free_port()
    monit = Monit(tmp, monit_http_check("web", port, tag))
    try:
        monit.start()
        return freeze_trials(port, FREEZE_TRIALS, SETTLE)
    finally:
        monit.stop()
        end_tagged(tag)


# --------------------------------------------------------------------------- leak


class _RssWatch(threading.Thread):
    """Samples the RSS of the first leaking pid every 0.25 s; notes when it crosses LIMIT."""

    def __init__(self, find_pid: Any) -> None:
        super().__init__(daemon=True)
        self.find_pid = find_pid
        self.pid: int | None = None
        self.created: float | None = None  # wall time the first pid was created
        self.crossed_at: float | None = None  # wall time
        self.gone_at: float | None = None  # wall time the first pid disappeared
        self.last_rss = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            if self.pid is None:
                self.pid = self.find_pid()
                if self.pid is not None:
                    try:
                        self.created = psutil.Process(self.pid).create_time()
                    except psutil.Error:
                        self.pid = None
            elif self.gone_at is None:
                try:
                    rss = psutil.Process(self.pid).memory_info().rss
                    self.last_rss = rss
                    if rss >= LIMIT and self.crossed_at is None:
                        self.crossed_at = time.time()
                except psutil.Error:
                    self.gone_at = time.time()
            self.stop_flag.wait(0.25)


def _leak_alert(agent: ChimeraAgent) -> dict[str, Any] | None:
    for event in agent.events("leaky"):
        # By the finding's key: the component's own name ("leaky") is in every reason.
        key = (event.get("data") or {}).get("key", "")
        if event.get("kind") == "alert" and key.endswith(":memory:leak"):
            return event
    return None


def leak_both() -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the chimera-ops and the Monit leak side by side (same child, same rate)."""
    tmp = temp_dir("leak")
    tag = str(tmp)
    chimera: dict[str, Any] = {}
    monit_out: dict[str, Any] = {}
    agent = ChimeraAgent(
        tmp,
        {
            "agent": {},
            "components": {
                "leaky": {
                    "runtime": "process",
                    "command": leak_argv(LEAK_MIB_PER_S, f"{tag}/chimera"),
                    "monitors": {"memory": MEMORY_MONITOR},
                    "restart": {"policy": "always"},
                    "stop": {"grace": "2s"},
                }
            },
        },
    )
    problem = agent.check_config()
    if problem:
        chimera["error"] = f"config rejected (memory monitor not wired yet?): {problem[:300]}"
    monit: Monit | None = None
    watches: list[_RssWatch] = []
    try:
        if "error" not in chimera:
            agent.start()
            watch = _RssWatch(lambda: (tagged_pids(f"{tag}/chimera") or [None])[0])
            watch.start()
            watches.append(watch)
            chimera["watch"] = watch
        if MONIT is not None:
            mtag = f"{tag}/monit"
            check = monit_process_check(
                "leaky",
                leak_argv(LEAK_MIB_PER_S, mtag),
                match=f"leak {LEAK_MIB_PER_S} {mtag}",
                extra="  if totalmem > 1 GB then restart",
            )
            monit = Monit(_sub(tmp, "m"), check)
            monit.start()
            mwatch = _RssWatch(lambda: (tagged_pids(mtag) or [None])[0])
            mwatch.start()
            watches.append(mwatch)
            monit_out["watch"] = mwatch
        else:
            monit_out["error"] = NOT_INSTALLED
        deadline = time.monotonic() + LEAK_TIMEOUT
        while time.monotonic() < deadline:
            if "watch" in chimera and "alert" not in chimera:
                event = _leak_alert(agent)
                if event is not None:
                    chimera["alert"] = event
            chimera_done = "watch" not in chimera or chimera["watch"].gone_at is not None
            monit_done = "watch" not in monit_out or monit_out["watch"].gone_at is not None
            if chimera_done and monit_done:
                break
            time.sleep(1.0)
        if "watch" in chimera and "alert" not in chimera:
            event = _leak_alert(agent)
            if event is not None:
                chimera["alert"] = event
        if "watch" in chimera:
            chimera["events"] = [
                e for e in agent.events("leaky") if e.get("kind") in ("alert", "kill", "monitor")
            ][:10]
    finally:
        for watch in watches:
            watch.stop_flag.set()
        agent.stop()
        if monit is not None:
            monit.stop()
        for sub in (tag, f"{tag}/chimera", f"{tag}/monit"):  # argv tags must match exactly
            end_tagged(sub)
    return chimera, monit_out


def _sub(base: Path, name: str) -> Path:
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- overhead


def _ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def overhead_chimera() -> tuple[Usage, Usage, int]:
    """Agent alone and agent + guard over OVERHEAD_SECONDS with 20 x 3 probes at 1 s."""
    tmp = temp_dir("ovh")
    tag = str(tmp)
    ports = _ports(OVERHEAD_COMPONENTS)
    components: dict[str, Any] = {}
    for i, port in enumerate(ports):
        url = f"http://127.0.0.1:{port}/health"
        components[f"web{i:02d}"] = {
            "runtime": "process",
            "command": child_argv("http", port, tag=tag),
            "liveness": {
                "http": url,
                "period": "1s",
                "timeout": "1s",
                "failure_threshold": 3,
                "initial_delay": "10s",
            },
            "readiness": {"http": url, "period": "1s", "timeout": "1s"},
            "restart": {"policy": "always"},
            "stop": {"grace": "2s"},
        }
        components[f"port{i:02d}"] = {
            "runtime": "external",
            "readiness": {"tcp": f"127.0.0.1:{port}", "period": "1s", "timeout": "1s"},
        }
    agent = ChimeraAgent(tmp, {"agent": {}, "components": components})
    try:
        agent.start()
        agent.wait_all("running", timeout=90)
        time.sleep(3)
        before = sum(c["restarts"] for c in agent.components().values())
        usage = measure_groups(
            {"agent": lambda: [agent.pid], "both": lambda: [agent.pid, *agent.helper_pids()]},
            OVERHEAD_SECONDS,
        )
        restarts = sum(c["restarts"] for c in agent.components().values()) - before
        return usage["agent"], usage["both"], restarts
    finally:
        agent.stop()
        end_tagged(tag)


def overhead_supervisord() -> Usage:
    """supervisord with the same 20 HTTP children (it has no probes)."""
    if SUPERVISORD is None:
        raise NotRun(NOT_INSTALLED)
    tmp = temp_dir("ovh-sd")
    tag = str(tmp)
    ports = _ports(OVERHEAD_COMPONENTS)
    sup = Supervisord(
        tmp, {f"web{i:02d}": child_argv("http", port, tag=tag) for i, port in enumerate(ports)}
    )
    try:
        sup.start()
        time.sleep(3)
        return measure(lambda: [sup.pid], OVERHEAD_SECONDS)
    finally:
        sup.stop()
        end_tagged(tag)


def overhead_monit() -> Usage:
    """Monit with 20 `check process` + port/http check each, `set daemon 1`."""
    if MONIT is None:
        raise NotRun(NOT_INSTALLED)
    tmp = temp_dir("ovh-m")
    tag = str(tmp)
    ports = _ports(OVERHEAD_COMPONENTS)
    checks = "\n".join(monit_http_check(f"web{i:02d}", p, tag) for i, p in enumerate(ports))
    monit = Monit(tmp, checks)
    try:
        monit.start()
        wait_for(lambda: all(health_ok(p) for p in ports), 90, "monit children healthy", 0.5)
        time.sleep(3)
        return measure(lambda: [monit.pid], OVERHEAD_SECONDS)
    finally:
        monit.stop()
        end_tagged(tag)


# --------------------------------------------------------------------------- main


def main() -> int:
    """Run every part; write bench/results/freeze_leak.md; 2 when a part could not run."""
    incomplete: list[str] = []
    sections: list[Section] = []

    # 1. freeze ------------------------------------------------------------------------
    results: dict[str, list[float] | str] = {}
    for label, run in (
        ("chimera-ops, default backoff", lambda: freeze_chimera(RESTART_DEFAULT)),
        ("Monit 5.33", freeze_monit),
    ):
        print(f"freeze: {label}", flush=True)
        try:
            results[label] = run()
        except NotRun as exc:
            results[label] = str(exc)
            incomplete.append(f"freeze/{label}: {exc}")

    def frow(label: str) -> list[str]:
        values = results[label]
        if isinstance(values, str):
            return [label, values, values, values, "0"]
        return [
            label,
            fmt(median(values), 2, " s"),
            fmt(p90(values), 2, " s"),
            f"{fmt(min(values), 2)} .. {fmt(max(values), 2)} s",
            str(len(values)),
        ]

    labels = list(results)
    monit_vals = results[labels[-1]]
    verdicts = []
    for label in labels[:-1]:
        vals = results[label]
        met = (
            None
            if isinstance(monit_vals, str) or isinstance(vals, str)
            else median(vals) < median(monit_vals)
        )
        verdicts.append(f"{label}: {verdict(met)}")
    sections.append(
        Section(
            title="Frozen process (SIGSTOP) -> replacement answers /health",
            aim="chimera-ops median faster than Monit's",
            headers=["watchdog", "median", "p90", "min .. max", "trials"],
            rows=[frow(label) for label in labels],
            verdict="; ".join(verdicts),
            notes=[
                "Child: `tests/children.py http PORT`. SIGSTOP of the listening pid at t0; "
                "/health polled every 10 ms with a 250 ms request timeout (so while the child is "
                "frozen the poll resolution is ~0.26 s) until 200 from a new pid.",
                f"{FREEZE_TRIALS} trials each, {SETTLE} s of healthy uptime between freezes.",
                "chimera-ops: liveness http /health period 1 s, timeout 1 s, failure_threshold 2; "
                "agent tick 5 s (default); stop grace 2 s (the agent sends SIGCONT with the stop "
                "signal); restart always, default backoff (first restart after 0.1 s), "
                "backoff.reset_after 2 s, crash_loop.max_restarts 100.",
                'Monit: `set daemon 1`; `if failed port N protocol http request "/health" with '
                "timeout 1 seconds then restart` (one failed cycle restarts); stop program "
                "`kill -9 $MONIT_PROCESS_PID`, start program backgrounds the same child; "
                "`check process ... matching`.",
            ],
        )
    )

    # 2. leak ----------------------------------------------------------------------------
    print("leak: chimera-ops and Monit side by side (~4 min)", flush=True)
    chimera, monit_res = leak_both()
    rows = []
    lead_met: bool | None = None
    if "error" in chimera:
        incomplete.append(f"leak/chimera-ops: {chimera['error']}")
        rows.append(["chimera-ops", chimera["error"], "", "", ""])
    else:
        watch: _RssWatch = chimera["watch"]
        alert = chimera.get("alert")
        limit_at = watch.crossed_at
        if alert is None:
            lead = "no leak alert"
            lead_met = False
        elif limit_at is None:
            lead = "alert fired; the limit was never reached (restart or timeout first)"
            lead_met = None
        else:
            lead_s = limit_at - float(alert["ts"])
            lead = fmt(lead_s, 1, " s")
            lead_met = lead_s >= 60
        rows.append(
            [
                "chimera-ops (leak alert)",
                lead,
                fmt(float(alert["ts"]) - _t0(watch), 1, " s") if alert and _t0(watch) else "n/a",
                fmt(limit_at - _t0(watch), 1, " s") if limit_at and _t0(watch) else "never",
                (alert or {}).get("reason", "")[:160].replace("|", "/"),
            ]
        )
    if "error" in monit_res:
        incomplete.append(f"leak/Monit: {monit_res['error']}")
        rows.append(["Monit 5.33 (`totalmem > 1 GB` restart)", monit_res["error"], "", "", ""])
    else:
        mw: _RssWatch = monit_res["watch"]
        acted = mw.gone_at
        lead = fmt(mw.crossed_at - acted, 1, " s") if acted and mw.crossed_at else "did not restart"
        rows.append(
            [
                "Monit 5.33 (`totalmem > 1 GB` restart)",
                lead,
                fmt(acted - _t0(mw), 1, " s") if acted and _t0(mw) else "n/a",
                fmt(mw.crossed_at - _t0(mw), 1, " s") if mw.crossed_at and _t0(mw) else "never",
                "restart (the old pid disappeared)",
            ]
        )
    sections.append(
        Section(
            title=f"Leak lead time: {LEAK_MIB_PER_S:g} MiB/s towards a 1 GiB limit",
            aim="the chimera-ops leak alert fires >= 60 s before the limit is reached",
            headers=[
                "watchdog",
                "lead time (limit - action; negative = after)",
                "action at (since child start)",
                "limit reached at",
                "what it said",
            ],
            rows=rows,
            verdict=verdict(lead_met),
            notes=[
                f"Child: `bench/_common.py leak {LEAK_MIB_PER_S:g}` appends "
                f"{LEAK_MIB_PER_S / 10:g} MiB of touched bytes every 0.1 s; its RSS is sampled "
                "every 0.25 s by the bench; 'limit reached' = first sample >= 1 GiB.",
                "chimera-ops: `monitors: {memory: " + json.dumps(MEMORY_MONITOR) + "}`; the "
                "alert is the first `events --json` entry of kind `alert` mentioning `leak`, "
                "its `ts` is the action time.",
                "Monit: `set daemon 1`, `if totalmem > 1 GB then restart` (Monit's GB is 1024^3); "
                "the action time is when the leaking pid disappeared. By construction it acts "
                "at (after) the limit.",
                "Both leaking children run at the same time (one per watchdog).",
            ],
        )
    )

    # 3. overhead ------------------------------------------------------------------------
    print("overhead: chimera-ops", flush=True)
    agent_only, agent_guard, restarts = overhead_chimera()
    others: dict[str, Usage | str] = {}
    for label, run in (
        ("supervisord 4.2 (no probes)", overhead_supervisord),
        ("Monit 5.33 (20 port checks)", overhead_monit),
    ):
        print(f"overhead: {label}", flush=True)
        try:
            others[label] = run()
        except NotRun as exc:
            others[label] = str(exc)
            incomplete.append(f"overhead/{label}: {exc}")

    def orow(label: str, usage: Usage | str) -> list[str]:
        if isinstance(usage, str):
            return [label, usage, usage, usage]
        return [label, fmt(usage.cpu_percent, 2, " %"), mib(usage.rss_mean), mib(usage.rss_max)]

    sections.append(
        Section(
            title=f"Overhead: {OVERHEAD_COMPONENTS} components x 3 probes at a 1 s period, "
            f"{OVERHEAD_SECONDS:.0f} s",
            aim="chimera-ops agent CPU under 3 % of one core",
            headers=["process(es)", "CPU (% of one core)", "RSS mean", "RSS max"],
            rows=[
                orow("chimera-ops agent alone", agent_only),
                orow("chimera-ops agent + sh death guard", agent_guard),
                *(orow(label, usage) for label, usage in others.items()),
            ],
            verdict=verdict(agent_only.cpu_percent < 3.0 and restarts == 0)
            + f" ({restarts} health restarts of healthy children inside the window)",
            notes=[
                f"Children: {OVERHEAD_COMPONENTS} x `tests/children.py http PORT`.",
                "chimera-ops: each child is a `process` component with a liveness http and a "
                "readiness http probe on /health; plus one `external` component per child with a "
                "tcp readiness probe on its port (60 probes per second in all); period 1 s, "
                "timeout 1 s (liveness initial_delay 10 s: 20 Python children starting at once on a "
                "small machine need it); agent tick 5 s (default); no metrics listener; the aim also "
                "requires zero restarts of these healthy children inside the window.",
                "supervisord: same children, settings as in supervision.md; no health checks.",
                f"Monit: `set daemon {MONIT_CYCLE}`, per child `check process ... matching` with "
                '`if failed port N protocol http request "/health" with timeout 1 seconds then '
                "restart`.",
                "CPU = user+system CPU time delta of the process (children excluded) / wall time; "
                "RSS sampled with psutil every 1 s.",
            ],
        )
    )

    write_results(
        "freeze_leak",
        "Probes and monitors: chimera-ops vs Monit (and supervisord)",
        "`bench/bench_freeze_leak.py` - frozen-process recovery, leak lead time, probe overhead. "
        "Same child programs, loopback only.",
        sections,
    )
    if incomplete:
        print("incomplete: " + "; ".join(incomplete), file=sys.stderr)
        return 2
    return 0


def _t0(watch: _RssWatch) -> float | None:
    """Create time of the first leaking pid (wall clock), when known."""
    return watch.created


if __name__ == "__main__":
    raise SystemExit(main())
