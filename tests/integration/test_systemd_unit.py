"""The systemd unit: the shipped file, `install-service` as a user runs it, and systemd's own
`systemd-analyze verify` on both (systemd is not PID 1 here: the unit is verified, not booted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chimera_ops.ops.service import DEFAULT_SPEC, SYSTEM_DIR, UNIT_NAME, render_unit
from tests.harness import REPO, run_cli

SHIPPED = REPO / "deploy" / "systemd" / UNIT_NAME


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail(
            "systemd-analyze is not installed, so the unit cannot be verified: "
            "apt-get install systemd (.ci/run installs it; it needs no running systemd)"
        )
    return tool


def verify(unit: Path) -> list[str]:
    """systemd-analyze verify; the lines it says about this unit (it exits 0 on warnings)."""
    done = subprocess.run(
        [_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    lines = (done.stdout + done.stderr).splitlines()
    about = [line for line in lines if unit.name in line or str(unit) in line]
    if done.returncode != 0:
        about.append(f"exit code {done.returncode}: {done.stderr.strip()}")
    return about


def _config(directory: Path) -> Path:
    path = directory / "chimera-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "agent": {"state_dir": str(directory / "var")},
                "components": {
                    "engine": {
                        "runtime": "process",
                        "command": ["sleep", "1000"],
                        "stop": {"grace": "20s"},
                    },
                    "db": {"runtime": "external"},
                },
            }
        )
    )
    return path


def test_shipped_unit_is_the_default_rendering_and_systemd_accepts_it() -> None:
    assert SHIPPED.read_text() == render_unit(DEFAULT_SPEC), (
        "deploy/systemd is generated: python -c 'from chimera_ops.ops.service import *; "
        'print(render_unit(DEFAULT_SPEC), end="")\' > deploy/systemd/chimera-ops-agent.service'
    )
    text = SHIPPED.read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "KillMode=mixed",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ReadWritePaths=-/var/lib/chimera-ops -/var/backups/chimera-ops",
    ):
        assert line in text.splitlines(), line
    assert verify(SHIPPED) == []


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    broken = tmp_path / UNIT_NAME
    broken.write_text(SHIPPED.read_text().replace("KillMode=mixed", "KillMode=sometimes"))
    assert verify(broken), "systemd-analyze must flag an invalid KillMode"


def test_dry_run_renders_for_this_config_and_systemd_accepts_it(tmp_path: Path) -> None:
    config = _config(tmp_path)
    result = run_cli(config, "install-service", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["dry_run"] is True and plan["written"] is False
    assert plan["path"] == str(SYSTEM_DIR / UNIT_NAME)
    unit = plan["unit"]
    assert f"--config {config.resolve()} agent" in unit
    assert f"ExecStart={sys.executable} -m chimera_ops" in unit
    assert f"ReadWritePaths=-{(tmp_path / 'var').resolve()}" in unit
    assert "TimeoutStopSec=35s" in unit  # 20 s grace + 15 s margin: the ordered stop fits
    assert plan["commands"] == [
        "systemctl daemon-reload",
        f"systemctl enable --now {UNIT_NAME}",
    ]
    assert not (SYSTEM_DIR / UNIT_NAME).exists() or (SYSTEM_DIR / UNIT_NAME).read_text() != unit
    rendered = tmp_path / UNIT_NAME
    rendered.write_text(unit)
    assert verify(rendered) == []
    # The human form prints the same unit.
    human = run_cli(config, "install-service", "--dry-run")
    assert human.returncode == 0 and unit in human.stdout


def test_system_unit_without_root_says_use_user_and_writes_nothing(short_tmp: Path) -> None:
    tmp_path = short_tmp  # directly under /tmp: readable by the unprivileged user once opened
    target = SYSTEM_DIR / UNIT_NAME
    existed = target.exists()
    config = _config(tmp_path)
    tmp_path.chmod(0o755)
    config.chmod(0o644)
    argv = [sys.executable, "-m", "chimera_ops", "--config", str(config), "install-service"]
    if os.geteuid() == 0:  # run it as an unprivileged user, as the operator would
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert done.returncode == 1, done.stderr
    assert "--user" in done.stderr and "sudo" in done.stderr
    assert "nothing was written" in done.stderr
    assert target.exists() == existed
    assert not (tmp_path / "var").exists()


def test_user_unit_is_written_and_enabling_without_systemd_fails_clearly(tmp_path: Path) -> None:
    config = _config(tmp_path)
    home = tmp_path / "xdg"
    env = {**os.environ, "XDG_CONFIG_HOME": str(home)}
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    base = [sys.executable, "-m", "chimera_ops", "--config", str(config), "install-service"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=120, cwd=REPO, env=env
        )

    written = run("--user", "--no-enable", "--json")
    assert written.returncode == 0, written.stderr
    doc = json.loads(written.stdout)
    path = home / "systemd" / "user" / UNIT_NAME
    assert doc["path"] == str(path) and doc["written"] is True and doc["results"] == []
    text = path.read_text()
    assert "WantedBy=default.target" in text and "ProtectSystem=" not in text
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert (tmp_path / "var").is_dir(), "the state dir exists before the unit first starts"
    assert verify(path) == []

    # No user manager runs in this container: enabling fails, and says so (exit 1).
    enabling = run("--user")
    assert enabling.returncode == 1, enabling.stdout + enabling.stderr
    assert "systemctl --user" in enabling.stderr
    assert "the unit is written" in enabling.stderr
