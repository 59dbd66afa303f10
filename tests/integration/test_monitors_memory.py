"""The memory monitor over real children: a leaking one is flagged, a sawing one is not."""

import asyncio
import subprocess
import sys
import time

import psutil
import pytest

from chimera_ops.monitors.memory import MemoryMonitor, tree_memory
from chimera_ops.monitors.spec import MemoryMonitorConfig

MB = 1_000_000

# ~5 MB/s of memory that is really touched (b"x" * n writes every page; a zeroed bytearray
# could stay unmapped and never show in RSS).
LEAK = """
import time
hoard = []
while True:
    hoard.append(b"x" * 500_000)
    time.sleep(0.1)
"""

# Grows ~50 MB over ~2 s, frees it all, again and again: flat on average.
SAW = """
import time
while True:
    chunks = []
    for _ in range(10):
        chunks.append(b"x" * 5_000_000)
        time.sleep(0.2)
    del chunks
    time.sleep(0.2)
"""

# A short judging span keeps the test short; the window covers several saw periods.
CONFIG = {"limit": "600MB", "leak": {"window": "60s", "min_span": "10s", "min_samples": 12}}


def spawn(code: str) -> subprocess.Popen:
    # The child runs under a shell parent so the monitor must sum the whole tree.
    return subprocess.Popen(["sh", "-c", f'{sys.executable} -c "$0"; :', code])


def watch(child: subprocess.Popen, seconds: float, period: float = 0.5):
    monitor = MemoryMonitor("engine", MemoryMonitorConfig.model_validate(CONFIG))
    leaks = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert child.poll() is None, "the test child died"
        now = time.monotonic()
        for finding in asyncio.run(monitor.observe([child.pid], now)):
            if finding.key == "engine:memory:leak" and finding.severity != "ok":
                leaks.append((monitor.snapshot(), finding))
        if leaks:
            break
        time.sleep(period)
    return monitor, leaks


def stop(child: subprocess.Popen) -> None:
    for grandchild in psutil.Process(child.pid).children(recursive=True):
        grandchild.kill()
    child.kill()
    child.wait()


def test_tree_memory_counts_children():
    child = spawn("import time; x = b'x' * 30_000_000; time.sleep(30)")
    try:
        time.sleep(1.0)
        rss, pss, n = tree_memory(child.pid)
        assert n == 2 and rss > 30 * MB
        assert pss is None or pss > 0
    finally:
        stop(child)


@pytest.mark.slow
def test_leaking_child_flagged_before_the_limit():
    child = spawn(LEAK)
    try:
        monitor, leaks = watch(child, seconds=90)
    finally:
        stop(child)
    assert leaks, f"no leak finding; last snapshot {monitor.snapshot()}"
    snapshot, finding = leaks[0]
    assert snapshot["rss_bytes"] < 600 * MB
    assert finding.values["slope_bytes_per_s"] > 2 * MB
    assert finding.values["forecast_s"] > 0
    assert finding.action == "alert"


@pytest.mark.slow
def test_sawing_child_is_not_a_leak():
    child = spawn(SAW)
    try:
        monitor, leaks = watch(child, seconds=30)
    finally:
        stop(child)
    assert not leaks, leaks[0][1].message
    snap = monitor.snapshot()
    assert snap["samples"] >= 20 and snap["slope_bytes_per_s"] is not None
