"""The runtime contract: how a component is run. One base class for process, docker, external."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExitInfo:
    """How a component's main process ended."""

    code: int | None  # exit code, or None when killed by a signal
    signal: int | None
    at: float
    expected: bool  # the agent asked it to stop

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


class StartError(Exception):
    """The component could not be started at all (missing executable, bad cwd...)."""


class Runtime(ABC):
    """Start, stop and observe one component."""

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
