import asyncio
import os

import pytest
from pydantic import ValidationError

from chimera_ops.monitors import build_monitors
from chimera_ops.monitors.cpu import CpuMonitor
from chimera_ops.monitors.logs import LogsMonitor
from chimera_ops.monitors.spec import CpuMonitorConfig, LogsMonitorConfig, MonitorsConfig


def test_cpu_sustained_above_threshold():
    m = CpuMonitor("engine", CpuMonitorConfig.model_validate({"threshold": 80, "for": "60s"}))
    cpu = 0.0
    results = []
    for t in range(0, 100, 10):
        cpu += 9.5  # 95 % of one core
        m.feed(float(t), cpu)
        results.append(m.evaluate(float(t)))
    assert results[0] == []
    assert results[3][0].severity == "ok"  # above for 30 s only
    last = results[-1][0]
    assert last.severity == "warning" and last.action == "alert" and last.key == "engine:cpu:high"
    m.feed(100.0, cpu + 1.0)  # 10 %: back to normal
    assert m.evaluate(100.0)[0].severity == "ok"


def test_cpu_restart_action():
    m = CpuMonitor("e", CpuMonitorConfig.model_validate({"for": "10s", "action": "restart"}))
    for t in range(0, 40, 5):
        m.feed(float(t), t * 1.0)
    assert m.evaluate(35.0)[0].action == "restart"


def test_logs_monitor_real_files(tmp_path):
    (tmp_path / "sub").mkdir()
    big = tmp_path / "sub" / "engine.log"
    with open(big, "wb") as fh:
        fh.truncate(2 * 1024 * 1024)  # sparse: size without writing 2 MiB
    (tmp_path / "small.log").write_text("x")
    m = LogsMonitor("engine", LogsMonitorConfig(paths=[str(tmp_path)], max_size=1024 * 1024))
    findings = asyncio.run(m.observe([], 0.0))
    assert findings[0].severity == "warning" and str(big) in findings[0].message


def test_build_monitors_and_disk():
    cfg = MonitorsConfig.model_validate(
        {"memory": {"limit": "1GiB"}, "disk": {"paths": ["/", "/does/not/exist"]}, "fds": {}}
    )
    monitors = build_monitors("engine", cfg)
    assert [m.name for m in monitors] == ["memory", "fds", "disk"]
    disk = asyncio.run(monitors[2].observe([], 0.0))
    assert {f.key for f in disk} == {"engine:disk:free:/", "engine:disk:free:/does/not/exist"}
    fds = asyncio.run(monitors[1].observe([os.getpid()], 0.0))
    assert fds[0].values["open_fds"] > 0


def test_config_errors_name_the_path():
    with pytest.raises(ValidationError) as err:
        MonitorsConfig.model_validate(
            {"pools": {"redis": {"url": "redis://h", "warn": 0.9, "critical": 0.5}}}
        )
    assert "pools.redis" in str(err.value)
    with pytest.raises(ValidationError) as err:
        MonitorsConfig.model_validate({"memory": {"limit": "lots"}})
    assert "memory.limit" in str(err.value)
