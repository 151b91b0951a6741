"""The leader-epoch cache of one partition and its `leader-epoch-checkpoint` file.

Kafka's `LeaderEpochFileCache` and `LeaderEpochCheckpointFile` (KIP-101, KIP-279): an ordered
list of `(epoch, start offset)` entries, one per leader epoch that wrote to the log, where the
start offset is the offset of the first batch written in that epoch. Leaders answer
OffsetForLeaderEpoch (and the diverging-epoch check of Fetch v12+) from it with
`end_offset_for`; followers use it to find where their log diverges from the leader's.

Rules, as Kafka's:
- epochs and start offsets grow together; `assign` of an entry that breaks that order first
  removes every later entry whose epoch is not smaller or whose start offset is not smaller
  (a new leader that starts at a lower offset cuts the entries a former leader left behind);
- `truncate_from_end(offset)` drops the entries starting at or after `offset` (log
  truncation); `truncate_from_start(offset)` drops the entries wholly below `offset` and moves
  the start of the earliest remaining epoch up to it (log start offset moved by retention or
  DeleteRecords).

The checkpoint is Kafka's text format, so a Kafka operator reads it as they know it:
```
0            <- format version
2            <- number of entries
0 0          <- epoch, start offset
3 1042
```
`assign` writes it durably (fsync, atomic rename) before returning, as Kafka flushes an assign
synchronously. A truncation writes it atomically without fsync (Kafka flushes those
asynchronously): a crash can leave stale entries past the truncation point, so whoever loads
the log must call `truncate_from_end(log_end_offset)` and `truncate_from_start(log_start_offset)`
after loading, exactly as Kafka's LogLoader does.

Synchronous and deterministic: no clock, no threads. The checkpoint goes through a small
`LeaderEpochCheckpoint` interface so the simulator (or a test) can keep it in memory.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from odradek.storage._files import write_file_atomically
from odradek.storage.errors import StorageError

__all__ = [
    "CHECKPOINT_FILE_NAME",
    "UNDEFINED_EPOCH",
    "UNDEFINED_EPOCH_OFFSET",
    "EpochEntry",
    "LeaderEpochCheckpoint",
    "LeaderEpochCheckpointCorrupt",
    "LeaderEpochCheckpointFile",
    "LeaderEpochFileCache",
    "MemoryLeaderEpochCheckpoint",
    "decode_checkpoint",
    "encode_checkpoint",
]

CHECKPOINT_FILE_NAME = "leader-epoch-checkpoint"
CHECKPOINT_VERSION = 0
# Kafka's OffsetsForLeaderEpochResponse.UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET.
UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1


class LeaderEpochCheckpointCorrupt(StorageError):  # noqa: N818 (Kafka-style name, as errors.py)
    """A `leader-epoch-checkpoint` that is not in Kafka's format (KAFKA_STORAGE_ERROR)."""


@dataclass(frozen=True, slots=True, order=True)
class EpochEntry:
    """One leader epoch and the offset of the first batch written in it (Kafka's EpochEntry)."""

    epoch: int
    start_offset: int


def encode_checkpoint(entries: Iterable[EpochEntry]) -> bytes:
    """The checkpoint text Kafka's CheckpointFile writes: version, count, `epoch offset` lines."""
    listed = list(entries)
    lines = [str(CHECKPOINT_VERSION), str(len(listed))]
    lines.extend(f"{entry.epoch} {entry.start_offset}" for entry in listed)
    return ("\n".join(lines) + "\n").encode("ascii")


def decode_checkpoint(data: bytes, source: str = CHECKPOINT_FILE_NAME) -> list[EpochEntry]:
    """Parse Kafka's checkpoint text; an empty file (or one with only a version) holds nothing.

    Raises LeaderEpochCheckpointCorrupt on an unknown version, a malformed line or a count
    that does not match the entries, as Kafka's CheckpointReadBuffer raises an IOException.
    """
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError as error:
        raise LeaderEpochCheckpointCorrupt(f"{source}: not ASCII text") from error
    if not lines:
        return []
    version = _parse_int(lines[0], source)
    if version != CHECKPOINT_VERSION:
        raise LeaderEpochCheckpointCorrupt(
            f"{source}: unrecognised version {version}, expected {CHECKPOINT_VERSION}"
        )
    if len(lines) == 1:
        return []
    expected = _parse_int(lines[1], source)
    entries = []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) != 2:
            raise LeaderEpochCheckpointCorrupt(f"{source}: malformed line {line!r}")
        entries.append(EpochEntry(_parse_int(parts[0], source), _parse_int(parts[1], source)))
    if len(entries) != expected:
        raise LeaderEpochCheckpointCorrupt(
            f"{source}: expected {expected} entries but found {len(entries)}"
        )
    return entries


def _parse_int(text: str, source: str) -> int:
    try:
        return int(text.strip())
    except ValueError as error:
        raise LeaderEpochCheckpointCorrupt(f"{source}: malformed number {text!r}") from error


class LeaderEpochCheckpoint(Protocol):
    """Where a cache keeps its entries: a file beside the log, or memory in a simulation."""

    def read(self) -> list[EpochEntry]: ...

    def write(self, entries: Sequence[EpochEntry], durable: bool) -> None: ...


class LeaderEpochCheckpointFile:
    """`leader-epoch-checkpoint` in a partition directory, replaced atomically on each write."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_directory(cls, directory: Path) -> LeaderEpochCheckpointFile:
        """The checkpoint of the partition whose log lives in `directory`."""
        return cls(directory / CHECKPOINT_FILE_NAME)

    def read(self) -> list[EpochEntry]:
        """The stored entries; a missing file holds none. Raises LeaderEpochCheckpointCorrupt."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return decode_checkpoint(data, str(self.path.name))

    def write(self, entries: Sequence[EpochEntry], durable: bool) -> None:
        """Replace the file (temporary file, rename; with `durable`, fsyncs of file and dir)."""
        write_file_atomically(self.path, encode_checkpoint(entries), durable)


class MemoryLeaderEpochCheckpoint:
    """A checkpoint held in memory (simulation, tests); `writes` counts the durable writes."""

    def __init__(self, entries: Iterable[EpochEntry] = ()) -> None:
        self.entries: list[EpochEntry] = list(entries)
        self.writes = 0

    def read(self) -> list[EpochEntry]:
        return list(self.entries)

    def write(self, entries: Sequence[EpochEntry], durable: bool) -> None:
        self.entries = list(entries)
        if durable:
            self.writes += 1


class LeaderEpochFileCache:
    """Kafka's LeaderEpochFileCache: `(epoch, start offset)` entries, oldest first.

    `checkpoint` None keeps the entries in memory only. On construction the checkpoint's
    entries are assigned one by one, so a file with out-of-order entries loads the way Kafka
    loads it (later entries win).
    """

    def __init__(self, checkpoint: LeaderEpochCheckpoint | None = None) -> None:
        self._checkpoint = checkpoint if checkpoint is not None else MemoryLeaderEpochCheckpoint()
        # Epochs strictly increasing and start offsets strictly increasing: `_assign` removes
        # any entry that would break either order.
        self._entries: list[EpochEntry] = []
        for entry in self._checkpoint.read():
            self._assign(entry.epoch, entry.start_offset)

    # ---- updates ----------------------------------------------------------------------------

    def assign(self, epoch: int, start_offset: int, durable: bool = True) -> bool:
        """Record that `epoch` starts at `start_offset`; True when the cache changed.

        An entry for the latest epoch at the same or a later offset changes nothing (every
        batch of an epoch calls this with its base offset). Raises ValueError for a negative
        epoch or offset. A change is written to the checkpoint before returning, durably
        unless `durable` is False (for an entry the log can derive again on every open).
        """
        if self._assign(epoch, start_offset):
            self._flush(durable=durable)
            return True
        return False

    def assign_all(self, entries: Iterable[EpochEntry]) -> bool:
        """Assign several entries and write the checkpoint once; True when anything changed."""
        changed = False
        for entry in entries:
            changed |= self._assign(entry.epoch, entry.start_offset)
        if changed:
            self._flush(durable=True)
        return changed

    def _assign(self, epoch: int, start_offset: int) -> bool:
        if epoch < 0 or start_offset < 0:
            raise ValueError(f"invalid partition leader epoch entry ({epoch}, {start_offset})")
        entries = self._entries
        if entries and epoch == entries[-1].epoch and start_offset >= entries[-1].start_offset:
            return False
        # Remove the entries that would break monotonicity, newest first (Kafka's
        # maybeTruncateNonMonotonicEntries).
        while entries and (entries[-1].epoch >= epoch or entries[-1].start_offset >= start_offset):
            entries.pop()
        entries.append(EpochEntry(epoch, start_offset))
        return True

    def truncate_from_end(self, end_offset: int) -> list[EpochEntry]:
        """Remove every entry whose start offset is >= `end_offset` (the log was truncated there).

        Returns the removed entries, newest first. A negative offset removes nothing.
        """
        entries = self._entries
        removed: list[EpochEntry] = []
        if end_offset < 0 or not entries or entries[-1].start_offset < end_offset:
            return removed
        while entries and entries[-1].start_offset >= end_offset:
            removed.append(entries.pop())
        self._flush(durable=False)
        return removed

    def truncate_from_start(self, start_offset: int) -> list[EpochEntry]:
        """Drop the entries below `start_offset`, keeping the epoch that covers it.

        Every entry with start offset <= `start_offset` is removed, then the last of them comes
        back starting at `start_offset` (exclusive truncation: an entry at exactly
        `start_offset` stays as it was). Returns the removed entries, oldest first.
        """
        count = bisect_right(self._entries, start_offset, key=_start_offset)
        if count == 0:
            return []
        removed = self._entries[:count]
        self._entries[:count] = [EpochEntry(removed[-1].epoch, start_offset)]
        self._flush(durable=False)
        return removed

    def clear_and_flush(self) -> None:
        """Delete every entry and write the empty checkpoint durably."""
        self._entries.clear()
        self._flush(durable=True)

    def _flush(self, durable: bool) -> None:
        self._checkpoint.write(list(self._entries), durable)

    # ---- queries ----------------------------------------------------------------------------

    def epoch_entries(self) -> list[EpochEntry]:
        """Every entry, oldest first."""
        return list(self._entries)

    def is_empty(self) -> bool:
        return not self._entries

    @property
    def latest_entry(self) -> EpochEntry | None:
        return self._entries[-1] if self._entries else None

    @property
    def latest_epoch(self) -> int | None:
        """The newest epoch with data in the log (None when the cache is empty)."""
        return self._entries[-1].epoch if self._entries else None

    @property
    def earliest_entry(self) -> EpochEntry | None:
        return self._entries[0] if self._entries else None

    def epoch_entry(self, epoch: int) -> EpochEntry | None:
        """The entry of exactly `epoch`, if the cache has one."""
        index = bisect_left(self._entries, epoch, key=_epoch)
        if index < len(self._entries) and self._entries[index].epoch == epoch:
            return self._entries[index]
        return None

    def previous_epoch(self, epoch: int) -> int | None:
        """The largest cached epoch strictly below `epoch`."""
        index = bisect_left(self._entries, epoch, key=_epoch)
        return self._entries[index - 1].epoch if index > 0 else None

    def next_epoch(self, epoch: int) -> int | None:
        """The smallest cached epoch strictly above `epoch`."""
        index = bisect_right(self._entries, epoch, key=_epoch)
        return self._entries[index].epoch if index < len(self._entries) else None

    def epoch_for_offset(self, offset: int) -> int | None:
        """The epoch whose range holds `offset`: the last entry starting at or before it.

        None when `offset` is below every entry (Kafka's `epochForOffset`).
        """
        index = bisect_right(self._entries, offset, key=_start_offset)
        return self._entries[index - 1].epoch if index > 0 else None

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """`(epoch, end offset)` for `requested_epoch`, exactly as Kafka's `endOffsetFor`.

        - UNDEFINED_EPOCH requested, or an epoch above every cached one (when it is not the
          latest): `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)`;
        - the latest cached epoch: `(requested_epoch, log_end_offset)`;
        - an epoch below every cached one: `(requested_epoch, start of the first epoch)`;
        - otherwise: the largest cached epoch <= requested, ending where the next cached epoch
          starts.
        """
        entries = self._entries
        if requested_epoch == UNDEFINED_EPOCH:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if entries and entries[-1].epoch == requested_epoch:
            return requested_epoch, log_end_offset
        higher = bisect_right(entries, requested_epoch, key=_epoch)
        if higher == len(entries):
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if higher == 0:
            return requested_epoch, entries[0].start_offset
        return entries[higher - 1].epoch, entries[higher].start_offset

    def entries_in_range(self, start_offset: int, end_offset: int) -> list[EpochEntry]:
        """The entries as they would be after truncating to `[start_offset, end_offset)`."""
        copy = LeaderEpochFileCache()
        copy._entries = list(self._entries)
        if start_offset >= 0:
            copy.truncate_from_start(start_offset)
        copy.truncate_from_end(end_offset)
        return copy.epoch_entries()

    def __repr__(self) -> str:
        entries = ", ".join(f"({entry.epoch}, {entry.start_offset})" for entry in self._entries)
        return f"LeaderEpochFileCache([{entries}])"


def _epoch(entry: EpochEntry) -> int:
    return entry.epoch


def _start_offset(entry: EpochEntry) -> int:
    return entry.start_offset
