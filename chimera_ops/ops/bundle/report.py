"""`report.md`: the seeds' problem-report template, filled in as far as the machine knows.

Environment, symptom, steps to reproduce, the full stack traces, what was tried: the machine
fills in what it can see (versions, unhealthy components, open alerts, incidents, the event
timeline, the operator commands of the audit log, tracebacks and py-spy dumps) and leaves
blanks, marked, for what only a person knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PROBLEM_STATES = {"fatal", "unhealthy", "backoff", "exited", "unknown", "stopped"}
BLANK = "_(to fill in)_"
MAX_TIMELINE = 200
MAX_TRACES = 10


@dataclass
class ReportInput:
    """Everything the report is made of (plain data, no I/O)."""

    bundle: str
    created_at: float
    since_ts: float | None
    facts: dict[str, str]
    versions: dict[str, str]
    runtimes: dict[str, str]
    status: dict[str, Any] | None
    agent_note: str
    events: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    tracebacks: list[tuple[str, str]] = field(default_factory=list)  # (where, text)
    failed_collectors: list[str] = field(default_factory=list)


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "?"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cell(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")[:300]


def unhealthy(status: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Components not running or not ready, fatal first."""
    if not status:
        return []
    bad = [
        c
        for c in status.get("components", [])
        if c.get("state") in PROBLEM_STATES or c.get("ready") is False or c.get("alerts")
    ]
    return sorted(bad, key=lambda c: c.get("state") != "fatal")


def build_report(data: ReportInput) -> str:
    """The Markdown text."""
    window = f"since {_when(data.since_ts)} UTC" if data.since_ts else "everything recorded"
    lines = [
        "# Problem report",
        "",
        f"Bundle `{data.bundle}`, made {_when(data.created_at)} UTC by `chimera-ops "
        f"collect-logs`; window: {window}. {data.agent_note}",
        "",
        "## Environment",
        "",
        "| what | value |",
        "|---|---|",
        *(f"| {k} | {_cell(v)} |" for k, v in {**data.facts, **data.versions}.items()),
        "",
        "How each component runs:",
        "",
        *(f"- `{name}`: {how}" for name, how in data.runtimes.items()),
        "",
        "## Symptom",
        "",
        f"What you saw, in your words: {BLANK}",
        "",
    ]
    bad = unhealthy(data.status)
    if bad:
        lines += ["| component | state | reason | alerts |", "|---|---|---|---|"]
        for comp in bad:
            alerts = ", ".join(f"{k} ({v})" for k, v in (comp.get("alerts") or {}).items())
            lines.append(
                f"| {comp.get('name')} | {comp.get('state')} | {_cell(comp.get('reason'))} "
                f"| {_cell(alerts)} |"
            )
    elif data.status is not None:
        lines.append("Every component is running and ready.")
    else:
        lines.append("No status could be read (see `manifest.json`, collector `status`).")
    lines += ["", "Last incidents:", ""]
    lines += [
        f"- {i.get('at')} `{i.get('component')}`: {_cell(i.get('reason'))} (`incidents/{i.get('id')}/`)"
        for i in data.incidents[:10]
    ] or ["- none in the window"]
    if data.failed_collectors:
        lines += ["", "Collectors that failed: " + ", ".join(data.failed_collectors)]
    lines += ["", "## Steps to reproduce", "", f"1. {BLANK}", "", "## Timeline", ""]
    events = data.events[-MAX_TIMELINE:]
    if events:
        if len(data.events) > MAX_TIMELINE:
            lines.append(
                f"The last {MAX_TIMELINE} of {len(data.events)} events (all in `events.jsonl`)."
            )
            lines.append("")
        lines += ["| time (UTC) | component | event | reason |", "|---|---|---|---|"]
        for e in events:
            what = e.get("kind", "")
            if e.get("to_state"):
                what += f" -> {e['to_state']}"
            lines.append(
                f"| {_when(e.get('ts'))} | {e.get('component') or ''} | {what} | {_cell(e.get('reason'))} |"
            )
    else:
        lines.append("No events in the window.")
    lines += ["", "## What was tried", ""]
    if data.audit:
        lines += ["Operator commands recorded in the window (audit log):", ""]
        lines += ["| time (UTC) | user | command | reason | result |", "|---|---|---|---|---|"]
        for a in data.audit:
            args = a.get("args") or {}
            shown = " ".join(f"{k}={v}" for k, v in args.items()) if isinstance(args, dict) else ""
            lines.append(
                f"| {_when(a.get('ts'))} | {a.get('user')} | `{_cell((a.get('command') or '') + (' ' + shown if shown else ''))}` "
                f"| {_cell(a.get('reason'))} | {_cell(a.get('result'))} |"
            )
    else:
        lines.append("No operator command was recorded in the window.")
    lines += ["", f"Anything else you tried by hand: {BLANK}", "", "## Stack traces", ""]
    if data.tracebacks:
        for where, text in data.tracebacks[-MAX_TRACES:]:
            lines += [f"From `{where}`:", "", "```", text.rstrip(), "```", ""]
    else:
        lines += ["No Python traceback or stack dump was found in the window.", ""]
    lines += ["## Notes", "", BLANK, ""]
    return "\n".join(lines)
