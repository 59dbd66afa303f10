"""Memory monitor: tree RSS over a limit for N samples -> restart; a rising trend -> leak alert.

`feed` and `evaluate` are pure (samples in, findings out, no clock of their own);
`observe` samples the process tree with psutil in a thread and feeds them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil

from chimera_ops.monitors.base import Finding, Monitor
from chimera_ops.monitors.slope import Trend, analyse
from chimera_ops.monitors.spec import MemoryMonitorConfig
from chimera_ops.monitors.tree import tree_identity, tree_processes
from chimera_ops.units import format_duration, format_size

if TYPE_CHECKING:
    from chimera_ops.docker.cgroup import CgroupMemory

MemorySource = Callable[[], "CgroupMemory | None"]
"""A container's cgroup reading (blocking): usage, its own limit, the oom_kill counter."""


def tree_memory(pid: int | list[int]) -> tuple[int, int | None, int]:
    """(rss, pss or None, process count) of `pid` and all its recursive children.

    PSS needs /proc/<pid>/smaps_rollup, readable only for our own (or root's) processes:
    when any member refuses, PSS is None rather than a misleading partial sum.
    """
    procs = tree_processes([pid] if isinstance(pid, int) else pid)
    rss = 0
    pss: int | None = 0
    counted = 0
    for proc in procs:
        try:
            if pss is not None:
                try:
                    full = proc.memory_full_info()
                    rss += full.rss
                    pss += full.pss
                    counted += 1
                    continue
                except psutil.AccessDenied:
                    pss = None
            rss += proc.memory_info().rss
            counted += 1
        except psutil.NoSuchProcess:
            continue
    return rss, (pss if counted else None), counted


class MemoryMonitor(Monitor):
    """RSS of a component's tree against `limit`, plus leak slope and forecast.

    With a `source` (a container's cgroup), the sample is the cgroup's working set instead,
    and the leak forecast is against the lower of `limit` and the container's own limit (the
    kernel OOM-kills it there, whatever the config says).
    """

    name = "memory"
    source: MemorySource | None = None

    def __init__(self, component: str, config: MemoryMonitorConfig) -> None:
        super().__init__(component)
        self.config = config
        self.samples: deque[tuple[float, float]] = deque()
        self.over_count = 0
        self.trend: Trend | None = None
        self.last: dict[str, Any] = {}
        self._identity: frozenset[tuple[int, float]] | None = None
        self.container_limit: int | None = None

    @property
    def forecast_limit(self) -> int:
        """The limit the leak is forecast against."""
        if self.container_limit is not None:
            return min(self.config.limit, self.container_limit)
        return self.config.limit

    # -- pure part -----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the series (the component restarted: its old trend says nothing now)."""
        self.samples.clear()
        self.over_count = 0
        self.trend = None

    def feed(self, t: float, rss: float) -> None:
        """Add one sample; keep only the leak window."""
        self.samples.append((t, float(rss)))
        while self.samples and self.samples[0][0] < t - self.config.leak.window:
            self.samples.popleft()
        self.over_count = self.over_count + 1 if rss > self.config.limit else 0

    def evaluate(self) -> list[Finding]:
        """The limit and leak verdicts over the samples fed so far."""
        if not self.samples:
            return []
        return [self._limit_finding(), self._leak_finding()]

    def _limit_finding(self) -> Finding:
        cfg = self.config
        rss = self.samples[-1][1]
        values = {"rss_bytes": rss, "limit_bytes": float(cfg.limit), "over_count": self.over_count}
        usage = f"{format_size(rss)} of {format_size(cfg.limit)}"
        if self.over_count >= cfg.for_:
            return self.finding(
                "limit",
                "critical",
                f"memory {usage}: over the limit for {self.over_count} samples, restart",
                values,
                action="restart",
            )
        if self.over_count:
            return self.finding(
                "limit",
                "warning",
                f"memory {usage}: over the limit ({self.over_count}/{cfg.for_} samples)",
                values,
                action="none",
            )
        return self.finding("limit", "ok", f"memory {usage}", values)

    def _leak_finding(self) -> Finding:
        leak = self.config.leak
        self.trend = trend = analyse(list(self.samples), limit=self.forecast_limit)
        if trend is None or trend.n < leak.min_samples or trend.span_s < leak.min_span:
            n = trend.n if trend else len(self.samples)
            return self.finding("leak", "ok", f"collecting samples ({n} so far)")
        values = {
            "slope_bytes_per_s": trend.slope,
            "p_value": trend.test.p_increasing,
            "positive_fraction": trend.test.positive_fraction,
            "samples": float(trend.n),
        }
        if trend.forecast_s is not None:
            values["forecast_s"] = trend.forecast_s
        rate = f"{format_size(trend.slope)}/s over {format_duration(trend.span_s)}"
        if (
            self.slope_significant()
            and trend.forecast_s is not None
            and trend.forecast_s < leak.horizon
        ):
            return self.finding(
                "leak",
                "warning",
                f"memory leak suspected: +{rate}, limit {format_size(self.forecast_limit)} "
                f"in ~{format_duration(trend.forecast_s)}",
                values,
            )
        return self.finding("leak", "ok", f"no leak (trend {rate})", values)

    # -- I/O part ------------------------------------------------------------------------
    def _sample(self, pids: list[int]) -> tuple[frozenset[tuple[int, float]], int, int | None, int]:
        identity = tree_identity(pids)
        rss, pss, n = tree_memory(pids)
        return identity, rss, pss, n

    async def observe(self, pids: list[int], now: float) -> list[Finding]:
        """Sample the tree of `pids` at `now` and evaluate; no pids -> no sample, no findings."""
        if not pids:
            self.reset()
            self._identity = None
            return []
        if self.source is not None:
            return await self._observe_cgroup(pids, now)
        identity, rss, pss, n = await asyncio.to_thread(self._sample, pids)
        if n == 0:
            return []
        if identity != self._identity:
            self.reset()
            self._identity = identity
        self.last = {"rss_bytes": rss, "pss_bytes": pss, "processes": n, "at": now}
        self.feed(now, rss)
        return self.evaluate()

    async def _observe_cgroup(self, pids: list[int], now: float) -> list[Finding]:
        assert self.source is not None
        sample = await asyncio.to_thread(self.source)
        if sample is None:
            return []
        identity = frozenset(tree_identity(pids[:1]))  # the container's main process: its run
        if identity != self._identity:
            self.reset()
            self._identity = identity
        self.container_limit = sample.limit
        self.last = {
            "rss_bytes": sample.usage,
            "pss_bytes": None,
            "cgroup": f"v{sample.version} {sample.path}",
            "container_limit_bytes": sample.limit,
            "oom_kills": sample.oom_kills,
            "at": now,
        }
        self.feed(now, sample.usage)
        return self.evaluate()

    def slope_significant(self) -> bool:
        """The last trend is a rise worth showing: enough samples over enough time (the leak
        config's `min_samples` / `min_span`), a Mann–Kendall test that says it goes up, and
        faster than `min_slope` (below it growth is never a leak: a warming process).

        Right after a restart the first few samples of a warming process give a steep slope
        that means nothing; until this is true, nothing should present the slope as a trend.
        """
        leak = self.config.leak
        trend = self.trend
        return (
            trend is not None
            and trend.n >= leak.min_samples
            and trend.span_s >= leak.min_span
            and trend.test.p_increasing < leak.p_value
            and trend.test.positive_fraction >= leak.min_positive_fraction
            and trend.slope > leak.min_slope
        )

    def snapshot(self) -> dict[str, Any]:
        """rss/pss/process count, slope (bytes/s) and whether it is significant, forecast to the
        limit (s), over-limit count."""
        trend = self.trend
        return {
            **self.last,
            "limit_bytes": self.config.limit,
            "over_count": self.over_count,
            "samples": len(self.samples),
            "slope_bytes_per_s": trend.slope if trend else None,
            "slope_significant": self.slope_significant(),
            "forecast_s": trend.forecast_s if trend else None,
            "p_value": trend.test.p_increasing if trend else None,
        }
