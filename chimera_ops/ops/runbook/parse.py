"""Runbook Markdown -> `Runbook`: the executable steps inside an ordinary page.

A step is a fenced code block whose info string carries a `{step=...}` attribute list::

    ```sh {step=check id=engine-frozen expect=fail else=all-running}
    chimera-ops probe {component}
    ```

GitHub renders it as a `sh` block (the attributes are not shown). Every other fenced block is
documentation only and is never run. Attributes (see runbooks/README.md):

- `step=check|action|verify` and `id=NAME` (unique, `[a-z0-9-]+`): required;
- `destructive` (actions): confirmed by the operator or `--yes`;
- `shell`: the body is shell text, run only with `--allow-shell` (values shell-quoted);
- `planned`: needs a command that is not built yet: never run, shown with a note;
- `expect=fail` (checks, verifies): the condition holds when the command exits 1 (its "no");
- `else=ID` (checks): when the condition does not hold, continue at step ID instead of stopping;
- `may-fail` (actions): a non-zero exit is recorded and the run goes on;
- `retry=DURATION` (checks, verifies): poll until it passes or the time is up;
- `timeout=DURATION`: the limit of one run of the command (default 120 s).

The header lines come before the first step: `**Alerts:**` (the alert names, in backticks),
`**Incidents:**` (comma-separated), `**Variables:**` (`` `name:type=value` `` with a default,
`` `name:type` `` for one that `--set` must give). Every variable has a type (ops/runbook/types.py),
and every `{name}` a step uses is declared there or comes from the config (`state_dir`, `config`,
`python`, `NAME.port|host|health_url|log`): a page cannot take an untyped value.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from chimera_ops.ops.runbook.types import TYPES, builtin_type
from chimera_ops.units import parse_duration

KINDS = ("check", "action", "verify")
FLAGS = {"destructive", "shell", "planned", "may-fail"}
VALUED = {"step", "id", "expect", "else", "retry", "timeout"}
DEFAULT_TIMEOUT = 120.0
_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_FENCE = re.compile(r"^(```+|~~~+)\s*(.*)$")
_ATTRS = re.compile(r"^(?P<lang>[\w+-]*)\s*\{(?P<attrs>.*)\}\s*$")
_REQUIRED = re.compile(r"`([A-Za-z_][\w.-]*)`")
# `name:type=default` or `name:type` (an untyped `name` or `name=default` is found to refuse it)
_DECL = re.compile(r"`([A-Za-z_][\w.-]*)(?::([a-z][a-z-]*))?(?:=([^`]*))?`")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.-]*)\}")


class RunbookError(ValueError):
    """A malformed runbook: file, line and what is wrong."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        super().__init__(f"{path.name}:{line}: {message}")


@dataclass(frozen=True)
class Step:
    """One executable step."""

    n: int
    id: str
    kind: str
    line: int
    body: str
    argv: tuple[str, ...] = ()
    destructive: bool = False
    shell: bool = False
    planned: bool = False
    expect_fail: bool = False
    on_fail: str | None = None
    may_fail: bool = False
    retry: float = 0.0
    timeout: float = DEFAULT_TIMEOUT
    heading: str = ""
    advice: str = ""

    @property
    def read_only(self) -> bool:
        """Checks and verifies change nothing; they run under `--dry-run --checks`."""
        return self.kind != "action"


@dataclass(frozen=True)
class Runbook:
    """One parsed runbook page."""

    name: str
    path: Path
    title: str
    when: str
    alerts: tuple[str, ...]
    incidents: tuple[str, ...]
    defaults: dict[str, str] = field(default_factory=dict)
    steps: tuple[Step, ...] = ()
    required: tuple[str, ...] = ()
    types: dict[str, str] = field(default_factory=dict)  # every declared variable's type

    def step(self, ref: str) -> Step | None:
        """A step by id or by its number (1-based)."""
        for step in self.steps:
            if step.id == ref or (ref.isdigit() and step.n == int(ref)):
                return step
        return None

    @property
    def changes_stack(self) -> bool:
        """True when any step that can run is an action."""
        return any(s.kind == "action" and not s.planned for s in self.steps)


def _attrs(path: Path, line: int, text: str) -> dict[str, str]:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise RunbookError(path, line, f"step attributes: {exc}") from None
    found: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if sep and key in VALUED:
            found[key] = value
        elif not sep and key in FLAGS:
            found[key] = "true"
        else:
            known = ", ".join(sorted(VALUED | FLAGS))
            raise RunbookError(path, line, f"unknown step attribute {word!r} (known: {known})")
    return found


def _duration(path: Path, line: int, key: str, value: str | None, default: float) -> float:
    if value is None:
        return default
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise RunbookError(path, line, f"{key}={value}: {exc}") from None


def _make_step(path: Path, line: int, n: int, attrs: dict[str, str], body: str) -> Step:
    kind = attrs.get("step", "")
    if kind not in KINDS:
        raise RunbookError(path, line, f"step={kind!r}: must be one of {', '.join(KINDS)}")
    sid = attrs.get("id", "")
    if not _ID.match(sid):
        raise RunbookError(path, line, f"id={sid!r}: a step needs an id of [a-z0-9-]")
    expect = attrs.get("expect", "ok")
    if expect not in ("ok", "fail"):
        raise RunbookError(path, line, f"expect={expect!r}: must be ok or fail")
    if kind != "check" and "else" in attrs:
        raise RunbookError(path, line, f"else= is for checks, not {kind} steps")
    if kind == "action" and "expect" in attrs:
        raise RunbookError(path, line, "expect= is for checks and verifies, not actions")
    if kind != "action" and ("destructive" in attrs or "may-fail" in attrs):
        raise RunbookError(path, line, f"destructive and may-fail are for actions, not {kind}s")
    if kind == "action" and "retry" in attrs:
        raise RunbookError(path, line, "retry= is for checks and verifies, not actions")
    shell = "shell" in attrs
    lines = [x for x in body.splitlines() if x.strip() and not x.lstrip().startswith("#")]
    if not lines:
        raise RunbookError(path, line, f"step {sid}: the block has no command")
    argv: tuple[str, ...] = ()
    if not shell:
        if len(lines) != 1:
            raise RunbookError(path, line, f"step {sid}: one command per step (or mark it `shell`)")
        try:
            argv = tuple(shlex.split(lines[0], comments=True))
        except ValueError as exc:
            raise RunbookError(path, line, f"step {sid}: {exc}") from None
    return Step(
        n=n,
        id=sid,
        kind=kind,
        line=line,
        body="\n".join(lines),
        argv=argv,
        destructive="destructive" in attrs,
        shell=shell,
        planned="planned" in attrs,
        expect_fail=expect == "fail",
        on_fail=attrs.get("else"),
        may_fail="may-fail" in attrs,
        retry=_duration(path, line, "retry", attrs.get("retry"), 0.0),
        timeout=_duration(path, line, "timeout", attrs.get("timeout"), DEFAULT_TIMEOUT),
    )


def _header_list(text: str) -> tuple[str, ...]:
    items = [x.strip().strip("`").strip() for x in re.split(r"[,;]", text)]
    return tuple(x for x in items if x and x.lower() != "none")


def _declarations(
    path: Path, line: int, raw: str
) -> tuple[dict[str, str], tuple[str, ...], dict[str, str]]:
    """The `**Variables:**` line -> (defaults, required names, types); an untyped or unknown
    type is a RunbookError."""
    defaults: dict[str, str] = {}
    required: list[str] = []
    types: dict[str, str] = {}
    for name, kind, default in _DECL.findall(raw.split(":**", 1)[1]):
        written = f"`{name}{':' + kind if kind else ''}{'=' + default if default else ''}`"
        if not kind:
            raise RunbookError(
                path, line, f"variable {written} has no type: write `{name}:TYPE` ({_known()})"
            )
        if kind not in TYPES:
            raise RunbookError(
                path, line, f"variable {written}: unknown type {kind!r} ({_known()})"
            )
        types[name] = kind
        if default or f"{name}:{kind}=" in raw:
            defaults[name] = default
        else:
            required.append(name)
    return defaults, tuple(required), types


def _known() -> str:
    return "types: " + ", ".join(sorted(TYPES))


def _undeclared(path: Path, steps: list[Step], types: dict[str, str]) -> None:
    """Every `{name}` a step uses is declared with a type or comes from the config."""
    for step in steps:
        for name in sorted(placeholders(step)):
            if name not in types and builtin_type(name) is None:
                raise RunbookError(
                    path,
                    step.line,
                    f"step {step.id} uses {{{name}}}: declare it on the **Variables:** line "
                    f"with a type (`{name}:TYPE`)",
                )


def parse_runbook(path: Path, text: str | None = None) -> Runbook:
    """Parse one page (its text when the caller read it already, see trust.py); raises
    RunbookError (file, line, what) on a malformed step block or an untyped variable."""
    if text is None:
        text = path.read_text()
    lines = text.splitlines()
    title = lines[0][2:].strip() if lines and lines[0].startswith("# ") else ""
    if not title:
        raise RunbookError(path, 1, "a runbook starts with a `# Title` line")
    when = ""
    alerts: tuple[str, ...] = ()
    incidents: tuple[str, ...] = ()
    defaults: dict[str, str] = {}
    required: tuple[str, ...] = ()
    types: dict[str, str] = {}
    steps: list[Step] = []
    heading = ""
    prose: list[str] = []
    open_advice = False
    i = 0
    while i < len(lines):
        raw = lines[i]
        fence = _FENCE.match(raw)
        if fence is None:
            if raw.startswith("#"):
                heading, prose, open_advice = raw.lstrip("#").strip(), [], False
            elif not steps:
                when = raw.split("**When:**", 1)[1].strip() if "**When:**" in raw else when
                if raw.startswith("**Alerts:**"):
                    alerts = tuple(_REQUIRED.findall(raw))  # the `Name`s; the rest is prose
                elif raw.startswith("**Incidents:**"):
                    incidents = _header_list(raw.split(":**", 1)[1])
                elif raw.startswith("**Variables:**"):
                    more, needed, typed = _declarations(path, i + 1, raw)
                    defaults.update(more)
                    required += needed
                    types.update(typed)
            elif open_advice:
                prose.append(raw)
                steps[-1] = _with_advice(steps[-1], prose)
            i += 1
            continue
        marker, info = fence.group(1), fence.group(2)
        start = i + 1
        j = start
        while j < len(lines) and not lines[j].startswith(marker[0] * len(marker)):
            j += 1
        if j >= len(lines):
            raise RunbookError(path, i + 1, "code block never closed")
        body = "\n".join(lines[start:j])
        m = _ATTRS.match(info)
        if m is not None or "step=" in info:
            if m is None:
                raise RunbookError(path, i + 1, f"step attributes must be in {{...}}: {info!r}")
            attrs = _attrs(path, i + 1, m["attrs"])
            step = _make_step(path, i + 1, len(steps) + 1, attrs, body)
            if any(s.id == step.id for s in steps):
                raise RunbookError(path, i + 1, f"duplicate step id {step.id!r}")
            steps.append(_replace(step, heading=heading))
            prose, open_advice = [], True
        i = j + 1
    ids = {s.id for s in steps}
    for s in steps:
        if s.on_fail is not None and s.on_fail not in ids:
            raise RunbookError(path, s.line, f"else={s.on_fail}: no step has that id")
    _undeclared(path, steps, types)
    return Runbook(
        path.stem, path, title, when, alerts, incidents, defaults, tuple(steps), required, types
    )


def _with_advice(step: Step, prose: list[str]) -> Step:
    return _replace(step, advice=" ".join(x.strip() for x in prose if x.strip()))


def _replace(step: Step, **changes: object) -> Step:
    from dataclasses import replace

    return replace(step, **changes)  # type: ignore[arg-type]


def runbook_paths(directory: Path) -> list[Path]:
    """Every runbook page of a directory (README.md is the index)."""
    return sorted(p for p in directory.glob("*.md") if p.name != "README.md")


def load_all(directory: Path) -> tuple[list[Runbook], list[RunbookError]]:
    """Every runbook that parses, and the errors of those that do not."""
    books: list[Runbook] = []
    errors: list[RunbookError] = []
    for path in runbook_paths(directory):
        try:
            books.append(parse_runbook(path))
        except RunbookError as exc:
            errors.append(exc)
    return books, errors


def placeholders(step: Step) -> set[str]:
    """The variable names a step uses."""
    return set(PLACEHOLDER.findall(step.body.replace("{{", "").replace("}}", "")))
