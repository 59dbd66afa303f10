"""`chimera-ops maintenance`: real planted files, a real PostgreSQL (and an unreachable one), a
real process holding a file open, real cron/systemd files; pure decisions apart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from chimera_ops.ops.maintenance.base import RUNBOOK_DIR
from chimera_ops.ops.maintenance.capacity import RateLimitCheck
from chimera_ops.ops.maintenance.files import Entry, select_old
from chimera_ops.ops.maintenance.runner import CHECKS
from chimera_ops.paper.ratelimit import RequestMeter
from tests.harness import REPO

PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DAY = 86400


def write_config(tmp: Path, dsn: str = PG, **maintenance: Any) -> Path:
    config = {
        "agent": {"state_dir": "./var"},
        "components": {},
        "backup": {"dir": "./backups", "postgres": {"dsn": dsn, "databases": ["postgres"]}},
        "maintenance": {"system_logs": False, **maintenance},
    }
    path = tmp / "chimera-ops.yaml"
    path.write_text(yaml.safe_dump(config))
    (tmp / "var" / "logs").mkdir(parents=True, exist_ok=True)
    return path


def cli(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chimera_ops", "--config", str(config), "maintenance", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(REPO),
        input=stdin,
        env={**os.environ, "COLUMNS": "200"},
    )


def checks(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    doc = json.loads(done.stdout)
    return {c["check"]: c for c in doc["checks"]}


def test_every_runbook_named_exists() -> None:
    for classes in CHECKS.values():
        for cls in classes:
            if cls.runbook is not None:
                assert (RUNBOOK_DIR / cls.runbook).is_file(), cls.runbook


def test_select_old_keeps_open_files_and_exact_age() -> None:
    now = 100 * DAY
    old = Entry("/a", now - 31 * DAY, 1, ("/a",))
    young = Entry("/b", now - 29 * DAY, 1, ("/b",))
    held = Entry("/c", now - 31 * DAY, 1, ("/c",))
    edge = Entry("/d", now - 30 * DAY, 1, ("/d",))
    delete, kept = select_old([old, young, held, edge], now, 30 * DAY, {"/c"})
    assert delete == [old] and kept == [held]


def test_rate_limit_decision() -> None:
    check = RateLimitCheck()
    assert check.decide({"e": (400, 600)}, 500).status == "ok"
    assert check.decide({"e": (550, 600)}, 500).status == "warning"
    assert check.decide({"e": (650, 600)}, 500).status == "critical"


def test_request_meter_peak_over_rolling_minute() -> None:
    meter = RequestMeter()
    for i in range(120):
        meter.hit(1000 + i * 0.25)  # 4 per second for 30 s
    assert meter.per_minute(1030) == 120 and meter.peak() == 120
    assert meter.per_minute(1200) == 0 and meter.peak() == 120


def test_sparse_big_log_is_critical_then_ok(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    big = tmp_path / "var" / "logs" / "engine.log"
    with open(big, "wb") as f:
        f.truncate(int(1.1 * 1024**3))
    done = cli(config, "weekly", "--json")
    assert done.returncode == 1, done.stderr
    result = checks(done)["log_sizes"]
    assert result["status"] == "critical" and str(big) in result["value"]
    assert result["runbook"] == "runbooks/disk-full.md"
    big.unlink()
    done = cli(config, "weekly", "--json")
    assert checks(done)["log_sizes"]["status"] == "ok"
    history = json.loads(cli(config, "history", "--json").stdout)["runs"]
    assert [r["schedule"] for r in history] == ["weekly", "weekly"]


def test_old_files_dry_run_fix_and_open_file_kept(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    logs = tmp_path / "var" / "logs"
    files = {name: logs / name for name in ("a31.log.1", "b29.log.1", "held31.log.1")}
    incident = tmp_path / "var" / "incidents" / "20261001T000000Z-engine"
    incident.mkdir(parents=True)
    (incident / "report.md").write_text("x")
    for name, path in files.items():
        path.write_text(name)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"f = open({str(files['held31.log.1'])!r}); import time; time.sleep(120)",
        ]
    )
    try:
        time.sleep(0.5)
        for path in (files["a31.log.1"], files["held31.log.1"], incident / "report.md", incident):
            age = time.time() - 31 * DAY
            os.utime(path, (age, age))
        age = time.time() - 29 * DAY
        os.utime(files["b29.log.1"], (age, age))
        done = cli(config, "monthly", "--dry-run", "--json")
        old = checks(done)["old_files"]
        assert sorted(old["data"]["old"]) == sorted([str(files["a31.log.1"]), str(incident)])
        assert old["data"]["kept_open"] == [str(files["held31.log.1"])]
        assert all(p.exists() for p in files.values())
        refused = cli(config, "monthly", "--fix", "--json", stdin="")
        assert refused.returncode == 2 and files["a31.log.1"].exists()
        done = cli(config, "monthly", "--fix", "--yes", "--json")
        old = checks(done)["old_files"]
        assert sorted(old["fixed"]) == sorted([str(files["a31.log.1"]), str(incident)])
        assert not files["a31.log.1"].exists() and not incident.exists()
        assert files["b29.log.1"].exists() and files["held31.log.1"].exists()
        assert old["data"]["kept_open"] == [str(files["held31.log.1"])]
        assert checks(done)["docker_images"]["advice"] == "no docker engine configured"
    finally:
        holder.kill()
        holder.wait()


def test_postgres_unreachable_is_unknown_and_the_run_goes_on(tmp_path: Path) -> None:
    config = write_config(tmp_path, dsn="postgresql://postgres@127.0.0.1:1/postgres")
    done = cli(config, "weekly", "--json")
    assert done.returncode == 1
    found = checks(done)
    assert found["database_size"]["status"] == "unknown"
    assert "unreachable" in found["database_size"]["advice"]
    assert found["disk_free"]["status"] in ("ok", "warning", "critical")
    assert found["log_sizes"]["status"] == "ok"


def test_database_size_ok_on_the_machines_postgres(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    cli(config, "weekly", "--json")
    found = checks(cli(config, "weekly", "--json"))
    assert found["database_size"]["status"] == "ok"
    # The first run is seconds old: no growth from it (the default span is 20 h).
    assert "growth_bytes_per_day" not in found["database_size"]["data"]
    assert "days_until_full" not in found["disk_free"]["data"]
    config = write_config(tmp_path, growth_min_span="1ms")
    found = checks(cli(config, "weekly", "--json"))
    assert "growth_bytes_per_day" in found["database_size"]["data"]
    assert "growth_bytes_per_day" in found["disk_free"]["data"]


def test_bad_input(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = cli(config, "daily")
    assert done.returncode == 2 and "weekly | monthly" in done.stderr
    config.write_text(config.read_text() + "  log_max_size: lots\n")
    done = cli(config, "weekly")
    assert done.returncode == 2 and "chimera-ops.yaml:" in done.stderr


def test_install_cron_dry_run_and_systemd_into_a_root(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = cli(config, "install", "--cron", "--dry-run", "--root", str(tmp_path / "root"))
    assert done.returncode == 0 and "maintenance weekly --json" in done.stdout
    assert not (tmp_path / "root").exists()
    root = tmp_path / "sys"
    done = cli(config, "install", "--systemd", "--root", str(root))
    assert done.returncode == 0, done.stderr
    units = root / "etc" / "systemd" / "system"
    timer = (units / "chimera-ops-maintenance-weekly.timer").read_text()
    assert "OnCalendar=weekly" in timer and "Persistent=true" in timer
    analyze = shutil.which("systemd-analyze")
    if analyze:
        verify = subprocess.run(
            [analyze, "verify", *map(str, sorted(units.iterdir()))],
            capture_output=True,
            text=True,
            timeout=60,
        )
        said = [line for line in verify.stderr.splitlines() if "chimera-ops-maintenance" in line]
        assert said == [], verify.stderr
    done = cli(config, "uninstall", "--systemd", "--root", str(root))
    assert done.returncode == 0 and not list(units.iterdir())


def test_shipped_files_are_the_default_rendering_and_systemd_accepts_them() -> None:
    from chimera_ops.ops.maintenance.install import DEFAULT_CONFIG, SHIPPED_PYTHON, plan
    from tests.integration.test_systemd_unit import verify

    for kind, folder in (("cron", "cron.d"), ("systemd", "systemd")):
        for item in plan(kind, Path("/"), DEFAULT_CONFIG, SHIPPED_PYTHON):
            shipped = REPO / "deploy" / folder / item.path.name
            assert shipped.read_text() == item.content, (
                f"{shipped} is generated: render it with chimera_ops.ops.maintenance.install.plan"
            )
            if kind == "systemd":
                assert verify(shipped) == [], shipped.name


def test_overlapping_run_exits_at_once(tmp_path: Path) -> None:
    import fcntl

    config = write_config(tmp_path)
    lock = tmp_path / "var" / "maintenance-weekly.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        done = cli(config, "weekly", "--json")
        assert done.returncode == 1 and "already running" in done.stdout
    finally:
        os.close(fd)


@pytest.mark.parametrize("schedule", ["weekly", "monthly"])
def test_check_names_are_unique(schedule: str) -> None:
    names = [cls.name for cls in CHECKS[schedule]]
    assert len(names) == len(set(names))
