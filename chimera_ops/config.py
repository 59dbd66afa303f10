"""YAML + CHIMERA_* env overrides -> a validated, frozen config model.

Every error names the file, the line and the field path, e.g.
`stack.yaml:14: components.engine.restart.backoff.initial: must be greater than zero`.

Where the file comes from: `--config`, else `$CHIMERA_OPS_CONFIG`, else `./chimera-ops.yaml`.
Relative paths inside the file (state_dir, cwd) are relative to the file's directory, so the
agent behaves the same whatever directory it is started from.

Env overrides use `__` between levels: `CHIMERA_AGENT__STATE_DIR=/srv/var`,
`CHIMERA_COMPONENTS__ENGINE__RESTART__POLICY=never`. Variables without `__` (CHIMERA_PG_DSN,
CHIMERA_CONTROL_TOKEN, ...) belong to the components and are left alone.

This module is the loading and the whole-stack model; the sections and the error machinery live
in config_agent.py, config_component.py and config_errors.py, and every name of theirs that
callers use is importable from here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from chimera_ops.config_agent import (
    AgentConfig,
    ApiConfig,
    DockerConfig,
    IncidentsConfig,
    MetricsConfig,
)
from chimera_ops.config_backup import (
    BackupConfig,
    BackupPostgresConfig,
    BackupRedisConfig,
    RetentionConfig,
)
from chimera_ops.config_component import (
    BackoffConfig,
    ComponentConfig,
    ComposeRef,
    CrashLoopConfig,
    LogsConfig,
    RestartConfig,
    StopConfig,
)
from chimera_ops.config_errors import (
    ConfigError,
    ConfigIssue,
    LineMap,
    clean_loc,
    dotted,
    parse_yaml,
    pydantic_message,
)
from chimera_ops.config_locate import CONFIG_ENV, resolve_config_path
from chimera_ops.config_maintenance import MaintenanceConfig
from chimera_ops.config_procedures import LockConfig, ProceduresConfig
from chimera_ops.fields import StrictModel

__all__ = [
    "AgentConfig",
    "ApiConfig",
    "BackoffConfig",
    "BackupConfig",
    "BackupPostgresConfig",
    "BackupRedisConfig",
    "ChimeraConfig",
    "ComponentConfig",
    "ComposeRef",
    "ConfigError",
    "ConfigIssue",
    "CrashLoopConfig",
    "DockerConfig",
    "IncidentsConfig",
    "LockConfig",
    "LogsConfig",
    "MaintenanceConfig",
    "MetricsConfig",
    "ProceduresConfig",
    "RestartConfig",
    "RetentionConfig",
    "StopConfig",
    "UnknownComponent",
    "dependency_order",
    "load_config",
    "parse_config",
]

OVERRIDE_PREFIX = "CHIMERA_"
COMPONENT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


# --------------------------------------------------------------------------- model


class ChimeraConfig(StrictModel):
    """The whole validated config."""

    agent: AgentConfig = AgentConfig()
    components: dict[str, ComponentConfig] = Field(default_factory=dict)
    backup: BackupConfig | None = None
    procedures: ProceduresConfig = ProceduresConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
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


def parse_config(
    text: str,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> ChimeraConfig:
    """Validate config text; raise ConfigError with every issue found."""
    data, lines, issues = parse_yaml(text, source)
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
            issues.append(ConfigIssue(source, lines.line_for(path), dotted(path), message))

    model: ChimeraConfig | None = None
    try:
        model = ChimeraConfig.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = clean_loc(tuple(error["loc"]))
            override = next(
                (var for path, var in env_applied.items() if loc[: len(path)] == path), None
            )
            if override is not None:
                issue = ConfigIssue(
                    f"env {override}", None, dotted(loc), pydantic_message(error, ChimeraConfig)
                )
            else:
                issue = ConfigIssue(
                    source, lines.line_for(loc), dotted(loc), pydantic_message(error, ChimeraConfig)
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
    backup = model.backup
    if backup is not None and not backup.dir.is_absolute():
        backup = backup.model_copy(update={"dir": (base / backup.dir).resolve()})
    maint = model.maintenance
    maint = maint.model_copy(
        update={
            "log_paths": [p if p.is_absolute() else (base / p).resolve() for p in maint.log_paths],
            "audit_pythons": [
                p if p.is_absolute() else (base / p).resolve() for p in maint.audit_pythons
            ],
        }
    )
    if dir_issues := _state_dir_issues(agent.state_dir, source, lines, env_applied):
        raise ConfigError(dir_issues)
    return model.model_copy(
        update={"agent": agent, "components": comps, "backup": backup, "maintenance": maint}
    )


def _state_dir_issues(
    state_dir: Path, source: str, lines: LineMap, env_applied: dict[tuple[str, ...], str]
) -> list[ConfigIssue]:
    """A state dir (or its `logs` dir, through a symlink) that is `/` or a system directory:
    the agent would make it private and `maintenance --fix` would delete in it. The path as
    written and where its symlinks lead are both judged."""
    from chimera_ops.syspaths import ADVICE, system_dir_problem

    for shown, where in (
        (state_dir, str(state_dir)),
        (state_dir, os.path.realpath(state_dir)),
        (state_dir / "logs", os.path.realpath(state_dir / "logs")),
    ):
        why = system_dir_problem(where)
        if why is None:
            continue
        said = f"{where} {why}" if where == str(shown) else f"{shown} leads to {where}, which {why}"
        said += f"; {ADVICE}"
        path = ("agent", "state_dir")
        if path in env_applied:
            return [ConfigIssue(f"env {env_applied[path]}", None, dotted(path), said)]
        return [ConfigIssue(source, lines.line_for(path), dotted(path), said)]
    return []


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
