"""The agent's log lines: human-readable by default, or one JSON object a line
(`agent --log-format json`) for Loki, journald or any log shipper. Stdlib only.

A JSON line always has `time` (RFC 3339 UTC), `level`, `logger` and `message`; a line about a
component also has `component`, `event` (the store's event kind: state, stop_signal, ...) and
`reason`, plus any other structured fields the caller passed (`from_state`, `to_state`).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS_ATTR = "chimera_fields"  # where log_fields() puts the structured part on a record


def log_fields(component: str | None, event: str, reason: str, **more: str) -> dict[str, Any]:
    """`extra=` for a log call: the structured fields of a line about a component."""
    return {FIELDS_ATTR: {"component": component, "event": event, "reason": reason, **more}}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS_ATTR, None)
        if isinstance(fields, dict):
            doc.update({k: v for k, v in fields.items() if v is not None})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure(level: int, fmt: str = "text") -> None:
    """Root logging to stderr in `fmt` (text | json)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
