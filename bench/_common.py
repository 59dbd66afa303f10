"""Shared helpers of the benchmarks: the three supervisors, probes, samplers, Markdown tables.

Everything runs on loopback, in a private temp dir, and is stopped in `finally` blocks. Every
child program a bench starts carries a tag argument (the temp dir path) so that whatever a
supervisor left behind can be found and ended *by pid* at the end (`end_tagged`).

Run as a program, this module is also the leaking child of the leak bench:
`python bench/_common.py leak MB_PER_S TAG` grows its RSS by MB_PER_S every second.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PY = sys.executable
CHILDREN = str(REPO / "tests" / "children.py")
THIS = str(Path(__file__).resolve())
SUPERVISORD = shutil.which("supervisord")
SUPERVISORCTL = shutil.which("supervisorctl")
MONIT = shutil.which("monit")
NOT_INSTALLED = "not installed"
# The machine's PostgreSQL (trust auth) and Redis, which the demo-stack benches run against.
SERVER_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


# --------------------------------------------------------------------------- small helpers


def child_argv(kind: str, *args: object, tag: str) -> list[str]:
    """argv of a tests/children.py program; `tag` (ignored by the child) marks it as ours."""
    return [PY, CHILDREN, kind, *map(str, args), tag]


def leak_argv(mb_per_s: float, tag: str) -> list[str]:
    """argv of the leaking child (this module run as a program)."""
    return [PY, THIS, "leak", str(mb_per_s), tag]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def health_ok(port: int, timeout: float = 0.5) -> bool:
    """True when GET http://127.0.0.1:PORT/health answers 200 within `timeout`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll until predicate() is truthy; return its value or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001 - keep polling through transient errors
            last = exc
        else:
            if last:
                return last
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def wait_health(port: int, timeout: float = 30.0, poll: float = 0.01) -> float:
    """Poll /health every `poll` s until 200; return the monotonic time it answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health_ok(port, timeout=0.25):
            return time.monotonic()
        time.sleep(poll)
    raise TimeoutError(f"127.0.0.1:{port}/health did not answer 200 within {timeout:.0f}s")


def listener_pid(port: int) -> int | None:
    """Pid of the process listening on 127.0.0.1:PORT (None when nobody listens)."""
    for conn in psutil.net_connections("tcp4"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def alive(pid: int | None) -> bool:
    """True when pid exists and is not a zombie."""
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def tagged_pids(tag: str) -> list[int]:
    """Pids of processes whose argv carries `tag` (the children this bench started)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if tag in cmdline and proc.pid != os.getpid():
            found.append(proc.pid)
    return found


def end_tagged(tag: str) -> int:
    """SIGKILL (by pid) every leftover child carrying `tag`; return how many."""
    pids = tagged_pids(tag)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def end_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM a process we started, SIGKILL it if it does not exit in `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def median(values: Sequence[float]) -> float:
    """Median (nan for no values)."""
    return statistics.median(values) if values else math.nan


def p90(values: Sequence[float]) -> float:
    """90th percentile, nearest rank (nan for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def tool_version(argv: list[str]) -> str:
    """First line of a tool's version output, or NOT_INSTALLED."""
    if not shutil.which(argv[0]):
        return NOT_INSTALLED
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"error: {exc}"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def temp_dir(prefix: str) -> Path:
    """A short private temp dir (unix socket paths must stay short)."""
    return Path(tempfile.mkdtemp(prefix=f"cb-{prefix}-", dir="/tmp"))


# --------------------------------------------------------------------------- resource sampling


@dataclass
class Usage:
    """CPU and RSS of a set of processes over a window."""

    seconds: float
    cpu_percent: float
    """CPU time used / wall time * 100 (100 = one core)."""
    rss_mean: float
    rss_max: float
    samples: int


def measure(pids: Callable[[], list[int]], seconds: float, every: float = 1.0) -> Usage:
    """CPU and RSS of `pids()` over `seconds` (see measure_groups)."""
    return measure_groups({"all": pids}, seconds, every)["all"]


def measure_groups(
    groups: dict[str, Callable[[], list[int]]], seconds: float, every: float = 1.0
) -> dict[str, Usage]:
    """CPU (cpu_times deltas, children not included) and RSS of each group over one window.

    Each group's pids are re-read at every sample so a restarted helper is still counted; its
    CPU is the sum of per-pid deltas between the first and last time each pid was seen.
    """
    first: dict[str, dict[int, float]] = {g: {} for g in groups}
    last: dict[str, dict[int, float]] = {g: {} for g in groups}
    rss: dict[str, list[float]] = {g: [] for g in groups}
    start = time.monotonic()
    end = start + seconds
    while True:
        for group, pids in groups.items():
            total = 0.0
            for pid in pids():
                try:
                    proc = psutil.Process(pid)
                    with proc.oneshot():
                        times = proc.cpu_times()
                        total += proc.memory_info().rss
                except psutil.Error:
                    continue
                cpu = times.user + times.system
                first[group].setdefault(pid, cpu)
                last[group][pid] = cpu
            rss[group].append(total)
        now = time.monotonic()
        if now >= end:
            break
        time.sleep(min(every, end - now))
    wall = max(time.monotonic() - start, 1e-9)
    out = {}
    for group in groups:
        used = sum(last[group][pid] - first[group][pid] for pid in last[group])
        values = rss[group]
        out[group] = Usage(
            wall, 100.0 * used / wall, statistics.fmean(values), max(values), len(values)
        )
    return out


def tree_pids(pid: int) -> list[int]:
    """`pid` and all its descendants (empty once it is gone)."""
    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.Error:
        return []


class Sampler:
    """A thread that calls `sample()` every `every` s while in `with` (and once at the start)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class PeakRss(Sampler):
    """Peak RSS of groups of processes, sampled every `every` s while in `with`.

    Unlike `measure_groups` the window is not known in advance: it lasts as long as the
    command being watched (a backup, a restore) runs. A group's RSS is the sum over its pids.
    """

    def __init__(self, groups: dict[str, Callable[[], list[int]]], every: float = 0.1) -> None:
        super().__init__(every)
        self.groups = groups
        self.peaks: dict[str, float] = dict.fromkeys(groups, 0.0)
        self.samples = 0

    def sample(self) -> None:
        for group, pids in self.groups.items():
            total = 0.0
            for pid in pids():
                try:
                    total += psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue  # exited between the listing and the read
            self.peaks[group] = max(self.peaks[group], total)
        self.samples += 1


# --------------------------------------------------------------------------- chimera-ops


def chimera_cli() -> list[str]:
    """The `chimera-ops` console script of this venv (what a user types)."""
    script = Path(PY).with_name("chimera-ops")
    return [str(script)] if script.exists() else [PY, "-m", "chimera_ops"]


class ChimeraAgent:
    """A real `chimera-ops agent` (foreground) on a config written into `directory`."""

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        self.dir = directory
        config.setdefault("agent", {}).setdefault("state_dir", str(directory / "var"))
        self.config = config
        self.config_path = directory / "chimera-ops.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.state_dir = Path(config["agent"]["state_dir"])
        self.log_path = directory / "agent.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`chimera-ops --config FILE ARGS...`."""
        return subprocess.run(
            [*chimera_cli(), "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(REPO),
        )

    def check_config(self) -> str | None:
        """None when `config check` accepts the config, else its error text."""
        result = self.cli("config", "check")
        return None if result.returncode == 0 else (result.stderr or result.stdout).strip()

    def start(self) -> ChimeraAgent:
        """Start the agent and wait for its control socket."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [*chimera_cli(), "--config", str(self.config_path), "agent"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(REPO),
        )
        log.close()
        proc = self.proc
        wait_for(
            lambda: (self.state_dir / "agent.sock").exists() or proc.poll() is not None,
            30,
            "agent socket",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited: {self.output()[-2000:]}")
        return self

    def output(self) -> str:
        """What the agent printed."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def helper_pids(self) -> list[int]:
        """The agent's non-component helpers (the `sh` death guard, the log relay)."""
        found = []
        for proc in psutil.process_iter(["cmdline", "ppid"]):
            cmdline = proc.info["cmdline"] or []
            if proc.info["ppid"] == self.pid and (
                "chimera-ops-guard" in cmdline or "chimera-ops-relay" in cmdline
            ):
                found.append(proc.pid)
        return found

    def status(self) -> dict[str, Any]:
        """`status --json`."""
        return json.loads(self.cli("status", "--json").stdout)  # type: ignore[no-any-return]

    def components(self) -> dict[str, dict[str, Any]]:
        """Component snapshots by name."""
        return {c["name"]: c for c in self.status()["components"]}

    def wait_all(self, state: str = "running", timeout: float = 60.0) -> dict[str, Any]:
        """Wait until every component is in `state`."""

        def check() -> dict[str, Any] | None:
            comps = self.components()
            return comps if all(c["state"] == state for c in comps.values()) else None

        return wait_for(check, timeout, f"every component {state}", step=0.2)  # type: ignore[no-any-return]

    def events(self, component: str | None = None) -> list[dict[str, Any]]:
        """`events --json` (newest 5000)."""
        args = ["events", "--json", "--limit", "5000"]
        if component:
            args += ["--component", component]
        return json.loads(self.cli(*args).stdout)["events"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        """SIGTERM (the agent stops its children first), SIGKILL after 30 s."""
        end_process(self.proc, timeout=30)


# --------------------------------------------------------------------------- supervisord


def web_agent(directory: Path, port: int, tag: str, **component: Any) -> ChimeraAgent:
    """An agent supervising one `tests/children.py http PORT` component named `web`."""
    return ChimeraAgent(
        directory,
        {
            "agent": {},
            "components": {
                "web": {
                    "runtime": "process",
                    "command": child_argv("http", port, tag=tag),
                    "stop": {"grace": "2s"},
                    **component,
                }
            },
        },
    )


SUPERVISORD_PROGRAM_SETTINGS = {
    "autostart": "true",
    "autorestart": "true",
    "startsecs": "1",
    "startretries": "3",
    "stopsignal": "TERM",
    "stopwaitsecs": "2",
    "stopasgroup": "true",
    "killasgroup": "true",
}
"""Per-program settings a user would pick (supervisord defaults, plus group stop/kill)."""


@dataclass
class Supervisord:
    """A private supervisord 4.2 (`nodaemon=true`, own unix socket) as a subprocess."""

    directory: Path
    programs: dict[str, list[str]]
    proc: subprocess.Popen[bytes] | None = None
    conf: Path = field(init=False)

    def __post_init__(self) -> None:
        self.conf = self.directory / "supervisord.conf"
        sock = self.directory / "supervisor.sock"
        lines = [
            "[unix_http_server]",
            f"file={sock}",
            "chmod=0700",
            "",
            "[supervisord]",
            "nodaemon=true",
            f"logfile={self.directory / 'supervisord.log'}",
            f"pidfile={self.directory / 'supervisord.pid'}",
            f"childlogdir={self.directory}",
            "loglevel=info",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=unix://{sock}",
            "",
        ]
        for name, argv in self.programs.items():
            lines += [f"[program:{name}]", f"command={subprocess.list2cmdline(argv)}"]
            lines += [f"{k}={v}" for k, v in SUPERVISORD_PROGRAM_SETTINGS.items()]
            lines += [
                f"stdout_logfile={self.directory / (name + '.out')}",
                "redirect_stderr=true",
                "",
            ]
        self.conf.write_text("\n".join(lines))

    def start(self) -> Supervisord:
        """Start supervisord in the foreground and wait until every program is RUNNING."""
        assert SUPERVISORD is not None
        self.proc = subprocess.Popen(
            [SUPERVISORD, "-n", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.all_running, 60, "supervisord programs RUNNING", step=0.2)
        return self

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`supervisorctl -c CONF ARGS...`."""
        assert SUPERVISORCTL is not None
        return subprocess.run(
            [SUPERVISORCTL, "-c", str(self.conf), *args], capture_output=True, text=True, timeout=30
        )

    def all_running(self) -> bool:
        out = self.ctl("status").stdout.splitlines()
        return len(out) == len(self.programs) and all(" RUNNING " in line for line in out)

    def pid_of(self, name: str) -> int:
        """Pid of one program (supervisorctl pid NAME)."""
        return int(self.ctl("pid", name).stdout.strip())

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM supervisord (it stops its programs), SIGKILL after 30 s."""
        end_process(self.proc, timeout=30)


# --------------------------------------------------------------------------- monit


MONIT_CYCLE = 1


@dataclass
class Monit:
    """A private Monit 5.33 in the foreground (`-I`), own control, id, state and pid files.

    `checks` is the text of the `check ...` blocks. Monit does not stop the processes it
    started when it exits, so `stop()` leaves them to `end_tagged`.
    """

    directory: Path
    checks: str
    proc: subprocess.Popen[bytes] | None = None
    rc: Path = field(init=False)

    def __post_init__(self) -> None:
        self.rc = self.directory / "monitrc"
        self.rc.write_text(
            "\n".join(
                [
                    f"set daemon {MONIT_CYCLE}",
                    f"set logfile {self.directory / 'monit.log'}",
                    f"set idfile {self.directory / 'monit.id'}",
                    f"set statefile {self.directory / 'monit.state'}",
                    f"set pidfile {self.directory / 'monit.pid'}",
                    "set limits { programTimeout: 10 seconds }",
                    "",
                    self.checks,
                    "",
                ]
            )
        )
        os.chmod(self.rc, 0o600)

    def start(self) -> Monit:
        """Start `monit -I -c RC`; the caller waits for its checks' services."""
        assert MONIT is not None
        syntax = subprocess.run([MONIT, "-t", "-c", str(self.rc)], capture_output=True, text=True)
        if syntax.returncode != 0:
            raise RuntimeError(f"monit rejected its control file: {syntax.stderr or syntax.stdout}")
        self.proc = subprocess.Popen(
            [MONIT, "-I", "-c", str(self.rc)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        path = self.directory / "monit.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        end_process(self.proc, timeout=15)


def monit_process_check(name: str, argv: list[str], match: str, extra: str = "") -> str:
    """A `check process` block that starts argv detached and kills it with SIGKILL.

    The stop program uses SIGKILL (`$MONIT_PROCESS_PID`) so that a SIGSTOPped child is ended at
    once, as a user who restarts frozen processes would write it.
    """
    cmd = subprocess.list2cmdline(argv)
    start = f"/bin/sh -c '{cmd} >/dev/null 2>&1 &'"
    stop = "/bin/sh -c 'kill -9 $MONIT_PROCESS_PID'"
    return "\n".join(
        [
            f'check process {name} matching "{match}"',
            f'  start program = "{start}" with timeout 10 seconds',
            f'  stop program = "{stop}"',
            *([extra] if extra else []),
            "",
        ]
    )


def monit_http_check(name: str, port: int, tag: str, timeout: int = 1) -> str:
    """Monit's restart-on-failed-HTTP check of a `tests/children.py http PORT` child."""
    argv = child_argv("http", port, tag=tag)
    return monit_process_check(
        name,
        argv,
        match=f"http {port} {tag}",
        extra=(
            f'  if failed port {port} protocol http request "/health" '
            f"with timeout {timeout} seconds then restart"
        ),
    )


def freeze_trials(port: int, trials: int, settle: float) -> list[float]:
    """SIGSTOP the listener `trials` times; seconds until a new pid answers /health each time."""
    times = []
    wait_health(port, timeout=60)
    time.sleep(settle)
    for _ in range(trials):
        old = listener_pid(port)
        if old is None:
            raise RuntimeError("nobody listens before the freeze")
        os.kill(old, signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            deadline = t0 + 90
            while time.monotonic() < deadline:
                if health_ok(port, timeout=0.25) and listener_pid(port) != old:
                    break
                time.sleep(0.01)
            else:
                raise TimeoutError("the frozen child was not replaced within 90 s")
            times.append(time.monotonic() - t0)
        finally:
            if alive(old):  # never leave a stopped process behind
                os.kill(old, signal.SIGCONT)
        time.sleep(settle)
        wait_health(port, timeout=60)
    return times


# --------------------------------------------------------------------------- results


def fmt(value: float, digits: int = 2, unit: str = "") -> str:
    """A number for a table ('n/a' for nan)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def mib(value: float) -> str:
    return fmt(value / 1024**2, 1, " MiB")


def verdict(met: bool | None) -> str:
    """The aim column: computed, never hard-coded."""
    return "n/a (not measured)" if met is None else ("**met**" if met else "**MISSED**")


@dataclass
class Section:
    """One table of a results file."""

    title: str
    aim: str
    headers: list[str]
    rows: list[list[str]]
    verdict: str
    notes: list[str] = field(default_factory=list)


def write_results(name: str, title: str, intro: str, sections: list[Section]) -> Path:
    """Write bench/results/<name>.md with one table per section."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = [f"# {title}", "", intro, "", f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')}.", ""]
    for sec in sections:
        out += [f"## {sec.title}", "", f"Aim: {sec.aim} -> {sec.verdict}", ""]
        out.append("| " + " | ".join(sec.headers) + " |")
        out.append("|" + "---|" * len(sec.headers))
        out += ["| " + " | ".join(row) + " |" for row in sec.rows]
        out.append("")
        out += [f"- {note}" for note in sec.notes]
        out.append("")
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(out))
    return path


def machine_facts() -> dict[str, str]:
    """nproc, python, kernel, supervisord and monit versions."""
    return {
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": mib(psutil.virtual_memory().total),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "supervisord": tool_version(["supervisord", "-v"]),
        "monit": tool_version(["monit", "-V"]),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# --------------------------------------------------------------------------- the leaking child


def _leak(mb_per_s: float) -> None:
    """Grow RSS by mb_per_s every second (touched pages), forever."""
    hoard: list[bytes] = []
    step = 0.1
    chunk = int(mb_per_s * 1024 * 1024 * step)
    next_at = time.monotonic()
    while True:
        hoard.append(b"\x01" * chunk)
        next_at += step
        time.sleep(max(0.0, next_at - time.monotonic()))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "leak":
        _leak(float(sys.argv[2]))
    else:
        raise SystemExit("usage: _common.py leak MB_PER_S [TAG]")
