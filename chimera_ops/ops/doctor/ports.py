"""Port checks: who listens on each port the stack uses, and whether that is who should.

Port rule (one `PortCheck` per port):

| listener        | must_be_free | owner matches `expected` | status |
|-----------------|--------------|--------------------------|--------|
| none            | any          | -                        | ok (free); warn if `expected` or `component` is set and not must_be_free: the service is not listening |
| held by this config's agent or its components | any | -   | ok |
| held by another chimera-ops agent or its components | yes | - | fail, "another chimera-ops agent (pid, state_dir)": a live stack, not stale; the hint is to stop that agent, never to kill the process |
| held by another chimera-ops agent or its components | no | - | warn, the same words |
| held            | yes          | any                      | fail: a component we are about to start needs it (a stale copy of itself counts) |
| held            | no           | yes                      | ok: the expected service holds it |
| held            | no           | no                       | fail: someone else holds the service's port |
| held            | no           | no `expected` given      | ok, owner reported |
| held, owner unknown (no pid visible) | no | -             | warn: cannot verify |

`expected` is a list of substrings matched against the owner's process name and cmdline
(case-insensitive). The server kinds accept `docker-proxy`, since a compose stack publishes its
ports through it. Whether an owner belongs to a chimera-ops agent is decided in agents.py.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from chimera_ops.ops.doctor.agents import AgentOwner, chimera_owner
from chimera_ops.ops.doctor.result import CheckResult
from chimera_ops.redact import redact_text


@dataclass(frozen=True)
class PortCheck:
    """A port to inspect. See the module docstring for the rule."""

    port: int
    expected: tuple[str, ...] = ()  # owner name/cmdline substrings that may hold it
    component: str | None = None  # who the port is for, for messages
    must_be_free: bool = False  # a component not yet started will bind it


# Process names of each server kind; a compose stack publishes its ports through docker-proxy.
SERVICE_OWNERS: dict[str, tuple[str, ...]] = {
    "postgres": ("postgres", "postmaster", "docker-proxy"),
    "redis": ("redis-server", "redis", "docker-proxy"),
    "rabbitmq": ("beam.smp", "rabbitmq", "docker-proxy"),
}


def default_port_checks() -> list[PortCheck]:
    """The well-known ports (PostgreSQL 5432, Redis 6379, RabbitMQ 5672), for a plan with no
    config; `doctor` checks the ports its config names instead (from_config.py)."""
    return [
        PortCheck(5432, SERVICE_OWNERS["postgres"], "postgres"),
        PortCheck(6379, SERVICE_OWNERS["redis"], "redis"),
        PortCheck(5672, SERVICE_OWNERS["rabbitmq"], "rabbitmq"),
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


def check_ports(checks: Sequence[PortCheck], state_dir: Path | None = None) -> list[CheckResult]:
    """One result per port: who holds it, and whether that is who should.

    ``state_dir`` is the agent's of the config being checked: processes of the agent on it are
    this stack's own; those of an agent on any other state dir belong to another stack.
    """
    listeners, listing_error = _listeners()
    own = state_dir.resolve() if state_dir is not None else None
    return [_judge_port(c, listeners, listing_error, own) for c in checks]


def _judge_port(
    check: PortCheck,
    listeners: dict[int, set[int | None]],
    listing_error: str | None,
    own_state_dir: Path | None,
) -> CheckResult:
    name = f"port:{check.port}"
    purpose = f" ({check.component})" if check.component else ""
    pids = listeners.get(check.port)
    if pids is None and listing_error and _accepts(check.port):
        pids = {None}  # something listens; we could not see who
    if not pids:
        # A component's port that is not about to be bound by us should have a listener.
        if (check.expected or check.component) and not check.must_be_free:
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
    verdict = _agent_verdict(check, owners, details, own_state_dir)
    if verdict is not None:
        return verdict
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


def _agent_verdict(
    check: PortCheck,
    owners: list[dict[str, Any]],
    details: dict[str, Any],
    own_state_dir: Path | None,
) -> CheckResult | None:
    """The result when chimera-ops agents hold the port, never "stale"; None otherwise."""
    found = [(o, chimera_owner(o["pid"])) for o in owners if o["pid"]]
    held = [(o, a) for o, a in found if a is not None]
    if not held or len(held) != len(owners):
        return None  # an unrelated process is among the owners: the plain rule applies
    for owner, agent in held:
        owner["chimera_ops"] = agent.to_dict()
    name = f"port:{check.port}"
    purpose = f" ({check.component})" if check.component else ""
    others = [(o, a) for o, a in held if a.state_dir.resolve() != own_state_dir]
    if not others:
        who = "; ".join(_holder(o, a, "this config's chimera-ops agent") for o, a in held)
        return CheckResult(name, "ok", f"{check.port}{purpose} held by {who}", details)
    owner, agent = others[0]
    who = _holder(owner, agent, "another chimera-ops agent")
    # Needed by a component we would start: a real conflict, but its remedy is not a kill.
    return CheckResult(
        name,
        "fail" if check.must_be_free else "warn",
        f"{check.port}{purpose} is held by {who}: a live stack, not a stale process",
        details,
        f"that agent supervises it (and would restart it): manage it with that agent's config, "
        f"stop that agent first (`kill -TERM {agent.agent_pid}` stops its components too), or "
        "give this config other ports",
    )


def _holder(owner: dict[str, Any], agent: AgentOwner, whose: str) -> str:
    """`another chimera-ops agent (pid 12, state_dir /srv/var)`, or `engine (pid 13) of ...`."""
    text = f"{whose} (pid {agent.agent_pid}, state_dir {agent.state_dir})"
    return f"{agent.component} (pid {owner['pid']}) of {text}" if agent.component else text


def _matches(owner: dict[str, Any], expected: tuple[str, ...]) -> bool:
    text = f"{owner.get('name') or ''} {owner.get('cmdline') or ''}".lower()
    return any(e.lower() in text for e in expected)
