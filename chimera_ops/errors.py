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
    """An exception as text for an operator.

    `Class: message`, or with an empty message `Class (what it means)`, where the class name is
    part of the meaning (`ConnectionRefusedError`, `ReadTimeout`). One of our own classes
    (`chimera_ops.*`, or any private `_Name`) is never named: its message is written to be read
    as it is, and its class is an implementation detail ("_NotBack: engine is not healthy" says
    nothing more than "engine is not healthy").
    """
    cls = type(exc)
    message = str(exc).strip()
    doc = (cls.__doc__ or "").strip().splitlines()
    if cls.__module__.startswith("chimera_ops") or cls.__name__.startswith("_"):
        return message or (doc[0].rstrip(".") if doc else "failed without a message")
    if message:
        return f"{cls.__name__}: {message}"
    meaning = _PLAIN.get(cls.__name__) or (doc[0].rstrip(".") if doc else "no message")
    return f"{cls.__name__} ({meaning})"


# The name procedure steps and doctor checks use: the same rule.
error_text = describe_exception
