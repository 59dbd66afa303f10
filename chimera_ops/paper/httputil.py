"""Small HTTP helpers shared by the route modules: JSON errors, body parsing, bearer auth."""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


class HttpError(Exception):
    """Raised by a handler to answer ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JSONResponse:
    """The one error shape every route uses."""
    headers = {"WWW-Authenticate": 'Bearer realm="chimera-paper"'} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def check_token(request: Request, token: str | None) -> None:
    """401 unless the request carries ``Authorization: Bearer <token>`` (when one is set)."""
    if token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    # compare_digest: the comparison time must not leak how much of the token matched.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), token.encode()
    ):
        raise HttpError(401, "missing or invalid bearer token")


async def json_object(
    request: Request, allowed: dict[str, type | tuple[type, ...]]
) -> dict[str, Any]:
    """Parse the body as a JSON object whose keys are in ``allowed`` with the given types.

    An empty body counts as ``{}``. Anything else malformed is a 400 naming what is wrong.
    """
    raw = await request.body()
    if not raw.strip():
        body: Any = {}
    else:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HttpError(400, f"body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise HttpError(400, f"unknown field(s): {', '.join(unknown)}")
    for key, value in body.items():
        expected = allowed[key]
        # bool is an int subclass in Python; a JSON true must not pass as a number.
        wants_bool = expected is bool or (isinstance(expected, tuple) and bool in expected)
        if (isinstance(value, bool) and not wants_bool) or not isinstance(value, expected):
            names = (
                " or ".join(t.__name__ for t in expected)
                if isinstance(expected, tuple)
                else expected.__name__
            )
            raise HttpError(400, f"field {key!r} must be {names}, got {type(value).__name__}")
    return body
