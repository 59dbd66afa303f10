"""`chimera-ops doctor`: host checks for what the incidents start with.

Port conflicts, missing or malformed env vars, unreachable databases, full disks and a wrong
clock. Each check returns a `CheckResult`; `run_doctor(plan)` runs them all (network checks in
parallel, each with its own timeout) and never raises. No click or rich here: the CLI renders.

Secrets never leave this module in clear: DSNs and URLs are redacted, error messages are
scrubbed of the password they were built from, and env values are shown as length plus at most
the first 2 characters.

Port rule (one `PortCheck` per port):

| listener        | must_be_free | owner matches `expected` | status |
|-----------------|--------------|--------------------------|--------|
| none            | any          | -                        | ok (free); warn if `expected` is set and not must_be_free: the service it names is not listening |
| held            | yes          | any                      | fail: a component we are about to start needs it (a stale copy of itself counts) |
| held            | no           | yes                      | ok: the expected service holds it |
| held            | no           | no                       | fail: someone else holds the service's port |
| held            | no           | no `expected` given      | ok, owner reported |
| held, owner unknown (no pid visible) | no | -             | warn: cannot verify |

`expected` is a list of substrings matched against the owner's process name and cmdline
(case-insensitive). The defaults accept `docker-proxy`, since a compose stack publishes its
ports through it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import psutil

from chimera_ops.redact import redact_dsn, redact_text
from chimera_ops.units import format_size

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one doctor check."""

    name: str
    status: Status
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for `doctor --json`."""
        return asdict(self)


@dataclass(frozen=True)
class PortCheck:
    """A port to inspect. See the module docstring for the rule."""

    port: int
    expected: tuple[str, ...] = ()  # owner name/cmdline substrings that may hold it
    component: str | None = None  # who the port is for, for messages
    must_be_free: bool = False  # a component not yet started will bind it


def default_port_checks() -> list[PortCheck]:
    """PostgreSQL 5432, Redis 6379, RabbitMQ 5672, each held by its own server (or docker)."""
    return [
        PortCheck(5432, ("postgres", "postmaster", "docker-proxy"), "postgres"),
        PortCheck(6379, ("redis-server", "redis", "docker-proxy"), "redis"),
        PortCheck(5672, ("beam.smp", "rabbitmq", "docker-proxy"), "rabbitmq"),
    ]


@dataclass
class DoctorPlan:
    """What to check; the CLI builds it from the config."""

    ports: Sequence[PortCheck | tuple[int, str | None]] = field(default_factory=default_port_checks)
    env_vars: Sequence[str] = ()
    postgres_dsns: Sequence[str] = ()
    redis_urls: Sequence[str] = ()
    dirs: Sequence[Path] = ()
    timeout: float = 5.0
    disk_warn_ratio: float = 0.10
    disk_fail_ratio: float = 0.05
    check_clock: bool = True
    clock_warn_s: float = 1.0  # exchanges reject signed requests off by a few seconds
    clock_fail_s: float = 5.0
    env: Mapping[str, str] | None = None  # defaults to os.environ


def run_doctor(plan: DoctorPlan) -> list[CheckResult]:
    """Run every check in the plan, in a stable order; never raises."""
    env = os.environ if plan.env is None else plan.env
    jobs: list[Callable[[], CheckResult | list[CheckResult]]] = [
        partial(check_ports, [_as_port_check(p) for p in plan.ports])
    ]
    jobs += [partial(check_env_var, name, env) for name in plan.env_vars]
    jobs += [partial(check_postgres, dsn, plan.timeout) for dsn in plan.postgres_dsns]
    jobs += [partial(check_redis, url, plan.timeout) for url in plan.redis_urls]
    jobs += [
        partial(check_disk, Path(d), plan.disk_warn_ratio, plan.disk_fail_ratio) for d in plan.dirs
    ]
    if plan.check_clock:
        dsn = plan.postgres_dsns[0] if plan.postgres_dsns else None
        jobs.append(partial(check_clock, dsn, plan.timeout, plan.clock_warn_s, plan.clock_fail_s))
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(_safe, jobs))
    results: list[CheckResult] = []
    for outcome in outcomes:
        results.extend(outcome if isinstance(outcome, list) else [outcome])
    return results


def _safe(job: Callable[[], CheckResult | list[CheckResult]]) -> CheckResult | list[CheckResult]:
    try:
        return job()
    except Exception as exc:  # noqa: BLE001 - a broken check is a result, not a crash
        return CheckResult(
            "doctor",
            "fail",
            f"check crashed: {type(exc).__name__}: {redact_text(str(exc))}",
            hint="this is a chimera-ops bug",
        )


def _as_port_check(item: PortCheck | tuple[int, str | None]) -> PortCheck:
    if isinstance(item, PortCheck):
        return item
    port, hint = item
    return PortCheck(port, (hint,) if hint else ())


# --------------------------------------------------------------------------- ports


def _listeners() -> tuple[dict[int, set[int | None]], str | None]:
    """port -> owner pids of TCP listeners (None when the pid is not visible to us)."""
    owners: dict[int, set[int | None]] = {}
    try:
        conns = psutil.net_connections(kind="inet")
    except psutil.AccessDenied as exc:
        return owners, f"cannot list sockets: {exc}"
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr:
            owners.setdefault(conn.laddr.port, set()).add(conn.pid)
    return owners, None


def _owner(pid: int | None) -> dict[str, Any]:
    if pid is None:
        return {"pid": None, "name": None, "cmdline": None}
    try:
        proc = psutil.Process(pid)
        return {
            "pid": pid,
            "name": proc.name(),
            "cmdline": redact_text(" ".join(proc.cmdline()))[:300],
            "user": proc.username(),
        }
    except psutil.Error:
        return {"pid": pid, "name": None, "cmdline": None}


def _accepts(port: int) -> bool:
    for host in ("127.0.0.1", "::1"):
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            continue
    return False


def check_ports(checks: Sequence[PortCheck]) -> list[CheckResult]:
    """One result per port: who holds it, and whether that is who should."""
    listeners, listing_error = _listeners()
    return [_judge_port(c, listeners, listing_error) for c in checks]


def _judge_port(
    check: PortCheck, listeners: dict[int, set[int | None]], listing_error: str | None
) -> CheckResult:
    name = f"port:{check.port}"
    purpose = f" ({check.component})" if check.component else ""
    pids = listeners.get(check.port)
    if pids is None and listing_error and _accepts(check.port):
        pids = {None}  # something listens; we could not see who
    if not pids:
        if check.expected and not check.must_be_free:
            return CheckResult(
                name,
                "warn",
                f"nothing listens on {check.port}{purpose}",
                {"port": check.port, "expected": list(check.expected)},
                f"start {check.component or 'the service'} or fix the configured port",
            )
        return CheckResult(name, "ok", f"{check.port}{purpose} is free", {"port": check.port})
    owners = [_owner(pid) for pid in sorted(pids, key=lambda p: p or 0)]
    details: dict[str, Any] = {"port": check.port, "owners": owners}
    if listing_error:
        details["listing_error"] = listing_error
    who = ", ".join(f"pid {o['pid']} {o['name'] or '?'}" for o in owners)
    kill_hint = (
        f"find it with `ss -ltnp 'sport = :{check.port}'`; stop the stale process "
        f"(kill {' '.join(str(o['pid']) for o in owners if o['pid'])}) or change the port"
    )
    if check.must_be_free:
        return CheckResult(
            name,
            "fail",
            f"{check.port}{purpose} is already held by {who}",
            details,
            kill_hint,
        )
    known = [o for o in owners if o["name"]]
    if not known:
        return CheckResult(
            name,
            "warn",
            f"{check.port}{purpose} is held by a process we cannot see",
            details,
            "run doctor as root, or check containers with `docker ps`",
        )
    if not check.expected:
        return CheckResult(name, "ok", f"{check.port}{purpose} held by {who}", details)
    wrong = [o for o in known if not _matches(o, check.expected)]
    if wrong:
        return CheckResult(
            name,
            "fail",
            f"{check.port}{purpose} is held by {who}, expected {'/'.join(check.expected)}",
            details,
            kill_hint,
        )
    return CheckResult(name, "ok", f"{check.port}{purpose} held by {who}", details)


def _matches(owner: dict[str, Any], expected: tuple[str, ...]) -> bool:
    text = f"{owner.get('name') or ''} {owner.get('cmdline') or ''}".lower()
    return any(e.lower() in text for e in expected)


# --------------------------------------------------------------------------- env


def mask_value(value: str) -> str:
    """Length and at most the first 2 characters; short values show no characters at all."""
    shown = value[:2] if len(value) >= 8 else ""
    return f"{shown}*** ({len(value)} chars)"


def check_env_var(name: str, env: Mapping[str, str]) -> CheckResult:
    """Present, non-empty and clean (no whitespace or quotes around it, the classic 401)."""
    check = f"env:{name}"
    if name not in env:
        return CheckResult(
            check,
            "fail",
            f"{name} is not set",
            {"set": False},
            f"export {name}=... in the service environment",
        )
    value = env[name]
    details = {"set": True, "length": len(value), "masked": mask_value(value)}
    if not value.strip():
        return CheckResult(check, "fail", f"{name} is empty", details, f"give {name} a value")
    problems = []
    if value != value.strip():
        problems.append("has leading/trailing whitespace or a newline")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        problems.append("is wrapped in quotes")
    if problems:
        return CheckResult(
            check,
            "warn",
            f"{name} {' and '.join(problems)}",
            details,
            "keys copied with quotes or a newline are rejected (401)",
        )
    return CheckResult(check, "ok", f"{name} is set ({details['masked']})", details)


# --------------------------------------------------------------------------- databases


def _password_of(dsn: str) -> str | None:
    try:
        from psycopg.conninfo import conninfo_to_dict

        password = conninfo_to_dict(dsn).get("password")
        return str(password) if password else None
    except Exception:  # noqa: BLE001 - an unparsable DSN just has no known password
        return None


def check_postgres(dsn: str, timeout: float) -> CheckResult:
    """Connect, `SELECT 1`, report the server version; the DSN is always shown redacted."""
    import psycopg

    shown = redact_dsn(dsn)
    started = time.monotonic()
    try:
        # libpq's connect_timeout is whole seconds, minimum 2.
        with psycopg.connect(dsn, connect_timeout=max(2, int(timeout + 0.999))) as conn:
            conn.execute(f"SET statement_timeout = {int(timeout * 1000)}")
            conn.execute("SELECT 1").fetchone()
            version = conn.info.server_version
    except Exception as exc:  # noqa: BLE001 - every failure is a result
        reason = redact_text(str(exc).strip(), [_password_of(dsn)]).splitlines()
        return CheckResult(
            f"postgres:{shown}",
            "fail",
            f"cannot reach PostgreSQL at {shown}: {reason[0] if reason else type(exc).__name__}",
            {"dsn": shown, "error": " | ".join(reason[:4])},
            "is the server up (`pg_isready`)? is the DSN (host, port, db, user) right? "
            "see runbooks/db-connection-failure.md",
        )
    latency = time.monotonic() - started
    return CheckResult(
        f"postgres:{shown}",
        "ok",
        f"PostgreSQL {version // 10000}.{version % 10000} answers at {shown}",
        {"dsn": shown, "server_version": version, "latency_s": round(latency, 4)},
    )


def check_redis(url: str, timeout: float) -> CheckResult:
    """PING with connect and socket timeouts; the URL is always shown redacted."""
    import redis

    shown = redact_dsn(url)
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    started = time.monotonic()
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        password = client.connection_pool.connection_kwargs.get("password")
        reason = redact_text(str(exc), [password])
        return CheckResult(
            f"redis:{shown}",
            "fail",
            f"cannot reach Redis at {shown}: {reason}",
            {"url": shown, "error": reason},
            "is redis-server up (`redis-cli ping`)? see runbooks/redis-pool-exhaustion.md",
        )
    finally:
        client.close()
    latency = time.monotonic() - started
    return CheckResult(
        f"redis:{shown}",
        "ok",
        f"Redis answers PING at {shown}",
        {"url": shown, "latency_s": round(latency, 4)},
    )


# --------------------------------------------------------------------------- disk


def check_disk(path: Path, warn_ratio: float, fail_ratio: float) -> CheckResult:
    """Free space of the filesystem holding `path` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    ratio = usage.free / usage.total if usage.total else 0.0
    details = {
        "path": str(path),
        "measured_at": str(probe),
        "free_bytes": usage.free,
        "total_bytes": usage.total,
        "free_ratio": round(ratio, 4),
    }
    text = f"{path}: {format_size(usage.free)} free of {format_size(usage.total)} ({ratio:.0%})"
    if probe != path:
        text += f" (does not exist yet; measured {probe})"
    status: Status = "fail" if ratio < fail_ratio else "warn" if ratio < warn_ratio else "ok"
    hint = (
        ""
        if status == "ok"
        else "free space: old logs, backups, docker images; see runbooks/disk-full.md"
    )
    return CheckResult(f"disk:{path}", status, text, details, hint)


# --------------------------------------------------------------------------- clock


def _timedatectl(timeout: float) -> tuple[dict[str, str] | None, str]:
    """(properties, "") when timedatectl answers, else (None, why not)."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return None, "timedatectl not installed"
    try:
        done = subprocess.run(
            [exe, "show", "-p", "NTPSynchronized", "-p", "NTP"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"timedatectl: {exc}"
    if done.returncode != 0:
        # e.g. "System has not been booted with systemd" in a container.
        first = done.stderr.strip().splitlines()[:1]
        return None, f"timedatectl: {first[0] if first else f'exit {done.returncode}'}"
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line), ""


def check_clock(dsn: str | None, timeout: float, warn_s: float, fail_s: float) -> CheckResult:
    """NTP sync state from `timedatectl`, else skew against PostgreSQL's `now()`."""
    props, tdc_error = _timedatectl(timeout)
    if props is not None:
        synced = props.get("NTPSynchronized") == "yes"
        return CheckResult(
            "clock",
            "ok" if synced else "warn",
            "clock is NTP-synchronized" if synced else "clock is NOT NTP-synchronized",
            {"source": "timedatectl", **props},
            "" if synced else "enable time sync: `timedatectl set-ntp true` (or chrony)",
        )
    if dsn is None:
        return CheckResult(
            "clock",
            "warn",
            "cannot determine clock sync",
            {"timedatectl": tdc_error},
            "no timedatectl and no database to compare with",
        )
    return _clock_vs_postgres(dsn, timeout, warn_s, fail_s, tdc_error)


def _clock_vs_postgres(
    dsn: str, timeout: float, warn_s: float, fail_s: float, tdc_error: str
) -> CheckResult:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=max(2, int(timeout + 0.999))) as conn:
            before = time.time()
            row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
            after = time.time()
    except Exception as exc:  # noqa: BLE001
        reason = redact_text(str(exc).strip(), [_password_of(dsn)]).splitlines()
        return CheckResult(
            "clock",
            "warn",
            "cannot determine clock skew",
            {"timedatectl": tdc_error, "error": " | ".join(reason[:2])},
            "database unreachable; see the postgres check",
        )
    # The server read its clock somewhere inside the round trip: compare with the midpoint.
    skew = float(row[0]) - (before + after) / 2 if row else 0.0
    details = {
        "source": "postgres",
        "dsn": redact_dsn(dsn),
        "skew_s": round(skew, 4),
        "round_trip_s": round(after - before, 4),
        "timedatectl": tdc_error,
        "note": "a database on this host shares its clock; skew only shows for a remote one",
    }
    status: Status = "fail" if abs(skew) >= fail_s else "warn" if abs(skew) >= warn_s else "ok"
    return CheckResult(
        "clock",
        status,
        f"clock skew vs PostgreSQL: {skew:+.3f}s",
        details,
        "" if status == "ok" else "sync the clock (chrony/ntpd); exchanges reject skewed requests",
    )
