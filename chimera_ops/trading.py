"""Client side of the trading control contract: read, halt and resume an engine.

One `EngineControl` per engine, over HTTP (`GET /control/state`, `POST /control/halt`,
`POST /control/resume`, bearer token from `token_env`) or a command transport (argv lists, no
shell, the state JSON on stdout). Every failure is a `TradingControlError` whose message names
the engine, where it was reached and what to check, because the reader is an operator at 3 a.m.

Command transport: the reason travels in the env var `CHIMERA_TRADING_REASON` and, for commands
that prefer it, as the JSON request body on stdin (`{"reason": ..., "cancel_open_orders": true}`).

A halt with `wait` reports its drain: the open orders when the halt landed, how many are open
at the end and the seconds from the halt request to then (`drain` in the engine's row). The
count at the halt is the engine's answer to it: orders still open plus those it reports in the
optional `cancelled` field (cancelled at once, so no longer open; the paper engine gives it).

Every halt and resume, by whoever asked (the CLI through the agent or directly, a procedure),
is recorded as events (`record_trading`): per engine a `trading` event (to_state halted or
active, who, why, how it was reached), an `orders_cancelled` event when the halt cancelled
orders, a `drained` event when a halt waited for its drain.

The pure parts (`parse_state`, `parse_state_text`, `summarize`, `drain_figures`,
`trading_events`) do no I/O and are unit-testable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from chimera_ops.aio import within
from chimera_ops.trading_spec import TradingConfig

REASON_ENV = "CHIMERA_TRADING_REASON"
_TAIL = 400  # characters of stderr / body quoted in an error: enough to act on, not a flood


class TradingControlError(Exception):
    """Any failure to read or change an engine's trading state; the message says what to do."""


class DrainTimeout(TradingControlError):
    """Open orders did not reach 0 within the drain timeout; `state` is the last one seen."""

    def __init__(self, message: str, state: TradingState) -> None:
        super().__init__(message)
        self.state = state


@dataclass(frozen=True)
class TradingState:
    """The contract's state document of one engine."""

    component: str
    trading: Literal["active", "halted"]
    open_orders: int
    since: float | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def halted(self) -> bool:
        return self.trading == "halted"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (extra fields such as `changed` or `cancelled` are kept)."""
        return {
            **self.extra,
            "component": self.component,
            "trading": self.trading,
            "open_orders": self.open_orders,
            "since": self.since,
            "reason": self.reason,
        }


# --------------------------------------------------------------------------- pure helpers


def parse_state(component: str, data: Any) -> TradingState:
    """Validate a decoded state document; TradingControlError naming the bad field otherwise."""
    if not isinstance(data, dict):
        raise TradingControlError(
            f"engine {component!r}: state must be a JSON object, got {type(data).__name__}"
        )
    trading = data.get("trading")
    if trading not in ("active", "halted"):
        raise TradingControlError(
            f"engine {component!r}: state field 'trading' must be 'active' or 'halted',"
            f" got {trading!r}"
        )
    open_orders = data.get("open_orders")
    # bool is an int subclass; `true` open orders is a broken engine, not 1 order.
    if not isinstance(open_orders, int) or isinstance(open_orders, bool) or open_orders < 0:
        raise TradingControlError(
            f"engine {component!r}: state field 'open_orders' must be a count >= 0,"
            f" got {open_orders!r}"
        )
    since = data.get("since")
    if since is not None and (not isinstance(since, int | float) or isinstance(since, bool)):
        raise TradingControlError(
            f"engine {component!r}: state field 'since' must be a unix time, got {since!r}"
        )
    reason = data.get("reason")
    known = {"trading", "open_orders", "since", "reason", "component"}
    return TradingState(
        component=component,
        trading=trading,
        open_orders=open_orders,
        since=float(since) if since is not None else None,
        reason=str(reason) if reason is not None else None,
        extra={k: v for k, v in data.items() if k not in known},
    )


def parse_state_text(component: str, text: str, source: str) -> TradingState:
    """Decode and validate a state document read from `source` (a URL or a command)."""
    try:
        data = json.loads(text)
    except ValueError:
        raise TradingControlError(
            f"engine {component!r}: {source} did not answer JSON: {_tail(text)!r}"
        ) from None
    return parse_state(component, data)


def _tail(text: str, limit: int = _TAIL) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def summarize(results: Iterable[dict[str, Any]]) -> str:
    """One line for the audit log: `name=halted(0 open)` or `name=ERROR: ...` per engine."""
    parts = []
    for r in results:
        if r.get("error"):
            parts.append(f"{r['component']}=ERROR: {r['error']}")
        else:
            parts.append(f"{r['component']}={r['trading']}({r['open_orders']} open)")
    return "; ".join(parts) or "no engine"


def drain_figures(at_halt: TradingState, last: TradingState, seconds: float) -> dict[str, Any]:
    """The drain of a halt: open orders when it landed (`from`), at the end (`to`), how long."""
    cancelled = at_halt.extra.get("cancelled")
    if not isinstance(cancelled, int) or isinstance(cancelled, bool) or cancelled < 0:
        cancelled = None
    return {
        "from": at_halt.open_orders + (cancelled or 0),
        "to": last.open_orders,
        "cancelled": cancelled,
        "seconds": round(seconds, 3),
        "drained": last.open_orders == 0,
    }


def describe_drain(drain: Mapping[str, Any]) -> str:
    """`18 open orders -> 0 in 0.4 s`, or `3 open orders -> 3 after 0.5 s (drain timeout)`."""
    seconds = float(drain["seconds"])
    took = f"{seconds:.1f} s" if seconds >= 0.1 else f"{seconds * 1000:.0f} ms"
    count = int(drain["from"])
    text = f"{count} open order{'' if count == 1 else 's'} -> {drain['to']}"
    return f"{text} in {took}" if drain["drained"] else f"{text} after {took} (drain timeout)"


def trading_events(
    op: str, rows: Iterable[dict[str, Any]], who: str, reason: str, via: str
) -> list[dict[str, Any]]:
    """The events of one halt or resume: keyword arguments for `Store.add_event`, per engine."""
    verb = {"halt": "halted", "resume": "resumed"}.get(op)
    if verb is None:
        return []
    out: list[dict[str, Any]] = []
    for row in rows:
        name = str(row.get("component"))
        drain = row.get("drain")
        cancelled = row.get("cancelled")
        if cancelled is None and isinstance(drain, dict):
            cancelled = drain.get("cancelled")  # a waited halt's row is the drained state
        if op != "halt" or not isinstance(cancelled, int) or isinstance(cancelled, bool):
            cancelled = None  # only a halt cancels orders
        data = {
            "action": op,
            "user": who,
            "reason": reason,
            "via": via,
            "ok": bool(row.get("ok")),
            "error": row.get("error"),
            "trading": row.get("trading"),
            "open_orders": row.get("open_orders"),
            "cancelled": cancelled,
        }
        if row.get("trading") is not None and (row.get("ok") or op == "halt"):
            text = f"trading {verb} by {who} via {via}: {reason}"
        else:
            text = f"{op} FAILED (asked by {who} via {via}: {reason}): {row.get('error')}"
        if cancelled:
            text += f"; {cancelled} open order{'' if cancelled == 1 else 's'} cancelled"
        out.append(
            {
                "kind": "trading",
                "reason": text,
                "component": name,
                "to_state": row.get("trading"),
                "data": data,
            }
        )
        if cancelled:
            out.append(
                {
                    "kind": "orders_cancelled",
                    "reason": f"{cancelled} open order{'' if cancelled == 1 else 's'} cancelled "
                    f"by the halt of {who}: {reason}",
                    "component": name,
                    "data": {"count": cancelled, "user": who, "reason": reason, "via": via},
                }
            )
        if op == "halt" and isinstance(drain, dict):
            out.append(
                {
                    "kind": "drained" if drain.get("drained") else "drain_timeout",
                    "reason": describe_drain(drain),
                    "component": name,
                    "data": {**drain, "user": who, "reason": reason, "via": via},
                }
            )
    return out


def record_trading(
    add_event: Callable[..., Any],
    op: str,
    rows: Iterable[dict[str, Any]],
    who: str,
    reason: str,
    via: str,
) -> None:
    """Record `trading_events` with `add_event` (a Store's)."""
    for event in trading_events(op, rows, who, reason, via):
        add_event(**event)


# --------------------------------------------------------------------------- transports


class _Http:
    def __init__(self, component: str, base_url: str, token: str | None, timeout: float) -> None:
        self.component = component
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    async def call(self, op: str, body: dict[str, Any] | None) -> str:
        method, path = ("GET", "/control/state") if op == "state" else ("POST", f"/control/{op}")
        url = self.base_url + path
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        name = self.component
        try:
            # trust_env=False: a HTTP(S)_PROXY meant for the internet must not sit between the
            # operator and a halt of a local engine.
            async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
                resp = await client.request(method, url, json=body, headers=headers)
        except httpx.ConnectError as exc:
            raise TradingControlError(
                f"engine {name!r} unreachable at {url} ({exc or 'connection refused'}):"
                " is it running? check `chimera-ops status` and the engine's logs"
            ) from None
        except httpx.TimeoutException:
            raise TradingControlError(
                f"engine {name!r} did not answer {method} {url} within {self.timeout:g}s:"
                " it may be frozen or overloaded; check its logs, restart it if needed"
            ) from None
        except httpx.HTTPError as exc:
            raise TradingControlError(f"engine {name!r}: {method} {url} failed: {exc}") from None
        if resp.status_code in (401, 403):
            how = (
                "the token it was sent is wrong: check the token variable matches the engine's"
                if self.token
                else "no token was sent: set trading.control.token_env in the config"
            )
            raise TradingControlError(
                f"engine {name!r} refused {method} {url} with HTTP {resp.status_code}: {how}"
            )
        if resp.status_code >= 400:
            raise TradingControlError(
                f"engine {name!r} answered HTTP {resp.status_code} to {method} {url}:"
                f" {_tail(resp.text)}"
            )
        return resp.text

    def where(self, op: str) -> str:
        return self.base_url + ("/control/state" if op == "state" else f"/control/{op}")


class _Command:
    def __init__(
        self, component: str, argv: dict[str, list[str]], env: Mapping[str, str], timeout: float
    ) -> None:
        self.component = component
        self.argv = argv
        self.env = dict(env)
        self.timeout = timeout

    async def call(self, op: str, body: dict[str, Any] | None) -> str:
        argv = self.argv[op]
        env = dict(self.env)
        if body and "reason" in body:
            env[REASON_ENV] = str(body["reason"])
        name, shown = self.component, " ".join(argv)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                # own process group: a timeout kills the command and whatever it spawned.
                start_new_session=True,
            )
        except OSError as exc:
            raise TradingControlError(
                f"engine {name!r}: cannot run `{shown}`: {exc}; check trading.control.command"
            ) from None
        payload = json.dumps(body).encode() if body is not None else b""
        try:
            out, err = await within(proc.communicate(payload), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise TradingControlError(
                f"engine {name!r}: `{shown}` did not finish within {self.timeout:g}s and was"
                " killed; check the engine, or raise trading.control.timeout"
            ) from None
        if proc.returncode != 0:
            raise TradingControlError(
                f"engine {name!r}: `{shown}` exited with {proc.returncode}:"
                f" {_tail(err.decode(errors='replace')) or '(no stderr)'}"
            )
        return out.decode(errors="replace")

    def where(self, op: str) -> str:
        return f"`{' '.join(self.argv[op])}`"


# --------------------------------------------------------------------------- the control


class EngineControl:
    """Read, halt and resume one engine as its `trading:` config says."""

    def __init__(
        self, component: str, config: TradingConfig, env: Mapping[str, str] | None = None
    ) -> None:
        self.component = component
        self.config = config
        self.drain_timeout = config.drain_timeout
        env = os.environ if env is None else env
        control = config.control
        self._transport: _Http | _Command
        if control.http is not None:
            self._transport = _Http(component, control.http, self._token(env), control.timeout)
        else:
            assert control.command is not None  # the config model guarantees one transport
            cmd = control.command
            argv = {"state": cmd.state, "halt": cmd.halt, "resume": cmd.resume}
            self._transport = _Command(component, argv, env, control.timeout)

    def _token(self, env: Mapping[str, str]) -> str | None:
        name = self.config.control.token_env
        if not name:
            return None
        token = env.get(name)
        if not token:
            # Name the variable, never the value.
            raise TradingControlError(
                f"engine {self.component!r}: the token variable ${name} (trading.control."
                "token_env) is not set in this environment; export it, then retry"
            )
        return token

    @property
    def target(self) -> str:
        """Where the engine is reached (URL or command), for messages."""
        return self._transport.where("state")

    async def _call(self, op: str, body: dict[str, Any] | None = None) -> TradingState:
        text = await self._transport.call(op, body)
        return parse_state_text(self.component, text, self._transport.where(op))

    async def state(self) -> TradingState:
        """The engine's current state."""
        return await self._call("state")

    async def halt(self, reason: str) -> TradingState:
        """Stop new orders and cancel open ones (idempotent); the state after the halt."""
        state = await self._call("halt", {"reason": reason, "cancel_open_orders": True})
        if not state.halted:
            raise TradingControlError(
                f"engine {self.component!r} accepted the halt but still reports trading"
                f" {state.trading!r}; treat it as NOT halted and stop it"
            )
        return state

    async def resume(self, reason: str) -> TradingState:
        """Allow new orders again (idempotent); the state after the resume."""
        return await self._call("resume", {"reason": reason})

    async def wait_drained(self, timeout: float | None = None, poll: float = 0.2) -> TradingState:
        """Poll the state until open_orders == 0; DrainTimeout with the last state otherwise."""
        limit = self.drain_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            state = await self.state()
            if state.open_orders == 0:
                return state
            if time.monotonic() >= deadline:
                raise DrainTimeout(
                    f"engine {self.component!r} still has {state.open_orders} open order(s)"
                    f" after {limit:g}s (trading {state.trading}); check the engine and the"
                    " exchange, or raise trading.drain_timeout",
                    state,
                )
            await asyncio.sleep(poll)


# --------------------------------------------------------------------------- many engines


def _row(
    component: str,
    state: TradingState | None,
    error: str | None,
    drain: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if state is not None:
        row = {**state.to_dict(), "ok": error is None, "error": error}
        return {**row, "drain": drain} if drain is not None else row
    return {
        "component": component,
        "trading": None,
        "open_orders": None,
        "since": None,
        "reason": None,
        "ok": False,
        "error": error,
    }


async def _one(
    name: str, make: Callable[[str], EngineControl], op: str, reason: str, wait: bool
) -> dict[str, Any]:
    state: TradingState | None = None
    halted: TradingState | None = None
    started = time.monotonic()
    try:
        control = make(name)
        if op == "state":
            state = await control.state()
        elif op == "halt":
            state = halted = await control.halt(reason)
            if wait and state.open_orders:
                state = await control.wait_drained()
        else:
            state = await control.resume(reason)
    except DrainTimeout as exc:
        assert halted is not None  # only the wait after a halt raises it
        drain = drain_figures(halted, exc.state, time.monotonic() - started)
        return _row(name, exc.state, str(exc), drain)
    except TradingControlError as exc:
        # A halt that succeeded before the drain polling failed is still a halt: keep its state.
        return _row(name, state, str(exc))
    if wait and halted is not None and state is not None:
        return _row(name, state, None, drain_figures(halted, state, time.monotonic() - started))
    return _row(name, state, None)


async def run_on_engines(
    engines: Mapping[str, TradingConfig],
    op: Literal["state", "halt", "resume"],
    reason: str = "",
    wait: bool = False,
    env: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Apply `op` to every engine concurrently; one result row per engine, errors included.

    Concurrent because a halt is an emergency brake: one frozen engine must not delay the rest.
    """

    def make(name: str) -> EngineControl:
        return EngineControl(name, engines[name], env)

    return list(await asyncio.gather(*(_one(n, make, op, reason, wait) for n in engines)))
