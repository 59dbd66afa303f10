"""The procedure lock: one safe restart, restore or maintenance fix at a time, stack-wide.

With Redis configured (`procedures.lock.redis_url[_env]`, else `backup.redis`): `SET key value NX
PX ttl`, the value naming its holder and carrying a fencing token (`INCR key:fence`), so a holder
that died releases it by TTL and a late holder can be told apart from the current one. Without
Redis: an `flock` on `<state_dir>/procedure.lock`, released by the kernel when its holder dies.
A lock that is held names its holder: host, pid, user, procedure, since, and how to end it.

Two rules on top (issue 20, item 3):
- **fail closed**: a lock that cannot be read (Redis down, a file we may not open) raises
  `LockUnreadable`; a caller refuses, it never takes "cannot read" for "nobody holds it";
- **a dead holder on this host is released at once**: `acquire` and `check_free` release a lock
  whose holder names this host and a pid that is gone (or reused by a younger process), instead
  of waiting for the TTL (a `kill -9`ed restore held a Redis lock for 15 minutes). The released
  holders are kept in `lock.cleared` so the caller records an event. The decision is the pure
  `holder_is_dead`.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chimera_ops.config import ChimeraConfig

# The procedures the agent runs as jobs (agent/jobs.py KINDS): ended by `procedure abort`.
AGENT_PROCEDURES = ("safe-restart", "emergency-stop", "staged-start")
# A process created this long after the holder's `since` is not the holder (pid reuse); the
# margin covers clock steps and the holder's own start-up before it took the lock.
_REUSE_MARGIN = 2.0

_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
# Extend our own lock; put it back if it vanished (a Redis restore's FLUSHDB takes every key).
_REFRESH = (
    "local v = redis.call('get', KEYS[1]) "
    "if v == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end "
    "if not v then return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0 end "
    "return 0"
)


@dataclass(frozen=True)
class LockHolder:
    """Who holds the lock."""

    procedure: str
    token: int
    host: str
    pid: int
    user: str
    since: float
    job: str | None = None

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        what = f"{self.procedure} {self.job}" if self.job else self.procedure
        return f"{what} (pid {self.pid} on {self.host}, user {self.user}, since {when})"

    def how_to_end(self) -> str:
        """What an operator can do about this holder."""
        if self.job and self.procedure in AGENT_PROCEDURES:
            return (
                f"wait for it (`chimera-ops procedure show {self.job}`) or end it at its next "
                f"step: `chimera-ops procedure abort {self.job}`"
            )
        if self.procedure.split()[0] in ("restore", "runbook", "maintenance"):
            return (
                f"wait for it to finish, or end it: `kill {self.pid}` on {self.host} (a dead "
                "holder on this host is released at once; elsewhere a Redis lock expires by TTL)"
            )
        return "a single action holds it for seconds: wait, then retry"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> LockHolder | None:
        try:
            return cls(**json.loads(raw or ""))
        except (ValueError, TypeError):
            return None


class LockHeld(Exception):
    """Another procedure holds the lock."""

    def __init__(self, holder: LockHolder | None, where: str) -> None:
        self.holder = holder
        self.where = where
        who = holder.describe() if holder else "an unknown holder"
        super().__init__(f"another procedure holds the lock ({where}): {who}")

    @property
    def hint(self) -> str:
        if self.holder is None:
            return f"find who wrote the lock ({self.where}) and wait for it"
        return self.holder.how_to_end()


class LockUnreadable(Exception):
    """The lock cannot be read: nobody can say it is free, so whoever asked must refuse."""

    def __init__(self, where: str, cause: object) -> None:
        self.where = where
        super().__init__(
            f"the procedure lock cannot be read ({where}: {cause}); refusing rather than "
            "assuming nobody holds it"
        )

    hint = "make the lock readable again (is Redis up? the state dir's permissions?), then retry"


def holder_is_dead(
    holder: LockHolder, host: str, create_time: float | None, margin: float = _REUSE_MARGIN
) -> bool:
    """Pure: is this holder a process of this host that is gone?

    `create_time` is the start time of the process now at the holder's pid on this host (None:
    no such process). A process younger than the lock is not its holder (the pid was reused).
    A holder on another host is never judged from here: its TTL frees it.
    """
    if holder.host != host:
        return False
    return create_time is None or create_time > holder.since + margin


def _pid_create_time(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.Error:
        return 0.0  # it exists but cannot be read (another user's): treat it as alive


def _holder(procedure: str, token: int, job: str | None) -> LockHolder:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = "unknown"
    return LockHolder(procedure, token, socket.gethostname(), os.getpid(), user, time.time(), job)


class ProcedureLock(ABC):
    """Acquire / refresh / release; `acquire` raises LockHeld naming the holder."""

    where: str
    cleared: list[LockHolder]  # dead holders this object released (the caller records them)

    def acquire(self, procedure: str, job: str | None = None) -> LockHolder:
        """Take the lock; a dead holder on this host is released first (LockHeld otherwise,
        LockUnreadable when the lock cannot be read)."""
        try:
            return self._guarded(lambda: self._acquire(procedure, job))
        except LockHeld as exc:
            if exc.holder is None or not self._clear_if_dead(exc.holder):
                raise
        return self._guarded(lambda: self._acquire(procedure, job))

    def check_free(self) -> None:
        """Raise LockHeld when someone (alive) holds it, LockUnreadable when it cannot be read;
        a dead holder on this host is released. For commands that respect the lock without
        holding it (a plain restart, a resume, `maintenance --fix`)."""
        holder = self._guarded(self.current)
        if holder is not None and not self._clear_if_dead(holder):
            raise LockHeld(holder, self.where)

    def _clear_if_dead(self, holder: LockHolder) -> bool:
        if not holder_is_dead(holder, socket.gethostname(), _pid_create_time(holder.pid)):
            return False
        self._guarded(lambda: self._release_stale(holder))
        self.cleared.append(holder)
        return True

    def _guarded(self, call: Any) -> Any:
        """Run a lock operation; anything but an answer (LockHeld) is LockUnreadable."""
        try:
            return call()
        except (LockHeld, LockUnreadable):
            raise
        except Exception as exc:  # noqa: BLE001 - Redis down, a file we may not open: fail closed
            raise LockUnreadable(self.where, exc) from exc

    @abstractmethod
    def _acquire(self, procedure: str, job: str | None) -> LockHolder: ...

    @abstractmethod
    def _release_stale(self, holder: LockHolder) -> None: ...

    @abstractmethod
    def release(self, holder: LockHolder) -> None: ...

    def refresh(self, holder: LockHolder) -> None:
        """Keep holding it (long procedures); a no-op where the lock cannot expire."""
        return None

    @abstractmethod
    def current(self) -> LockHolder | None:
        """The holder, None when free; a held lock whose value is not a holder is
        LockUnreadable (fail closed: something we do not understand holds it)."""


class RedisLock(ProcedureLock):
    """SET NX PX with a fencing token."""

    def __init__(self, url: str, key: str, ttl: float) -> None:
        import redis

        from chimera_ops.redact import redact_text

        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.key = key
        self.ttl_ms = int(ttl * 1000)
        self.where = f"redis {redact_text(url)} key {key}"
        self.cleared = []

    def _acquire(self, procedure: str, job: str | None) -> LockHolder:
        token = int(self._redis.incr(f"{self.key}:fence"))
        holder = _holder(procedure, token, job)
        if not self._redis.set(self.key, holder.to_json(), nx=True, px=self.ttl_ms):
            raise LockHeld(self.current(), self.where)
        return holder

    def release(self, holder: LockHolder) -> None:
        self._redis.eval(_RELEASE, 1, self.key, holder.to_json())

    def refresh(self, holder: LockHolder) -> None:
        self._redis.eval(_REFRESH, 1, self.key, holder.to_json(), str(self.ttl_ms))

    def _release_stale(self, holder: LockHolder) -> None:
        # Compare-and-delete on the value as read: a new holder that took it meanwhile stays.
        raw = self._redis.get(self.key)
        if raw is not None and LockHolder.from_json(raw) == holder:
            self._redis.eval(_RELEASE, 1, self.key, raw)

    def current(self) -> LockHolder | None:
        raw = self._redis.get(self.key)
        if raw is None:
            return None
        holder = LockHolder.from_json(raw)
        if holder is None:
            raise LockUnreadable(self.where, "its value is not a holder record")
        return holder


class FileLock(ProcedureLock):
    """flock on a file in the state dir; the kernel releases it when the holder dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = f"file {path}"
        self._fds: dict[int, int] = {}  # token -> fd held
        self.cleared = []

    def _acquire(self, procedure: str, job: str | None) -> LockHolder:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(self.current(), self.where) from None
        previous = LockHolder.from_json(os.pread(fd, 65536, 0))
        holder = _holder(procedure, (previous.token if previous else 0) + 1, job)
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.to_json().encode(), 0)
        self._fds[holder.token] = fd
        return holder

    def release(self, holder: LockHolder) -> None:
        fd = self._fds.pop(holder.token, None)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)  # the content stays: the next token follows it
            os.close(fd)

    def _release_stale(self, holder: LockHolder) -> None:
        return None  # the kernel released the flock of a dead holder already

    def current(self) -> LockHolder | None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: the content names the holder
                return LockHolder.from_json(os.pread(fd, 65536, 0))
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None  # free (the content is the last holder's)
        finally:
            os.close(fd)


def lock_for(cfg: ChimeraConfig, environ: dict[str, str] | Any = None) -> ProcedureLock:
    """The lock this config uses (see the module docstring)."""
    env = os.environ if environ is None else environ
    spec = cfg.procedures.lock
    url = spec.redis_url or (env.get(spec.redis_url_env) if spec.redis_url_env else None)
    if not url and cfg.backup is not None and cfg.backup.redis is not None:
        try:
            url = cfg.backup.redis.resolve_url(env)
        except ValueError:
            url = None
    if url:
        return RedisLock(url, spec.key, spec.ttl)
    return FileLock(cfg.agent.state_dir / "procedure.lock")


def record_cleared(lock: ProcedureLock, add_event: Any) -> list[str]:
    """Record each dead holder `lock` released as a `lock_released` event (`add_event` is a
    Store's); the lines said, for the caller's own output. Empties `lock.cleared`."""
    said = []
    for holder in lock.cleared:
        text = (
            f"released the procedure lock of {holder.describe()}: pid {holder.pid} is gone "
            f"on this host ({lock.where})"
        )
        add_event("lock_released", text, data={"holder": asdict(holder), "where": lock.where})
        said.append(text)
    lock.cleared.clear()
    return said
