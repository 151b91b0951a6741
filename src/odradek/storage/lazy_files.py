"""The file interface segment logs are written through: the OS itself, or a lazy power-loss model.

Every byte of a segment's `.log` file goes through a `SegmentFiles` object: open, write, writev,
pread, ftruncate, fdatasync, size and close of the segment's descriptor.

- `"os"` (`OS_FILES`, the default): the `os` functions themselves, so the fast path costs one
  attribute lookup per call. A `kill -9` loses nothing (the page cache survives it).
- `"lazy"` (`LazyFiles`): the model of a power cut that Jepsen's LazyFS gives a real file system.
  Writes go to an in-memory pending tail per file and reach the OS only when the file is
  fdatasync'ed (then the fdatasync runs as usual). Reads see the bytes the OS holds followed by
  the pending tail, so the broker serves unsynced data exactly as before (acks=1 data stays
  readable, as from the page cache); `ftruncate` drops pending bytes beyond the new size. A
  `kill -9` of the process therefore loses exactly the log bytes that were not fsynced.

What the lazy mode covers: the segment `.log` files, the bytes that carry the records. Index,
time index, transaction index, checkpoint, producer-state snapshot and topic metadata files,
and directory entries (creations, renames, deletions), go straight to the OS as in `"os"` mode,
so a kill keeps them even when they were not fsynced: recovery already treats them as hints
(checkpoints never claim more than was fsynced, snapshots and index entries past the recovered
log end are dropped or rebuilt). The files compaction writes (`.cleaned`) are fsynced before
they are used, so they are the same in both modes. Closing a file hands its pending tail to the
OS without syncing it (every caller either flushed first or is deleting the file).

Thread-safety: appends run on the broker's event loop while `PartitionLog.flush` fdatasyncs on
another thread, so each lazy file's pending tail is guarded by its own lock; the lock is never
held across the fdatasync itself.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeAlias

__all__ = [
    "OS_FILES",
    "STORAGE_MODES",
    "LazyFiles",
    "OsFiles",
    "SegmentFiles",
    "files_for_mode",
]

STORAGE_MODES = ("os", "lazy")

BytesLike: TypeAlias = bytes | bytearray | memoryview


class SegmentFiles(Protocol):
    """The calls storage makes on a segment log's descriptor (the `os` functions' shapes)."""

    @property
    def mode(self) -> str: ...

    def open(self, path: Path, flags: int, mode: int = 0o777) -> int: ...

    def close(self, fd: int) -> None: ...

    def write(self, fd: int, data: BytesLike, /) -> int: ...

    def writev(self, fd: int, buffers: Sequence[BytesLike], /) -> int: ...

    def pread(self, fd: int, length: int, offset: int, /) -> bytes: ...

    def ftruncate(self, fd: int, length: int, /) -> None: ...

    def fdatasync(self, fd: int, /) -> None: ...

    def size(self, fd: int) -> int: ...


def _fstat_size(fd: int) -> int:
    return os.fstat(fd).st_size


class OsFiles:
    """Direct `os` calls: the class attributes are the `os` functions themselves."""

    mode = "os"
    open = staticmethod(os.open)
    close = staticmethod(os.close)
    write = staticmethod(os.write)
    writev = staticmethod(os.writev)
    pread = staticmethod(os.pread)
    ftruncate = staticmethod(os.ftruncate)
    fdatasync = staticmethod(os.fdatasync)
    size = staticmethod(_fstat_size)


OS_FILES = OsFiles()


@dataclass(slots=True)
class _LazyFile:
    """One open file: how many bytes the OS holds, and the unsynced tail after them."""

    os_size: int
    pending: bytearray = field(default_factory=bytearray)
    lock: threading.Lock = field(default_factory=threading.Lock)


class LazyFiles:
    """Unsynced bytes live only in this process: a `kill -9` loses them, as a power cut would.

    One instance per `LogManager` (in the broker: per process). `power_cut` simulates the
    crash in-process, for tests: every pending tail is dropped and every file closed.
    """

    mode = "lazy"

    def __init__(self) -> None:
        self._files: dict[int, _LazyFile] = {}
        self._lock = threading.Lock()

    def open(self, path: Path, flags: int, mode: int = 0o777) -> int:
        fd = os.open(path, flags, mode)
        with self._lock:
            self._files[fd] = _LazyFile(os.fstat(fd).st_size)
        return fd

    def close(self, fd: int) -> None:
        with self._lock:
            file = self._files.pop(fd, None)
        try:
            if file is not None:
                with file.lock:
                    self._hand_over(fd, file)
        finally:
            os.close(fd)

    def write(self, fd: int, data: BytesLike, /) -> int:
        file = self._files[fd]
        with memoryview(data) as view, file.lock:
            file.pending += view
            return view.nbytes

    def writev(self, fd: int, buffers: Sequence[BytesLike], /) -> int:
        file = self._files[fd]
        written = 0
        with file.lock:
            pending = file.pending
            for buffer in buffers:
                with memoryview(buffer) as view:
                    pending += view
                    written += view.nbytes
        return written

    def pread(self, fd: int, length: int, offset: int, /) -> bytes:
        file = self._files[fd]
        with file.lock:
            os_size = file.os_size
            if offset + length <= os_size:
                return os.pread(fd, length, offset)
            if offset >= os_size:
                start = offset - os_size
                return bytes(file.pending[start : start + length])
            head = os.pread(fd, os_size - offset, offset)
            if len(head) < os_size - offset:  # the file shrank under us: report what is there
                return head
            return head + file.pending[: length - len(head)]

    def ftruncate(self, fd: int, length: int, /) -> None:
        file = self._files[fd]
        with file.lock:
            if length >= file.os_size:
                keep = length - file.os_size
                if keep <= len(file.pending):
                    del file.pending[keep:]
                else:
                    file.pending += bytes(keep - len(file.pending))
                return
            file.pending.clear()
            os.ftruncate(fd, length)
            file.os_size = length

    def fdatasync(self, fd: int, /) -> None:
        file = self._files.get(fd)
        if file is not None:
            with file.lock:
                self._hand_over(fd, file)
        os.fdatasync(fd)

    def size(self, fd: int) -> int:
        file = self._files[fd]
        with file.lock:
            return file.os_size + len(file.pending)

    def unsynced_bytes(self) -> int:
        """How many bytes a power cut now would lose, over every open file."""
        with self._lock:
            files = list(self._files.values())
        total = 0
        for file in files:
            with file.lock:
                total += len(file.pending)
        return total

    def power_cut(self) -> None:
        """Drop every unsynced byte and close every file, as a crash would (for tests).

        The logs that used these files are unusable afterwards; open them again.
        """
        with self._lock:
            files = self._files
            self._files = {}
        for fd, file in files.items():
            with file.lock:
                file.pending.clear()
            os.close(fd)

    @staticmethod
    def _hand_over(fd: int, file: _LazyFile) -> None:
        """Write the pending tail to the OS (the caller holds `file.lock`)."""
        pending = file.pending
        if not pending:
            return
        with memoryview(pending) as view:
            written = 0
            while written < len(view):
                written += os.pwrite(fd, view[written:], file.os_size + written)
        file.os_size += len(pending)
        file.pending = bytearray()


def files_for_mode(mode: str) -> SegmentFiles:
    """The file layer for `odradek.storage.mode`: the shared `OS_FILES`, or a new `LazyFiles`."""
    if mode == "os":
        return OS_FILES
    if mode == "lazy":
        return LazyFiles()
    raise ValueError(f"unknown storage mode {mode!r}: choose one of {', '.join(STORAGE_MODES)}")
