"""The systemd notify protocol (`sd_notify(3)`), stdlib only: one datagram per message.

When systemd starts the agent with `Type=notify` it sets `NOTIFY_SOCKET` (a path, or `@name` for
the abstract namespace) and, with `WatchdogSec=`, `WATCHDOG_USEC` (and `WATCHDOG_PID`). The agent
then says:

- `READY=1` once every component has started or reached its first verdict;
- `STATUS=...` a one-line summary, whenever it changes;
- `WATCHDOG=1` from the supervision loop itself, every half watchdog period: a loop that hangs
  stops the pings, and systemd restarts the service;
- `STOPPING=1` when the ordered shutdown begins.

Without `NOTIFY_SOCKET` every method is a no-op. The variables are removed from the environment
(libsystemd's `unset_environment`) so the managed children never talk to systemd as the agent.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping, MutableMapping

from chimera_ops.states import State

log = logging.getLogger(__name__)

ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

# States that are not a verdict yet: the component is still on its way up.
_PENDING = frozenset({State.STOPPED, State.STARTING})


def socket_address(value: str) -> str | bytes:
    """The `sendto` address of a NOTIFY_SOCKET value: `@name` is the abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked for.

    `WATCHDOG_PID`, when set, must be this process: the watchdog is meant for the main process.
    """
    usec = env.get("WATCHDOG_USEC", "").strip()
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "").strip()
    if owner and owner != str(pid):
        return None
    return int(usec) / 1e6 / 2


class Notifier:
    """Sends notify messages to one socket. Never raises: systemd missing is not the agent's
    problem, and a failed send is logged once."""

    def __init__(self, address: str | bytes, watchdog: float | None) -> None:
        self.address = address
        self.watchdog = watchdog
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)
        self._warned = False

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> Notifier | None:
        """A notifier when NOTIFY_SOCKET is set (the variables are then removed), else None."""
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        watchdog = watchdog_interval(env, os.getpid())
        for name in ENV_VARS:
            env.pop(name, None)
        if not value or not (value.startswith("/") or value.startswith("@")):
            return None
        return cls(socket_address(value), watchdog)

    def send(self, *fields: str) -> bool:
        """One datagram of `KEY=value` lines; True when it was sent."""
        message = "\n".join(fields).encode()
        try:
            self._sock.sendto(message, self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("systemd notify socket %r: %s", self.address, exc)
                self._warned = True
            return False
        return True

    def close(self) -> None:
        """Close the datagram socket."""
        self._sock.close()


def summary(states: Mapping[str, State]) -> str:
    """The STATUS= line: counts by state, the names of the components that are not up."""
    if not states:
        return "no components"
    counts: dict[str, int] = {}
    for state in states.values():
        counts[str(state)] = counts.get(str(state), 0) + 1
    parts = [f"{n} {s}" for s, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    down = sorted(name for name, state in states.items() if state is not State.RUNNING)
    text = f"{len(states)} components: " + ", ".join(parts)
    if down:
        shown = ", ".join(down[:5]) + (" ..." if len(down) > 5 else "")
        text += f" (not running: {shown})"
    return text


def settled(states: Iterable[State]) -> bool:
    """True when every component has started or reached a verdict (so READY=1 may be sent)."""
    return all(state not in _PENDING for state in states)


class SystemdNotify:
    """What the agent loop calls: `after_tick` once per loop pass, `next_due` for its sleep,
    `stopping` when the shutdown begins. A no-op without a notifier."""

    def __init__(self, notifier: Notifier | None) -> None:
        self.notifier = notifier
        self.ready = False
        self.last_status = ""
        self.last_ping = 0.0

    @classmethod
    def from_env(cls) -> SystemdNotify:
        """From this process's environment (which loses NOTIFY_SOCKET and WATCHDOG_*)."""
        return cls(Notifier.from_env())

    def after_tick(self, states: Mapping[str, State], now: float | None = None) -> None:
        """READY once settled, STATUS when it changed, WATCHDOG when due. Called by the loop."""
        notifier = self.notifier
        if notifier is None:
            return
        now = time.monotonic() if now is None else now
        fields: list[str] = []
        text = summary(states)
        if text != self.last_status:
            fields.append(f"STATUS={text}")
            self.last_status = text
        if not self.ready and settled(states.values()):
            fields.append("READY=1")
            self.ready = True
        if notifier.watchdog is not None and now - self.last_ping >= notifier.watchdog:
            fields.append("WATCHDOG=1")
            self.last_ping = now
        if fields:
            notifier.send(*fields)

    def next_due(self, now: float | None = None) -> float | None:
        """Seconds until the next WATCHDOG=1 is due (the loop must wake for it), or None."""
        if self.notifier is None or self.notifier.watchdog is None:
            return None
        now = time.monotonic() if now is None else now
        return max(0.0, self.last_ping + self.notifier.watchdog - now)

    def stopping(self) -> None:
        """STOPPING=1: the ordered shutdown has begun."""
        if self.notifier is not None:
            self.notifier.send("STOPPING=1", "STATUS=stopping components")

    def close(self) -> None:
        """Release the socket."""
        if self.notifier is not None:
            self.notifier.close()
