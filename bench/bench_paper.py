"""Benchmark the paper engine: persisted fill throughput, /health p99 under load, halt latency.

Run: ``.venv/bin/python bench/bench_paper.py`` (shared PostgreSQL/Redis on 127.0.0.1).
Writes ``bench/results/paper.md``. A full run takes about a minute and a half.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chimera_ops.paper.harness import (  # noqa: E402
    EngineProcess,
    ledger_problems,
    query,
    scratch_database,
)
from tests.services import free_port  # noqa: E402


@dataclass(frozen=True)
class Load:
    """One load setting of the engine."""

    name: str
    rate: float
    symbols: int
    orders_per_tick: int
    max_open: int

    def args(self) -> list[str]:
        return [
            "--rate", str(self.rate),
            "--symbols", str(self.symbols),
            "--orders-per-tick", str(self.orders_per_tick),
            "--max-open", str(self.max_open),
            "--pg-pool-max", "8",
        ]  # fmt: skip


@dataclass
class Result:
    """Figures for one load setting."""

    load: Load
    seconds: float
    fills_per_s: float
    orders_per_s: float
    health_p50_ms: float
    health_p99_ms: float
    health_max_ms: float
    health_non200: int
    feed_lag_max_s: float
    halt_median_ms: float
    halt_max_ms: float
    halt_db_median_ms: float
    ledger_ok: bool


def _count(dsn: str, table: str) -> int:
    return int(query(dsn, f"SELECT count(*) FROM {table}")[0][0])


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def run_load(load: Load, window: float, health_samples: int, halts: int) -> Result:
    """Start an engine at ``load``, measure, stop it, check its ledger."""
    with scratch_database() as dsn:
        eng = EngineProcess(
            free_port(), dsn, args=load.args(), redis_prefix=f"bench-{uuid.uuid4().hex[:8]}"
        ).start()
        try:
            eng.wait_healthy(60)
            time.sleep(3.0)  # warm-up: pools filled, strategy has orders resting
            client = httpx.Client(base_url=eng.base_url, timeout=10.0)
            # Fresh connection per health request, as a probe does. (Kept-alive connections
            # used to add ~40 ms: the listener lacked TCP_NODELAY; see paper/__main__.py.)
            probe = httpx.Client(
                base_url=eng.base_url, timeout=10.0, headers={"Connection": "close"}
            )
            fills0, orders0, t0 = (
                _count(dsn, "paper_fills"),
                _count(dsn, "paper_orders"),
                time.monotonic(),
            )
            latencies: list[float] = []
            non200 = 0
            lag_max = 0.0
            # Health is sampled inside the throughput window, so it is measured under load.
            interval = window / health_samples
            for i in range(health_samples):
                start = time.perf_counter()
                resp = probe.get("/health")
                latencies.append((time.perf_counter() - start) * 1000)
                if resp.status_code != 200:
                    non200 += 1
                else:
                    lag_max = max(lag_max, float(resp.json()["feed_lag_seconds"]))
                sleep_until = t0 + (i + 1) * interval
                time.sleep(max(0.0, sleep_until - time.monotonic()))
            elapsed = time.monotonic() - t0
            fills1, orders1 = _count(dsn, "paper_fills"), _count(dsn, "paper_orders")

            halt_ms: list[float] = []
            halt_db_ms: list[float] = []
            for _ in range(halts):
                start = time.perf_counter()
                client.post("/control/halt", json={"reason": "bench", "cancel_open_orders": True})
                deadline = time.monotonic() + 30
                while client.get("/control/state").json()["open_orders"] != 0:
                    if time.monotonic() > deadline:
                        raise TimeoutError("open orders never reached 0 after a halt")
                    time.sleep(0.001)
                halt_ms.append((time.perf_counter() - start) * 1000)
                while _count_open(dsn):
                    if time.monotonic() > deadline:
                        raise TimeoutError("open order rows never reached 0 after a halt")
                    time.sleep(0.001)
                halt_db_ms.append((time.perf_counter() - start) * 1000)
                client.post("/control/resume", json={"reason": "bench"})
                time.sleep(0.7)  # let orders build up again
            client.close()
            probe.close()
        finally:
            if eng.stop(timeout=10) != 0:
                print(f"warning: engine stop was not clean:\n{eng.stderr()[-2000:]}")
        ok = not ledger_problems(dsn)
    return Result(
        load=load,
        seconds=elapsed,
        fills_per_s=(fills1 - fills0) / elapsed,
        orders_per_s=(orders1 - orders0) / elapsed,
        health_p50_ms=_pct(latencies, 50),
        health_p99_ms=_pct(latencies, 99),
        health_max_ms=max(latencies),
        health_non200=non200,
        feed_lag_max_s=lag_max,
        halt_median_ms=statistics.median(halt_ms),
        halt_max_ms=max(halt_ms),
        halt_db_median_ms=statistics.median(halt_db_ms),
        ledger_ok=ok,
    )


def _count_open(dsn: str) -> int:
    return int(query(dsn, "SELECT count(*) FROM paper_orders WHERE status = 'open'")[0][0])


def render(results: list[Result], window: float, samples: int, halts: int) -> str:
    """The Markdown report."""
    pg = query("postgresql://postgres@127.0.0.1:5432/postgres", "SHOW server_version")[0][0]
    lines = [
        "# paper engine benchmark",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC, Python {sys.version.split()[0]}, "
        f"PostgreSQL {pg}, shared local servers. Throughput window {window:.0f} s per setting; "
        f"{samples} sequential `/health` requests (new connection each, like a probe) spread "
        "over that window, so under load; "
        f"{halts} halts per setting.",
        "",
        "Fills/s and orders/s are counted in PostgreSQL (committed rows), not in the engine.",
        "Halt latency: `POST /control/halt` sent -> `/control/state` reports `open_orders == 0`; "
        "`halt->db` is until no order row is `open` in PostgreSQL.",
        "",
        "| setting | engine flags | fills/s | orders/s | /health p50 | /health p99 | /health max "
        "| non-200 | max feed lag | halt median | halt max | halt->db median | ledger |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lo = r.load
        flags = (
            f"`--rate {lo.rate:g} --symbols {lo.symbols} --orders-per-tick {lo.orders_per_tick}"
            f" --max-open {lo.max_open}`"
        )
        lines.append(
            f"| {lo.name} | {flags} | {r.fills_per_s:,.0f} | {r.orders_per_s:,.0f} "
            f"| {r.health_p50_ms:.1f} ms | {r.health_p99_ms:.1f} ms | {r.health_max_ms:.1f} ms "
            f"| {r.health_non200} | {r.feed_lag_max_s:.3f} s | {r.halt_median_ms:.1f} ms "
            f"| {r.halt_max_ms:.1f} ms | {r.halt_db_median_ms:.1f} ms "
            f"| {'consistent' if r.ledger_ok else 'PROBLEMS'} |"
        )
    lines.append("")
    return "\n".join(lines)


LOADS = [
    Load("light (default-like)", rate=10, symbols=3, orders_per_tick=1, max_open=6),
    Load("heavy", rate=200, symbols=10, orders_per_tick=3, max_open=20),
    Load("max", rate=500, symbols=16, orders_per_tick=5, max_open=40),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--window", type=float, default=12.0, help="seconds per setting")
    parser.add_argument("--health-samples", type=int, default=500)
    parser.add_argument("--halts", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "paper.md")
    args = parser.parse_args()
    # SIGTERM (e.g. a CI timeout) unwinds through the finally blocks: no orphan engines.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = []
    for load in LOADS:
        print(f"running {load.name} ...", flush=True)
        results.append(run_load(load, args.window, args.health_samples, args.halts))
    report = render(results, args.window, args.health_samples, args.halts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 0 if all(r.ledger_ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
