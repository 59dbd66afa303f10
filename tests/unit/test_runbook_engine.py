"""The runbook engine without an agent: parsing, variables, verdicts, and runs of real small
commands (`touch`, `test`, `sh`) through the Runner, with the journal and audit in a real store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chimera_ops.ops.proclock import FileLock
from chimera_ops.ops.runbook.parse import RunbookError, parse_runbook
from chimera_ops.ops.runbook.runner import Recorder, Runner, RunOptions, verdict
from chimera_ops.ops.runbook.variables import VariableError, fill, parse_sets, resolve
from chimera_ops.store import Store


def page(tmp: Path, body: str, name: str = "demo") -> Path:
    # Every variable a step uses is declared with its type; `v` and `component` only where used.
    extra = "".join(
        f", `{n}:{t}`" for n, t in (("v", "text"), ("component", "component")) if "{" + n in body
    )
    variables = f"`dir:text`, `who:text=me`{extra}"
    path = tmp / f"{name}.md"
    path.write_text(f"# Demo\n\n**When:** testing\n**Variables:** {variables}\n\n{body}")
    return path


def block(attrs: str, cmd: str, advice: str = "") -> str:
    return f"```sh {{{attrs}}}\n{cmd}\n```\n\n{advice}\n\n"


def run(
    tmp: Path, body: str, sets: dict[str, str] | None = None, lock: Any = None, **opts: Any
) -> tuple[Any, Store]:
    book = parse_runbook(page(tmp, body))
    values = resolve(book, {"dir": str(tmp), **(sets or {})}, {})
    store = Store.open_in(tmp / "var")
    result = Runner(
        book, values, RunOptions(**opts), Recorder(store), lambda e, d: None, lock
    ).run()
    return result, store


def test_parse_steps_headers_and_advice(tmp_path: Path) -> None:
    body = block("step=check id=a expect=fail else=c retry=2s", "test -e {dir}/x", "Bad: go on.")
    body += "### 2. heading\n\n" + block(
        "step=action id=b destructive may-fail timeout=5s", "touch '{dir}/a b'"
    )
    body += block("step=verify id=c", "test -e {dir}/x")
    book = parse_runbook(page(tmp_path, body))
    a, b, c = book.steps
    assert (a.kind, a.expect_fail, a.on_fail, a.retry, a.advice) == (
        "check",
        True,
        "c",
        2.0,
        "Bad: go on.",
    )
    assert b.argv == ("touch", "{dir}/a b") and b.destructive and b.may_fail and b.timeout == 5.0
    assert b.heading == "2. heading" and b.advice == ""
    assert book.required == ("dir",) and book.defaults == {"who": "me"}
    assert book.step("3") is c and book.step("c") is c


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (block("step=check id=a bogus", "ls"), "unknown step attribute 'bogus'"),
        (block("step=check id=a", "ls") + block("step=verify id=a", "ls"), "duplicate step id"),
        (block("step=check id=a else=zz", "ls"), "else=zz: no step has that id"),
        (block("step=action id=a", "ls\nls"), "one command per step"),
        (block("step=action id=a expect=fail", "ls"), "expect= is for checks and verifies"),
        (block("step=verify id=a destructive", "ls"), "destructive and may-fail are for actions"),
        (block("step=check id=A", "ls"), "id='A'"),
        (block("step=check id=a retry=soon", "ls"), "retry=soon"),
        ("```sh step=check id=a\nls\n```\n", "must be in {...}"),
        ("```sh {step=check id=a}\nls\n", "code block never closed"),
    ],
)
def test_malformed_blocks_name_the_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(RunbookError) as info:
        parse_runbook(page(tmp_path, body))
    assert message in info.value.message and info.value.line >= 6, info.value


def test_values_stay_one_argv_element_and_shell_values_are_quoted(tmp_path: Path) -> None:
    body = block("step=action id=a", "echo pre-{v}-post") + block(
        "step=action id=b shell", "echo {v}"
    )
    book = parse_runbook(page(tmp_path, body))
    values = resolve(book, {"dir": "d", "v": "x; rm -rf /"}, {})
    assert fill(book.steps[0], values).argv == ("echo", "pre-x; rm -rf /-post")
    assert fill(book.steps[1], values).shell_text == "echo 'x; rm -rf /'"
    with pytest.raises(VariableError, match="needs v"):
        resolve(book, {"dir": "d"}, {})
    for bad in ("--all", "a\nb", "a\x00"):
        with pytest.raises(VariableError):
            resolve(book, {"dir": "d", "v": bad}, {})
    with pytest.raises(VariableError, match="NAME=VALUE"):
        parse_sets(["novalue"])


def test_component_indirection_and_literal_braces(tmp_path: Path) -> None:
    body = block("step=check id=a", "tail -n 1 {component.log}") + block(
        "step=check id=b", "echo {{x}}"
    )
    book = parse_runbook(page(tmp_path, body))
    values = resolve(book, {"dir": "d", "component": "web"}, {"web.log": "/l/web.log"})
    assert fill(book.steps[0], values).argv == ("tail", "-n", "1", "/l/web.log")
    assert fill(book.steps[1], values).argv == ("echo", "{x}")


def test_verdicts() -> None:
    from chimera_ops.ops.runbook.parse import Step

    check = Step(1, "a", "check", 1, "x")
    negative = Step(1, "a", "check", 1, "x", expect_fail=True)
    action = Step(1, "a", "action", 1, "x")
    assert [verdict(check, c) for c in (0, 1, 2, None)] == ["yes", "no", "error", "error"]
    assert [verdict(negative, c) for c in (0, 1, 2, 127)] == ["no", "yes", "error", "error"]
    assert [verdict(action, c) for c in (0, 1)] == ["yes", "error"]


def test_failing_check_stops_with_advice_and_from_resumes(tmp_path: Path) -> None:
    body = block("step=check id=ready", "test -e {dir}/ready", "Create it, then --from ready.")
    body += block("step=action id=make", "touch {dir}/made") + block(
        "step=verify id=made", "test -e {dir}/made"
    )
    result, store = run(tmp_path, body)
    assert result.state == "failed" and result.stopped_at == "ready"
    assert result.advice == "Create it, then --from ready." and "--from ready" in result.message
    assert not (tmp_path / "made").exists()
    (tmp_path / "ready").touch()
    result, store = run(tmp_path, body, from_step="ready")
    assert result.state == "succeeded" and [s.status for s in result.steps] == ["ok"] * 3
    audit = [a for a in store.audit_entries() if a["command"] == "runbook step"]
    assert [a["args"]["step"] for a in audit] == ["ready", "ready", "make", "made"]
    assert audit[2]["args"]["argv"] == ["touch", f"{tmp_path}/made"]


def test_else_jumps_and_may_fail_goes_on(tmp_path: Path) -> None:
    body = block("step=check id=gone expect=fail else=last", "test -e {dir}/x")
    body += block("step=action id=skipped-by-jump", "touch {dir}/never")
    body += block("step=action id=last may-fail", "test -e {dir}/nothing")
    (tmp_path / "x").touch()  # it exists: "gone" does not hold
    result, _ = run(tmp_path, body)
    assert result.state == "succeeded", result
    assert [(s.id, s.status) for s in result.steps] == [
        ("gone", "not-held"),
        ("last", "allowed-failure"),
    ]
    assert not (tmp_path / "never").exists()


def test_destructive_needs_yes_or_a_yes_from_the_operator(tmp_path: Path) -> None:
    body = block("step=action id=wipe destructive", "touch {dir}/wiped")
    result, _ = run(tmp_path, body)  # no terminal: confirm is None
    assert result.state == "failed" and result.steps[0].status == "refused"
    assert not (tmp_path / "wiped").exists()
    result, _ = run(tmp_path, body, confirm=lambda step, cmd: False)
    assert result.steps[0].note == "declined by the operator" and not (tmp_path / "wiped").exists()
    result, _ = run(tmp_path, body, yes=True)
    assert result.state == "succeeded" and (tmp_path / "wiped").exists()


def test_dry_run_runs_nothing_and_checks_runs_only_read_only(tmp_path: Path) -> None:
    body = block("step=check id=look", "touch {dir}/looked") + block(
        "step=action id=act", "touch {dir}/acted"
    )
    result, store = run(tmp_path, body, dry_run=True)
    assert result.state == "planned" and {s.status for s in result.steps} == {"would-run"}
    assert not (tmp_path / "looked").exists() and store.audit_entries() == []
    result, _ = run(tmp_path, body, dry_run=True, checks=True)
    assert [s.status for s in result.steps] == ["ok", "would-run"]
    assert (tmp_path / "looked").exists() and not (tmp_path / "acted").exists()


def test_shell_steps_need_allow_shell_and_get_quoted_values(tmp_path: Path) -> None:
    body = block("step=action id=sh shell", "printf %s {v} > {dir}/out")
    result, _ = run(tmp_path, body, {"v": "a; touch pwned"})
    assert result.steps[0].status == "skipped" and not (tmp_path / "out").exists()
    result, _ = run(tmp_path, body, {"v": "a; touch pwned"}, allow_shell=True)
    assert result.state == "succeeded" and (tmp_path / "out").read_text() == "a; touch pwned"
    assert not (Path.cwd() / "pwned").exists()


def test_a_held_procedure_lock_refuses_a_run_that_changes_the_stack(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "procedure.lock")
    other = FileLock(tmp_path / "procedure.lock")
    holder = other.acquire("safe-restart", "job-1")
    body = block("step=action id=act", "touch {dir}/acted")
    try:
        result, store = run(tmp_path, body, lock=lock)
        assert result.state == "refused" and "safe-restart job-1" in result.message
        assert not (tmp_path / "acted").exists()
        result, _ = run(tmp_path, body, lock=lock, dry_run=True)  # a plan needs no lock
        assert result.state == "planned"
    finally:
        other.release(holder)
    result, _ = run(tmp_path, body, lock=lock)
    assert result.state == "succeeded" and lock.current() is None  # released at the end


def test_list_reports_a_malformed_page_with_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from click.testing import CliRunner

    from chimera_ops.cli.main import cli

    page(tmp_path, block("step=check id=ok", "true"), name="good")
    page(tmp_path, block("step=check id=x wat", "true"), name="bad")
    monkeypatch.setenv("CHIMERA_OPS_RUNBOOKS", str(tmp_path))
    result = CliRunner().invoke(cli, ["runbook", "list", "--json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.output)
    assert [r["name"] for r in doc["runbooks"]] == ["good"]
    assert doc["errors"][0]["line"] == 6 and "'wat'" in doc["errors"][0]["error"]
    result = CliRunner().invoke(cli, ["runbook", "list"])
    assert result.exit_code == 1 and "bad.md:6" in result.output


def test_commands_that_take_the_lock_themselves_are_lent_it() -> None:
    from chimera_ops.ops.runbook.runner import real_argv, self_locking

    assert self_locking(("chimera-ops", "restart", "--safe", "--yes"))
    assert self_locking(("chimera-ops", "restore", "ID", "--yes"))
    assert self_locking(("chimera-ops", "maintenance", "weekly", "--fix"))
    assert self_locking(("chimera-ops", "restart", "engine", "--yes"))  # held in the agent
    assert not self_locking(("chimera-ops", "halt-trading"))  # the brake never waits for it
    assert not self_locking(("restore",))
    argv = real_argv(("chimera-ops", "status"), "/etc/c.yaml")
    assert argv[1:] == ["-m", "chimera_ops", "--config", "/etc/c.yaml", "status"]
