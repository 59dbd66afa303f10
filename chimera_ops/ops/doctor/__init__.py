"""`chimera-ops doctor`: host checks for what the incidents start with.

Port conflicts, missing or malformed env vars, unreachable databases, full disks and a wrong
clock. Each check returns a `CheckResult`; `run_doctor(plan)` runs them all (network checks in
parallel, each with its own timeout) and never raises. No click or rich here: the CLI renders.

One module per check family: `ports` (and `agents`, which tells a live chimera-ops agent or its
component from a stale process), `env`, `databases`, `host` (disk, clock); `from_config` builds
the plan of a config and `plan` runs it. Every public name is importable from this package.

Secrets never leave this module in clear: DSNs and URLs are redacted, error messages are
scrubbed of the password they were built from, and env values are shown as length plus at most
the first 2 characters.
"""

from __future__ import annotations

from chimera_ops.ops.doctor.databases import check_postgres, check_redis
from chimera_ops.ops.doctor.env import check_env_var, mask_value
from chimera_ops.ops.doctor.from_config import plan_from_config
from chimera_ops.ops.doctor.host import check_clock, check_disk
from chimera_ops.ops.doctor.plan import DoctorPlan, run_doctor
from chimera_ops.ops.doctor.ports import PortCheck, check_ports, default_port_checks
from chimera_ops.ops.doctor.result import CheckResult, Status

__all__ = [
    "CheckResult",
    "DoctorPlan",
    "PortCheck",
    "Status",
    "check_clock",
    "check_disk",
    "check_env_var",
    "check_ports",
    "check_postgres",
    "check_redis",
    "default_port_checks",
    "mask_value",
    "plan_from_config",
    "run_doctor",
]
