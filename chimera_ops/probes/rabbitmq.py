"""RabbitMQ probe: queue depths from the management API, or from `rabbitmqctl list_queues`.

Fails when the broker cannot be asked, when a listed queue does not exist, or when a listed
queue (every queue, if none are listed) holds more than `max_depth` messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote

import httpx

from chimera_ops.errors import describe_exception
from chimera_ops.probes._subproc import run_argv
from chimera_ops.probes.base import Probe, ProbeResult
from chimera_ops.probes.spec import RabbitmqProbeSpec
from chimera_ops.redact import redact_text

RABBITMQCTL = "rabbitmqctl"


def parse_list_queues(output: str) -> dict[str, int]:
    """Parse `rabbitmqctl list_queues -q name messages` lines: `<name>\\t<messages>`."""
    depths: dict[str, int] = {}
    for line in output.splitlines():
        name, sep, count = line.rstrip().rpartition("\t")
        if not sep:
            name, _, count = line.rstrip().rpartition(" ")
        if name and count.isdigit():
            depths[name] = int(count)
    return depths


def evaluate_depths(
    depths: Mapping[str, int], queues: list[str], max_depth: int | None
) -> tuple[bool, str]:
    """Pure verdict over queue depths: (ok, reason)."""
    missing = [name for name in queues if name not in depths]
    if missing:
        return False, f"queue(s) not found: {', '.join(missing)}"
    watched = {name: depths[name] for name in queues} if queues else dict(depths)
    if max_depth is not None:
        over = sorted(
            ((name, n) for name, n in watched.items() if n > max_depth), key=lambda item: -item[1]
        )
        if over:
            listed = ", ".join(f"{name}={n}" for name, n in over[:5])
            return False, f"{len(over)} queue(s) over max_depth {max_depth}: {listed}"
    deepest = max(watched.values(), default=0)
    return True, f"{len(watched)} queue(s), deepest {deepest} message(s)"


class RabbitmqProbe(Probe):
    """Queue-depth probe over the management API (httpx, basic auth) or rabbitmqctl."""

    kind = "rabbitmq"

    def __init__(
        self, spec: RabbitmqProbeSpec, timeout: float, env: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(timeout)
        self.spec = spec
        self.env = env if env is not None else os.environ

    def describe(self) -> str:
        if self.spec.management_url:
            return redact_text(self.spec.management_url)
        return f"{RABBITMQCTL} list_queues -p {self.spec.vhost}"

    async def _from_api(self) -> dict[str, int] | str:
        assert self.spec.management_url is not None
        password = self.env.get(self.spec.password_env, "") if self.spec.password_env else ""
        if self.spec.password_env and not password:
            return f"environment variable {self.spec.password_env} is not set"
        base = self.spec.management_url.rstrip("/")
        url = f"{base}/api/queues/{quote(self.spec.vhost, safe='')}"
        try:
            async with httpx.AsyncClient(
                timeout=self.timeout, auth=(self.spec.user, password or "guest")
            ) as client:
                response = await client.get(url, params={"columns": "name,messages"})
        except httpx.HTTPError as exc:
            return redact_text(f"GET {url} failed: {describe_exception(exc)}", [password])
        if response.status_code != 200:
            return f"GET {redact_text(url)} returned {response.status_code}"
        # `messages` is absent on a queue whose stats are not yet collected: count it as 0.
        return {q["name"]: int(q.get("messages") or 0) for q in response.json()}

    async def _from_ctl(self) -> dict[str, int] | str:
        argv = [RABBITMQCTL, "list_queues", "-q", "-p", self.spec.vhost, "name", "messages"]
        try:
            done = await run_argv(argv)
        except OSError as exc:
            return f"cannot run {RABBITMQCTL}: {exc.strerror}"
        if done.returncode != 0:
            last = done.output.strip().splitlines()[-1:] or [""]
            return f"{RABBITMQCTL} exited {done.returncode}: {last[0][:200]}"
        return parse_list_queues(done.output)

    async def check(self) -> ProbeResult:
        depths = await (self._from_api() if self.spec.management_url else self._from_ctl())
        if isinstance(depths, str):
            return ProbeResult(ok=False, reason=f"rabbitmq: {depths}")
        ok, reason = evaluate_depths(depths, self.spec.queues, self.spec.max_depth)
        return ProbeResult(ok=ok, reason=f"rabbitmq: {reason}", details={"queues": depths})
