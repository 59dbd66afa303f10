"""YAML + CHIMERA_* env overrides -> a validated, frozen config model.

Every error names the file, the line and the field path, e.g.
`stack.yaml:14: components.engine.restart.backoff.initial: must be greater than zero`.

Where the file comes from: `--config`, else `$CHIMERA_OPS_CONFIG`, else `./chimera-ops.yaml`.
Relative paths inside the file (state_dir, cwd) are relative to the file's directory, so the
agent behaves the same whatever directory it is started from.

Env overrides use `__` between levels: `CHIMERA_AGENT__STATE_DIR=/srv/var`,
`CHIMERA_COMPONENTS__ENGINE__RESTART__POLICY=never`. Variables without `__` (CHIMERA_PG_DSN,
CHIMERA_CONTROL_TOKEN, ...) belong to the components and are left alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from chimera_ops.alerts_spec import AlertsConfig
from chimera_ops.config_locate import CONFIG_ENV, resolve_config_path
from chimera_ops.fields import Duration, Signal, Size, StrictModel
from chimera_ops.monitors.spec import MonitorsConfig
from chimera_ops.probes.spec import ProbeConfig
from chimera_ops.trading_spec import TradingConfig

OVERRIDE_PREFIX = "CHIMERA_"
COMPONENT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config: where it is and what is wrong."""

    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; carries every issue found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


# --------------------------------------------------------------------------- model


class MetricsConfig(StrictModel):
    """Prometheus /metrics on an optional loopback TCP listener."""

    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _loopback(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"expected 'host:port', got {value!r}")
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            raise ValueError("the metrics listener must be on loopback (127.0.0.1 or ::1)")
        return value


class ApiConfig(StrictModel):
    """Control API. Always on a 0600 unix socket; TCP only with a token."""

    listen: str | None = None
    token_env: str | None = None

    @model_validator(mode="after")
    def _token_for_tcp(self) -> ApiConfig:
        if self.listen and not self.token_env:
            raise ValueError("a TCP control listener needs 'token_env' (the API changes state)")
        return self


class IncidentsConfig(StrictModel):
    """What the agent saves before it kills a component for liveness, memory or CPU."""

    enabled: bool = True
    stack_dump: bool = True  # py-spy dump of every thread of Python processes
    tail_lines: int = Field(default=200, ge=0)


class AgentConfig(StrictModel):
    """The agent's own settings."""

    state_dir: Path = Path("./var")
    # A safety net only: exits, probe verdicts, backoff ends and due probes wake the loop.
    tick: Duration = 5.0
    metrics: MetricsConfig = MetricsConfig()
    api: ApiConfig = ApiConfig()
    alerts: AlertsConfig = AlertsConfig()
    incidents: IncidentsConfig = IncidentsConfig()


class BackoffConfig(StrictModel):
    """Restart delays: ``first`` after a crash from a stable run, then initial * 2^n, capped.

    A component that ran stably and crashes once is back after ``first`` (like systemd's
    RestartSec=100ms; supervisord restarts at once); only a repeat failure, before
    ``reset_after`` of uptime, backs off from ``initial``.
    """

    first: Duration = 0.1
    initial: Duration = 1.0
    max: Duration = 60.0
    reset_after: Duration = 60.0

    @model_validator(mode="after")
    def _ordered(self) -> BackoffConfig:
        if self.max < self.initial:
            raise ValueError("'max' must be at least 'initial'")
        if self.max < self.first:
            raise ValueError("'max' must be at least 'first'")
        return self


class CrashLoopConfig(StrictModel):
    """N restarts within a window -> fatal."""

    max_restarts: int = Field(default=5, ge=1)
    window: Duration = 300.0


class RestartConfig(StrictModel):
    """When and how fast a process component is restarted."""

    policy: Literal["always", "on-failure", "never"] = "on-failure"
    backoff: BackoffConfig = BackoffConfig()
    crash_loop: CrashLoopConfig = CrashLoopConfig()


class StopConfig(StrictModel):
    """Stop signal and grace period before SIGKILL of the whole tree."""

    signal: Signal = Field(default="SIGTERM", validate_default=True)
    grace: Duration = 10.0


class LogsConfig(StrictModel):
    """Size-rotated stdout/stderr capture."""

    max_size: Size = 50 * 1024 * 1024
    keep: int = Field(default=5, ge=1)


class ComponentConfig(StrictModel):
    """One component of the stack."""

    runtime: Literal["process", "docker", "external"]
    command: list[str] | None = None
    cwd: Path | None = None
    env: dict[str, str] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    restart: RestartConfig = RestartConfig()
    stop: StopConfig = StopConfig()
    logs: LogsConfig = LogsConfig()
    startup: ProbeConfig | None = None
    readiness: ProbeConfig | None = None
    liveness: ProbeConfig | None = None
    trading: TradingConfig | None = None
    monitors: MonitorsConfig | None = None

    @field_validator("command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not value[0].strip()):
            raise ValueError("must be a non-empty argv list, e.g. ['python', '-m', 'app']")
        return value

    @field_validator("readiness")
    @classmethod
    def _readiness_never_kills(cls, value: ProbeConfig | None) -> ProbeConfig | None:
        if value is not None and value.kill_grace is not None:
            raise ValueError(
                "a readiness probe never kills, so 'kill_grace' has no effect here; "
                "set it on the liveness or startup probe"
            )
        return value

    @model_validator(mode="after")
    def _runtime_fields(self) -> ComponentConfig:
        if self.runtime == "process" and not self.command:
            raise ValueError("a 'process' component needs 'command' (an argv list)")
        if self.runtime == "docker":
            raise ValueError(
                "the docker runtime is not available yet; run the service as 'process' or watch "
                "it as 'external' (with probes)"
            )
        if self.runtime == "external" and self.command:
            raise ValueError("an 'external' component is watched, never started: remove 'command'")
        return self


class ChimeraConfig(StrictModel):
    """The whole validated config."""

    agent: AgentConfig = AgentConfig()
    components: dict[str, ComponentConfig] = Field(default_factory=dict)
    source: Path | None = None

    def component(self, name: str) -> ComponentConfig:
        """Return a component or raise UnknownComponent listing the known names."""
        try:
            return self.components[name]
        except KeyError:
            raise UnknownComponent(name, list(self.components)) from None

    def engines(self) -> list[str]:
        """Names of components with a `trading:` section, in start order."""
        return [name for name in self.start_order() if self.components[name].trading is not None]

    def start_order(self) -> list[str]:
        """Component names in dependency order (dependencies first, stable)."""
        return dependency_order({n: c.depends_on for n, c in self.components.items()})

    @property
    def state_dir(self) -> Path:
        return self.agent.state_dir


class UnknownComponent(KeyError):
    """A component name that the config does not define."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(name)

    def __str__(self) -> str:
        known = ", ".join(sorted(self.known)) or "(none configured)"
        return f"unknown component {self.name!r}; known components: {known}"


# --------------------------------------------------------------------------- dependencies


def dependency_order(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Topological order, dependencies first; ties keep config order. Assumes no cycle."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dep in graph.get(name, ()):
            visit(dep)
        order.append(name)

    for name in graph:
        visit(name)
    return order


def _dependency_issues(components: Mapping[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """Unknown dependencies and cycles, as (path, message)."""
    issues: list[tuple[tuple[Any, ...], str]] = []
    graph: dict[str, list[str]] = {}
    for name, comp in components.items():
        deps = list(comp.get("depends_on") or []) if isinstance(comp, dict) else []
        graph[name] = [d for d in deps if isinstance(d, str)]
        for index, dep in enumerate(graph[name]):
            if dep not in components:
                known = ", ".join(sorted(components)) or "(none)"
                issues.append(
                    (
                        ("components", name, "depends_on", index),
                        f"unknown dependency {dep!r}; known components: {known}",
                    )
                )
            elif dep == name:
                issues.append(
                    (
                        ("components", name, "depends_on", index),
                        "a component cannot depend on itself",
                    )
                )
    # cycle detection (white/grey/black DFS)
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if dep not in graph or dep == node:
                continue
            if colour.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if colour.get(dep, 0) == 0 and (cycle := visit(dep)):
                return cycle
        stack.pop()
        colour[node] = 2
        return None

    for node in graph:
        if colour.get(node, 0) == 0 and (cycle := visit(node)):
            issues.append(
                (("components", cycle[0], "depends_on"), "dependency cycle: " + " -> ".join(cycle))
            )
            break
    return issues


# --------------------------------------------------------------------------- YAML with lines


class _LineMap:
    """Maps a field path (tuple of keys / indexes) to the YAML line that defines it."""

    def __init__(self) -> None:
        self.lines: dict[tuple[Any, ...], int] = {}

    def line_for(self, path: tuple[Any, ...]) -> int | None:
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                return self.lines[path[:cut]]
        return None


def _map_node(
    node: yaml.Node,
    path: tuple[Any, ...],
    lines: _LineMap,
    dupes: list[tuple[tuple[Any, ...], str]],
) -> None:
    lines.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            child = (*path, key)
            if key in seen:
                dupes.append((child, f"duplicate key {key!r} (the later one would silently win)"))
            seen.add(key)
            lines.lines[child] = key_node.start_mark.line + 1
            _map_node(value_node, child, lines, dupes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _map_node(item, (*path, index), lines, dupes)


def _parse_yaml(text: str, source: str) -> tuple[Any, _LineMap, list[ConfigIssue]]:
    lines = _LineMap()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        raise ConfigError([ConfigIssue(source, line, "", f"malformed YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(source, None, "", f"malformed YAML: {exc}")]) from None
    dupes: list[tuple[tuple[Any, ...], str]] = []
    if node is not None:
        _map_node(node, (), lines, dupes)
    issues = [ConfigIssue(source, lines.line_for(p), _dotted(p), m) for p, m in dupes]
    return data, lines, issues


def _dotted(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --------------------------------------------------------------------------- env overrides


def _apply_env_overrides(
    data: dict[str, Any], environ: Mapping[str, str]
) -> dict[tuple[str, ...], str]:
    """Set CHIMERA_A__B__C=value into data['a']['b']['c']; returns {path: variable name}."""
    applied: dict[tuple[str, ...], str] = {}
    for name in sorted(environ):
        if not name.startswith(OVERRIDE_PREFIX) or "__" not in name or name == CONFIG_ENV:
            continue
        parts = [p.lower() for p in name[len(OVERRIDE_PREFIX) :].split("__") if p]
        if not parts:
            continue
        target = data
        for part in parts[:-1]:
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                target[part] = nxt
            target = nxt
        target[parts[-1]] = yaml.safe_load(environ[name]) if environ[name] else ""
        applied[tuple(parts)] = name
    return applied


# --------------------------------------------------------------------------- loading


def _pydantic_message(error: Any) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field (not allowed here)"
    if kind == "missing":
        return "required field is missing"
    message = str(error.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if (
        "input" in error
        and kind not in ("model_type", "dict_type")
        and not isinstance(error["input"], dict | list)
    ):
        message += f" (got {error['input']!r})"
    return message


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic inserts validator/union tags like 'function-after[...]'; they mean nothing to users
    return tuple(
        p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function")))
    )


def parse_config(
    text: str,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> ChimeraConfig:
    """Validate config text; raise ConfigError with every issue found."""
    data, lines, issues = _parse_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(source, 1, "", "the top level must be a mapping")])
    env_applied = _apply_env_overrides(data, os.environ if environ is None else environ)

    components = data.get("components")
    if isinstance(components, dict):
        for name in components:
            if not isinstance(name, str) or not COMPONENT_NAME_RE.match(name):
                issues.append(
                    ConfigIssue(
                        source,
                        lines.line_for(("components", name)),
                        f"components.{name}",
                        "component names are lowercase letters, digits, '-' and '_'",
                    )
                )
        for path, message in _dependency_issues(components):
            issues.append(ConfigIssue(source, lines.line_for(path), _dotted(path), message))

    model: ChimeraConfig | None = None
    try:
        model = ChimeraConfig.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = _clean_loc(tuple(error["loc"]))
            override = next(
                (var for path, var in env_applied.items() if loc[: len(path)] == path), None
            )
            if override is not None:
                issue = ConfigIssue(f"env {override}", None, _dotted(loc), _pydantic_message(error))
            else:
                issue = ConfigIssue(
                    source, lines.line_for(loc), _dotted(loc), _pydantic_message(error)
                )
            issues.append(issue)
    if issues or model is None:
        raise ConfigError(sorted(issues, key=lambda i: (i.line or 0, i.path)))

    # Relative paths are relative to the config file, not to the current directory.
    base = base_dir or Path.cwd()
    agent = model.agent
    if not agent.state_dir.is_absolute():
        agent = agent.model_copy(update={"state_dir": (base / agent.state_dir).resolve()})
    comps = {
        name: comp.model_copy(update={"cwd": (base / comp.cwd).resolve()})
        if comp.cwd is not None and not comp.cwd.is_absolute()
        else comp
        for name, comp in model.components.items()
    }
    return model.model_copy(update={"agent": agent, "components": comps})


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> ChimeraConfig:
    """Read, override from env, and validate the config file."""
    resolved = resolve_config_path(path)
    try:
        text = resolved.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = "pass --config FILE or set CHIMERA_OPS_CONFIG"
        raise ConfigError(
            [ConfigIssue(str(resolved), None, "", f"no config file here ({hint})")]
        ) from None
    except OSError as exc:
        raise ConfigError(
            [ConfigIssue(str(resolved), None, "", f"cannot read: {exc.strerror}")]
        ) from None
    config = parse_config(text, str(resolved), environ, base_dir=resolved.resolve().parent)
    return config.model_copy(update={"source": resolved.resolve()})
