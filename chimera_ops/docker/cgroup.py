"""A container's memory cgroup, read from /sys/fs/cgroup directly (not the slow stats API).

cgroup v2 (unified): `memory.current`, `memory.max`, `memory.stat` (inactive_file) and
`memory.events` (`oom_kill`). cgroup v1: `memory.usage_in_bytes`, `memory.limit_in_bytes`,
`memory.stat` (total_inactive_file) and `memory.oom_control` (`oom_kill`, kernel >= 4.13).
The cgroup is found from the container's main pid (/proc/PID/cgroup), so it works for the
cgroupfs and the systemd drivers alike. Blocking file reads: call through `asyncio.to_thread`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_NO_LIMIT = 1 << 60  # v1 reports "no limit" as a huge page-rounded number


@dataclass(frozen=True)
class CgroupMemory:
    """One reading of a container's memory cgroup."""

    usage: int  # working set: usage minus inactive file cache (what kubelet and docker stats show)
    limit: int | None  # None: unlimited
    oom_kills: int | None  # the cgroup's oom_kill counter (None: the kernel does not say)
    version: int  # 1 or 2
    path: str


def parse_proc_cgroup(text: str) -> tuple[int, str] | None:
    """(version, path) of the memory cgroup from /proc/PID/cgroup text: the v1 `memory`
    controller line when there is one (hybrid hosts list both), else the v2 `0::` line."""
    v2: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if "memory" in controllers.split(","):
            return 1, path
        if parts[0] == "0" and controllers == "":
            v2 = path
    return (2, v2) if v2 is not None else None


def parse_flat_keyed(text: str) -> dict[str, int]:
    """`key value` lines (memory.stat, memory.events, memory.oom_control) -> dict."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def _read(path: Path) -> str:
    return path.read_text(encoding="ascii", errors="replace")


def cgroup_dir(pid: int, root: Path = CGROUP_ROOT) -> tuple[int, Path] | None:
    """(version, directory) of `pid`'s memory cgroup, or None when it cannot be found."""
    try:
        found = parse_proc_cgroup(_read(Path(f"/proc/{pid}/cgroup")))
    except OSError:
        return None
    if found is None:
        return None
    version, rel = found
    base = root / "memory" if version == 1 else root
    if version == 2 and (root / "unified").is_dir() and not (root / "cgroup.controllers").exists():
        base = root / "unified"  # hybrid host: v2 mounted at /sys/fs/cgroup/unified
    directory = base / rel.lstrip("/")
    return (version, directory) if directory.is_dir() else None


def read_memory(version: int, directory: Path) -> CgroupMemory | None:
    """Read one sample from a memory cgroup directory; None when it is gone."""
    try:
        if version == 1:
            usage = int(_read(directory / "memory.usage_in_bytes"))
            limit: int | None = int(_read(directory / "memory.limit_in_bytes"))
            stat = parse_flat_keyed(_read(directory / "memory.stat"))
            inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
            oom = parse_flat_keyed(_read(directory / "memory.oom_control")).get("oom_kill")
        else:
            usage = int(_read(directory / "memory.current"))
            raw = _read(directory / "memory.max").strip()
            limit = None if raw == "max" else int(raw)
            inactive = parse_flat_keyed(_read(directory / "memory.stat")).get("inactive_file", 0)
            oom = parse_flat_keyed(_read(directory / "memory.events")).get("oom_kill")
    except (OSError, ValueError):
        return None
    if limit is not None and limit >= _NO_LIMIT:
        limit = None
    return CgroupMemory(max(0, usage - inactive), limit, oom, version, str(directory))


def container_memory(pid: int, root: Path = CGROUP_ROOT) -> CgroupMemory | None:
    """The memory cgroup reading of the container whose main process is `pid`."""
    found = cgroup_dir(pid, root)
    return read_memory(*found) if found else None
