"""Incident capture: what a frozen or runaway component looked like just before it was killed.

`capture_incident` writes one directory per incident, `<UTC YYYYmmddTHHMMSSZ>-<component>/`:

- `incident.json`   reason, component, time, pids, a summary of the tree (written last)
- `probes.json`     the recent probe history the agent handed over
- `logs.txt`        the last N lines of each log file, read backwards from the end
- `processes.json`  the process tree of each pid (recursive children) with rss, cpu, fds...
- `stack.txt`       `py-spy dump` of each Python process (or why there is none)
- extra parts a runtime hands over (a container: `docker_inspect.json`, `docker_top.json`);
  a container's `logs.txt` is its `docker logs` tail, with Docker's timestamps

The directory is written under a hidden temporary name and renamed, so a listed incident is
complete. Every part is bounded in size and redacted (cmdlines, logs, reasons, probe data);
environments are never dumped. Capture never fails because one part failed: the part records
the reason instead. Only a failure to write the directory itself raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from chimera_ops.errors import describe_exception
from chimera_ops.filemodes import DIR_MODE, make_private_dir, write_private_text
from chimera_ops.redact import redact_text

MAX_LOG_BYTES_PER_FILE = 256 * 1024
MAX_LOG_FILES = 20
MAX_PROBE_ENTRIES = 500
MAX_PROBES_BYTES = 1024 * 1024
MAX_PROCESSES = 200
MAX_CMDLINE_CHARS = 2000
MAX_STACK_PIDS = 8
MAX_STACK_BYTES_PER_PID = 256 * 1024
PYSPY_TIMEOUT_S = 10.0
CPU_SAMPLE_S = 0.2  # psutil needs two readings for a cpu%; short, because a kill is waiting

_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[A-Za-z0-9_.\-]+$")


class IncidentNotFound(LookupError):
    """Raised by `load_incident` for an unknown id; the message lists recent ids."""


@dataclass(frozen=True)
class IncidentSummary:
    """One line of `list_incidents`."""

    id: str
    component: str
    reason: str
    at: str  # ISO-8601 UTC
    pids: list[int]
    path: Path

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the API and CLI."""
        return {
            "id": self.id,
            "component": self.component,
            "reason": self.reason,
            "at": self.at,
            "pids": self.pids,
            "path": str(self.path),
        }


# --------------------------------------------------------------------------- public API


def capture_incident(
    base_dir: Path,
    component: str,
    reason: str,
    *,
    pids: list[int],
    probe_history: list[dict[str, Any]],
    log_files: list[Path],
    tail_lines: int = 200,
    stack_dump: bool = True,
    log_text: str | None = None,
    extra_parts: dict[str, str] | None = None,
) -> Path:
    """Capture an incident into a new directory under `base_dir` and return its path.

    `log_text` replaces the tail of `log_files` (logs that are not files: `docker logs`);
    `extra_parts` are written as they are (name -> text), each capped and redacted.
    """
    started = time.monotonic()
    now = datetime.now(UTC)
    # Private (0700 folders, 0600 files): cmdlines, logs and probe data may hold secrets
    # that redaction did not recognise.
    make_private_dir(base_dir)
    final = _unique_dir(base_dir, f"{now:%Y%m%dT%H%M%SZ}-{_safe_name(component)}")
    tmp = base_dir / f".{final.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=DIR_MODE)
    errors: dict[str, str] = {}

    processes = _guard(errors, "processes", lambda: collect_process_trees(pids), [])
    _write_json(tmp / "processes.json", processes)
    # py-spy is the slow part; run it in parallel with reading logs.
    with ThreadPoolExecutor(max_workers=2) as pool:
        stack_future = pool.submit(_stack_text, processes, stack_dump)
        if log_text is not None:
            logs = redact_text(log_text[-MAX_LOG_BYTES_PER_FILE:])
        else:
            logs = _guard(errors, "logs", lambda: tail_logs(log_files, tail_lines), "")
        stack = _guard(errors, "stack", stack_future.result, "")
    write_private_text(tmp / "logs.txt", logs)
    write_private_text(tmp / "stack.txt", stack)
    for part, text in (extra_parts or {}).items():
        write_private_text(tmp / _safe_name(part), redact_text(text[:MAX_LOG_BYTES_PER_FILE]))
    probes = _guard(errors, "probes", lambda: _bounded_probes(probe_history), [])
    _write_json(tmp / "probes.json", probes)

    roots = [p for p in processes if p.get("root")]
    incident = {
        "id": final.name,
        "component": component,
        "reason": redact_text(reason)[:4000],
        "at": now.isoformat(timespec="seconds"),
        "pids": pids,
        "summary": {
            "processes": len(processes),
            "alive_roots": [p["pid"] for p in roots if p.get("status") != "gone"],
            "total_rss_bytes": sum(p.get("rss") or 0 for p in processes),
            "statuses": sorted({str(p.get("status")) for p in roots}),
            "log_files": [str(p) for p in log_files[:MAX_LOG_FILES]],
            "probe_entries": len(probes),
            "stack_dump": stack_dump,
            "parts": sorted(extra_parts or {}),
        },
        "errors": errors,
        "capture_seconds": round(time.monotonic() - started, 3),
    }
    _write_json(tmp / "incident.json", incident)
    tmp.rename(final)
    return final


async def async_capture_incident(
    base_dir: Path,
    component: str,
    reason: str,
    *,
    pids: list[int],
    probe_history: list[dict[str, Any]],
    log_files: list[Path],
    tail_lines: int = 200,
    stack_dump: bool = True,
    log_text: str | None = None,
    extra_parts: dict[str, str] | None = None,
) -> Path:
    """`capture_incident` in a worker thread, so the agent loop keeps ticking."""
    return await asyncio.to_thread(
        capture_incident,
        base_dir,
        component,
        reason,
        pids=pids,
        probe_history=probe_history,
        log_files=log_files,
        tail_lines=tail_lines,
        stack_dump=stack_dump,
        log_text=log_text,
        extra_parts=extra_parts,
    )


def list_incidents(base_dir: Path, limit: int | None = None) -> list[IncidentSummary]:
    """Captured incidents, newest first. Unreadable entries are listed with what is known."""
    if not base_dir.is_dir():
        return []
    entries = sorted(
        (p for p in base_dir.iterdir() if p.is_dir() and _ID_RE.match(p.name)),
        key=lambda p: p.name,
        reverse=True,
    )
    result = []
    for path in entries[:limit] if limit else entries:
        try:
            data = json.loads((path / "incident.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        result.append(
            IncidentSummary(
                id=path.name,
                component=str(data.get("component", path.name.split("-", 1)[-1])),
                reason=str(data.get("reason", "<incident.json unreadable>")),
                at=str(data.get("at", "")),
                pids=list(data.get("pids", [])),
                path=path,
            )
        )
    return result


def load_incident(base_dir: Path, incident_id: str) -> dict[str, Any]:
    """Everything captured for one incident: incident, probes, processes, logs, stack."""
    path = base_dir / incident_id
    if not _ID_RE.match(incident_id) or not path.is_dir():
        recent = [s.id for s in list_incidents(base_dir, limit=10)]
        hint = ", ".join(recent) if recent else "none captured yet"
        raise IncidentNotFound(f"no incident {incident_id!r} in {base_dir} (recent: {hint})")
    result: dict[str, Any] = {"id": incident_id, "path": str(path)}
    for name in ("incident", "probes", "processes"):
        try:
            result[name] = json.loads((path / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            result[name] = {"error": f"{name}.json unreadable: {exc}"}
    for name in ("logs", "stack"):
        try:
            result[name] = (path / f"{name}.txt").read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            result[name] = f"{name}.txt unreadable: {exc}"
    return result


# --------------------------------------------------------------------------- parts


def collect_process_trees(pids: list[int]) -> list[dict[str, Any]]:
    """Each pid and its recursive children, one record per process, roots flagged."""
    procs: dict[int, psutil.Process] = {}
    roots: set[int] = set()
    missing: list[dict[str, Any]] = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            children = proc.children(recursive=True)
        except psutil.Error as exc:
            missing.append({"pid": pid, "root": True, "status": "gone", "error": _err(exc)})
            continue
        roots.add(pid)
        for p in [proc, *children]:
            procs.setdefault(p.pid, p)
    selected = list(procs.values())[:MAX_PROCESSES]
    for p in selected:  # prime cpu_percent: the first reading is always 0.0
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    if selected:
        time.sleep(CPU_SAMPLE_S)
    records = [_process_record(p, p.pid in roots) for p in selected]
    if len(procs) > MAX_PROCESSES:
        records.append({"truncated": len(procs) - MAX_PROCESSES})
    return missing + records


def _process_record(proc: psutil.Process, root: bool) -> dict[str, Any]:
    record: dict[str, Any] = {"pid": proc.pid, "root": root}
    try:
        with proc.oneshot():
            record.update(
                ppid=proc.ppid(),
                name=proc.name(),
                status=proc.status(),
                create_time=proc.create_time(),
                cpu_percent=proc.cpu_percent(None),
                cpu_times=proc.cpu_times()._asdict(),
                rss=proc.memory_info().rss,
                threads=proc.num_threads(),
            )
            record["cmdline"] = redact_text(" ".join(proc.cmdline()))[:MAX_CMDLINE_CHARS]
            try:
                record["exe"] = proc.exe()
            except psutil.Error:
                record["exe"] = None
            try:
                record["open_fds"] = proc.num_fds()
            except psutil.Error as exc:
                record["open_fds"] = None
                record["open_fds_error"] = _err(exc)
    except psutil.NoSuchProcess:
        record["status"] = "gone"
    except psutil.Error as exc:
        record["error"] = _err(exc)
    return record


def tail_logs(log_files: list[Path], tail_lines: int) -> str:
    """The last `tail_lines` lines of each file (bounded in bytes), redacted, with headers."""
    parts = []
    for path in log_files[:MAX_LOG_FILES]:
        try:
            text = tail_file(path, tail_lines, MAX_LOG_BYTES_PER_FILE)
            parts.append(f"===== {path} (last {tail_lines} lines) =====\n{redact_text(text)}")
        except OSError as exc:
            parts.append(f"===== {path} =====\n<unreadable: {exc}>\n")
    if len(log_files) > MAX_LOG_FILES:
        parts.append(f"===== {len(log_files) - MAX_LOG_FILES} more log files not read =====\n")
    return "\n".join(parts)


def tail_file(path: Path, lines: int, max_bytes: int) -> str:
    """Read backwards in blocks until `lines` newlines are seen or `max_bytes` read."""
    block = 64 * 1024
    with path.open("rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        pos, chunks, newlines = end, [], 0
        while pos > 0 and newlines <= lines and end - pos < max_bytes:
            step = min(block, pos, max_bytes - (end - pos))
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    text = data.decode("utf-8", errors="replace")
    kept = text.splitlines(keepends=True)[-lines:] if lines > 0 else []
    prefix = "<earlier content truncated>\n" if pos > 0 and len(kept) < lines else ""
    out = prefix + "".join(kept)
    return out if out.endswith("\n") or not out else out + "\n"


def find_py_spy() -> str | None:
    """py-spy next to the running interpreter (the venv), else on PATH."""
    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("py-spy")


def py_spy_dump(pid: int, stopped: bool, timeout: float = PYSPY_TIMEOUT_S) -> str:
    """`py-spy dump` of one process, or a line saying why not. Never raises.

    A blocking dump (py-spy pauses the process for a consistent stack) fails on a
    SIGSTOPped process ("Failed to suspend process"); --nonblocking reads memory without
    pausing and works there, at the cost of a possibly torn stack. So: stopped -> nonblocking
    first; otherwise blocking, then nonblocking as a fallback.
    """
    exe = find_py_spy()
    if exe is None:
        return "py-spy not found (next to the interpreter or on PATH); no stack dump\n"
    modes = [["--nonblocking"], []] if stopped else [[], ["--nonblocking"]]
    attempts = []
    deadline = time.monotonic() + timeout
    for extra in modes:
        remaining = deadline - time.monotonic()
        if remaining <= 0.5:
            break
        argv = [exe, "dump", "--pid", str(pid), *extra]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                timeout=remaining,
                env={**os.environ, "RUST_BACKTRACE": "0"},  # keep py-spy errors short
            )
        except subprocess.TimeoutExpired:
            attempts.append(f"{' '.join(argv[1:])}: timed out")
            continue
        except OSError as exc:
            attempts.append(f"{' '.join(argv[1:])}: {exc}")
            break
        out = done.stdout.decode("utf-8", errors="replace")
        if done.returncode == 0 and "Thread" in out:
            note = "(nonblocking: the process was not paused)\n" if extra else ""
            return note + out
        err = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
        attempts.append(f"{' '.join(argv[1:])}: exit {done.returncode}: {' | '.join(err[:4])}")
    return "py-spy dump failed:\n" + "\n".join(f"  {a}" for a in attempts) + "\n"


def _stack_text(processes: list[dict[str, Any]], enabled: bool) -> str:
    if not enabled:
        return "stack dump disabled for this capture\n"
    python = [p for p in processes if _is_python(p) and p.get("status") not in ("gone", "zombie")]
    if not python:
        return "no Python process in the tree; no stack dump\n"
    chosen = python[:MAX_STACK_PIDS]
    with ThreadPoolExecutor(max_workers=min(4, len(chosen))) as pool:
        dumps = list(
            pool.map(lambda p: py_spy_dump(p["pid"], p.get("status") == "stopped"), chosen)
        )
    parts = []
    for proc, dump in zip(chosen, dumps, strict=True):
        body = redact_text(dump)[:MAX_STACK_BYTES_PER_PID]
        parts.append(f"===== pid {proc['pid']} ({proc.get('name')}, {proc.get('status')}) =====")
        parts.append(body)
    if len(python) > MAX_STACK_PIDS:
        parts.append(f"===== {len(python) - MAX_STACK_PIDS} more Python processes not dumped")
    return "\n".join(parts)


def _is_python(record: dict[str, Any]) -> bool:
    names = [str(record.get("name") or ""), os.path.basename(str(record.get("exe") or ""))]
    return any(n.startswith("python") for n in names)


_SECRET_KEY_RE = re.compile(
    r"pass|secret|token|api[_-]?key|private[_-]?key|authorization|credential", re.IGNORECASE
)


def _redact_obj(value: Any, depth: int = 0) -> Any:
    """Probe reasons can quote DSNs or tokens; values under secret-looking keys go entirely."""
    if depth > 10:
        return "<nested too deep>"
    if isinstance(value, dict):
        return {
            str(k): "***" if _SECRET_KEY_RE.search(str(k)) else _redact_obj(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_obj(v, depth + 1) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


def _bounded_probes(history: list[dict[str, Any]]) -> list[Any]:
    redacted = _redact_obj(list(history[-MAX_PROBE_ENTRIES:]))
    while redacted and len(json.dumps(redacted, default=str)) > MAX_PROBES_BYTES:
        redacted = redacted[len(redacted) // 2 :]  # keep the newest half
    return list(redacted)


def _guard(errors: dict[str, str], part: str, fn: Any, fallback: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one broken part must not lose the incident
        errors[part] = redact_text(_err(exc))
        return fallback


def _write_json(path: Path, data: Any) -> None:
    write_private_text(path, json.dumps(data, indent=2, default=str) + "\n")


def _unique_dir(base_dir: Path, name: str) -> Path:
    candidate, n = base_dir / name, 2
    while candidate.exists():
        candidate, n = base_dir / f"{name}-{n}", n + 1
    return candidate


def _safe_name(component: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", component).strip("._") or "component"


def _err(exc: BaseException) -> str:
    return describe_exception(exc)
