"""Running a runbook: step by step, journaled and audited, under the procedure lock.

The decisions (what runs, what a result means, where to go next) are here; how the run looks
is the CLI's (`emit` receives one event per step). No click, no rich.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from chimera_ops.ops.runbook.parse import Runbook, Step
from chimera_ops.ops.runbook.variables import Command, fill

OUTPUT_CAP = 4000  # characters of a step's output kept (the tail)
RETRY_PAUSE = 1.0
# chimera-ops commands that take the procedure lock themselves: the runbook lends it to them.
# Plain `start`/`stop`/`restart` and `resume-trading` hold it in the agent while they run
# (agent/action_lock.py); `halt-trading` and `emergency-stop` never wait for it (the brakes).
SELF_LOCKING: tuple[tuple[str, ...], ...] = (
    ("restart",),
    ("start",),
    ("stop",),
    ("resume-trading",),
    ("restore",),
    ("maintenance",),
)


@dataclass
class StepResult:
    """What one step did."""

    n: int
    id: str
    kind: str
    status: str  # ok | failed | allowed-failure | not-held | skipped | would-run | refused
    command: str
    exit_code: int | None = None
    duration_s: float = 0.0
    output: str = ""
    note: str = ""
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunOptions:
    """How to run: the CLI's flags."""

    dry_run: bool = False
    checks: bool = False
    yes: bool = False
    allow_shell: bool = False
    from_step: str | None = None
    config_path: str | None = None
    confirm: Callable[[Step, Command], bool] | None = None  # None: not a terminal


@dataclass
class RunResult:
    """The verdict of a run."""

    runbook: str
    run_id: str | None
    state: str  # succeeded | failed | planned | refused
    steps: list[StepResult] = field(default_factory=list)
    stopped_at: str | None = None
    advice: str = ""
    message: str = ""
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["steps"] = [s.to_dict() for s in self.steps]
        return doc


def real_argv(argv: tuple[str, ...], config_path: str | None) -> list[str]:
    """`chimera-ops ...` runs this same chimera-ops (same interpreter, same config)."""
    if argv and argv[0] == "chimera-ops":
        head = [sys.executable, "-m", "chimera_ops"]
        if config_path:
            head += ["--config", config_path]
        return head + list(argv[1:])
    return list(argv)


def self_locking(argv: tuple[str, ...]) -> bool:
    """Does this step run a command that takes the procedure lock itself?"""
    if not argv or argv[0] != "chimera-ops":
        return False
    words = argv[1:]
    return any(
        words[:1] == (need[0],) and all(w in words for w in need[1:]) for need in SELF_LOCKING
    )


def execute(command: Command, config_path: str | None) -> tuple[int | None, str, float]:
    """Run one command without a shell (unless it is a shell step): exit code, output, seconds."""
    argv = real_argv(command.argv, config_path)
    started = time.monotonic()
    env = {**os.environ, "COLUMNS": "160", "CHIMERA_OPS_RUNBOOK": "1"}
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    except OSError as exc:
        return None, f"cannot run {argv[0]}: {exc}", time.monotonic() - started
    try:
        out, _ = proc.communicate(timeout=command.step.timeout)
        code: int | None = proc.returncode
        text = out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code = None
        text = out.decode(errors="replace") + f"\n(timed out after {command.step.timeout:g} s)"
    if len(text) > OUTPUT_CAP:
        text = f"... ({len(text) - OUTPUT_CAP} characters cut)\n" + text[-OUTPUT_CAP:]
    return code, text, time.monotonic() - started


def verdict(step: Step, code: int | None) -> str:
    """`yes`, `no` or `error`: exit 0 is the command's yes, exit 1 its no (a check with
    `expect=fail` holds on the no); anything else (2 usage, 127 not found, a timeout) is an
    error that stops the run whatever the step says."""
    if code not in (0, 1) or (step.kind == "action" and code != 0):
        return "error"
    return "yes" if (code == 1) == step.expect_fail else "no"


class Runner:
    """One run of one runbook."""

    def __init__(
        self,
        book: Runbook,
        values: dict[str, str],
        options: RunOptions,
        recorder: Any,
        emit: Callable[[str, dict[str, Any]], None],
        lock: Any = None,
    ) -> None:
        self.book = book
        self.values = values
        self.opt = options
        self.rec = recorder
        self.emit = emit
        self.lock = lock
        self.holder: Any = None
        self.lost_lock: str | None = None

    def start_index(self) -> int:
        if self.opt.from_step is None:
            return 0
        step = self.book.step(self.opt.from_step)
        if step is None:
            known = ", ".join(s.id for s in self.book.steps)
            raise ValueError(f"--from {self.opt.from_step}: no such step (steps: {known})")
        return step.n - 1

    def run(self) -> RunResult:
        begin = self.start_index()
        started = time.monotonic()
        state = "planned" if self.opt.dry_run else "running"
        result = RunResult(self.book.name, None, state)
        result.run_id = self.rec.begin(self.book, self.values, self.opt)
        if not self.opt.dry_run and self._needs_lock(begin):
            refused = self._take_lock()
            if refused:
                result.state, result.message = "refused", refused
                return self._end(result, started)
        try:
            self._loop(begin, result)
        finally:
            self._release()
        if result.state == "running":
            result.state = "succeeded"
        return self._end(result, started)

    def _end(self, result: RunResult, started: float) -> RunResult:
        result.duration_s = round(time.monotonic() - started, 3)
        self.rec.finish(result, self.opt.dry_run)
        return result

    def _needs_lock(self, begin: int) -> bool:
        return self.lock is not None and any(
            s.kind == "action" and not s.planned for s in self.book.steps[begin:]
        )

    def _take_lock(self) -> str | None:
        try:
            self.holder = self.lock.acquire(f"runbook {self.book.name}")
        except Exception as exc:  # noqa: BLE001 - LockHeld names the holder; Redis errors too
            return f"refused: {exc}"
        return None

    def _release(self) -> None:
        if self.holder is not None:
            with contextlib.suppress(Exception):  # a Redis lock still expires by its TTL
                self.lock.release(self.holder)
            self.holder = None

    def _loop(self, index: int, result: RunResult) -> None:
        seq = 0
        steps = self.book.steps
        while index < len(steps):
            step = steps[index]
            command = fill(step, self.values)
            seq += 1
            self.emit("step", {"step": step, "command": command.display()})
            outcome = self._one(step, command, seq)
            result.steps.append(outcome)
            self.emit("result", {"step": step, "result": outcome})
            nxt = self._next(step, outcome, result)
            if nxt is not None and self.lost_lock:
                result.state, result.stopped_at = "failed", step.id
                result.message = f"after step {step.id} the procedure lock could not be taken back: {self.lost_lock}"
                return
            if nxt is None:
                return
            index = nxt

    def _skip(self, step: Step, command: Command, status: str, note: str) -> StepResult:
        return StepResult(step.n, step.id, step.kind, status, command.display(), note=note)

    def _one(self, step: Step, command: Command, seq: int) -> StepResult:
        if step.planned:
            return self._skip(step, command, "skipped", "planned: needs a command not built yet")
        if step.shell and not self.opt.allow_shell:
            return self._skip(step, command, "skipped", "shell step: run with --allow-shell")
        if self.opt.dry_run and not (self.opt.checks and step.read_only):
            return self._skip(step, command, "would-run", "dry run: nothing was run")
        if step.destructive and not self.opt.yes:
            if self.opt.confirm is None:
                return self._skip(
                    step,
                    command,
                    "refused",
                    "destructive step: stdin is not a terminal, pass --yes",
                )
            if not self.opt.confirm(step, command):
                return self._skip(step, command, "refused", "declined by the operator")
        lent = self.holder is not None and self_locking(step.argv)
        if lent:
            self._release()
        try:
            outcome = self._attempts(step, command)
        finally:
            if lent and (refused := self._take_lock()):
                self.lost_lock = refused
        self.rec.step(seq, self.book, outcome, real_argv(command.argv, self.opt.config_path))
        return outcome

    def _attempts(self, step: Step, command: Command) -> StepResult:
        deadline = time.monotonic() + step.retry
        attempts, total = 0, 0.0
        while True:
            attempts += 1
            code, output, seconds = execute(command, self.opt.config_path)
            total += seconds
            said = verdict(step, code)
            if said != "no" or time.monotonic() + RETRY_PAUSE > deadline:
                break
            time.sleep(RETRY_PAUSE)
        if said == "yes":
            status = "ok"
        elif step.kind == "action":
            status = "allowed-failure" if step.may_fail else "failed"
        elif said == "no" and step.kind == "check":
            status = "not-held"
        else:
            status = "failed"
        return StepResult(
            step.n,
            step.id,
            step.kind,
            status,
            command.display(),
            code,
            round(total, 3),
            output,
            attempts=attempts,
        )

    def _next(self, step: Step, outcome: StepResult, result: RunResult) -> int | None:
        """The index of the next step, or None when the run stops here."""
        if outcome.status in ("ok", "allowed-failure", "skipped", "would-run"):
            return step.n
        if outcome.status == "not-held" and step.on_fail is not None:
            target = self.book.step(step.on_fail)
            assert target is not None  # the parser checked it
            outcome.note = f"condition does not hold: continuing at step {target.id}"
            return target.n - 1
        result.state = "failed"
        result.stopped_at = step.id
        result.advice = step.advice
        result.message = (
            f"stopped at step {step.n} ({step.id}): {outcome.note or outcome.status}; "
            f"continue with --from {step.id} once it is dealt with"
        )
        return None


class Recorder:
    """The journal (procedures tables, kind `runbook`) and the audit log of runs and steps.

    Both redacted like the support bundle (`Journal.scrub`, with the config's known secret
    values): a step's argv and output may quote a password or an API key."""

    def __init__(self, store: Any, known_secrets: Iterable[str] = ()) -> None:
        from chimera_ops.ops.procedures.journal import Journal

        self.store = store
        self.journal = Journal(store, known_secrets)
        self.job: str | None = None

    def begin(self, book: Runbook, values: dict[str, str], opt: RunOptions) -> str:
        try:
            user: str | None = getpass.getuser()
        except Exception:  # noqa: BLE001 - no passwd entry in some containers
            user = None
        params = {
            "runbook": book.name,
            "variables": values,
            "dry_run": opt.dry_run,
            "checks": opt.checks,
            "yes": opt.yes,
            "allow_shell": opt.allow_shell,
            "from": opt.from_step,
        }
        self.job = self.journal.create("runbook", params, user, os.getpid())
        return self.job

    def step(self, seq: int, book: Runbook, outcome: StepResult, argv: list[str]) -> None:
        import json

        assert self.job is not None
        self.journal.step_started(self.job, seq, outcome.id)
        detail = {
            "kind": outcome.kind,
            "argv": argv,
            "exit_code": outcome.exit_code,
            "duration_s": outcome.duration_s,
            "output": outcome.output[-1000:],
        }
        self.journal.step_finished(self.job, seq, outcome.status, json.dumps(detail))
        self.store.audit(
            "runbook step",
            {
                "runbook": book.name,
                "run": self.job,
                "step": outcome.id,
                "argv": self.journal.scrub(argv),
                "exit_code": outcome.exit_code,
            },
            result=outcome.status,
            duration_s=outcome.duration_s,
        )

    def finish(self, result: RunResult, dry_run: bool) -> None:
        assert self.job is not None
        summary = {
            "stopped_at": result.stopped_at,
            "message": result.message,
            "steps": [{"id": s.id, "status": s.status} for s in result.steps],
        }
        state = {"refused": "aborted"}.get(result.state, result.state)
        self.journal.finish(self.job, state, summary)
        if not dry_run:
            self.store.audit(
                "runbook run",
                {"runbook": result.runbook, "run": self.job, "stopped_at": result.stopped_at},
                result=result.state,
                duration_s=result.duration_s,
            )
