"""No internal class name in an operator's message: `error_text` and a procedure step that
fails on one of our own exceptions (once "[FAIL] 5. settle: _NotBack: engine is not healthy")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chimera_ops.errors import describe_exception, error_text
from chimera_ops.ops.procedures.steps import StepFailed, Steps
from chimera_ops.trading import TradingControlError


class _NotBack(Exception):
    pass


class _Quiet(Exception):
    """The engine did not come back."""


def test_our_own_classes_are_never_named() -> None:
    assert error_text(_NotBack("engine is not healthy")) == "engine is not healthy"
    assert error_text(TradingControlError("engine 'x' refused")) == "engine 'x' refused"
    # An empty message falls back to what the class says, not to its name.
    assert error_text(_Quiet()) == "The engine did not come back"
    # Every caller of describe_exception (probes, docker, alerts, bundles) gets the same rule.
    assert describe_exception(TradingControlError("engine 'x' refused")) == "engine 'x' refused"


def test_standard_classes_keep_their_meaningful_names() -> None:
    assert (
        error_text(ConnectionRefusedError("[Errno 111]")) == "ConnectionRefusedError: [Errno 111]"
    )
    assert error_text(TimeoutError()) == "TimeoutError (timed out)"


class _Journal:
    def __init__(self) -> None:
        self.finished: list[tuple[int, str, str]] = []

    def step_started(self, job: str, n: int, name: str) -> None:
        pass

    def step_finished(self, job: str, n: int, state: str, detail: str) -> None:
        self.finished.append((n, state, detail))


def test_a_failed_step_is_journaled_without_the_class_name() -> None:
    journal = _Journal()
    audited: list[str] = []
    steps = Steps(journal, "job-1", lambda step, result, s: audited.append(result))  # type: ignore[arg-type]

    async def settle() -> str:
        raise _NotBack("engine is not healthy")

    with pytest.raises(StepFailed) as caught:
        asyncio.run(steps.run("settle", settle))
    texts: list[Any] = [str(caught.value), journal.finished[0][2], audited[0]]
    assert journal.finished[0][:2] == (1, "failed")
    for text in texts:
        assert "_NotBack" not in text and "engine is not healthy" in text


def test_a_crashed_doctor_check_is_reported_without_the_class_name() -> None:
    from chimera_ops.ops.doctor.plan import _safe

    def check() -> Any:
        raise _NotBack("port 8701 held by pid 42")

    result = _safe(check)
    assert not isinstance(result, list)
    assert result.status == "fail" and "_NotBack" not in result.summary
    assert result.summary == "check crashed: port 8701 held by pid 42"


def test_a_crashed_maintenance_check_is_reported_without_the_class_name(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from chimera_ops.config import load_config
    from chimera_ops.ops.maintenance.capacity import DiskCheck
    from chimera_ops.ops.maintenance.runner import run_schedule

    path = tmp_path / "chimera-ops.yaml"
    web = {"runtime": "process", "command": ["sleep", "60"]}
    path.write_text(
        yaml.safe_dump({"agent": {"state_dir": str(tmp_path / "var")}, "components": {"web": web}})
    )

    def broken(self: DiskCheck, ctx: Any) -> Any:
        raise _NotBack("statvfs of the state dir failed")

    monkeypatch.setattr(DiskCheck, "run", broken)
    report = run_schedule(load_config(str(path)), "weekly", only={"disk_free"})
    [result] = [r for r in report.results if r.check == "disk_free"]
    assert result.status == "unknown"
    assert result.advice == "check failed: statvfs of the state dir failed"
