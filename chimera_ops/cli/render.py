"""Rich rendering of status and events for people (JSON output never comes through here).

Names, states and pids are never wrapped: a reader greps `status` output, and a name folded
across two lines is a name grep cannot find. Only free text (reasons) may fold. A table that
cannot hold every fixed column at the console width becomes a two-lines-per-component listing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from chimera_ops.units import format_duration, format_size

STATE_STYLE = {
    "running": "green",
    "starting": "cyan",
    "stopping": "cyan",
    "stopped": "dim",
    "exited": "yellow",
    "backoff": "yellow",
    "unhealthy": "bold red",
    "fatal": "bold red",
    "unknown": "magenta",
}

PROBLEM_STATES = frozenset({"fatal", "unhealthy", "backoff", "exited"})
REASON_MIN_WIDTH = 24
"""The free-text column needs at least this much room; below it the listing goes two-line."""
DETAIL_INDENT = 4
SEPARATOR = " | "

_ROLE = {"liveness": "L", "readiness": "R", "startup": "S"}
_VERDICT = {"passing": "ok", "failing": "FAIL", "unknown": "?"}
HEALTH_LEGEND = (
    "health: L liveness, R readiness, S startup probe; ok passing, FAIL failing, ? no verdict yet"
)
# The agent's backoff reason ends in the delay it will wait; without an agent nothing waits.
_RESTART_PROMISE = re.compile(r"\s*[;,]?\s*restarting in [0-9.]+\s*(?:ms|s|m|h)?\b", re.I)


# What a terminal acts on rather than shows: C0 controls (ESC starts window-title, clear-screen
# and cursor sequences; CR overwrites a line), DEL, C1 controls (0x9b is a one-byte CSI) and
# the Unicode bidi overrides that reorder what is read. Tab and newline are handled apart.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape_char(m: re.Match[str]) -> str:
    code = ord(m.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, multiline: bool = False) -> str:
    """`text` with every control character shown as an escape (`\\x1b`), never acted on.

    For text a child or an engine supplied (reasons, stderr tails, log lines): printed raw, an
    `ESC]0;...` would retitle the operator's window and `ESC[2J` clear the screen. One-line
    fields escape newlines and tabs too (a newline could forge a line of the listing);
    `multiline` keeps them. Rich markup is a separate matter: see `plain`.
    """
    out = _UNPRINTABLE.sub(_escape_char, str(text))
    if not multiline:
        out = out.replace("\n", "\\n").replace("\t", "\\t")
    return out


def plain(text: object, multiline: bool = False, style: str = "") -> Text:
    """`printable(text)` as a rich Text: shown literally, `[bold red]` and all (a str handed
    to rich is parsed as markup; a Text never is)."""
    return Text(printable(text, multiline), style=style)


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def age(ts: float | None, now: float | None = None) -> str:
    """'12s ago' style age of a timestamp ('-' without one)."""
    if not ts:
        return "-"
    return format_duration((time.time() if now is None else now) - ts) + " ago"


def strip_restart_promise(text: str | None) -> str:
    """`text` without a 'restarting in 1s' clause: for views where no agent will restart it."""
    return _RESTART_PROMISE.sub("", text or "").strip()


def format_last_exit(component: dict[str, Any], now: float | None = None) -> str:
    """'exit 0 by operator restart, 2m ago' ('' when the component never exited).

    What the exit was, never what was planned after it: a restart that was due then is stale.
    """
    last_exit = printable(strip_restart_promise(component.get("last_exit")))
    if not last_exit:
        return ""
    at = component.get("last_exit_at")
    return f"{last_exit}, {age(at, now)}" if at else last_exit


def _reason_parts(component: dict[str, Any], now: float | None) -> list[str]:
    """The current state's reason, then the last exit when the reason does not say it already."""
    reason = printable(component.get("reason") or "")
    parts = [reason] if reason else []
    last_exit = printable(strip_restart_promise(component.get("last_exit")))
    if last_exit and last_exit not in reason:
        parts.append(f"last exit: {format_last_exit(component, now)}")
    return parts


def _probe_verdicts(component: dict[str, Any], short: bool, now: float | None = None) -> list[str]:
    """One verdict per probe with its age: `L ok 3ms 2s ago` (short) or `liveness ok 3ms 2s
    ago`. A result that did not probe the process running now (the agent marks it not
    `current`: a stopped component, one just restarted) is no verdict: `L ?`."""
    out = []
    for role, snap in (component.get("health") or {}).items():
        last = snap.get("last_result") or {}
        name = _ROLE.get(role, role) if short else role
        if snap.get("current") is False or not last:
            out.append(f"{name} ?")
            continue
        latency = last.get("latency_s")
        lat = f" {latency * 1000:.0f}ms" if latency is not None else ""
        verdict = _VERDICT.get(snap.get("status", "unknown"), "?")
        when = f" {age(last['at'], now)}" if last.get("at") else ""
        out.append(f"{name} {verdict}{lat}{when}")
    return out


def memory_trend(memory: dict[str, Any] | None) -> list[str]:
    """The slope and the forecast to the limit, each only when it means something.

    The agent marks a slope significant once the leak detector has enough samples over enough
    time and the trend test says it rises; before that (say, just after a restart) a slope is
    noise that reads as a leak, so it is not shown.
    """
    memory = memory or {}
    parts = []
    slope = memory.get("slope_bytes_per_s")
    if slope and memory.get("slope_significant"):
        parts.append(f"{'+' if slope > 0 else ''}{format_size(slope)}/s")
    if memory.get("forecast_s") is not None:
        parts.append(f"limit in {format_duration(memory['forecast_s'])}")
    return parts


def _pool_name(name: str) -> str:
    return "pg" if name == "postgres" else name


def pool_figures(component: dict[str, Any]) -> list[str]:
    """Each pool with whose it is: `pg server 3/100`, `redis clients 5/10000`, `engine pg pool 0/8`.

    The pool monitor reads the servers (every client's connections against the server's limit)
    and the component's own pools from its /metrics; the two are easy to confuse.
    """
    pools = (component.get("monitors") or {}).get("pool") or {}
    parts = []
    pg = pools.get("postgres")
    if isinstance(pg, dict) and pg.get("max_connections"):
        parts.append(f"pg server {pg.get('connections', 0)}/{pg['max_connections']}")
    rd = pools.get("redis")
    if isinstance(rd, dict) and rd.get("maxclients"):
        parts.append(f"redis clients {rd.get('connected_clients', 0)}/{rd['maxclients']}")
    for name, gauges in (pools.get("app") or {}).items():
        limit = gauges.get("max") or gauges.get("size")
        if limit:
            used = gauges.get("in_use") or 0
            pool = printable(_pool_name(name))  # named by the component's own /metrics
            parts.append(f"{component['name']} {pool} pool {used:.0f}/{limit:.0f}")
    return parts


def trading_line(
    trading: dict[str, Any], prefix: str = "trading ", now: float | None = None
) -> str:
    """An engine's trading state with its age; never a stale or unknown state as current.

    `trading` null (a stopped, starting or unreachable engine, or one not read since it
    started) reads `state unknown (why)`; a reading the agent marks not `current` reads
    `STALE`. Every engine-supplied word is escaped (`printable`).
    """
    at = trading.get("at")
    read = f"read {age(at, now)}" if at else ""
    state = trading.get("trading")
    if not state or trading.get("error"):
        why = printable(trading.get("note") or "not read yet")
        error = f": {printable(trading['error'])}" if trading.get("error") else ""
        return f"{prefix}state unknown ({why}{', ' + read if read else ''}){error}"
    line = (
        f"{printable(state).upper()}, {printable(trading.get('open_orders', '?'))} open orders"
        + (f" ({printable(trading['reason'])})" if trading.get("reason") else "")
    )
    if trading.get("current") is False:  # an agent before this field sent none: no claim
        note = printable(trading.get("note") or "not current")
        return f"{prefix}STALE, {read or 'never read'} ({note}): was {line}"
    return f"{prefix}{line}{', ' + read if read else ''}"


def pack(prefix: str, items: Sequence[str], width: int, sep: str = "  ") -> list[str]:
    """`prefix` then `items`, as many per line as fit in `width`, never splitting an item.

    Continuation lines are indented under the first item. An item wider than a line gets a
    line of its own rather than being cut.
    """
    indent = " " * cell_len(prefix)
    lines: list[str] = []
    line, empty = prefix, True
    for item in items:
        if not empty and cell_len(line) + cell_len(sep) + cell_len(item) > width:
            lines.append(line)
            line, empty = indent, True
        line += ("" if empty else sep) + item
        empty = False
    lines.append(line)
    return lines


def notes(doc: dict[str, Any], width: int = 80) -> list[str]:
    """Lines under the listing: trading state of engines, pool usage, open alerts."""
    out = []
    for comp in doc.get("components", []):
        trading = comp.get("trading")
        if trading:
            out.append(f"{comp['name']}: {trading_line(trading)}")
        pools = pool_figures(comp)
        if pools:
            out += pack(f"{comp['name']}: pools ", pools, width)
        for key, severity in (comp.get("alerts") or {}).items():
            out.append(f"{comp['name']}: {severity.upper()} alert {key}")
        # Where to look next, for what is broken (the reason is often only the last line).
        if comp.get("log_file") and PROBLEM_STATES & {
            comp.get("state"),
            comp.get("last_known_state"),
        }:
            out.append(f"{comp['name']}: log {comp['log_file']}")
    return out


# -- the listing: a table when it fits, two lines per component when it does not ------------
@dataclass
class ListingRow:
    """One component: fixed cells (never wrapped), wide-only cells, free text."""

    cells: list[Text]
    wide_cells: list[Text]
    """Shown as columns in the table only (each may hold several lines, none wrapped)."""
    reason: list[str]
    """Free text; one line each in the table, joined on the second line when narrow."""
    narrow_extra: list[str] = field(default_factory=list)
    """What the wide-only cells say, in words, for the second line of the narrow layout."""


@dataclass
class Listing:
    """Headers and rows of a component listing; `render_listing` picks the layout."""

    headers: list[str]
    wide_headers: list[str]
    reason_header: str
    rows: list[ListingRow]
    legend: str | None = None
    """Explains the table's abbreviations (the narrow layout spells them out)."""


def _widths(headers: Sequence[str], rows: Sequence[Sequence[Text]]) -> list[int]:
    """Natural width of each column: its widest line, header included."""
    widths = [cell_len(h) for h in headers]
    for cells in rows:
        for i, cell in enumerate(cells):
            lines = cell.plain.splitlines() or [""]
            widths[i] = max(widths[i], *(cell_len(line) for line in lines))
    return widths


def table_width(listing: Listing) -> int:
    """Columns the table needs so that no fixed column is squeezed (rich's default box:
    one border between and around columns, one space of padding each side)."""
    headers = listing.headers + listing.wide_headers
    widths = _widths(headers, [r.cells + r.wide_cells for r in listing.rows])
    columns = len(headers) + 1
    return sum(widths) + REASON_MIN_WIDTH + 2 * columns + columns + 1


def _table(listing: Listing) -> Table:
    table = Table(header_style="bold")
    for header in listing.headers + listing.wide_headers:
        # no_wrap applies to the header too: no "compone/nt".
        table.add_column(header, no_wrap=True)
    table.add_column(listing.reason_header, overflow="fold", min_width=REASON_MIN_WIDTH)
    for row in listing.rows:
        # A Text, not a str: rich would read `[bold red]` in a child's reason as markup.
        table.add_row(*row.cells, *row.wide_cells, Text("\n".join(row.reason)))
    return table


def _narrow(listing: Listing) -> Group:
    widths = _widths(listing.headers, [r.cells for r in listing.rows])

    def line(cells: Sequence[Text]) -> Text:
        out = Text(no_wrap=True, overflow="ignore")
        for i, cell in enumerate(cells):
            if i:
                out.append("  ")
            out.append_text(cell)
            if i < len(cells) - 1:
                out.append(" " * (widths[i] - cell_len(cell.plain)))
        return out

    parts: list[RenderableType] = [line([Text(h, style="bold") for h in listing.headers])]
    for row in listing.rows:
        parts.append(line(row.cells))
        detail = SEPARATOR.join(p for p in (row.reason + row.narrow_extra) if p)
        if detail:
            parts.append(
                Padding(Text(detail, overflow="fold"), (0, 0, 0, DETAIL_INDENT), expand=False)
            )
    return Group(*parts)


def render_listing(listing: Listing, width: int) -> RenderableType:
    """The table when every fixed column fits `width` whole, else the two-line layout."""
    if table_width(listing) <= width:
        table = _table(listing)
        return Group(table, Text(listing.legend, style="dim")) if listing.legend else table
    return _narrow(listing)


def _state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


def status_listing(doc: dict[str, Any], now: float | None = None) -> Listing:
    """The `chimera-ops status` listing of a live agent's document."""
    rows = []
    any_probe = False
    for comp in doc.get("components", []):
        state = comp.get("state", "unknown")
        short = _probe_verdicts(comp, short=True, now=now)
        any_probe = any_probe or bool(short)
        memory = comp.get("memory") or {}
        reason = _reason_parts(comp, now)
        trend = memory_trend(memory)
        if trend:
            reason.append("memory " + ", ".join(trend))
        rows.append(
            ListingRow(
                cells=[
                    Text(comp["name"]),
                    _state_text(state),
                    Text(str(comp.get("pid") or "-")),
                    Text(format_duration(comp.get("uptime_s"))),
                    Text(str(comp.get("restarts", 0))),
                    Text(format_size(memory["rss_bytes"]) if memory.get("rss_bytes") else "-"),
                ],
                wide_cells=[Text("\n".join(short) or "-")],
                reason=reason,
                narrow_extra=[", ".join(_probe_verdicts(comp, short=False, now=now))],
            )
        )
    return Listing(
        headers=["component", "state", "pid", "uptime", "restarts", "memory"],
        wide_headers=["health"],
        reason_header="reason",
        rows=rows,
        legend=HEALTH_LEGEND if any_probe else None,
    )


def direct_listing(doc: dict[str, Any], now: float | None = None) -> Listing:
    """The no-agent listing: last known state, live pid, TCP reachability, restarts."""
    rows = []
    for comp in doc.get("components", []):
        reach = comp.get("reachable")
        target = comp.get("reachable_target")
        external = comp.get("runtime") == "external"
        # An external service is shown by what its probe says now: the store's "stopped"
        # only means the agent stopped watching it. No pid of it is ever the agent's.
        observed = comp.get("observed")
        state = (
            _state_text(f"{observed} (probed)" if observed else "not probed")
            if external
            else _state_text(comp.get("last_known_state") or "-")
        )
        if external and observed:
            state.stylize("green" if observed == "up" else "bold red")
        rows.append(
            ListingRow(
                cells=[
                    Text(comp["name"]),
                    state,
                    Text("-" if external else str(comp["pid"]) if comp.get("pid") else "no"),
                    Text("-" if reach is None else f"{'yes' if reach else 'NO'} {target}"),
                    Text(str(comp.get("restarts", 0))),
                ],
                wide_cells=[],
                reason=_reason_parts(comp, now),
            )
        )
    return Listing(
        headers=["component", "last known state", "pid alive", "reachable", "restarts"],
        wide_headers=[],
        reason_header="reason",
        rows=rows,
    )


# -- one component in detail (`status NAME`) -----------------------------------------------
def _probe_lines(snap: dict[str, Any], target: str | None, now: float) -> str:
    last = snap.get("last_result") or {}
    head = snap.get("status", "unknown")
    if target:
        head += f"  {target}"
    if last:
        verdict = "ok" if last.get("ok") else "FAILED"
        result = (
            f"last {verdict} {age(last.get('at'), now)}: {printable(last.get('reason') or '-')}"
        )
    else:
        result = "not run yet"
    if last and snap.get("current") is False:
        result += " (an earlier run: no verdict about the process now)"
    ok, failed = snap.get("consecutive_successes", 0), snap.get("consecutive_failures", 0)
    counts = (
        f"{ok} success{'' if ok == 1 else 'es'}, "
        f"{failed} failure{'' if failed == 1 else 's'} in a row"
    )
    return f"{head}\n{result}\n{counts}"


def component_detail(
    comp: dict[str, Any],
    probe_targets: dict[str, str] | None = None,
    now: float | None = None,
) -> RenderableType:
    """`chimera-ops status NAME`: everything the agent knows about one component, labelled.

    `probe_targets` maps a probe role to 'kind target' (from the config) for documents whose
    health entries do not carry them.
    """
    now = time.time() if now is None else now
    targets = probe_targets or {}
    state = comp.get("state", "unknown")
    title = Text(no_wrap=True, overflow="ignore")
    title.append(f"{comp['name']}", style="bold")
    title.append(f" ({comp.get('runtime', '?')}): ")
    title.append_text(_state_text(state))
    if comp.get("last_known_state"):
        title.append(f" (last known: {comp['last_known_state']})")

    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right", style="bold", no_wrap=True)
    grid.add_column(overflow="fold")

    def row(label: str, value: str | None) -> None:
        # Values hold child-supplied text: a Text shows it literally (never as markup), and
        # the control characters the parts did not escape already are escaped here.
        grid.add_row(label, plain(value if value else "-", multiline=True))

    row("reason", printable(comp.get("reason") or ""))
    since = comp.get("since")
    row("since", f"{_when(since)} UTC ({age(since, now)})" if since else None)
    pid, uptime = comp.get("pid"), comp.get("uptime_s")
    up = f", up {format_duration(uptime)}" if uptime is not None else ""
    row("pid", f"{pid}{up}" if pid else None)
    row(
        "restarts",
        f"{comp.get('restarts', 0)} (consecutive failures {comp.get('consecutive_failures', 0)})",
    )
    row("last exit", format_last_exit(comp, now) or "never exited")
    if comp.get("reachable") is not None:
        row("reachable", f"{'yes' if comp['reachable'] else 'NO'} {comp.get('reachable_target')}")
    for role, snap in (comp.get("health") or {}).items():
        target = " ".join(str(snap[k]) for k in ("kind", "target") if snap.get(k))
        row(role, _probe_lines(snap, target or targets.get(role), now))
    monitors = comp.get("monitors") or {}
    if (comp.get("memory") or {}).get("rss_bytes") or "memory" in monitors:
        row("memory", memory_summary(comp.get("memory"), monitors.get("memory")))
    for name, snap in monitors.items():
        if name not in ("memory", "pool"):
            row(name, _monitor_summary(name, snap, now))
    pools = pool_figures(comp)
    if pools:
        row("pools", "\n".join(pools))
    if "alerts" in comp:
        alerts = comp.get("alerts") or {}
        row("alerts", ", ".join(f"{sev.upper()} {key}" for key, sev in alerts.items()) or "none")
    if comp.get("trading"):
        row("trading", trading_line(comp["trading"], prefix="", now=now))
    row("depends on", ", ".join(comp.get("depends_on") or []) or "nothing")
    runtime = comp.get("runtime")
    kept = None if runtime in (None, "process") else f"none kept by the agent ({runtime})"
    row("log file", comp.get("log_file") or kept)
    return Group(title, Padding(grid, (0, 0, 0, 2)))


def memory_summary(memory: dict[str, Any] | None, monitor: dict[str, Any] | None) -> str:
    """RSS against the limit, and the trend only once it is significant (else why not yet)."""
    memory, monitor = memory or {}, monitor or {}
    rss = memory.get("rss_bytes") or monitor.get("rss_bytes")
    text = f"{format_size(rss)} rss" if rss else "no sample yet"
    extra = []
    if monitor.get("pss_bytes"):
        extra.append(f"pss {format_size(monitor['pss_bytes'])}")
    if monitor.get("processes"):
        count = monitor["processes"]
        extra.append(f"{count} process{'' if count == 1 else 'es'}")
    if extra:
        text += f" ({', '.join(extra)})"
    if monitor.get("limit_bytes"):
        text += f", limit {format_size(monitor['limit_bytes'])}"
        if monitor.get("over_count"):
            text += f" (over it for {monitor['over_count']} samples)"
    trend = memory_trend(memory)
    if trend:
        text += f"; trend {', '.join(trend)}"
    elif monitor:
        text += f"; no significant trend ({monitor.get('samples', 0)} samples)"
    return text


def _monitor_summary(name: str, snap: Any, now: float) -> str:
    """A monitor's latest figures as `key value` pairs (sizes, ages and ratios made readable)."""
    if not isinstance(snap, dict):
        return str(snap)
    parts = []
    for key, value in snap.items():
        if value is None:
            continue
        if isinstance(value, dict):
            parts.append(f"{key}: {_monitor_summary(key, value, now)}")
        elif isinstance(value, list):
            parts.append(f"{key}: {len(value)}")
        elif key == "at" or key.endswith("_since"):
            parts.append(f"{key} {age(value, now)}")
        elif key.endswith("_bytes") or key in ("free", "total", "used", "size"):
            parts.append(f"{key} {format_size(value)}")
        elif key == f"{name}_percent" and isinstance(value, int | float):
            parts.append(f"{value:.1f}%")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.3g}")
        else:
            parts.append(f"{key} {printable(value)}")
    return ", ".join(parts) or "no sample yet"


def events_table(events: list[dict[str, Any]]) -> Table:
    """The `chimera-ops events` table."""
    table = Table(header_style="bold")
    for column in ("time (UTC)", "component", "event", "change", "reason"):
        table.add_column(column, overflow="fold")
    for event in events:
        change = ""
        if event.get("from_state") or event.get("to_state"):
            change = f"{event.get('from_state') or '?'} -> {event.get('to_state') or '?'}"
        # Texts, not strs: a reason may quote a child's stderr, which must show literally
        # (no markup, no escape sequences).
        table.add_row(
            Text(_when(event["ts"])),
            plain(event.get("component") or "agent"),
            plain(event["kind"]),
            plain(change),
            plain(event.get("reason") or ""),
        )
    return table
