"""Run the agent and the CLI as a user would: real processes, real config files."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import yaml

CHILDREN = str(Path(__file__).with_name("children.py"))
REPO = Path(__file__).resolve().parents[1]


def child(*args: object) -> list[str]:
    """argv of a test child program."""
    return [sys.executable, CHILDREN, *map(str, args)]


def http_component(port: int, **extra: object) -> dict[str, object]:
    """A `process` component serving GET /health on `port`, restarted quickly when it dies."""
    return {
        "runtime": "process",
        "command": child("http", port),
        "readiness": {"http": f"http://127.0.0.1:{port}/health", "period": "0.2s", "timeout": "1s"},
        "restart": {"policy": "always", "backoff": {"initial": "0.2s", "max": "2s"}},
        "stop": {"grace": "2s"},
        **extra,
    }


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "4m") mounted on `path` (0700; needs root), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte (`directory/filler`)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while fh.write(b"\0" * size):
                    pass
    return filler


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; returns its value or raises AssertionError."""
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
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def run_cli(config: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`chimera-ops --config CONFIG ARGS...` as a subprocess."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "chimera_ops", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(REPO),
    )


class AgentProcess:
    """A real `chimera-ops agent` on a config written into a temp dir."""

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        self.dir = directory
        config.setdefault("agent", {}).setdefault("state_dir", str(directory / "var"))
        # The default tick (5 s): tests see the agent as users run it.
        self.config_path = directory / "chimera-ops.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.state_dir = Path(config["agent"]["state_dir"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "agent.out"

    def start(self, wait: bool = True, env: dict[str, str] | None = None) -> AgentProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chimera_ops", "--config", str(self.config_path), "agent"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(REPO),
            env=env,
        )
        if wait:
            wait_for(
                lambda: (self.state_dir / "agent.sock").exists() or self.proc.poll() is not None,
                what="agent socket",
            )
            assert self.proc.poll() is None, self.output()
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(self.config_path, *args)

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        return json.loads(result.stdout)

    def component(self, name: str) -> dict[str, Any]:
        return next(c for c in self.status()["components"] if c["name"] == name)

    def wait_state(self, name: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            comp = self.component(name)
            return comp if comp["state"] == state else None

        return wait_for(check, timeout, f"{name} to be {state}")  # type: ignore[no-any-return]

    def events(self, component: str | None = None) -> list[dict[str, Any]]:
        args = ["events", "--json", "--limit", "1000"]
        if component:
            args += ["--component", component]
        return json.loads(self.cli(*args).stdout)["events"]  # type: ignore[no-any-return]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def pid_alive(pid: int) -> bool:
    """True when pid exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def listener_pid(port: int) -> int | None:
    """Pid of the process listening on 127.0.0.1:PORT (None when nobody listens)."""
    for conn in psutil.net_connections("tcp4"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None
