"""The on-disk shape of backup sets: ids, the manifest, hashing while writing, listing.

A directory is a set only once its `manifest.json` exists: the set is written under
`.tmp-<id>/`, every file fsynced, the manifest written last, then the directory renamed. A
half-written set (the backup was killed, the disk filled up) therefore never looks like one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import psutil

MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
WRITER = ".writer"  # in a set being written: pid and create time of the writer
READING_PREFIX = ".reading-"  # in a set a restore is reading: one file per reader pid
FORMAT = 1
CHUNK = 1024 * 1024


class BackupError(Exception):
    """A backup step failed; the message says what and what to do next."""


class UnknownSet(BackupError):
    """No set with that id; `known` lists the ids that exist."""

    def __init__(self, ref: str, known: list[str]) -> None:
        self.ref = ref
        self.known = known
        listing = ", ".join(known) if known else "(no backup sets yet)"
        super().__init__(f"no backup set {ref!r}; known sets: {listing}")


def new_set_id(now: float) -> str:
    """`20261202T013000Z-3fa2c1`: sortable by time, unique by the random tail."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(3)


# --------------------------------------------------------------------------- writing


class HashingWriter:
    """A file written once, its sha256 and size computed from the same bytes (no second read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def close(self) -> dict[str, Any]:
        """Flush, fsync, close; the manifest entry of the file."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return {"size": self.size, "sha256": self._hash.hexdigest()}

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()


def copy_hashed(src: BinaryIO, dest: Path) -> dict[str, Any]:
    """Stream `src` into a new file `dest`; its manifest entry (size, sha256)."""
    writer = HashingWriter(dest)
    try:
        while chunk := src.read(CHUNK):
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def start_set(backup_dir: Path, set_id: str) -> Path:
    """Create `.tmp-<id>/` (0700) with its writer mark; the caller fills it."""
    tmp = backup_dir / f"{TMP_PREFIX}{set_id}"
    tmp.mkdir(mode=0o700)
    me = psutil.Process()
    (tmp / WRITER).write_text(json.dumps({"pid": me.pid, "create_time": me.create_time()}))
    return tmp


def finish_set(tmp: Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest last, fsync, rename `.tmp-<id>` to `<id>`; the set's path."""
    (tmp / WRITER).unlink(missing_ok=True)
    fd = os.open(tmp / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(manifest, out, indent=2, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    fsync_dir(tmp)
    final = tmp.with_name(tmp.name[len(TMP_PREFIX) :])
    os.rename(tmp, final)
    fsync_dir(final.parent)
    return final


def discard(path: Path) -> None:
    """Remove a partial or pruned set directory."""
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class BackupSet:
    """One complete set: its directory and its manifest."""

    id: str
    path: Path
    manifest: dict[str, Any]

    @property
    def created_at(self) -> float:
        return float(self.manifest["started_at"])

    @property
    def size(self) -> int:
        return sum(int(f["size"]) for f in self.manifest["files"].values())

    @property
    def databases(self) -> list[str]:
        return [db["name"] for db in self.manifest.get("postgres", {}).get("databases", [])]

    def file(self, name: str) -> Path:
        return self.path / name


def load_set(path: Path) -> BackupSet | None:
    """The set at `path`, or None when it is not one (no manifest, unreadable manifest)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    return BackupSet(path.name, path, manifest)


def list_sets(backup_dir: Path) -> list[BackupSet]:
    """Every complete set, newest first."""
    if not backup_dir.is_dir():
        return []
    found = []
    for entry in backup_dir.iterdir():
        if entry.is_dir() and not entry.name.startswith("."):
            loaded = load_set(entry)
            if loaded is not None:
                found.append(loaded)
    return sorted(found, key=lambda s: (s.created_at, s.id), reverse=True)


def find_set(backup_dir: Path, ref: str) -> BackupSet:
    """A set by id (or unique id prefix), or `latest`; UnknownSet lists the known ids."""
    sets = list_sets(backup_dir)
    if ref == "latest" and sets:
        return sets[0]
    matches = [s for s in sets if s.id == ref] or [s for s in sets if s.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    raise UnknownSet(ref, [s.id for s in sets])


def _writer_alive(mark: Path) -> bool:
    try:
        info = json.loads(mark.read_text())
        proc = psutil.Process(int(info["pid"]))
        return abs(proc.create_time() - float(info["create_time"])) < 1.0
    except (OSError, ValueError, KeyError, psutil.Error):
        return False


def garbage(backup_dir: Path) -> list[Path]:
    """Directories that are not sets and that no live backup is writing: removable."""
    if not backup_dir.is_dir():
        return []
    out = []
    for entry in backup_dir.iterdir():
        if not entry.is_dir():
            continue
        if entry.name.startswith(TMP_PREFIX):
            if not _writer_alive(entry / WRITER):
                out.append(entry)
        elif not entry.name.startswith(".") and load_set(entry) is None:
            out.append(entry)
    return sorted(out)


@contextlib.contextmanager
def reading(backup_set: BackupSet) -> Iterator[None]:
    """Mark the set as being read (a restore): retention never deletes it meanwhile."""
    me = psutil.Process()
    mark = backup_set.path / f"{READING_PREFIX}{me.pid}"
    mark.write_text(json.dumps({"pid": me.pid, "create_time": me.create_time()}))
    try:
        yield
    finally:
        mark.unlink(missing_ok=True)


def being_read(backup_set: BackupSet) -> bool:
    """True while a live process reads the set."""
    return any(_writer_alive(p) for p in backup_set.path.glob(f"{READING_PREFIX}*"))


def check_files(backup_set: BackupSet) -> list[str]:
    """Every file against its manifest size and sha256; the problems found (empty: all good)."""
    problems = []
    for name, entry in sorted(backup_set.manifest["files"].items()):
        path = backup_set.file(name)
        digest = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as src:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            problems.append(f"{name}: cannot read ({exc.strerror or exc})")
            continue
        if size != entry["size"]:
            problems.append(f"{name}: size {size} bytes, manifest says {entry['size']}")
        elif digest.hexdigest() != entry["sha256"]:
            problems.append(f"{name}: sha256 mismatch (the file changed after the backup)")
    return problems
