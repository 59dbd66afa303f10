"""A minimal HTTP/1.1 GET for health probes: one request, fresh connection, `Connection: close`.

Why not httpx: a probe needs a status code and a short body, and an agent runs tens of probes a
second. httpx spent ~60 % of an agent's CPU under that load (request machinery, pools, SSL
contexts); this costs a few asyncio stream calls. Redirects are not followed (a redirect is an
answer a health check should see). Bodies are read up to `max_body` bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from chimera_ops.aio import within

MAX_HEADERS = 100
MAX_LINE = 16 * 1024


class HttpError(Exception):
    """The server answered something that is not HTTP/1.x."""


@dataclass(frozen=True)
class HttpAnswer:
    """Status, headers (lower-case names) and the first `max_body` bytes of the body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    # Built once: creating a default context loads the CA bundle (tens of ms of CPU).
    return ssl.create_default_context()


def _request(url: str, headers: dict[str, str]) -> tuple[str, int, bool, bytes]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host
    if parts.port:
        host_header += f":{parts.port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host_header}",
        "User-Agent: chimera-ops-probe",
        "Accept: */*",
        "Connection: close",
    ]
    if parts.username is not None:
        creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        lines.append("Authorization: Basic " + base64.b64encode(creds).decode())
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return host, port, tls, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], max_body: int) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while len(body) < max_body:
            size_line = await reader.readline()
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            body += await reader.readexactly(size)
            await reader.readline()  # CRLF after each chunk
        return body[:max_body]
    if "content-length" in headers:
        length = int(headers["content-length"])
        return await reader.readexactly(min(length, max_body))
    return await reader.read(max_body)


async def get(
    url: str, headers: dict[str, str] | None = None, max_body: int = 64 * 1024
) -> HttpAnswer:
    """GET `url`; raises OSError (connect / reset), HttpError (not HTTP) or IncompleteReadError.

    The caller applies the timeout (Probe.run); cancellation closes the connection.
    """
    host, port, tls, request = _request(url, headers or {})
    reader, writer = await asyncio.open_connection(
        host,
        port,
        ssl=_tls() if tls else None,
        server_hostname=host if tls else None,
        limit=MAX_LINE,
    )
    try:
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        fields = status_line.decode("latin-1").split(" ", 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/1.") or not fields[1].isdigit():
            raise HttpError(f"not an HTTP answer: {status_line[:80]!r}")
        answer_headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            answer_headers[name.strip().lower()] = value.strip()
        body = await _read_body(reader, answer_headers, max_body)
        return HttpAnswer(int(fields[1]), answer_headers, body)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await within(writer.wait_closed(), 1.0)
