"""Collectors: each gathers one part of the bundle in its own thread, within its own timeout.

A collector returns `Output` (member path -> text, plus data for `report.md`); the harness
records its status (`ok`, `error`, `timeout`), duration, error and, for a command, its argv and
exit code. A hung database or a stopped agent costs its collector, never the bundle: the
threads are daemons, abandoned at their deadline.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from chimera_ops.errors import describe_exception
from chimera_ops.redact import redact_text

TOP_PROCESSES = 25
DMESG_LINES = 200


@dataclass
class Output:
    """What a collector produced."""

    parts: dict[str, str] = field(default_factory=dict)
    data: Any = None
    command: list[str] | None = None
    exit_code: int | None = None
    error: str | None = None  # a partial failure: the parts are still kept


@dataclass(frozen=True)
class Collector:
    """A named job with a timeout."""

    name: str
    timeout: float
    run: Callable[[], Output]


@dataclass
class Result:
    """A collector's outcome, as the manifest lists it."""

    name: str
    status: str
    duration_s: float
    output: Output
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's entry."""
        return {
            "name": self.name,
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "error": self.error or self.output.error,
            "command": self.output.command,
            "exit_code": self.output.exit_code,
            "files": sorted(self.output.parts),
        }


def run_collectors(collectors: list[Collector]) -> list[Result]:
    """Run every collector at once; wait for each until its own deadline."""
    slots: dict[str, Result] = {}
    threads: list[tuple[Collector, threading.Thread, float]] = []

    def work(collector: Collector, started: float) -> None:
        try:
            out = collector.run()
            status = "error" if out.error and not out.parts else "ok"
            slots[collector.name] = Result(collector.name, status, time.monotonic() - started, out)
        except Exception as exc:  # noqa: BLE001 - one collector's failure is a manifest line
            slots[collector.name] = Result(
                collector.name, "error", time.monotonic() - started, Output(), _err(exc)
            )

    for collector in collectors:
        started = time.monotonic()
        thread = threading.Thread(
            target=work, args=(collector, started), name=f"collect-{collector.name}", daemon=True
        )
        thread.start()
        threads.append((collector, thread, started))
    results = []
    for collector, thread, started in threads:
        thread.join(max(0.0, started + collector.timeout - time.monotonic()))
        result = slots.get(collector.name)
        if result is None:
            result = Result(
                collector.name,
                "timeout",
                time.monotonic() - started,
                Output(),
                f"no answer within {collector.timeout:g}s (abandoned)",
            )
        results.append(result)
    return results


def _err(exc: BaseException) -> str:
    return redact_text(describe_exception(exc))


def to_json(data: Any) -> str:
    """Indented JSON text of a part."""
    return json.dumps(data, indent=2, default=str) + "\n"


# --------------------------------------------------------------------------- system


def _os_release() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as fh:
            fields = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
        return fields.get("PRETTY_NAME", "").strip('"') or platform.platform()
    except OSError:
        return platform.platform()


def environment_facts() -> dict[str, str]:
    """OS, kernel, Python, chimera-ops: the first lines of the report's environment."""
    from chimera_ops import __version__

    return {
        "os": _os_release(),
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": sys.version.split()[0],
        "chimera-ops": __version__,
        "host": platform.node(),
        "cpus": str(os.cpu_count()),
    }


def system_snapshot() -> Output:
    """CPU, memory, swap, load, disks, top processes, listening ports and their owners."""
    cpu = psutil.cpu_percent(interval=0.5, percpu=True)
    vm = psutil.virtual_memory()
    disks = []
    for part in psutil.disk_partitions(all=False):
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        disks.append({"mount": part.mountpoint, "fstype": part.fstype, **usage._asdict()})
    procs = []
    for proc in psutil.process_iter(["pid", "ppid", "name", "username", "memory_info", "status"]):
        info = proc.info
        rss = info["memory_info"].rss if info.get("memory_info") else 0
        procs.append({**{k: info.get(k) for k in ("pid", "ppid", "name", "username")}, "rss": rss})
    top = sorted(procs, key=lambda p: int(p["rss"] or 0), reverse=True)[:TOP_PROCESSES]
    for record in top:
        try:
            proc = psutil.Process(record["pid"])
            record["cmdline"] = redact_text(" ".join(proc.cmdline()))[:500]
            record["cpu_times"] = proc.cpu_times()._asdict()
        except psutil.Error:
            record["cmdline"] = None
    data = {
        "facts": environment_facts(),
        "boot_time": psutil.boot_time(),
        "load_average": os.getloadavg(),
        "cpu_percent_per_cpu": cpu,
        "memory": vm._asdict(),
        "swap": psutil.swap_memory()._asdict(),
        "disks": disks,
        "processes_total": len(procs),
        "top_processes_by_rss": top,
        "listening": listening_ports(),
    }
    return Output({"system/snapshot.json": to_json(data)}, data)


def listening_ports() -> list[dict[str, Any]]:
    """Every listening TCP socket and UDP socket with its owner (pid, name) where readable."""
    found = []
    try:
        conns = psutil.net_connections("inet")
    except psutil.Error as exc:
        return [{"error": _err(exc)}]
    for conn in conns:
        if conn.status not in (psutil.CONN_LISTEN, psutil.CONN_NONE) or not conn.laddr:
            continue
        owner = None
        if conn.pid:
            try:
                owner = psutil.Process(conn.pid).name()
            except psutil.Error:
                owner = None
        found.append(
            {
                "proto": "tcp" if conn.type == 1 else "udp",
                "address": f"{conn.laddr.ip}:{conn.laddr.port}",
                "pid": conn.pid,
                "owner": owner,
            }
        )
    return sorted(found, key=lambda c: (c["proto"], c["address"]))


def process_trees(pids: dict[str, list[int]]) -> Output:
    """Each component's process tree (incidents' records) with its open files and sockets."""
    from chimera_ops.incidents import collect_process_trees

    parts: dict[str, str] = {}
    for name, roots in pids.items():
        tree = collect_process_trees(roots)
        for record in tree:
            record["open_files"] = _open_files(record.get("pid"))
        parts[f"processes/{name}.json"] = to_json(tree)
    return Output(parts, {name: len(roots) for name, roots in pids.items()})


def _open_files(pid: Any, limit: int = 200) -> dict[str, Any] | None:
    if not isinstance(pid, int):
        return None
    try:
        proc = psutil.Process(pid)
        files = [f.path for f in proc.open_files()]
        conns = [
            f"{c.laddr.ip}:{c.laddr.port}->{c.raddr.ip}:{c.raddr.port} {c.status}"
            if c.raddr
            else f"{c.laddr.ip}:{c.laddr.port} {c.status}"
            for c in proc.net_connections("inet")
            if c.laddr
        ]
    except psutil.Error as exc:
        return {"error": _err(exc)}
    return {"files": files[:limit], "sockets": conns[:limit], "files_total": len(files)}


def command(argv: list[str], path: str, timeout: float, tail: int | None = None) -> Output:
    """A command's output (stderr after stdout) and its exit code."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        return Output(command=argv, error=_err(exc))
    text = done.stdout.decode(errors="replace")
    if tail is not None:
        text = "\n".join(text.splitlines()[-tail:]) + "\n"
    err = done.stderr.decode(errors="replace").strip()
    body = text + (f"\n[stderr]\n{err}\n" if err else "")
    return Output(
        {path: body},
        command=argv,
        exit_code=done.returncode,
        error=f"exit {done.returncode}: {err[:300]}" if done.returncode else None,
    )


def dmesg() -> Output:
    """The kernel's last lines (OOM kills, segfaults); often not readable without root."""
    return command(["dmesg", "--time-format", "iso"], "system/dmesg.txt", 10.0, DMESG_LINES)
