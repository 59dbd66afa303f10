"""Own children: a component run as a child process of the agent.

Rules (ARCHITECTURE.md, "Process runtime rules"):
- the exit is seen at once: the agent awaits the child's wait(), it never polls a pid;
- each child runs in its own session (so a terminal's Ctrl-C reaches the agent, not the child,
  and the agent decides the stop order);
- each child dies with the agent: PR_SET_PDEATHSIG=SIGKILL (via `setpriv`, so no unsafe
  preexec_fn in a threaded process), plus the death guard for descendants;
- stop = stop signal, grace, then SIGKILL of the whole tree, setsid'd descendants included;
- stdout and stderr go to a size-rotated file, through the log relay (`relay.py`): a separate
  process drains the pipes, so a stopped or busy agent never blocks a child's writes.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from chimera_ops.aio import within
from chimera_ops.config import ComponentConfig
from chimera_ops.filemodes import child_umask
from chimera_ops.redact import redact_text
from chimera_ops.runtimes.base import ExitInfo, Runtime, StartError
from chimera_ops.runtimes.relay_client import LogRelay
from chimera_ops.runtimes.tree import MARKER_ENV, kill_tree, signal_tree, tree_pids

if TYPE_CHECKING:
    from chimera_ops.config import ChimeraConfig

SETPRIV = shutil.which("setpriv")
DRAIN_TIMEOUT_S = 1.0  # after the exit: how long the last lines may take to reach the log
STDERR_TAIL_CHARS = 300  # an exit reason stays one readable line
_SECRET_KEY = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)


def _resolve_executable(argv0: str, cwd: Path | None, env: Mapping[str, str]) -> str:
    if "/" in argv0:
        path = Path(argv0) if Path(argv0).is_absolute() else (cwd or Path.cwd()) / argv0
        if not path.exists():
            raise StartError(f"executable {argv0!r} not found ({path})")
        if not os.access(path, os.X_OK):
            raise StartError(f"{argv0!r} is not executable ({path})")
        return str(path)
    found = shutil.which(argv0, path=env.get("PATH", os.defpath))
    if not found:
        raise StartError(f"executable {argv0!r} not found on PATH")
    return found


PYTHON_PLACEHOLDER = "{python}"


def expand_command(command: list[str]) -> list[str]:
    """`{python}` -> the interpreter chimera-ops itself runs on.

    A bare `python` is whatever PATH finds first: started as `.venv/bin/chimera-ops agent`
    without the venv on PATH, that is the system Python, without the project's packages.
    """
    return [sys.executable if part == PYTHON_PLACEHOLDER else part for part in command]


def _token_env_names(value: Any) -> Iterator[str]:
    """Every variable a `*token_env` setting names, anywhere in a config dump."""
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).endswith("token_env") and isinstance(item, str) and item:
                yield item
            else:
                yield from _token_env_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _token_env_names(item)


def withheld_env(config: ChimeraConfig) -> frozenset[str]:
    """The variables no child inherits from the agent: the API token (`agent.api.token_env`)
    and every other `token_env` secret of the config (engines' control tokens...).

    The agent reads them from its own environment; a child that inherited them could drive
    the agent's API or another engine. A component still gets one when its `env:` sets it,
    and an engine gets its own `trading.control.token_env` (it must check that token).
    """
    return frozenset(_token_env_names(config.model_dump()))


def child_environment(
    config: ComponentConfig, withheld: frozenset[str], marker: str
) -> dict[str, str]:
    """The environment of a component's child: the agent's minus the withheld secrets, then
    the component's own `env:` (on purpose, so it wins), then the marker."""
    own = config.trading.control.token_env if config.trading is not None else None
    env = {k: v for k, v in os.environ.items() if k not in withheld or k == own}
    return {**env, **config.env, MARKER_ENV: marker}


class ProcessRuntime(Runtime):
    """Runs `command` as a supervised child."""

    def __init__(
        self,
        name: str,
        config: ComponentConfig,
        log_dir: Path,
        marker: str,
        relay: LogRelay,
        withheld: frozenset[str] = frozenset(),
    ) -> None:
        self.name = name
        self.config = config
        self.withheld = withheld
        self.marker = marker
        self.relay = relay
        self.log_path = log_dir / f"{name}.log"
        self._proc: asyncio.subprocess.Process | None = None
        self._relay_key: str | None = None
        self._stderr_tail: list[str] = []
        self._stopping = False
        self._exit: ExitInfo | None = None
        self.create_time: float | None = None

    # ----------------------------------------------------------------- start
    async def start(self) -> int:
        """Spawn the child; StartError when it cannot be started at all."""
        cfg = self.config
        assert cfg.command, "process runtime needs a command"
        env = child_environment(cfg, self.withheld, self.marker)
        if cfg.cwd is not None and not cfg.cwd.is_dir():
            raise StartError(f"working directory {str(cfg.cwd)!r} does not exist")
        command = expand_command(cfg.command)
        executable = _resolve_executable(command[0], cfg.cwd, env)
        argv = [executable, *command[1:]]
        if SETPRIV:
            argv = [SETPRIV, "--pdeathsig", "SIGKILL", "--", *argv]
        pipes = self.relay.open_pipes(self.name, self.log_path, cfg.logs.max_size, cfg.logs.keep)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=pipes.stdout,
                stderr=pipes.stderr,
                cwd=str(cfg.cwd) if cfg.cwd else None,
                env=env,
                start_new_session=True,
                umask=child_umask(),  # the operator's, not the agent's private 077
            )
        except OSError as exc:
            raise StartError(f"cannot start {cfg.command[0]!r}: {exc.strerror or exc}") from exc
        finally:
            pipes.close()  # the child holds its own copies: EOF comes when its tree is gone
        self._proc = proc
        self._relay_key = pipes.key
        self._stderr_tail = []
        self._stopping = False
        self._exit = None
        try:
            self.create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            self.create_time = time.time()
        self.note(f"started pid {proc.pid}: {' '.join(cfg.command)}")
        return proc.pid

    # ----------------------------------------------------------------- observe
    @property
    def pid(self) -> int | None:
        if self._proc is None or self._proc.returncode is not None:
            return None
        return self._proc.pid

    def pids(self) -> list[int]:
        """The main pid and every descendant, including setsid'd ones carrying the marker."""
        if self.pid is None:
            return []
        return sorted(tree_pids(self.pid, self.marker))

    def log_files(self) -> list[Path]:
        rotated = [
            self.log_path.with_name(f"{self.log_path.name}.{i}")
            for i in range(1, self.config.logs.keep + 1)
        ]
        return [self.log_path] + [p for p in rotated if p.exists()]

    def note(self, text: str) -> None:
        """A line from the agent itself (start, exit), so the log tells the whole story."""
        logs = self.config.logs
        self.relay.note(self.log_path, logs.max_size, logs.keep, text)

    async def wait(self) -> ExitInfo:
        """Wait for the main process to end; then sweep what it left behind."""
        proc = self._proc
        assert proc is not None, "wait() before start()"
        returncode = await proc.wait()
        if self._exit is None:
            code, sig = (None, -returncode) if returncode < 0 else (returncode, None)
            at = time.time()
            # Leftovers (a setsid'd grandchild still holding a port) would block the restart.
            await asyncio.to_thread(kill_tree, None, proc.pid, self.marker)
            await self._drain()  # the last stderr lines are in once the pipes are drained
            self._exit = ExitInfo(
                code=code,
                signal=sig,
                at=at,
                expected=self._stopping,
                stderr_tail=self._last_stderr_line(),
            )
            self.note(f"pid {proc.pid} ended: {self._exit.describe()}")
        return self._exit

    def _last_stderr_line(self) -> str:
        """The child's last stderr line, redacted and capped: a crash's one-line why."""
        if not self._stderr_tail:
            return ""
        text = self._stderr_tail[-1].strip()
        secrets = [v for k, v in self.config.env.items() if _SECRET_KEY.search(k)]
        text = redact_text(text, secrets)
        return text if len(text) <= STDERR_TAIL_CHARS else text[: STDERR_TAIL_CHARS - 3] + "..."

    async def _drain(self) -> None:
        # The pipes close when the last holder is gone; do not wait forever for a stray holder
        # (the relay goes on draining it; only the exit reason goes without its last line).
        if self._relay_key is not None:
            tail = await self.relay.drained(self._relay_key, DRAIN_TIMEOUT_S)
            self._stderr_tail = tail or []
            self._relay_key = None

    # ----------------------------------------------------------------- stop
    async def stop(self, grace: float | None = None) -> None:
        """Stop signal to the group, wait `grace`, SIGKILL the whole tree."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            await asyncio.to_thread(kill_tree, None, None, self.marker)
            return
        self._stopping = True
        grace = self.config.stop.grace if grace is None else grace
        before = await asyncio.to_thread(tree_pids, proc.pid, self.marker)
        sig_name = self.config.stop.signal.name
        signal_tree({proc.pid}, proc.pid, int(self.config.stop.signal))
        # A SIGSTOPped child cannot act on SIGTERM until it is continued.
        signal_tree({proc.pid}, proc.pid, signal.SIGCONT)
        self._report("stop_signal", f"{sig_name} sent to pid {proc.pid}; SIGKILL after {grace:g}s")
        try:
            await within(asyncio.shield(proc.wait()), timeout=grace)
        except TimeoutError:
            text = f"pid {proc.pid} ignored {sig_name} for {grace:g}s: SIGKILL"
            self.note(text)
            self._report("stop_escalated", text)
        await asyncio.to_thread(kill_tree, proc.pid, proc.pid, self.marker)
        signal_tree(before, None, signal.SIGKILL)
        await self.wait()

    def close(self) -> None:
        """Nothing to release: the relay owns the log file."""
