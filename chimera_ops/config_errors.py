"""Config errors that name file, line and field path, and the YAML line map behind them.

The YAML is composed into nodes first so that every field path (tuple of keys and indexes) maps
back to the line that wrote it; duplicate keys, which a plain load silently collapses, are found
on the way. pydantic's messages are rewritten for people, and an unknown key gets the closest
known one: `unknown field (not allowed here); did you mean 'policy'?`.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel


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


class LineMap:
    """Maps a field path (tuple of keys / indexes) to the YAML line that defines it."""

    def __init__(self) -> None:
        self.lines: dict[tuple[Any, ...], int] = {}

    def line_for(self, path: tuple[Any, ...]) -> int | None:
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                return self.lines[path[:cut]]
        return None


def map_node(
    node: yaml.Node,
    path: tuple[Any, ...],
    lines: LineMap,
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
            map_node(value_node, child, lines, dupes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            map_node(item, (*path, index), lines, dupes)


def parse_yaml(text: str, source: str) -> tuple[Any, LineMap, list[ConfigIssue]]:
    lines = LineMap()
    try:
        # libyaml's loader when PyYAML has it: the same nodes and marks, several times faster
        # (every CLI command reads the config).
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        node = yaml.compose(text, Loader=loader)
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        raise ConfigError([ConfigIssue(source, line, "", f"malformed YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(source, None, "", f"malformed YAML: {exc}")]) from None
    dupes: list[tuple[tuple[Any, ...], str]] = []
    if node is not None:
        map_node(node, (), lines, dupes)
    issues = [ConfigIssue(source, lines.line_for(p), dotted(p), m) for p, m in dupes]
    return data, lines, issues


def dotted(path: Iterable[Any]) -> str:
    """A field path as written in messages: `components.engine.depends_on[0]`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def pydantic_message(error: Any, root: type[BaseModel] | None = None) -> str:
    """A pydantic error as a person reads it; an unknown key under ``root`` gets a suggestion."""
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        loc = clean_loc(tuple(error.get("loc", ())))
        hint = closest_field(root, loc[:-1], loc[-1]) if root is not None and loc else None
        return "unknown field (not allowed here)" + (f"; did you mean {hint!r}?" if hint else "")
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


def clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The field path of a pydantic error location, without pydantic's own tags."""
    # pydantic inserts validator/union tags like 'function-after[...]'; they mean nothing to users
    return tuple(
        p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function")))
    )


# --------------------------------------------------------------------------- suggestions


def closest_field(root: type[BaseModel], path: tuple[Any, ...], key: Any) -> str | None:
    """The known field name nearest to an unknown ``key`` found at ``path`` under ``root``."""
    if not isinstance(key, str):
        return None
    known = fields_at(root, path)
    # Case folded: `Policy` is as likely a typo of `policy` as `polcy` is.
    by_folded = {name.lower(): name for name in known}
    import difflib  # only on an error: the agent and `status` never pay for it

    match = difflib.get_close_matches(key.lower(), list(by_folded), n=1, cutoff=0.6)
    return by_folded[match[0]] if match else None


def fields_at(root: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """Field names of the model(s) a config path leads to (mapping keys and indexes walked)."""
    annotations: list[Any] = [root]
    for part in path:
        annotations = [nxt for ann in annotations for nxt in _step(ann, part)]
    names: list[str] = []
    for model in (m for ann in annotations for m in _alternatives(ann)):
        if isinstance(model, type) and issubclass(model, BaseModel):
            names += [name for name in model.model_fields if name not in names]
    return names


def _step(annotation: Any, part: Any) -> list[Any]:
    """The annotations one path part below ``annotation`` (a field, a dict value, a list item)."""
    found = []
    for option in _alternatives(annotation):
        origin = get_origin(option)
        if isinstance(option, type) and issubclass(option, BaseModel):
            if isinstance(part, str) and part in option.model_fields:
                found.append(option.model_fields[part].annotation)
        elif origin is dict:
            found.append(get_args(option)[1])  # `part` is a key the user chose (a component)
        elif origin is list and isinstance(part, int):
            found.append(get_args(option)[0])
    return found


def _alternatives(annotation: Any) -> list[Any]:
    """`X | Y | None` and `Annotated[X, ...]` unwrapped to the types a value may be."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _alternatives(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [alt for arg in get_args(annotation) for alt in _alternatives(arg)]
    return [annotation]
