"""`maintenance install|uninstall`: a crontab entry (`/etc/cron.d/chimera-ops`) or a systemd
service + timer pair per schedule (`OnCalendar=weekly|monthly`, `Persistent=true`,
`RandomizedDelaySec=`). The same text, rendered for `/etc/chimera-ops/chimera-ops.yaml` and
`/usr/bin/python3`, is in deploy/systemd/ and deploy/cron.d/ for people who install by hand (a
test keeps it equal).

Paths are under `root` (default `/`), so a test installs into a temp root.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from chimera_ops.ops.maintenance.base import SCHEDULES

CRON_FILE = Path("etc/cron.d/chimera-ops")
UNIT_DIR = Path("etc/systemd/system")
CRON_TIMES = {"weekly": "17 3 * * 1", "monthly": "47 3 1 * *"}
DEFAULT_CONFIG = "/etc/chimera-ops/chimera-ops.yaml"
# What the files shipped in deploy/ are rendered with (the agent's unit uses the same).
SHIPPED_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class Planned:
    """One file to write (or remove)."""

    path: Path
    content: str


def command(schedule: str, config: str, python: str) -> str:
    """The command a schedule runs (JSON output, for the logs / the journal)."""
    return shlex.join(
        [python, "-m", "chimera_ops", "--config", config, "maintenance", schedule, "--json"]
    )


def cron_entry(config: str = DEFAULT_CONFIG, python: str = sys.executable) -> str:
    """The /etc/cron.d file: both schedules, as root, output to syslog via logger."""
    lines = [
        "# chimera-ops maintenance. Written by `chimera-ops maintenance install --cron`.",
        "SHELL=/bin/sh",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]
    for schedule in SCHEDULES:
        lines.append(
            f"{CRON_TIMES[schedule]} root {command(schedule, config, python)}"
            f" 2>&1 | logger -t chimera-ops-maintenance-{schedule}"
        )
    return "\n".join(lines) + "\n"


def service_unit(schedule: str, config: str = DEFAULT_CONFIG, python: str = sys.executable) -> str:
    """The oneshot service of a schedule."""
    return (
        f"# chimera-ops {schedule} maintenance. Written by `chimera-ops maintenance install "
        "--systemd`.\n"
        "[Unit]\n"
        f"Description=chimera-ops {schedule} maintenance checks\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={command(schedule, config, python)}\n"
        f"WorkingDirectory={Path(config).parent}\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        # exit 1 = a check is not ok: the run worked; the alert says so, the unit need not fail
        "SuccessExitStatus=1\n"
        "Nice=10\n"
        "IOSchedulingClass=idle\n"
    )


def timer_unit(schedule: str) -> str:
    """The timer of a schedule: catches up after downtime, spread by a random delay."""
    return (
        f"# chimera-ops {schedule} maintenance timer.\n"
        "[Unit]\n"
        f"Description=chimera-ops {schedule} maintenance\n\n"
        "[Timer]\n"
        f"OnCalendar={schedule}\n"
        "Persistent=true\n"
        "RandomizedDelaySec=1h\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )


def unit_name(schedule: str, kind: str) -> str:
    return f"chimera-ops-maintenance-{schedule}.{kind}"


def plan(
    kind: str, root: Path = Path("/"), config: str = DEFAULT_CONFIG, python: str = sys.executable
) -> list[Planned]:
    """The files `install` writes for `kind` (cron | systemd)."""
    if kind == "cron":
        return [Planned(root / CRON_FILE, cron_entry(config, python))]
    files = []
    for schedule in SCHEDULES:
        files.append(
            Planned(
                root / UNIT_DIR / unit_name(schedule, "service"),
                service_unit(schedule, config, python),
            )
        )
        files.append(Planned(root / UNIT_DIR / unit_name(schedule, "timer"), timer_unit(schedule)))
    return files


def write(files: list[Planned]) -> None:
    """Write the planned files (0644, parents created)."""
    for item in files:
        item.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = item.path.with_name(f".{item.path.name}.tmp")
        tmp.write_text(item.content)
        tmp.chmod(0o644)
        tmp.replace(item.path)


def remove(files: list[Planned]) -> list[Path]:
    """Delete the planned files that exist; returns those removed."""
    removed = []
    for item in files:
        if item.path.exists():
            item.path.unlink()
            removed.append(item.path)
    return removed
