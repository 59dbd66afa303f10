"""Client of the agent's control API over its unix socket (stdlib only: the CLI starts fast)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from chimera_ops.agent.paths import socket_path

PROCEDURES_PAGE = 200  # the most `GET /v1/procedures` answers at once


class AgentUnavailable(Exception):
    """No agent answers on the state_dir's socket."""


class AgentError(Exception):
    """The agent answered with an error status."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        super().__init__(body.get("error") or f"HTTP {status}")


def _exchange(path: str, timeout: float, request: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 request with `Connection: close` over a unix socket: (status, body).

    Plain sockets rather than http.client, whose import (the email package) alone costs more
    than a whole `chimera-ops status` round trip to the agent.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    finally:
        sock.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise AgentUnavailable(f"agent socket {path} answered something that is not HTTP")
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return int(status_line[1]), body


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


class AgentClient:
    """Talks to the agent of one state_dir."""

    def __init__(self, state_dir: Path, timeout: float = 30.0) -> None:
        self.path = socket_path(state_dir)
        self.timeout = timeout

    def request(self, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One JSON request; AgentUnavailable when nothing listens, AgentError on 4xx/5xx."""
        if not self.path.exists():
            raise AgentUnavailable(f"no agent socket at {self.path}")
        payload = json.dumps(body).encode() if body is not None else b""
        request = (
            f"{method} {url} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        try:
            status, raw = _exchange(str(self.path), self.timeout, request)
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            raise AgentUnavailable(f"agent socket {self.path} does not answer: {exc}") from exc
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"raw": raw.decode(errors="replace")}
        if status >= 400:
            raise AgentError(status, data)
        return data

    def status(self) -> dict[str, Any]:
        return self.request("GET", "/v1/status")

    def action(self, name: str, verb: str, reason: str | None = None) -> dict[str, Any]:
        return self.request(
            "POST", f"/v1/components/{name}/{verb}", {"reason": reason} if reason else {}
        )

    def start_procedure(
        self, kind: str, params: dict[str, Any], user: str | None = None
    ) -> dict[str, Any]:
        """Start a procedure in the agent; {"id": ...} (AgentError 409 when one runs)."""
        return self.request(
            "POST", "/v1/procedures", {"kind": kind, "params": params, "user": user}
        )

    def abort_procedure(
        self, job: str, user: str | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        """Ask the agent to end `job` at its next step boundary (AgentError 409: not running)."""
        body = {k: v for k, v in (("user", user), ("reason", reason)) if v}
        return self.request("POST", f"/v1/procedures/{job}/abort", body)

    def procedure(self, job: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/procedures/{job}")

    def procedures(self, limit: int = 50) -> dict[str, Any]:
        """{"procedures": the newest `limit`, newest first}, following the route's `next`
        cursor page by page (a page holds at most PROCEDURES_PAGE)."""
        rows: list[dict[str, Any]] = []
        cursor: dict[str, Any] = {}
        while len(rows) < limit:
            query = {"limit": min(limit - len(rows), PROCEDURES_PAGE), **cursor}
            page = self.request("GET", "/v1/procedures?" + urlencode(query))
            rows.extend(page["procedures"])
            if not page.get("next"):
                break
            cursor = page["next"]
        return {"procedures": rows}

    def events(
        self,
        component: str | None = None,
        since: float | None = None,
        limit: int = 200,
        before: int | None = None,
        after: int | None = None,
    ) -> dict[str, Any]:
        """One page of `GET /v1/events`: {"events", "limit", "next"} (pass `next` on as
        `before=`/`after=` for the following page)."""
        query = {"limit": limit, "component": component, "since": since}
        query |= {"before": before, "after": after}
        return self.request(
            "GET", "/v1/events?" + urlencode({k: v for k, v in query.items() if v is not None})
        )
