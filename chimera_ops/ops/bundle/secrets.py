"""What the bundle knows to be secret: the values chimera-ops can see, and the env parts.

Known values are every value of a secret-named variable (`is_secret_name`) in the environments
chimera-ops can read (its own, the agent's, each managed component's, the config's `env:`),
every variable a `*_env` setting names, the credential of secret-named config keys (probe
headers), and the password of every DSN or URL in any of them. They are removed verbatim from
every file of the bundle, whatever the format around them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import psutil

from chimera_ops.redact import dsn_password, is_secret_name


def process_environ(pid: int) -> dict[str, str] | None:
    """A live process's environment, or None when it cannot be read."""
    try:
        return dict(psutil.Process(pid).environ())
    except psutil.Error:
        return None


def _walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, item in value.items():
            yield str(k), item
            yield from _walk(item, str(k))
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, key)


def _with_password(value: str) -> Iterator[str]:
    yield value
    if "://" in value or "password" in value.lower():
        password = dsn_password(value)
        if password:
            yield password


def known_values(config_dump: Any, environs: Iterable[Mapping[str, str]]) -> set[str]:
    """Every secret value to remove verbatim (see the module docs)."""
    envs = list(environs)
    found: set[str] = set()
    for env in envs:
        for name, value in env.items():
            if not value:
                continue
            if is_secret_name(name):
                found.add(value)
            if "://" in value or "password=" in value.lower():
                found.update(_with_password(value))
    for key, value in _walk(config_dump):
        if not isinstance(value, str) or not value:
            continue
        if key.endswith("_env"):
            for env in envs:
                resolved = env.get(value)
                if resolved:
                    found.update(_with_password(resolved))
        elif is_secret_name(key):
            found.add(value)
            found.add(value.split()[-1])  # "Bearer <token>": the token alone too
        elif "://" in value or "password=" in value.lower():
            password = dsn_password(value)
            if password:
                found.add(password)
    return {v for v in found if v.strip()}


def env_text(environ: Mapping[str, str]) -> str:
    """`NAME=value` lines, sorted (redacted by the writer like every member)."""
    return "".join(f"{name}={value}\n" for name, value in sorted(environ.items()))
