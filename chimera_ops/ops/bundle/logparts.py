"""Log sources of components: process log files across rotations, and container logs.

`plan_process_logs` opens every file of a component's log (newest first) and decides what to
keep (`sources.plan_slice`); the file stays open until it is read, so a rotation meanwhile
changes nothing that is read (the manifest says it happened), and a file that vanished before it
could be opened is a manifest line. Container logs come from the engine (`docker logs --since
--timestamps`), through a raw spool that keeps only their newest `cap` bytes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from chimera_ops.errors import describe_exception
from chimera_ops.ops.bundle.scrub import CHUNK
from chimera_ops.ops.bundle.sources import LogFile, Slice, iter_range, plan_slice, rotated_files


@dataclass
class LogPart:
    """One file (or container log) to copy into the bundle, or why it is not copied."""

    component: str
    source: str  # a path, or `docker logs <container>`
    member: str
    status: str = "planned"  # planned | read | skipped | vanished | error
    note: str | None = None
    size: int = 0
    slice: Slice | None = None
    handle: IO[bytes] | None = field(default=None, repr=False)
    inode: int | None = None

    def chunks(self) -> Iterator[bytes]:
        """The kept bytes, chunk by chunk."""
        assert self.handle is not None and self.slice is not None
        yield from iter_range(self.handle, self.slice.start, self.slice.end, CHUNK)

    def close(self) -> None:
        """Close the open file (or remove the container spool)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's entry."""
        out: dict[str, Any] = {
            "component": self.component,
            "source": self.source,
            "member": self.member if self.status == "read" else None,
            "status": self.status,
            "source_bytes": self.size,
        }
        if self.slice is not None:
            out.update(
                kept_bytes=self.slice.kept,
                before_since_bytes=self.slice.since_cut,
                truncated_bytes=self.slice.cap_cut,
            )
        if self.note:
            out["note"] = self.note
        return out


def plan_process_logs(
    component: str, log_dir: Path, since_iso: str | None, cap: int
) -> list[LogPart]:
    """Every file of a component's log, opened, with its slice (oldest file first)."""
    parts = []
    for log in reversed(rotated_files(log_dir, component)):
        parts.append(plan_file(component, log, since_iso, cap))
    return parts


def plan_file(component: str, log: LogFile, since_iso: str | None, cap: int) -> LogPart:
    """Open one file and decide its slice; a vanished file is said, not raised."""
    part = LogPart(component, str(log.path), f"logs/{component}/{log.path.name}", size=log.size)
    try:
        handle = open(log.path, "rb")  # noqa: SIM115 - closed after it is read
    except FileNotFoundError:
        part.status, part.note = "vanished", "the file vanished before it was read (rotated)"
        return part
    except OSError as exc:
        part.status, part.note = "error", describe_exception(exc)
        return part
    st = os.fstat(handle.fileno())
    part.size, part.inode = st.st_size, st.st_ino
    if st.st_ino != log.inode:
        part.note = "rotated between listing and reading: the file now at this name was read"
    part.slice = plan_slice(handle, st.st_size, since_iso, cap)
    if part.slice.kept == 0:
        handle.close()
        part.status = "skipped"
        part.note = "no line inside --since" if st.st_size else "empty"
        return part
    part.handle = handle
    return part


def after_read(part: LogPart) -> None:
    """Mark a part read, noting a rotation of its name while it was read."""
    part.status = "read"
    try:
        now = os.stat(part.source).st_ino
    except FileNotFoundError:
        now = None
    if part.inode is not None and now != part.inode and part.note is None:
        part.note = "rotated while it was read: the bytes read are the file as it was opened"
    part.close()


def container_ident(api: Any, config: Any) -> str:
    """The container of a docker component: its name, or the compose service's container."""
    if config.container is not None:
        return str(config.container)
    labels = [
        f"com.docker.compose.project={config.compose.project}",
        f"com.docker.compose.service={config.compose.service}",
    ]
    found = api.containers(all=True, filters={"label": labels})
    if not found:
        raise LookupError(f"no container for {config.container_ref}")
    return str(found[0]["Id"])


def plan_docker_log(
    component: str, config: Any, host: str, since_ts: float | None, cap: int
) -> LogPart:
    """`docker logs --since --timestamps` of a component's container, newest `cap` bytes."""
    part = LogPart(component, f"docker logs {config.container_ref}", f"logs/{component}/docker.log")
    try:
        import docker

        client = docker.DockerClient(base_url=host, timeout=20)
        try:
            ident = container_ident(client.api, config)
            part.source = f"docker logs {ident[:12]} ({config.container_ref})"
            stream = client.api.logs(
                ident,
                stdout=True,
                stderr=True,
                timestamps=True,
                stream=True,
                follow=False,  # the SDK follows a stream by default
                since=int(since_ts) if since_ts else None,
            )
            spool, total = _spool_tail(stream, cap)
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - the engine or the container is gone
        part.status, part.note = "error", describe_exception(exc)
        return part
    size = spool.seek(0, os.SEEK_END)
    part.size = total
    start = 0
    if size > cap:
        spool.seek(size - cap - 1)
        spool.readline()
        start = spool.tell()
    part.slice = Slice(start, size, 0, total - (size - start))
    if part.slice.kept == 0:
        spool.close()
        part.status, part.note = "skipped", "no line inside --since"
        return part
    part.handle = spool
    return part


def _spool_tail(stream: Any, cap: int) -> tuple[IO[bytes], int]:
    """Write a stream into an anonymous file, keeping at most about 2 x cap of its end."""
    spool: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - returned
    total = 0
    for chunk in stream:
        spool.write(chunk)
        total += len(chunk)
        if spool.tell() > 2 * cap + CHUNK:
            spool.seek(-cap - CHUNK, os.SEEK_END)
            newer: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - returned
            shutil.copyfileobj(spool, newer, CHUNK)
            with contextlib.suppress(OSError):
                spool.close()
            spool = newer
    return spool, total
