"""Runbooks: every one the alert rules name exists, and none drifts from the CLI.

(a) every `runbooks/*.md` named by a `runbook` annotation in deploy/prometheus/alerts.yml
    exists (both branches of a `{{ if match ... }}a{{ else }}b{{ end }}` template);
(b) every `chimera-ops <command> [<subcommand>]` written in a fenced code block of a runbook is
    a real command: `<words> --help` exits 0 through click's CliRunner;
(c) every runbook has at least one **check**, **action** and **verify** step;
(d) no destructive step before trading is halted, no resume before `chimera-ops status`.
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

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "runbooks"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

# Every runbook except the index; the named ones must all be here (see test_expected_set).
EXPECTED = {
    "server-freeze.md",
    "db-connection-failure.md",
    "redis-pool-exhaustion.md",
    "memory-leak.md",
    "disk-full.md",
    "full-restart.md",
    "backup-failure.md",
}
# Runbooks reached from a symptom or another runbook, not from an alert.
NOT_FROM_ALERTS = {"data-restore.md", "emergency-stop.md"}
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
            template = re.fullmatch(
                r"(?P<pre>[^{]*)\{\{\s*if\b[^}]*\}\}(?P<a>[^{]*)\{\{\s*else\s*\}\}"
                r"(?P<b>[^{]*)\{\{\s*end\s*\}\}(?P<post>[^{]*)",
                value,
            )
            if template:
                for branch in ("a", "b"):
                    paths.add(template["pre"] + template[branch] + template["post"])
            else:
                assert "{{" not in value, f"unparsed runbook template: {value!r}"
                paths.add(value)
    return paths


def cli_invocations() -> dict[tuple[str, ...], list[str]]:
    """(command words) -> where they appear, from the fenced code blocks of every runbook."""
    found: dict[tuple[str, ...], list[str]] = {}
    for path in sorted(RUNBOOKS.glob("*.md")):
        for block in FENCE.findall(path.read_text()):
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
    assert paths >= {f"runbooks/{name}" for name in EXPECTED}, sorted(paths)
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
    for text in (" backup lst", " runbook run disk-full", " incidents shwo 3", " config chek"):
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
    text = path.read_text()
    halt = text.find("chimera-ops halt-trading")
    assert halt >= 0, f"{path.name}: never halts trading"
    destructive = text.find("destructive: confirm")
    assert destructive >= 0, f"{path.name}: flags no destructive step"
    assert destructive > halt, f"{path.name}: a destructive step comes before the halt"
    resume = text.find("chimera-ops resume-trading")
    assert resume >= 0, f"{path.name}: never resumes trading"
    assert text.rfind("chimera-ops status", 0, resume) > halt, (
        f"{path.name}: resume-trading without a `chimera-ops status` check after the halt"
    )
