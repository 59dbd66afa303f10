"""PostgreSQL dumps and restores for backup sets: one snapshot, parallel streams, exact counts.

A database is dumped as one consistent snapshot (`pg_export_snapshot()` held open by a
coordinating connection) in `jobs + 2` custom-format streams: the schema before the data
(`--section=pre-data`), the data split into `jobs` groups of tables balanced by size, and the
indexes and constraints after it (`--section=post-data`). Every stream is piped through Python,
which writes it and hashes it in the same pass. The exact row count of every table is taken in
the same snapshot, so the counts describe exactly what was dumped.

A restore replays them in the same order: schema, then the data groups in parallel, then the
post-data section with `pg_restore -j` (indexes built in parallel). A database that has the
TimescaleDB extension is dumped as one stream and restored by TimescaleDB's documented procedure
(`timescaledb_pre_restore()` / `timescaledb_post_restore()`, no parallel restore).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chimera_ops.ops.backup.sets import CHUNK, BackupError, HashingWriter
from chimera_ops.redact import redact_dsn, redact_text

Progress = Callable[[str, int], None]
"""`progress(what, bytes_written_so_far)`: called as the streams move."""

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")


# --------------------------------------------------------------------------- connecting


def conninfo_for(dsn: str, dbname: str) -> str:
    """The DSN pointed at another database."""
    return make_conninfo(dsn, dbname=dbname)


def client_env(dsn: str, dbname: str) -> tuple[str, dict[str, str]]:
    """(conninfo without its password, env with PGPASSWORD) for pg_dump / pg_restore: a
    password on a command line is readable by every user in `ps`."""
    params = {k: v for k, v in conninfo_to_dict(dsn).items() if v is not None}
    password = params.pop("password", None)
    params["dbname"] = dbname
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **{k: str(v) for k, v in params.items()}), env


def connect(dsn: str, dbname: str | None = None, timeout: int = 10) -> psycopg.Connection[Any]:
    """An autocommit connection; BackupError (password masked) when the server does not answer."""
    target = conninfo_for(dsn, dbname) if dbname else dsn
    try:
        return psycopg.connect(target, autocommit=True, connect_timeout=timeout)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackupError(
            f"PostgreSQL at {redact_dsn(target)} does not answer: "
            f"{redact_text(first, [dsn_password(dsn)])}"
        ) from None


def dsn_password(dsn: str) -> str | None:
    """The password in a DSN, so that it can be masked wherever a message might repeat it."""
    with contextlib.suppress(psycopg.ProgrammingError):
        value = conninfo_to_dict(dsn).get("password")
        return str(value) if value else None
    return None


@dataclass(frozen=True)
class ServerInfo:
    """What a set records of its PostgreSQL server."""

    version: str
    version_num: int

    @property
    def major(self) -> int:
        return self.version_num // 10000


def server_info(conn: psycopg.Connection[Any]) -> ServerInfo:
    row = conn.execute("SELECT version(), current_setting('server_version_num')::int").fetchone()
    assert row is not None
    return ServerInfo(str(row[0]), int(row[1]))


def missing_databases(conn: psycopg.Connection[Any], names: list[str]) -> list[str]:
    """The names in `names` that are not databases on the server."""
    rows = conn.execute("SELECT datname FROM pg_database").fetchall()
    existing = {r[0] for r in rows}
    return [n for n in names if n not in existing]


def binary(name: str, major: int) -> str:
    """pg_dump / pg_restore of the server's major version (Debian keeps one per version)."""
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin/{name}")]
    candidates += sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    for path in candidates:
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise BackupError(f"{name} not found: install postgresql-client-{major}")


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Relation:
    """A table or sequence whose data is dumped."""

    schema: str
    name: str
    kind: str  # 'r' table, 'S' sequence
    size: int

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def pattern(self) -> str:
        """An exact `pg_dump -t` pattern (quoted: no wildcard, case kept)."""
        q = '"{}"'.format
        return f"{q(self.schema.replace(chr(34), chr(34) * 2))}.{q(self.name.replace(chr(34), chr(34) * 2))}"

    def identifier(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.name))


def relations(conn: psycopg.Connection[Any]) -> list[Relation]:
    """User tables and sequences whose data a plain pg_dump would dump (not extension members)."""
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, c.relkind, pg_table_size(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'S')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                            AND d.deptype = 'e')
        ORDER BY n.nspname, c.relname
        """
    ).fetchall()
    return [Relation(r[0], r[1], r[2], int(r[3])) for r in rows]


def row_counts(conn: psycopg.Connection[Any], rels: list[Relation]) -> dict[str, int]:
    """Exact `count(*)` of every table (in the connection's current snapshot)."""
    out = {}
    for rel in rels:
        if rel.kind == "r":
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(rel.identifier()))
            out[rel.key] = int(row.fetchone()[0])  # type: ignore[index]
    return out


def balance(rels: list[Relation], groups: int) -> list[list[Relation]]:
    """Tables split into `groups` lists of about equal total size (largest first, greedy)."""
    bins: list[list[Relation]] = [[] for _ in range(max(1, groups))]
    loads = [0] * len(bins)
    for rel in sorted(rels, key=lambda r: (-r.size, r.key)):
        i = loads.index(min(loads))
        bins[i].append(rel)
        loads[i] += rel.size + 8192  # an empty table still costs a round trip
    return [b for b in bins if b]


def has_timescaledb(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
    return bool(row.fetchone()[0])  # type: ignore[index]


# --------------------------------------------------------------------------- streams


class _Streams:
    """Runs pg_dump / pg_restore children; one failure ends all of them."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self.failed = threading.Event()

    def spawn(self, argv: list[str], env: Mapping[str, str], **kw: Any) -> subprocess.Popen[bytes]:
        if self.failed.is_set():
            raise BackupError("stopped: another stream failed")
        proc = subprocess.Popen(argv, env=dict(env), **kw)
        with self._lock:
            self._procs.append(proc)
        return proc

    def kill_all(self) -> None:
        self.failed.set()
        with self._lock:
            for proc in self._procs:
                if proc.poll() is None:
                    proc.kill()


def _stderr_tail(handle: Any, secret: str | None) -> str:
    handle.seek(0)
    lines = [ln.strip() for ln in handle.read().decode("utf-8", "replace").splitlines()]
    text = " | ".join(ln for ln in lines if ln)[-500:]
    return redact_text(text, [secret]) or "no error output"


def dump_stream(
    streams: _Streams,
    argv: list[str],
    env: Mapping[str, str],
    dest: Path,
    what: str,
    progress: Progress,
    secret: str | None,
) -> dict[str, Any]:
    """Run one pg_dump writing to stdout; write and hash its bytes into `dest`."""
    with tempfile.TemporaryFile() as err:
        proc = streams.spawn(argv, env, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        writer = HashingWriter(dest)
        try:
            while chunk := proc.stdout.read(CHUNK):
                writer.write(chunk)
                progress(what, len(chunk))
            entry = writer.close()
        except BaseException:
            writer.abort()
            streams.kill_all()
            proc.wait()
            raise
        if proc.wait() != 0:
            streams.kill_all()
            raise BackupError(f"{what}: pg_dump failed: {_stderr_tail(err, secret)}")
        return entry


def restore_stream(
    streams: _Streams, argv: list[str], env: Mapping[str, str], what: str, secret: str | None
) -> None:
    """Run one pg_restore to the end; BackupError with its error output when it fails."""
    with tempfile.TemporaryFile() as err:
        proc = streams.spawn(argv, env, stdout=subprocess.DEVNULL, stderr=err)
        if proc.wait() != 0:
            streams.kill_all()
            raise BackupError(f"{what}: pg_restore failed: {_stderr_tail(err, secret)}")


# --------------------------------------------------------------------------- dump


def dump_database(
    dsn: str,
    dbname: str,
    index: int,
    out_dir: Path,
    jobs: int,
    progress: Progress,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Dump one database into `out_dir`; (its manifest entry, {file name: size/sha256})."""
    conn = connect(dsn, dbname)
    secret = dsn_password(dsn)
    try:
        info = server_info(conn)
        meta = conn.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype, "
            "pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        assert meta is not None
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        timescale = has_timescaledb(conn)
        rels = relations(conn)
        conninfo, env = client_env(dsn, dbname)
        base = [binary("pg_dump", info.major), "--format=custom", f"--snapshot={snapshot}"]
        base += ["--no-password", f"--dbname={conninfo}"]
        prefix = f"pg.{index:02d}"
        plan: list[tuple[str, str, list[str]]] = []  # (file, section, extra args)
        if timescale:
            plan.append((f"{prefix}.full.dump", "full", []))
        else:
            plan.append((f"{prefix}.pre-data.dump", "pre-data", ["--section=pre-data"]))
            for i, group in enumerate(balance(rels, jobs)):
                args = ["--section=data", *[f"--table={r.pattern}" for r in group]]
                if i == 0:
                    args.append("--blobs")  # large objects travel with the first data group
                plan.append((f"{prefix}.data.{i}.dump", "data", args))
            plan.append((f"{prefix}.post-data.dump", "post-data", ["--section=post-data"]))
        streams = _Streams()
        files: dict[str, dict[str, Any]] = {}
        with ThreadPoolExecutor(max_workers=len(plan)) as pool:
            futures = {
                name: pool.submit(
                    dump_stream,
                    streams,
                    [*base, *args],
                    env,
                    out_dir / name,
                    f"{dbname} {section}",
                    progress,
                    secret,
                )
                for name, section, args in plan
            }
            # Counted while the streams run, in the snapshot they dump.
            try:
                counts = row_counts(conn, rels)
            except BaseException:
                streams.kill_all()
                raise
            for name, future in futures.items():
                files[name] = future.result()
        conn.execute("COMMIT")
    finally:
        conn.close()
    entry = {
        "name": dbname,
        "index": index,
        "layout": "timescaledb-full" if timescale else "sections",
        "timescaledb": timescale,
        "files": [
            {"file": name, "section": section, "tables": _tables_of(args)}
            for name, section, args in plan
        ],
        "encoding": meta[0],
        "collate": meta[1],
        "ctype": meta[2],
        "owner": meta[3],
        "tables": counts,
        "server_version": info.version,
        "server_version_num": info.version_num,
    }
    return entry, files


def _tables_of(args: list[str]) -> list[str]:
    return [a.removeprefix("--table=") for a in args if a.startswith("--table=")]


# --------------------------------------------------------------------------- restore


def create_database(conn: psycopg.Connection[Any], name: str, entry: dict[str, Any]) -> None:
    """An empty database shaped like the dumped one (encoding, collation, owner)."""
    conn.execute(
        sql.SQL(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {} OWNER {}"
        ).format(
            sql.Identifier(name),
            sql.Literal(entry["encoding"]),
            sql.Literal(entry["collate"]),
            sql.Literal(entry["ctype"]),
            sql.Identifier(entry["owner"]),
        )
    )


def drop_database(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def restore_database(
    dsn: str, entry: dict[str, Any], set_dir: Path, target: str, jobs: int
) -> dict[str, int]:
    """Restore one dumped database into the new database `target`; its exact row counts."""
    admin = connect(dsn)
    secret = dsn_password(dsn)
    try:
        major = server_info(admin).major
        create_database(admin, target, entry)
    finally:
        admin.close()
    conninfo, env = client_env(dsn, target)
    base = [binary("pg_restore", major), "--exit-on-error", "--no-password", f"--dbname={conninfo}"]
    streams = _Streams()
    files = {f["section"]: [] for f in entry["files"]}  # type: dict[str, list[str]]
    for f in entry["files"]:
        files[f["section"]].append(str(set_dir / f["file"]))
    name = entry["name"]
    if entry["layout"] == "timescaledb-full":
        conn = connect(dsn, target)
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            conn.execute("SELECT timescaledb_pre_restore()")
            restore_stream(streams, [*base, files["full"][0]], env, f"{name} (timescaledb)", secret)
            conn.execute("SELECT timescaledb_post_restore()")
        finally:
            conn.close()
    else:
        restore_stream(streams, [*base, files["pre-data"][0]], env, f"{name} pre-data", secret)
        with ThreadPoolExecutor(max_workers=max(1, len(files.get("data", [])))) as pool:
            for future in [
                pool.submit(restore_stream, streams, [*base, path], env, f"{name} data", secret)
                for path in files.get("data", [])
            ]:
                future.result()
        restore_stream(
            streams,
            [*base, f"--jobs={jobs}", files["post-data"][0]],
            env,
            f"{name} post-data",
            secret,
        )
    conn = connect(dsn, target)
    try:
        return row_counts(conn, relations(conn))
    finally:
        conn.close()


def compare_counts(expected: dict[str, int], found: dict[str, int]) -> list[str]:
    """The tables whose row counts differ (or that are missing / extra)."""
    problems = []
    for key in sorted(set(expected) | set(found)):
        want, got = expected.get(key), found.get(key)
        if want != got:
            problems.append(f"{key}: {got if got is not None else 'missing'} rows, expected {want}")
    return problems
