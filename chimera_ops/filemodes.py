"""Private files: everything in the state dir is readable by its owner only.

The store, the component logs and the incidents may hold secrets (a DSN a child printed, a token
in a probe reason, a process tree's command lines), so the state dir is 0700 and every file in
it 0600. Three layers, each covering what the others miss:

- the agent runs under umask 077 (`enter_private_umask`), so nothing it creates is ever born
  readable by others; the operator's own umask is kept for the managed children
  (`child_umask`), whose files are theirs, not the agent's;
- the writers create their files and folders with explicit modes (`open_private`,
  `make_private_dir`), so a CLI command that creates them is safe under any umask;
- at start-up the agent tightens what an older version or a hand-copied file left readable
  (`tighten_tree`).

Stdlib only: the CLI imports this through the store.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600

# The operator's umask while an agent runs under PRIVATE_UMASK; None when none does.
_operator_umask: int | None = None


def enter_private_umask() -> int:
    """Switch this process to umask 077 and remember the previous one for children; return it."""
    global _operator_umask
    previous = os.umask(PRIVATE_UMASK)
    if _operator_umask is None:
        _operator_umask = previous
    return previous


def leave_private_umask() -> None:
    """Restore the umask `enter_private_umask` replaced (a no-op when it was not entered)."""
    global _operator_umask
    if _operator_umask is not None:
        os.umask(_operator_umask)
        _operator_umask = None


def child_umask() -> int:
    """The umask a managed child must start with: the operator's, not the agent's private one.

    -1 (subprocess's "leave it alone") when no private umask is in force.
    """
    return -1 if _operator_umask is None else _operator_umask


def make_private_dir(path: Path) -> None:
    """Create `path` 0700 (missing parents get the usual mode); an existing dir is left as is."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def open_private(path: Path, flags: int) -> int:
    """os.open with mode 0600 when the call creates the file (O_CLOEXEC always)."""
    return os.open(path, flags | os.O_CLOEXEC, FILE_MODE)


def write_private_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to a new or truncated file that is 0600 from its first byte."""
    fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def tighten_tree(root: Path) -> tuple[int, list[str]]:
    """Remove group and other bits from `root` and everything under it.

    Returns (how many entries were changed, errors as "path: reason"). Symlinks are neither
    followed nor changed: chmod would act on their target, which may lie outside the state dir.
    """
    changed = 0
    errors: list[str] = []

    def tighten(path: str) -> None:
        nonlocal changed
        try:
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode) or not stat.S_IMODE(info.st_mode) & 0o077:
                return
            os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o077)
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror or exc}")
            return
        changed += 1

    if not root.is_dir():
        return 0, errors
    tighten(str(root))
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: errors.append(str(e))):
        for name in (*dirnames, *filenames):
            tighten(os.path.join(dirpath, name))
    return changed, errors
