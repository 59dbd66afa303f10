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
    cause: str = ""  # a proven cause that replaces the code ("OOM-killed at limit 64 MiB")
    # Who brings it back by itself, when not the agent ("Docker (restart policy 'always')"):
    # the agent then records that restart instead of racing it with its own.
    restarted_by: str = ""

    @property
    def clean(self) -> bool:
        """Exit code 0 (or ended by the agent's own stop)."""
        return self.code == 0 or self.expected

    def describe(self) -> str:
        """`exit code 1`, `killed by SIGKILL`, or the proven cause (`OOM-killed at limit ...`)."""
        import signal as _signal

        if self.cause:
            return self.cause
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


class RuntimeUnavailable(Exception):
    """The component cannot be seen right now (its Docker engine does not answer, its container
    does not exist): the component is `unknown`, not `fatal`, and the agent looks again."""


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

    @property
    def owns_children(self) -> bool:
        """True when the component's processes are the agent's children (recorded in the store
        so that a restarted agent ends them). Containers are not: they are adopted."""
        return self.manages_process

    @property
    def survives_agent(self) -> bool:
        """True when the component keeps running after the agent stops (a container): agent
        shutdown stops watching it instead of stopping it."""
        return False

    @property
    def unavailable(self) -> str | None:
        """Why the component cannot be seen right now (None: it can)."""
        return None

    async def log_text(self, lines: int) -> str | None:
        """The last `lines` of the component's logs when they are not files (container logs);
        None: read `log_files()`."""
        return None

    async def incident_parts(self) -> dict[str, str]:
        """Extra files for an incident capture (name -> text), e.g. `docker inspect`."""
        return {}

    def start_grace(self) -> float | None:
        """The component's own start grace in seconds (a container HEALTHCHECK's start_period
        left at this start), used as its probes' start_period. None: the probes' own."""
        return None

    def details(self) -> dict[str, object] | None:
        """Runtime-specific status fields (container id, restart policy, who restarted it)."""
        return None
