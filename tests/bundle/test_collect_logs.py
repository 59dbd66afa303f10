"""collect-logs end to end: a real agent, real logs, the machine's PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any

from tests.bundle.conftest import chimera, extract, leaks, stack_config
from tests.bundle.corpus import Corpus
from tests.harness import AgentProcess, wait_for
from tests.services import private_postgres


def collect(
    config: Path, out: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return chimera(
        config, "collect-logs", "--out", str(out), "--json", *args, env=env, timeout=timeout
    )


def _bundle(done: subprocess.CompletedProcess[str]) -> tuple[Path, dict[str, Any]]:
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    return Path(summary["bundle"]), summary


def _engine_logged(agent: AgentProcess) -> bool:
    log = agent.state_dir / "logs" / "engine.log"
    return log.exists() and b"END RSA PRIVATE KEY" in log.read_bytes()


def test_bundle_with_agent_has_no_planted_secret(
    agent_factory: Any,
    corpus: Corpus,
    cli_env: dict[str, str],
    short_tmp: Path,
    postgres_service: str,
    redis_service: str,
) -> None:
    agent = agent_factory(stack_config(short_tmp, corpus))
    agent.start(env={**os.environ, "AGENT_SIDE_TOKEN": corpus.control_token})
    agent.wait_state("engine", "running")
    wait_for(lambda: _engine_logged(agent), what="the engine's lines in its log")
    wait_for(lambda: agent.component("flaky")["state"] == "exited", what="flaky exited")
    restarted = agent.cli("restart", "engine", "--reason", "bundle test: restart the engine")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    wait_for(lambda: _engine_logged(agent), what="the engine's lines again")

    out = short_tmp / "out"
    bundle, summary = _bundle(collect(agent.config_path, out, env=cli_env))
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert bundle.name.startswith("chimera-bundle-") and bundle.name.endswith(".tar.gz")
    root = extract(bundle, short_tmp / "x")
    assert leaks(root, corpus.everything) == []
    import tarfile

    with tarfile.open(bundle) as tar:  # no secret in a member's name either
        assert not [n for n in tar.getnames() for v in corpus.everything if v in n]

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["agent"]["running"] is True
    counts = manifest["redaction"]["rules"]
    for rule, values in corpus.by_rule.items():
        assert counts[rule] >= len(values), (rule, counts)
    assert counts["known_value"] >= 3
    statuses = {c["name"]: c["status"] for c in manifest["collectors"]}
    assert statuses["status"] == "ok" and statuses["store"] == "ok"
    assert statuses["postgres:127.0.0.1_5432_postgres"] == "ok"
    assert statuses["redis:127.0.0.1_6379_0"] == "ok"
    listed = {f["path"] for f in manifest["files"]}
    for path in (
        "report.md",
        "agent/events.jsonl",
        "agent/audit.jsonl",
        "agent/status.json",
        "system/snapshot.json",
        "processes/engine.json",
        "logs/engine/engine.log",
        "env/component-engine.env",
        "env/collect-logs.env",
        "config/chimera-ops.yaml",
    ):
        assert path in listed, path
        assert (root / path).is_file()
    for entry in manifest["files"]:  # sizes and hashes describe the extracted files
        import hashlib

        data = (root / entry["path"]).read_bytes()
        assert len(data) == entry["size"] and hashlib.sha256(data).hexdigest() == entry["sha256"]

    log = (root / "logs/engine/engine.log").read_text()
    price_line = corpus.lines_out[0]
    assert f" stdout {price_line}\n" in log  # prices, sizes, ids and timestamps untouched
    assert "'ACCESS-KEY': '***'" in log and "'ACCESS-TIMESTAMP': '1700000000000'" in log
    env = (root / "env/component-engine.env").read_text()
    assert "BITGET_API_KEY=***" in env and "PATH=" in env

    report = (root / "report.md").read_text()
    assert "| flaky | exited |" in report
    assert "restart component=engine" in report and "bundle test: restart the engine" in report
    assert (
        "Traceback (most recent call last):" in report
        and "sqlalchemy.exc.OperationalError" in report
    )
    assert "PostgreSQL 15" in report or "PostgreSQL 1" in report
    pg = json.loads(next((root / "postgres").glob("*.json")).read_text())
    assert pg["activity"] and all("query" in row for row in pg["activity"])
    redis = json.loads(next((root / "redis").glob("*.json")).read_text())
    assert redis["maxclients"] and "redis_version" in redis["info"]


def test_without_agent_the_manifest_says_so(
    corpus: Corpus,
    cli_env: dict[str, str],
    short_tmp: Path,
    postgres_service: str,
    redis_service: str,
) -> None:
    config = short_tmp / "chimera-ops.yaml"
    import yaml

    cfg = stack_config(short_tmp, corpus)
    cfg["agent"] = {"state_dir": str(short_tmp / "var")}
    config.write_text(yaml.safe_dump(cfg))
    bundle, summary = _bundle(collect(config, short_tmp / "out", env=cli_env))
    assert summary["agent"]["running"] is False
    root = extract(bundle, short_tmp / "x")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["agent"]["running"] is False
    assert "no agent socket" in manifest["agent"]["error"]
    assert "AgentUnavailable" not in manifest["agent"]["error"]  # no internal class names
    assert manifest["agent"]["status_source"].startswith("direct")
    assert "No agent answered" in (root / "report.md").read_text()
    assert leaks(root, corpus.everything) == []


def test_stopped_database_and_stopped_agent_cost_a_manifest_line(
    agent_factory: Any,
    corpus: Corpus,
    short_tmp: Path,
    postgres_service: str,
    redis_service: str,
) -> None:
    with private_postgres() as pg:
        cfg = stack_config(short_tmp, corpus)
        cfg["components"]["db2"] = {
            "runtime": "external",
            "liveness": {"postgres": {"dsn": pg.dsn}, "period": "5s"},
        }
        agent = agent_factory(cfg)
        agent.start()
        agent.wait_state("engine", "running")
        pg.stop("immediate")
        assert agent.proc is not None
        os.kill(agent.proc.pid, signal.SIGSTOP)
        try:
            done = collect(agent.config_path, short_tmp / "out", timeout=90)
        finally:
            os.kill(agent.proc.pid, signal.SIGCONT)
    bundle, summary = _bundle(done)
    root = extract(bundle, short_tmp / "x")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["agent"]["running"] is False
    assert (
        "timed out" in manifest["agent"]["error"].lower()
        or "timeout" in manifest["agent"]["error"].lower()
    )
    failed = {c["name"]: c for c in manifest["collectors"] if c["status"] != "ok"}
    slug = f"postgres:127.0.0.1_{pg.port}_postgres"
    assert slug in failed, manifest["collectors"]
    assert "connect" in (failed[slug]["error"] or "").lower()
    assert {c["name"]: c["status"] for c in manifest["collectors"]}[
        "redis:127.0.0.1_6379_0"
    ] == "ok"
    assert (root / "logs/engine/engine.log").is_file()
