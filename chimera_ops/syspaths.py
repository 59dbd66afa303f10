"""Directories chimera-ops must never treat as its own: `/` and the system's directories.

The agent makes its state dir private (it removes group/other bits from everything in it) and
`maintenance --fix` deletes old files under it, so a state dir (or its `logs` dir) that is `/`,
`/etc` or PostgreSQL's data directory would turn housekeeping into damage. `config check`
refuses them (config.py), and so does a runbook `dir` variable (ops/runbook/types.py).

Pure: the caller normalizes the path (and resolves symlinks where it matters).
"""

from __future__ import annotations

import posixpath

# Refused as they are: chimera-ops' own directory belongs somewhere below them
# (/var/lib/chimera-ops, /srv/chimera, /etc/chimera-ops/var, /home/ops/chimera).
SYSTEM_DIRS = (
    "/",
    "/etc",
    "/home",
    "/root",
    "/var",
    "/var/lib",
    "/var/log",
    "/var/cache",
    "/var/spool",
    "/var/tmp",
    "/var/backups",
    "/tmp",
    "/opt",
    "/srv",
    "/run",
    "/mnt",
    "/media",
)
# Refused with everything below them: the operating system itself, kernel interfaces, and the
# data directories of the services a trading stack runs (their files are never ours to delete).
SYSTEM_TREES = (
    "/bin",
    "/boot",
    "/dev",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib/postgresql",
    "/var/lib/pgsql",
    "/var/lib/mysql",
    "/var/lib/redis",
    "/var/lib/rabbitmq",
    "/var/lib/docker",
    "/var/lib/containerd",
)
# Each directory right below these is a person's home: never a state dir as a whole.
HOME_PARENTS = ("/home",)


ADVICE = "use a directory of chimera-ops' own, such as /var/lib/chimera-ops"


def system_dir_problem(path: str, *, whole: bool = True) -> str | None:
    """Why `path` (absolute) cannot be chimera-ops' own directory (`is the root directory`,
    `is inside /usr, a system directory`...), or None when it can. The caller says the path.
    With `whole=False` (a place to write one file, not a directory to own) only `/` and the
    system trees are refused: a bundle may go to /root or /tmp."""
    norm = posixpath.normpath(path)
    if norm.startswith("//"):  # POSIX keeps a leading `//`; it is still the root
        norm = "/" + norm.lstrip("/")
    if norm == "/":
        return "is the root directory"
    if whole and norm in SYSTEM_DIRS:
        return "is a system directory"
    for tree in SYSTEM_TREES:
        if norm == tree:
            return "is a system directory"
        if norm.startswith(tree + "/"):
            return f"is inside {tree}, a system directory"
    if whole and posixpath.dirname(norm) in HOME_PARENTS:
        return "is a home directory"
    return None
