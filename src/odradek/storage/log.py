"""PartitionLog: one partition's ordered segments, its offsets, flushing, retention and recovery.

Threading: `append`, `read`, retention, `delete_records_before`, `update_config` and `close`
run on one thread (the broker's event loop). `flush` may run on any other thread at the same
time -- the broker's group commit -- so the state a flush reads (log end offset, segment sizes,
the segment list) changes only under `_lock`, the lock is never held across an fdatasync, and
a segment a flush is syncing is pinned so deleting or closing it cannot close its descriptor.

Recovery is Kafka's LogLoader: segments past the recovery-point checkpoint are scanned batch by
batch (length, magic, CRC, growing offsets) and cut at the first bad batch; after a clean
shutdown only the tail after the last index entry is checked. Producer state (idempotence and
transactions, producer_state.py) is loaded from the newest snapshot at or below the recovered
log end offset and rebuilt by replaying batch headers from there; the aborted-transaction
indexes of the replayed range are rebuilt with it. An interrupted compaction swap is finished
(or discarded) before any segment is opened (cleaner.py).
"""

from __future__ import annotations

import logging
import shutil
import struct
import threading
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from odradek.protocol.record_batch import (
    LOG_OVERHEAD,
    BatchHeader,
    Record,
    assign_offsets,
    decode_records,
    encode_batch,
    offset_patched_parts,
    read_batch_header,
)
from odradek.storage._batch import set_log_append_time
from odradek.storage._files import fsync_directory, write_file_atomically
from odradek.storage.cleaner import (
    AbortedTracker,
    CleanResult,
    build_offset_map,
    complete_interrupted_swaps,
    finish_swap,
    group_segments,
    iter_segment_batches,
    read_batch,
    write_cleaned_group,
)
from odradek.storage.errors import OffsetOutOfRange, RecordBatchTooLarge, StorageError
from odradek.storage.index import AbortedTxn
from odradek.storage.lazy_files import OS_FILES, SegmentFiles
from odradek.storage.producer_state import (
    AppendOrigin,
    BatchMetadata,
    OngoingTransaction,
    ProducerStateManager,
    ProducerStateView,
    delete_snapshots,
    snapshot_offsets,
    snapshot_path,
    write_snapshot,
)
from odradek.storage.segment import (
    INDEX_FILE_SUFFIX,
    LOG_FILE_SUFFIX,
    TIME_INDEX_FILE_SUFFIX,
    TXN_INDEX_FILE_SUFFIX,
    LogSegment,
)

logger = logging.getLogger(__name__)

CHECKPOINT_FILE_NAME = "log-state.checkpoint"
CLEAN_SHUTDOWN_FILE_NAME = ".kafka_cleanshutdown"
_CHECKPOINT_VERSION = 0
_NEVER = 2**63 - 1
_SNAPSHOTS_TO_KEEP = 2
_KEYLESS_OFFSETS_SHOWN = 10
# A control record: key = version i16 (0) + type i16 (0 ABORT, 1 COMMIT);
# value = version i16 (0) + coordinator epoch i32 (Kafka's EndTransactionMarker).
_CONTROL_KEY = struct.Struct(">hh")
_MARKER_VALUE = struct.Struct(">hi")
CONTROL_TYPE_ABORT = 0
CONTROL_TYPE_COMMIT = 1

__all__ = [
    "AppendInfo",
    "AppendOrigin",
    "CleanResult",
    "LogConfig",
    "OffsetOutOfRange",
    "OngoingTransaction",
    "PartitionLog",
    "ProducerStateView",
    "ReadResult",
    "RecordBatchTooLarge",
    "StorageError",
]


@dataclass(frozen=True, slots=True)
class LogConfig:
    """The topic-level settings a partition log obeys (Kafka's names, in snake_case)."""

    segment_bytes: int = 1024**3
    segment_ms: int = 7 * 24 * 60 * 60 * 1000
    segment_index_bytes: int = 10 * 1024 * 1024
    retention_ms: int = 7 * 24 * 60 * 60 * 1000  # -1 keeps everything
    retention_bytes: int = -1  # -1 keeps everything
    index_interval_bytes: int = 4096
    flush_messages: int = _NEVER
    flush_ms: int = _NEVER
    max_message_bytes: int = 1048588
    message_timestamp_type: str = "CreateTime"  # or "LogAppendTime"
    cleanup_policy: str = "delete"  # "compact", "delete", both, or "" (neither)
    min_insync_replicas: int = 1
    delete_retention_ms: int = 24 * 60 * 60 * 1000  # how long compaction keeps tombstones
    min_compaction_lag_ms: int = 0
    min_cleanable_dirty_ratio: float = 0.5
    # "producer" keeps batches as sent; a codec name makes the broker recompress (KIP-390
    # levels: -1 is gzip's default; lz4 1..17; zstd -131072..22).
    compression_type: str = "producer"
    compression_gzip_level: int = -1
    compression_lz4_level: int = 9
    compression_zstd_level: int = 3

    @property
    def deletes(self) -> bool:
        """Whether retention deletes old segments (cleanup.policy contains delete)."""
        return "delete" in self.cleanup_policy.split(",")

    @property
    def compacts(self) -> bool:
        """Whether the cleaner compacts the log (cleanup.policy contains compact)."""
        return "compact" in self.cleanup_policy.split(",")


@dataclass(frozen=True, slots=True)
class AppendInfo:
    """What an append did, as the Produce response and the broker need it."""

    first_offset: int
    last_offset: int
    max_timestamp: int
    offset_of_max_timestamp: int  # base offset of the batch holding it
    log_append_time_ms: int  # -1 with CreateTime
    log_start_offset: int
    # A retry of a batch still retained in producer state: nothing was written, the offsets
    # and timestamp are the original append's.
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Whole batches ready for a Fetch response, and the base offset of the first one."""

    records: bytes | memoryview
    first_offset: int | None


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    log_start_offset: int = 0
    recovery_point: int = 0
    high_watermark: int = 0


def _read_checkpoint(path: Path) -> _Checkpoint | None:
    try:
        text = path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if not separator:
            return None
        try:
            values[key.strip()] = int(value)
        except ValueError:
            return None
    if values.get("version") != _CHECKPOINT_VERSION:
        return None
    try:
        return _Checkpoint(
            log_start_offset=values["log_start_offset"],
            recovery_point=values["recovery_point"],
            high_watermark=values["high_watermark"],
        )
    except KeyError:
        return None


def _segment_base_offsets(directory: Path) -> list[int]:
    """Base offsets of the segments in `directory`; leftover temporary files are removed."""
    complete_interrupted_swaps(directory)
    base_offsets = []
    for path in directory.iterdir():
        if path.name.endswith(".tmp"):
            path.unlink()
        elif path.suffix == LOG_FILE_SUFFIX and path.stem.isdigit():
            base_offsets.append(int(path.stem))
    return sorted(base_offsets)


class PartitionLog:
    """A partition's log: segments plus log start offset, log end offset, high watermark."""

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        segments: list[LogSegment],
        files: SegmentFiles = OS_FILES,
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
        self._producer_state = ProducerStateManager()
        # The cleaner checkpoint: everything below was compacted by this process.
        self._first_dirty_offset = self._log_start_offset

    # -- opening: LogLoader ------------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: Path, config: LogConfig, now_ms: int, files: SegmentFiles = OS_FILES
    ) -> PartitionLog:
        """Create an empty log in `directory` or recover the one there.

        `files` is the file layer segment logs go through (lazy_files.py; default the OS).
        """
        directory.mkdir(parents=True, exist_ok=True)
        checkpoint = _read_checkpoint(directory / CHECKPOINT_FILE_NAME) or _Checkpoint()
        clean_shutdown_path = directory / CLEAN_SHUTDOWN_FILE_NAME
        clean_shutdown = clean_shutdown_path.exists()
        segments = _load_segments(directory, config, checkpoint, clean_shutdown, files)
        if not segments:
            segments = [LogSegment.create(directory, checkpoint.log_start_offset, files)]
        for segment in segments:
            if segment.size > 0:
                segment.rolling_base_ms = now_ms
        log = cls(directory, config, segments, files)
        log_end_offset = log._log_end_offset
        log._log_start_offset = min(
            max(checkpoint.log_start_offset, segments[0].base_offset), log_end_offset
        )
        log._recovery_point = (
            log_end_offset
            if clean_shutdown
            else max(min(checkpoint.recovery_point, log_end_offset), log._log_start_offset)
        )
        for segment in segments:
            if segment.next_offset <= log._recovery_point:
                segment.synced_size = segment.size
        log._high_watermark = max(
            min(checkpoint.high_watermark, log_end_offset), log._log_start_offset
        )
        # A crash between writing the log start checkpoint and deleting segments leaves some.
        log._delete_segments(log._count_segments_below(log._log_start_offset))
        log._first_dirty_offset = log._log_start_offset
        log._load_producer_state()
        if clean_shutdown:
            # From here on a crash is an unclean shutdown; make the removal durable.
            clean_shutdown_path.unlink()
        fsync_directory(directory)
        return log

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
        return self._high_watermark

    @high_watermark.setter
    def high_watermark(self, offset: int) -> None:
        """Set by the broker; kept within [log start offset, log end offset]."""
        self._high_watermark = max(min(offset, self._log_end_offset), self._log_start_offset)

    @property
    def recovery_point(self) -> int:
        """Every offset below this one is on disk (fdatasync'd)."""
        return self._recovery_point

    @property
    def size_in_bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    def segment_base_offsets(self) -> list[int]:
        return list(self._segment_base_offsets)

    def update_config(self, config: LogConfig) -> None:
        self._config = config

    # -- transactions and producers ----------------------------------------------------------

    @property
    def last_stable_offset(self) -> int:
        """min(first offset of every ongoing transaction, high watermark), never below the
        log start offset: where read_committed fetches stop."""
        first_unstable = self._producer_state.first_unstable_offset()
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
        index = max(bisect_right(self._segment_base_offsets, fetch_offset) - 1, 0)
        found: list[tuple[int, int]] = []
        for segment in self._segments[index:]:
            entries, complete = segment.txn_index.collect(fetch_offset, upper_bound_offset)
            found.extend((entry.producer_id, entry.first_offset) for entry in entries)
            if complete:
                break
        return found

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

    def _load_producer_state(self) -> None:
        """LogLoader's producer-state rebuild: newest usable snapshot, then replay headers."""
        directory = self.directory
        log_end_offset = self._log_end_offset
        # Snapshots past the recovered end describe batches that did not survive.
        delete_snapshots(directory, keep=len(snapshot_offsets(directory)), above=log_end_offset)
        state = ProducerStateManager()
        replay_from = self._segments[0].base_offset
        for offset in reversed(snapshot_offsets(directory)):
            try:
                data = snapshot_path(directory, offset).read_bytes()
            except OSError:
                continue
            if state.load_snapshot_bytes(data):
                replay_from = max(offset, replay_from)
                break
        for segment in self._segments:
            segment.txn_index.load()
            segment.txn_index.truncate_from(replay_from)
        for segment in self._segments:
            if segment.size == 0 or segment.next_offset <= replay_from:
                continue
            for position, header in iter_segment_batches(segment, replay_from):
                if header.producer_id < 0:
                    continue
                if header.is_control:
                    self._replay_marker(state, segment, position, header)
                else:
                    state.replay_data_batch(header, header.max_timestamp)
        self._producer_state = state

    @staticmethod
    def _replay_marker(
        state: ProducerStateManager, segment: LogSegment, position: int, header: BatchHeader
    ) -> None:
        records = decode_records(read_batch(segment, position, header))
        if not records or records[0].key is None or len(records[0].key) < _CONTROL_KEY.size:
            return
        _, control_type = _CONTROL_KEY.unpack_from(records[0].key)
        value = records[0].value
        coordinator_epoch = (
            _MARKER_VALUE.unpack_from(value)[1]
            if value is not None and len(value) >= _MARKER_VALUE.size
            else -1
        )
        entry = state.prepare_marker(
            header.producer_id, header.producer_epoch, coordinator_epoch, validate=False
        )
        last_stable_offset = state.last_stable_offset_after(header.producer_id, header.base_offset)
        first_offset = state.complete_marker(
            entry, header.producer_epoch, coordinator_epoch, header.max_timestamp
        )
        if first_offset is not None and control_type == CONTROL_TYPE_ABORT:
            segment.txn_index.append(
                AbortedTxn(header.producer_id, first_offset, header.base_offset, last_stable_offset)
            )

    # -- compaction --------------------------------------------------------------------------

    def clean(self, now_ms: int, force: bool = False) -> CleanResult:
        """Compact the log (cleanup.policy=compact): keep only each key's latest record.

        Cleanable are the inactive segments wholly below the first uncleanable offset:
        min(last stable offset, active segment base, first segment younger than
        min.compaction.lag.ms). The key map covers the whole log below the last stable
        offset (active segment included), without aborted data. In cleaned segments:
        superseded records, aborted transactional data and tombstones whose batch is older
        than delete.retention.ms go; control batches stay. Records without a key stay too
        (Kafka's cleaner drops them silently): their offsets are logged as a warning and
        returned in `CleanResult.keyless_offsets`. Runs only when at least
        min.cleanable.dirty.ratio of the cleanable bytes were written since the last clean
        by this process (the cleaner checkpoint is not persisted: the first clean after open
        sees everything dirty), or with `force`.
        """
        self._check_open()
        config = self._config
        if not config.compacts:
            return CleanResult(first_dirty_offset=self._first_dirty_offset)
        first_uncleanable = min(self.last_stable_offset, self._segments[-1].base_offset)
        compaction_horizon = now_ms - config.min_compaction_lag_ms
        cleanable: list[LogSegment] = []
        for segment in self._segments[:-1]:
            if segment.next_offset > first_uncleanable or (
                config.min_compaction_lag_ms > 0 and segment.largest_timestamp > compaction_horizon
            ):
                break
            cleanable.append(segment)
        total_bytes = sum(segment.size for segment in cleanable)
        dirty_bytes = sum(
            segment.size for segment in cleanable if segment.base_offset >= self._first_dirty_offset
        )
        if (
            not cleanable
            or total_bytes == 0
            or (
                not force
                and (
                    dirty_bytes == 0 or dirty_bytes / total_bytes < config.min_cleanable_dirty_ratio
                )
            )
        ):
            return CleanResult(first_dirty_offset=self._first_dirty_offset)
        aborted = [entry for segment in self._segments for entry in segment.txn_index.entries]
        offset_map = build_offset_map(self._segments, aborted, self.last_stable_offset)
        tracker = AbortedTracker(aborted)
        producer_last_offsets = self._producer_state.last_data_offsets()
        segments_cleaned = bytes_before = bytes_after = records_removed = 0
        keyless_offsets: list[int] = []
        for group in group_segments(cleanable, config.segment_bytes):
            swap_path, stats = write_cleaned_group(
                self.directory,
                group,
                offset_map,
                tracker,
                producer_last_offsets,
                now_ms,
                config.delete_retention_ms,
            )
            self._swap_in(group, swap_path)
            segments_cleaned += len(group)
            bytes_before += stats.bytes_before
            bytes_after += stats.bytes_after
            records_removed += stats.records_removed
            keyless_offsets.extend(stats.keyless_offsets)
        self._first_dirty_offset = cleanable[-1].next_offset
        if keyless_offsets:
            shown = ", ".join(str(offset) for offset in keyless_offsets[:_KEYLESS_OFFSETS_SHOWN])
            more = len(keyless_offsets) - _KEYLESS_OFFSETS_SHOWN
            logger.warning(
                "%s: kept %d record(s) without a key at offset(s) %s%s: a compacted topic "
                "cannot compact them",
                self.directory.name,
                len(keyless_offsets),
                shown,
                f" and {more} more" if more > 0 else "",
            )
        return CleanResult(
            segments_cleaned=segments_cleaned,
            bytes_before=bytes_before,
            bytes_after=bytes_after,
            records_removed=records_removed,
            first_dirty_offset=self._first_dirty_offset,
            keyless_offsets=tuple(keyless_offsets),
        )

    def _swap_in(self, group: list[LogSegment], swap_path: Path) -> None:
        """Replace `group` by the committed swap file (Kafka's replaceSegments)."""
        with self._lock:
            index = self._segments.index(group[0])
            del self._segments[index : index + len(group)]
            del self._segment_base_offsets[index : index + len(group)]
            self._directory_dirty = True
            for segment in group:
                segment.close_requested = True
                if segment.pins == 0:
                    segment.close_fd()
        for segment in group:
            segment.delete_files()
        fsync_directory(self.directory)
        finish_swap(swap_path)
        cleaned = LogSegment.open_existing(self.directory, group[0].base_offset, self._files)
        cleaned.recover(self._config.index_interval_bytes)
        cleaned.write_index_files()
        cleaned.synced_size = cleaned.size
        cleaned.rolling_base_ms = group[-1].rolling_base_ms
        with self._lock:
            self._segments.insert(index, cleaned)
            self._segment_base_offsets.insert(index, cleaned.base_offset)

    # -- append ------------------------------------------------------------------------------

    def append(
        self,
        records: bytes | memoryview,
        headers: list[BatchHeader],
        now_ms: int,
        partition_leader_epoch: int | None = None,
        origin: AppendOrigin = AppendOrigin.CLIENT,
    ) -> AppendInfo:
        """Append validated batches, assigning offsets from the log end offset.

        `headers` are the batches' parsed headers in order (the protocol layer's
        `BatchHeader`); the records themselves are never decoded. Batches with a producer id
        are checked against producer state first (ProducerAppendInfo): a retry of one of the
        producer's last five batches returns its original offsets with `duplicate=True` and
        writes nothing; OutOfOrderSequence, InvalidProducerEpoch and InvalidTxnState leave
        the log and the state untouched. State advances only after the write succeeded.
        """
        self._check_open()
        total_size, offset_count, message_count = self._measure(records, headers)
        first_offset = self._log_end_offset
        log_append_time_ms = self._log_append_time(now_ms)
        pending = self._producer_state.prepare_append(
            headers, first_offset, log_append_time_ms, origin
        )
        if isinstance(pending, BatchMetadata):
            return self._duplicate_info(pending)
        self._write(
            records,
            headers,
            first_offset,
            total_size,
            offset_count,
            message_count,
            now_ms,
            partition_leader_epoch,
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
        """Write a COMMIT or ABORT marker (WriteTxnMarkers) and end the producer's transaction.

        Raises InvalidProducerEpoch for an epoch older than the producer's and
        TransactionCoordinatorFenced for an older coordinator epoch. A marker for a producer
        without an ongoing transaction is written all the same (as Kafka does) but changes
        neither the last stable offset nor the transaction index. An ABORT of an ongoing
        transaction adds (producer id, first offset, marker offset, LSO) to the segment's
        transaction index.
        """
        self._check_open()
        entry = self._producer_state.prepare_marker(producer_id, producer_epoch, coordinator_epoch)
        control_type = CONTROL_TYPE_COMMIT if commit else CONTROL_TYPE_ABORT
        batch = encode_batch(
            [
                Record(
                    key=_CONTROL_KEY.pack(0, control_type),
                    value=_MARKER_VALUE.pack(0, coordinator_epoch),
                    timestamp=now_ms,
                )
            ],
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            base_sequence=-1,
            is_transactional=True,
            is_control=True,
            partition_leader_epoch=-1 if partition_leader_epoch is None else partition_leader_epoch,
        )
        headers = [read_batch_header(batch)]
        total_size, offset_count, message_count = self._measure(batch, headers)
        marker_offset = self._log_end_offset
        log_append_time_ms = self._log_append_time(now_ms)
        self._write(
            batch,
            headers,
            marker_offset,
            total_size,
            offset_count,
            message_count,
            now_ms,
            partition_leader_epoch,
            log_append_time_ms,
        )
        last_stable_offset = self._producer_state.last_stable_offset_after(
            producer_id, marker_offset
        )
        first_offset = self._producer_state.complete_marker(
            entry,
            producer_epoch,
            coordinator_epoch,
            now_ms if log_append_time_ms is None else log_append_time_ms,
        )
        if first_offset is not None and not commit:
            self._segments[-1].txn_index.append(
                AbortedTxn(producer_id, first_offset, marker_offset, last_stable_offset)
            )
        return self._finish_append(headers, marker_offset, offset_count, now_ms, log_append_time_ms)

    def _measure(
        self, records: bytes | memoryview, headers: list[BatchHeader]
    ) -> tuple[int, int, int]:
        """(total bytes, offsets, records) of the batches; checks max.message.bytes."""
        if not headers:
            raise ValueError("append needs at least one batch")
        max_message_bytes = self._config.max_message_bytes
        total_size = 0
        offset_count = 0
        message_count = 0
        for header in headers:
            size = header.batch_length + LOG_OVERHEAD
            if size > max_message_bytes:
                raise RecordBatchTooLarge(
                    f"batch of {size} bytes exceeds max.message.bytes {max_message_bytes}"
                )
            total_size += size
            offset_count += header.last_offset_delta + 1
            message_count += header.records_count
        if total_size != len(records):
            raise ValueError(f"headers describe {total_size} bytes, records hold {len(records)}")
        return total_size, offset_count, message_count

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
        segment = self._segments[-1]
        if self._should_roll(segment, total_size, last_offset, now_ms):
            segment = self._roll(first_offset)
        if segment.rolling_base_ms is None:
            segment.rolling_base_ms = now_ms
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
        with self._lock:
            segment.size = position + total_size
            self._log_end_offset = last_offset + 1
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
    ) -> AppendInfo:
        if log_append_time_ms is not None:
            max_timestamp, offset_of_max_timestamp = log_append_time_ms, first_offset
        else:
            max_timestamp, offset_of_max_timestamp = -1, -1
            base_offset = first_offset
            for header in headers:
                if header.max_timestamp > max_timestamp:
                    max_timestamp, offset_of_max_timestamp = header.max_timestamp, base_offset
                base_offset += header.last_offset_delta + 1
        if (
            self._appended_messages - self._flushed_messages >= self._config.flush_messages
            or self.flush_due(now_ms)
        ):
            self.flush()
        return AppendInfo(
            first_offset=first_offset,
            last_offset=first_offset + offset_count - 1,
            max_timestamp=max_timestamp,
            offset_of_max_timestamp=offset_of_max_timestamp,
            log_append_time_ms=-1 if log_append_time_ms is None else log_append_time_ms,
            log_start_offset=self._log_start_offset,
        )

    def _duplicate_info(self, batch: BatchMetadata) -> AppendInfo:
        log_append_time = self._config.message_timestamp_type == "LogAppendTime"
        return AppendInfo(
            first_offset=batch.first_offset,
            last_offset=batch.last_offset,
            max_timestamp=batch.max_timestamp,
            offset_of_max_timestamp=batch.first_offset,
            log_append_time_ms=batch.max_timestamp if log_append_time else -1,
            log_start_offset=self._log_start_offset,
            duplicate=True,
        )

    def _should_roll(
        self, segment: LogSegment, append_size: int, last_offset: int, now_ms: int
    ) -> bool:
        if segment.size == 0:
            return False
        config = self._config
        return (
            segment.size + append_size > config.segment_bytes
            or (
                segment.rolling_base_ms is not None
                and now_ms - segment.rolling_base_ms > config.segment_ms
            )
            or len(segment.offset_index) >= max(config.segment_index_bytes // 8, 1)
            or not segment.can_hold_offset(last_offset)
        )

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

    # -- read --------------------------------------------------------------------------------

    def read(
        self, fetch_offset: int, max_bytes: int, max_offset: int, min_one_batch: bool
    ) -> ReadResult:
        """Whole batches holding offsets from `fetch_offset`, below `max_offset`.

        The first batch may start before `fetch_offset` (clients skip the records before it).
        Batches come from one segment; the next segment is used when the one holding
        `fetch_offset` has nothing at or after it.
        """
        self._check_open()
        log_end_offset = self._log_end_offset
        if fetch_offset < self._log_start_offset or fetch_offset > log_end_offset:
            raise OffsetOutOfRange(fetch_offset, self._log_start_offset, log_end_offset)
        max_offset = min(max_offset, log_end_offset)
        if fetch_offset >= max_offset:
            return ReadResult(b"", None)
        segments = self._segments
        index = max(bisect_right(self._segment_base_offsets, fetch_offset) - 1, 0)
        for segment in segments[index:]:
            if segment.base_offset >= max_offset:
                break
            end_position = segment.size
            start = segment.find_batch(fetch_offset, end_position)
            if start is None:
                continue
            if start.base_offset >= max_offset:
                break
            records = segment.read_batches(
                start, max_bytes, max_offset, min_one_batch, end_position
            )
            return ReadResult(records, start.base_offset if records else None)
        return ReadResult(b"", None)

    # -- timestamps --------------------------------------------------------------------------

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """ListOffsets by timestamp: (offset, timestamp) of the first record at or after the
        log start offset whose timestamp is >= `timestamp_ms`, or None.

        Per record, as Kafka's UnifiedLog.fetchOffsetByTimestamp: the batch found by the
        time index is decompressed and its records' timestamps read (with LogAppendTime
        every record carries the batch's time). Not bounded by the high watermark: the
        caller filters.
        """
        log_start_offset = self._log_start_offset
        for segment in self._segments:
            if segment.max_timestamp < timestamp_ms or segment.next_offset <= log_start_offset:
                continue
            found = segment.find_offset_by_timestamp(timestamp_ms, log_start_offset, segment.size)
            if found is not None:
                return found
        return None

    def max_timestamp_offset(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the record with the largest timestamp (ListOffsets -3,
        KIP-734): the first record carrying it, found inside its batch; the offset is raised
        to the log start offset. None when no batch has a timestamp.
        """
        best: LogSegment | None = None
        for segment in self._segments:
            if segment.max_timestamp >= 0 and (
                best is None or segment.max_timestamp > best.max_timestamp
            ):
                best = segment
        if best is None:
            return None
        found = best.find_max_timestamp_record(best.size)
        if found is None:
            # No record carries it (an emptied batch after compaction): the batch's offset.
            found = (best.offset_of_max_timestamp, best.max_timestamp)
        return max(found[0], self._log_start_offset), found[1]

    # -- durability --------------------------------------------------------------------------

    def flush_due(self, now_ms: int) -> bool:
        """Whether the oldest unflushed append is flush.ms old (for a flush scheduler)."""
        oldest = self._oldest_unflushed_append_ms
        return oldest is not None and now_ms - oldest >= self._config.flush_ms

    def flush(self) -> int:
        """fdatasync everything appended so far and advance the recovery point; thread-safe.

        Returns the new recovery point.
        """
        with self._lock:
            if self._closed:
                return self._recovery_point
            target_offset = self._log_end_offset
            target_messages = self._appended_messages
            pending = [
                (segment, segment.size)
                for segment in self._segments
                if segment.synced_size < segment.size
            ]
            for segment, _ in pending:
                segment.pins += 1
            sync_directory = self._directory_dirty
            self._directory_dirty = False
        try:
            for segment, _ in pending:
                segment.files.fdatasync(segment.fd)
            if sync_directory:
                fsync_directory(self.directory)
        finally:
            with self._lock:
                for segment, size in pending:
                    segment.synced_size = max(segment.synced_size, size)
                    segment.pins -= 1
                    if segment.close_requested and segment.pins == 0:
                        segment.close_fd()
        with self._lock:
            advanced = target_offset > self._recovery_point
            if advanced:
                self._recovery_point = target_offset
            self._flushed_messages = max(self._flushed_messages, target_messages)
            if self._flushed_messages == self._appended_messages:
                self._oldest_unflushed_append_ms = None
            recovery_point = self._recovery_point
        if advanced:
            # Written after the data is on disk, so the file never claims more than is there;
            # not fsynced: a stale recovery point only means a longer scan on recovery.
            self._write_checkpoint(sync=False)
        return recovery_point

    def _write_checkpoint(self, sync: bool) -> None:
        with self._checkpoint_lock:
            if self._deleted:
                return
            text = (
                f"version: {_CHECKPOINT_VERSION}\n"
                f"log_start_offset: {self._log_start_offset}\n"
                f"recovery_point: {self._recovery_point}\n"
                f"high_watermark: {self._high_watermark}\n"
            )
            write_file_atomically(
                self.directory / CHECKPOINT_FILE_NAME, text.encode(), durable=sync
            )

    # -- deletion ----------------------------------------------------------------------------

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: raise the log start offset to `offset`; returns the low watermark.

        The caller bounds `offset` by the high watermark. Segments wholly below the new log
        start offset are deleted.
        """
        self._check_open()
        offset = min(offset, self._log_end_offset)
        if offset <= self._log_start_offset:
            return self._log_start_offset
        active = self._segments[-1]
        if offset >= active.next_offset and active.size > 0:
            self._roll(self._log_end_offset)
        self._log_start_offset = offset
        self._high_watermark = max(self._high_watermark, offset)
        self._write_checkpoint(sync=True)
        self._delete_segments(self._count_segments_below(offset))
        return self._log_start_offset

    def enforce_retention(self, now_ms: int) -> int:
        """Delete old segments by retention.bytes and retention.ms; returns bytes deleted.

        Kafka's UnifiedLog.deleteOldSegments: segments wholly below the log start offset
        always go; with cleanup.policy containing delete, then the oldest segments while the
        log stays over retention.bytes without them, then the oldest whose largest timestamp
        is more than retention.ms old. A segment goes only when every offset it holds is
        below the high watermark, and the active segment only when it is not empty: a new
        empty segment is rolled at the log end first (a log always has one), so the log
        start offset can reach the log end offset. An empty or a non-delete cleanup.policy
        deletes nothing by time or size.
        """
        self._check_open()
        config = self._config
        segments = self._segments
        high_watermark = self._high_watermark
        log_end_offset = self._log_end_offset

        def deletable(number: int) -> bool:
            if number >= len(segments):
                return False
            if number == len(segments) - 1:
                return segments[number].size > 0 and high_watermark >= log_end_offset
            return high_watermark >= segments[number + 1].base_offset

        count = self._count_segments_below(self._log_start_offset)
        if config.deletes and config.retention_bytes >= 0:
            excess = (
                self.size_in_bytes
                - sum(segment.size for segment in segments[:count])
                - config.retention_bytes
            )
            while deletable(count) and excess - segments[count].size >= 0:
                excess -= segments[count].size
                count += 1
        if config.deletes and config.retention_ms >= 0:
            while (
                deletable(count)
                and now_ms - segments[count].largest_timestamp > config.retention_ms
            ):
                count += 1
        if not count:
            return 0
        if count == len(segments):
            self._roll(log_end_offset)
        deleted_bytes = self._delete_segments(count)
        new_start = self._segments[0].base_offset
        if new_start > self._log_start_offset:
            self._log_start_offset = new_start
            self._high_watermark = max(self._high_watermark, new_start)
            self._write_checkpoint(sync=False)
        return deleted_bytes

    def _count_segments_below(self, offset: int) -> int:
        """How many leading segments hold only offsets below `offset` (never all of them)."""
        count = 0
        for segment in self._segments[:-1]:
            if segment.next_offset > offset:
                break
            count += 1
        return count

    def _delete_segments(self, count: int) -> int:
        with self._lock:
            doomed = self._segments[:count]
            del self._segments[:count]
            del self._segment_base_offsets[:count]
            self._directory_dirty = True
            for segment in doomed:
                segment.close_requested = True
                if segment.pins == 0:
                    segment.close_fd()
        for segment in doomed:
            segment.delete_files()
        return sum(segment.size for segment in doomed)

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
                segment.close_requested = True
                if segment.pins == 0:
                    segment.close_fd()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"log {self.directory} is closed")


def _load_segments(
    directory: Path,
    config: LogConfig,
    checkpoint: _Checkpoint,
    clean_shutdown: bool,
    files: SegmentFiles = OS_FILES,
) -> list[LogSegment]:
    base_offsets = _segment_base_offsets(directory)
    segments = [LogSegment.open_existing(directory, base, files) for base in base_offsets]
    # Segments from the one holding the recovery point on may hold unflushed (torn) bytes.
    first_unflushed = len(segments) - 1
    if not clean_shutdown:
        first_unflushed = max(bisect_right(base_offsets, checkpoint.recovery_point) - 1, 0)
    for number, segment in enumerate(segments):
        if number < first_unflushed:
            if not segment.load(config.index_interval_bytes, verify_tail_crc=False):
                segment.recover(config.index_interval_bytes)
            continue
        last = number == len(segments) - 1
        if (
            clean_shutdown
            and segment.load(config.index_interval_bytes, verify_tail_crc=True)
            and last
        ):
            continue
        truncated = segment.recover(config.index_interval_bytes)
        if not last and (truncated or segment.next_offset < segments[number + 1].base_offset):
            # Everything after a torn or corrupt batch is unreachable: drop later segments. So
            # is everything after a segment that ends short of the next one's base offset (its
            # unsynced tail was lost while later segment files survived, as after a power cut).
            for later in segments[number + 1 :]:
                later.close_fd()
                later.delete_files()
            del segments[number + 1 :]
            break
    # Index files of every segment but the active one are written once, on roll; a rebuilt
    # index must be written again or the next load would rebuild it once more.
    for segment in segments[:-1]:
        if segment.index_files_stale:
            segment.write_index_files()
    _remove_orphan_index_files(directory, {segment.base_offset for segment in segments})
    return segments


def _remove_orphan_index_files(directory: Path, base_offsets: set[int]) -> None:
    for path in directory.iterdir():
        if (
            path.suffix in (INDEX_FILE_SUFFIX, TIME_INDEX_FILE_SUFFIX, TXN_INDEX_FILE_SUFFIX)
            and path.stem.isdigit()
            and int(path.stem) not in base_offsets
        ):
            path.unlink()
