"""Port checks: who listens on each port the stack uses, and whether that is who should.

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

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from chimera_ops.ops.doctor.result import CheckResult
from chimera_ops.redact import redact_text


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
