"""The storage half of replication: leader epochs in the log, follower appends, truncation.

A "leader" and a "follower" are two PartitionLogs in two directories; the follower appends
exactly the bytes the leader's `read` returns, as a replica fetcher would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from storage_helpers import (
    append,
    headers_of,
    idempotent_batch,
    make_batch,
    read_everything,
    small_config,
)

from odradek.protocol.record_batch import BatchHeader, read_batch_header
from odradek.storage.errors import CorruptRecord, OffsetsOutOfOrder
from odradek.storage.lazy_files import LazyFiles
from odradek.storage.leader_epoch import CHECKPOINT_FILE_NAME, EpochEntry, decode_checkpoint
from odradek.storage.log import LogConfig, PartitionLog
from odradek.storage.segment import LogSegment

P1, P2, P3 = 1001, 1002, 1003


def _open(
    directory: Path, config: LogConfig | None = None, leader_epoch: int | None = 0
) -> PartitionLog:
    return PartitionLog.open(directory, config or small_config(), 0, leader_epoch=leader_epoch)


def _raw(log: PartitionLog, start: int = 0, end: int | None = None) -> bytes:
    """The log's bytes from `start` to `end` (whole batches), read as a fetch would."""
    end = log.log_end_offset if end is None else end
    out = b""
    offset = start
    while offset < end:
        data = bytes(log.read(offset, 1 << 20, end, min_one_batch=True).records)
        assert data
        out += data
        offset = headers_of(data)[-1].next_offset
    return out


def _replicate(leader: PartitionLog, follower: PartitionLog, chunk_batches: int = 1) -> None:
    """Fetch from the follower's log end offset until caught up, `chunk_batches` at a time."""
    while follower.log_end_offset < leader.log_end_offset:
        data = bytes(
            leader.read(follower.log_end_offset, 1 << 20, leader.log_end_offset, True).records
        )
        headers = headers_of(data)[:chunk_batches]
        size = sum(header.size for header in headers)
        assert follower.append_as_follower(data[:size], now_ms=0) is not None


def _checkpoint(directory: Path) -> list[EpochEntry]:
    return decode_checkpoint((directory / CHECKPOINT_FILE_NAME).read_bytes())


def _txn_workload(leader: PartitionLog) -> None:
    """P1 aborts, P2 commits, P3 stays open; plain and idempotent data in between."""
    leader.append(*_batch(idempotent_batch(P1, 0, 0, count=2, transactional=True, tag=1)), 0)
    append(leader, make_batch(2, tag=2))
    leader.append(*_batch(idempotent_batch(P2, 0, 0, count=3, transactional=True, tag=3)), 0)
    leader.append(*_batch(idempotent_batch(P1, 0, 2, count=1, transactional=True, tag=4)), 0)
    leader.append_control(P1, 0, commit=False, coordinator_epoch=5, now_ms=0)
    leader.append(*_batch(idempotent_batch(P3, 0, 0, count=2, transactional=True, tag=5)), 0)
    leader.append_control(P2, 0, commit=True, coordinator_epoch=5, now_ms=0)
    append(leader, make_batch(1, tag=6))


def _batch(data: bytes) -> tuple[bytes, list[BatchHeader]]:
    return data, headers_of(data)


# -- leader epochs on the leader ---------------------------------------------------------


def test_single_broker_log_leads_in_epoch_zero(log_dir: Path) -> None:
    log = _open(log_dir)
    assert log.leader_epoch == 0
    assert log.leader_epoch_cache.epoch_entries() == [EpochEntry(0, 0)]
    append(log, make_batch(3))
    log.append_control(P1, 0, commit=True, coordinator_epoch=0, now_ms=0)
    assert {header.partition_leader_epoch for header in read_everything(log)} == {0}
    assert log.end_offset_for_epoch(0) == (0, 4)
    assert log.end_offset_for_epoch(1) == (-1, -1)
    assert log.end_offset_for_epoch(-1) == (-1, -1)
    log.close()
    assert _checkpoint(log_dir) == [EpochEntry(0, 0)]


def test_new_leader_epoch_is_stamped_and_assigned(log_dir: Path) -> None:
    log = _open(log_dir)
    append(log, make_batch(2))
    log.leader_epoch = 3
    append(log, make_batch(2), make_batch(1))
    log.append_control(P1, 0, commit=False, coordinator_epoch=0, now_ms=0)
    assert [h.partition_leader_epoch for h in read_everything(log)] == [0, 3, 3, 3]
    assert _checkpoint(log_dir) == [EpochEntry(0, 0), EpochEntry(3, 2)]
    assert log.end_offset_for_epoch(0) == (0, 2)
    assert log.end_offset_for_epoch(2) == (0, 2)
    assert log.end_offset_for_epoch(3) == (3, 6)


def test_recovery_trims_epochs_of_lost_batches(tmp_path: Path) -> None:
    files = LazyFiles()
    directory = tmp_path / "t-0"
    log = PartitionLog.open(directory, small_config(), 0, files)
    append(log, make_batch(2))
    log.flush()
    log.leader_epoch = 4
    append(log, make_batch(2))  # epoch 4 assigned durably, its batch never fsynced
    assert _checkpoint(directory)[-1] == EpochEntry(4, 2)
    files.power_cut()
    reopened = PartitionLog.open(directory, small_config(), 0, LazyFiles())
    assert reopened.log_end_offset == 2
    assert reopened.leader_epoch_cache.epoch_entries() == [EpochEntry(0, 0)]


def test_recovery_rebuilds_lost_checkpoint_from_scanned_batches(tmp_path: Path) -> None:
    files = LazyFiles()
    directory = tmp_path / "t-0"
    log = PartitionLog.open(directory, small_config(), 0, files)
    log.leader_epoch = 2
    append(log, make_batch(2))
    log.leader_epoch = 5
    append(log, make_batch(2))
    files.power_cut()
    (directory / CHECKPOINT_FILE_NAME).unlink()
    reopened = PartitionLog.open(directory, small_config(), 0, LazyFiles(), leader_epoch=None)
    assert reopened.log_end_offset == 0  # nothing was fsynced
    assert reopened.leader_epoch_cache.epoch_entries() == []
    # With the data on disk, a rescan (unclean shutdown) finds both epochs again.
    log = _open(tmp_path / "u-0")
    log.leader_epoch = 2
    append(log, make_batch(2))
    log.leader_epoch = 5
    append(log, make_batch(2))
    log.flush()
    (tmp_path / "u-0" / CHECKPOINT_FILE_NAME).unlink()
    (tmp_path / "u-0" / "log-state.checkpoint").unlink()
    again = _open(tmp_path / "u-0", leader_epoch=None)
    assert again.leader_epoch_cache.epoch_entries() == [EpochEntry(2, 0), EpochEntry(5, 2)]


def test_retention_moves_the_earliest_epoch_start(log_dir: Path) -> None:
    log = _open(log_dir)
    append(log, make_batch(2))
    log.leader_epoch = 1
    append(log, make_batch(2))
    log.high_watermark = log.log_end_offset
    log.delete_records_before(3)
    assert log.leader_epoch_cache.epoch_entries() == [EpochEntry(1, 3)]


# -- follower appends ----------------------------------------------------------------------


def test_follower_append_keeps_offsets_epochs_and_bytes(tmp_path: Path) -> None:
    leader = _open(tmp_path / "leader")
    append(leader, make_batch(2), make_batch(3))
    leader.leader_epoch = 2
    append(leader, make_batch(1))
    follower = _open(tmp_path / "follower", leader_epoch=None)
    _replicate(leader, follower, chunk_batches=2)
    assert _raw(follower) == _raw(leader)
    assert follower.log_end_offset == 6
    assert follower.high_watermark == 0  # the fetcher sets it from the leader's
    follower.high_watermark = 100
    assert follower.high_watermark == 6  # min(leader HW, own log end offset)
    assert follower.leader_epoch_cache.epoch_entries() == [EpochEntry(0, 0), EpochEntry(2, 5)]
    assert _checkpoint(tmp_path / "follower") == [EpochEntry(0, 0), EpochEntry(2, 5)]
    assert follower.end_offset_for_epoch(0) == leader.end_offset_for_epoch(0) == (0, 5)


def test_follower_rebuilds_producer_state_so_a_retry_after_failover_is_a_duplicate(
    tmp_path: Path,
) -> None:
    leader = _open(tmp_path / "leader")
    infos = [
        leader.append(*_batch(idempotent_batch(P1, 0, seq * 2, count=2, tag=seq)), 0)
        for seq in range(3)
    ]
    follower = _open(tmp_path / "follower", leader_epoch=None)
    _replicate(leader, follower)
    # Failover: the follower leads in epoch 1; the producer retries its last batch.
    follower.leader_epoch = 1
    follower.maybe_assign_epoch_start_offset(1, follower.log_end_offset)
    retry = follower.append(*_batch(idempotent_batch(P1, 0, 4, count=2, tag=2)), 0)
    assert retry.duplicate
    assert (retry.first_offset, retry.last_offset) == (infos[2].first_offset, infos[2].last_offset)
    assert follower.log_end_offset == 6
    following = follower.append(*_batch(idempotent_batch(P1, 0, 6, count=1, tag=3)), 0)
    assert not following.duplicate
    assert following.first_offset == 6
    assert read_everything(follower)[-1].partition_leader_epoch == 1
    assert follower.leader_epoch_cache.epoch_entries() == [EpochEntry(0, 0), EpochEntry(1, 6)]


@pytest.mark.parametrize("chunk_batches", [1, 3, 100])
def test_follower_transaction_index_matches_the_leader(tmp_path: Path, chunk_batches: int) -> None:
    leader = _open(tmp_path / "leader")
    _txn_workload(leader)
    follower = _open(tmp_path / "follower", leader_epoch=None)
    _replicate(leader, follower, chunk_batches)
    for log in (leader, follower):
        log.high_watermark = log.log_end_offset
    end = leader.log_end_offset
    assert follower.aborted_transactions(0, end) == leader.aborted_transactions(0, end) == [(P1, 0)]
    assert follower.last_stable_offset == leader.last_stable_offset == 9
    assert follower.ongoing_transactions() == leader.ongoing_transactions()
    assert follower.producer_states() == leader.producer_states()
    # The follower takes over: P3 commits there, and read_committed sees it end.
    follower.append_control(P3, 0, commit=True, coordinator_epoch=5, now_ms=0)
    follower.high_watermark = follower.log_end_offset
    assert follower.last_stable_offset == follower.log_end_offset
    # And it survives a restart of the follower (snapshot + replay).
    follower.close()
    reopened = _open(tmp_path / "follower", leader_epoch=None)
    reopened.high_watermark = reopened.log_end_offset
    assert reopened.aborted_transactions(0, end) == [(P1, 0)]
    assert reopened.ongoing_transactions() == []


def test_follower_refuses_offsets_that_do_not_continue_the_log(tmp_path: Path) -> None:
    leader = _open(tmp_path / "leader")
    append(leader, make_batch(2), make_batch(2), make_batch(2))
    follower = _open(tmp_path / "follower", leader_epoch=None)
    follower.append_as_follower(_raw(leader, 0, 4), 0)
    with pytest.raises(OffsetsOutOfOrder) as refused:
        follower.append_as_follower(_raw(leader, 2, 6), 0)  # starts below the LEO
    assert (refused.value.first_offset, refused.value.log_end_offset) == (2, 4)
    batches = _raw(leader, 4, 6)
    with pytest.raises(OffsetsOutOfOrder):
        follower.append_as_follower(batches + batches, 0)  # second batch goes backwards
    assert follower.log_end_offset == 4
    assert _raw(follower) == _raw(leader, 0, 4)
    # A gap (a compacted leader log) is accepted; a trailing partial batch is ignored.
    gap = bytearray(batches)
    gap[0:8] = (9).to_bytes(8, "big")
    info = follower.append_as_follower(bytes(gap) + batches[:20], 0)
    assert info is not None
    assert (info.first_offset, info.last_offset) == (9, 10)
    assert follower.log_end_offset == 11
    assert follower.append_as_follower(batches[:20], 0) is None


def test_follower_refuses_a_corrupt_batch(tmp_path: Path) -> None:
    leader = _open(tmp_path / "leader")
    append(leader, make_batch(2))
    follower = _open(tmp_path / "follower", leader_epoch=None)
    corrupt = bytearray(_raw(leader))
    corrupt[-1] ^= 0xFF
    with pytest.raises(CorruptRecord):
        follower.append_as_follower(bytes(corrupt), 0)
    assert follower.log_end_offset == 0


# -- truncation ----------------------------------------------------------------------------


def _epoch_log(directory: Path, config: LogConfig | None = None) -> PartitionLog:
    """Epoch 0: offsets 0-19; epoch 2: 20-39; epoch 5: 40-59 (2-record batches, ~4 KiB
    segments, so several segments)."""
    log = _open(directory, config)
    for epoch in (0, 2, 5):
        log.leader_epoch = epoch
        for tag in range(10):
            append(log, make_batch(2, value_size=100, tag=tag))
    return log


def test_truncate_within_a_segment_and_across_segments(tmp_path: Path) -> None:
    log = _epoch_log(tmp_path / "t-0")
    before = _raw(log)
    bases = log.segment_base_offsets()
    assert len(bases) >= 3
    log.high_watermark = log.log_end_offset
    log.truncate_to(45)
    assert log.log_end_offset == 45 - 1  # the batch holding 45 (44-45) goes whole
    assert log.high_watermark == 44
    assert log.recovery_point <= 44
    assert _raw(log) == before[: len(_raw(log))]
    assert log.leader_epoch_cache.epoch_entries() == [
        EpochEntry(0, 0),
        EpochEntry(2, 20),
        EpochEntry(5, 40),
    ]
    log.truncate_to(21)  # across segments, into epoch 2
    assert log.log_end_offset == 20
    assert all(base < 20 for base in log.segment_base_offsets())
    assert log.leader_epoch_cache.epoch_entries() == [EpochEntry(0, 0)]
    assert _checkpoint(tmp_path / "t-0") == [EpochEntry(0, 0)]
    assert [h.base_offset for h in read_everything(log)] == list(range(0, 20, 2))
    # The log goes on from there, and reopens to the same state.
    log.leader_epoch = 7
    assert append(log, make_batch(2)).first_offset == 20
    log.close()
    reopened = _open(tmp_path / "t-0")
    assert reopened.log_end_offset == 22
    assert reopened.leader_epoch_cache.epoch_entries() == [EpochEntry(0, 0), EpochEntry(7, 20)]
    assert [h.base_offset for h in read_everything(reopened)] == list(range(0, 22, 2))


def test_truncate_at_or_past_the_end_does_nothing(log_dir: Path) -> None:
    log = _open(log_dir)
    append(log, make_batch(2))
    log.truncate_to(2)
    log.truncate_to(10)
    assert log.log_end_offset == 2


def test_truncate_at_the_end_drops_an_epoch_begun_without_records(log_dir: Path) -> None:
    """Kafka's UnifiedLog.truncateTo: a broker that led epoch 3 from offset 2 and lost the
    leadership before appending holds an epoch the new leader never had; truncating to the
    diverging epoch's end (= the log end) must drop it, or the fetcher sends LastFetchedEpoch
    3 again and is told to truncate for ever."""
    log = _open(log_dir)
    append(log, make_batch(2))
    log.leader_epoch_cache.assign(3, 2)
    log.truncate_to(2)
    assert log.log_end_offset == 2
    assert log.leader_epoch_cache.epoch_entries() == [EpochEntry(0, 0)]


def test_truncate_in_the_middle_of_a_transaction(tmp_path: Path) -> None:
    leader = _open(tmp_path / "leader")
    _txn_workload(leader)
    follower = _open(tmp_path / "follower", leader_epoch=None)
    _replicate(leader, follower)
    # Cut before P1's ABORT (offset 8): P1 and P2 are ongoing again, nothing aborted yet.
    follower.truncate_to(8)
    follower.high_watermark = follower.log_end_offset
    assert follower.aborted_transactions(0, 8) == []
    assert [(t.producer_id, t.first_offset) for t in follower.ongoing_transactions()] == [
        (P1, 0),
        (P2, 4),
    ]
    assert follower.last_stable_offset == 0
    # Catching up again rebuilds the same view as the leader's.
    _replicate(leader, follower)
    for log in (leader, follower):
        log.high_watermark = log.log_end_offset
    assert follower.aborted_transactions(0, 20) == leader.aborted_transactions(0, 20)
    assert follower.ongoing_transactions() == leader.ongoing_transactions()
    assert follower.producer_states() == leader.producer_states()
    # Cut inside P2's transaction data: P2's batch goes, P1 remains open from 0.
    follower.truncate_to(5)
    assert follower.log_end_offset == 4
    assert [(t.producer_id, t.first_offset) for t in follower.ongoing_transactions()] == [(P1, 0)]


def test_truncate_rebuilds_producer_state_from_a_snapshot(tmp_path: Path) -> None:
    config = small_config(segment_bytes=400)
    log = _open(tmp_path / "t-0", config)
    for seq in range(12):  # rolls take snapshots
        log.append(*_batch(idempotent_batch(P1, 0, seq, tag=seq)), 0)
    assert len(log.segment_base_offsets()) > 2
    log.truncate_to(7)
    assert log.log_end_offset == 7
    assert log.append(*_batch(idempotent_batch(P1, 0, 6, tag=6)), 0).duplicate
    assert log.append(*_batch(idempotent_batch(P1, 0, 7, tag=7)), 0).first_offset == 7


def test_truncate_fully_and_start_at(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log = _epoch_log(directory)
    log.append(*_batch(idempotent_batch(P1, 0, 0, transactional=True)), 0)
    log.truncate_fully_and_start_at(100)
    assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (100, 100, 100)
    assert log.segment_base_offsets() == [100]
    assert log.leader_epoch_cache.is_empty()
    assert log.producer_states() == []
    assert log.ongoing_transactions() == []
    leader = _open(tmp_path / "leader")
    leader.truncate_fully_and_start_at(100)
    leader.leader_epoch = 6
    append(leader, make_batch(2))
    log.append_as_follower(_raw(leader, 100), 0)
    assert log.leader_epoch_cache.epoch_entries() == [EpochEntry(6, 100)]
    log.close()
    reopened = _open(directory, leader_epoch=None)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (100, 102)
    assert reopened.leader_epoch_cache.epoch_entries() == [EpochEntry(6, 100)]
    # Below the log start offset, truncate_to starts over too.
    reopened.truncate_to(50)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (50, 50)


# -- crashes ---------------------------------------------------------------------------------


def _assert_consistent(log: PartitionLog) -> None:
    """Segments contiguous, every batch CRC-valid and in order, epochs within the log."""
    headers = read_everything(log)
    expected = log.log_start_offset
    for header in headers:
        assert header.base_offset >= expected
        expected = header.next_offset
    assert expected == log.log_end_offset
    for entry in log.leader_epoch_cache.epoch_entries():
        assert log.log_start_offset <= entry.start_offset < max(log.log_end_offset, 1)
    assert log.high_watermark <= log.log_end_offset
    assert log.recovery_point <= log.log_end_offset


def test_power_cut_after_truncation(tmp_path: Path) -> None:
    files = LazyFiles()
    directory = tmp_path / "t-0"
    log = PartitionLog.open(directory, small_config(), 0, files)
    for epoch in (0, 3):
        log.leader_epoch = epoch
        for tag in range(15):
            append(log, make_batch(2, value_size=100, tag=tag))
    log.flush()
    log.truncate_to(37)
    append(log, make_batch(2, tag=99))  # never fsynced
    files.power_cut()
    reopened = PartitionLog.open(directory, small_config(), 0, LazyFiles())
    _assert_consistent(reopened)
    assert reopened.log_end_offset == 36
    assert reopened.leader_epoch_cache.epoch_entries() == [EpochEntry(0, 0), EpochEntry(3, 30)]


@pytest.mark.parametrize(
    "failing_step",
    [
        "odradek.storage.segment.LogSegment.truncate_to",
        "odradek.storage.log_truncation.load_producer_state",
    ],
)
def test_crash_in_the_middle_of_truncation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_step: str
) -> None:
    files = LazyFiles()
    directory = tmp_path / "t-0"
    log = PartitionLog.open(directory, small_config(), 0, files)
    for number in range(30):  # epochs 0, 2, 5 at offsets 0, 20, 40
        log.leader_epoch = (0, 2, 5)[number // 10]
        log.append(*_batch(idempotent_batch(P1, 0, number * 2, count=2, tag=number)), 0)
    original = _raw(log)
    log.flush()

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(failing_step, crash)
    with pytest.raises(OSError, match="power cut"):
        log.truncate_to(25)
    files.power_cut()
    monkeypatch.undo()

    reopened = PartitionLog.open(directory, small_config(), 0, LazyFiles())
    _assert_consistent(reopened)
    assert reopened.log_end_offset >= 24
    assert original.startswith(_raw(reopened))
    # The fetcher truncates again and reaches the target; producer state follows the log.
    reopened.truncate_to(25)
    _assert_consistent(reopened)
    assert reopened.log_end_offset == 24
    assert reopened.leader_epoch_cache.epoch_entries() == [EpochEntry(0, 0), EpochEntry(2, 20)]
    retry = idempotent_batch(P1, 0, 22, count=2, tag=11)
    assert reopened.append(*_batch(retry), 0).duplicate


def test_crash_in_the_middle_of_truncate_fully(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = LazyFiles()
    directory = tmp_path / "t-0"
    log = PartitionLog.open(directory, small_config(), 0, files)
    for tag in range(30):
        append(log, make_batch(2, value_size=100, tag=tag))
    log.flush()

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(LogSegment, "create", crash)
    with pytest.raises(OSError, match="power cut"):
        log.truncate_fully_and_start_at(500)
    files.power_cut()
    monkeypatch.undo()
    reopened = PartitionLog.open(directory, small_config(), 0, LazyFiles())
    _assert_consistent(reopened)
    reopened.truncate_fully_and_start_at(500)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (500, 500)


def test_flushed_offset_is_the_durable_end(log_dir: Path) -> None:
    log = _open(log_dir)
    append(log, make_batch(3))
    assert log.flushed_offset == 0
    assert log.flush() == 3
    assert log.flushed_offset == 3
    header = read_batch_header(_raw(log))
    assert header.partition_leader_epoch == 0


class _CountingFiles:
    """The OS file layer, counting `pread` calls (how often a read touched the file)."""

    def __init__(self) -> None:
        from odradek.storage.lazy_files import OS_FILES

        self._os = OS_FILES
        self.mode = OS_FILES.mode
        self.preads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._os, name)

    def pread(self, fd: int, length: int, offset: int, /) -> bytes:
        self.preads += 1
        return self._os.pread(fd, length, offset)


def test_a_shared_replica_read_is_served_once_until_the_log_changes(tmp_path: Path) -> None:
    """Two followers asking for the same tail get one `pread`'s bytes; an append, and a
    truncation followed by different data at the same offsets, are never served stale."""
    files = _CountingFiles()
    log = PartitionLog.open(tmp_path, small_config(), 0, files=files)  # type: ignore[arg-type]
    append(log, make_batch(3, tag=1))
    first = log.read(0, 1 << 20, log.log_end_offset, min_one_batch=True, shared=True)
    preads = files.preads
    second = log.read(0, 1 << 20, log.log_end_offset, min_one_batch=True, shared=True)
    assert second is first
    assert files.preads == preads
    # A consumer's read (not shared) still goes to the file.
    log.read(0, 1 << 20, log.log_end_offset, min_one_batch=True)
    assert files.preads > preads

    append(log, make_batch(2, tag=2))
    grown = log.read(0, 1 << 20, log.log_end_offset, min_one_batch=True, shared=True)
    assert len(headers_of(bytes(grown.records))) == 2

    log.truncate_to(3)
    truncated = log.read(0, 1 << 20, log.log_end_offset, min_one_batch=True, shared=True)
    assert bytes(truncated.records) == bytes(first.records)
    replacement = make_batch(2, tag=7)
    append(log, replacement)
    after = log.read(3, 1 << 20, log.log_end_offset, min_one_batch=True, shared=True)
    assert bytes(after.records)[-20:] == replacement[-20:]
    assert b"7:" in bytes(after.records)
