"""`collect-logs`, the procedure: check, plan, collect, stream, report, manifest.

1. `check_out_dir` before anything is collected (an unwritable `--out` is said at once);
2. the known secret values -> one `Redactor` for every byte of the bundle;
3. status: from the agent (short timeout), else `direct_status` (the store, live pids) and the
   manifest says there was no agent;
4. every other collector in its own thread with its own timeout, while the main thread streams
   the log files (and container logs) through redaction into the archive;
5. the collectors' parts, the config and environments, `report.md`, and `manifest.json` last.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chimera_ops.ops.bundle import collectors as col
from chimera_ops.ops.bundle import services
from chimera_ops.ops.bundle.logparts import LogPart, after_read, plan_docker_log, plan_process_logs
from chimera_ops.ops.bundle.report import ReportInput, build_report
from chimera_ops.ops.bundle.secrets import env_text, known_values, process_environ
from chimera_ops.ops.bundle.sources import iso_ms
from chimera_ops.ops.bundle.store_parts import incidents, store_records
from chimera_ops.ops.bundle.writer import BundleWriter
from chimera_ops.redact import Redactor

if TYPE_CHECKING:
    from chimera_ops.config import ChimeraConfig

Progress = Callable[[str, int, int], None]
DEFAULT_MAX_FILE = 50 * 1024 * 1024
DEFAULT_SINCE_S = 24 * 3600.0


class BundleError(Exception):
    """The bundle cannot be made at all (said before anything is collected)."""


@dataclass
class BundleRequest:
    """What `collect-logs` was asked for."""

    config: ChimeraConfig
    out_dir: Path
    config_path: Path | None = None
    since_s: float | None = DEFAULT_SINCE_S
    components: list[str] = field(default_factory=list)
    max_file_size: int = DEFAULT_MAX_FILE
    direct_status: Callable[[], dict[str, Any]] | None = None
    agent_timeout: float = 5.0
    collector_timeout: float = 20.0
    host: str = field(default_factory=socket.gethostname)
    extra_environs: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class BundleResult:
    """The archive and its manifest."""

    path: Path
    manifest: dict[str, Any]


def check_out_dir(path: Path) -> None:
    """Raise BundleError unless a file can be created in `path` (created if missing)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(f"--out {path}: cannot create it: {exc.strerror}") from exc
    if not path.is_dir():
        raise BundleError(f"--out {path}: not a directory")
    probe = path / f".chimera-bundle-write-test-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        raise BundleError(f"--out {path}: not writable: {exc.strerror}") from exc


def bundle_name(host: str, now: float) -> str:
    """`chimera-bundle-<host>-<UTC>`."""
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in host) or "host"
    return f"chimera-bundle-{safe}-{datetime.fromtimestamp(now, UTC):%Y%m%dT%H%M%SZ}"


def fetch_status(req: BundleRequest) -> col.Output:
    """The agent's status; without an answer, the direct one, and why."""
    from chimera_ops.client import AgentClient

    agent_error = None
    try:
        doc = AgentClient(req.config.agent.state_dir, timeout=req.agent_timeout).status()
    except Exception as exc:  # noqa: BLE001 - unavailable, stopped, or answering garbage
        agent_error = col._err(exc)
        if req.direct_status is None:
            raise
        doc = req.direct_status()
    data = {"doc": doc, "agent_error": agent_error}
    return col.Output({"agent/status.json": col.to_json(doc)}, data)


def _pids(doc: dict[str, Any], names: list[str]) -> dict[str, list[int]]:
    return {
        c["name"]: [c["pid"]]
        for c in doc.get("components", [])
        if c.get("pid") and c["name"] in names
    }


def _service_collectors(cfg: ChimeraConfig, timeout: float) -> list[col.Collector]:
    from chimera_ops.ops.doctor.from_config import plan_from_config

    plan = plan_from_config(cfg, {})
    dsns = set(plan.postgres_dsns)
    if cfg.backup is not None and cfg.backup.postgres is not None and cfg.backup.postgres.dsn:
        dsns.add(cfg.backup.postgres.dsn)
    found = [
        col.Collector(f"postgres:{services._slug(d)}", timeout, partial(services.postgres, d))
        for d in sorted(dsns)
    ]
    found += [
        col.Collector(f"redis:{services._slug(u)}", timeout, partial(services.redis_info, u))
        for u in sorted(plan.redis_urls)
    ]
    env = plan.env or {}
    for comp in cfg.components.values():
        for probe in (comp.startup, comp.readiness, comp.liveness):
            spec = probe.rabbitmq if probe is not None else None
            if spec is not None and spec.management_url:
                password = env.get(spec.password_env or "", "guest")
                job = partial(
                    services.rabbitmq, spec.management_url, spec.user, password, spec.vhost
                )
                found.append(
                    col.Collector(f"rabbitmq:{services._slug(spec.management_url)}", timeout, job)
                )
    return found


def _docker_host(cfg: ChimeraConfig) -> str:
    from chimera_ops.docker.engine import resolve_host

    return resolve_host(cfg.agent.docker.host)


def collect_bundle(req: BundleRequest, progress: Progress | None = None) -> BundleResult:
    """Make the bundle; raises BundleError only before anything is collected."""
    check_out_dir(req.out_dir)
    return BundleRun(req, progress).run()


class BundleRun:
    """One bundle being made (the steps of the module docs, in order)."""

    def __init__(self, req: BundleRequest, progress: Progress | None) -> None:
        self.req = req
        self.cfg = req.config
        self.note: Progress = progress or (lambda phase, done, total: None)
        self.started, self.now = time.monotonic(), time.time()
        self.names = req.components or self.cfg.start_order()
        self.since_ts = self.now - req.since_s if req.since_s else None
        self.since_iso = iso_ms(self.since_ts) if self.since_ts else None
        self.name = bundle_name(req.host, self.now)
        self.results: list[col.Result] = []
        self.logs: list[LogPart] = []
        self.doc: dict[str, Any] = {}
        self.agent: dict[str, Any] = {}
        self.tracebacks: list[tuple[str, str]] = []
        self.problems: list[str] = []
        self.pids: dict[str, list[int]] = {}
        self._collected: list[col.Result] = []

    def run(self) -> BundleResult:
        """Every step; the partial archive is removed when one raises."""
        status = self._status()
        environs = self._environs()
        redactor = Redactor(known_values(self.cfg.model_dump(mode="json"), environs.values()))
        final = self.req.out_dir / f"{self.name}.tar.gz"
        writer = BundleWriter(final, self.name, redactor)
        try:
            background = self._start_collectors()
            self._stream_logs(writer)
            background.join()
            self.results = [status, *self._collected]
            self._add_parts(writer, environs)
            manifest: dict[str, Any] = {}

            def last() -> tuple[str, str]:
                manifest.update(self._manifest(writer, redactor))
                return "manifest.json", col.to_json(manifest)

            path = writer.close(last)
        except BaseException:
            writer.abort()
            raise
        return BundleResult(path, manifest)

    # ----------------------------------------------------------------- steps
    def _status(self) -> col.Result:
        self.note("status", 0, 1)
        timeout = self.req.agent_timeout + self.req.collector_timeout
        result = col.run_collectors(
            [col.Collector("status", timeout, lambda: fetch_status(self.req))]
        )[0]
        data = result.output.data or {}
        self.doc = data.get("doc") or {}
        agent_error = data.get("agent_error") or result.error
        agent = self.doc.get("agent", {})
        running = bool(agent.get("running")) and agent_error is None
        self.agent = {
            "running": running,
            "pid": agent.get("pid") if running else None,
            "status_source": "agent" if running else "direct (store, live pids, TCP checks)",
            "error": agent_error,
        }
        return result

    def _environs(self) -> dict[str, dict[str, str]]:
        environs: dict[str, dict[str, str]] = {
            "collect-logs": dict(os.environ),
            **self.req.extra_environs,
        }
        agent_pid = self.doc.get("agent", {}).get("pid")
        if agent_pid and (env := process_environ(int(agent_pid))) is not None:
            environs["agent"] = env
        self.pids = _pids(self.doc, self.names)
        for name in self.names:
            live = process_environ(self.pids[name][0]) if name in self.pids else None
            environs[f"component-{name}"] = (
                live if live is not None else dict(self.cfg.components[name].env)
            )
        return environs

    def _start_collectors(self) -> threading.Thread:
        timeout = self.req.collector_timeout
        state_dir = self.cfg.agent.state_dir
        only = self.req.components or None
        jobs = [
            col.Collector("store", timeout, lambda: store_records(state_dir, self.since_ts, only)),
            col.Collector("incidents", timeout, lambda: incidents(state_dir, self.since_ts, only)),
            col.Collector("system", timeout, col.system_snapshot),
            col.Collector("process_trees", timeout, lambda: col.process_trees(self.pids)),
            col.Collector("dmesg", timeout, col.dmesg),
            *_service_collectors(self.cfg, timeout),
        ]
        containers = {
            n: self.cfg.components[n]
            for n in self.names
            if self.cfg.components[n].runtime == "docker"
        }
        if containers:
            host = _docker_host(self.cfg)
            jobs.append(
                col.Collector("docker", timeout, partial(services.docker_engine, host, containers))
            )
        thread = threading.Thread(
            target=lambda: self._collected.extend(col.run_collectors(jobs)), daemon=True
        )
        thread.start()
        return thread

    def _stream_logs(self, writer: BundleWriter) -> None:
        from chimera_ops.agent.paths import log_dir

        logs_at = log_dir(self.cfg.agent.state_dir)
        cap = self.req.max_file_size
        for name in self.names:
            comp = self.cfg.components[name]
            if comp.runtime == "process":
                self.logs += plan_process_logs(name, logs_at, self.since_iso, cap)
            elif comp.runtime == "docker":
                self.logs.append(
                    plan_docker_log(name, comp, _docker_host(self.cfg), self.since_ts, cap)
                )
        total = sum(p.slice.kept for p in self.logs if p.handle is not None and p.slice)
        done = 0

        def count(n: int) -> None:
            nonlocal done
            done += n
            self.note("logs", done, total)

        self.note("logs", 0, total)
        for part in self.logs:
            if part.handle is None:
                continue
            try:
                member = writer.add_stream(part.member, part.chunks(), part.source, count)
            except OSError as exc:
                part.status, part.note = "error", col._err(exc)
                part.close()
                continue
            after_read(part)
            self.tracebacks += [(member.path, t) for t in member.tracebacks]

    def _add_parts(self, writer: BundleWriter, environs: dict[str, dict[str, str]]) -> None:
        self.note("parts", 0, 1)
        for result in self.results:
            for path, text in sorted(result.output.parts.items()):
                member = writer.add_text(path, text, f"collector {result.name}")
                if not path.startswith("incidents/"):
                    self.tracebacks += [(path, t) for t in member.tracebacks]
        if self.req.config_path is not None:
            try:
                raw = self.req.config_path.read_bytes()
                writer.add_text(
                    f"config/{self.req.config_path.name}", raw, str(self.req.config_path)
                )
            except OSError as exc:
                self.problems.append(f"config file {self.req.config_path}: {exc.strerror}")
        writer.add_text(
            "config/effective.json",
            col.to_json(self.cfg.model_dump(mode="json")),
            "validated config",
        )
        for label, env in environs.items():
            writer.add_text(f"env/{label}.env", env_text(env), f"environment of {label}")
        writer.add_text("report.md", build_report(self._report_input()), "report")

    def _data(self, name: str) -> Any:
        for result in self.results:
            if result.name == name:
                return result.output.data or {}
        return {}

    def _report_input(self) -> ReportInput:
        versions: dict[str, str] = {}
        for result in self.results:
            version = (
                (result.output.data or {}).get("server_version")
                if isinstance(result.output.data, dict)
                else None
            )
            if version:
                versions[result.name] = str(version)
        runtimes = {
            n: self.cfg.components[n].runtime
            + (
                f" (container {self.cfg.components[n].container_ref})"
                if self.cfg.components[n].runtime == "docker"
                else ""
            )
            for n in self.names
        }
        agent_note = (
            f"The agent (pid {self.agent['pid']}) answered."
            if self.agent["running"]
            else f"**No agent answered** ({self.agent['error']}): status is what the store and live processes show."
        )
        stacks = self._data("incidents").get("stacks", [])
        return ReportInput(
            bundle=self.name,
            created_at=self.now,
            since_ts=self.since_ts,
            facts=col.environment_facts(),
            versions=versions,
            runtimes=runtimes,
            status=self.doc or None,
            agent_note=agent_note,
            events=self._data("store").get("events", []),
            audit=self._data("store").get("audit", []),
            incidents=self._data("incidents").get("incidents", []),
            tracebacks=[*stacks, *self.tracebacks],
            failed_collectors=[f"{r.name} ({r.status})" for r in self.results if r.status != "ok"],
        )

    def _manifest(self, writer: BundleWriter, redactor: Redactor) -> dict[str, Any]:
        truncations = [
            {
                "member": p.member,
                "source": p.source,
                "truncated_bytes": p.slice.cap_cut,
                "kept_bytes": p.slice.kept,
                "reason": f"--max-file-size {self.req.max_file_size}: the newest part is kept",
            }
            for p in self.logs
            if p.slice is not None and p.slice.cap_cut > 0 and p.status == "read"
        ]
        return {
            "schema": 1,
            "bundle": self.name,
            "created_at": datetime.fromtimestamp(self.now, UTC).isoformat(timespec="seconds"),
            "host": self.req.host,
            "since": self.since_iso,
            "components": self.names,
            "max_file_size": self.req.max_file_size,
            "agent": self.agent,
            "collectors": [r.to_dict() for r in self.results],
            "logs": [p.to_dict() for p in self.logs],
            "truncations": truncations,
            "files": [m.to_dict() for m in writer.members],
            "problems": self.problems,
            "redaction": {
                "rules": redactor.summary(),
                "total": sum(redactor.counts.values()),
                "known_values": redactor.known_values,
                "known_values_too_short": redactor.too_short,
            },
            "duration_s": round(time.monotonic() - self.started, 3),
        }
