"""Runbooks run only trusted files and typed values, through the real CLI: real files with real
owners and modes (root runs the tests; `nobody` is the other user), real symlinks; a marker the
first step would create proves that nothing ran."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import run_cli

NOBODY = 65534
PAGE = """# Demo

**When:** testing
**Variables:** `port:port=8701`, `database:identifier=chimera`, `target:path`, `pid:pid=4242`

```sh {{step=check id=look}}
touch {marker}
```

```sh {{step=verify id=use}}
echo {{port}} {{database}} {{target}} {{pid}}
```
"""


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A config (no agent needed), a private runbook dir with one page, the marker path."""
    state = tmp_path / "var"
    (state / "logs").mkdir(parents=True)
    config = tmp_path / "chimera-ops.yaml"
    engine = {"runtime": "external", "readiness": {"tcp": "127.0.0.1:1"}}
    config.write_text(
        yaml.safe_dump({"agent": {"state_dir": str(state)}, "components": {"engine": engine}})
    )
    books = tmp_path / "books"
    books.mkdir(mode=0o755)
    marker = tmp_path / "ran"
    page = books / "demo.md"
    page.write_text(PAGE.format(marker=marker))
    page.chmod(0o644)
    monkeypatch.setenv("CHIMERA_OPS_RUNBOOKS", str(books))
    return {"config": config, "books": books, "page": page, "marker": marker, "state": state}


def _run(stack: dict[str, Path], *args: str, page: str = "demo") -> tuple[int, dict[str, Any]]:
    done = run_cli(stack["config"], "runbook", "run", page, *args, "--json")
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def _runs(state: Path) -> int:
    db = state / "chimera.db"
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM procedures").fetchone()[0])
    finally:
        con.close()


def _refused(stack: dict[str, Path], words: str, *args: str) -> None:
    for extra in ((), ("--dry-run", "--checks")):
        code, doc = _run(stack, "--set", f"target={stack['state']}/logs", *args, *extra)
        assert code == 1, doc
        assert doc["error"].startswith("refused: ") and words in doc["error"], doc
        assert "sudo" in doc["hint"]
    assert not stack["marker"].exists(), "a step of an untrusted runbook ran"
    assert _runs(stack["state"]) == 0


def test_a_trusted_page_runs(stack: dict[str, Path]) -> None:
    code, doc = _run(stack, "--set", f"target={stack['state']}/logs")
    assert code == 0 and doc["state"] == "succeeded", doc
    assert stack["marker"].exists()
    assert doc["steps"][1]["command"] == f"echo 8701 chimera {stack['state']}/logs 4242"


def test_a_world_writable_page_is_refused(stack: dict[str, Path]) -> None:
    stack["page"].chmod(0o666)
    _refused(stack, f"runbook {stack['page']} is writable by group and others (mode 0666)")
    stack["page"].chmod(0o620)
    _refused(stack, "is writable by group (mode 0620)")


def test_a_page_owned_by_another_user_is_refused(stack: dict[str, Path]) -> None:
    os.chown(stack["page"], NOBODY, NOBODY)
    _refused(stack, f"runbook {stack['page']} is owned by nobody (uid {NOBODY}), not by root")


def test_a_page_in_a_world_writable_or_foreign_dir_is_refused(stack: dict[str, Path]) -> None:
    books = stack["books"]
    books.chmod(0o777)
    _refused(stack, f"its directory {books} is writable by group and others (mode 0777)")
    books.chmod(0o1777)  # the sticky bit does not make the page's own directory safe
    _refused(stack, f"its directory {books} is writable")
    books.chmod(0o755)
    os.chown(books, NOBODY, NOBODY)
    _refused(stack, f"its directory {books} is owned by nobody")
    os.chown(books, 0, 0)
    # Up the path: a world-writable parent (no sticky bit) lets anyone swap the whole dir.
    books.parent.chmod(0o777)
    try:
        _refused(stack, f"the directory {books.parent} is writable by group and others")
    finally:
        books.parent.chmod(0o700)


def test_a_symlinked_page_is_refused(stack: dict[str, Path], tmp_path: Path) -> None:
    real = tmp_path / "real.md"
    stack["page"].rename(real)
    stack["page"].symlink_to(real)
    _refused(stack, "is a symlink")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("port=,,1", "port=',,1' (port): a port is a number from 1 to 65535"),
        ("port=70000", "a port is a number from 1 to 65535"),
        ("port=0", "a port"),
        ("database=dbname=otherdb host=10.0.0.9", "(identifier): an identifier is"),
        ("database=postgres://x/y", "(identifier)"),
        ("pid=1", "(pid): a pid is a number from 2"),
        ("pid=42 43", "(pid)"),
        ("target=/var/lib/postgresql", "(path): not under a configured directory"),
        ("target=relative/logs", "(path): a path must be absolute"),
        ("state_dir=/var/lib/postgresql", "state_dir comes from the config"),
        ("prot=1", "not a variable of runbook demo"),
    ],
)
def test_a_mistyped_value_is_refused_before_any_step(
    stack: dict[str, Path], value: str, words: str
) -> None:
    target = f"target={stack['state']}/logs"
    sets = ["--set", value] if value.startswith("target=") else ["--set", target, "--set", value]
    code, doc = _run(stack, *sets)
    assert code == 2 and words in doc["error"] and doc["hint"] == "nothing was run", doc
    assert not stack["marker"].exists() and _runs(stack["state"]) == 0


def test_a_path_that_leads_out_of_the_state_dir_is_refused(stack: dict[str, Path]) -> None:
    link = stack["state"] / "logs" / "elsewhere"
    link.symlink_to("/etc", target_is_directory=True)
    code, doc = _run(stack, "--set", f"target={link}")
    assert code == 2 and "(it leads to /etc)" in doc["error"], doc
    assert not stack["marker"].exists()


def test_shipped_pages_refuse_values_in_the_tools_own_syntax(stack: dict[str, Path]) -> None:
    """The issue's cases on the shipped pages: nothing runs, nothing is journaled."""
    os.environ.pop("CHIMERA_OPS_RUNBOOKS")
    cases = [
        ("port-conflict", ["--set", "port=,,55432", "--yes"], "port=',,55432' (port)"),
        (
            "slow-queries",
            ["--set", "db=engine", "--set", "database=dbname=otherdb host=10.0.0.9", "--yes"],
            "database='dbname=otherdb host=10.0.0.9' (identifier)",
        ),
        ("disk-full", ["--set", "state_dir=/var/lib/postgresql", "--yes"], "state_dir comes"),
        ("port-conflict", ["--set", "port=8701", "--set", "component=x; rm -rf /"], "component"),
    ]
    for page, args, words in cases:
        code, doc = _run(stack, *args, page=page)
        assert code == 2 and words in doc["error"] and doc["hint"] == "nothing was run", doc
    assert _runs(stack["state"]) == 0
    # The page's own defaults are typed too: a default naming no component of this config.
    code, doc = _run(stack, "--dry-run", page="queue-overload")
    assert code == 2 and "mq='rabbitmq' (component): not a component" in doc["error"], doc
    code, doc = _run(stack, "--dry-run", "--set", "mq=engine", page="queue-overload")
    assert code == 0 and doc["state"] == "planned", doc


def test_a_page_with_an_untyped_variable_does_not_parse(stack: dict[str, Path]) -> None:
    stack["page"].write_text(PAGE.format(marker=stack["marker"]).replace("`pid:pid=4242`", "`pid`"))
    code, doc = _run(stack, "--set", f"target={stack['state']}/logs")
    assert code == 1 and "variable `pid` has no type" in doc["error"], doc
    done = run_cli(stack["config"], "runbook", "list", "--json")
    errors = json.loads(done.stdout)["errors"]
    assert done.returncode == 1 and errors[0]["line"] == 4, errors
    assert not stack["marker"].exists()
