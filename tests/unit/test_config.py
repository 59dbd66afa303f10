"""Config: every error names file, line and field path; the issue's example shape validates."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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


# ------------------------------------------------------------------ unknown keys get a suggestion


@pytest.mark.parametrize(
    ("old", "new", "path", "hint"),
    [
        ("policy: on-failure", "polcy: on-failure", "components.engine.restart.polcy", "policy"),
        ("agent:", "agnet:", "agnet", "agent"),
        ("    stop:", "    Stop:", "components.engine.Stop", "stop"),  # case folded
        ("initial: 1s", "inital: 1s", "components.engine.restart.backoff.inital", "initial"),
        ("max_size: 50MiB", "maxsize: 50MiB", "components.engine.logs.maxsize", "max_size"),
        # Below a component's probe: dict values and `X | None` unions are walked.
        ('tcp: "127.0.0.1:5432"', 'tcp: "127.0.0.1:5432", perod: 1s', "components.postgres.readiness.perod", "period"),
        ('listen: "127.0.0.1:9464"', 'lisen: "127.0.0.1:9464"', "agent.metrics.lisen", "listen"),
    ],
)  # fmt: skip
def test_unknown_key_names_the_closest_known_one(old, new, path, hint):
    assert old in EXAMPLE
    error = _error(EXAMPLE.replace(old, new, 1))
    issue = next(i for i in error.issues if i.path == path)
    assert issue.message == f"unknown field (not allowed here); did you mean {hint!r}?"
    assert issue.line is not None


def test_unknown_key_far_from_any_field_gets_no_guess():
    error = _error(EXAMPLE.replace("    logs:", "    xyzzy: 1\n    logs:", 1))
    issue = next(i for i in error.issues if i.path == "components.engine.xyzzy")
    assert issue.message == "unknown field (not allowed here)"


def test_unknown_key_from_env_override_gets_a_suggestion_too():
    error = _error_env({"CHIMERA_COMPONENTS__ENGINE__RESTART__POLICI": "never"})
    assert str(error.issues[0]) == (
        "env CHIMERA_COMPONENTS__ENGINE__RESTART__POLICI: components.engine.restart.polici: "
        "unknown field (not allowed here); did you mean 'policy'?"
    )


def test_config_check_suggests_the_key_through_the_cli(tmp_path: Path):
    """As a user meets it: a typo in the file, `chimera-ops config check`, exit 2, the hint."""
    path = tmp_path / "stack.yaml"
    path.write_text(EXAMPLE.replace("policy: on-failure", "polcy: on-failure"))
    done = subprocess.run(
        [sys.executable, "-m", "chimera_ops", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("CHIMERA_")},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert (
        f"{path}:13: components.engine.restart.polcy: unknown field (not allowed here); "
        "did you mean 'policy'?"
    ) in done.stderr


def test_split_modules_keep_every_name_importable_from_config():
    """Every name any module, test or benchmark imports from chimera_ops.config is still there."""
    import chimera_ops.config as config

    root = Path(__file__).resolve().parents[2]
    statement = re.compile(r"from chimera_ops\.config import (?:\(([^)]*)\)|([^\n#]*))")
    imported: set[str] = set()
    for folder in ("chimera_ops", "tests", "bench", "scripts"):
        for source in (root / folder).rglob("*.py"):
            for group, line in statement.findall(source.read_text()):
                imported |= {n.strip() for n in (group or line).split(",") if n.strip()}
    # The scan must see the long-standing callers, or it proves nothing.
    assert {"ChimeraConfig", "ComponentConfig", "BackoffConfig", "UnknownComponent"} <= imported
    missing = sorted(name for name in imported if not hasattr(config, name))
    assert not missing, missing
    assert set(config.__all__) <= set(dir(config))
