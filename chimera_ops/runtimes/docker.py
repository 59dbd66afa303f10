"""Containers: a component that is an existing container (by name, or a compose service by its
labels). The agent starts, stops and restarts it; compose created it, the agent never does.

Rules (docs/docker.md):
- the exit is seen at once: the engine's event stream (`die`, `oom`, `health_status`, `start`)
  feeds the runtime; nothing polls;
- every SDK call blocks, so each runs in a worker thread (`DockerEngine.call`);
- a container is not the agent's child: at start a running container is adopted (no restart,
  no second copy), and at agent shutdown it keeps running;
- Docker's own restart policy is never raced: when Docker restarts a container that died, the
  exit says so (`restarted_by`) and `start()` waits for Docker's restart instead of its own;
- OOM kills are proven from the `oom` event, `State.OOMKilled`, the exit code and the cgroup's
  `oom_kill` counter together (`reconcile.container_exit_cause`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from chimera_ops.agent.reconcile import container_exit_cause, docker_restarts
from chimera_ops.aio import within
from chimera_ops.config import ComponentConfig
from chimera_ops.docker.cgroup import CgroupMemory, cgroup_dir, read_memory
from chimera_ops.docker.engine import DockerEngine, engine_error
from chimera_ops.errors import describe_exception
from chimera_ops.redact import redact_text
from chimera_ops.runtimes.base import ExitInfo, Runtime, RuntimeUnavailable, StartError

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
DOCKER_RESTART_WAIT = 70.0  # Docker's own restart delay grows to 1 min; wait a little more
MAX_KNOWN = 20  # names listed in "no such container (known: ...)"
NS = 1e-9
_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def parse_docker_time(text: str) -> float | None:
    """Docker's RFC 3339 time with nanoseconds (`2024-05-01T12:00:00.123456789Z`) -> epoch."""
    match = _TS.match(text or "")
    if not match or text.startswith("0001-"):
        return None
    base, frac, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z") else zone
    stamp = datetime.fromisoformat(f"{base}{zone}").timestamp()
    return stamp + (float(f"0.{frac}") if frac else 0.0)


def healthcheck_grace(healthcheck: dict[str, Any] | None) -> float | None:
    """Seconds from a start until Docker must have a verdict: `start_period`, then `retries`
    failed checks (each `interval` apart, each up to `timeout`). Docker's defaults: 30 s, 30 s,
    3 retries, 0 s start period. None: no HEALTHCHECK (or `NONE`)."""
    if not healthcheck or healthcheck.get("Test") in (None, [], ["NONE"]):
        return None
    interval = (healthcheck.get("Interval") or 30_000_000_000) * NS
    timeout = (healthcheck.get("Timeout") or 30_000_000_000) * NS
    retries = healthcheck.get("Retries") or 3
    start_period = (healthcheck.get("StartPeriod") or 0) * NS
    return float(start_period + retries * interval + timeout)


class DockerRuntime(Runtime):
    """Follows one container through the engine's events."""

    def __init__(self, name: str, config: ComponentConfig, engine: DockerEngine) -> None:
        self.name = name
        self.config = config
        self.engine = engine
        self.container_id: str | None = None
        self.container_name: str | None = None
        self.health_status: str | None = None
        self.last_start = ""  # "started by the agent" | "adopted" | "restarted by Docker"
        self.restart_policy = "no"
        self.create_time: float | None = None
        self.on_health: Callable[[str], None] | None = None  # set by the unit
        self.on_change: Callable[[], None] | None = None  # wakes the loop
        self._pid: int | None = None
        self._started_at = ""  # Docker's State.StartedAt of the run being followed
        self._started_epoch: float | None = None
        self._exit: asyncio.Future[ExitInfo] | None = None
        self._die_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped_outside = ""  # `docker stop` / `docker kill` by someone else this run
        self._restart_expected = False
        self._started_event = asyncio.Event()
        self._oom_event = False
        self._oom_base: int | None = None
        self._oom_last: int | None = None
        self._memory_limit: int | None = None
        self._max_retries = 0
        self._restart_count = 0
        self._healthcheck: dict[str, Any] | None = None
        self._cgroup: tuple[int, Path] | None = None
        self._unavailable: str | None = None
        engine.on_event(self._event)
        engine.on_status(self._engine_status)

    # ----------------------------------------------------------------- lookup
    @property
    def ref(self) -> str:
        return self.config.container_ref

    async def _known(self) -> str:
        """The containers that do exist, for a "no such container" message."""
        try:
            listed = await self.engine.call(self.engine.api.containers, all=True)
        except Exception:  # noqa: BLE001 - the message is a hint; the lookup failure is the news
            return "?"
        names = []
        for item in listed:
            labels = item.get("Labels") or {}
            name = (item.get("Names") or ["/?"])[0].lstrip("/")
            if COMPOSE_PROJECT in labels:
                name += f" = compose {labels[COMPOSE_PROJECT]}/{labels.get(COMPOSE_SERVICE)}"
            names.append(name)
        shown = sorted(names)[:MAX_KNOWN]
        more = f", {len(names) - MAX_KNOWN} more" if len(names) > MAX_KNOWN else ""
        return (", ".join(shown) + more) if shown else "none"

    def _unreachable(self, exc: BaseException) -> RuntimeUnavailable:
        reason = f"the Docker engine at {self.engine.host} does not answer: "
        return RuntimeUnavailable(reason + describe_exception(exc))

    async def _resolve(self) -> dict[str, Any]:
        """The container's inspect document; RuntimeUnavailable when it cannot be found."""
        import docker.errors

        api = self.engine.api
        try:
            if self.config.compose is not None:
                compose = self.config.compose
                filters = {
                    "label": [
                        f"{COMPOSE_PROJECT}={compose.project}",
                        f"{COMPOSE_SERVICE}={compose.service}",
                    ]
                }
                listed = await self.engine.call(api.containers, all=True, filters=filters)
                listed = [
                    c
                    for c in listed
                    if (c.get("Labels") or {}).get("com.docker.compose.oneoff") != "True"
                ]
                if not listed:
                    raise docker.errors.NotFound(self.ref)
                # Scaled services: follow the running one with the lowest container number.
                listed.sort(
                    key=lambda c: (
                        c.get("State") != "running",
                        int((c.get("Labels") or {}).get("com.docker.compose.container-number", 1)),
                    )
                )
                ident = listed[0]["Id"]
            else:
                ident = str(self.config.container)
            info: dict[str, Any] = await self.engine.call(api.inspect_container, ident)
            return info
        except docker.errors.NotFound:
            known = await self._known()
            raise RuntimeUnavailable(f"no such container {self.ref!r} (known: {known})") from None
        except Exception as exc:
            if engine_error(exc):
                raise self._unreachable(exc) from None
            raise StartError(f"cannot inspect {self.ref!r}: {describe_exception(exc)}") from exc

    # ----------------------------------------------------------------- start
    async def start(self) -> int | None:
        """Adopt the running container, wait for Docker's own restart, or start it."""
        info = await self._resolve()
        expected = self._restart_expected
        self._restart_expected = False
        state = info["State"]
        previous = self._started_at
        if state.get("Running") and not state.get("Restarting"):
            restarted = expected and state.get("StartedAt") != previous
            how = "restarted by Docker" if restarted else "adopted"
        elif state.get("Restarting") or expected:
            waited = await self._await_docker_restart(info["Id"], previous)
            if waited is not None:
                info, how = waited, "restarted by Docker"
            else:
                info, how = await self._start_container(info["Id"]), "started by the agent"
        else:
            info, how = await self._start_container(info["Id"]), "started by the agent"
        self._follow(info)
        self.last_start = how
        text = (
            f"{how}: container {self.container_name} ({self.container_id and self.container_id[:12]})"
            f", pid {self._pid}"
        )
        if how == "adopted":
            text += f", running since {info['State'].get('StartedAt', '?')}"
        self._report("container", text)
        return self._pid

    async def _start_container(self, ident: str) -> dict[str, Any]:
        try:
            await self.engine.call(self.engine.api.start, ident)
            info: dict[str, Any] = await self.engine.call(self.engine.api.inspect_container, ident)
        except Exception as exc:
            if engine_error(exc):
                raise self._unreachable(exc) from None
            raise StartError(f"docker start {self.ref}: {describe_exception(exc)}") from exc
        if not info["State"].get("Running"):
            raise StartError(
                f"docker start {self.ref}: not running after start "
                f"(exit code {info['State'].get('ExitCode')}: {info['State'].get('Error') or ''})"
            )
        return info

    async def _await_docker_restart(self, ident: str, previous: str) -> dict[str, Any] | None:
        """Wait until Docker has restarted the container (a new StartedAt); None when Docker
        gave up (no longer restarting, not running)."""
        deadline = time.monotonic() + DOCKER_RESTART_WAIT
        while time.monotonic() < deadline:
            self._started_event.clear()
            try:
                info: dict[str, Any] = await self.engine.call(
                    self.engine.api.inspect_container, ident
                )
            except Exception as exc:
                if engine_error(exc):
                    raise self._unreachable(exc) from None
                raise StartError(f"cannot inspect {self.ref!r}: {describe_exception(exc)}") from exc
            state = info["State"]
            if state.get("Running") and not state.get("Restarting"):
                if state.get("StartedAt") != previous:
                    return info
            elif not state.get("Restarting"):
                return None
            with contextlib.suppress(TimeoutError):
                await within(self._started_event.wait(), timeout=1.0)
        return None

    def _follow(self, info: dict[str, Any]) -> None:
        """Follow this run of the container: its pid, cgroup, limits, restart policy."""
        state = info["State"]
        host = info.get("HostConfig") or {}
        policy = host.get("RestartPolicy") or {}
        self.container_id = info["Id"]
        self.container_name = str(info.get("Name", "")).lstrip("/")
        self._pid = int(state.get("Pid") or 0) or None
        self._started_at = str(state.get("StartedAt") or "")
        self._started_epoch = parse_docker_time(self._started_at)
        self.create_time = self._started_epoch
        self.restart_policy = str(policy.get("Name") or "no")
        self._max_retries = int(policy.get("MaximumRetryCount") or 0)
        self._restart_count = int(info.get("RestartCount") or 0)
        self._memory_limit = int(host.get("Memory") or 0) or None
        self._healthcheck = (info.get("Config") or {}).get("Healthcheck")
        self.health_status = ((state.get("Health") or {}).get("Status")) or None
        self._stopping = False
        self._stopped_outside = ""
        self._oom_event = False
        self._cgroup = cgroup_dir(self._pid) if self._pid else None
        sample = read_memory(*self._cgroup) if self._cgroup else None
        self._oom_base = self._oom_last = sample.oom_kills if sample else None
        self._exit = asyncio.get_running_loop().create_future()
        self._die_task = None
        if self._pid is not None and not psutil.pid_exists(self._pid):
            # It died between the inspect and now: its `die` event may have gone by already.
            self._die_task = asyncio.create_task(self._on_die(None))

    # ----------------------------------------------------------------- events
    def _event(self, event: dict[str, Any]) -> None:
        if event.get("Type", "container") != "container" or event.get("id") != self.container_id:
            return
        action = str(event.get("Action") or event.get("status") or "")
        if action == "start":
            self._started_event.set()
        elif action in ("kill", "stop") and not self._stopping:
            # Docker counts `docker kill` and `docker stop` as a manual stop: its restart policy
            # does not bring the container back, so the agent must.
            self._stopped_outside = f"docker {action} outside the agent"
        elif action == "oom":
            self._oom_event = True
            self._sample_oom()
        elif action.startswith("health_status"):
            status = action.partition(":")[2].strip()
            self.health_status = status or None
            if self.on_health is not None and status:
                self.on_health(status)
        elif action == "die":
            exit_future = self._exit
            if exit_future is not None and not exit_future.done() and self._die_task is None:
                self._sample_oom()  # the cgroup goes away with the container: read it now
                self._die_task = asyncio.create_task(self._on_die(event))

    def _sample_oom(self) -> None:
        if self._cgroup is not None:
            sample = read_memory(*self._cgroup)
            if sample is not None and sample.oom_kills is not None:
                self._oom_last = sample.oom_kills

    async def _on_die(self, event: dict[str, Any] | None) -> None:
        attributes = (event or {}).get("Actor", {}).get("Attributes", {})
        at = (event or {}).get("timeNano", 0) * NS or time.time()
        code: int | None = int(attributes["exitCode"]) if "exitCode" in attributes else None
        state: dict[str, Any] = {}
        info: dict[str, Any] = {}
        ident = self.container_id
        assert ident is not None
        try:
            info = await self.engine.call(self.engine.api.inspect_container, ident)
            state = info.get("State") or {}
        except Exception:  # noqa: BLE001 - the die event already says enough to go on
            pass
        if code is None:
            code = int(state.get("ExitCode", -1))
        restarted_again = bool(state.get("Running")) and state.get("StartedAt") != self._started_at
        delta = (
            self._oom_last - self._oom_base
            if self._oom_last is not None and self._oom_base is not None
            else None
        )
        cause = container_exit_cause(
            code, bool(state.get("OOMKilled")), self._oom_event, delta, self._memory_limit
        )
        policy = (info.get("HostConfig") or {}).get("RestartPolicy") or {}
        restarted_by = docker_restarts(
            str(policy.get("Name") or self.restart_policy),
            int(policy.get("MaximumRetryCount") or self._max_retries),
            int(info.get("RestartCount") or self._restart_count),
            code,
            self._stopping or bool(self._stopped_outside),
            bool(state.get("Restarting")) or restarted_again,
        )
        self._restart_expected = bool(restarted_by)
        signal = code - 128 if code is not None and 128 < code < 128 + 65 else None
        exit_info = ExitInfo(
            code=code,
            signal=signal,
            at=at,
            expected=self._stopping,
            stderr_tail=await self._last_stderr_line(ident),
            cause=cause,
            restarted_by=restarted_by,
        )
        self._pid = None
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(exit_info)

    async def _last_stderr_line(self, ident: str) -> str:
        try:
            raw = await self.engine.call(
                self.engine.api.logs, ident, stdout=False, stderr=True, tail=3
            )
        except Exception:  # noqa: BLE001 - a reason without its last line is still a reason
            return ""
        lines = [x for x in raw.decode("utf-8", "replace").splitlines() if x.strip()]
        text = redact_text(lines[-1].strip()) if lines else ""
        return text if len(text) <= 300 else text[:297] + "..."

    def _engine_status(self, reachable: bool, reason: str) -> None:
        self._unavailable = None if reachable else reason
        if self.on_change is not None:
            self.on_change()

    # ----------------------------------------------------------------- observe
    @property
    def pid(self) -> int | None:
        if self._exit is None or self._exit.done():
            return None
        return self._pid

    def pids(self) -> list[int]:
        """None for incident capture's process sampling: a container's processes are in its
        `docker_top.json`, and the psutil tree's 0.2 s CPU sample would delay the restart."""
        return []

    @property
    def unavailable(self) -> str | None:
        return self._unavailable

    @property
    def owns_children(self) -> bool:
        return False

    @property
    def survives_agent(self) -> bool:
        return True

    async def wait(self) -> ExitInfo:
        """The exit of the run being followed (from its `die` event)."""
        assert self._exit is not None, "wait() before start()"
        return await asyncio.shield(self._exit)

    async def health(self) -> tuple[str | None, str]:
        """(HEALTHCHECK status or None, the last check's output), from an inspect."""
        if self.container_id is None:
            return None, ""
        if self.health_status == "healthy" and self.engine.reachable:
            # Kept current by the `health_status` events: a healthy stack costs no API call.
            return "healthy", ""
        try:
            info = await self.engine.call(self.engine.api.inspect_container, self.container_id)
        except Exception as exc:
            if engine_error(exc):
                raise self._unreachable(exc) from None
            raise
        health = (info.get("State") or {}).get("Health") or {}
        self.health_status = health.get("Status") or None
        log = health.get("Log") or []
        output = str(log[-1].get("Output", "")) if log else ""
        return health.get("Status"), output

    def memory(self) -> CgroupMemory | None:
        """The container cgroup's memory now (blocking file reads; None when not running)."""
        if self._cgroup is None or self.pid is None:
            return None
        sample = read_memory(*self._cgroup)
        if sample is not None and sample.limit is None and self._memory_limit:
            sample = CgroupMemory(
                sample.usage, self._memory_limit, sample.oom_kills, sample.version, sample.path
            )
        if sample is not None and sample.oom_kills is not None:
            self._oom_last = sample.oom_kills
        return sample

    def start_grace(self) -> float | None:
        grace = healthcheck_grace(self._healthcheck)
        if grace is None:
            return None
        if self.last_start == "adopted" and self._started_epoch is not None:
            return max(0.0, grace - (time.time() - self._started_epoch))
        return grace

    def details(self) -> dict[str, object] | None:
        return {
            "container": self.container_name or self.ref,
            "id": self.container_id[:12] if self.container_id else None,
            "restart_policy": self.restart_policy,
            "last_start": self.last_start or None,
            "health": self.health_status,
        }

    async def log_text(self, lines: int) -> str | None:
        """The container's last `lines` log lines with Docker's timestamps (both streams)."""
        if self.container_id is None:
            return f"no container found for {self.ref}\n"
        try:
            raw = await self.engine.call(
                self.engine.api.logs, self.container_id, timestamps=True, tail=lines
            )
        except Exception as exc:  # noqa: BLE001
            return f"docker logs {self.ref}: {describe_exception(exc)}\n"
        header = f"===== docker logs {self.container_name} (last {lines} lines) =====\n"
        return header + redact_text(raw.decode("utf-8", "replace"))

    async def incident_parts(self) -> dict[str, str]:
        """`docker inspect` (environment values removed) and `docker top` of the container."""
        if self.container_id is None:
            return {}
        parts: dict[str, str] = {}
        api = self.engine.api
        try:
            info = await self.engine.call(api.inspect_container, self.container_id)
            config = info.get("Config") or {}
            # Values of the environment are secrets as often as not: keep only the names.
            config["Env"] = [str(e).split("=", 1)[0] + "=***" for e in config.get("Env") or []]
            parts["docker_inspect.json"] = redact_text(json.dumps(info, indent=2, default=str))
        except Exception as exc:  # noqa: BLE001
            parts["docker_inspect.json"] = json.dumps({"error": describe_exception(exc)})
        try:
            top = await self.engine.call(api.top, self.container_id)
            parts["docker_top.json"] = redact_text(json.dumps(top, indent=2))
        except Exception as exc:  # noqa: BLE001
            parts["docker_top.json"] = json.dumps({"error": describe_exception(exc)})
        return parts

    # ----------------------------------------------------------------- stop
    async def stop(self, grace: float | None = None) -> None:
        """`docker stop -t GRACE`: the container's stop signal, SIGKILL after the grace."""
        exit_future = self._exit
        if self.container_id is None or exit_future is None or exit_future.done():
            return
        self._stopping = True
        seconds = self.config.stop.grace if grace is None else grace
        t = max(0, math.ceil(seconds))  # the engine takes whole seconds
        self._report("stop_signal", f"docker stop -t {t} {self.container_name}: SIGKILL after {t}s")
        started = time.monotonic()
        try:
            await self.engine.call(self.engine.api.stop, self.container_id, timeout=t)
        except Exception as exc:  # noqa: BLE001 - report; the exit (or unknown) follows
            self._report("stop_failed", f"docker stop {self.ref}: {describe_exception(exc)}")
            return
        with contextlib.suppress(TimeoutError):
            await within(asyncio.shield(exit_future), timeout=10.0)
        if exit_future.done() and t > 0 and time.monotonic() - started >= t:
            code = exit_future.result().code
            self._report(
                "stop_escalated",
                f"container {self.container_name} ignored its stop signal for {t}s: "
                f"SIGKILL by Docker (exit code {code})",
            )
