"""Host checks: free disk space and the clock (NTP sync, else skew against PostgreSQL)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from chimera_ops.ops.doctor.databases import password_of
from chimera_ops.ops.doctor.result import CheckResult, Status
from chimera_ops.redact import redact_dsn, redact_text
from chimera_ops.units import format_size


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
        reason = redact_text(str(exc).strip(), [password_of(dsn)]).splitlines()
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
