"""PartitionLog: one partition's log, the facade over its segments, offsets and epochs.

Kafka's UnifiedLog. The work is split along Kafka's seams, each module's functions taking the
log: opening and recovery are the LogLoader (log_loader.py); batch checks and append results
are LogValidator's pure parts (log_append.py); appends as follower (log_follower.py) and of
transaction markers (log_markers.py); reads and offset/time lookups (log_lookup.py);
truncation (log_truncation.py); retention and DeleteRecords (log_retention.py); compaction
(log_cleaning.py over cleaner.py); flush and the checkpoint file (log_flush.py); the value
types live in log_types.py. This module owns the mutable state (segments, log start / end
offsets, high watermark, recovery point, producer state, the leader-epoch cache), the leader
append and segment roll, and shutdown. The public names of those modules are re-exported
here.

Threading: `append`, `append_as_follower`, `read`, truncation, retention,
`delete_records_before`, `update_config` and `close` run on one thread (the broker's event
loop). `flush` may run on any other thread at the same time -- the broker's group commit --
so the state a flush reads (log end offset, segment sizes, the segment list) changes only
under `_lock`, the lock is never held across an fdatasync, and a segment a flush is syncing
is pinned so deleting or closing it cannot close its descriptor. A truncation while a flush
is in flight makes that flush advance nothing (`_truncations`).

Leader epochs (KIP-101/279): every partition keeps a LeaderEpochFileCache in its
`leader-epoch-checkpoint`. A leader append stamps `leader_epoch` into each batch header (the
field sits before the CRC'd range, patched like the base offset) and assigns the epoch in
the cache when a new epoch starts; a follower append keeps the leader's epochs and assigns
them. A single broker leads every partition in epoch 0.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from odradek.protocol.record_batch import (
    BatchHeader,
    assign_offsets,
    offset_patched_parts,
)
from odradek.storage import (
    log_cleaning,
    log_flush,
    log_follower,
    log_markers,
    log_retention,
    log_truncation,
)
from odradek.storage._batch import set_log_append_time
from odradek.storage._files import fsync_directory
from odradek.storage.cleaner import CleanResult
from odradek.storage.errors import (
    CorruptRecord,
    OffsetOutOfRange,
    OffsetsOutOfOrder,
    RecordBatchTooLarge,
    StorageError,
)
from odradek.storage.lazy_files import OS_FILES, SegmentFiles
from odradek.storage.leader_epoch import (
    UNDEFINED_EPOCH,
    UNDEFINED_EPOCH_OFFSET,
    LeaderEpochFileCache,
)
from odradek.storage.log_append import (
    CONTROL_TYPE_ABORT,
    CONTROL_TYPE_COMMIT,
    append_info,
    duplicate_info,
    measure,
    should_roll,
)
from odradek.storage.log_loader import (
    CHECKPOINT_FILE_NAME,
    CLEAN_SHUTDOWN_FILE_NAME,
    open_log,
)
from odradek.storage.log_lookup import (
    aborted_transactions,
    max_timestamp_offset,
    offset_for_timestamp,
    read,
)
from odradek.storage.log_types import AppendInfo, LogConfig, ReadResult
from odradek.storage.producer_state import (
    AppendOrigin,
    BatchMetadata,
    OngoingTransaction,
    ProducerStateManager,
    ProducerStateView,
    delete_snapshots,
    write_snapshot,
)
from odradek.storage.segment import LogSegment

_SNAPSHOTS_TO_KEEP = 2

__all__ = [
    "CHECKPOINT_FILE_NAME",
    "CLEAN_SHUTDOWN_FILE_NAME",
    "CONTROL_TYPE_ABORT",
    "CONTROL_TYPE_COMMIT",
    "AppendInfo",
    "AppendOrigin",
    "CleanResult",
    "CorruptRecord",
    "LogConfig",
    "OffsetOutOfRange",
    "OffsetsOutOfOrder",
    "OngoingTransaction",
    "PartitionLog",
    "ProducerStateView",
    "ReadResult",
    "RecordBatchTooLarge",
    "StorageError",
]


class PartitionLog:
    """A partition's log: segments plus log start offset, log end offset, high watermark,
    producer state and the leader-epoch cache."""

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        segments: list[LogSegment],
        files: SegmentFiles = OS_FILES,
        leader_epoch_cache: LeaderEpochFileCache | None = None,
    ) -> None:
        self.directory = directory
        self._config = config
        self._files = files
        self._segments = segments
        self._segment_base_offsets = [segment.base_offset for segment in segments]
        self._lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._log_start_offset = segments[0].base_offset
        self._log_end_offset = segments[-1].next_offset
        self._high_watermark = self._log_start_offset
        self._recovery_point = self._log_start_offset
        self._appended_messages = 0
        self._flushed_messages = 0
        # When the oldest append not yet covered by a flush happened (flush.ms counts from it).
        self._oldest_unflushed_append_ms: int | None = None
        self._directory_dirty = False
        self._closed = False
        self._deleted = False
        # Bumped (under `_lock`) by every truncation: a flush that started before one must not
        # advance the recovery point or the synced sizes past data that was cut.
        self._truncations = 0
        # The last replica read and its key (see `read`): RF=3 followers ask for the same bytes.
        self._last_replica_read: tuple[tuple[int, int, int, bool, int], ReadResult] | None = None
        # Base offset of the segment holding the recovery point the checkpoint file last got
        # (-1: none written yet); `flush` rewrites the file only when that segment changes.
        self._checkpointed_segment = -1
        self._producer_state = ProducerStateManager()
        # The cleaner checkpoint: everything below was compacted by this process.
        self._first_dirty_offset = self._log_start_offset
        self._leader_epoch_cache = (
            leader_epoch_cache if leader_epoch_cache is not None else LeaderEpochFileCache()
        )
        # The epoch a leader append stamps into batch headers (the partition's current leader
        # epoch while this broker leads it); -1 when unknown.
        self.leader_epoch = 0

    # -- opening: LogLoader ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        config: LogConfig,
        now_ms: int,
        files: SegmentFiles = OS_FILES,
        leader_epoch: int | None = 0,
    ) -> PartitionLog:
        """Create an empty log in `directory` or recover the one there (log_loader.py).

        `files` is the file layer segment logs go through (lazy_files.py; default the OS).
        `leader_epoch` is the epoch leader appends stamp (the `leader_epoch` attribute): the
        default 0 is a single broker's, which has led every partition in epoch 0 since the
        log began, so an empty leader-epoch cache starts with `(0, log start offset)`. None
        (a replica whose leadership the cluster decides) leaves the cache as loaded and the
        attribute at -1. Raises LeaderEpochCheckpointCorrupt for an unreadable checkpoint.
        """
        return open_log(cls, directory, config, now_ms, files, leader_epoch)

    # -- offsets -----------------------------------------------------------------------------

    @property
    def config(self) -> LogConfig:
        return self._config

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._log_end_offset

    @property
    def high_watermark(self) -> int:
        """The offset below which every record is committed (readable by consumers)."""
        return self._high_watermark

    @high_watermark.setter
    def high_watermark(self, offset: int) -> None:
        """Set from outside, kept within [log start offset, log end offset].

        A single broker sets it to the log end offset after each append; a cluster leader to
        what its PartitionState computed; a follower to the leader's HW, which the clamp turns
        into min(leader HW, own log end offset) as Kafka's follower does. May move backwards
        (a follower after truncation, KIP-207).
        """
        self._high_watermark = max(min(offset, self._log_end_offset), self._log_start_offset)

    @property
    def recovery_point(self) -> int:
        """Every offset below this one is on disk (fdatasync'd)."""
        return self._recovery_point

    @property
    def flushed_offset(self) -> int:
        """The durable end of the log: every batch below it was fdatasync'd (the recovery
        point). A leader with `odradek.acks.all.fsync` bounds the HW by it (PartitionState's
        `flushed_offset`), and a follower reports it."""
        return self._recovery_point

    @property
    def size_in_bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    def segment_base_offsets(self) -> list[int]:
        return list(self._segment_base_offsets)

    def update_config(self, config: LogConfig) -> None:
        self._config = config

    # -- leader epochs -----------------------------------------------------------------------

    @property
    def leader_epoch_cache(self) -> LeaderEpochFileCache:
        """The partition's `(epoch, start offset)` entries (leader_epoch.py)."""
        return self._leader_epoch_cache

    @property
    def latest_epoch(self) -> int | None:
        """The newest leader epoch with data (or a start) in this log; None when unknown."""
        return self._leader_epoch_cache.latest_epoch

    def end_offset_for_epoch(self, leader_epoch: int) -> tuple[int, int]:
        """(epoch, end offset) for OffsetForLeaderEpoch, Kafka's UnifiedLog.endOffsetForEpoch.

        The end offset is where the next epoch starts (the log end offset for the latest
        epoch); for an epoch the cache cannot place, (UNDEFINED_EPOCH,
        UNDEFINED_EPOCH_OFFSET), i.e. (-1, -1).
        """
        epoch, end_offset = self._leader_epoch_cache.end_offset_for(
            leader_epoch, self._log_end_offset
        )
        if end_offset == UNDEFINED_EPOCH_OFFSET:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        return epoch, end_offset

    def maybe_assign_epoch_start_offset(self, leader_epoch: int, start_offset: int) -> None:
        """Record (durably) that `leader_epoch` starts at `start_offset` when it is newer than
        the latest cached epoch (Kafka's maybeAssignEpochStartOffset; a new leader calls it
        with the log end offset, Partition.makeLeader)."""
        latest = self._leader_epoch_cache.latest_epoch
        if leader_epoch >= 0 and (latest is None or leader_epoch > latest):
            self._leader_epoch_cache.assign(leader_epoch, start_offset)

    # -- transactions and producers ----------------------------------------------------------

    @property
    def last_stable_offset(self) -> int:
        """min(first offset of every ongoing transaction or one whose marker is not yet
        below the high watermark, high watermark), never below the log start offset: where
        read_committed fetches stop."""
        first_unstable = self._producer_state.first_unstable_offset(self._high_watermark)
        if first_unstable is None:
            return self._high_watermark
        return min(max(first_unstable, self._log_start_offset), self._high_watermark)

    def aborted_transactions(
        self, fetch_offset: int, upper_bound_offset: int
    ) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions overlapping
        [fetch_offset, upper_bound_offset): a read_committed Fetch response's list.

        Kafka's collectAbortedTransactions: every aborted transaction whose ABORT marker is
        at or after `fetch_offset` and whose first offset is below the upper bound (the
        offset after the last batch returned), searching from the segment holding
        `fetch_offset` on until an entry's LSO reaches the upper bound.
        """
        return aborted_transactions(
            self._segments, self._segment_base_offsets, fetch_offset, upper_bound_offset
        )

    def has_ongoing_transaction(self, producer_id: int, producer_epoch: int) -> bool:
        """Whether the producer (at this epoch) has a transaction open in this partition."""
        return self._producer_state.has_ongoing_transaction(producer_id, producer_epoch)

    def ongoing_transactions(self) -> list[OngoingTransaction]:
        """Open transactions in this partition, oldest first (they hold the LSO back)."""
        return self._producer_state.ongoing_transactions()

    def producer_states(self) -> list[ProducerStateView]:
        """Every producer this partition remembers, for DescribeProducers."""
        return self._producer_state.views()

    def expire_producers(self, now_ms: int, producer_id_expiration_ms: int = 86_400_000) -> int:
        """Forget producers idle for `producer.id.expiration.ms` (Kafka's default: one day)
        that have no ongoing transaction; returns how many were removed."""
        return self._producer_state.expire(now_ms, producer_id_expiration_ms)

    def _take_snapshot(self, offset: int, durable: bool) -> None:
        write_snapshot(self.directory, offset, self._producer_state, durable)
        delete_snapshots(self.directory, keep=_SNAPSHOTS_TO_KEEP)

    # -- compaction: log_cleaning.py -------------------------------------------------------

    def clean(self, now_ms: int, force: bool = False) -> CleanResult:
        """Compact the log (cleanup.policy=compact): keep only each key's latest record
        (log_cleaning.py, Kafka's LogCleaner).

        Only inactive segments below the last stable offset and older than
        min.compaction.lag.ms are cleaned, and only when min.cleanable.dirty.ratio of them
        is dirty or with `force`. Records without a key are kept and reported in
        `CleanResult.keyless_offsets`. Offsets never change.
        """
        self._last_replica_read = None
        return log_cleaning.clean(self, now_ms, force)

    # -- append as leader --------------------------------------------------------------------

    def append(
        self,
        records: bytes | memoryview,
        headers: list[BatchHeader],
        now_ms: int,
        partition_leader_epoch: int | None = None,
        origin: AppendOrigin = AppendOrigin.CLIENT,
    ) -> AppendInfo:
        """Append validated batches as leader, assigning offsets from the log end offset.

        `headers` are the batches' parsed headers in order (the protocol layer's
        `BatchHeader`); the records themselves are never decoded. Each batch gets
        `partition_leader_epoch` (default: the log's `leader_epoch`) in its header, and a new
        epoch is assigned in the leader-epoch cache at the first offset. Batches with a
        producer id are checked against producer state first (ProducerAppendInfo): a retry
        of one of the producer's last five batches returns its original offsets with
        `duplicate=True` and writes nothing; OutOfOrderSequence, InvalidProducerEpoch and
        InvalidTxnState leave the log and the state untouched. State advances only after the
        write succeeded.
        """
        self._check_open()
        total_size, offset_count, message_count = measure(
            records, headers, self._config.max_message_bytes
        )
        first_offset = self._log_end_offset
        log_append_time_ms = self._log_append_time(now_ms)
        pending = self._producer_state.prepare_append(
            headers, first_offset, log_append_time_ms, origin
        )
        if isinstance(pending, BatchMetadata):
            return self._duplicate_info(pending)
        epoch = self.leader_epoch if partition_leader_epoch is None else partition_leader_epoch
        self._assign_epoch(epoch, first_offset)
        self._write(
            records,
            headers,
            first_offset,
            total_size,
            offset_count,
            message_count,
            now_ms,
            epoch,
            log_append_time_ms,
        )
        self._producer_state.apply(pending)
        return self._finish_append(headers, first_offset, offset_count, now_ms, log_append_time_ms)

    def append_control(
        self,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        now_ms: int,
        partition_leader_epoch: int | None = None,
    ) -> AppendInfo:
        """Write a COMMIT or ABORT marker (WriteTxnMarkers) and end the producer's
        transaction (log_markers.py).

        The marker carries `partition_leader_epoch` (default: the log's `leader_epoch`).
        Raises InvalidProducerEpoch for an epoch older than the producer's and
        TransactionCoordinatorFenced for an older coordinator epoch; an ABORT of an ongoing
        transaction adds its range to the transaction index.
        """
        return log_markers.append_control(
            self,
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            now_ms,
            partition_leader_epoch,
        )

    def _assign_epoch(self, epoch: int, start_offset: int) -> None:
        # One comparison per append; the cache (and its durable checkpoint) is touched only
        # when an epoch starts.
        if epoch >= 0 and epoch != self._leader_epoch_cache.latest_epoch:
            self._leader_epoch_cache.assign(epoch, start_offset)

    def _log_append_time(self, now_ms: int) -> int | None:
        return now_ms if self._config.message_timestamp_type == "LogAppendTime" else None

    def _write(
        self,
        records: bytes | memoryview,
        headers: list[BatchHeader],
        first_offset: int,
        total_size: int,
        offset_count: int,
        message_count: int,
        now_ms: int,
        partition_leader_epoch: int | None,
        log_append_time_ms: int | None,
    ) -> None:
        config = self._config
        last_offset = first_offset + offset_count - 1
        segment = self._active_segment_for(total_size, last_offset, first_offset, now_ms)
        position = segment.size
        if log_append_time_ms is not None:
            # LogAppendTime rewrites CRC-covered fields: patch a copy.
            buffer = assign_offsets(records, headers, first_offset, partition_leader_epoch)
            set_log_append_time(buffer, headers, log_append_time_ms)
            segment.write(buffer)
        else:
            segment.write_parts(
                offset_patched_parts(records, headers, first_offset, partition_leader_epoch)
            )
        segment.account_batches(
            headers, first_offset, position, config.index_interval_bytes, log_append_time_ms
        )
        self._advance(segment, position + total_size, last_offset + 1, message_count, now_ms)

    def _active_segment_for(
        self, total_size: int, last_offset: int, first_offset: int, now_ms: int
    ) -> LogSegment:
        segment = self._segments[-1]
        if should_roll(segment, self._config, total_size, last_offset, now_ms):
            segment = self._roll(first_offset)
        if segment.rolling_base_ms is None:
            segment.rolling_base_ms = now_ms
        return segment

    def _advance(
        self, segment: LogSegment, size: int, log_end_offset: int, message_count: int, now_ms: int
    ) -> None:
        with self._lock:
            segment.size = size
            self._log_end_offset = log_end_offset
        self._last_replica_read = None
        self._appended_messages += message_count
        if self._oldest_unflushed_append_ms is None:
            self._oldest_unflushed_append_ms = now_ms

    def _finish_append(
        self,
        headers: list[BatchHeader],
        first_offset: int,
        offset_count: int,
        now_ms: int,
        log_append_time_ms: int | None,
        base_offsets: list[int] | None = None,
    ) -> AppendInfo:
        self._maybe_flush(now_ms)
        return append_info(
            headers,
            first_offset,
            first_offset + offset_count - 1,
            log_append_time_ms,
            self._log_start_offset,
            base_offsets,
        )

    def _maybe_flush(self, now_ms: int) -> None:
        if (
            self._appended_messages - self._flushed_messages >= self._config.flush_messages
            or self.flush_due(now_ms)
        ):
            self.flush()

    def _duplicate_info(self, batch: BatchMetadata) -> AppendInfo:
        log_append_time = self._config.message_timestamp_type == "LogAppendTime"
        return duplicate_info(batch, log_append_time, self._log_start_offset)

    def _roll(self, base_offset: int) -> LogSegment:
        """Start a new active segment at `base_offset`; the old one stays open for reads.

        The old segment's aborted-transaction index is made durable before the producer
        state snapshot at `base_offset` that recovery would start replaying from.
        """
        previous = self._segments[-1]
        previous.write_index_files()
        previous.txn_index.write(durable=True)
        self._take_snapshot(base_offset, durable=False)
        segment = LogSegment.create(self.directory, base_offset, self._files)
        with self._lock:
            self._segments.append(segment)
            self._segment_base_offsets.append(base_offset)
            self._directory_dirty = True
        return segment

    # -- append as follower ------------------------------------------------------------------

    def append_as_follower(self, records: bytes | memoryview, now_ms: int) -> AppendInfo | None:
        """Append a replica fetch's batches exactly as the leader wrote them (log_follower.py,
        Kafka's UnifiedLog.appendAsFollower).

        Offsets, leader epochs and timestamps are kept; length, magic, CRC (CorruptRecord)
        and offset order (OffsetsOutOfOrder) are checked and nothing is written when a check
        fails; None when no complete batch came. Leader-epoch cache, producer state and
        transaction indexes follow what was written; the high watermark does not move.
        """
        return log_follower.append_as_follower(self, records, now_ms)

    # -- truncation: log_truncation.py ---------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        """Cut the log so that it ends at or below `offset` (log_truncation.py, Kafka's
        UnifiedLog.truncateTo).

        A follower truncates to the end offset of the epoch where its log diverges from the
        leader's (KIP-101/279); the leader-epoch cache, producer state, high watermark and
        recovery point follow the new end. Crash-safe; after a crash the log may still hold
        data past `offset` and the caller (the replica fetcher) truncates again.
        """
        log_truncation.truncate_to(self, offset)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete everything and start an empty log at `offset` (log_truncation.py, Kafka's
        truncateFullyAndStartAt: a follower whose fetch offset is out of the leader's range).

        Log start offset, log end offset, high watermark and recovery point all become
        `offset`; the leader-epoch cache, producer state and its snapshots are cleared.
        Crash-safe.
        """
        log_truncation.truncate_fully_and_start_at(self, offset)

    def _detach_segments(self, start: int, stop: int | None) -> list[LogSegment]:
        """Take segments [start:stop] out of the log under `_lock` and close each one no
        flush has pinned (the flush holding a pin closes it); the caller deletes their files.
        Shared by retention, truncation and cleaning."""
        with self._lock:
            detached = self._segments[start:stop]
            del self._segments[start:stop]
            del self._segment_base_offsets[start:stop]
            self._directory_dirty = True
            for segment in detached:
                _release(segment)
        return detached

    # -- read --------------------------------------------------------------------------------

    def read(
        self,
        fetch_offset: int,
        max_bytes: int,
        max_offset: int,
        min_one_batch: bool,
        shared: bool = False,
    ) -> ReadResult:
        """Whole batches holding offsets from `fetch_offset`, below `max_offset`.

        The first batch may start before `fetch_offset` (clients skip the records before it).
        Batches come from one segment; the next segment is used when the one holding
        `fetch_offset` has nothing at or after it. Raises OffsetOutOfRange outside
        [log start offset, log end offset].

        `shared` (replica fetches): the result is kept until the next append or truncation,
        and an identical read meanwhile gets it without touching the file. With RF=3 both
        followers fetch the same tail after each append: one `pread` serves both. The bytes
        are immutable (`pread` returns `bytes`), so sharing them is safe; at most one result
        per log is kept, and a follower that caught up replaces it with an empty one.
        """
        self._check_open()
        log_end_offset = self._log_end_offset
        if fetch_offset < self._log_start_offset or fetch_offset > log_end_offset:
            raise OffsetOutOfRange(fetch_offset, self._log_start_offset, log_end_offset)
        upper = min(max_offset, log_end_offset)
        if shared:
            key = (fetch_offset, max_bytes, upper, min_one_batch, self._truncations)
            last = self._last_replica_read
            if last is not None and last[0] == key:
                return last[1]
        result = read(
            self._segments,
            self._segment_base_offsets,
            fetch_offset,
            max_bytes,
            upper,
            min_one_batch,
        )
        if shared:
            self._last_replica_read = (key, result)
        return result

    # -- timestamps --------------------------------------------------------------------------

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """ListOffsets by timestamp: (offset, timestamp) of the first record at or after the
        log start offset whose timestamp is >= `timestamp_ms`, or None.

        Per record, as Kafka's UnifiedLog.fetchOffsetByTimestamp: the batch found by the
        time index is decompressed and its records' timestamps read (with LogAppendTime
        every record carries the batch's time). Not bounded by the high watermark: the
        caller filters.
        """
        return offset_for_timestamp(self._segments, timestamp_ms, self._log_start_offset)

    def max_timestamp_offset(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the record with the largest timestamp (ListOffsets -3,
        KIP-734): the first record carrying it, found inside its batch; the offset is raised
        to the log start offset. None when no batch has a timestamp.
        """
        return max_timestamp_offset(self._segments, self._log_start_offset)

    # -- durability --------------------------------------------------------------------------

    def flush_due(self, now_ms: int) -> bool:
        """Whether the oldest unflushed append is flush.ms old (for a flush scheduler)."""
        oldest = self._oldest_unflushed_append_ms
        return oldest is not None and now_ms - oldest >= self._config.flush_ms

    def flush(self) -> int:
        """fdatasync everything appended so far and advance the recovery point; thread-safe
        (log_flush.py).

        Returns the new recovery point.
        """
        return log_flush.flush(self)

    def _write_checkpoint(self, sync: bool) -> None:
        log_flush.write_log_checkpoint(self, sync)

    # -- deletion: log_retention.py ------------------------------------------------------

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: raise the log start offset to `offset`; returns the low watermark
        (log_retention.py).

        The caller bounds `offset` by the high watermark. Segments wholly below the new log
        start offset are deleted.
        """
        return log_retention.delete_records_before(self, offset)

    def enforce_retention(self, now_ms: int) -> int:
        """Delete old segments by retention.bytes and retention.ms; returns bytes deleted
        (log_retention.py, Kafka's UnifiedLog.deleteOldSegments).

        Only segments wholly below the high watermark go, and only with a cleanup.policy
        containing delete (segments below the log start offset go regardless).
        """
        return log_retention.enforce_retention(self, now_ms)

    # -- shutdown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Flush, persist indexes and checkpoints, and leave the clean-shutdown marker."""
        if self._closed:
            return
        self.flush()
        for segment in self._segments:
            if segment is self._segments[-1]:
                segment.write_index_files()
                segment.txn_index.write(durable=True)
            segment.sync_index_files()
        self._take_snapshot(self._log_end_offset, durable=True)
        self._write_checkpoint(sync=True)
        self._close_segments()
        (self.directory / CLEAN_SHUTDOWN_FILE_NAME).touch()
        fsync_directory(self.directory)

    def delete(self) -> None:
        """Close without ceremony and remove the partition directory."""
        if not self._closed:
            self._close_segments()
        with self._checkpoint_lock:
            self._deleted = True
        shutil.rmtree(self.directory, ignore_errors=True)

    def _close_segments(self) -> None:
        with self._lock:
            self._closed = True
            for segment in self._segments:
                _release(segment)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"log {self.directory} is closed")


def _release(segment: LogSegment) -> None:
    """Mark a segment leaving the log closed; its descriptor closes now unless a flush has
    it pinned (the flush closes it when it unpins)."""
    segment.close_requested = True
    if segment.pins == 0:
        segment.close_fd()
