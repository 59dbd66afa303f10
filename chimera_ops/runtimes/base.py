"""The runtime contract: how a component is run. One base class for process, docker, external."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExitInfo:
    """How a component's main process ended."""

    code: int | None  # exit code, or None when killed by a signal
    signal: int | None
    at: float
    expected: bool  # the agent asked it to stop
    stderr_tail: str = ""  # the child's last stderr line (capped, redacted): why it ended

    @property
    def clean(self) -> bool:
        """Exit code 0 (or ended by the agent's own stop)."""
        return self.code == 0 or self.expected

    def describe(self) -> str:
        """`exit code 1`, `killed by SIGKILL`."""
        import signal as _signal

        if self.signal is not None:
            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by {name}"
        return f"exit code {self.code}"

    def summary(self) -> str:
        """`describe()`, plus the last stderr line of a failed exit:
        `exit code 1: ModuleNotFoundError: No module named 'psycopg'`."""
        what = self.describe()
        if self.stderr_tail and not self.expected and self.code not in (0, None):
            return f"{what}: {self.stderr_tail}"
        return what


Reporter = Callable[[str, str], None]
"""`report(kind, text)`: a runtime's account of a step (stop signal sent, grace over, SIGKILL),
recorded by the agent as an event of that kind."""


class StartError(Exception):
    """The component could not be started at all (missing executable, bad cwd...)."""


class Runtime(ABC):
    """Start, stop and observe one component."""

    report: Reporter | None = None  # set by the agent: steps of a stop become events

    def _report(self, kind: str, text: str) -> None:
        if self.report is not None:
            self.report(kind, text)

    @abstractmethod
    async def start(self) -> int | None:
        """Start the component; returns its main pid (None when not applicable)."""

    @abstractmethod
    async def stop(self, grace: float | None = None) -> None:
        """Stop signal, wait `grace`, then kill everything that is left."""

    @abstractmethod
    async def wait(self) -> ExitInfo:
        """Return when the main process ends."""

    @property
    @abstractmethod
    def pid(self) -> int | None:
        """The main pid while it runs."""

    def pids(self) -> list[int]:
        """Every pid of the component's tree (for memory / CPU accounting)."""
        return [self.pid] if self.pid else []

    def log_files(self) -> list[Path]:
        """The component's log files, newest first."""
        return []

    @property
    def manages_process(self) -> bool:
        """False for components the agent only watches."""
        return True
