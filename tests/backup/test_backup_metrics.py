"""The agent exports the backup catalog on /metrics, and nothing about backups without them."""

from __future__ import annotations

from urllib.request import urlopen

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.backup.conftest import Stack
from tests.harness import AgentProcess, wait_for
from tests.services import free_port


def _scrape(port: int) -> dict[str, float]:
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("chimera_backup_")
    }


def test_backup_figures_on_metrics(stack: Stack) -> None:
    port = free_port()
    config = yaml.safe_load(stack.config_path.read_text())
    config["agent"] = {
        "state_dir": str(stack.directory / "var"),
        "metrics": {"listen": f"127.0.0.1:{port}"},
    }
    stack.config_path.write_text(yaml.safe_dump(config))
    agent = AgentProcess(stack.directory, config).start()
    try:
        assert wait_for(lambda: _scrape(port) == {"chimera_backup_sets": 0.0}, what="no set yet")
        code, summary = stack.json("backup")
        assert code == 0
        found = _scrape(port)
        assert found["chimera_backup_sets"] == 1
        assert (
            abs(found["chimera_backup_last_success_timestamp_seconds"] - summary["finished_at"]) < 1
        )
        assert found["chimera_backup_size_bytes"] == summary["size_bytes"]
        assert "chimera_backup_last_verified_timestamp_seconds" not in found
        assert stack.json("backup", "verify")[0] == 0
        assert "chimera_backup_last_verified_timestamp_seconds" in _scrape(port)
    finally:
        agent.stop()


def test_no_backup_section_exports_no_backup_series(agent_factory) -> None:
    port = free_port()
    agent_factory({"agent": {"metrics": {"listen": f"127.0.0.1:{port}"}}, "components": {}}).start()
    wait_for(lambda: _scrape(port) == {}, what="a scrape without backup series")
