"""The types of runbook variables, checked before any step runs.

A value put in its one argv element can still speak the target tool's own syntax: `fuser -k -n
tcp ,,55432` reads `,,55432` as "local port empty, remote port 55432" and kills a database
client; `psql -d 'dbname=other host=...'` reads a conninfo; a `state_dir` pointed at
`/var/lib/postgresql` redirects a `find ... -delete`. So every variable a page takes has a type
(`**Variables:** `port:port`, `database:identifier`, `component:component=engine``) that admits
only the plain values of that kind:

| type | admits |
|---|---|
| `port` | a number 1..65535, digits only |
| `pid` | a number 2..4194304 (the kernel's limit; 1 is init) |
| `identifier` | a name: a letter or `_`, then letters, digits, `_`; at most 63 (PostgreSQL's limit) |
| `component` | a component of the config |
| `path` | an absolute path that (symlinks resolved) is at or under the state dir or backup dir |
| `dir` | an existing directory that is not `/` nor inside a system tree (/usr, /proc...) |
| `host` | a host name or an IP address |
| `url` | an http(s) URL |
| `backup-set` | `latest` or a backup set id (or a unique prefix of one) |
| `text` | anything: the base rules only (no leading `-`, no control characters) |

Config values (`state_dir`, `NAME.port`...) are the config's own and cannot be `--set`; a name
of that shape the config does not fill takes the type of its suffix (`db.port` is a `port`).
The decisions are pure apart from `path` and `dir`, which resolve symlinks and look at the disk.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from chimera_ops.syspaths import system_dir_problem

PID_MAX = 4194304  # PID_MAX_LIMIT on 64-bit Linux
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_PID = re.compile(r"[1-9][0-9]{0,6}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_COMPONENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SET_ID = re.compile(r"[0-9][0-9A-Za-z-]{0,39}")
# Names the config fills, and the suffixes of `NAME.<field>` names (config.variables).
BUILTIN = {"state_dir": "path", "config": "text", "python": "text"}
SUFFIX = {"port": "port", "host": "host", "health_url": "url", "log": "path"}


@dataclass(frozen=True)
class Scope:
    """What a typed value is checked against: the config's components and own directories
    (`None`: no config to check against, only the shape of the value)."""

    components: frozenset[str] | None = None
    roots: tuple[str, ...] | None = None


def builtin_type(name: str) -> str | None:
    """The type of a name the config fills (`state_dir`, `engine.port`), else None."""
    if name in BUILTIN:
        return BUILTIN[name]
    head, dot, tail = name.partition(".")
    return SUFFIX.get(tail) if dot and head else None


def _port(value: str, scope: Scope) -> str | None:
    if _PORT.fullmatch(value) and int(value) <= 65535:
        return None
    return "a port is a number from 1 to 65535"


def _pid(value: str, scope: Scope) -> str | None:
    if _PID.fullmatch(value) and 2 <= int(value) <= PID_MAX:
        return None
    return f"a pid is a number from 2 to {PID_MAX} (1 is init)"


def _identifier(value: str, scope: Scope) -> str | None:
    if _IDENTIFIER.fullmatch(value):
        return None
    return (
        "an identifier is a letter or '_', then letters, digits or '_' (at most 63): "
        "a plain name, never a connection string or URI"
    )


def _component(value: str, scope: Scope) -> str | None:
    if not _COMPONENT.fullmatch(value):
        return "a component name is lowercase letters, digits, '-' and '_'"
    if scope.components is not None and value not in scope.components:
        known = ", ".join(sorted(scope.components)) or "(none configured)"
        return f"not a component of the config (known: {known})"
    return None


def _path(value: str, scope: Scope) -> str | None:
    if not value.startswith("/"):
        return "a path must be absolute"
    if scope.roots is None:
        return None
    real = os.path.realpath(value)
    if any(real == root or real.startswith(root.rstrip("/") + "/") for root in scope.roots):
        return None
    where = ", ".join(scope.roots) or "(none)"
    shown = "" if real == os.path.normpath(value) else f" (it leads to {real})"
    return f"not under a configured directory{shown}: the state dir or backup dir ({where})"


def _dir(value: str, scope: Scope) -> str | None:
    real = os.path.realpath(value)
    if not os.path.isdir(real):
        return f"no such directory ({real})"
    if (why := system_dir_problem(real, whole=False)) is not None:
        return f"{real} {why}"
    return None


def _host(value: str, scope: Scope) -> str | None:
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if len(value) <= 253 and _HOSTNAME.fullmatch(value):
        return None
    return "a host is a host name (letters, digits, '-', '.') or an IP address"


def _url(value: str, scope: Scope) -> str | None:
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.hostname and not re.search(r"\s", value):
        return None
    return "a URL is http:// or https://, a host, no spaces"


def _backup_set(value: str, scope: Scope) -> str | None:
    if value == "latest" or _SET_ID.fullmatch(value):
        return None
    return "a backup set is `latest` or a set id such as 20261202T013000Z-3fa2c1 (or its prefix)"


def _text(value: str, scope: Scope) -> str | None:
    return None


TYPES: dict[str, Callable[[str, Scope], str | None]] = {
    "port": _port,
    "pid": _pid,
    "identifier": _identifier,
    "component": _component,
    "path": _path,
    "dir": _dir,
    "host": _host,
    "url": _url,
    "backup-set": _backup_set,
    "text": _text,
}


def check_typed(kind: str, value: str, scope: Scope) -> str | None:
    """Why `value` is not a `kind`, or None when it is."""
    return TYPES[kind](value, scope)
