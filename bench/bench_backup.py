"""Backup sets (issue 9) against the tools a user would pick: bare `pg_dump -Fc` / `pg_restore`.

A database of about 1 GiB in 20 tables is built with `generate_series` on the machine's
PostgreSQL (outside every timed part), then, side by side in one run:

a. `chimera-ops backup` vs bare `pg_dump -Fc -f FILE DB` (wall time; set size vs dump size);
b. `chimera-ops restore ID --yes --no-safety-backup --only postgres` vs bare single-job
   `pg_restore -d NEWDB FILE` into a fresh empty database;
c. `chimera-ops backup verify ID` (report only);
d. peak RSS of the CLI (alone and with its pg_dump children) and of a running agent during
   the backup.

Sanity, not timing: the database chimera-ops restored must hold exactly the source's row counts
(and so must the manifest); a mismatch is a bug, the bench says so and exits 1. Afterwards the
chimera-ops code paths are profiled in-process (which stream, the row counts, the hashing,
the final DROP DATABASE) to show where its time goes.

Writes bench/results/backup.md; exits 2 when PostgreSQL or its client tools are missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    NOT_INSTALLED,
    REPO,
    ChimeraAgent,
    PeakRss,
    Sampler,
    Section,
    chimera_cli,
    fmt,
    machine_facts,
    median,
    mib,
    temp_dir,
    tool_version,
    tree_pids,
    verdict,
    write_results,
)

DSN = os.environ.get("CHIMERA_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
DB = "chimera_bench_backup"
BARE_DB = f"{DB}_bare"
PROFILE_DB = f"{DB}_profile"
TABLES = 20
WEIGHTS = [1 + i % 5 for i in range(TABLES)]
"""Relative table sizes (1..5): a real stack's tables are not all alike, and the dump's split
into `jobs` groups balanced by size has to cope with that."""
ROWS_PER_WEIGHT = 84_000
"""About 212 bytes a row with both indexes: 60 weight units * 84k rows ~ 1 GiB."""
JOBS = 2
RUNS = 3
BUDGET_S = 15 * 60.0
"""Three rounds only when they fit in this (measured after the first round); else one."""
SAMPLE_EVERY = 0.1
AIM_RATIO = 0.8
AIM_RSS = 150 * 1024**2
TIMEOUT_S = 900.0
PROFILE_EST_S = 150.0
"""What the untimed profile after the rounds costs (for the budget)."""


CPU_NOTE = (
    "CPU (median): client = the command and the children it reaped (getrusage), server = the "
    "backends serving the bench's databases (sampled every 0.1 s; checkpointer, WAL writer and "
    "the admin connection's CREATE/DROP DATABASE not counted); floor = (client + server) / "
    "cores, the least wall time that work can take here; machine busy = every process's "
    "non-idle CPU during the command, other people's work included."
)


class NotRun(Exception):
    """A part that could not run (no PostgreSQL, no pg_dump); the message goes into the table."""


class SanityError(Exception):
    """chimera-ops restored (or recorded) different row counts than the source has: a bug."""


# --------------------------------------------------------------------------- PostgreSQL


def conninfo(dbname: str) -> str:
    """The bench DSN pointed at `dbname`."""
    return make_conninfo(DSN, dbname=dbname)


@contextmanager
def connect(dbname: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection (CREATE/DROP DATABASE and VACUUM cannot run in a transaction)."""
    conn = psycopg.connect(conninfo(dbname), autocommit=True, connect_timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def drop_db(name: str) -> None:
    with connect() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def create_db(name: str) -> None:
    drop_db(name)
    with connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def databases() -> set[str]:
    with connect() as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


def checkpoint() -> None:
    """Flush the previous part's dirty buffers so that no part pays for the one before it."""
    with connect() as conn:
        conn.execute("CHECKPOINT")


def table_names() -> list[str]:
    return [f"bench_t{i + 1:02d}" for i in range(TABLES)]


def _build_table(name: str, rows: int) -> None:
    """One table: CREATE, one INSERT ... SELECT, then the indexes (faster built after the
    rows), then VACUUM FREEZE so that no timed dump pays for setting hint bits."""
    ident = sql.Identifier(name)
    with connect(DB) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint NOT NULL, account bigint NOT NULL, "
                "symbol text NOT NULL, payload text NOT NULL, price numeric(18, 6) NOT NULL, "
                "ts timestamptz NOT NULL)"
            ).format(ident)
        )
        # Deterministic values (no random()): every run dumps and compresses the same bytes.
        conn.execute(
            sql.SQL(
                "INSERT INTO {} SELECT g, (g * 7919) % 100003, md5(g::text || {}), "
                "repeat(md5((g * 31)::text), 2), "
                "((g * 2654435761) % 100000000000)::numeric / 1000000, "
                "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' "
                "FROM generate_series(1::bigint, {}) g"
            ).format(ident, sql.Literal(name), sql.Literal(rows))
        )
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(ident))
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} (account)").format(
                sql.Identifier(f"{name}_account"), ident
            )
        )
        conn.execute(sql.SQL("VACUUM (FREEZE, ANALYZE) {}").format(ident))


def build_database() -> None:
    """The ~1 GiB database, rebuilt every run (results stay comparable), two tables at a time."""
    create_db(DB)
    plan = sorted(
        zip(table_names(), (w * ROWS_PER_WEIGHT for w in WEIGHTS), strict=True),
        key=lambda item: -item[1],
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(_build_table, name, rows) for name, rows in plan]:
            future.result()


def refreeze() -> None:
    """After a restore swapped a fresh copy in: back to the built state (hint bits set)."""
    with connect(DB) as conn:
        conn.execute("VACUUM (FREEZE, ANALYZE)")


def row_counts(dbname: str) -> dict[str, int]:
    """Exact count(*) of every user table, keyed `schema.table` like the manifest."""
    with connect(dbname) as conn:
        names = conn.execute(
            "SELECT schemaname, relname FROM pg_stat_user_tables ORDER BY 1, 2"
        ).fetchall()
        out = {}
        for schema, name in names:
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(name)
            )
            out[f"{schema}.{name}"] = int(conn.execute(query).fetchone()[0])  # type: ignore[index]
        return out


def db_size(dbname: str) -> int:
    with connect() as conn:
        row = conn.execute("SELECT pg_database_size(%s)", (dbname,)).fetchone()
        return int(row[0])  # type: ignore[index]


def server_version() -> str:
    with connect() as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]


def client_binary(name: str) -> str:
    """The server's major version of pg_dump / pg_restore: the one chimera-ops runs too."""
    from chimera_ops.ops.backup.pg import binary
    from chimera_ops.ops.backup.sets import BackupError

    major = int(server_version().split(".")[0])
    try:
        return binary(name, major)
    except BackupError as exc:
        raise NotRun(f"{name} {NOT_INSTALLED} ({exc})") from None


# --------------------------------------------------------------------------- timed commands


@dataclass
class Timed:
    """One timed command: wall seconds, exit, output, peak RSS per watched group, CPU busy."""

    seconds: float
    returncode: int
    stdout: str
    stderr: str
    peaks: dict[str, float]
    busy_cores: float
    """Machine-wide non-idle CPU over the run, in cores (2 = both cores busy)."""
    client_cpu: float
    """CPU seconds of the command and every child it reaped (pg_dump, pg_restore)."""
    server_cpu: float
    """CPU seconds of the PostgreSQL backends serving the bench's databases."""

    @property
    def floor(self) -> float:
        """The wall time this work needs at best on this machine: all cores busy with it."""
        return (self.client_cpu + self.server_cpu) / (os.cpu_count() or 1)

    def json(self) -> Any:
        return json.loads(self.stdout)


class BackendCpu(Sampler):
    """CPU seconds of the backends serving the bench's databases, sampled every 0.1 s.

    The machine is shared, so machine-wide CPU says little; a backend's process title names
    its database (`postgres: USER DB HOST(PORT) ...`), which picks out ours, including the
    restore's `<db>__restore_*` and verify's `chimera_verify_*` databases. A backend starts at
    0 s, so its last sample is its total (less the <= 0.1 s before its exit).
    """

    MARKERS = (DB, "chimera_verify_")

    def __init__(self) -> None:
        super().__init__(SAMPLE_EVERY)
        self.seen: dict[tuple[int, float], float] = {}
        self._postmaster = _postmaster()

    def sample(self) -> None:
        for child in self._postmaster.children() if self._postmaster else []:
            try:
                with child.oneshot():
                    title = " ".join(child.cmdline())
                    if any(m in title for m in self.MARKERS):
                        times = child.cpu_times()
                        self.seen[(child.pid, child.create_time())] = times.user + times.system
            except psutil.Error:
                continue

    @property
    def total(self) -> float:
        return sum(self.seen.values())


def _postmaster() -> psutil.Process | None:
    """The postmaster of the bench's server (None when it is not on this machine)."""
    try:
        with connect() as conn:
            pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        return psutil.Process(psutil.Process(pid).ppid())
    except (psutil.Error, psycopg.Error):
        return None


def run_timed(argv: list[str], watch: dict[str, Callable[[int], list[int]]]) -> Timed:
    """Run argv after a CHECKPOINT; wall time from spawn to exit, RSS sampled every 0.1 s."""
    checkpoint()
    cpu0 = psutil.cpu_times()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    backends = BackendCpu()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO)
    )
    groups = {name: (lambda f=f: f(proc.pid)) for name, f in watch.items()}
    with backends, PeakRss(groups, SAMPLE_EVERY) as peak:  # type: ignore[arg-type]
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    seconds = time.monotonic() - t0
    cpu1 = psutil.cpu_times()
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = (sum(cpu1) - cpu1.idle - cpu1.iowait) - (sum(cpu0) - cpu0.idle - cpu0.iowait)
    client = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    return Timed(
        seconds, proc.returncode, out, err, dict(peak.peaks), busy / seconds, client, backends.total
    )


def checked(what: str, result: Timed) -> Timed:
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} exited {result.returncode}: {(result.stderr or result.stdout)[-2000:]}"
        )
    return result


@dataclass
class Results:
    """Everything measured, by part."""

    size: int = 0
    build_s: float = 0.0
    rows: int = 0
    source: dict[str, int] = field(default_factory=dict)
    runs: dict[str, list[Timed]] = field(default_factory=dict)
    bare_size: int = 0
    set_size: int = 0
    set_files: int = 0
    backup_inner: list[float] = field(default_factory=list)
    """`duration_s` of each chimera-ops backup (the set's own start..end, no CLI start-up)."""
    restore_steps: list[dict[str, float]] = field(default_factory=list)
    sanity: list[list[str]] = field(default_factory=list)
    sanity_ok: bool = True
    rounds: int = 0
    rounds_why: str = ""
    profile: dict[str, Any] = field(default_factory=dict)

    def add(self, part: str, run: Timed) -> None:
        self.runs.setdefault(part, []).append(run)

    def secs(self, part: str) -> list[float]:
        return [r.seconds for r in self.runs.get(part, [])]


class Bench:
    """One bench run: the config, the agent, the rounds."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.res = Results()
        self.round_no = 0
        self.pg_dump = client_binary("pg_dump")
        self.pg_restore = client_binary("pg_restore")
        self.bare_dump = tmp / "bare.dump"
        # One engine-free config (components: {}) for the agent, backup, verify and restore:
        # no guard can block the restore, and the agent is the one an operator would run.
        self.agent = ChimeraAgent(
            tmp,
            {
                "agent": {},
                "components": {},
                "backup": {
                    "dir": str(tmp / "sets"),
                    "postgres": {"dsn": DSN, "databases": [DB], "jobs": JOBS},
                },
            },
        )

    def cli(self, *args: str) -> list[str]:
        return [*chimera_cli(), "--config", str(self.agent.config_path), *args]

    # ------------------------------------------------------------------ parts

    def backup_bare(self) -> None:
        self.bare_dump.unlink(missing_ok=True)
        argv = [
            self.pg_dump,
            "--format=custom",
            "-f",
            str(self.bare_dump),
            f"--dbname={conninfo(DB)}",
        ]
        run = checked("pg_dump -Fc", run_timed(argv, {"pg_dump": lambda pid: [pid]}))
        self.res.add("backup bare", run)
        self.res.bare_size = self.bare_dump.stat().st_size

    def backup_chimera(self) -> str:
        agent_pid = self.agent.pid
        run = checked(
            "chimera-ops backup",
            run_timed(
                self.cli("backup", "--json"),
                {
                    "cli": lambda pid: [pid],
                    "cli tree": tree_pids,
                    "agent": lambda _pid: [agent_pid],
                    "agent tree": lambda _pid: tree_pids(agent_pid),
                },
            ),
        )
        self.res.add("backup chimera", run)
        summary = run.json()
        self.res.set_size = int(summary["size_bytes"])
        self.res.set_files = int(summary["files"])
        self.res.backup_inner.append(float(summary["duration_s"]))
        manifest = json.loads((Path(summary["path"]) / "manifest.json").read_text())
        recorded = manifest["postgres"]["databases"][0]["tables"]
        self.sanity("manifest of the set (counted by chimera-ops backup)", recorded)
        return str(summary["id"])

    def verify(self, set_id: str) -> None:
        before = databases()
        run = run_timed(self.cli("backup", "verify", set_id, "--json"), {"cli": lambda pid: [pid]})
        self.res.add("verify", run)
        if run.returncode != 0:
            self.res.sanity_ok = False
            self.res.sanity.append(
                [f"`backup verify {set_id}`", f"exit {run.returncode}", run.stdout[-300:], "NO"]
            )
        left = {d for d in databases() - before if d.startswith("chimera_verify_")}
        if left:  # verify drops its scratch database itself: a leftover is a bug to report
            self.res.sanity_ok = False
            self.res.sanity.append(
                ["verify scratch left behind", ", ".join(sorted(left)), "", "NO"]
            )

    def restore_bare(self) -> None:
        create_db(BARE_DB)  # the fresh empty database, before the clock starts
        argv = [self.pg_restore, f"--dbname={conninfo(BARE_DB)}", str(self.bare_dump)]
        run = checked("pg_restore", run_timed(argv, {"pg_restore": lambda pid: [pid]}))
        self.res.add("restore bare", run)
        self.sanity("bare pg_restore (reference)", row_counts(BARE_DB))
        drop_db(BARE_DB)

    def restore_chimera(self, set_id: str) -> None:
        argv = self.cli("restore", set_id, "--yes", "--no-safety-backup", "--only", "postgres")
        run = checked("chimera-ops restore", run_timed([*argv, "--json"], {"cli": tree_pids}))
        self.res.add("restore chimera", run)
        self.res.restore_steps.append({s["step"]: float(s["seconds"]) for s in run.json()["steps"]})
        self.sanity("chimera-ops restore (read back from the swapped-in database)", row_counts(DB))

    def sanity(self, what: str, counts: dict[str, int]) -> None:
        """Compare with the source's exact counts; a difference fails the bench (a bug)."""
        src = self.res.source
        differ = sorted(k for k in set(src) | set(counts) if src.get(k) != counts.get(k))
        self.res.sanity.append(
            [
                f"round {self.round_no}: {what}",
                f"{len(counts)} tables, {sum(counts.values())} rows",
                ", ".join(f"{k}: {counts.get(k)} vs {src.get(k)}" for k in differ[:5]) or "-",
                "yes" if not differ else "NO",
            ]
        )
        if differ:
            self.res.sanity_ok = False

    # ------------------------------------------------------------------ the run

    def run(self, started: float) -> None:
        t0 = time.monotonic()
        build_database()
        self.res.build_s = time.monotonic() - t0
        self.res.size = db_size(DB)
        self.res.source = row_counts(DB)
        self.res.rows = sum(self.res.source.values())
        problem = self.agent.check_config()
        if problem:
            raise RuntimeError(f"the bench config is rejected: {problem}")
        self.agent.start()
        try:
            for r in range(RUNS):
                round_t0 = time.monotonic()
                self.round(r, last=r == RUNS - 1)
                self.res.rounds = r + 1
                if r == 0:
                    spent = time.monotonic() - started
                    need = spent + (RUNS - 1) * (time.monotonic() - round_t0) + PROFILE_EST_S
                    if need > BUDGET_S:
                        self.res.rounds_why = (
                            f"1 run each: {RUNS} would take ~{need / 60:.0f} min "
                            f"(> {BUDGET_S / 60:.0f} min)"
                        )
                        break
                    self.res.rounds_why = f"{RUNS} runs each (fits in {BUDGET_S / 60:.0f} min)"
        finally:
            self.agent.stop()
        self.res.profile = profile(self.tmp)

    def round(self, r: int, last: bool) -> None:
        """Backup pair, verify, restore pair; who goes first alternates between rounds."""
        self.round_no = r + 1
        print(f"round {r + 1}: backup", flush=True)
        set_id = ""
        for who in ("bare", "chimera") if r % 2 == 0 else ("chimera", "bare"):
            if who == "bare":
                self.backup_bare()
            else:
                set_id = self.backup_chimera()
        print(f"round {r + 1}: verify", flush=True)
        self.verify(set_id)
        print(f"round {r + 1}: restore", flush=True)
        for who in ("bare", "chimera") if r % 2 == 0 else ("chimera", "bare"):
            if who == "bare":
                self.restore_bare()
            else:
                self.restore_chimera(set_id)
        if not last:
            refreeze()


# --------------------------------------------------------------------------- profile


def _patch(module: Any, **funcs: Any) -> None:
    for name, func in funcs.items():
        setattr(module, name, func)


def profile(tmp: Path) -> dict[str, Any]:
    """Where chimera-ops' time goes: its own dump and restore functions run in-process with
    their stream, row-count and create-database helpers wrapped by timers (module attributes,
    looked up at call time), plus the hashing and the DROP DATABASE of the swap on their own."""
    from chimera_ops.ops.backup import pg
    from chimera_ops.ops.backup.sets import check_files, load_set

    out: dict[str, Any] = {"streams": [], "restore": []}
    originals = {n: getattr(pg, n) for n in ("dump_stream", "restore_stream", "row_counts")}
    t_start = 0.0

    def wrap(name: str, sink: list[tuple[str, float, float]], label: Callable[..., str]) -> Any:
        real = originals[name]

        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.monotonic()
            try:
                return real(*args, **kw)
            finally:
                sink.append((label(*args), t0 - t_start, time.monotonic() - t0))

        return timed

    dump_dir = tmp / "profile-set"
    dump_dir.mkdir()
    dump_calls: list[tuple[str, float, float]] = []
    restore_calls: list[tuple[str, float, float]] = []
    try:
        # Patched on the module: dump/restore look these up as module globals at call time.
        _patch(
            pg,
            dump_stream=wrap("dump_stream", dump_calls, lambda *a: a[3].name),
            row_counts=wrap("row_counts", dump_calls, lambda *_: "row counts"),
        )
        checkpoint()
        t_start = time.monotonic()
        entry, files = pg.dump_database(DSN, DB, 0, dump_dir, JOBS, lambda what, n: None)
        out["dump_total"] = time.monotonic() - t_start
        _patch(
            pg,
            restore_stream=wrap("restore_stream", restore_calls, lambda *a: a[3]),
            row_counts=wrap("row_counts", restore_calls, lambda *_: "row counts"),
        )
        drop_db(PROFILE_DB)
        checkpoint()
        t_start = time.monotonic()
        pg.restore_database(DSN, entry, dump_dir, PROFILE_DB, JOBS)
        out["restore_total"] = time.monotonic() - t_start
    finally:
        _patch(pg, **originals)
    sizes = {name: f["size"] for name, f in files.items()}
    out["streams"] = [(n, s, d, sizes.get(n, 0)) for n, s, d in dump_calls]
    out["restore"] = restore_calls
    t0 = time.monotonic()
    drop_db(PROFILE_DB)
    out["drop"] = time.monotonic() - t0

    # The hashing cost on its own: sha256 of every dumped byte, single thread, from page cache.
    t0 = time.monotonic()
    for name in files:
        digest = hashlib.sha256()
        with open(dump_dir / name, "rb") as src:
            while chunk := src.read(1024 * 1024):
                digest.update(chunk)
    out["sha256"] = time.monotonic() - t0
    out["bytes"] = sum(sizes.values())

    # What `restore` checks before it touches anything (the step list reports it as 0 s).
    manifest = {"format": 1, "started_at": 0, "files": files}
    (dump_dir / "manifest.json").write_text(json.dumps(manifest))
    loaded = load_set(dump_dir)
    assert loaded is not None
    t0 = time.monotonic()
    check_files(loaded)
    out["check_files"] = time.monotonic() - t0

    # The same dump streams written by pg_dump itself (-f, in parallel, no Python pipe, no hash)
    # is the floor of this design on this machine.
    direct = tmp / "direct"
    direct.mkdir()
    conn_args = ["--format=custom", f"--dbname={conninfo(DB)}"]
    argvs = []
    for f in entry["files"]:
        section = ["--section=" + f["section"], *(f"--table={t}" for t in f["tables"])]
        argvs.append(
            [client_binary("pg_dump"), *conn_args, *section, "-f", str(direct / f["file"])]
        )
    checkpoint()
    t0 = time.monotonic()
    procs = [subprocess.Popen(a, stderr=subprocess.DEVNULL) for a in argvs]
    codes = [p.wait() for p in procs]
    out["direct_total"] = time.monotonic() - t0 if not any(codes) else float("nan")
    shutil.rmtree(direct, ignore_errors=True)
    shutil.rmtree(dump_dir, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- tables


def _ratio(res: Results, part: str) -> float:
    bare, chim = median(res.secs(f"{part} bare")), median(res.secs(f"{part} chimera"))
    return chim / bare if bare == bare and bare > 0 else float("nan")


def _runs_cell(values: list[float]) -> str:
    return ", ".join(fmt(v, 1) for v in values) + " s" if values else "n/a"


def _peak(runs: list[Timed], group: str) -> float:
    values = [r.peaks.get(group, 0.0) for r in runs]
    return max(values) if values else float("nan")


def _cpu_cells(runs: list[Timed]) -> list[str]:
    """Median CPU of the work (client + server s), its floor, and the machine's busy cores."""
    if not runs:
        return ["n/a", "n/a", "n/a"]
    client = median([r.client_cpu for r in runs])
    server = median([r.server_cpu for r in runs])
    return [
        f"{client:.1f} + {server:.1f} s",
        fmt(median([r.floor for r in runs]), 1, " s"),
        fmt(median([r.busy_cores for r in runs]), 2),
    ]


def sections(res: Results, facts: dict[str, str], error: str | None) -> list[Section]:
    """The result tables; every verdict computed from the figures (None: not measured)."""
    note_machine = (
        f"Machine: {facts['nproc']} cores ({facts['cpu']}), {facts['memory']} RAM, "
        f"PostgreSQL {facts['server']} on 127.0.0.1 (shared_buffers {facts['shared_buffers']}); "
        f"load average before the bench {facts['load']} (other work shares the machine: bare and "
        "chimera-ops runs alternate, who goes first alternates between rounds). A CHECKPOINT "
        "precedes every timed command."
    )
    note_db = (
        f"Database `{DB}`: {TABLES} tables (bigint PK `id`, bigint `account` with a secondary "
        "index, md5 text, repeat(md5, 2) text, numeric(18,6), timestamptz), built with one "
        "INSERT ... SELECT generate_series per table (two at a time), indexes after the rows, "
        f"then VACUUM (FREEZE, ANALYZE); {res.rows} rows; table sizes 1..5 x "
        f"{ROWS_PER_WEIGHT} rows; pg_database_size {mib(res.size)}; built in "
        f"{fmt(res.build_s, 0)} s (not timed). {res.rounds_why or 'not run'}; median shown."
    )
    rows_a = [
        [
            "bare `pg_dump -Fc -f FILE`",
            fmt(median(res.secs("backup bare")), 1, " s"),
            _runs_cell(res.secs("backup bare")),
            mib(res.bare_size) if res.bare_size else "n/a",
            *_cpu_cells(res.runs.get("backup bare", [])),
            "1.00x",
        ],
        [
            f"`chimera-ops backup` (jobs {JOBS})",
            fmt(median(res.secs("backup chimera")), 1, " s"),
            _runs_cell(res.secs("backup chimera")),
            mib(res.set_size) if res.set_size else "n/a",
            *_cpu_cells(res.runs.get("backup chimera", [])),
            fmt(_ratio(res, "backup"), 2, "x"),
        ],
    ]
    ratio_a = _ratio(res, "backup")
    size_note = (
        f"Set size {mib(res.set_size)} ({res.set_files} files: pre-data, {JOBS} data, post-data "
        f"dumps and the config; manifest not counted) vs bare dump {mib(res.bare_size)}: "
        f"{fmt(res.set_size / res.bare_size, 3, 'x') if res.bare_size else 'n/a'}."
    )
    inner = median(res.backup_inner)
    sec_a = Section(
        title="Backup: `chimera-ops backup` vs bare `pg_dump -Fc`",
        aim=f"chimera-ops <= {AIM_RATIO}x bare pg_dump -Fc (median wall time)",
        headers=[
            "command",
            "median",
            "runs",
            "output size",
            "CPU: client + server",
            f"floor on {os.cpu_count()} cores",
            "machine busy (cores)",
            "vs bare",
        ],
        rows=rows_a,
        verdict=verdict(None if ratio_a != ratio_a else ratio_a <= AIM_RATIO),
        notes=[
            f"Bare: `{Path(facts['pg_dump']).name} --format=custom -f FILE --dbname=...{DB}` "
            f"({facts['pg_dump_version']}), default compression (zlib, default level), one "
            "process, fsyncs its file (pg_dump's default).",
            f"chimera-ops: `chimera-ops --config F backup --json`, config `backup: {{dir: TMP, "
            f"postgres: {{dsn, databases: [{DB}], jobs: {JOBS}}}}}` (no redis), "
            "`components: {}`; the same pg_dump, custom format, same default compression, "
            f"as {JOBS}+2 streams (pre-data, {JOBS} data groups, post-data) from one exported "
            "snapshot, each piped through Python, hashed and fsynced; exact row counts in the "
            "same snapshot; the set recorded in the store, retention applied. Wall time is the "
            "CLI process from spawn to exit (Python start-up included); the set's own "
            f"start..end (manifest) median {fmt(inner, 1, ' s')}.",
            CPU_NOTE,
            size_note,
            note_db,
            note_machine,
        ],
    )
    ratio_b = _ratio(res, "restore")
    steps = res.restore_steps
    step_note = "n/a"
    if steps:
        names = list(steps[0])
        step_note = ", ".join(
            f"{n} {fmt(median([s.get(n, float('nan')) for s in steps]), 1, ' s')}" for n in names
        )
    sec_b = Section(
        title="Restore: `chimera-ops restore` vs bare single-job `pg_restore`",
        aim=f"chimera-ops <= {AIM_RATIO}x bare single-job pg_restore (median wall time)",
        headers=[
            "command",
            "median",
            "runs",
            "CPU: client + server",
            f"floor on {os.cpu_count()} cores",
            "machine busy (cores)",
            "vs bare",
        ],
        rows=[
            [
                "bare `pg_restore -d NEWDB FILE` (1 job)",
                fmt(median(res.secs("restore bare")), 1, " s"),
                _runs_cell(res.secs("restore bare")),
                *_cpu_cells(res.runs.get("restore bare", [])),
                "1.00x",
            ],
            [
                "`chimera-ops restore ID --yes --no-safety-backup --only postgres`",
                fmt(median(res.secs("restore chimera")), 1, " s"),
                _runs_cell(res.secs("restore chimera")),
                *_cpu_cells(res.runs.get("restore chimera", [])),
                fmt(ratio_b, 2, "x"),
            ],
        ],
        verdict=verdict(None if ratio_b != ratio_b else ratio_b <= AIM_RATIO),
        notes=[
            f"Bare: `pg_restore --dbname=...{BARE_DB} bare.dump` of that round's bare dump into "
            "an empty database made with CREATE DATABASE before the clock starts (dropped "
            "after, not timed).",
            "chimera-ops: restore of that round's set over the live database, engine-free "
            "config (no guard blocks): checksums of every file, CREATE DATABASE beside the live "
            f"one, pre-data, the {JOBS} data dumps in parallel, post-data with "
            f"`pg_restore --jobs={JOBS}` (indexes), exact row counts of the new database, then "
            "the swap (old renamed, new renamed in, old DROPped) - all inside the timed command.",
            CPU_NOTE,
            f"chimera-ops' own step timings (median): {step_note} (its `checksums` step is "
            "always reported as 0 s; its real cost is in the profile below).",
            "After each chimera-ops restore the swapped-in database is VACUUM FREEZEd (not "
            "timed) so that the next round dumps the same state as the first.",
            note_machine,
        ],
    )
    verify_runs = res.secs("verify")
    sec_c = Section(
        title="Verify: `chimera-ops backup verify ID` (report only)",
        aim="report only (no aim)",
        headers=["command", "median", "runs"],
        rows=[
            [
                "`chimera-ops backup verify ID --json`",
                fmt(median(verify_runs), 1, " s"),
                _runs_cell(verify_runs),
            ]
        ],
        verdict="n/a (report only)",
        notes=[
            "Checks every sha256, restores the set into a scratch database `chimera_verify_*` "
            "(same pre-data / parallel data / post-data path as restore), compares the exact "
            "row counts with the manifest, drops the scratch database.",
        ],
    )
    backups = res.runs.get("backup chimera", [])
    rss = {g: _peak(backups, g) for g in ("cli", "cli tree", "agent", "agent tree")}
    met_d: bool | None = None
    if backups:
        met_d = rss["cli"] < AIM_RSS and rss["agent"] < AIM_RSS
    sec_d = Section(
        title="Memory during the backup: CLI and agent peak RSS",
        aim=f"agent and CLI RSS < {mib(AIM_RSS)} during the backup",
        headers=["process", "peak RSS", "counted against the aim"],
        rows=[
            ["`chimera-ops backup` CLI process", mib(rss["cli"]), "yes"],
            ["CLI + its pg_dump children (whole tree)", mib(rss["cli tree"]), "no (report)"],
            ["running `chimera-ops agent` (same config)", mib(rss["agent"]), "yes"],
            ["agent + its helpers (whole tree)", mib(rss["agent tree"]), "no (report)"],
            [
                "bare pg_dump -Fc (reference)",
                mib(_peak(res.runs.get("backup bare", []), "pg_dump")),
                "no",
            ],
        ],
        verdict=verdict(met_d),
        notes=[
            f"psutil RSS sampled every {SAMPLE_EVERY} s during every chimera-ops backup; the "
            "highest sample of all runs. The agent runs `components: {}` on the same config "
            "(it exports the backup metrics from the same store) for the whole bench.",
        ],
    )
    sec_s = Section(
        title="Sanity: the row counts chimera-ops recorded and restored",
        aim="identical to the source's exact row counts, verify exits 0 (not timing)",
        headers=["what", "found", "tables that differ (found vs source)", "same as source"],
        rows=res.sanity or [["n/a", "not run", "-", "-"]],
        verdict=verdict(None if not res.sanity else res.sanity_ok),
        notes=[f"Source: exact count(*) of the {TABLES} tables after the build: {res.rows} rows."],
    )
    out = [sec_a, sec_b, sec_c, sec_d, sec_s]
    if res.profile:
        out.append(profile_section(res))
    if error:
        for sec in out:
            sec.notes.insert(0, f"NOT COMPLETE: {error}")
    return out


def _s(seconds: float) -> str:
    return fmt(seconds, 1, " s")


def profile_section(res: Results) -> Section:
    """Where chimera-ops spends its time (report only)."""
    p = res.profile
    rows = [
        [f"dump: {name}", _s(start), _s(dur), mib(size)]
        for name, start, dur, size in sorted(p["streams"], key=lambda c: c[1])
    ]
    size = mib(p["bytes"])
    rows += [
        ["dump: whole `dump_database` (in-process, no CLI)", "0.0 s", _s(p["dump_total"]), size],
        [
            "dump: same streams by pg_dump -f directly, in parallel (no pipe, no hash)",
            "0.0 s",
            _s(p["direct_total"]),
            "-",
        ],
        ["sha256 of every dumped byte, one thread, from page cache", "-", _s(p["sha256"]), size],
        *(
            [f"restore: {what}", _s(start), _s(dur), "-"]
            for what, start, dur in sorted(p["restore"], key=lambda c: c[1])
        ),
        [
            "restore: whole `restore_database` (in-process, no CLI)",
            "0.0 s",
            _s(p["restore_total"]),
            "-",
        ],
        [
            "restore: DROP DATABASE of the restored copy (as the swap drops the old one)",
            "-",
            _s(p["drop"]),
            "-",
        ],
        ["restore: `check_files` (the checksums step)", "-", _s(p["check_files"]), size],
    ]
    cli_overhead = median(res.secs("backup chimera")) - median(res.backup_inner)
    return Section(
        title="Profile: where chimera-ops' time goes (report only)",
        aim="report only (no aim)",
        headers=["step", "starts at", "takes", "bytes"],
        rows=rows,
        verdict="n/a (report only)",
        notes=[
            "chimera-ops' own `pg.dump_database` and `pg.restore_database`, run once in the "
            "bench process after the timed rounds, with `pg.dump_stream`, `pg.restore_stream` "
            "and `pg.row_counts` wrapped by timers; 'starts at' is from the function's start. "
            "Rows that overlap in time ran in parallel.",
            f"The CLI around the set (Python start-up, preflight, store, retention) costs "
            f"{fmt(cli_overhead, 1, ' s')} of the backup's median wall time.",
        ],
    )


# --------------------------------------------------------------------------- main


def machine(pg_dump: str) -> dict[str, str]:
    """The facts the notes cite: cores, CPU, memory, load, PostgreSQL and pg_dump versions."""
    common = machine_facts()
    facts = {
        "nproc": common["nproc"],
        "cpu": common["cpu"],
        "memory": common["memory"],
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "pg_dump": pg_dump,
        "pg_dump_version": tool_version([pg_dump, "--version"]),
        "server": "?",
        "shared_buffers": "?",
    }
    try:
        with connect() as conn:
            facts["server"] = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            facts["shared_buffers"] = str(conn.execute("SHOW shared_buffers").fetchone()[0])  # type: ignore[index]
    except psycopg.Error:
        pass
    return facts


def cleanup(before: set[str]) -> None:
    """Drop every database this bench made (ours by name, and only those that are new)."""
    try:
        for name in sorted(databases() - before):
            if name.startswith(DB):
                drop_db(name)
        drop_db(DB)
    except psycopg.Error as exc:
        print(f"cleanup: {exc}", file=sys.stderr)


def main() -> int:
    """Build, run the rounds, profile, write bench/results/backup.md; 2 when a part could not
    run, 1 when chimera-ops restored different data (a bug)."""
    started = time.monotonic()
    error: str | None = None
    code = 0
    bench: Bench | None = None
    tmp = temp_dir("bk")
    reachable = True
    try:
        before = databases() - {DB}
    except psycopg.Error as exc:
        before, reachable = set(), False
        error = f"PostgreSQL at {DSN} does not answer: {str(exc).strip().splitlines()[0]}"
    facts = machine(shutil.which("pg_dump") or NOT_INSTALLED)
    try:
        if error is None:
            bench = Bench(tmp)
            facts = machine(bench.pg_dump)
            bench.run(started)
    except NotRun as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - written into the table, then the exit code says it
        error = f"{type(exc).__name__}: {exc}"
        code = 1
    finally:
        if bench is not None and bench.agent.proc is not None:
            bench.agent.stop()
        if reachable:
            cleanup(before)
        shutil.rmtree(tmp, ignore_errors=True)
    res = bench.res if bench is not None else Results()
    if error is not None and code == 0:
        code = 2
    path = write_results(
        "backup",
        "Backup sets: chimera-ops vs bare pg_dump -Fc / pg_restore",
        "`bench/bench_backup.py` - wall time of `chimera-ops backup`, `restore` and `backup "
        "verify` on a ~1 GiB database against the tools a user would pick, memory during the "
        "backup, and that the data comes back exactly. Loopback PostgreSQL only.",
        sections(res, facts, error),
    )
    print(f"wrote {path} in {time.monotonic() - started:.0f} s")
    if res.sanity and not res.sanity_ok:
        print(
            "SANITY FAILED: chimera-ops recorded or restored different row counts than the "
            "source (or verify failed) - a bug, see the Sanity table",
            file=sys.stderr,
        )
        return 1
    if error:
        print(f"incomplete: {error}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
