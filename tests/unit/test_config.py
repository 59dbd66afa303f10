"""Config: every error names file, line and field path; the issue's example shape validates."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from chimera_ops.config import ConfigError, load_config, parse_config

EXAMPLE = """\
agent:
  state_dir: ./var
  metrics: {listen: "127.0.0.1:9464"}
components:
  postgres:
    runtime: external
    readiness: {tcp: "127.0.0.1:5432"}
  engine:
    runtime: process
    command: ["python", "-m", "chimera_ops.paper", "--port", "8701"]
    env: {CHIMERA_PG_DSN: "postgresql://postgres@127.0.0.1:5432/chimera"}
    depends_on: [postgres]
    restart: {policy: on-failure, backoff: {initial: 1s, max: 60s, reset_after: 60s},
              crash_loop: {max_restarts: 5, window: 5m}}
    stop: {signal: SIGTERM, grace: 10s}
    readiness: {http: "http://127.0.0.1:8701/health"}
    logs: {max_size: 50MiB, keep: 5}
"""


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "stack.yaml", environ={})
    return info.value


def test_issue_example_validates_frozen():
    cfg = parse_config(EXAMPLE, "stack.yaml", environ={}, base_dir=Path("/srv"))
    engine = cfg.components["engine"]
    assert cfg.start_order() == ["postgres", "engine"]
    assert engine.restart.backoff.initial == 1.0 and engine.restart.crash_loop.window == 300.0
    assert engine.logs.max_size == 50 * 1024 * 1024
    assert cfg.agent.state_dir == Path("/srv/var")
    with pytest.raises(ValidationError):
        engine.restart = None  # type: ignore[misc]


@pytest.mark.parametrize(
    ("old", "new", "line", "path", "words"),
    [
        (
            "initial: 1s",
            "initial: 0s",
            13,
            "components.engine.restart.backoff.initial",
            "greater than zero",
        ),
        (
            "initial: 1s",
            "initial: 1s, first: 2m",
            13,
            "components.engine.restart.backoff",
            "'max' must be at least 'first'",
        ),
        ("grace: 10s", "grace: -2s", 15, "components.engine.stop.grace", "greater than zero"),
        ("keep: 5", "keep: lots", 17, "components.engine.logs.keep", "integer"),
        ("    logs:", "    lgos:", 17, "components.engine.lgos", "unknown field"),
        (
            "depends_on: [postgres]",
            "depends_on: [pg]",
            12,
            "components.engine.depends_on[0]",
            "unknown dependency 'pg'; known components: engine, postgres",
        ),
        (
            "    runtime: external",
            "    runtime: external\n    depends_on: [engine]",
            7,
            "components.postgres.depends_on",
            "dependency cycle",
        ),
        (
            "policy: on-failure",
            "policy: sometimes",
            13,
            "components.engine.restart.policy",
            "always",
        ),
        (
            "signal: SIGTERM",
            "signal: SIGNOPE",
            15,
            "components.engine.stop.signal",
            "unknown signal",
        ),
        (
            'readiness: {tcp: "127.0.0.1:5432"}',
            'readiness: {tcp: "127.0.0.1:5432", kill_grace: 1s}',
            7,
            "components.postgres.readiness",
            "a readiness probe never kills",
        ),
        (
            'tcp: "127.0.0.1:5432"',
            "tcpx: 1",
            7,
            "components.postgres.readiness.tcpx",
            "unknown field",
        ),
    ],
)
def test_each_error_names_line_and_path(old, new, line, path, words):
    assert old in EXAMPLE
    error = _error(EXAMPLE.replace(old, new, 1))
    issue = next(i for i in error.issues if i.path == path)
    assert issue.line == line, error
    assert words in issue.message
    assert str(issue).startswith(f"stack.yaml:{line}: {path}:")


def test_malformed_yaml_names_the_line():
    error = _error(EXAMPLE.replace("[postgres]", "[postgres", 1))
    assert error.issues[0].line in (12, 13)
    assert "malformed YAML" in error.issues[0].message


def test_duplicate_key_is_an_error():
    error = _error(EXAMPLE + "  engine:\n    runtime: external\n")
    assert any("duplicate key" in i.message for i in error.issues)


def test_process_needs_command_and_external_refuses_one():
    error = _error(
        "components:\n  e:\n    runtime: process\n  x:\n    runtime: external\n    command: [a]\n"
    )
    messages = {i.path: i.message for i in error.issues}
    assert "needs 'command'" in messages["components.e"]
    assert "never started" in messages["components.x"]


def test_env_overrides_nested_fields():
    cfg = parse_config(
        EXAMPLE,
        "s.yaml",
        environ={
            "CHIMERA_COMPONENTS__ENGINE__RESTART__POLICY": "never",
            "CHIMERA_AGENT__TICK": "2s",
            "CHIMERA_PG_DSN": "x",
        },
    )
    assert cfg.components["engine"].restart.policy == "never"
    assert cfg.agent.tick == 2.0


def test_bad_env_override_is_reported_with_its_source():
    error = _error_env({"CHIMERA_AGENT__TICK": "-1s"})
    assert (
        str(error.issues[0])
        == "env CHIMERA_AGENT__TICK: agent.tick: must be greater than zero (got '-1s')"
    )


def _error_env(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(EXAMPLE, "stack.yaml", environ=environ)
    return info.value


def test_missing_file_says_how_to_point_at_one(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "CHIMERA_OPS_CONFIG" in str(info.value)


def test_metrics_listener_must_be_loopback():
    error = _error(EXAMPLE.replace("127.0.0.1:9464", "0.0.0.0:9464"))
    assert any(i.path == "agent.metrics.listen" and "loopback" in i.message for i in error.issues)
