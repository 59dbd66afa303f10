"""`config check` refuses a state dir (or its logs dir) that is `/` or a system directory, with
file:line:field like every other config error, exit 2; the pure list apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chimera_ops.syspaths import system_dir_problem
from tests.harness import run_cli


def _config(tmp: Path, state_dir: str) -> Path:
    path = tmp / "chimera-ops.yaml"
    path.write_text(
        f"# the stack\nagent:\n  tick: 5s\n  state_dir: {state_dir}\ncomponents: {{}}\n"
    )
    return path


@pytest.mark.parametrize("state_dir", ["/", "/etc", "/var/lib/postgresql/16/main", "//"])
def test_config_check_refuses_a_system_state_dir(tmp_path: Path, state_dir: str) -> None:
    config = _config(tmp_path, state_dir)
    done = run_cli(config, "config", "check")
    assert done.returncode == 2, done
    assert f"{config}:4: agent.state_dir: " in done.stderr, done.stderr
    assert "directory" in done.stderr
    done = run_cli(config, "config", "check", "--json")
    assert done.returncode == 2
    (error,) = json.loads(done.stdout)["errors"]
    assert (error["file"], error["line"], error["path"]) == (str(config), 4, "agent.state_dir")
    # Every command loads the config the same way: the agent never starts on it either.
    assert run_cli(config, "maintenance", "monthly", "--fix", "--yes").returncode == 2


def test_a_logs_dir_linked_to_a_system_dir_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "var"
    state.mkdir()
    (state / "logs").symlink_to("/etc", target_is_directory=True)
    config = _config(tmp_path, str(state))
    done = run_cli(config, "config", "check")
    assert done.returncode == 2
    assert f"{config}:4: agent.state_dir: {state}/logs leads to /etc" in done.stderr, done.stderr
    (state / "logs").unlink()
    (state / "logs").mkdir()
    assert run_cli(config, "config", "check").returncode == 0


def test_system_dirs() -> None:
    refused = ["/", "/etc", "/usr/local/x", "/proc/1", "/var/lib", "/home", "/home/ops", "/tmp"]
    refused += ["/var/lib/redis", "/var/lib/docker/volumes/x", "/root", "/dev/shm/x"]
    allowed = ["/var/lib/chimera-ops", "/etc/chimera-ops/var", "/home/ops/chimera", "/tmp/x"]
    allowed += ["/srv/chimera", "/root/chimera", "/opt/chimera/var", "/var/lib/postgresql-x"]
    assert [p for p in refused if system_dir_problem(p) is None] == []
    assert [p for p in allowed if system_dir_problem(p) is not None] == []
    assert system_dir_problem("/usr/lib") == "is inside /usr, a system directory"
