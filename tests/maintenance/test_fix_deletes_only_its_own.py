"""`maintenance monthly --fix` deletes only its own kinds of files (rotated component logs,
support bundles, incident directories) and never through a symlinked directory: real planted
files, a real symlinked logs dir, the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from chimera_ops.ops.maintenance.files import own_kind
from tests.harness import run_cli

DAY = 86400


def _config(tmp: Path) -> Path:
    config = {
        "agent": {"state_dir": str(tmp / "var")},
        "components": {},
        "maintenance": {"system_logs": False, "max_age": "30d"},
    }
    path = tmp / "chimera-ops.yaml"
    path.write_text(yaml.safe_dump(config))
    (tmp / "var").mkdir(mode=0o700)
    return path


def _plant(path: Path, text: str = "keep me") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _age_all(root: Path, days: float = 60) -> None:
    """Every file and directory under root (not following links) is `days` old."""
    when = os.path.getmtime(root) - days * DAY
    for dirpath, dirs, files in os.walk(root, topdown=False):
        for name in [*files, *dirs]:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)


def _old_files(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.stdout, done.stderr
    doc = json.loads(done.stdout)
    return next(c for c in doc["checks"] if c["check"] == "old_files")


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_symlinked_logs_dir_loses_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path)
    target = tmp_path / "elsewhere"
    # What the link points at: files of every kind, even one named like a rotated log.
    for rel in ("important.db", "sub/keep.txt", "engine.log.1", "engine.log", "sub/x.log.2"):
        _plant(target / rel)
    (tmp_path / "var" / "logs").symlink_to(target, target_is_directory=True)
    _age_all(target)
    before = _tree(target)
    done = run_cli(config, "maintenance", "monthly", "--fix", "--yes", "--json", timeout=300)
    old = _old_files(done)
    assert _tree(target) == before, "nothing under the link's target may go"
    assert all((target / rel).read_text() == "keep me" for rel in before if "." in rel[-4:])
    assert old["fixed"] == [] and old["data"]["not_followed"] == [str(tmp_path / "var/logs")]
    assert old["status"] == "warning" and "symlink" in old["value"], old


def test_fix_deletes_only_its_own_kinds_and_no_link(tmp_path: Path) -> None:
    config = _config(tmp_path)
    state = tmp_path / "var"
    outside = tmp_path / "outside"
    keep = [
        _plant(state / "logs" / "engine.log"),  # the live log
        _plant(state / "logs" / "important.db"),
        _plant(state / "logs" / "sub" / "keep.txt"),
        _plant(state / "logs" / "engine.log.1.bak"),
        _plant(state / "incidents" / "notes" / "todo.txt"),
        _plant(state / "notes.json"),
        _plant(state / "other.tar.gz"),
        _plant(outside / "incident-like" / "data.txt"),
        _plant(outside / "bundle.tar.gz"),
    ]
    gone = [
        _plant(state / "logs" / "engine.log.1"),
        _plant(state / "logs" / "md-feed.log.12"),
        _plant(state / "incidents" / "20261001T000000Z-engine" / "report.md"),
        _plant(state / "chimera-bundle-host-20261001T000000Z.tar.gz"),
        _plant(state / "bundles" / "chimera-bundle-host-20261002T000000Z.tar.gz"),
    ]
    # Links named like our own kinds: neither the link's target nor the link is followed.
    linked_incident = state / "incidents" / "20261003T000000Z-engine"
    linked_incident.symlink_to(outside / "incident-like", target_is_directory=True)
    linked_bundle = state / "chimera-bundle-host-20261004T000000Z.tar.gz"
    linked_bundle.symlink_to(outside / "bundle.tar.gz")
    _age_all(tmp_path)
    done = run_cli(
        config, "maintenance", "monthly", "--only", "old_files", "--fix", "--yes", "--json"
    )
    old = _old_files(done)
    assert sorted(old["fixed"]) == sorted(
        str(p if p.parent.name != "20261001T000000Z-engine" else p.parent) for p in gone
    ), old
    assert not any(p.exists() for p in gone)
    assert all(p.read_text() == "keep me" for p in keep), [str(p) for p in keep if not p.exists()]
    assert linked_incident.is_symlink() and linked_bundle.is_symlink()


def test_own_kinds_by_name() -> None:
    assert own_kind("logs", "engine.log.1") and own_kind("logs", "md_feed-2.log.5")
    assert not own_kind("logs", "engine.log") and not own_kind("logs", "engine.log.0")
    assert not own_kind("logs", "Engine.log.1") and not own_kind("logs", "x.log.1.gz")
    assert own_kind("incidents", "20261001T000000Z-engine")
    assert not own_kind("incidents", "notes") and not own_kind("logs", "20261001T000000Z-x")
    assert own_kind(".", "chimera-bundle-h-20261001T000000Z.tar.gz")
    assert own_kind("bundles", "chimera-bundle-h-20261001T000000Z.tar.gz")
    assert not own_kind(".", "notes.json") and not own_kind("logs", "chimera-bundle-a.tar.gz")
