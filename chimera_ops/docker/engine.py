"""The agent's connection to one Docker engine: a client for calls, and one event stream.

One thread reads `GET /events` (container events only) and hands each event to the asyncio
loop (`call_soon_threadsafe`), where the docker runtimes that follow a container see `die`,
`oom`, `health_status`, `start` and `stop` at once: no polling. When the stream breaks (the
engine stopped or was killed) the engine is marked unreachable, every listener is told (their
components go `unknown` with the reason), and the thread reconnects with exponential backoff;
once the engine answers again the listeners are told and re-inspect their containers.

Every other call is blocking SDK code: `call()` runs it in a worker thread, never on the loop.
The docker SDK is imported here only, when the first docker component is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from chimera_ops.errors import describe_exception

log = logging.getLogger("chimera_ops.docker")

DEFAULT_HOST = "unix:///var/run/docker.sock"
RECONNECT_FIRST = 0.2
RECONNECT_MAX = 5.0  # an engine back after a restart is seen within this
CALL_TIMEOUT = 30  # seconds for one API call (a `docker stop -t 10` needs more than 10)

T = TypeVar("T")
EventListener = Callable[[dict[str, Any]], None]
StatusListener = Callable[[bool, str], None]


def resolve_host(configured: str | None, environ: dict[str, str] | None = None) -> str:
    """`agent.docker.host`, else `$DOCKER_HOST`, else the default socket."""
    env = os.environ if environ is None else environ
    return configured or env.get("DOCKER_HOST") or DEFAULT_HOST


def engine_error(exc: BaseException) -> bool:
    """True when `exc` says the engine cannot be reached (not that a call was refused)."""
    import docker.errors
    import requests.exceptions

    if isinstance(exc, docker.errors.APIError):
        return False
    return isinstance(
        exc, (requests.exceptions.ConnectionError, docker.errors.DockerException, OSError)
    )


class DockerEngine:
    """A Docker engine: blocking calls off the loop, one event stream, reachability."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.reachable: bool | None = None  # None: not known yet
        self.reason = "the Docker engine has not answered yet"
        self._events: list[EventListener] = []
        self._status: list[StatusListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._stream: Any = None
        self._client: Any = None

    # ----------------------------------------------------------------- clients
    def _new_client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.host, timeout=CALL_TIMEOUT)

    @property
    def client(self) -> Any:
        """The shared client for blocking calls (made on first use)."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    @property
    def api(self) -> Any:
        """The low-level API client (dict results)."""
        return self.client.api

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one blocking SDK call in a worker thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    # ----------------------------------------------------------------- listeners
    def on_event(self, listener: EventListener) -> None:
        """Call `listener(event)` on the loop for every container event."""
        self._events.append(listener)

    def on_status(self, listener: StatusListener) -> None:
        """Call `listener(reachable, reason)` on the loop when reachability changes."""
        self._status.append(listener)

    def _dispatch(self, event: dict[str, Any]) -> None:
        for listener in list(self._events):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - one listener's bug must not stop the stream
                log.exception("docker event listener failed on %s", event.get("Action"))

    def _set_reachable(self, reachable: bool, reason: str) -> None:
        if self.reachable is reachable and self.reason == reason:
            return
        changed = self.reachable is not reachable
        self.reachable, self.reason = reachable, reason
        if not changed:
            return
        log.log(
            logging.INFO if reachable else logging.WARNING,
            "docker engine %s: %s",
            "reachable" if reachable else "unreachable",
            reason,
        )
        for listener in list(self._status):
            try:
                listener(reachable, reason)
            except Exception:  # noqa: BLE001
                log.exception("docker status listener failed")

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # RuntimeError: the loop closed between the check and the call.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

    # ----------------------------------------------------------------- the stream
    def start(self) -> None:
        """Start the event thread (call from the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = RECONNECT_FIRST
        while not self._stopped.is_set():
            try:
                client = self._new_client()
                client.ping()
                # The response is open before the engine is declared reachable, so the
                # listeners' re-inspection cannot miss an event that follows it.
                self._stream = client.api.events(decode=True, filters={"type": "container"})
                self._post(self._set_reachable, True, f"the Docker engine at {self.host} answers")
                delay = RECONNECT_FIRST
                for event in self._stream:
                    self._post(self._dispatch, event)
                if self._stopped.is_set():
                    break
                why = "the event stream ended (the engine stopped?)"
            except Exception as exc:  # noqa: BLE001 - the stream must come back by itself
                if self._stopped.is_set():
                    break
                why = describe_exception(exc)
            self._post(
                self._set_reachable,
                False,
                f"the Docker engine at {self.host} does not answer: {why}",
            )
            self._stopped.wait(delay)
            delay = min(RECONNECT_MAX, delay * 2)

    def close(self) -> None:
        """Stop the event thread and close the clients."""
        self._stopped.set()
        stream = self._stream
        # Closing a stream or client whose engine is gone may fail; nothing is left to do then.
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
