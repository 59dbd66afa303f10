"""Env var checks: present, non-empty, clean; values shown only as length and 2 characters."""

from __future__ import annotations

from collections.abc import Mapping

from chimera_ops.ops.doctor.result import CheckResult


def mask_value(value: str) -> str:
    """Length and at most the first 2 characters; short values show no characters at all."""
    shown = value[:2] if len(value) >= 8 else ""
    return f"{shown}*** ({len(value)} chars)"


def check_env_var(name: str, env: Mapping[str, str]) -> CheckResult:
    """Present, non-empty and clean (no whitespace or quotes around it, the classic 401)."""
    check = f"env:{name}"
    if name not in env:
        return CheckResult(
            check,
            "fail",
            f"{name} is not set",
            {"set": False},
            f"export {name}=... in the service environment",
        )
    value = env[name]
    details = {"set": True, "length": len(value), "masked": mask_value(value)}
    if not value.strip():
        return CheckResult(check, "fail", f"{name} is empty", details, f"give {name} a value")
    problems = []
    if value != value.strip():
        problems.append("has leading/trailing whitespace or a newline")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        problems.append("is wrapped in quotes")
    if problems:
        return CheckResult(
            check,
            "warn",
            f"{name} {' and '.join(problems)}",
            details,
            "keys copied with quotes or a newline are rejected (401)",
        )
    return CheckResult(check, "ok", f"{name} is set ({details['masked']})", details)
