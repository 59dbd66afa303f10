"""What the control API accepts: a capped request body, checked JSON and query parameters.

Every refusal is an answer, never a 500: 413 for a body over `MAX_BODY` (said by its
Content-Length or counted as it streams in, never buffered past the cap), 400 naming the field
for malformed JSON, a wrong type or a bad query parameter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 1024 * 1024  # 1 MiB: the largest body any route takes is a few hundred bytes


class ApiError(Exception):
    """A refused request: its status (400 by default) and, for a bad input, the `field`."""

    def __init__(
        self, message: str, field: str | None = None, status: int = 400, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.extra = {"field": field, **extra} if field else extra

    def response(self) -> Response:
        return JSONResponse({"error": str(self), **self.extra}, status_code=self.status)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: a raised ApiError becomes its JSON answer."""
    assert isinstance(exc, ApiError)
    return exc.response()


class _Overflow(Exception):
    """The body went over the cap while it streamed in."""


class BodyCap:
    """ASGI middleware: 413 for a request body over `limit` bytes.

    A declared Content-Length over the cap is refused before a byte of the body is read; a
    streamed (chunked) body is counted as the route reads it and refused once over. The 413
    closes the connection, so the rest of the body is never read.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (len(value) > 15 or int(value) > self.limit):
                await self._refuse(send)
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _Overflow
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _Overflow:
            if started:  # a route answered before reading all of its body: nothing to add
                return
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": f"the request body is over the limit of {self.limit} bytes",
                "limit_bytes": self.limit,
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the rest of the body is not read
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------- bodies
async def json_object(
    request: Request,
    fields: Mapping[str, type | tuple[type, ...]],
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The body as a JSON object with only `fields`, each of its type (None allowed unless
    required); an empty body is `{}`. ApiError naming the field otherwise."""
    raw = await request.body()
    if not raw.strip():
        body: Any = {}
    else:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than json allows
            raise ApiError('the body must be JSON, e.g. {"reason": "..."}', field="body") from None
    if not isinstance(body, dict):
        raise ApiError(f"the body must be a JSON object, not {_json_type(body)}", field="body")
    for key in body:
        if key not in fields:
            raise ApiError(f"unknown field {key!r}; known: {', '.join(fields)}", field=key)
    for key, kind in fields.items():
        check_type(body.get(key), kind, key, key in required)
    return body


def check_type(
    value: Any, kind: type | tuple[type, ...], field: str, required: bool = False
) -> None:
    """ApiError naming `field` unless `value` is a `kind` (or None when not required)."""
    if value is None:
        if required:
            raise ApiError(f"field {field!r} is required", field=field)
        return
    kinds = kind if isinstance(kind, tuple) else (kind,)
    wrong_bool = isinstance(value, bool) and bool not in kinds  # True is an int in Python
    if wrong_bool or not isinstance(value, kinds):
        names = " or ".join(dict.fromkeys(_JSON_NAMES.get(k, k.__name__) for k in kinds))
        raise ApiError(f"field {field!r} must be {names}, not {_json_type(value)}", field=field)
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(f"field {field!r} must be a finite number", field=field)


_JSON_NAMES = {  # bool first: True is an int too
    bool: "true or false",
    str: "a string",
    int: "a number",
    float: "a number",
    dict: "an object",
    list: "an array",
}


def _json_type(value: Any) -> str:
    return next((name for k, name in _JSON_NAMES.items() if isinstance(value, k)), "null")


# ----------------------------------------------------------------- query parameters
def query_float(request: Request, name: str, default: float | None = None) -> float | None:
    """A finite number from the query (`default` when absent); ApiError naming it."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ApiError(f"query parameter {name!r} must be a number, not {raw!r}", field=name)
    return value


def query_int(request: Request, name: str, minimum: int = 0) -> int | None:
    """A whole number >= minimum from the query (None when absent); ApiError naming it."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    digits = raw.lstrip("0") or "0"
    whole = raw.isascii() and raw.isdigit()
    # Past 18 digits it is huge either way: never an int() of thousands of digits.
    value = (int(digits) if len(digits) <= 18 else 10**18) if whole else -1
    if value < minimum:
        raise ApiError(
            f"query parameter {name!r} must be a whole number >= {minimum}, not {raw!r}",
            field=name,
        )
    return value


def page_limit(request: Request, default: int, maximum: int) -> int:
    """`?limit=`: `default` when absent, at most `maximum` (a larger one is capped to it);
    zero, negative or not a whole number is a ApiError."""
    limit = query_int(request, "limit", minimum=1)
    return default if limit is None else min(limit, maximum)
