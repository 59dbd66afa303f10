"""The procedure journal in the store: every job, every step with its timing and result.

States of a job: `running`, `succeeded`, `failed` (it ran to a verdict: e.g. the stack is not
healthy, trading stays halted), `aborted` (it stopped early and put things back: e.g. a drain
timeout resumed trading, nothing was restarted), `planned` (a `--dry-run`), `interrupted` (the
agent died while it ran; found by the next agent).

What a journal holds is redacted like the support bundle (`chimera_ops.redact`: the known
secret values given to it, then every rule) when it is written, and again when it is read (rows
written before redaction existed, or by a journal that knew fewer values): step output quotes
what commands printed (a `tail` of a log with an AWS key, `--api-secret X` in an argv), runbook
variables may hold passwords. JSON is redacted value by value, so it stays JSON; a value under a
secret-named key, and the argument after a secret-named option in an argv list, are masked
whole.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from chimera_ops.redact import MASK, Redactor, is_secret_name
from chimera_ops.store import Store

if TYPE_CHECKING:
    from chimera_ops.config import ChimeraConfig

FINAL = ("succeeded", "failed", "aborted", "planned", "interrupted")


def config_secrets(config: ChimeraConfig) -> set[str]:
    """The secret values a journal removes verbatim: what the support bundle knows from this
    process's environment and the config (`ops/bundle/secrets.py`: secret-named variables,
    every `*_env` target, DSN passwords, the components' `env:`)."""
    from chimera_ops.ops.bundle.secrets import known_values

    envs = [dict(os.environ), *(dict(c.env) for c in config.components.values())]
    return known_values(config.model_dump(mode="json"), envs)


def new_id(kind: str, now: float) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"{kind}-{stamp}-{secrets.token_hex(2)}"


class Journal:
    """Writes and reads the `procedures` and `procedure_steps` tables."""

    def __init__(self, store: Store, known_secrets: Iterable[str] = ()) -> None:
        self.db = store.connection
        self._redactor = Redactor(known_secrets)

    def scrub(self, value: Any) -> Any:
        """`value` (JSON-shaped) with every secret masked, its shape kept."""
        if isinstance(value, str):
            return self._redactor.redact(value)
        if isinstance(value, dict):
            return {
                k: MASK if isinstance(v, str) and v and is_secret_name(str(k)) else self.scrub(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            out = [self.scrub(v) for v in value]
            # An argv: the element after a secret-named option is its value (`--api-secret`,
            # `X`), which the text rules cannot see across two list elements.
            for i, (item, after) in enumerate(zip(value, value[1:], strict=False)):
                if isinstance(item, str) and _secret_option(item) and str(after)[:1] != "-":
                    out[i + 1] = MASK
            return out
        return value

    def scrub_text(self, text: str | None) -> str | None:
        """A stored text column: JSON redacted value by value, anything else as text."""
        if not text:
            return text
        try:
            data = json.loads(text)
        except ValueError:
            return self._redactor.redact(text)
        return json.dumps(self.scrub(data)) if isinstance(data, dict | list) else text

    def create(self, kind: str, params: dict[str, Any], user: str | None, pid: int) -> str:
        now = time.time()
        job = new_id(kind, now)
        self.db.execute(
            "INSERT INTO procedures(id, kind, state, started_at, params, agent_pid, user)"
            " VALUES (?,?,?,?,?,?,?)",
            (job, kind, "running", now, json.dumps(self.scrub(params)), pid, user),
        )
        return job

    def step_started(self, job: str, n: int, name: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO procedure_steps(procedure, n, name, state, started_at)"
            " VALUES (?,?,?,?,?)",
            (job, n, name, "running", time.time()),
        )

    def step_finished(self, job: str, n: int, state: str, detail: str) -> None:
        self.db.execute(
            "UPDATE procedure_steps SET state = ?, finished_at = ?, detail = ?"
            " WHERE procedure = ? AND n = ?",
            (state, time.time(), self.scrub_text(detail), job, n),
        )

    def set_lock(self, job: str, holder_json: str | None) -> None:
        self.db.execute("UPDATE procedures SET lock = ? WHERE id = ?", (holder_json, job))

    def finish(self, job: str, state: str, result: dict[str, Any]) -> None:
        assert state in FINAL
        self.db.execute(
            "UPDATE procedures SET state = ?, finished_at = ?, result = ? WHERE id = ?",
            (state, time.time(), json.dumps(self.scrub(result), default=str), job),
        )

    def acknowledge_interrupted(self) -> int:
        """An operator acted after an interrupted job (a later procedure, a resume): done."""
        cur = self.db.execute(
            "UPDATE procedures SET acknowledged = 1 WHERE state = 'interrupted' AND acknowledged = 0"
        )
        return int(cur.rowcount or 0)

    # ----------------------------------------------------------------- reading
    def get(self, job: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM procedures WHERE id = ?", (job,)).fetchone()
        if row is None:
            return None
        steps = self.db.execute(
            "SELECT * FROM procedure_steps WHERE procedure = ? ORDER BY n", (job,)
        ).fetchall()
        return self._doc(row, [dict(s) for s in steps])

    def ids_like(self, prefix: str, limit: int = 10) -> list[str]:
        rows = self.db.execute(
            "SELECT id FROM procedures WHERE id LIKE ? ORDER BY started_at DESC LIMIT ?",
            (prefix + "%", limit),
        ).fetchall()
        return [r[0] for r in rows]

    def page(self, limit: int, before: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        """Newest first, `limit` at a time, and whether there are more; `before` is the id of
        the last one seen (the page goes on after it)."""
        sql, args = "SELECT * FROM procedures", []
        if before is not None:
            sql += " WHERE (started_at, id) < (SELECT started_at, id FROM procedures WHERE id = ?)"
            args.append(before)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        rows = self.db.execute(sql, (*args, limit + 1)).fetchall()
        return [self._doc(r, None) for r in rows[:limit]], len(rows) > limit

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM procedures ORDER BY started_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [self._doc(r, None) for r in rows]

    def with_state(self, state: str, unacknowledged: bool = False) -> list[dict[str, Any]]:
        query = "SELECT * FROM procedures WHERE state = ?"
        if unacknowledged:
            query += " AND acknowledged = 0"
        rows = self.db.execute(query + " ORDER BY started_at", (state,)).fetchall()
        return [self._doc(r, None) for r in rows]

    def current_step(self, job: str) -> tuple[int, str] | None:
        row = self.db.execute(
            "SELECT n, name FROM procedure_steps WHERE procedure = ? ORDER BY n DESC LIMIT 1",
            (job,),
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def _doc(self, row: Any, steps: list[dict[str, Any]] | None) -> dict[str, Any]:
        """A row as the API and the CLI show it, redacted again on the way out."""
        doc = {
            "id": row["id"],
            "kind": row["kind"],
            "state": row["state"],
            "started_at": row["started_at"],
            "finished_at": row["finished_at"],
            "params": self.scrub(json.loads(row["params"] or "{}")),
            "result": self.scrub(json.loads(row["result"])) if row["result"] else None,
            "agent_pid": row["agent_pid"],
            "user": row["user"],
            "acknowledged": bool(row["acknowledged"]),
        }
        if steps is not None:
            doc["steps"] = [{**s, "detail": self.scrub_text(s.get("detail"))} for s in steps]
        return doc


def _secret_option(arg: str) -> bool:
    """`--api-secret`, `-password` (no `=value` of its own): its value is the next argument."""
    return arg.startswith("-") and "=" not in arg and is_secret_name(arg.lstrip("-"))
