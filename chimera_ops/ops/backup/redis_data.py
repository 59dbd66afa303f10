"""Redis in backup sets: the RDB snapshot, and a key export for restoring into a live server.

Backup: BGSAVE on the live server, wait until the save is done (the `rdb_saves` counter moves;
LASTSAVE on servers without it), copy the RDB (hashed while copied). The copy is then loaded into
a throwaway private `redis-server` (random port, temp dir), which proves the server accepts the
file (`redis-check-rdb` alone has passed files the server rejects) and gives the exact key
counts. The keys of the configured logical database are exported from that throwaway copy, not
the live server, with DUMP / PTTL into `redis.keys.jsonl`: the export is the RDB's own data.

Restore goes into the running Redis, which chimera-ops usually does not manage (no restart of
someone else's server): FLUSHDB of that one logical database, then RESTORE ... REPLACE of every
exported key with its remaining TTL (TTLs restart from the restore: a key that had 60 s left at
backup time gets 60 s again), then DBSIZE against the manifest.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from chimera_ops.ops.backup.sets import BackupError, HashingWriter, copy_hashed
from chimera_ops.redact import redact_text

RDB_FILE = "redis.rdb"
KEYS_FILE = "redis.keys.jsonl"
SAVE_TIMEOUT = 300.0
BATCH = 500


def client(url: str) -> redis.Redis:
    """A client of the live server; BackupError (credentials masked) when it does not answer."""
    try:
        conn = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        conn.ping()
        return conn
    except redis.RedisError as exc:
        raise BackupError(
            f"Redis at {redact_text(url)} does not answer: {redact_text(str(exc), [url])}"
        ) from None


def db_index(conn: redis.Redis) -> int:
    return int(conn.connection_pool.connection_kwargs.get("db", 0) or 0)


def _wait_saved(conn: redis.Redis, before_saves: int | None, before_last: int) -> None:
    deadline = time.monotonic() + SAVE_TIMEOUT
    while time.monotonic() < deadline:
        info = conn.info("persistence")
        done = not info.get("rdb_bgsave_in_progress")
        moved = (
            info.get("rdb_saves", 0) > before_saves
            if before_saves is not None
            else int(conn.lastsave().timestamp()) > before_last
        )
        if done and moved:
            if info.get("rdb_last_bgsave_status") != "ok":
                raise BackupError(f"Redis BGSAVE failed ({info.get('rdb_last_bgsave_status')})")
            return
        time.sleep(0.05)
    raise BackupError(f"Redis BGSAVE did not finish within {SAVE_TIMEOUT:g}s")


def _rdb_path(conn: redis.Redis) -> Path:
    try:
        directory = str(conn.config_get("dir")["dir"])
        filename = str(conn.config_get("dbfilename")["dbfilename"])
    except (redis.RedisError, KeyError) as exc:
        raise BackupError(
            f"cannot find the Redis RDB file (CONFIG GET dir/dbfilename: {exc}); the backup "
            "needs CONFIG and the RDB on this host"
        ) from None
    return Path(directory) / filename


def backup_redis(url: str, out_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Snapshot the live Redis into `out_dir`; (its manifest entry, {file: size/sha256})."""
    live = client(url)
    try:
        version = str(live.info("server").get("redis_version"))
        info = live.info("persistence")
        before_saves = info.get("rdb_saves")
        before_last = int(live.lastsave().timestamp())
        try:
            live.bgsave()
        except redis.ResponseError as exc:
            if "in progress" not in str(exc):  # one running already: wait for it, then ours
                raise BackupError(f"Redis BGSAVE refused: {exc}") from None
            _wait_saved(live, None, 0)
            live.bgsave()
        _wait_saved(live, before_saves, before_last)
        source = _rdb_path(live)
        db = db_index(live)
    finally:
        live.close()
    files: dict[str, dict[str, Any]] = {}
    # Opened once: a later BGSAVE renames a new file into place, this handle keeps ours.
    with open(source, "rb") as rdb:
        files[RDB_FILE] = copy_hashed(rdb, out_dir / RDB_FILE)
    with scratch_redis(out_dir / RDB_FILE) as scratch:
        keyspace = keyspace_counts(scratch)
        files[KEYS_FILE], exported = export_keys(scratch, db, out_dir / KEYS_FILE)
    entry = {"version": version, "db": db, "keys": exported, "keyspace": keyspace}
    return entry, files


def keyspace_counts(conn: redis.Redis) -> dict[str, int]:
    """{"db0": keys, ...} from INFO keyspace."""
    return {name: int(v["keys"]) for name, v in conn.info("keyspace").items()}


def export_keys(conn: redis.Redis, db: int, dest: Path) -> tuple[dict[str, Any], int]:
    """DUMP + PTTL of every key of logical database `db`, one JSON line each."""
    conn.execute_command("SELECT", db)
    writer = HashingWriter(dest)
    count = 0
    try:
        batch: list[bytes] = []
        for key in conn.scan_iter(count=1000):
            batch.append(key)
            if len(batch) >= BATCH:
                count += _write_batch(conn, batch, writer)
                batch = []
        if batch:
            count += _write_batch(conn, batch, writer)
    except BaseException:
        writer.abort()
        raise
    return writer.close(), count


def _write_batch(conn: redis.Redis, keys: list[bytes], writer: HashingWriter) -> int:
    pipe = conn.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
        pipe.pttl(key)
    values = pipe.execute()
    written = 0
    for i, key in enumerate(keys):
        payload, ttl = values[2 * i], values[2 * i + 1]
        if payload is None:  # expired meanwhile
            continue
        line = {
            "k": base64.b64encode(key).decode(),
            "t": int(ttl),
            "v": base64.b64encode(payload).decode(),
        }
        writer.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
        written += 1
    return written


def restore_keys(url: str, keys_file: Path) -> int:
    """FLUSHDB of the URL's database, then RESTORE every exported key; the key count after."""
    live = client(url)
    try:
        live.flushdb()
        pipe = live.pipeline(transaction=False)
        pending = 0
        with open(keys_file, "rb") as src:
            for raw in src:
                item = json.loads(raw)
                ttl = max(0, int(item["t"]))  # -1: no expiry -> 0 for RESTORE
                pipe.restore(
                    base64.b64decode(item["k"]), ttl, base64.b64decode(item["v"]), replace=True
                )
                pending += 1
                if pending >= BATCH:
                    pipe.execute()
                    pending = 0
        if pending:
            pipe.execute()
        return int(live.dbsize())
    except redis.ResponseError as exc:
        raise BackupError(
            f"Redis refused a RESTORE ({exc}); a snapshot from a newer Redis cannot be restored "
            "into an older one"
        ) from None
    finally:
        live.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def scratch_redis(rdb: Path, timeout: float = 60.0) -> Iterator[redis.Redis]:
    """A throwaway redis-server (random port, temp dir) that loaded a copy of `rdb`."""
    server = shutil.which("redis-server")
    if server is None:
        raise BackupError("redis-server not found: install redis-server (it checks the snapshot)")
    workdir = Path(tempfile.mkdtemp(prefix="chimera-redis-"))
    shutil.copyfile(rdb, workdir / "dump.rdb")
    port = _free_port()
    log = workdir / "redis.log"
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
        + ["--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no"]
        + ["--logfile", str(log), "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    conn = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise BackupError(f"redis-server rejected the snapshot: {' | '.join(tail)}")
            try:
                conn.ping()
                break
            except redis.BusyLoadingError:
                pass
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise BackupError(f"the scratch redis-server did not load within {timeout:g}s")
            time.sleep(0.05)
        yield conn
    finally:
        conn.close()
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
