"""The simulated disk: one directory per node in the in-memory file system, segment logs through
the storage layer's file interface with the lazy power-loss model.

Each node's data lives under `/sim/<node>` in a `MemoryFileSystem` (`odradek.sim.memfs`). Index,
checkpoint, snapshot and metadata files are durable as soon as they are written (they are
written whole and renamed, and recovery treats them as hints), as
`odradek.storage.lazy_files` documents for its lazy mode.

Segment `.log` bytes go through `SimFiles`, a `SegmentFiles` with the lazy model: a write lands
in a pending tail in memory and reaches the file's inode only at `fdatasync`. Then:
- `crash(power_loss=False)`: a process crash (`kill -9`): the OS keeps what was written, so
  every pending tail is handed over;
- `crash(power_loss=True)`: a power cut: pending tails are lost, except that the last write of
  a file may be torn: a seeded prefix of its pending bytes reaches the disk.

After a crash the instance is dead (every call raises `OSError`), as the crashed process's
descriptors are; the restarted broker opens the same directory through a new `SimFiles`.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from odradek.sim.memfs import MemoryFileSystem

BytesLike: TypeAlias = bytes | bytearray | memoryview


@dataclass(slots=True)
class _SimFile:
    """An open segment: its durable bytes (the inode's) and its unsynced tail."""

    durable: bytearray
    pending: bytearray = field(default_factory=bytearray)


class SimFiles:
    """`odradek.storage.lazy_files.SegmentFiles` for one incarnation of one simulated node."""

    mode = "lazy"

    def __init__(self, fs: MemoryFileSystem, rng: random.Random) -> None:
        self._fs = fs
        self._rng = rng
        self._files: dict[int, _SimFile] = {}
        self.dead = False
        self.fdatasyncs = 0
        # The chance that a write fails with EIO before any byte lands (the disk-error fault).
        self.failing_writes = 0.0

    def _file(self, fd: int) -> _SimFile:
        if self.dead:
            raise OSError(errno.EIO, "the simulated process crashed")
        return self._files[fd]

    def open(self, path: Path, flags: int, mode: int = 0o777) -> int:
        if self.dead:
            raise OSError(errno.EIO, "the simulated process crashed")
        fd = self._fs.open(str(path), flags)
        self._files[fd] = _SimFile(self._fs.descriptor(fd).inode.data)
        return fd

    def close(self, fd: int) -> None:
        file = self._files.pop(fd, None)
        if file is not None and not self.dead:
            self._hand_over(file, len(file.pending))
        self._fs.close(fd)

    def _maybe_fail(self) -> None:
        if self.failing_writes and self._rng.random() < self.failing_writes:
            raise OSError(errno.EIO, "simulated disk write error")

    def write(self, fd: int, data: BytesLike, /) -> int:
        file = self._file(fd)
        self._maybe_fail()
        file.pending += data
        return len(data)

    def writev(self, fd: int, buffers: Sequence[BytesLike], /) -> int:
        file = self._file(fd)
        self._maybe_fail()
        written = 0
        for buffer in buffers:
            file.pending += buffer
            written += len(buffer)
        return written

    def pread(self, fd: int, length: int, offset: int, /) -> bytes:
        file = self._file(fd)
        durable = file.durable
        if offset + length <= len(durable):
            return bytes(durable[offset : offset + length])
        if offset >= len(durable):
            start = offset - len(durable)
            return bytes(file.pending[start : start + length])
        return bytes(durable[offset:]) + file.pending[: length - (len(durable) - offset)]

    def ftruncate(self, fd: int, length: int, /) -> None:
        file = self._file(fd)
        if length >= len(file.durable):
            keep = length - len(file.durable)
            if keep <= len(file.pending):
                del file.pending[keep:]
            else:
                file.pending += bytes(keep - len(file.pending))
            return
        file.pending.clear()
        del file.durable[length:]

    def fdatasync(self, fd: int, /) -> None:
        file = self._file(fd)
        self.fdatasyncs += 1
        self._hand_over(file, len(file.pending))

    def size(self, fd: int) -> int:
        file = self._file(fd)
        return len(file.durable) + len(file.pending)

    def unsynced_bytes(self) -> int:
        return sum(len(file.pending) for file in self._files.values())

    def crash(self, power_loss: bool) -> int:
        """End this incarnation: hand pending tails to the disk (process crash) or drop them,
        tearing each file's last write at a seeded point (power loss). Returns bytes lost."""
        lost = 0
        for fd, file in self._files.items():
            keep = len(file.pending)
            if power_loss and file.pending:
                keep = self._rng.randrange(len(file.pending) + 1) if self._rng.random() < 0.5 else 0
            lost += len(file.pending) - keep
            self._hand_over(file, keep)
            self._fs.close(fd)
        self._files = {}
        self.dead = True
        return lost

    @staticmethod
    def _hand_over(file: _SimFile, count: int) -> None:
        """Write the first `count` pending bytes to the file's inode; drop the rest."""
        if count:
            file.durable += file.pending[:count]
        file.pending = bytearray()
