"""Per-partition producer state: Kafka's ProducerStateManager, ProducerStateEntry and the
checks of ProducerAppendInfo (checkProducerEpoch, checkSequence, checkCoordinatorEpoch).

For every producer id that wrote to the partition it keeps the epoch, the last five batches
(sequence range, offsets, max timestamp), the last timestamp, the coordinator epoch of the last
marker and the first offset of the ongoing transaction. Appends are checked in two steps, as
Kafka does: `prepare_append` validates against copies of the entries and returns either the
copies (`PendingAppend`) or the retained batch a duplicate repeats; `apply` installs the copies
only after the log write succeeded, so producer state never runs ahead of the log.

Snapshots (`<offset>.snapshot`, offset = the log end offset the state covers) use Odradek's
own format with a CRC32C, and, unlike Kafka's (which keeps only the last batch per producer),
hold all five retained batches, so deduplication of every in-flight batch survives a restart.
"""

from __future__ import annotations

import enum
import os
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import crc32c

from odradek.protocol.record_batch import BatchHeader
from odradek.storage._files import write_file_atomically
from odradek.storage.errors import (
    InvalidProducerEpoch,
    InvalidTxnState,
    OutOfOrderSequence,
    TransactionCoordinatorFenced,
)

NUM_BATCHES_TO_RETAIN = 5
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
_INT32_MAX = 2**31 - 1

SNAPSHOT_FILE_SUFFIX = ".snapshot"
_SNAPSHOT_MAGIC = b"ODPS"
_SNAPSHOT_VERSION = 1
# magic, version, crc32c of everything after the crc, entry count
_SNAPSHOT_HEADER = struct.Struct(">4shIi")
_SNAPSHOT_CRC_END = 10  # the CRC covers bytes from here on
# producer id, epoch, coordinator epoch, last timestamp, current txn first offset (-1), batches
_SNAPSHOT_ENTRY = struct.Struct(">qhiqqb")
# first sequence, last sequence, first offset, last offset, max timestamp
_SNAPSHOT_BATCH = struct.Struct(">iiqqq")


class AppendOrigin(enum.Enum):
    """Who appends, which decides how much is checked (Kafka's AppendOrigin)."""

    CLIENT = "client"  # epoch, sequence and duplicate checks (Produce)
    COORDINATOR = "coordinator"  # epoch only: the group coordinator's transactional commits


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    """One retained batch of a producer: what a duplicate of it is answered with."""

    first_sequence: int
    last_sequence: int
    first_offset: int
    last_offset: int
    max_timestamp: int


@dataclass(frozen=True, slots=True)
class ProducerStateView:
    """One producer as DescribeProducers reports it (-1 where Kafka reports -1)."""

    producer_id: int
    producer_epoch: int
    last_sequence: int
    last_timestamp: int
    coordinator_epoch: int
    current_txn_start_offset: int


@dataclass(frozen=True, slots=True)
class OngoingTransaction:
    producer_id: int
    producer_epoch: int
    first_offset: int


class ProducerStateEntry:
    """The state of one producer id; mutated only through copies until an append succeeds."""

    __slots__ = (
        "batches",
        "coordinator_epoch",
        "current_txn_first_offset",
        "last_timestamp",
        "producer_epoch",
        "producer_id",
    )

    def __init__(
        self,
        producer_id: int,
        producer_epoch: int = NO_PRODUCER_EPOCH,
        batches: Iterable[BatchMetadata] = (),
        last_timestamp: int = -1,
        coordinator_epoch: int = -1,
        current_txn_first_offset: int | None = None,
    ) -> None:
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.batches: deque[BatchMetadata] = deque(batches, maxlen=NUM_BATCHES_TO_RETAIN)
        self.last_timestamp = last_timestamp
        self.coordinator_epoch = coordinator_epoch
        self.current_txn_first_offset = current_txn_first_offset

    def copy(self) -> ProducerStateEntry:
        return ProducerStateEntry(
            self.producer_id,
            self.producer_epoch,
            self.batches,
            self.last_timestamp,
            self.coordinator_epoch,
            self.current_txn_first_offset,
        )

    @property
    def last_sequence(self) -> int:
        return self.batches[-1].last_sequence if self.batches else NO_SEQUENCE

    def find_duplicate(
        self, producer_epoch: int, first_sequence: int, last_sequence: int
    ) -> BatchMetadata | None:
        """The retained batch with exactly this epoch and sequence range, if any."""
        batches = self.batches
        if producer_epoch != self.producer_epoch or not batches:
            return None
        if _in_sequence(batches[-1].last_sequence, first_sequence):
            return None  # the common case: the next batch, not a retry
        for batch in batches:
            if batch.first_sequence == first_sequence and batch.last_sequence == last_sequence:
                return batch
        return None

    def update_epoch(self, producer_epoch: int) -> None:
        """A new epoch starts a new sequence space: the retained batches no longer apply."""
        if producer_epoch != self.producer_epoch:
            self.batches.clear()
            self.producer_epoch = producer_epoch

    def add_batch(self, producer_epoch: int, batch: BatchMetadata) -> None:
        self.update_epoch(producer_epoch)
        self.batches.append(batch)  # the deque's maxlen drops the oldest of five
        self.last_timestamp = batch.max_timestamp

    def view(self) -> ProducerStateView:
        return ProducerStateView(
            producer_id=self.producer_id,
            producer_epoch=self.producer_epoch,
            last_sequence=self.last_sequence,
            last_timestamp=self.last_timestamp,
            coordinator_epoch=self.coordinator_epoch,
            current_txn_start_offset=(
                -1 if self.current_txn_first_offset is None else self.current_txn_first_offset
            ),
        )


@dataclass(slots=True)
class PendingAppend:
    """Validated, not yet applied: the updated copies of the entries an append touches."""

    entries: dict[int, ProducerStateEntry]


# Shared by every append without a producer id; never mutated.
_NOTHING_PENDING = PendingAppend({})


def _in_sequence(last_sequence: int, next_sequence: int) -> bool:
    return next_sequence == last_sequence + 1 or (
        next_sequence == 0 and last_sequence == _INT32_MAX
    )


def _check_sequence(
    current: ProducerStateEntry | None,
    updated: ProducerStateEntry,
    producer_epoch: int,
    first_sequence: int,
) -> None:
    """Kafka's ProducerAppendInfo.checkSequence (without the KIP-890 verification state)."""
    if producer_epoch != updated.producer_epoch:
        if first_sequence != 0 and updated.producer_epoch != NO_PRODUCER_EPOCH:
            raise OutOfOrderSequence(
                f"producer {updated.producer_id}: new epoch {producer_epoch} must start at "
                f"sequence 0, got {first_sequence} (current epoch {updated.producer_epoch})"
            )
        return
    # A producer whose state is gone (expired, or never seen here) may continue with any
    # sequence: Kafka accepts it since KIP-360 rather than answering UNKNOWN_PRODUCER_ID.
    if current is None or current.producer_epoch == NO_PRODUCER_EPOCH:
        return
    last_sequence = updated.last_sequence
    if not _in_sequence(last_sequence, first_sequence):
        raise OutOfOrderSequence(
            f"producer {updated.producer_id} epoch {producer_epoch}: sequence {first_sequence} "
            f"does not follow {last_sequence}"
        )


def _append_data_batch(
    entry: ProducerStateEntry,
    current: ProducerStateEntry | None,
    header: BatchHeader,
    first_offset: int,
    max_timestamp: int,
    origin: AppendOrigin | None,
) -> None:
    """Check (unless replaying: origin None) and record one data batch in `entry`."""
    producer_epoch = header.producer_epoch
    if origin is not None:
        if producer_epoch < entry.producer_epoch:
            raise InvalidProducerEpoch(
                f"producer {entry.producer_id}: epoch {producer_epoch} is older than "
                f"{entry.producer_epoch}"
            )
        if origin is AppendOrigin.CLIENT:
            _check_sequence(current, entry, producer_epoch, header.base_sequence)
    entry.add_batch(
        producer_epoch,
        BatchMetadata(
            header.base_sequence,
            header.last_sequence,
            first_offset,
            first_offset + header.last_offset_delta,
            max_timestamp,
        ),
    )
    if entry.current_txn_first_offset is None:
        if header.is_transactional:
            entry.current_txn_first_offset = first_offset
    elif not header.is_transactional and origin is not None:
        raise InvalidTxnState(
            f"producer {entry.producer_id} sent a non-transactional batch while its "
            f"transaction from offset {entry.current_txn_first_offset} is ongoing"
        )


class ProducerStateManager:
    """Every producer's state for one partition, plus its ongoing transactions."""

    def __init__(self) -> None:
        self._producers: dict[int, ProducerStateEntry] = {}
        # producer id -> first offset of its ongoing transaction (kept small: LSO is its min)
        self._ongoing: dict[int, int] = {}
        # (marker offset, first offset) of transactions a marker ended that may still be at or
        # above the high watermark: they stay unstable until it passes the marker (Kafka's
        # ProducerStateManager.unreplicatedTxns), so the LSO never moves past a transaction
        # because its marker was merely appended on the leader.
        self._unreplicated: list[tuple[int, int]] = []

    # -- queries -----------------------------------------------------------------------------

    def entry(self, producer_id: int) -> ProducerStateEntry | None:
        return self._producers.get(producer_id)

    def __len__(self) -> int:
        return len(self._producers)

    def first_unstable_offset(self, high_watermark: int | None = None) -> int | None:
        """First offset of the oldest transaction that is ongoing or whose marker is not yet
        below `high_watermark` (None: every ended transaction counts as stable); None without
        one."""
        if high_watermark is None or not self._unreplicated:
            return min(self._ongoing.values(), default=None)
        self._unreplicated = [
            (marker, first) for marker, first in self._unreplicated if marker >= high_watermark
        ]
        unreplicated = [first for _marker, first in self._unreplicated]
        return min([*self._ongoing.values(), *unreplicated], default=None)

    def has_ongoing_transaction(self, producer_id: int, producer_epoch: int) -> bool:
        """Whether this producer, at this epoch, has a transaction open here (O(1))."""
        if producer_id not in self._ongoing:
            return False
        return self._producers[producer_id].producer_epoch == producer_epoch

    def ongoing_transactions(self) -> list[OngoingTransaction]:
        return sorted(
            (
                OngoingTransaction(
                    producer_id, self._producers[producer_id].producer_epoch, first_offset
                )
                for producer_id, first_offset in self._ongoing.items()
            ),
            key=lambda txn: (txn.first_offset, txn.producer_id),
        )

    def views(self) -> list[ProducerStateView]:
        return [entry.view() for _, entry in sorted(self._producers.items())]

    def last_data_offsets(self) -> set[int]:
        """Last offset of every producer's newest retained batch (what compaction keeps)."""
        return {
            entry.batches[-1].last_offset for entry in self._producers.values() if entry.batches
        }

    def last_stable_offset_after(self, producer_id: int, marker_offset: int) -> int:
        """The LSO once `producer_id`'s transaction ends at `marker_offset` (for the index)."""
        others = [offset for pid, offset in self._ongoing.items() if pid != producer_id]
        return min(others) if others else marker_offset + 1

    # -- data batches ------------------------------------------------------------------------

    def prepare_append(
        self,
        headers: Sequence[BatchHeader],
        first_offset: int,
        log_append_time_ms: int | None,
        origin: AppendOrigin,
    ) -> PendingAppend | BatchMetadata:
        """Validate batches about to be written at `first_offset`; changes nothing.

        Returns the retained batch when one is a duplicate (then nothing may be written),
        else the updated entries for `apply`. Raises InvalidProducerEpoch,
        OutOfOrderSequence or InvalidTxnState.
        """
        if len(headers) == 1 and headers[0].producer_id < 0:
            return _NOTHING_PENDING  # a plain producer: no state to check or keep
        updated: dict[int, ProducerStateEntry] = {}
        offset = first_offset
        for header in headers:
            batch_offset = offset
            offset += header.last_offset_delta + 1
            producer_id = header.producer_id
            if producer_id < 0:
                continue
            current = self._producers.get(producer_id)
            if origin is AppendOrigin.CLIENT and current is not None:
                duplicate = current.find_duplicate(
                    header.producer_epoch, header.base_sequence, header.last_sequence
                )
                if duplicate is not None:
                    return duplicate
            entry = updated.get(producer_id)
            if entry is None:
                entry = current.copy() if current is not None else ProducerStateEntry(producer_id)
                updated[producer_id] = entry
            max_timestamp = (
                header.max_timestamp if log_append_time_ms is None else log_append_time_ms
            )
            _append_data_batch(entry, current, header, batch_offset, max_timestamp, origin)
        return PendingAppend(updated)

    def apply(self, pending: PendingAppend) -> None:
        """Install validated entries: call only after their batches are in the log."""
        for producer_id, entry in pending.entries.items():
            self._install(producer_id, entry)

    def _install(self, producer_id: int, entry: ProducerStateEntry) -> None:
        self._producers[producer_id] = entry
        if entry.current_txn_first_offset is None:
            self._ongoing.pop(producer_id, None)
        else:
            self._ongoing[producer_id] = entry.current_txn_first_offset

    # -- transaction markers -----------------------------------------------------------------

    def prepare_marker(
        self, producer_id: int, producer_epoch: int, coordinator_epoch: int, validate: bool = True
    ) -> ProducerStateEntry:
        """Check a COMMIT/ABORT marker; returns the entry copy `complete_marker` finishes."""
        current = self._producers.get(producer_id)
        entry = current.copy() if current is not None else ProducerStateEntry(producer_id)
        if validate:
            if producer_epoch < entry.producer_epoch:
                raise InvalidProducerEpoch(
                    f"marker for producer {producer_id}: epoch {producer_epoch} is older "
                    f"than {entry.producer_epoch}"
                )
            if coordinator_epoch < entry.coordinator_epoch:
                raise TransactionCoordinatorFenced(
                    f"marker for producer {producer_id}: coordinator epoch {coordinator_epoch} "
                    f"is older than {entry.coordinator_epoch}"
                )
        return entry

    def complete_marker(
        self,
        entry: ProducerStateEntry,
        producer_epoch: int,
        coordinator_epoch: int,
        timestamp: int,
        marker_offset: int | None = None,
    ) -> int | None:
        """Install a marker written to the log; returns the ended transaction's first offset.

        None when no transaction was ongoing (Kafka writes such a marker too, but it touches
        neither the LSO nor the transaction index). With `marker_offset` the transaction stays
        unstable until the high watermark passes the marker.
        """
        first_offset = entry.current_txn_first_offset
        if first_offset is not None and marker_offset is not None:
            self._unreplicated.append((marker_offset, first_offset))
        entry.update_epoch(producer_epoch)
        entry.coordinator_epoch = coordinator_epoch
        entry.last_timestamp = timestamp
        entry.current_txn_first_offset = None
        self._install(entry.producer_id, entry)
        return first_offset

    # -- recovery ----------------------------------------------------------------------------

    def replay_data_batch(self, header: BatchHeader, max_timestamp: int) -> None:
        """Apply a batch read back from the log, without checks (LogLoader's rebuild)."""
        current = self._producers.get(header.producer_id)
        entry = current if current is not None else ProducerStateEntry(header.producer_id)
        _append_data_batch(entry, current, header, header.base_offset, max_timestamp, None)
        self._install(header.producer_id, entry)

    # -- expiration --------------------------------------------------------------------------

    def expire(self, now_ms: int, producer_id_expiration_ms: int) -> int:
        """Drop producers idle for `producer.id.expiration.ms` without an ongoing transaction.

        Idle is measured from the producer's last batch timestamp, as Kafka does.
        """
        expired = [
            producer_id
            for producer_id, entry in self._producers.items()
            if entry.current_txn_first_offset is None
            and now_ms - entry.last_timestamp >= producer_id_expiration_ms
        ]
        for producer_id in expired:
            del self._producers[producer_id]
        return len(expired)

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot_bytes(self) -> bytes:
        body = bytearray()
        for producer_id, entry in sorted(self._producers.items()):
            body += _SNAPSHOT_ENTRY.pack(
                producer_id,
                entry.producer_epoch,
                entry.coordinator_epoch,
                entry.last_timestamp,
                -1 if entry.current_txn_first_offset is None else entry.current_txn_first_offset,
                len(entry.batches),
            )
            for batch in entry.batches:
                body += _SNAPSHOT_BATCH.pack(
                    batch.first_sequence,
                    batch.last_sequence,
                    batch.first_offset,
                    batch.last_offset,
                    batch.max_timestamp,
                )
        count = struct.pack(">i", len(self._producers))
        crc = crc32c.crc32c(count + bytes(body))
        return _SNAPSHOT_HEADER.pack(
            _SNAPSHOT_MAGIC, _SNAPSHOT_VERSION, crc, len(self._producers)
        ) + bytes(body)

    def load_snapshot_bytes(self, data: bytes) -> bool:
        """Replace the state with a snapshot's; False (state untouched) when it is corrupt."""
        if len(data) < _SNAPSHOT_HEADER.size:
            return False
        magic, version, crc, count = _SNAPSHOT_HEADER.unpack_from(data)
        if (
            magic != _SNAPSHOT_MAGIC
            or version != _SNAPSHOT_VERSION
            or crc32c.crc32c(data[_SNAPSHOT_CRC_END:]) != crc
            or count < 0
        ):
            return False
        producers: dict[int, ProducerStateEntry] = {}
        position = _SNAPSHOT_HEADER.size
        try:
            for _ in range(count):
                producer_id, epoch, coordinator_epoch, last_timestamp, txn_first, batch_count = (
                    _SNAPSHOT_ENTRY.unpack_from(data, position)
                )
                position += _SNAPSHOT_ENTRY.size
                batches = []
                for _ in range(batch_count):
                    batches.append(BatchMetadata(*_SNAPSHOT_BATCH.unpack_from(data, position)))
                    position += _SNAPSHOT_BATCH.size
                producers[producer_id] = ProducerStateEntry(
                    producer_id,
                    epoch,
                    batches,
                    last_timestamp,
                    coordinator_epoch,
                    None if txn_first < 0 else txn_first,
                )
        except struct.error:
            return False
        if position != len(data):
            return False
        self._producers = {}
        self._ongoing = {}
        for producer_id, entry in producers.items():
            self._install(producer_id, entry)
        return True


def snapshot_path(directory: Path, offset: int) -> Path:
    return directory / f"{offset:020d}{SNAPSHOT_FILE_SUFFIX}"


def snapshot_offsets(directory: Path) -> list[int]:
    """Offsets of the snapshot files in `directory`, ascending."""
    offsets = []
    for name in os.listdir(directory):
        stem, _, suffix = name.partition(".")
        if "." + suffix == SNAPSHOT_FILE_SUFFIX and stem.isdigit():
            offsets.append(int(stem))
    return sorted(offsets)


def write_snapshot(
    directory: Path, offset: int, state: ProducerStateManager, durable: bool
) -> None:
    write_file_atomically(snapshot_path(directory, offset), state.snapshot_bytes(), durable)


def delete_snapshots(directory: Path, keep: int, above: int | None = None) -> None:
    """Keep the `keep` newest snapshots (and none above offset `above`, when given)."""
    offsets = snapshot_offsets(directory)
    if above is not None:
        for offset in offsets:
            if offset > above:
                snapshot_path(directory, offset).unlink(missing_ok=True)
        offsets = [offset for offset in offsets if offset <= above]
    for offset in offsets[: max(len(offsets) - keep, 0)]:
        snapshot_path(directory, offset).unlink(missing_ok=True)
