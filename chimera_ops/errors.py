"""Exceptions as text a person can act on, never `ReadTimeout: ` with nothing after it."""

from __future__ import annotations

_PLAIN: dict[str, str] = {
    "TimeoutError": "timed out",
    "ReadTimeout": "no answer in time",
    "ConnectTimeout": "could not connect in time",
    "WriteTimeout": "could not send the request in time",
    "PoolTimeout": "no free connection in time",
    "ConnectionRefusedError": "connection refused (nothing listens there)",
    "ConnectionResetError": "connection reset by the peer",
    "RemoteProtocolError": "the server closed the connection without a valid answer",
    "CancelledError": "cancelled",
}
"""What an exception class means when its message is empty (httpx timeouts often are)."""


def describe_exception(exc: BaseException) -> str:
    """`Class: message`; with an empty message, `Class (what it means)`."""
    name = type(exc).__name__
    message = str(exc).strip()
    if message:
        return f"{name}: {message}"
    meaning = _PLAIN.get(name)
    if meaning is None:
        doc = (type(exc).__doc__ or "").strip().splitlines()
        meaning = doc[0].rstrip(".") if doc else "no message"
    return f"{name} ({meaning})"


def error_text(exc: BaseException) -> str:
    """An exception as a message for an operator, never naming one of our own classes.

    Our exceptions (`chimera_ops.*`, and any private `_Name`) are written to be read as they
    are: their class is an implementation detail ("_NotBack: engine is not healthy" says
    nothing more than "engine is not healthy"). Other classes keep `describe_exception`'s
    form, where the name (`ConnectionRefusedError`, `ReadTimeout`) is part of the meaning.
    """
    cls = type(exc)
    ours = cls.__module__.startswith("chimera_ops") or cls.__name__.startswith("_")
    if not ours:
        return describe_exception(exc)
    message = str(exc).strip()
    if message:
        return message
    doc = (cls.__doc__ or "").strip().splitlines()
    return doc[0].rstrip(".") if doc else "failed without a message"
