"""Every panel of deploy/grafana/chimera-ops.json, asked of a real Prometheus that scrapes a
real agent over a stack that exercises each metric (probes, a leaking child, PostgreSQL and
Redis pools, a disk monitor, an engine with the trading contract, a verified backup set, a
recorded maintenance run and schedule, a procedure run): each expression parses and returns
data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest
import yaml

from tests.harness import child, run_cli, wait_for
from tests.integration.test_trading_client import ENGINE_SCRIPT
from tests.services import free_port, wait_tcp
from tests.unit.test_grafana_dashboard import expressions, load

# Grafana's variables, as Grafana would fill them in for a 1 s scrape.
VARIABLES = {"$__rate_interval": "1m", "$component": ".*"}


def promql(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr!r}"
    return expr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_panel_query_parses_and_returns_data(
    agent_factory, short_tmp: Path, redis_service: str, postgres_service: str
) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "Debian's prometheus package is required (.ci/run installs it)"
    engine_port, metrics_port, prom_port = free_port(), free_port(), free_port()
    script = short_tmp / "engine_ctl.py"
    script.write_text(ENGINE_SCRIPT)
    control = {
        op: [sys.executable, str(script), op, str(short_tmp / "trading.json")]
        for op in ("state", "halt", "resume")
    }
    leak = {"window": "60s", "min_span": "5s", "min_samples": 5, "horizon": "1h"}
    agent = agent_factory(
        {
            "agent": {"metrics": {"listen": f"127.0.0.1:{metrics_port}"}},
            "backup": {"dir": str(short_tmp / "backups"), "redis": {"url": redis_service}},
            "components": {
                "postgres": {
                    "runtime": "external",
                    "readiness": {"tcp": "127.0.0.1:5432", "period": "1s"},
                    "monitors": {"pools": {"postgres": {"dsn": postgres_service}, "period": "1s"}},
                },
                "redis": {
                    "runtime": "external",
                    "readiness": {"tcp": "127.0.0.1:6379", "period": "1s"},
                    "monitors": {"pools": {"redis": {"url": redis_service}, "period": "1s"}},
                },
                "engine": {
                    "runtime": "process",
                    "command": child("http", engine_port),
                    "readiness": {"http": f"http://127.0.0.1:{engine_port}/health", "period": "1s"},
                    "liveness": {"http": f"http://127.0.0.1:{engine_port}/health", "period": "1s"},
                    "trading": {"control": {"command": control}},
                    "monitors": {"disk": {"paths": [str(short_tmp)], "period": "1s"}},
                },
                "leaky": {
                    "runtime": "process",
                    "command": child("leak", 2),
                    "monitors": {"memory": {"limit": "1GiB", "period": "0.5s", "leak": leak}},
                },
            },
        }
    )
    made = run_cli(agent.config_path, "backup", "--json")
    assert made.returncode == 0, made.stdout + made.stderr
    verified = run_cli(agent.config_path, "backup", "verify", "latest", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # A recorded maintenance run and an installed schedule (into a temp root) for the
    # maintenance panels; exit 1 is fine (some checks are not ok on this stack).
    weekly = run_cli(agent.config_path, "maintenance", "weekly", "--json")
    assert weekly.returncode in (0, 1), weekly.stdout + weekly.stderr
    installed = run_cli(
        agent.config_path, "maintenance", "install", "--cron", "--root", str(short_tmp / "root")
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    agent.start()
    agent.wait_state("engine", "running")
    # One procedure run (a staged start) for the procedures panel.
    staged = run_cli(agent.config_path, "start", "--all", "--json")
    assert staged.returncode == 0, staged.stdout + staged.stderr

    config = short_tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "chimera-agent",
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    }
                ],
            }
        )
    )
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={short_tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(short_tmp / "prom.log", "wb"),  # noqa: SIM115 - owned by the child
    )
    api = f"http://127.0.0.1:{prom_port}/api/v1/query"

    def query(expr: str) -> dict:
        with urlopen(f"{api}?{urlencode({'query': expr})}", timeout=5) as response:
            return json.load(response)  # type: ignore[no-any-return]

    try:
        wait_tcp("127.0.0.1", prom_port, timeout=30)
        exprs = [promql(e) for e in expressions(load())]
        assert len(exprs) >= 20
        for expr in exprs:  # parses: a bad expression is a 400 with errorType bad_data
            body = wait_for(lambda e=expr: query(e), timeout=30, what=f"prometheus answers {expr}")
            assert body["status"] == "success", (expr, body)
        pending = set(exprs)

        def all_have_data() -> bool:
            for expr in sorted(pending):
                if query(expr)["data"]["result"]:
                    pending.discard(expr)
            return not pending

        try:
            wait_for(all_have_data, timeout=150, what="data for every panel")
        except AssertionError:
            raise AssertionError(f"no data for: {sorted(pending)}") from None
    finally:
        proc.terminate()
        proc.wait(20)
