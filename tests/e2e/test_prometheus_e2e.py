"""A real Prometheus server scrapes the agent with the shipped rules; a frozen engine makes the
LivenessFailing alert go to firing, seen through Prometheus' HTTP API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.request import urlopen

import pytest
import yaml

from tests.harness import REPO, child, wait_for
from tests.services import free_port, wait_tcp

RULES = REPO / "deploy" / "prometheus" / "alerts.yml"


@pytest.mark.slow
def test_frozen_engine_fires_liveness_alert_in_prometheus(agent_factory, short_tmp: Path):
    prometheus = shutil.which("prometheus")
    assert prometheus, "Debian's prometheus package is required (.ci/run installs it)"
    engine_port, metrics_port, prom_port = free_port(), free_port(), free_port()
    agent = agent_factory(
        {
            "agent": {"metrics": {"listen": f"127.0.0.1:{metrics_port}"}},
            "components": {
                "engine": {
                    "runtime": "process",
                    "command": child("http", engine_port),
                    # A patient liveness (many failures before a kill) keeps the probe failing
                    # long enough for the rule's `for: 30s`.
                    "liveness": {
                        "http": f"http://127.0.0.1:{engine_port}/health",
                        "period": "1s",
                        "timeout": "0.5s",
                        "failure_threshold": 120,
                    },
                    "stop": {"grace": "1s"},
                }
            },
        }
    ).start()
    engine = agent.wait_state("engine", "running")

    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "chimera-agent",
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
            }
        ],
    }
    config_path = short_tmp / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={short_tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(short_tmp / "prom.log", "wb"),  # noqa: SIM115
    )
    try:
        wait_tcp("127.0.0.1", prom_port, timeout=30)
        api = f"http://127.0.0.1:{prom_port}/api/v1"

        def scraped() -> bool:
            body = json.load(urlopen(f"{api}/query?query=chimera_component_up", timeout=5))
            return bool(body["data"]["result"])

        wait_for(scraped, timeout=30, what="prometheus scraping the agent")
        os.kill(engine["pid"], signal.SIGSTOP)

        def firing() -> list[dict]:
            body = json.load(urlopen(f"{api}/alerts", timeout=5))
            return [
                a
                for a in body["data"]["alerts"]
                if a["labels"]["alertname"] == "LivenessFailing" and a["state"] == "firing"
            ]

        alerts = wait_for(firing, timeout=90, what="LivenessFailing firing")
        assert alerts[0]["labels"]["component"] == "engine"
        assert alerts[0]["labels"]["severity"] == "critical"
    finally:
        os.kill(engine["pid"], signal.SIGCONT)
        proc.terminate()
        proc.wait(20)
