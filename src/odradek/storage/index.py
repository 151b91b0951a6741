"""OffsetIndex, TimeIndex and TransactionIndex: the per-segment lookups, kept in memory.

Both live in `array`s while the segment is open and are written to disk in Kafka's layout when
a segment rolls or the log closes (`.index`: relative offset i32 + position i32; `.timeindex`:
timestamp i64 + relative offset i32, all big-endian). The files are never fsynced on the
produce path: an index is derived data, and a file that fails `load`'s sanity checks is rebuilt
from the log.
"""

from __future__ import annotations

import os
import struct
from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import NamedTuple

from odradek.storage._files import write_file_atomically

OFFSET_INDEX_ENTRY = struct.Struct(">ii")
TIME_INDEX_ENTRY = struct.Struct(">qi")


def fsync_file(path: Path) -> None:
    """fsync a file that was written through another descriptor."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OffsetIndex:
    """Sparse map from a batch's base offset to its byte position in the segment's log.

    An entry is added for the first batch after every `index.interval.bytes` of log, so a
    lookup lands at most one interval (plus one batch) before the batch wanted.
    """

    __slots__ = ("base_offset", "offsets", "path", "positions")

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.offsets = array("q")
        self.positions = array("q")

    def __len__(self) -> int:
        return len(self.offsets)

    def append(self, offset: int, position: int) -> None:
        self.offsets.append(offset)
        self.positions.append(position)

    def lookup(self, target_offset: int) -> tuple[int, int]:
        """(offset, position) of the last entry at or below `target_offset`, else the start."""
        entry = bisect_right(self.offsets, target_offset) - 1
        if entry < 0:
            return self.base_offset, 0
        return self.offsets[entry], self.positions[entry]

    def last_entry_before(self, position_limit: int, offset_limit: int) -> tuple[int, int] | None:
        """The last entry with position <= `position_limit` and offset < `offset_limit`."""
        entry = min(
            bisect_right(self.positions, position_limit), bisect_left(self.offsets, offset_limit)
        )
        if entry == 0:
            return None
        return self.offsets[entry - 1], self.positions[entry - 1]

    def clear(self) -> None:
        del self.offsets[:]
        del self.positions[:]

    def write(self) -> None:
        base = self.base_offset
        write_file_atomically(
            self.path,
            b"".join(
                OFFSET_INDEX_ENTRY.pack(offset - base, position)
                for offset, position in zip(self.offsets, self.positions, strict=True)
            ),
            durable=False,
        )

    def load(self, log_size: int) -> bool:
        """Read the file; False (and empty) when it is missing or fails the sanity checks."""
        self.clear()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return False
        if len(data) % OFFSET_INDEX_ENTRY.size:
            return False
        previous_offset = self.base_offset - 1
        previous_position = -1
        for relative_offset, position in OFFSET_INDEX_ENTRY.iter_unpack(data):
            offset = self.base_offset + relative_offset
            if offset <= previous_offset or position <= previous_position or position >= log_size:
                self.clear()
                return False
            self.offsets.append(offset)
            self.positions.append(position)
            previous_offset, previous_position = offset, position
        return True


class TimeIndex:
    """Sparse map from a segment's max timestamp so far to the offset where it was reached.

    Timestamps strictly increase from entry to entry, so a batch with a timestamp older than
    one already indexed (CreateTime from a slow producer) adds nothing.
    """

    __slots__ = ("base_offset", "offsets", "path", "timestamps")

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.timestamps = array("q")
        self.offsets = array("q")

    def __len__(self) -> int:
        return len(self.timestamps)

    def maybe_append(self, timestamp: int, offset: int) -> None:
        if timestamp < 0:
            return
        if self.timestamps and timestamp <= self.timestamps[-1]:
            return
        self.timestamps.append(timestamp)
        self.offsets.append(offset)

    def last_entry(self) -> tuple[int, int] | None:
        if not self.timestamps:
            return None
        return self.timestamps[-1], self.offsets[-1]

    def lookup(self, target_timestamp: int) -> int:
        """Offset of the last entry whose timestamp is below the target, else the base offset.

        Every batch before that offset has a max timestamp below the target too.
        """
        entry = bisect_left(self.timestamps, target_timestamp) - 1
        if entry < 0:
            return self.base_offset
        return self.offsets[entry]

    def clear(self) -> None:
        del self.timestamps[:]
        del self.offsets[:]

    def write(self) -> None:
        base = self.base_offset
        write_file_atomically(
            self.path,
            b"".join(
                TIME_INDEX_ENTRY.pack(timestamp, offset - base)
                for timestamp, offset in zip(self.timestamps, self.offsets, strict=True)
            ),
            durable=False,
        )

    def load(self, next_offset_bound: int) -> bool:
        """Read the file; False (and empty) when it is missing or fails the sanity checks."""
        self.clear()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return False
        if len(data) % TIME_INDEX_ENTRY.size:
            return False
        previous_timestamp = -1
        previous_offset = self.base_offset - 1
        for timestamp, relative_offset in TIME_INDEX_ENTRY.iter_unpack(data):
            offset = self.base_offset + relative_offset
            if (
                timestamp <= previous_timestamp
                or offset < previous_offset
                or offset >= next_offset_bound
            ):
                self.clear()
                return False
            self.timestamps.append(timestamp)
            self.offsets.append(offset)
            previous_timestamp, previous_offset = timestamp, offset
        return True


# Kafka's .txnindex entry: version i16, producer id i64, first offset i64, last offset i64,
# last stable offset i64 (34 bytes, big-endian).
TXN_INDEX_ENTRY = struct.Struct(">hqqqq")
_TXN_INDEX_VERSION = 0


class AbortedTxn(NamedTuple):
    """An aborted transaction: its data spans [first_offset, last_offset] (the ABORT marker).

    `last_stable_offset` is the partition's LSO right after the marker: a reader of aborted
    ranges can stop at the first entry whose LSO reaches its upper bound.
    """

    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int


class TransactionIndex:
    """The aborted transactions whose ABORT marker lies in one segment, in marker order.

    Kept in memory; the file (Kafka's `.txnindex` layout) is written when the segment rolls
    and on close. Entries at or after the producer-state snapshot recovery starts from are
    rebuilt by replaying the log, so an unflushed tail of this file never matters.
    """

    __slots__ = ("entries", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[AbortedTxn] = []

    def __len__(self) -> int:
        return len(self.entries)

    def append(self, entry: AbortedTxn) -> None:
        self.entries.append(entry)

    def truncate_from(self, offset: int) -> None:
        """Forget entries whose marker is at or after `offset` (recovery replays them)."""
        self.entries = [entry for entry in self.entries if entry.last_offset < offset]

    def collect(self, fetch_offset: int, upper_bound_offset: int) -> tuple[list[AbortedTxn], bool]:
        """Entries overlapping [fetch_offset, upper_bound_offset); True when no later segment
        can hold more (Kafka's TransactionIndex.collectAbortedTxns)."""
        found = []
        for entry in self.entries:
            if entry.last_offset >= fetch_offset and entry.first_offset < upper_bound_offset:
                found.append(entry)
            if entry.last_stable_offset >= upper_bound_offset:
                return found, True
        return found, False

    def write(self, durable: bool) -> None:
        """Persist the entries; with none, make sure no stale file is left behind."""
        if not self.entries:
            self.path.unlink(missing_ok=True)
            return
        write_file_atomically(
            self.path,
            b"".join(TXN_INDEX_ENTRY.pack(_TXN_INDEX_VERSION, *entry) for entry in self.entries),
            durable=durable,
        )

    def load(self) -> None:
        """Read the file; a torn last entry or an unknown version ends the list there."""
        self.entries = []
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        usable = len(data) - len(data) % TXN_INDEX_ENTRY.size
        for version, *fields in TXN_INDEX_ENTRY.iter_unpack(data[:usable]):
            if version != _TXN_INDEX_VERSION:
                break
            self.entries.append(AbortedTxn(*fields))
