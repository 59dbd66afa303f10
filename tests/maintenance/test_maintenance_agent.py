"""The weekly checks over a running agent: the paper engine as a trading component leaking
for real (its /faults/leak route), fixed by `--fix` through `restart --safe` (halted,
restarted, resumed); and the engine pushed over its exchange rate-limit margin."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

from chimera_ops.paper.harness import ledger_problems
from tests.harness import wait_for
from tests.procedures.conftest import run_json, stack_config
from tests.services import free_port

LEAK = {"window": "60s", "min_span": "5s", "min_samples": 5, "horizon": "1h"}


def weekly(agent: Any, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    code, doc = run_json(agent, "maintenance", "weekly", *args)
    return code, {c["check"]: c for c in doc["checks"]}


def engine_metric(port: int, name: str) -> float:
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in the engine's /metrics"
    return float(match.group(1))


def start_stack(
    agent_factory, short_tmp: Path, dsn: str, redis_url: str, *args: str, **engine: Any
) -> Any:
    """The demo stack; `args` go to the engine's command line, `engine` into its section."""
    port = free_port()
    config = stack_config(
        short_tmp,
        dsn,
        redis_url,
        port,
        maintenance={"system_logs": False, "memory_sample_interval": "0.5s"},
    )
    config["components"]["engine"].update(engine)
    config["components"]["engine"]["command"] += list(args)
    agent = agent_factory(config)
    agent.engine_port = port
    agent.start()
    agent.wait_state("engine", "running", timeout=60)
    return agent


def test_a_leaking_engine_is_warned_then_fixed_by_a_safe_restart(
    agent_factory, short_tmp: Path, engine_dsn: str, redis_service: str
) -> None:
    agent = start_stack(
        agent_factory,
        short_tmp,
        engine_dsn,
        redis_service,
        monitors={"memory": {"limit": "2GiB", "period": "0.5s", "leak": LEAK}},
    )
    old_pid = agent.component("engine")["pid"]
    leak = Request(
        f"http://127.0.0.1:{agent.engine_port}/faults/leak",
        data=json.dumps({"mb_per_s": 4}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urlopen(leak, timeout=5).close()

    def warned() -> dict[str, Any] | None:
        found = weekly(agent)[1]["memory_leak"]
        return found if found["status"] == "warning" else None

    found = wait_for(warned, timeout=90, what="the weekly leak check to warn")
    assert found["value"].startswith("engine +") and "limit in ~" in found["value"]
    assert found["data"]["components"]["engine"]["forecast_s"] > 0
    assert found["runbook"] == "runbooks/memory-leak.md"

    # --fix: the trading engine is restarted by the safe path, never a bare kill.
    code, doc = run_json(agent, "maintenance", "weekly", "--fix", "--yes")
    fixed = {c["check"]: c for c in doc["checks"]}["memory_leak"]
    assert fixed["status"] == "ok", fixed
    assert len(fixed["fixed"]) == 1 and "halted, restarted, resumed" in fixed["fixed"][0]
    job = re.search(r"safe-restart (\S+)", fixed["fixed"][0]).group(1)  # type: ignore[union-attr]
    code, procedure = run_json(agent, "procedure", "show", job)
    steps = {s["name"]: s["state"] for s in procedure["steps"]}
    assert procedure["state"] == "succeeded"
    assert steps["halt trading and drain"] == "ok" and steps["resume trading"] == "ok"
    new = agent.component("engine")
    assert new["pid"] != old_pid and new["state"] == "running"
    code, trading = run_json(agent, "trading-state")
    assert trading["engines"][0]["trading"] == "active"
    assert ledger_problems(engine_dsn) == []

    # The new process does not leak: its own samples only, so the old trend is gone.
    assert weekly(agent)[1]["memory_leak"]["status"] in ("ok", "unknown")


def test_the_engine_over_its_rate_limit_margin_is_a_warning_with_the_peak(
    agent_factory, short_tmp: Path, engine_dsn: str, redis_service: str
) -> None:
    # 50 ticks/s makes well over 500 requests a minute; the exchange declared here allows
    # 100000, so the peak is over the 500/min margin and under the limit: a warning.
    agent = start_stack(
        agent_factory, short_tmp, engine_dsn, redis_service, "--exchange-rate-limit", "100000"
    )
    port = agent.engine_port
    wait_for(
        lambda: engine_metric(port, "paper_exchange_requests_peak_per_minute") > 550,
        timeout=60,
        what="the engine over 550 requests a minute",
    )
    found = weekly(agent)[1]["rate_limit"]
    assert found["status"] == "warning", found
    peak = found["data"]["engine"]["peak_per_minute"]
    assert peak > 500 and f"peak {peak:g}/min" in found["value"]
    assert found["threshold"] == "peak <= 500/min (limit 100000/min)"
    assert found["runbook"] == "runbooks/rate-limit.md"
