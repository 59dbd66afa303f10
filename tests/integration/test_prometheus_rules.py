"""The Prometheus alerting rules are valid and behave as their promtool unit tests say."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
RUNBOOKS = {
    "server-freeze",
    "db-connection-failure",
    "redis-pool-exhaustion",
    "memory-leak",
    "disk-full",
    "full-restart",
}


def promtool() -> str:
    path = shutil.which("promtool")
    # Fail, never skip: without promtool the rules are unchecked.
    assert path, "promtool not found on PATH (apt-get install prometheus)"
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_promtool_check_rules() -> None:
    done = run("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests() -> None:
    done = run("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_severity_summary_and_known_runbook() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    assert {
        "ComponentDown",
        "ComponentFlapping",
        "LivenessFailing",
        "MemoryLeakForecast",
        "PoolSaturation",
        "TradingHalted",
        "BackupStale",
        "DiskLow",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        runbook = rule["annotations"]["runbook"]
        # Templated runbooks choose among known names; every name mentioned must be known.
        mentioned = {name for name in RUNBOOKS if name in runbook}
        assert mentioned, f"{rule['alert']}: runbook {runbook!r} names no known runbook"
        assert runbook.startswith("runbooks/") and runbook.endswith(".md")
