"""collect-logs against `tar czf` of the same log dir (the seeds' collect_logs.sh), on 2 GiB of
generated component logs: wall time, throughput ratio, and the peak RSS of collect-logs; plus
the time of a default bundle on the demo stack (the machine's PostgreSQL and Redis, the paper
engine) under a running agent.

The logs are what the agent writes: `<UTC ISO> <stream> <text>` lines in `name.log` and its
rotations `.1 .. .5`, 50 MiB each (the default `logs.max_size`), seven components; about 1 in
500 lines carries a credential (a Bearer token, a DSN password, an exchange signature, the
engine's API key), so redaction does real work. The page cache is warmed first and the runs
alternate (tar, collect-logs, tar, collect-logs); the table shows the median. Peak RSS is the
child's own `ru_maxrss` from wait4, not a sample.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO,
    ChimeraAgent,
    Section,
    chimera_cli,
    fmt,
    free_port,
    median,
    temp_dir,
    verdict,
    write_results,
)

COMPONENTS = ("engine", "collector-binance", "collector-bitget", "feed", "risk", "notifier", "api")
FILES_PER_COMPONENT = 6  # name.log + .1 .. .5
FILE_SIZE = int(os.environ.get("BENCH_BUNDLE_FILE_MIB", "50")) * 1024 * 1024  # quick runs: smaller
RUNS = 2
API_KEY = "bg_live_7f3a9c2e4b1d8f6a"


def _block(seed: int, start: float) -> bytes:
    """About 4 MiB of varied, realistic lines with increasing timestamps from `start`."""
    rnd = random.Random(seed)
    syms = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
    out = []
    size = 0
    ts = start
    n = 0
    while size < 4 * 1024 * 1024:
        n += 1
        ts += 0.004
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
        r = rnd.random()
        if r < 0.002:
            text = rnd.choice(
                (
                    f"stderr requests: GET /api/v2/mix/order headers={{'ACCESS-KEY': '{API_KEY}', "
                    f"'ACCESS-SIGN': '{rnd.getrandbits(128):032x}', 'ACCESS-TIMESTAMP': '{int(ts * 1000)}'}}",
                    f"stderr psycopg.OperationalError: connection to postgresql://trader:pw{rnd.getrandbits(32):x}@db:5432/chimera failed",
                    f"stdout auth ok Authorization: Bearer tok{rnd.getrandbits(64):x}",
                    f"stdout GET /api/v3/order?symbol=BTCUSDT&timestamp={int(ts * 1000)}&signature={rnd.getrandbits(128):032x}",
                )
            )
        elif r < 0.6:
            text = (
                f"stdout {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(ts))},{n % 1000:03d} INFO "
                f"engine.orders order_id=ord-{n:09d} symbol={rnd.choice(syms)} side={rnd.choice(('buy', 'sell'))} "
                f"price={rnd.uniform(100, 70000):.2f} size={rnd.uniform(0, 2):.4f} status=filled "
                f"latency_ms={rnd.randint(1, 90)}"
            )
        elif r < 0.95:
            text = (
                f'stdout {{"level": "info", "msg": "tick", "symbol": "{rnd.choice(syms)}", '
                f'"bid": {rnd.uniform(100, 70000):.2f}, "ask": {rnd.uniform(100, 70000):.2f}, "seq": {n}}}'
            )
        else:
            text = (
                f"stderr WARNING feed.ws reconnecting to wss://stream.example.com/ws after "
                f"{rnd.randint(1, 30)}s (attempt {rnd.randint(1, 5)})"
            )
        line = f"{stamp} {text}\n".encode()
        out.append(line)
        size += len(line)
    return b"".join(out)


def generate(state: Path) -> int:
    """The logs of every component; returns the total bytes."""
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    start = time.time() - 6 * 3600
    blocks = [_block(seed, start + seed * 600) for seed in range(4)]
    total = 0
    for ci, name in enumerate(COMPONENTS):
        for index in range(FILES_PER_COMPONENT):
            path = logs / (f"{name}.log" if index == 0 else f"{name}.log.{index}")
            with open(path, "wb") as fh:
                written = 0
                k = ci + index
                while written < FILE_SIZE:
                    block = blocks[k % len(blocks)][: FILE_SIZE - written]
                    fh.write(block)
                    written += len(block)
                    k += 1
            total += written
    return total


def run_measured(argv: list[str], cwd: Path) -> tuple[float, int, int]:
    """(wall seconds, peak RSS bytes of the process itself, exit code)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss * 1024, proc.returncode


def big_logs(work: Path) -> Section:
    work.mkdir(parents=True)
    state = work / "var"
    total = generate(state)
    config = work / "chimera-ops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "agent": {"state_dir": str(state)},
                "components": {
                    name: {
                        "runtime": "process",
                        "command": ["true"],
                        "env": {"BITGET_API_KEY": API_KEY} if name == "engine" else {},
                    }
                    for name in COMPONENTS
                },
            }
        )
    )
    subprocess.run(
        ["cat", *map(str, sorted((state / "logs").iterdir()))],
        stdout=subprocess.DEVNULL,
        check=True,
    )
    tar_times, ours, rss = [], [], []
    tar_size = bundle_size = 0
    manifest: dict[str, Any] = {}
    for run in range(RUNS):
        out = work / f"out{run}"
        out.mkdir()
        seconds, _, code = run_measured(
            ["tar", "czf", str(out / "logs.tar.gz"), "-C", str(state), "logs"], work
        )
        assert code == 0, "tar czf failed"
        tar_times.append(seconds)
        tar_size = (out / "logs.tar.gz").stat().st_size
        seconds, peak, code = run_measured(
            [*chimera_cli(), "--config", str(config), "collect-logs", "--out", str(out), "--json"],
            work,
        )
        assert code == 0, "collect-logs failed"
        ours.append(seconds)
        rss.append(peak)
        bundle = next(out.glob("chimera-bundle-*.tar.gz"))
        bundle_size = bundle.stat().st_size
        import tarfile

        with tarfile.open(bundle) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("manifest.json"))
            handle = tar.extractfile(member)
            assert handle is not None
            manifest = json.loads(handle.read())
        shutil.rmtree(out)
    t_tar, t_ours, peak = median(tar_times), median(ours), max(rss)
    ratio = t_tar / t_ours
    mib_s = total / 1024**2
    rules = {k: v for k, v in manifest["redaction"]["rules"].items() if v}
    return Section(
        title=f"{total / 1024**3:.2f} GiB of component logs: collect-logs vs tar czf",
        aim="throughput >= 0.8x `tar czf` with redaction on, and peak RSS < 150 MiB",
        headers=[
            "tool",
            "wall (median)",
            "throughput",
            "vs tar czf",
            "peak RSS",
            "archive",
            "runs",
        ],
        rows=[
            [
                "`tar czf` (gzip -6, no redaction)",
                fmt(t_tar, 1, " s"),
                fmt(mib_s / t_tar, 1, " MiB/s"),
                "1.00x",
                "n/a",
                fmt(tar_size / 1024**2, 1, " MiB"),
                str(RUNS),
            ],
            [
                "`chimera-ops collect-logs` (redaction on)",
                fmt(t_ours, 1, " s"),
                fmt(mib_s / t_ours, 1, " MiB/s"),
                f"{ratio:.2f}x",
                fmt(peak / 1024**2, 1, " MiB"),
                fmt(bundle_size / 1024**2, 1, " MiB"),
                str(RUNS),
            ],
        ],
        verdict=verdict(ratio >= 0.8 and peak < 150 * 1024**2),
        notes=[
            f"{len(COMPONENTS)} components x {FILES_PER_COMPONENT} files x {FILE_SIZE // 1024**2} MiB, "
            "lines within the last 6 h (inside the default --since 24h), page cache warm.",
            f"Runs: tar {', '.join(fmt(t, 1) for t in tar_times)} s; collect-logs "
            f"{', '.join(fmt(t, 1) for t in ours)} s; peak RSS per run {', '.join(fmt(r / 1024**2, 1) for r in rss)} MiB.",
            f"Values redacted per rule (one run): {rules}.",
            "collect-logs does more than tar: redaction of every byte, sha256 of every member, "
            "the collectors (system, processes, dmesg) and the manifest; both compress at gzip level 6.",
        ],
    )


def demo_stack(work: Path) -> Section:
    work.mkdir(parents=True)
    config = yaml.safe_load((REPO / "examples" / "stack.yaml").read_text())
    port, metrics = free_port(), free_port()
    text = json.dumps(config).replace("8701", str(port)).replace("9464", str(metrics))
    config = json.loads(text)
    config.pop("backup", None)
    config["agent"]["state_dir"] = str(work / "var")
    agent = ChimeraAgent(work, config)
    times: list[float] = []
    rss: list[int] = []
    try:
        agent.start()
        agent.wait_all("running", timeout=90)
        time.sleep(3)
        for run in range(3):
            out = work / f"demo{run}"
            out.mkdir()
            seconds, peak, code = run_measured(
                [
                    *chimera_cli(),
                    "--config",
                    str(agent.config_path),
                    "collect-logs",
                    "--out",
                    str(out),
                    "--json",
                ],
                work,
            )
            assert code == 0, "collect-logs failed on the demo stack"
            times.append(seconds)
            rss.append(peak)
    finally:
        agent.stop()
    return Section(
        title="A default bundle on the demo stack (agent running)",
        aim="a default `collect-logs` (--since 24h) on the demo stack in < 10 s",
        headers=["bundle", "wall (median)", "min .. max", "peak RSS", "runs"],
        rows=[
            [
                "default (`collect-logs --out DIR`)",
                fmt(median(times), 2, " s"),
                f"{fmt(min(times), 2)} .. {fmt(max(times), 2)} s",
                fmt(max(rss) / 1024**2, 1, " MiB"),
                "3",
            ]
        ],
        verdict=verdict(median(times) < 10),
        notes=[
            "examples/stack.yaml with free ports, a fresh state dir; the time includes the CLI's "
            "start, the agent's status, every collector (PostgreSQL, Redis, system, dmesg) and the "
            "0.5 s CPU sample of the system snapshot."
        ],
    )


def main() -> int:
    work = temp_dir("bundle")
    try:
        sections = [big_logs(work / "big"), demo_stack(work / "demo")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_results(
        "bundle",
        "Support bundle: collect-logs vs tar czf",
        "`bench/bench_bundle.py` - " + __doc__.split("\n\n")[0].replace("\n", " "),
        sections,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
