"""What a maintenance run leaves behind: the agent's gauges (from a real store), the schedule
record `install` writes for the dead man's switch, a failed run at a real webhook receiver, a
real backup set with a flipped byte failing the integrity check, and `--only`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from chimera_ops.agent.maintenance_metrics import export_maintenance_figures
from chimera_ops.agent.metrics import AgentMetrics
from chimera_ops.ops.maintenance.base import Result
from chimera_ops.ops.maintenance.history import record_run
from chimera_ops.store import Store
from tests.harness import REPO, wait_for
from tests.integration.test_alerts_webhook import Receiver
from tests.maintenance.test_maintenance import checks, cli, write_config


def samples(metrics: AgentMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted labels: value} of one metric, parsed from the rendered exposition."""
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def result(check: str, status: str) -> Result:
    return Result(check, status, "v", "t", "a")  # type: ignore[arg-type]


def test_gauges_follow_the_newest_run_of_each_schedule(tmp_path: Path) -> None:
    store = Store.open_in(tmp_path)
    metrics = AgentMetrics()
    try:
        record_run(
            store,
            "weekly",
            100.0,
            110.0,
            "critical",
            [result("log_sizes", "critical"), result("disk_free", "ok")],
            False,
            None,
        )
        record_run(
            store,
            "monthly",
            200.0,
            290.0,
            "unknown",
            [result("dependency_audit", "unknown")],
            False,
            None,
        )
        export_maintenance_figures(store, metrics)
        status = samples(metrics, "chimera_maintenance_check_status")
        assert status == {
            (("check", "log_sizes"), ("schedule", "weekly")): 3.0,
            (("check", "disk_free"), ("schedule", "weekly")): 0.0,
            (("check", "dependency_audit"), ("schedule", "monthly")): 1.0,
        }
        assert samples(metrics, "chimera_maintenance_last_run_timestamp_seconds") == {
            (("schedule", "weekly"),): 110.0,
            (("schedule", "monthly"),): 290.0,
        }
        # A newer weekly run without the log check: its old series goes, it is not left stale.
        record_run(
            store, "weekly", 300.0, 305.0, "warning", [result("disk_free", "warning")], False, None
        )
        export_maintenance_figures(store, metrics)
        status = samples(metrics, "chimera_maintenance_check_status")
        assert (("check", "log_sizes"), ("schedule", "weekly")) not in status
        assert status[(("check", "disk_free"), ("schedule", "weekly"))] == 2.0
        assert (
            samples(metrics, "chimera_maintenance_last_run_timestamp_seconds")[
                (("schedule", "weekly"),)
            ]
            == 305.0
        )
    finally:
        store.close()


def test_install_starts_the_dead_mans_switch_and_uninstall_stops_it(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    metrics = AgentMetrics()
    dry = cli(config, "install", "--cron", "--dry-run", "--root", str(tmp_path / "root"))
    assert dry.returncode == 0
    store = Store.open_in(tmp_path / "var")
    try:
        export_maintenance_figures(store, metrics)
        assert samples(metrics, "chimera_maintenance_scheduled_timestamp_seconds") == {}
        done = cli(config, "install", "--cron", "--root", str(tmp_path / "root"))
        assert done.returncode == 0, done.stderr
        export_maintenance_figures(store, metrics)
        scheduled = samples(metrics, "chimera_maintenance_scheduled_timestamp_seconds")
        assert set(scheduled) == {(("schedule", "weekly"),), (("schedule", "monthly"),)}
        # Nothing ran yet: no run timestamp, so the rule counts from the install.
        assert samples(metrics, "chimera_maintenance_last_run_timestamp_seconds") == {}
        done = cli(config, "uninstall", "--cron", "--root", str(tmp_path / "root"))
        assert done.returncode == 0 and "removed" in done.stdout
        export_maintenance_figures(store, metrics)
        assert samples(metrics, "chimera_maintenance_scheduled_timestamp_seconds") == {}
    finally:
        store.close()


def test_install_refuses_a_broken_config(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text() + "  rate_limit: many\n")
    done = cli(config, "install", "--cron", "--root", str(tmp_path / "root"))
    assert done.returncode == 2 and "chimera-ops.yaml:" in done.stderr
    assert not (tmp_path / "root").exists()


def with_webhook(config: Path, url: str) -> None:
    doc = yaml.safe_load(config.read_text())
    doc["agent"]["alerts"] = {"webhook": {"url": url}}
    config.write_text(yaml.safe_dump(doc))


def test_a_failed_run_reaches_the_webhook_and_a_clean_one_does_not(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = write_config(tmp_path)
    with_webhook(config, receiver.url)
    big = tmp_path / "var" / "logs" / "engine.log"
    with open(big, "wb") as f:
        f.truncate(int(1.1 * 1024**3))
    done = cli(config, "weekly", "--only", "log_sizes", "--json")
    assert done.returncode == 1
    assert receiver.bodies == []  # a partial run is an operator's look, not the schedule's run
    done = cli(config, "weekly", "--json")
    assert done.returncode == 1, done.stderr
    wait_for(lambda: receiver.bodies, timeout=10, what="the webhook got the failed run")
    body = receiver.bodies[0]
    assert body["key"] == "maintenance:weekly" and body["severity"] == "critical"
    assert "maintenance weekly" in body["summary"] and "log_sizes critical" in body["summary"]
    assert body["details"]["log_sizes"]["status"] == "critical"


def test_the_integrity_check_fails_on_a_flipped_byte(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    backup = subprocess.run(
        [sys.executable, "-m", "chimera_ops", "--config", str(config), "backup", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(REPO),
    )
    assert backup.returncode == 0, backup.stdout + backup.stderr
    set_id = json.loads(backup.stdout)["id"]
    done = cli(config, "monthly", "--only", "backup_integrity", "--json")
    assert done.returncode == 0, done.stdout
    assert checks(done)["backup_integrity"]["status"] == "ok"

    set_dir = tmp_path / "backups" / set_id
    victim = max(set_dir.glob("pg.*.dump"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    done = cli(config, "monthly", "--only", "backup_integrity", "--json")
    assert done.returncode == 1
    found = checks(done)["backup_integrity"]
    assert found["status"] == "critical" and set_id in found["value"]
    assert victim.name in json.dumps(found["data"])
    assert found["runbook"] == "runbooks/data-restore.md"
    assert [c["check"] for c in json.loads(done.stdout)["checks"]] == ["backup_integrity"]


def test_only_names_the_known_checks(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = cli(config, "weekly", "--only", "log_size")
    assert done.returncode == 2
    assert "unknown weekly check log_size" in done.stderr and "log_sizes" in done.stderr
