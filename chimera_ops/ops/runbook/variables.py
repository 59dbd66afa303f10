"""Filling `{name}` placeholders: from `--set`, the runbook's defaults, then the config.

A value never becomes shell text: in an argv step it is put inside the one argv element that
holds its placeholder (`kill {pid}` -> `["kill", "4242"]`, however many spaces or `;` the value
has); in a `shell` step it is inserted shell-quoted. Values that could still change a command's
meaning are refused: one that starts with `-` (it would be read as an option), control
characters (newlines, NUL), and one that is not of its variable's type (types.py: a `port` is
digits 1..65535, never `,,55432`). A value the config fills cannot be `--set`, and a `--set` of
a name the page does not take is refused (a typo would otherwise be silently ignored). All of it
is checked before any step runs.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from chimera_ops.ops.runbook.parse import PLACEHOLDER, Runbook, Step, placeholders
from chimera_ops.ops.runbook.types import Scope, builtin_type, check_typed

if TYPE_CHECKING:
    from chimera_ops.config import ChimeraConfig


class VariableError(ValueError):
    """A missing or refused variable (a usage error: nothing was run)."""


@dataclass(frozen=True)
class Command:
    """A step with its variables filled: what will run."""

    step: Step
    argv: tuple[str, ...]
    shell_text: str | None = None

    def display(self) -> str:
        """What the operator sees (the exact argv, quoted as a shell would need it)."""
        return self.shell_text if self.shell_text is not None else shlex.join(self.argv)


def parse_sets(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`--set k=v` pairs -> dict; a malformed one raises VariableError."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not PLACEHOLDER.fullmatch("{" + key + "}"):
            raise VariableError(f"--set {pair!r}: expected NAME=VALUE")
        found[key] = value
    return found


def check_value(name: str, value: str) -> None:
    """Refuse values that could be read as an option or break a line."""
    if value.startswith("-"):
        raise VariableError(f"{name}={value!r}: a value may not start with '-' (read as an option)")
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise VariableError(f"{name}={value!r}: control characters are not allowed")


def config_variables(cfg: ChimeraConfig | None, config_path: str | None) -> dict[str, str]:
    """`state_dir`, `config`, `python`, and per component `NAME.port`, `NAME.health_url`,
    `NAME.log`, `NAME.host` from the config."""
    found = {"python": sys.executable}
    if config_path:
        found["config"] = str(config_path)
    if cfg is None:
        return found
    found["state_dir"] = str(cfg.agent.state_dir)
    for name, comp in cfg.components.items():
        found[f"{name}.log"] = str(cfg.agent.state_dir / "logs" / f"{name}.log")
        for probe in (comp.liveness, comp.readiness, comp.startup):
            if probe is None:
                continue
            if probe.http is not None and f"{name}.health_url" not in found:
                found[f"{name}.health_url"] = probe.http.url
                url = urlsplit(probe.http.url)
                if url.port:
                    found.setdefault(f"{name}.port", str(url.port))
                    found.setdefault(f"{name}.host", url.hostname or "127.0.0.1")
            if probe.tcp is not None:
                host, _, port = probe.tcp.address.rpartition(":")
                found.setdefault(f"{name}.port", port)
                found.setdefault(f"{name}.host", host or "127.0.0.1")
    return found


def scope_of(cfg: ChimeraConfig | None) -> Scope:
    """What typed values are checked against: the config's components, and its own directories
    (state dir, backup dir; symlinks resolved) for `path`."""
    if cfg is None:
        return Scope()
    roots = [cfg.agent.state_dir] + ([cfg.backup.dir] if cfg.backup is not None else [])
    return Scope(frozenset(cfg.components), tuple(os.path.realpath(r) for r in roots))


def _check_sets(
    book: Runbook, sets: dict[str, str], from_config: dict[str, str], needed: set[str]
) -> None:
    for name, value in sets.items():
        check_value(name, value)
        if name in from_config:
            raise VariableError(
                f"--set {name}: {name} comes from the config ({from_config[name]}); "
                "change the config, not the run"
            )
        if name not in book.types and name not in needed:
            known = ", ".join(sorted(book.types)) or "(none)"
            raise VariableError(
                f"--set {name}: not a variable of runbook {book.name} (its variables: {known})"
            )


def _check_types(book: Runbook, values: dict[str, str], scope: Scope) -> None:
    """Each value from `--set` or the page's defaults against its type."""
    for name, value in values.items():
        kind = book.types.get(name) or builtin_type(name)
        if kind is None:
            raise VariableError(f"{name}: the runbook gives it no type")
        if (problem := check_typed(kind, value, scope)) is not None:
            raise VariableError(f"{name}={value!r} ({kind}): {problem}")


def resolve(
    book: Runbook,
    sets: dict[str, str],
    from_config: dict[str, str],
    scope: Scope | None = None,
) -> dict[str, str]:
    """Every variable the runbook's steps use -> its value, each value from `--set` or the
    page checked against its type; VariableError names a missing, refused or mistyped one."""
    needed = set().union(*(placeholders(s) for s in book.steps)) if book.steps else set()
    _check_sets(book, sets, from_config, needed)
    # What the operator must give is said first; then every given value meets its type.
    _needs(book, sorted(n for n in book.required if n in needed and n not in sets))
    chosen = {n: v for n, v in book.defaults.items() if n in needed} | sets
    _check_types(book, chosen, scope or Scope())
    values = {**from_config, **book.defaults, **sets}
    # `{component.port}` style: the component named by a variable, then its config field.
    for name in sorted(needed):
        head, dot, tail = name.partition(".")
        if name not in values and dot and head in values and f"{values[head]}.{tail}" in values:
            values[name] = values[f"{values[head]}.{tail}"]
    _needs(book, sorted(n for n in needed if n not in values))
    return {n: values[n] for n in sorted(needed)}


def _needs(book: Runbook, missing: list[str]) -> None:
    if missing:
        raise VariableError(
            f"runbook {book.name} needs {', '.join(missing)}: pass --set "
            + " --set ".join(f"{n}=..." for n in missing)
        )


def _fill(text: str, values: dict[str, str], quote: bool) -> str:
    def one(match: object) -> str:
        value = values[match.group(1)]  # type: ignore[attr-defined]
        return shlex.quote(value) if quote else value

    parts = text.split("{{")
    return "{".join(
        "}".join(PLACEHOLDER.sub(one, piece) for piece in part.split("}}")) for part in parts
    )


def fill(step: Step, values: dict[str, str]) -> Command:
    """The step's command with its values: one argv element per written word."""
    if step.shell:
        return Command(
            step, ("sh", "-c", _fill(step.body, values, True)), _fill(step.body, values, True)
        )
    return Command(step, tuple(_fill(word, values, False) for word in step.argv))
