"""Monthly: the dependency security audit (pip-audit, JSON) and unused docker images.

pip-audit audits each interpreter's installed distributions (`pip freeze` of that interpreter)
against its vulnerability service; a service that cannot be reached is `unknown`, never `ok`.
Docker images are checked only where a docker component configures an engine.
"""

from __future__ import annotations

import calendar
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chimera_ops.ops.maintenance.base import Check, Context, Result
from chimera_ops.units import format_duration


def pip_audit_binary() -> str | None:
    """pip-audit next to this interpreter (the project installs it), else on PATH."""
    here = Path(sys.executable).with_name("pip-audit")
    return str(here) if here.exists() else shutil.which("pip-audit")


def audit_python(python: str, timeout: float) -> dict[str, Any]:
    """pip-audit's JSON for one interpreter's environment; RuntimeError when it cannot run."""
    binary = pip_audit_binary()
    if binary is None:
        raise RuntimeError(
            "pip-audit is not installed (it is a dependency: pip install chimera-ops)"
        )
    freeze = subprocess.run(
        [python, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if freeze.returncode != 0:
        raise RuntimeError(f"{python} -m pip freeze failed: {freeze.stderr.strip()[-200:]}")
    pinned = "\n".join(
        line for line in freeze.stdout.splitlines() if "==" in line and " @ " not in line
    )
    with tempfile.TemporaryDirectory(prefix="chimera-audit-") as tmp:
        req = os.path.join(tmp, "requirements.txt")
        Path(req).write_text(pinned + "\n")
        done = subprocess.run(
            [
                binary,
                "-r",
                req,
                "--no-deps",
                "--disable-pip",
                "--format",
                "json",
                "--progress-spinner",
                "off",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
    try:
        doc: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"pip-audit could not audit (service unreachable?): {tail[0]}") from None
    return doc


def vulnerable(doc: dict[str, Any]) -> list[str]:
    """Pure: `name version: ID, ID` for every dependency with a known vulnerability."""
    out = []
    for dep in doc.get("dependencies", []):
        ids = [v.get("id", "?") for v in dep.get("vulns", [])]
        if ids:
            out.append(f"{dep.get('name')} {dep.get('version')}: {', '.join(ids)}")
    return out


class DependencyAuditCheck(Check):
    """Monthly: no known vulnerability in chimera-ops' or the engines' Python environments."""

    name = "dependency_audit"
    runbook = None

    def decide(self, found: dict[str, list[str]], errors: list[str]) -> Result:
        """Pure: any vulnerability is a warning; an environment not audited makes it unknown."""
        threshold = "no known vulnerability"
        data = {"vulnerable": found, "errors": errors}
        bad = [f"{env}: {v}" for env, items in found.items() for v in items]
        if bad:
            return self.result(
                "warning",
                f"{len(bad)} vulnerable: " + "; ".join(bad[:3]),
                threshold,
                "upgrade the listed packages and re-run",
                data,
            )
        if errors:
            return self.result("unknown", "-", threshold, errors[0], data)
        return self.result("ok", f"{len(found)} environment(s) clean", threshold, "-", data)

    def run(self, ctx: Context) -> Result:
        pythons = [sys.executable, *map(str, ctx.config.maintenance.audit_pythons)]
        found: dict[str, list[str]] = {}
        errors: list[str] = []
        for python in dict.fromkeys(pythons):
            try:
                found[python] = vulnerable(
                    audit_python(python, ctx.config.maintenance.audit_timeout)
                )
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                errors.append(f"{python}: {exc}")
        return self.decide(found, errors)


def unused_images(
    images: list[dict[str, Any]], used: set[str], now: float, max_age: float
) -> list[dict[str, Any]]:
    """Pure: images no container uses, created more than `max_age` ago."""
    return [i for i in images if i["id"] not in used and now - i["created"] > max_age]


class DockerImagesCheck(Check):
    """Monthly: unused images older than image_max_age (`--fix` removes them)."""

    name = "docker_images"
    runbook = "disk-full.md"

    def run(self, ctx: Context) -> Result:
        threshold = (
            f"no unused image older than {format_duration(ctx.config.maintenance.image_max_age)}"
        )
        if not any(c.runtime == "docker" for c in ctx.config.components.values()):
            return self.unknown("no docker engine configured", threshold)
        try:
            import docker

            from chimera_ops.docker.engine import resolve_host

            client = docker.DockerClient(base_url=resolve_host(ctx.config.agent.docker.host))
            used = {c.image.id for c in client.containers.list(all=True) if c.image is not None}
            images = [
                {
                    "id": i.id,
                    "tags": i.tags,
                    "created": calendar.timegm(
                        time.strptime(i.attrs["Created"][:19], "%Y-%m-%dT%H:%M:%S")
                    ),
                }
                for i in client.images.list()
            ]
        except Exception as exc:  # noqa: BLE001 - engine down: unknown
            return self.unknown(f"docker engine unreachable: {exc}", threshold)
        old = unused_images(images, used, ctx.now, ctx.config.maintenance.image_max_age)
        removed: list[str] = []
        if ctx.fix and not ctx.dry_run:
            for image in old:
                try:
                    client.images.remove(image["id"])
                    removed.append(image["id"])
                except Exception:  # noqa: BLE001,S112 - in use since, or a dependent child
                    continue
        left = [i for i in old if i["id"] not in removed]
        data = {"unused": [i["tags"] or [i["id"]] for i in left], "removed": removed}
        if left:
            return self.result(
                "warning", f"{len(left)} unused image(s)", threshold, "`--fix` removes them", data
            )
        result = self.result(
            "ok", f"removed {len(removed)}" if removed else "none", threshold, "-", data
        )
        result.fixed = removed
        return result
