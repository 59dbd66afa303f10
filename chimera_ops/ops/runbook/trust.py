"""Only trusted runbook files run, as sudo checks sudoers and ssh (StrictModes) its files.

A runbook's steps run as whoever runs `runbook run`, often root, so whoever can change the file
can run anything as them (a `check` step is a command like any other). A file is trusted when it
is a regular file (not a symlink) owned by root or the invoking user and writable by neither
group nor others, and every directory up the path (symlinks resolved) is owned by root or the
user and writable by neither group nor others; a directory above the file's own may be
world-writable only with the sticky bit (`/tmp`): then nobody else can rename what is in it.

`judge` is the pure decision; `read_trusted` does the I/O: it opens the file once
(`O_NOFOLLOW`), judges what `fstat` says of that descriptor, and returns the text read from it,
so the file that was judged is the file that runs.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

HINT = (
    "a runbook runs as you: only files root or you own, in directories that only root or you "
    "can change, are run (as sudo and ssh check)"
)


class UntrustedRunbook(Exception):
    """A runbook file that is not safe to run: the reason names the file or directory."""


@dataclass(frozen=True)
class Owned:
    """What `lstat`/`fstat` says of one path, for the decision."""

    path: str
    uid: int
    mode: int  # st_mode


def _who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _owner_problem(what: str, item: Owned, me: int) -> str | None:
    if item.uid in (0, me):
        return None
    mine = "root" if me == 0 else f"root or you, {_who(me)}"
    return f"{what} {item.path} is owned by {_who(item.uid)}, not by {mine}"


def _writable_problem(what: str, item: Owned) -> str | None:
    mode = stat.S_IMODE(item.mode)
    if not mode & 0o022:
        return None
    by = "group and others" if mode & 0o022 == 0o022 else "others" if mode & 0o002 else "group"
    return f"{what} {item.path} is writable by {by} (mode {mode:04o}): chmod go-w {item.path}"


def judge(file: Owned, dirs: list[Owned], me: int) -> str | None:
    """Why this runbook must not run, or None when it may. `dirs` is the file's own directory
    first, then each parent up to `/`; `me` the effective uid of the run. Pure."""
    if not stat.S_ISREG(file.mode):
        return f"runbook {file.path} is not a regular file"
    problem = _owner_problem("runbook", file, me) or _writable_problem("runbook", file)
    if problem:
        return problem
    for index, folder in enumerate(dirs):
        what = "its directory" if index == 0 else "the directory"
        if problem := _owner_problem(what, folder, me):
            return problem
        sticky = bool(folder.mode & stat.S_ISVTX)
        # Up the path a sticky world-writable dir (/tmp) is safe: others cannot rename or
        # remove the entries we own in it. The page's own directory must not be writable at
        # all: others could add pages beside it.
        if (index == 0 or not sticky) and (problem := _writable_problem(what, folder)):
            return problem
    return None


def _chain(directory: str) -> list[Owned]:
    found: list[Owned] = []
    current = directory
    while True:
        st = os.lstat(current)
        found.append(Owned(current, st.st_uid, st.st_mode))
        parent = os.path.dirname(current)
        if parent == current:
            return found
        current = parent


def read_trusted(path: Path) -> str:
    """The text of a runbook that passes `judge`; UntrustedRunbook with the reason otherwise."""
    directory = os.path.realpath(path.parent)
    real = os.path.join(directory, path.name)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(real):
            raise UntrustedRunbook(f"runbook {real} is a symlink, not a regular file") from None
        raise UntrustedRunbook(f"cannot open runbook {real}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        reason = judge(Owned(real, st.st_uid, st.st_mode), _chain(directory), os.geteuid())
        if reason:
            raise UntrustedRunbook(reason)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read()
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")
