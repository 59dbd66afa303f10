"""Runbooks: every one the alert rules name exists, and none drifts from the CLI.

(a) every `runbooks/*.md` named by a `runbook` annotation in deploy/prometheus/alerts.yml
    exists (both branches of a `{{ if match ... }}a{{ else }}b{{ end }}` template);
(b) every `chimera-ops <command> [<subcommand>]` written in a fenced code block of a runbook is
    a real command: `<words> --help` exits 0 through click's CliRunner;
(c) every runbook has at least one **check**, **action** and **verify** step;
(d) no destructive step before trading is halted, no resume before `chimera-ops status`;
(e) the executable steps (runbooks/README.md): every step of every runbook parses; every
    `chimera-ops` command a step runs exists with the flags it passes (a `planned` step's command
    must not exist yet: once it lands, the step is unmarked); every other program a step runs is
    installed; every runbook passes `runbook run --dry-run`; the parser reports a malformed block
    with its file and line.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from chimera_ops.cli.main import cli
from chimera_ops.ops.runbook.parse import parse_runbook

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "runbooks"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

# Every runbook except the index; the named ones must all be here (see test_expected_set).
EXPECTED = {
    "server-freeze.md",
    "feed-stale.md",
    "oom-killed.md",
    "db-pool-exhaustion.md",
    "slow-queries.md",
    "queue-overload.md",
    "port-conflict.md",
    "high-cpu.md",
    "rate-limit.md",
    "api-key-rejected.md",
    "circuit-breaker-open.md",
    "collect-logs-for-support.md",
    "db-connection-failure.md",
    "redis-pool-exhaustion.md",
    "memory-leak.md",
    "disk-full.md",
    "full-restart.md",
    "backup-failure.md",
    "maintenance.md",
}
# Runbooks reached from a symptom or another runbook, not from an alert.
NOT_FROM_ALERTS = {"data-restore.md", "emergency-stop.md"}
FROM_ALERTS = {
    "server-freeze.md",
    "db-connection-failure.md",
    "redis-pool-exhaustion.md",
    "memory-leak.md",
    "disk-full.md",
    "full-restart.md",
    "backup-failure.md",
    "maintenance.md",
}
# Pages whose steps change nothing that trades: collecting a bundle; rerunning the maintenance
# checks (their `--fix` halts through `restart --safe` by itself).
NEVER_TOUCH_TRADING = {"collect-logs-for-support.md", "maintenance.md"}
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
# `chimera-ops` as a command word, not inside a path or file name (chimera-ops.yaml).
INVOCATION = re.compile(r"(?<![\w./-])chimera-ops(?=[ \t])([^\n|;&)`]*)")
COMMENT = re.compile(r"(^|\s)#.*$")
STEP = re.compile(r"^#{2,4}\s+\d+\.\s+\*\*(check|action|verify)\*\*", re.MULTILINE)


def runbook_files() -> list[Path]:
    return sorted(p for p in RUNBOOKS.glob("*.md") if p.name != "README.md")


def alert_runbook_paths() -> set[str]:
    """Every runbooks/*.md path the rules can produce, templates expanded to each branch."""
    doc = yaml.safe_load(ALERTS.read_text())
    paths: set[str] = set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            value = " ".join(str(rule.get("annotations", {}).get("runbook", "")).split())
            assert value, f"alert {rule.get('alert')} has no runbook annotation"
            # `pre{{ if }}a{{ else if }}b{{ else }}c{{ end }}post`: one path per branch.
            parts = re.split(r"\{\{.*?\}\}", value)
            if len(parts) >= 3:
                for branch in parts[1:-1]:
                    paths.add(parts[0] + branch + parts[-1])
            else:
                assert "{{" not in value, f"unparsed runbook template: {value!r}"
                paths.add(value)
    return paths


def cli_invocations() -> dict[tuple[str, ...], list[str]]:
    """(command words) -> where they appear, from the fenced code blocks of every runbook."""
    found: dict[tuple[str, ...], list[str]] = {}
    for path in sorted(RUNBOOKS.glob("*.md")):
        text = path.read_text()
        planned = (
            {s.body for s in parse_runbook(path).steps if s.planned}
            if path.name != "README.md"
            else set()
        )
        for block in FENCE.findall(text):
            if block.strip() in planned:
                continue  # a planned step names a command that is not built yet
            for line in block.splitlines():
                code = COMMENT.sub("", line)  # `# ...` after the command is prose
                for match in INVOCATION.finditer(code):
                    words = command_words(match.group(1))
                    where = f"{path.name}: chimera-ops{match.group(1)}"
                    found.setdefault(words, []).append(where)
    return found


def command_words(rest: str) -> tuple[str, ...]:
    """The command path of one invocation: first word, plus the next when it names a group."""
    tokens = shlex.split(rest, posix=True)
    while tokens and tokens[0].startswith("-"):  # global options before the command
        option = tokens.pop(0)
        if option == "--config" and tokens:
            tokens.pop(0)
    if not tokens:
        return ()
    words = [tokens[0]]
    command = cli.get_command(click.Context(cli), tokens[0])  # works for lazy groups too
    if isinstance(command, click.Group) and len(tokens) > 1 and not tokens[1].startswith("-"):
        words.append(tokens[1])  # a group's next bare word must be one of its subcommands
    return tuple(words)


def test_expected_set() -> None:
    assert {p.name for p in runbook_files()} >= EXPECTED | NOT_FROM_ALERTS
    assert (RUNBOOKS / "README.md").is_file()


def test_alert_runbooks_exist() -> None:
    paths = alert_runbook_paths()
    assert paths >= {f"runbooks/{name}" for name in FROM_ALERTS}, sorted(paths)
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert not missing, f"alerts.yml names runbooks that do not exist: {missing}"


def test_template_expansion() -> None:
    """Both branches of the ComponentDown and PoolSaturation templates are found."""
    paths = alert_runbook_paths()
    assert "runbooks/db-connection-failure.md" in paths
    assert "runbooks/redis-pool-exhaustion.md" in paths
    assert not any("{" in p or " " in p for p in paths), paths


def test_runbook_commands_are_real() -> None:
    found = cli_invocations()
    # The core of every runbook must be found at all, or the extraction is broken.
    assert {("status",), ("halt-trading",), ("resume-trading",)} <= set(found), sorted(found)
    runner = CliRunner()
    bad = []
    for words, where in sorted(found.items()):
        if not words:
            bad.append(f"no command: {where[0]}")
            continue
        result = runner.invoke(cli, [*words, "--help"])
        if result.exit_code != 0:
            bad.append(f"`chimera-ops {' '.join(words)}` is not a command ({where[0]})")
    assert not bad, "\n".join(bad)


def test_unknown_command_is_caught() -> None:
    """The check in test_runbook_commands_are_real does fail on made-up commands."""
    runner = CliRunner()
    for text in (" backup lst", " runbook rnu disk-full", " incidents shwo 3", " config chek"):
        words = command_words(text)
        assert runner.invoke(cli, [*words, "--help"]).exit_code != 0, words
    assert command_words(" --config x.yaml incidents show 3") == ("incidents", "show")
    assert command_words(" start engine --reason 'x y'") == ("start",)


@pytest.mark.parametrize("path", runbook_files(), ids=lambda p: p.name)
def test_runbook_has_check_action_verify(path: Path) -> None:
    text = path.read_text()
    kinds = set(STEP.findall(text))
    assert kinds == {"check", "action", "verify"}, f"{path.name}: steps {sorted(kinds)}"
    assert text.startswith("# "), f"{path.name}: starts with a title"
    assert "**When:**" in text.split("###", 1)[0], f"{path.name}: one-line 'When' before step 1"


@pytest.mark.parametrize("path", runbook_files(), ids=lambda p: p.name)
def test_destructive_after_halt_and_resume_after_status(path: Path) -> None:
    """In the prose too: a page that flags a destructive step halts first; a resume comes
    after a `chimera-ops status` check that follows the halt."""
    text = path.read_text()
    halt = text.find("chimera-ops halt-trading")
    destructive = text.find("destructive: confirm")
    if destructive >= 0:
        assert 0 <= halt < destructive, f"{path.name}: a destructive step comes before the halt"
    resume = text.find("chimera-ops resume-trading")
    if resume >= 0:
        assert halt >= 0, f"{path.name}: resumes without ever halting"
        assert text.rfind("chimera-ops status", 0, resume) > halt, (
            f"{path.name}: resume-trading without a `chimera-ops status` check after the halt"
        )
    assert halt >= 0 or path.name in NEVER_TOUCH_TRADING, f"{path.name}: never halts"


# ------------------------------------------------------------------ (e) executable steps
def _command(argv: tuple[str, ...]) -> tuple[click.Command | None, list[str], list[str]]:
    """The click command a `chimera-ops ...` argv reaches, its path, and the flags it passes."""
    command: click.Command | None = cli
    path: list[str] = []
    words = list(argv[1:])
    while words and isinstance(command, click.Group) and not words[0].startswith("-"):
        command = command.get_command(click.Context(command), words.pop(0))
        path.append(argv[len(path) + 1])
        if command is None:
            break
    flags = [w.split("=", 1)[0] for w in words if w.startswith("--")]
    return command, path, flags


def _options(command: click.Command) -> set[str]:
    found = {"--help", "-h"}
    for param in command.params:
        found.update(getattr(param, "opts", []))
        found.update(getattr(param, "secondary_opts", []))
    return found


@pytest.mark.parametrize("path", runbook_files(), ids=lambda p: p.name)
def test_every_step_parses_and_names_real_commands(path: Path) -> None:
    import shutil

    book = parse_runbook(path)  # a malformed block raises with file and line
    assert book.steps, f"{path.name}: no executable step"
    assert {s.kind for s in book.steps} == {"check", "action", "verify"}, path.name
    bad = []
    for step in book.steps:
        if step.shell:
            continue
        if step.argv[0] != "chimera-ops":
            program = step.argv[0]
            if program != "{python}" and shutil.which(program) is None:
                bad.append(f"{step.id}: `{program}` is not installed")
            continue
        command, words, flags = _command(step.argv)
        if step.planned:
            if command is not None and not isinstance(command, click.Group):
                bad.append(f"{step.id}: planned, but `chimera-ops {' '.join(words)}` exists now")
            continue
        if command is None:
            bad.append(f"{step.id}: `chimera-ops {' '.join(words)}` is not a command")
            continue
        unknown = [f for f in flags if f not in _options(command)]
        if unknown:
            bad.append(f"{step.id}: `chimera-ops {' '.join(words)}` has no {unknown}")
    assert not bad, f"{path.name}:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", runbook_files(), ids=lambda p: p.name)
def test_steps_keep_the_promises(path: Path) -> None:
    """Halt before the first destructive step; resume only after a status step after the halt."""
    steps = parse_runbook(path).steps
    order = {s.id: s.n for s in steps}
    halts = [s.n for s in steps if s.argv[:2] == ("chimera-ops", "halt-trading")]
    stops = [s.n for s in steps if s.argv[:2] == ("chimera-ops", "emergency-stop")]
    destructive = [s.n for s in steps if s.destructive]
    resumes = [s.n for s in steps if s.argv[:2] == ("chimera-ops", "resume-trading")]
    statuses = [s.n for s in steps if s.argv[:2] == ("chimera-ops", "status")]
    if destructive:
        first_brake = min(halts + stops, default=10**6)
        assert first_brake <= min(destructive), f"{path.name}: destructive before the halt"
    for n in resumes:
        assert any(min(halts, default=0) < st < n for st in statuses), (
            f"{path.name}: resume at step {n} without a status step after the halt"
        )
    assert all(s.on_fail in order for s in steps if s.on_fail), path.name


@pytest.mark.parametrize("path", runbook_files(), ids=lambda p: p.name)
def test_every_runbook_dry_runs(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from chimera_ops.config import load_config

    monkeypatch.setenv("CHIMERA_AGENT__STATE_DIR", str(tmp_path / "var"))
    book = parse_runbook(path)
    config = str(ROOT / "examples" / "stack.yaml")
    components = list(load_config(config).components)
    # A value of each variable's type (types.py); a component the page defaults to that the
    # example stack does not have (rabbitmq) is given one it has.
    sample = {"port": "8701", "pid": "4242", "identifier": "chimera", "backup-set": "latest"}
    sample |= {"host": "127.0.0.1", "text": "x", "dir": str(tmp_path)}
    sets = [
        f"--set={name}={components[0] if kind == 'component' else sample[kind]}"
        for name, kind in book.types.items()
        if name not in book.defaults
        or (kind == "component" and book.defaults[name] not in components)
    ]
    args = ["--config", config, "runbook", "run", book.name, "--dry-run", "--json", *sets]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["state"] == "planned"
    assert {s["status"] for s in doc["steps"]} <= {"would-run", "skipped"}, doc["steps"]
    assert len(doc["steps"]) == len(book.steps)


def test_malformed_block_names_file_and_line(tmp_path: Path) -> None:
    from chimera_ops.ops.runbook.parse import RunbookError, load_all

    page = tmp_path / "broken.md"
    page.write_text("# Broken\n\n**When:** never\n\n```sh {step=check id=a typo}\nls\n```\n")
    books, errors = load_all(tmp_path)
    assert not books and len(errors) == 1
    assert errors[0].path == page and errors[0].line == 5 and "typo" in errors[0].message
    with pytest.raises(RunbookError, match=r"broken.md:3: .*step="):
        page.write_text("# Broken\n\n```sh {step=fix id=a}\nls\n```\n")
        parse_runbook(page)


def test_alert_headers_match_the_rules() -> None:
    """A runbook's **Alerts:** names real rules, and each rule's runbook lists that rule."""
    doc = yaml.safe_load(ALERTS.read_text())
    rules: dict[str, set[str]] = {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            value = " ".join(str(rule["annotations"]["runbook"]).split())
            parts = re.split(r"\{\{.*?\}\}", value)
            branches = parts[1:-1] if len(parts) >= 3 else [""]
            names = {
                Path(parts[0] + b + parts[-1]).stem if len(parts) >= 3 else Path(value).stem
                for b in branches
            }
            rules.setdefault(rule["alert"], set()).update(names)
    books = {p.stem: parse_runbook(p) for p in runbook_files()}
    for name, book in books.items():
        unknown = set(book.alerts) - set(rules)
        assert not unknown, f"{name}.md lists alerts that are not rules: {sorted(unknown)}"
    for alert, names in rules.items():
        for name in names:
            assert alert in books[name].alerts, f"{name}.md does not list {alert} in **Alerts:**"
