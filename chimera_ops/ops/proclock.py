"""The procedure lock: one safe restart, restore or maintenance fix at a time, stack-wide.

With Redis configured (`procedures.lock.redis_url[_env]`, else `backup.redis`): `SET key value NX
PX ttl`, the value naming its holder and carrying a fencing token (`INCR key:fence`), so a holder
that died releases it by TTL and a late holder can be told apart from the current one. Without
Redis: an `flock` on `<state_dir>/procedure.lock`, released by the kernel when its holder dies.
A lock that is held names its holder: host, pid, user, procedure, since.
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
        who = holder.describe() if holder else "an unknown holder"
        super().__init__(f"another procedure holds the lock ({where}): {who}")


def _holder(procedure: str, token: int, job: str | None) -> LockHolder:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = "unknown"
    return LockHolder(procedure, token, socket.gethostname(), os.getpid(), user, time.time(), job)


class ProcedureLock(ABC):
    """Acquire / refresh / release; `acquire` raises LockHeld naming the holder."""

    where: str

    @abstractmethod
    def acquire(self, procedure: str, job: str | None = None) -> LockHolder: ...

    @abstractmethod
    def release(self, holder: LockHolder) -> None: ...

    def refresh(self, holder: LockHolder) -> None:
        """Keep holding it (long procedures); a no-op where the lock cannot expire."""
        return None

    @abstractmethod
    def current(self) -> LockHolder | None: ...


class RedisLock(ProcedureLock):
    """SET NX PX with a fencing token."""

    def __init__(self, url: str, key: str, ttl: float) -> None:
        import redis

        from chimera_ops.redact import redact_text

        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.key = key
        self.ttl_ms = int(ttl * 1000)
        self.where = f"redis {redact_text(url)} key {key}"

    def acquire(self, procedure: str, job: str | None = None) -> LockHolder:
        token = int(self._redis.incr(f"{self.key}:fence"))
        holder = _holder(procedure, token, job)
        if not self._redis.set(self.key, holder.to_json(), nx=True, px=self.ttl_ms):
            raise LockHeld(self.current(), self.where)
        return holder

    def release(self, holder: LockHolder) -> None:
        self._redis.eval(_RELEASE, 1, self.key, holder.to_json())

    def refresh(self, holder: LockHolder) -> None:
        self._redis.eval(_REFRESH, 1, self.key, holder.to_json(), str(self.ttl_ms))

    def current(self) -> LockHolder | None:
        return LockHolder.from_json(self._redis.get(self.key))


class FileLock(ProcedureLock):
    """flock on a file in the state dir; the kernel releases it when the holder dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = f"file {path}"
        self._fds: dict[int, int] = {}  # token -> fd held

    def acquire(self, procedure: str, job: str | None = None) -> LockHolder:
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
