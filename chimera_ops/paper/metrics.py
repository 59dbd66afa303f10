"""The engine's Prometheus metrics, on its own registry (never the global one)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PoolStats = Callable[[], dict[str, int]]


class PoolCollector(Collector):
    """Reads both pools' gauges at scrape time, so a scrape always shows the live numbers."""

    def __init__(self, pools: dict[str, PoolStats]) -> None:
        self._pools = pools

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """Yield paper_pool_{size,in_use,waiting,max}{pool=...}."""
        families = {
            "size": GaugeMetricFamily(
                "paper_pool_size", "Connections currently open in the pool", labels=["pool"]
            ),
            "in_use": GaugeMetricFamily(
                "paper_pool_in_use", "Connections checked out of the pool", labels=["pool"]
            ),
            "waiting": GaugeMetricFamily(
                "paper_pool_waiting", "Callers waiting for a pool connection", labels=["pool"]
            ),
            "max": GaugeMetricFamily(
                "paper_pool_max", "Configured maximum pool size", labels=["pool"]
            ),
        }
        for name, stats in self._pools.items():
            values = stats()
            for key, family in families.items():
                family.add_metric([name], float(values.get(key, 0)))
        yield from families.values()


class EngineMetrics:
    """Every metric the engine exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.orders = Counter("paper_orders", "Orders placed", ["symbol"], registry=r)
        self.cancels = Counter("paper_cancels", "Orders cancelled", registry=r)
        self.fills = Counter(
            "paper_fills", "Fills committed to PostgreSQL (counted once committed)", registry=r
        )
        self.feed_lag = Gauge(
            "paper_feed_lag_seconds", "Seconds since the last price tick", registry=r
        )
        self.open_orders = Gauge("paper_open_orders", "Open orders", registry=r)
        self.halted = Gauge("paper_trading_halted", "1 when trading is halted", registry=r)
        self.db_up = Gauge("paper_postgres_up", "1 when PostgreSQL answers", registry=r)
        self.redis_up = Gauge("paper_redis_up", "1 when Redis answers", registry=r)
        self.pending_writes = Gauge(
            "paper_pending_writes", "Rows buffered, waiting for PostgreSQL", registry=r
        )
        self.throttled_ticks = Counter(
            "paper_throttled_ticks",
            "Ticks without new orders because too many writes were waiting",
            registry=r,
        )
        self.flush_errors = Counter(
            "paper_flush_errors", "Failed bulk writes (retried)", registry=r
        )
        self.flush_seconds = Histogram(
            "paper_flush_duration_seconds",
            "Duration of one bulk write transaction",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.exchange_requests = Counter(
            "paper_exchange_requests",
            "Requests to the simulated exchange (each order placed or cancelled)",
            registry=r,
        )
        self.exchange_per_minute = Gauge(
            "paper_exchange_requests_per_minute", "Exchange requests in the last 60 s", registry=r
        )
        self.exchange_peak = Gauge(
            "paper_exchange_requests_peak_per_minute",
            "Highest exchange requests per rolling minute over the last week",
            registry=r,
        )
        self.exchange_limit = Gauge(
            "paper_exchange_rate_limit_per_minute",
            "Requests per minute the exchange allows (declared)",
            registry=r,
        )
        self.leaked_bytes = Gauge(
            "paper_fault_leaked_bytes", "Bytes held by the leak fault", registry=r
        )

    def register_pools(self, pools: dict[str, PoolStats]) -> None:
        """Attach the live pool gauges."""
        self.registry.register(PoolCollector(pools))
