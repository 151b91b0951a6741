"""LogLoader: opening a partition log directory and recovering it to a consistent state.

Kafka's LogLoader. Segments past the recovery-point checkpoint are scanned batch by batch
(length, magic, CRC, growing offsets) and cut at the first bad batch; after a clean shutdown
only the tail after the last index entry is checked. The leader-epoch cache
(`leader-epoch-checkpoint`) is trimmed to the recovered log, `[log start offset, log end
offset)`, and takes the epochs of the batches recovery scanned. Producer state (idempotence
and transactions, producer_state.py) is loaded from the newest snapshot at or below the
recovered log end offset and rebuilt by replaying batch headers from there; the
aborted-transaction indexes of the replayed range are rebuilt with it. An interrupted
compaction swap is finished (or discarded) before any segment is opened (cleaner.py).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from odradek.protocol.record_batch import BatchHeader
from odradek.storage import log_retention
from odradek.storage._files import fsync_directory, write_file_atomically
from odradek.storage.cleaner import complete_interrupted_swaps, iter_segment_batches, read_batch
from odradek.storage.index import AbortedTxn
from odradek.storage.lazy_files import OS_FILES, SegmentFiles
from odradek.storage.leader_epoch import LeaderEpochCheckpointFile, LeaderEpochFileCache
from odradek.storage.log_append import CONTROL_TYPE_ABORT, parse_marker
from odradek.storage.log_types import LogConfig
from odradek.storage.producer_state import (
    ProducerStateManager,
    delete_snapshots,
    snapshot_offsets,
    snapshot_path,
)
from odradek.storage.segment import (
    INDEX_FILE_SUFFIX,
    LOG_FILE_SUFFIX,
    TIME_INDEX_FILE_SUFFIX,
    TXN_INDEX_FILE_SUFFIX,
    LogSegment,
)

if TYPE_CHECKING:
    from odradek.storage.log import PartitionLog

__all__ = [
    "CHECKPOINT_FILE_NAME",
    "CLEAN_SHUTDOWN_FILE_NAME",
    "LogCheckpoint",
    "apply_marker",
    "load_leader_epoch_cache",
    "load_producer_state",
    "load_segments",
    "open_log",
    "read_checkpoint",
    "write_checkpoint",
]

CHECKPOINT_FILE_NAME = "log-state.checkpoint"
CLEAN_SHUTDOWN_FILE_NAME = ".kafka_cleanshutdown"
_CHECKPOINT_VERSION = 0


@dataclass(frozen=True, slots=True)
class LogCheckpoint:
    """The offsets a partition keeps in `log-state.checkpoint` (Kafka keeps them in three
    per-directory files: log-start-offset, recovery-point and replication-offset)."""

    log_start_offset: int = 0
    recovery_point: int = 0
    high_watermark: int = 0


def read_checkpoint(path: Path) -> LogCheckpoint | None:
    """The checkpoint at `path`; None when it is missing or unreadable."""
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
        return LogCheckpoint(
            log_start_offset=values["log_start_offset"],
            recovery_point=values["recovery_point"],
            high_watermark=values["high_watermark"],
        )
    except KeyError:
        return None


def write_checkpoint(path: Path, checkpoint: LogCheckpoint, durable: bool) -> None:
    """Replace the checkpoint at `path` atomically (fsynced with `durable`)."""
    text = (
        f"version: {_CHECKPOINT_VERSION}\n"
        f"log_start_offset: {checkpoint.log_start_offset}\n"
        f"recovery_point: {checkpoint.recovery_point}\n"
        f"high_watermark: {checkpoint.high_watermark}\n"
    )
    write_file_atomically(path, text.encode(), durable=durable)


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


def load_segments(
    directory: Path,
    config: LogConfig,
    checkpoint: LogCheckpoint,
    clean_shutdown: bool,
    files: SegmentFiles = OS_FILES,
    epoch_starts: list[tuple[int, int]] | None = None,
) -> list[LogSegment]:
    """Open and check every segment in `directory`, oldest first (possibly none).

    Segments from the one holding the recovery point on are recovered (every batch
    checked); `epoch_starts` collects the (leader epoch, base offset) where each newer epoch
    begins in the recovered batches. A segment that ends short of the next one's base offset
    (or was cut) ends the log: later segments are deleted.
    """
    base_offsets = _segment_base_offsets(directory)
    segments = [LogSegment.open_existing(directory, base, files) for base in base_offsets]
    # Segments from the one holding the recovery point on may hold unflushed (torn) bytes.
    first_unflushed = len(segments) - 1
    if not clean_shutdown:
        first_unflushed = max(bisect_right(base_offsets, checkpoint.recovery_point) - 1, 0)
    for number, segment in enumerate(segments):
        if number < first_unflushed:
            if not segment.load(config.index_interval_bytes, verify_tail_crc=False):
                segment.recover(config.index_interval_bytes, epoch_starts)
            continue
        last = number == len(segments) - 1
        if (
            clean_shutdown
            and segment.load(config.index_interval_bytes, verify_tail_crc=True)
            and last
        ):
            continue
        truncated = segment.recover(config.index_interval_bytes, epoch_starts)
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


def load_leader_epoch_cache(
    directory: Path,
    epoch_starts: list[tuple[int, int]],
    log_start_offset: int,
    log_end_offset: int,
) -> LeaderEpochFileCache:
    """The partition's leader-epoch cache, made to describe the recovered log.

    Kafka's LogLoader: entries at or past the recovered log end offset are dropped (their
    batches were lost), entries below the log start offset are dropped (the earliest epoch
    left starts at the log start offset), and epochs found in recovered batches that are
    newer than every cached one are assigned. Raises LeaderEpochCheckpointCorrupt.
    """
    cache = LeaderEpochFileCache(LeaderEpochCheckpointFile.in_directory(directory))
    cache.truncate_from_end(log_end_offset)
    for epoch, start_offset in epoch_starts:
        latest = cache.latest_epoch
        if start_offset < log_end_offset and (latest is None or epoch > latest):
            cache.assign(epoch, start_offset)
    earliest = cache.earliest_entry
    if earliest is not None and earliest.start_offset < log_start_offset:
        cache.truncate_from_start(log_start_offset)
    return cache


def load_producer_state(
    directory: Path, segments: list[LogSegment], log_end_offset: int
) -> ProducerStateManager:
    """LogLoader's producer-state rebuild: newest usable snapshot, then replay headers.

    Snapshots past `log_end_offset` are deleted (they describe batches that did not
    survive). Each segment's transaction index is reloaded from its file, cut at the replay
    start and rebuilt by the replay.
    """
    delete_snapshots(directory, keep=len(snapshot_offsets(directory)), above=log_end_offset)
    state = ProducerStateManager()
    replay_from = segments[0].base_offset
    for offset in reversed(snapshot_offsets(directory)):
        try:
            data = snapshot_path(directory, offset).read_bytes()
        except OSError:
            continue
        if state.load_snapshot_bytes(data):
            replay_from = max(offset, replay_from)
            break
    for segment in segments:
        segment.txn_index.load()
        segment.txn_index.truncate_from(replay_from)
    for segment in segments:
        if segment.size == 0 or segment.next_offset <= replay_from:
            continue
        for position, header in iter_segment_batches(segment, replay_from):
            if header.producer_id < 0:
                continue
            if header.is_control:
                apply_marker(state, segment, header, read_batch(segment, position, header))
            else:
                state.replay_data_batch(header, header.max_timestamp)
    return state


def apply_marker(
    state: ProducerStateManager, segment: LogSegment, header: BatchHeader, batch: bytes
) -> None:
    """Apply a COMMIT/ABORT control batch already in `segment` to `state`, without checks.

    Ends the producer's transaction; an ABORT of an ongoing transaction adds its aborted
    range to `segment`'s transaction index (recovery and a follower's append alike).
    """
    marker = parse_marker(batch)
    if marker is None:
        return
    control_type, coordinator_epoch = marker
    entry = state.prepare_marker(
        header.producer_id, header.producer_epoch, coordinator_epoch, validate=False
    )
    last_stable_offset = state.last_stable_offset_after(header.producer_id, header.base_offset)
    first_offset = state.complete_marker(
        entry, header.producer_epoch, coordinator_epoch, header.max_timestamp, header.base_offset
    )
    if first_offset is not None and control_type == CONTROL_TYPE_ABORT:
        segment.txn_index.append(
            AbortedTxn(header.producer_id, first_offset, header.base_offset, last_stable_offset)
        )


def open_log(
    log_class: type[PartitionLog],
    directory: Path,
    config: LogConfig,
    now_ms: int,
    files: SegmentFiles,
    leader_epoch: int | None,
) -> PartitionLog:
    """Create an empty log in `directory` or recover the one there: PartitionLog.open's
    work (Kafka's LogLoader.load and UnifiedLog's construction from what it loaded).

    Segments are loaded and recovered, the offsets restored from the checkpoint (the
    recovery point is the log end after a clean shutdown), segments wholly below the log
    start offset deleted, the leader-epoch cache and producer state loaded; then the
    clean-shutdown marker is removed, durably.
    """
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = read_checkpoint(directory / CHECKPOINT_FILE_NAME) or LogCheckpoint()
    clean_shutdown_path = directory / CLEAN_SHUTDOWN_FILE_NAME
    clean_shutdown = clean_shutdown_path.exists()
    epoch_starts: list[tuple[int, int]] = []
    segments = load_segments(directory, config, checkpoint, clean_shutdown, files, epoch_starts)
    if not segments:
        segments = [LogSegment.create(directory, checkpoint.log_start_offset, files)]
    for segment in segments:
        if segment.size > 0:
            segment.rolling_base_ms = now_ms
    log = log_class(directory, config, segments, files)
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
    log._high_watermark = max(min(checkpoint.high_watermark, log_end_offset), log._log_start_offset)
    # A crash between writing the log start checkpoint and deleting segments leaves some.
    log_retention.delete_segments(
        log, log_retention.count_segments_below(log._segments, log._log_start_offset)
    )
    log._first_dirty_offset = log._log_start_offset
    log._leader_epoch_cache = load_leader_epoch_cache(
        directory, epoch_starts, log._log_start_offset, log_end_offset
    )
    if leader_epoch is None:
        log.leader_epoch = -1
    else:
        log.leader_epoch = leader_epoch
        if log._leader_epoch_cache.is_empty():
            # Derived again on every open, so it need not be durable.
            log._leader_epoch_cache.assign(leader_epoch, log._log_start_offset, durable=False)
    log._producer_state = load_producer_state(directory, log._segments, log_end_offset)
    if clean_shutdown:
        # From here on a crash is an unclean shutdown; make the removal durable.
        clean_shutdown_path.unlink()
    fsync_directory(directory)
    return log
