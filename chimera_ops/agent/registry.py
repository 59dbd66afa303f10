"""The runtime registry: where a CLI with no config finds the agents that run.

Each agent writes one small JSON file, `<runtime dir>/<instance id>.json`, at start and removes
it on a clean stop. It holds only where to find the agent (pid, socket, config, state_dir,
started_at), never anything from the config. The runtime dir is, in order:
`$CHIMERA_OPS_RUNTIME_DIR`; `$XDG_RUNTIME_DIR/chimera-ops` when that is set and writable;
`/run/chimera-ops` for root; else `/tmp/chimera-ops-<uid>`.

An entry whose agent died without cleaning up (kill -9) is stale: its pid is gone, or was reused
by a process created at another time than `started_at` (the agent's own process create time).
Readers ignore stale entries and remove them.

A dir other users could write into (a shared /tmp) could be used to plant an entry that points
the CLI at someone else's config, so a dir or entry that is not ours, is a symlink, or is open
to group or others is never trusted. Stdlib only: the CLI reads this on its fast path.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RUNTIME_DIR_ENV = "CHIMERA_OPS_RUNTIME_DIR"
CREATE_TIME_SLACK_S = 1.0  # /proc/stat's btime is whole seconds


@dataclass(frozen=True)
class AgentEntry:
    """One registered agent."""

    pid: int
    socket: str
    config: str | None
    state_dir: str
    started_at: float  # the agent process's create time (epoch seconds)

    def to_json(self) -> str:
        """The file's content."""
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> AgentEntry | None:
        """Parse an entry; None when it is not one (a partial or foreign file)."""
        try:
            data: Any = json.loads(text)
            entry = cls(
                pid=data["pid"],
                socket=data["socket"],
                config=data["config"],
                state_dir=data["state_dir"],
                started_at=float(data["started_at"]),
            )
        except (ValueError, TypeError, KeyError):
            return None
        typed = isinstance(entry.pid, int) and isinstance(entry.socket, str)
        typed = typed and isinstance(entry.state_dir, str)
        return entry if typed and isinstance(entry.config, str | None) else None


def runtime_dirs() -> list[Path]:
    """Every place an agent of this user may have registered, the one it would use first."""
    override = os.environ.get(RUNTIME_DIR_ENV)
    if override:
        return [Path(override)]
    dirs: list[Path] = []
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK | os.X_OK):
        dirs.append(Path(xdg) / "chimera-ops")
    if os.geteuid() == 0:
        dirs.append(Path("/run/chimera-ops"))
    # Always searched too: an agent started without XDG_RUNTIME_DIR (cron, a systemd service)
    # registers here while the operator's login shell has one.
    dirs.append(Path(f"/tmp/chimera-ops-{os.geteuid()}"))
    return dirs


def runtime_dir() -> Path:
    """Where an agent started now registers."""
    return runtime_dirs()[0]


def _trusted_dir(path: Path) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and not stat.S_IMODE(info.st_mode) & 0o077
    )


def process_create_time(pid: int) -> float | None:
    """When `pid` was created (epoch seconds, from /proc), or None if it is gone or a zombie.

    The same computation as psutil's, so an agent and a CLI agree on it to the jiffy.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
        with open("/proc/stat", "rb") as fh:
            btime_line = next(line for line in fh if line.startswith(b"btime "))
    except (OSError, StopIteration):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    if not fields or fields[0] == b"Z":
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return int(btime_line.split()[1]) + int(fields[19]) / ticks


def is_live(entry: AgentEntry) -> bool:
    """True when the entry's pid runs and is the same process that registered (no pid reuse)."""
    created = process_create_time(entry.pid)
    return created is not None and abs(created - entry.started_at) < CREATE_TIME_SLACK_S


def entry_name(instance: str) -> str:
    """The file name of an agent's entry."""
    return f"{instance}.json"


def register(instance: str, entry: AgentEntry) -> Path:
    """Write the entry atomically, 0600, in a 0700 runtime dir of ours; return its path.

    OSError when the dir cannot be made or is not safe to use (another owner, open modes).
    """
    directory = runtime_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _trusted_dir(directory):
        raise PermissionError(
            f"{directory} is not a private directory of uid {os.geteuid()} (owner or mode)"
        )
    final = directory / entry_name(instance)
    tmp = directory / f".{final.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(entry.to_json())
    os.replace(tmp, final)
    return final


def unregister(path: Path, pid: int) -> None:
    """Remove an entry written by `pid` (left alone if another agent has rewritten it since)."""
    try:
        entry = AgentEntry.from_json(path.read_text(encoding="utf-8"))
    except OSError:
        return
    if entry is None or entry.pid == pid:
        path.unlink(missing_ok=True)


def _read_entry(path: Path) -> AgentEntry | None:
    """The entry in `path` when it is a regular private file of ours."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, encoding="utf-8") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return None
        if stat.S_IMODE(info.st_mode) & 0o077:
            return None
        try:
            return AgentEntry.from_json(fh.read(64 * 1024))
        except (OSError, UnicodeDecodeError):
            return None


def live_agents(dirs: list[Path] | None = None) -> list[AgentEntry]:
    """The registered agents that still run, oldest first; stale entries are removed."""
    found: dict[int, AgentEntry] = {}
    for directory in runtime_dirs() if dirs is None else dirs:
        if not _trusted_dir(directory):
            continue
        for path in sorted(directory.glob("*.json")):
            entry = _read_entry(path)
            if entry is not None and is_live(entry):
                found.setdefault(entry.pid, entry)
            elif entry is not None:
                path.unlink(missing_ok=True)  # stale: its agent died without cleaning up
    return sorted(found.values(), key=lambda e: e.started_at)
