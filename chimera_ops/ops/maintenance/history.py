"""Maintenance runs and their check results in the store (tables `maintenance_runs` and
`maintenance_results`): `maintenance history`, the growth figures of the next run, and the
agent's `chimera_maintenance_*` gauges all read them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chimera_ops.ops.maintenance.base import Result
from chimera_ops.store import Store


@dataclass(frozen=True)
class Run:
    """One recorded run."""

    id: int
    schedule: str
    started_at: float
    finished_at: float
    status: str
    fixed: bool
    user: str | None
    results: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def record_run(
    store: Store,
    schedule: str,
    started_at: float,
    finished_at: float,
    status: str,
    results: list[Result],
    fixed: bool,
    user: str | None,
) -> int:
    """Store a run and every check's result; returns the run id."""
    db = store.connection
    cur = db.execute(
        "INSERT INTO maintenance_runs(schedule, started_at, finished_at, status, fixed, user)"
        " VALUES (?,?,?,?,?,?)",
        (schedule, started_at, finished_at, status, int(fixed), user),
    )
    run = int(cur.lastrowid or 0)
    db.executemany(
        "INSERT INTO maintenance_results(run, check_name, status, value, threshold, advice,"
        " runbook, data) VALUES (?,?,?,?,?,?,?,?)",
        [
            (
                run,
                r.check,
                r.status,
                r.value,
                r.threshold,
                r.advice,
                r.runbook,
                json.dumps({**r.data, "fixed": r.fixed}, default=str),
            )
            for r in results
        ],
    )
    return run


def _results(store: Store, run: int) -> list[dict[str, Any]]:
    rows = store.connection.execute(
        "SELECT * FROM maintenance_results WHERE run = ? ORDER BY rowid", (run,)
    ).fetchall()
    return [
        {
            "check": r["check_name"],
            "status": r["status"],
            "value": r["value"],
            "threshold": r["threshold"],
            "advice": r["advice"],
            "runbook": f"runbooks/{r['runbook']}" if r["runbook"] else None,
        }
        for r in rows
    ]


def runs(store: Store, schedule: str | None = None, limit: int = 20) -> list[Run]:
    """The most recent runs, newest first, with their results."""
    sql = "SELECT * FROM maintenance_runs"
    args: list[Any] = []
    if schedule:
        sql += " WHERE schedule = ?"
        args.append(schedule)
    rows = store.connection.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, limit]).fetchall()
    return [
        Run(
            r["id"],
            r["schedule"],
            r["started_at"],
            r["finished_at"],
            r["status"],
            bool(r["fixed"]),
            r["user"],
            _results(store, r["id"]),
        )
        for r in rows
    ]


def last_data(
    store: Store, check: str, before: float | None = None
) -> tuple[float, dict[str, Any]] | None:
    """(when, data) of the newest non-unknown result of `check` finished at or before `before`
    (growth is measured from it)."""
    row = store.connection.execute(
        "SELECT r.data, m.finished_at FROM maintenance_results r JOIN maintenance_runs m"
        " ON m.id = r.run WHERE r.check_name = ? AND r.status != 'unknown'"
        " AND m.finished_at <= ? ORDER BY m.id DESC LIMIT 1",
        (check, before if before is not None else float("inf")),
    ).fetchone()
    if row is None:
        return None
    return float(row["finished_at"]), json.loads(row["data"] or "{}")


def latest(store: Store) -> dict[str, tuple[float, dict[str, str]]]:
    """Per schedule: (finished_at of its newest run, {check: status}) for the agent's gauges."""
    out: dict[str, tuple[float, dict[str, str]]] = {}
    rows = store.connection.execute(
        "SELECT schedule, MAX(id) AS id FROM maintenance_runs GROUP BY schedule"
    ).fetchall()
    for r in rows:
        run = store.connection.execute(
            "SELECT finished_at FROM maintenance_runs WHERE id = ?", (r["id"],)
        ).fetchone()
        out[r["schedule"]] = (
            float(run["finished_at"]),
            {c["check"]: c["status"] for c in _results(store, r["id"])},
        )
    return out


def record_schedule(store: Store, schedules: tuple[str, ...], method: str, at: float) -> None:
    """`maintenance install` scheduled these runs: the dead man's switch counts from `at`
    until a first run is recorded (a schedule that never runs must alert too)."""
    store.connection.executemany(
        "INSERT OR REPLACE INTO maintenance_schedules(schedule, method, installed_at)"
        " VALUES (?,?,?)",
        [(schedule, method, at) for schedule in schedules],
    )


def forget_schedule(store: Store, method: str) -> None:
    """`maintenance uninstall`: nothing is expected to run any more."""
    store.connection.execute("DELETE FROM maintenance_schedules WHERE method = ?", (method,))


def scheduled(store: Store) -> dict[str, float]:
    """{schedule: when it was installed} for the schedules `maintenance install` wrote."""
    rows = store.connection.execute(
        "SELECT schedule, installed_at FROM maintenance_schedules"
    ).fetchall()
    return {r["schedule"]: float(r["installed_at"]) for r in rows}
