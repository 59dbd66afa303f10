"""The bundle archive: a `.tar.gz` written by a worker thread while the caller redacts.

Every member passes through one `Redactor` (the manifest and `report.md` too). A tar header
needs the member's size before its data, and redaction changes sizes, so a streamed member is
redacted into an anonymous spool file in the output dir (1 MiB at a time) and handed to the
worker, which copies it into the archive while the next one is redacted. Compression runs in
`gzip -6` (what `tar czf` uses), a process of its own on another core; in-process zlib when
there is no gzip. At most `QUEUE_DEPTH` spools wait, so memory and scratch
disk stay bounded whatever the log sizes. The archive is created 0600 under a hidden partial
name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import os
import queue
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from chimera_ops.filemodes import open_private
from chimera_ops.ops.bundle.scrub import StreamScrubber
from chimera_ops.redact import Redactor

QUEUE_DEPTH = 2
COMPRESS_LEVEL = 6  # gzip's default, what `tar czf` uses
COPY_BUFFER = 1 << 20
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


@dataclass
class Member:
    """One file of the bundle, as the manifest lists it."""

    path: str
    size: int
    sha256: str
    source: str
    tracebacks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's entry."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "source": self.source}


class _Sink:
    """Where the uncompressed tar stream goes: `gzip -6` (a process of its own) or zlib."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._proc: subprocess.Popen[bytes] | None = None
        self._zlib: gzip.GzipFile | None = None
        exe = shutil.which("gzip")
        if exe is not None:
            # The compressor `tar czf` runs, at its level, on another core: never the GIL's.
            self._proc = subprocess.Popen(
                [exe, f"-{COMPRESS_LEVEL}", "-c", "-n"],
                stdin=subprocess.PIPE,
                stdout=raw,
                stderr=subprocess.PIPE,
            )
            assert self._proc.stdin is not None
            self._fd = self._proc.stdin.fileno()
            with contextlib.suppress(OSError):  # a deep pipe: gzip never waits on a GIL switch
                fcntl.fcntl(self._fd, F_SETPIPE_SZ, PIPE_SIZE)
        else:
            self._zlib = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=COMPRESS_LEVEL)

    def write(self, data: bytes) -> None:
        """Append bytes."""
        if self._zlib is not None:
            self._zlib.write(data)
            return
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def copy(self, source: IO[bytes], size: int) -> None:
        """Append `size` bytes of `source` (from its start): sendfile(2), no Python in between."""
        if self._zlib is not None:
            source.seek(0)
            shutil.copyfileobj(source, self._zlib, COPY_BUFFER)
            return
        if isinstance(source, io.BytesIO):  # a small member, in memory
            self.write(source.getvalue())
            return
        offset = 0
        while offset < size:
            sent = os.sendfile(self._fd, source.fileno(), offset, size - offset)
            if sent == 0:
                raise OSError(f"the spool ended at {offset} of {size} bytes")
            offset += sent

    def close(self) -> None:
        """Finish compression; raise if gzip failed."""
        if self._zlib is not None:
            self._zlib.close()
            return
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.close()
        assert self._proc.stderr is not None
        err = self._proc.stderr.read()
        if self._proc.wait() != 0:
            raise OSError(f"gzip exited {self._proc.returncode}: {err.decode(errors='replace')}")

    def kill(self) -> None:
        """Abandon (abort)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()


class BundleWriter:
    """Members in, one compressed archive out; `close()` renames it into place."""

    def __init__(self, final_path: Path, root: str, redactor: Redactor) -> None:
        self.final_path = final_path
        self.root = root
        self.redactor = redactor
        self.members: list[Member] = []
        self._partial = final_path.with_name(f".{final_path.name}.partial")
        self._raw = os.fdopen(
            open_private(self._partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb"
        )
        self._sink = _Sink(self._raw)
        self._offset = 0
        self._queue: queue.Queue[tuple[tarfile.TarInfo, IO[bytes]] | None] = queue.Queue(
            QUEUE_DEPTH
        )
        self._error: BaseException | None = None
        self._worker = threading.Thread(target=self._run, name="bundle-writer", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            info, data = item
            try:
                if self._error is None:
                    self._append(info, data)
            except BaseException as exc:  # noqa: BLE001 - reported by close()
                self._error = exc
            finally:
                data.close()

    def _append(self, info: tarfile.TarInfo, data: IO[bytes]) -> None:
        """One member: its header, its bytes, the padding to a whole block."""
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self._sink.write(header)
        self._sink.copy(data, info.size)
        padding = -info.size % tarfile.BLOCKSIZE
        if padding:
            self._sink.write(tarfile.NUL * padding)
        self._offset += len(header) + info.size + padding

    def _info(self, path: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(f"{self.root}/{path}")
        info.size = size
        info.mode = 0o600
        info.mtime = int(time.time())
        return info

    def _put(self, info: tarfile.TarInfo, data: IO[bytes]) -> None:
        if self._error is not None:
            raise OSError(f"writing the bundle failed: {self._error}")
        self._queue.put((info, data))

    def add_text(self, path: str, text: str | bytes, source: str) -> Member:
        """A small member, redacted whole."""
        raw = text.encode(errors="surrogateescape") if isinstance(text, str) else text
        scrubber = StreamScrubber(self.redactor)
        data = scrubber.feed(raw) + scrubber.flush()
        member = Member(path, len(data), hashlib.sha256(data).hexdigest(), source)
        member.tracebacks = list(scrubber.tracebacks.found)
        self.members.append(member)
        self._put(self._info(path, len(data)), io.BytesIO(data))
        return member

    def add_stream(
        self,
        path: str,
        chunks: Iterable[bytes],
        source: str,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Member:
        """A member of any size: redacted chunk by chunk into a spool, then queued."""
        spool = tempfile.TemporaryFile(dir=self.final_path.parent)  # noqa: SIM115 - worker closes
        try:
            scrubber = StreamScrubber(self.redactor)
            digest = hashlib.sha256()
            for chunk in chunks:
                out = scrubber.feed(chunk)
                spool.write(out)
                digest.update(out)
                if on_bytes is not None:
                    on_bytes(len(chunk))
            out = scrubber.flush()
            spool.write(out)
            digest.update(out)
            size = spool.tell()
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        member = Member(path, size, digest.hexdigest(), source, list(scrubber.tracebacks.found))
        self.members.append(member)
        self._put(self._info(path, size), spool)
        return member

    def close(self, last: Callable[[], tuple[str, str]]) -> Path:
        """Write the member `last()` returns (path, text: the manifest) after every other one
        is in, finish the archive, fsync and rename it into place."""
        self._queue.put(None)
        self._worker.join()
        if self._error is not None:
            self.abort()
            raise OSError(f"writing the bundle failed: {self._error}")
        path, text = last()
        data = self.redactor.redact(text).encode()
        self._append(self._info(path, len(data)), io.BytesIO(data))
        end = tarfile.NUL * (2 * tarfile.BLOCKSIZE)  # the end-of-archive blocks, then a record
        end += tarfile.NUL * (-(self._offset + len(end)) % tarfile.RECORDSIZE)
        self._sink.write(end)
        self._sink.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self._partial, self.final_path)
        return self.final_path

    def abort(self) -> None:
        """Stop and remove the partial archive (nothing half-written is left behind)."""
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join(timeout=30)
        self._sink.kill()
        with contextlib.suppress(Exception):  # already failing; the file goes anyway
            self._raw.close()
        self._partial.unlink(missing_ok=True)
