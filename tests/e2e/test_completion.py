"""Shell completion as the shell drives it: click's protocol through the real entry point,
with component and backup-set names from the config and the backup dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chimera_ops.cli.complete import runbook_names
from tests.harness import REPO, run_cli


def _complete(config: Path, words: str, shell: str = "bash") -> list[str]:
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {
        **os.environ,
        "_CHIMERA_OPS_COMPLETE": f"{shell}_complete",
        "COMP_WORDS": f"chimera-ops --config {config} {words}",
        "COMP_CWORD": str(cword + 3),
    }
    done = subprocess.run(
        [sys.executable, "-m", "chimera_ops"], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if "," in line]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    backups = tmp_path / "backups"
    path = tmp_path / "chimera-ops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "agent": {"state_dir": str(tmp_path / "var")},
                "backup": {"dir": str(backups), "redis": {"url": "redis://127.0.0.1:6379/0"}},
                "components": {
                    "engine": {"runtime": "process", "command": ["sleep", "1"]},
                    "collector": {"runtime": "process", "command": ["sleep", "1"]},
                    "db": {"runtime": "external"},
                },
            }
        )
    )
    return path


def test_component_names_complete_from_the_config(config: Path) -> None:
    assert _complete(config, "restart ") == ["collector", "db", "engine"]
    assert _complete(config, "status e") == ["engine"]
    assert _complete(config, "probe c") == ["collector"]
    assert _complete(config, "events --component d") == ["db"]


def test_backup_sets_complete_from_the_backup_dir(config: Path, redis_service: str) -> None:
    assert _complete(config, "backup verify ") == ["latest"]
    made = run_cli(config, "backup", "--json")  # a real set (Redis only), from a real BGSAVE
    assert made.returncode == 0, made.stdout + made.stderr
    (set_id,) = [
        p.name for p in (config.parent / "backups").iterdir() if not p.name.startswith(".")
    ]
    assert _complete(config, "backup verify ") == ["latest", set_id]
    assert _complete(config, f"restore {set_id[:6]}") == [set_id]


def test_scripts_for_each_shell(config: Path) -> None:
    for shell, marker in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete")):
        done = subprocess.run(
            [sys.executable, "-m", "chimera_ops", "completion", shell],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert done.returncode == 0 and marker in done.stdout, (shell, done.stderr)
        assert "_CHIMERA_OPS_COMPLETE" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "chimera_ops", "completion", "tcsh"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert bad.returncode == 2


def test_bash_script_loads_in_a_real_bash() -> None:
    bash = shutil.which("bash")
    assert bash
    script = subprocess.run(
        [sys.executable, "-m", "chimera_ops", "completion", "bash"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    done = subprocess.run(
        [bash, "-c", f"{script}\ncomplete -p chimera-ops"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "_chimera_ops_completion" in done.stdout, done.stderr


def test_runbook_names_are_the_shipped_runbooks() -> None:
    names = runbook_names()
    assert "server-freeze" in names and "memory-leak" in names and "README" not in names
