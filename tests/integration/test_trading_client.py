"""EngineControl against a real paper engine (PostgreSQL + Redis) and a real command transport."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chimera_ops.paper.harness import EngineProcess, scratch_database
from chimera_ops.trading import DrainTimeout, EngineControl, TradingControlError, TradingState
from chimera_ops.trading_spec import TradingConfig
from tests.harness import pid_alive, wait_for
from tests.services import free_port

TOKEN = "tok-" + uuid.uuid4().hex
TOKEN_ENV = "CHIMERA_TEST_TRADING_TOKEN"


def _http(url: str, token_env: str | None = TOKEN_ENV, **extra: Any) -> TradingConfig:
    return TradingConfig.model_validate(
        {"control": {"http": url, "token_env": token_env, "timeout": "5s"}, **extra}
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def engine(postgres_service: str, redis_service: str, tmp_path: Path) -> Iterator[EngineProcess]:
    with scratch_database(postgres_service) as dsn:
        eng = EngineProcess(
            free_port(),
            dsn,
            redis_url=redis_service,
            args=["--rate", "50"],
            token=TOKEN,
            redis_prefix=f"test-{uuid.uuid4().hex[:8]}",
            log_dir=tmp_path,
        ).start()
        try:
            eng.wait_healthy()
            yield eng
        finally:
            eng.stop()


@pytest.fixture
def control(engine: EngineProcess) -> EngineControl:
    return EngineControl("paper", _http(engine.base_url), {TOKEN_ENV: TOKEN})


def test_halt_drains_and_is_idempotent_then_resume(control: EngineControl) -> None:
    first = run(control.state())
    assert isinstance(first, TradingState) and first.trading == "active"
    # The strategy places orders continuously; see some open before halting so the drain is real.
    wait_for(lambda: run(control.state()).open_orders > 0, what="open orders on the engine")

    halted = run(control.halt("integration test halt"))
    assert halted.trading == "halted"
    assert halted.reason == "integration test halt"
    drained = run(control.wait_drained(timeout=20))
    assert drained.open_orders == 0 and drained.halted

    again = run(control.halt("second halt"))
    assert again.halted and again.extra.get("changed") is False

    resumed = run(control.resume("integration test resume"))
    assert resumed.trading == "active"
    assert run(control.resume("again")).extra.get("changed") is False
    assert run(control.state()).trading == "active"


def test_wrong_token_is_a_401_error_and_changes_nothing(
    engine: EngineProcess, control: EngineControl
) -> None:
    wrong_value = "wrong-" + uuid.uuid4().hex
    wrong = EngineControl("paper", _http(engine.base_url), {TOKEN_ENV: wrong_value})
    with pytest.raises(TradingControlError) as info:
        run(wrong.halt("must not happen"))
    message = str(info.value)
    assert "401" in message and "paper" in message
    assert wrong_value not in message and TOKEN not in message
    assert run(control.state()).trading == "active"


def test_no_token_sent_says_to_configure_token_env(engine: EngineProcess) -> None:
    bare = EngineControl("paper", _http(engine.base_url, token_env=None), {})
    with pytest.raises(TradingControlError, match="401.*token_env"):
        run(bare.state())


def test_missing_token_variable_is_named() -> None:
    with pytest.raises(TradingControlError) as info:
        EngineControl("paper", _http("http://127.0.0.1:9"), {})
    assert TOKEN_ENV in str(info.value)


def test_engine_down_is_a_clear_error() -> None:
    port = free_port()
    control = EngineControl("paper", _http(f"http://127.0.0.1:{port}"), {TOKEN_ENV: TOKEN})
    with pytest.raises(TradingControlError) as info:
        run(control.state())
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "unreachable" in message


# --------------------------------------------------------------------------- command transport

ENGINE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    op, path = sys.argv[1], sys.argv[2]
    doc = json.load(open(path)) if os.path.exists(path) else {
        "trading": "active", "open_orders": 3, "since": 1.0, "reason": "boot"}
    mode = doc.get("mode", "ok")
    if mode == "fail":
        sys.stderr.write("broker session expired\\n")
        sys.exit(3)
    if mode == "garbage":
        print("not json at all")
        sys.exit(0)
    if mode == "hang":
        open(path + ".pid", "w").write(str(os.getpid()))
        time.sleep(120)
    if op in ("halt", "resume"):
        request = json.loads(sys.stdin.read() or "{}")
        assert request["reason"] == os.environ["CHIMERA_TRADING_REASON"], request
        doc["trading"] = "halted" if op == "halt" else "active"
        doc["reason"] = request["reason"]
        if op == "halt" and request.get("cancel_open_orders") and not doc.get("sticky"):
            doc["open_orders"] = 0
    json.dump(doc, open(path, "w"))
    print(json.dumps({k: v for k, v in doc.items() if k not in ("mode", "sticky")}))
    """
)


def _command_control(
    tmp_path: Path, timeout: str = "10s", **doc: Any
) -> tuple[EngineControl, Path]:
    script = tmp_path / "engine_ctl.py"
    script.write_text(ENGINE_SCRIPT)
    state = tmp_path / "state.json"
    if doc:
        state.write_text(json.dumps({"trading": "active", "open_orders": 3, "since": 1.0, **doc}))
    argv = {op: [sys.executable, str(script), op, str(state)] for op in ("state", "halt", "resume")}
    cfg = TradingConfig.model_validate({"control": {"command": argv, "timeout": timeout}})
    return EngineControl("cmd-engine", cfg, {"PATH": "/usr/bin:/bin"}), state


def test_command_transport_halt_resume(tmp_path: Path) -> None:
    control, _ = _command_control(tmp_path)
    assert run(control.state()).open_orders == 3
    halted = run(control.halt("via command"))
    assert halted.halted and halted.reason == "via command"
    assert run(control.wait_drained(timeout=5)).open_orders == 0
    assert run(control.resume("back")).trading == "active"


def test_command_transport_nonzero_exit_reports_stderr(tmp_path: Path) -> None:
    control, _ = _command_control(tmp_path, mode="fail")
    with pytest.raises(TradingControlError, match="exited with 3.*broker session expired"):
        run(control.halt("x"))


def test_command_transport_bad_json(tmp_path: Path) -> None:
    control, _ = _command_control(tmp_path, mode="garbage")
    with pytest.raises(TradingControlError, match="did not answer JSON.*not json at all"):
        run(control.state())


def test_command_transport_timeout_kills_the_command(tmp_path: Path) -> None:
    control, state = _command_control(tmp_path, timeout="1s", mode="hang")
    with pytest.raises(TradingControlError, match="killed"):
        run(control.state())
    pid = int(Path(str(state) + ".pid").read_text())
    wait_for(lambda: not pid_alive(pid), what="the hung command to be gone")


def test_drain_timeout_carries_last_state(tmp_path: Path) -> None:
    control, _ = _command_control(tmp_path, sticky=True)
    run(control.halt("orders stuck at the exchange"))
    with pytest.raises(DrainTimeout) as info:
        run(control.wait_drained(timeout=0.3, poll=0.05))
    assert info.value.state.open_orders == 3 and info.value.state.halted
    assert "3 open order" in str(info.value)
