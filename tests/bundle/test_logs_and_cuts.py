"""Log files as the agent writes them: --since across rotations, the size cap, `logs --tail`
across a rotation boundary, a file that vanishes, and the bad inputs of both commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.bundle.conftest import chimera, extract
from tests.harness import REPO


def stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


@pytest.fixture
def stack(short_tmp: Path) -> tuple[Path, Path]:
    """A config (no agent) whose engine log has 3 files: .2 (3 h old), .1 (2 h to 30 min old),
    and the current one (the last 10 minutes); 100 numbered lines each."""
    state = short_tmp / "var"
    logs = state / "logs"
    logs.mkdir(parents=True)
    now = time.time()
    spans = {
        "engine.log.2": (now - 3 * 3600, now - 2.5 * 3600),
        "engine.log.1": (now - 2 * 3600, now - 1800),
        "engine.log": (now - 600, now - 1),
    }
    number = 0
    for name, (first, last) in spans.items():
        with open(logs / name, "w") as fh:
            for i in range(100):
                number += 1
                ts = first + (last - first) * i / 99
                fh.write(f"{stamp(ts)} stdout line {number:04d} price=64123.50 qty=2\n")
    config = short_tmp / "chimera-ops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "agent": {"state_dir": str(state)},
                "components": {
                    "engine": {"runtime": "process", "command": ["true"]},
                    "cache": {"runtime": "external"},
                },
            }
        )
    )
    return config, logs


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return chimera(config, *args)


def test_since_skips_old_rotations_and_cuts_inside_one(
    stack: tuple[Path, Path], short_tmp: Path
) -> None:
    config, logs = stack
    done = cli(config, "collect-logs", "--since", "1h", "--out", str(short_tmp / "o"), "--json")
    assert done.returncode == 0, done.stderr
    root = extract(Path(json.loads(done.stdout)["bundle"]), short_tmp / "x")
    manifest = json.loads((root / "manifest.json").read_text())
    by_file = {Path(e["source"]).name: e for e in manifest["logs"]}
    assert by_file["engine.log.2"]["status"] == "skipped"
    assert (
        by_file["engine.log.1"]["status"] == "read"
        and by_file["engine.log.1"]["before_since_bytes"] > 0
    )
    assert (
        by_file["engine.log"]["status"] == "read"
        and by_file["engine.log"]["before_since_bytes"] == 0
    )
    assert not (root / "logs/engine/engine.log.2").exists()
    rotated = (root / "logs/engine/engine.log.1").read_text().splitlines()
    cutoff = stamp(time.time() - 3600 - 120)  # the window began at most 2 minutes before this
    assert rotated and all(line[:24] >= cutoff for line in rotated)
    assert int(rotated[-1].split()[3]) == 200  # up to the last line of the file
    original = (logs / "engine.log.1").read_text().splitlines()
    assert rotated == original[len(original) - len(rotated) :]  # whole lines, the newest kept
    assert (root / "logs/engine/engine.log").read_text() == (logs / "engine.log").read_text()
    assert manifest["truncations"] == []


def test_cap_keeps_the_newest_part_and_says_so(stack: tuple[Path, Path], short_tmp: Path) -> None:
    config, logs = stack
    done = cli(
        config,
        "collect-logs",
        "--since",
        "24h",
        "--max-file-size",
        "1KiB",
        "--component",
        "engine",
        "--out",
        str(short_tmp / "o"),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    root = extract(Path(json.loads(done.stdout)["bundle"]), short_tmp / "x")
    manifest = json.loads((root / "manifest.json").read_text())
    cut = {Path(t["source"]).name: t for t in manifest["truncations"]}
    assert set(cut) == {"engine.log", "engine.log.1", "engine.log.2"}
    kept = (root / "logs/engine/engine.log").read_text()
    assert 0 < len(kept) <= 1024
    assert kept.endswith((logs / "engine.log").read_text()[-len(kept) :]) and kept.endswith(
        "line 0300 price=64123.50 qty=2\n"
    )
    assert kept.splitlines()[0].endswith("price=64123.50 qty=2")  # begins at a whole line
    assert cut["engine.log"]["truncated_bytes"] == (logs / "engine.log").stat().st_size - len(kept)


def test_logs_tail_across_a_rotation(stack: tuple[Path, Path]) -> None:
    config, _ = stack
    done = cli(config, "logs", "engine", "--tail", "150", "--json")
    assert done.returncode == 0, done.stderr
    lines = json.loads(done.stdout)["components"][0]["lines"]
    numbers = [int(line["text"].split()[1]) for line in lines]
    assert numbers == list(range(151, 301))
    assert {line["file"] for line in lines} == {"engine.log", "engine.log.1"}
    text = cli(config, "logs", "engine", "--tail", "3")
    assert [line.split()[3] for line in text.stdout.splitlines()] == ["0298", "0299", "0300"]
    since = cli(config, "logs", "engine", "--tail", "1000", "--since", "15m", "--json")
    assert [
        int(x["text"].split()[1]) for x in json.loads(since.stdout)["components"][0]["lines"]
    ] == list(range(201, 301))


def test_a_vanished_file_is_a_manifest_line(stack: tuple[Path, Path], short_tmp: Path) -> None:
    from chimera_ops.ops.bundle.logparts import plan_file
    from chimera_ops.ops.bundle.sources import rotated_files

    _, logs = stack
    files = rotated_files(logs, "engine")
    (logs / "engine.log.2").unlink()  # rotated away between the listing and the reading
    part = plan_file("engine", files[-1], None, 1 << 20)
    assert part.status == "vanished" and "vanished" in (part.note or "")
    current = plan_file("engine", files[0], None, 1 << 20)
    os.rename(logs / "engine.log", logs / "engine.log.9")  # renamed while open: still read whole
    from chimera_ops.ops.bundle.logparts import after_read

    data = b"".join(current.chunks())
    after_read(current)
    assert data == (logs / "engine.log.9").read_bytes()
    assert current.status == "read" and "rotated" in (current.note or "")


def test_bad_inputs(stack: tuple[Path, Path], short_tmp: Path) -> None:
    config, _ = stack
    since = cli(config, "collect-logs", "--since", "yesterday-ish", "--out", str(short_tmp))
    assert since.returncode == 2 and "'1h'" in since.stderr and "ISO" in since.stderr
    unknown = cli(config, "collect-logs", "--component", "nope", "--out", str(short_tmp))
    assert unknown.returncode == 2 and "cache, engine" in unknown.stderr
    blocker = short_tmp / "file"
    blocker.write_text("x")
    out = cli(config, "collect-logs", "--out", str(blocker / "sub"))
    assert out.returncode == 2 and "--out" in out.stderr
    assert not list(short_tmp.glob("**/chimera-bundle-*"))  # said before collecting
    size = cli(config, "collect-logs", "--max-file-size", "lots", "--out", str(short_tmp))
    assert size.returncode == 2
    assert cli(config, "logs", "nope").returncode == 2
    assert "cache, engine" in cli(config, "logs", "nope").stderr
    assert cli(config, "logs").returncode == 2
    assert cli(config, "logs", "engine", "--since", "soon").returncode == 2
    assert cli(config, "logs", "cache").returncode == 2


def test_self_test_command(stack: tuple[Path, Path]) -> None:
    config, _ = stack
    done = cli(config, "collect-logs", "--self-test", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    # One check per redaction rule that has a canary (secret_argv_option added in issue 20).
    assert report["ok"] and len(report["checks"]) == 10


def test_without_a_gzip_binary_zlib_writes_the_same_archive(
    stack: tuple[Path, Path], short_tmp: Path
) -> None:
    config, logs = stack
    out = str(short_tmp / "o")
    env = {**os.environ, "PATH": str(short_tmp / "empty")}
    done = chimera(config, "collect-logs", "--out", out, "--json", env=env)
    assert done.returncode == 0, done.stderr
    root = extract(Path(json.loads(done.stdout)["bundle"]), short_tmp / "x")
    assert (root / "logs/engine/engine.log").read_bytes() == (logs / "engine.log").read_bytes()
    manifest = json.loads((root / "manifest.json").read_text())
    dmesg = next(c for c in manifest["collectors"] if c["name"] == "dmesg")
    assert dmesg["status"] == "error" and "dmesg" in dmesg["error"]  # a missing command is a line


def test_follow_goes_through_a_rotation(stack: tuple[Path, Path]) -> None:
    import threading

    from tests.harness import wait_for

    config, logs = stack
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chimera_ops",
            "--config",
            str(config),
            "logs",
            "engine",
            "--follow",
            "--tail",
            "1",
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
    )
    seen: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(
        target=lambda: seen.extend(json.loads(x)["text"] for x in stdout), daemon=True
    )
    reader.start()
    try:
        wait_for(lambda: seen, what="the tail")
        old = open(logs / "engine.log", "a")  # noqa: SIM115 - the agent's open file, kept across the rename
        old.write(f"{stamp(time.time())} stdout after-1\n")
        old.flush()
        wait_for(lambda: "after-1" in seen, what="a new line")
        os.rename(logs / "engine.log", logs / "engine.log.1")  # rotation
        old.write(f"{stamp(time.time())} stdout last-of-old\n")
        old.close()
        with open(logs / "engine.log", "w") as new:
            new.write(f"{stamp(time.time())} stdout first-of-new\n")
        wait_for(lambda: "first-of-new" in seen, what="the new file's line")
    finally:
        proc.terminate()
        proc.wait(10)
    assert seen == ["line 0300 price=64123.50 qty=2", "after-1", "last-of-old", "first-of-new"]
