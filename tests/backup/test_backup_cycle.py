"""Issue 9 through the CLI against private PostgreSQL and Redis: the full cycle, damaged sets,
killed backups, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import redis

from tests.backup.conftest import DB, Stack, fill
from tests.harness import REPO, wait_for


def test_backup_verify_damage_restore_gives_everything_back(stack: Stack) -> None:
    before_counts, before_keys = stack.counts(), stack.keys()
    code, summary = stack.json("backup", "--reason", "nightly")
    assert code == 0, summary
    assert summary["databases"][DB]["rows"] == sum(before_counts.values())
    assert summary["redis_keys"] == len(before_keys)
    manifest = json.loads((stack.backup_dir / summary["id"] / "manifest.json").read_text())
    tables = manifest["postgres"]["databases"][0]["tables"]
    assert tables["public.orders"] == before_counts["orders"]
    assert tables["public.Weird Name"] == 7
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in manifest["files"].values())
    assert manifest["postgres"]["server_version_num"] >= 150000 and manifest["redis"]["version"]

    code, report = stack.json("backup", "verify", "latest")
    assert code == 0 and report["ok"], report
    code, listing = stack.json("backup", "list")
    assert [s["id"] for s in listing["sets"]] == [summary["id"]]
    assert listing["sets"][0]["verified"] is True

    # Damage: rows gone, a table dropped, keys changed and added.
    stack.pg.psql(
        'DELETE FROM fills; DELETE FROM orders WHERE id > 10; DROP TABLE "Weird Name"', DB
    )
    conn = redis.Redis.from_url(stack.redis.url)
    conn.delete("positions")
    conn.set("book:1", "garbage")
    conn.set("intruder", "x")
    conn.close()

    result = stack.cli("restore", summary["id"], "--yes")
    assert result.returncode == 0, result.stderr + result.stdout
    assert stack.counts() == before_counts
    assert stack.keys() == before_keys
    # The sequence came back too: a new order continues after the restored ids.
    next_id = stack.pg.psql("INSERT INTO orders(symbol, qty) VALUES ('X', 1) RETURNING id", DB)
    assert int(next_id.splitlines()[0]) > before_counts["orders"]
    # A safety backup of the damaged state was taken first, and the steps are audited.
    code, listing = stack.json("backup", "list")
    assert len(listing["sets"]) == 2
    assert "safety backup" in (listing["sets"][0]["reason"] or "")
    audit = _audit(stack)
    steps = [e["args"].get("step") for e in audit if e["command"] == "restore"]
    assert {"safety backup", f"postgres {DB}", "redis"} <= set(steps)
    leftovers = stack.pg.psql("SELECT datname FROM pg_database WHERE datname LIKE '%restore%'")
    assert leftovers == ""


def _audit(stack: Stack) -> list[dict]:
    from chimera_ops.store import Store

    store = Store.open_in(stack.directory / "var", readonly=True)
    try:
        return store.audit_entries()
    finally:
        store.close()


def test_a_flipped_byte_fails_verify_and_restore_touches_nothing(stack: Stack) -> None:
    code, summary = stack.json("backup")
    assert code == 0
    set_dir = stack.backup_dir / summary["id"]
    victim = max((p for p in set_dir.glob("pg.*.data.*.dump")), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))

    code, report = stack.json("backup", "verify", summary["id"])
    assert code == 1 and not report["ok"]
    assert victim.name in json.dumps(report["checks"])

    stack.pg.psql("DELETE FROM fills", DB)
    damaged = stack.counts()
    result = stack.cli("restore", summary["id"], "--yes")
    assert result.returncode == 1
    assert victim.name in result.stderr and "nothing was changed" in result.stderr
    assert stack.counts() == damaged
    code, listing = stack.json("backup", "list")
    assert len(listing["sets"]) == 1  # no safety backup either: it stopped before that


def test_a_backup_killed_halfway_is_no_set(stack: Stack) -> None:
    code, first = stack.json("backup")
    assert code == 0
    fill(stack.pg, rows=600000)  # big enough to kill the next backup while it writes
    proc = subprocess.Popen(
        [sys.executable, "-m", "chimera_ops", "--config", str(stack.config_path), "backup"],
        cwd=str(REPO),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def writing() -> bool:
        return any(
            f.stat().st_size > 0
            for d in stack.backup_dir.glob(".tmp-*")
            for f in d.glob("pg.*.dump")
        )

    wait_for(writing, timeout=60, what="the second backup writing its dumps")
    os.killpg(os.getpgid(proc.pid), 0)  # still ours
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # pg_dump children may outlive the killed CLI for a moment; they die on the closed pipe.
    time.sleep(0.5)
    partial = list(stack.backup_dir.glob(".tmp-*"))
    assert len(partial) == 1
    partial_id = partial[0].name.removeprefix(".tmp-")

    code, listing = stack.json("backup", "list")
    assert [s["id"] for s in listing["sets"]] == [first["id"]]
    result = stack.cli("restore", partial_id, "--yes")
    assert result.returncode == 2 and first["id"] in result.stderr
    code, pruned = stack.json("backup", "prune")
    assert code == 0 and pruned["garbage"] and not pruned["deleted"]
    assert not list(stack.backup_dir.glob(".tmp-*"))
    code, report = stack.json("backup", "verify", first["id"])
    assert code == 0 and report["ok"]


def test_unknown_set_lists_the_known_ones(stack: Stack) -> None:
    code, summary = stack.json("backup")
    result = stack.cli("backup", "verify", "nope")
    assert result.returncode == 2
    assert "nope" in result.stderr and summary["id"] in result.stderr


def test_unreachable_servers_fail_in_one_line_without_the_password(stack: Stack) -> None:
    from tests.services import free_port

    secret = "s3cr3t-pass"
    stack.write_config(
        postgres={
            "dsn": f"postgresql://postgres:{secret}@127.0.0.1:{free_port()}/postgres",
            "databases": [DB],
        }
    )
    result = stack.cli("backup")
    assert result.returncode == 1
    assert "does not answer" in result.stderr and secret not in result.stderr + result.stdout
    assert len([ln for ln in result.stderr.splitlines() if ln.strip()]) <= 3
    stack.write_config(redis={"url": f"redis://:{secret}@127.0.0.1:{free_port()}/0"})
    result = stack.cli("backup")
    assert result.returncode == 1 and "Redis" in result.stderr
    assert secret not in result.stderr + result.stdout
    assert not list(stack.backup_dir.glob("*")) or not any(
        p.name.startswith(".tmp-") or (p / "manifest.json").exists()
        for p in stack.backup_dir.iterdir()
    )


def test_bad_input_is_said_before_anything_is_written(stack: Stack) -> None:
    stack.write_config(
        postgres={"dsn": stack.pg.dsn_for("postgres"), "databases": [DB, "nosuchdb"]}
    )
    result = stack.cli("backup")
    assert result.returncode == 1 and "nosuchdb" in result.stderr
    assert not stack.backup_dir.exists() or not list(stack.backup_dir.iterdir())
    blocker = stack.directory / "a-file"
    blocker.write_text("x")
    stack.write_config(dir=str(blocker / "backups"))
    result = stack.cli("backup")
    assert result.returncode == 1 and "not writable" in result.stderr


def test_disk_full_removes_the_partial_set_and_keeps_older_ones(stack: Stack) -> None:
    mount = stack.directory / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        stack.write_config(dir=str(mount))
        code, first = stack.json("backup")
        assert code == 0, first
        fill(stack.pg, rows=400000)
        result = stack.cli("backup")
        assert result.returncode == 1
        assert "no space left" in result.stderr and "partial set was removed" in result.stderr
        assert [p.name for p in mount.iterdir()] == [first["id"]]
        code, report = stack.json("backup", "verify", first["id"])
        assert code == 0 and report["ok"]
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_set_from_a_newer_postgres_is_refused_with_the_versions(stack: Stack) -> None:
    code, summary = stack.json("backup")
    path = stack.backup_dir / summary["id"] / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["postgres"]["server_version_num"] = 170002
    manifest["postgres"]["server_version"] = "PostgreSQL 17.2"
    path.write_text(json.dumps(manifest))
    result = stack.cli("restore", summary["id"], "--yes", "--no-safety-backup")
    assert result.returncode == 1
    assert "PostgreSQL 17" in result.stderr and "PostgreSQL 15" in result.stderr


def test_restore_respects_the_procedure_lock(stack: Stack) -> None:
    from chimera_ops.config import load_config
    from chimera_ops.ops.proclock import RedisLock, lock_for

    code, summary = stack.json("backup")
    assert code == 0
    lock = lock_for(load_config(stack.config_path))
    assert isinstance(lock, RedisLock)  # the config has Redis: the lock lives there
    holder = lock.acquire("safe-restart", "safe-restart-test")
    try:
        result = stack.cli("restore", summary["id"], "--yes")
        assert result.returncode == 1
        assert "safe-restart-test" in result.stderr and f"pid {os.getpid()}" in result.stderr
    finally:
        lock.release(holder)
    result = stack.cli("restore", summary["id"], "--yes", "--no-safety-backup")
    assert result.returncode == 0, result.stderr
