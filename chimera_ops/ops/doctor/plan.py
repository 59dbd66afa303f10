"""What doctor checks (a `DoctorPlan`, built from the config) and running it."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from chimera_ops.errors import error_text
from chimera_ops.ops.doctor.databases import check_postgres, check_redis
from chimera_ops.ops.doctor.env import check_env_var
from chimera_ops.ops.doctor.host import check_clock, check_disk
from chimera_ops.ops.doctor.ports import PortCheck, check_ports, default_port_checks
from chimera_ops.ops.doctor.result import CheckResult
from chimera_ops.redact import redact_text


@dataclass
class DoctorPlan:
    """What to check; `plan_from_config` (from_config.py) builds it from a config."""

    ports: Sequence[PortCheck | tuple[int, str | None]] = field(default_factory=default_port_checks)
    env_vars: Sequence[str] = ()
    postgres_dsns: Sequence[str] = ()
    redis_urls: Sequence[str] = ()
    dirs: Sequence[Path] = ()
    timeout: float = 5.0
    disk_warn_ratio: float = 0.10
    disk_fail_ratio: float = 0.05
    check_clock: bool = True
    clock_warn_s: float = 1.0  # exchanges reject signed requests off by a few seconds
    clock_fail_s: float = 5.0
    env: Mapping[str, str] | None = None  # defaults to os.environ
    # The agent's state dir of the config checked: its agent's processes are ours, not stale.
    state_dir: Path | None = None


def run_doctor(plan: DoctorPlan) -> list[CheckResult]:
    """Run every check in the plan, in a stable order; never raises."""
    env = os.environ if plan.env is None else plan.env
    jobs: list[Callable[[], CheckResult | list[CheckResult]]] = [
        partial(check_ports, [_as_port_check(p) for p in plan.ports], plan.state_dir)
    ]
    jobs += [partial(check_env_var, name, env) for name in plan.env_vars]
    jobs += [partial(check_postgres, dsn, plan.timeout) for dsn in plan.postgres_dsns]
    jobs += [partial(check_redis, url, plan.timeout) for url in plan.redis_urls]
    jobs += [
        partial(check_disk, Path(d), plan.disk_warn_ratio, plan.disk_fail_ratio) for d in plan.dirs
    ]
    if plan.check_clock:
        dsn = plan.postgres_dsns[0] if plan.postgres_dsns else None
        jobs.append(partial(check_clock, dsn, plan.timeout, plan.clock_warn_s, plan.clock_fail_s))
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(_safe, jobs))
    results: list[CheckResult] = []
    for outcome in outcomes:
        results.extend(outcome if isinstance(outcome, list) else [outcome])
    return results


def _safe(job: Callable[[], CheckResult | list[CheckResult]]) -> CheckResult | list[CheckResult]:
    try:
        return job()
    except Exception as exc:  # noqa: BLE001 - a broken check is a result, not a crash
        return CheckResult(
            "doctor",
            "fail",
            # Our own exception classes are not named (errors.error_text): the message is it.
            f"check crashed: {redact_text(error_text(exc))}",
            hint="this is a chimera-ops bug",
        )


def _as_port_check(item: PortCheck | tuple[int, str | None]) -> PortCheck:
    if isinstance(item, PortCheck):
        return item
    port, hint = item
    return PortCheck(port, (hint,) if hint else ())
