"""Transactions in the partition log: markers, last stable offset, aborted ranges, recovery."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from storage_helpers import append, idempotent_batch, make_batch, read_records, small_config

from odradek.protocol.record_batch import decode_batches
from odradek.storage import (
    InvalidProducerEpoch,
    OngoingTransaction,
    PartitionLog,
    TransactionCoordinatorFenced,
)

P1, P2 = 100, 200


def _open(log_dir: Path, **config: int | str) -> PartitionLog:
    return PartitionLog.open(log_dir, small_config(**config), now_ms=0)


def _txn(log: PartitionLog, producer_id: int, sequence: int, count: int = 1, epoch: int = 0) -> int:
    info = append(log, idempotent_batch(producer_id, epoch, sequence, count, transactional=True))
    log.high_watermark = log.log_end_offset
    return info.first_offset


def _end(log: PartitionLog, producer_id: int, commit: bool, epoch: int = 0) -> int:
    info = log.append_control(producer_id, epoch, commit, coordinator_epoch=0, now_ms=2_000)
    log.high_watermark = log.log_end_offset
    return info.first_offset


def test_control_batch_layout(log_dir: Path) -> None:
    log = _open(log_dir)
    _txn(log, P1, 0)
    info = log.append_control(P1, 0, commit=True, coordinator_epoch=7, now_ms=2_000)
    assert (info.first_offset, info.last_offset) == (1, 1)
    data = bytes(log.read(1, 1 << 20, log.log_end_offset, min_one_batch=True).records)
    [(header, [record])] = decode_batches(data)
    assert header.is_control
    assert header.is_transactional
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (P1, 0, -1)
    assert record.key == struct.pack(">hh", 0, 1)
    assert record.value == struct.pack(">hi", 0, 7)
    assert record.timestamp == 2_000
    log.close()


def test_commit_ends_the_transaction(log_dir: Path) -> None:
    log = _open(log_dir)
    first = _txn(log, P1, 0, count=3)
    _txn(log, P1, 3)
    assert log.last_stable_offset == first == 0
    assert log.ongoing_transactions() == [OngoingTransaction(P1, 0, 0)]
    assert log.producer_states()[0].current_txn_start_offset == 0
    _end(log, P1, commit=True)
    assert log.last_stable_offset == log.high_watermark == 5
    assert log.ongoing_transactions() == []
    assert log.aborted_transactions(0, 5) == []
    log.close()


def test_last_stable_offset_waits_until_the_marker_is_below_the_high_watermark(
    log_dir: Path,
) -> None:
    """Kafka's unreplicated transactions: a marker appended on the leader but not yet below
    the high watermark leaves its transaction unstable (its records stay hidden from
    read_committed); the LSO moves only once the high watermark passes the marker."""
    log = _open(log_dir)
    append(log, make_batch(2))
    _txn(log, P1, 0, count=3)  # offsets 2-4, below the high watermark
    log.append_control(P1, 0, commit=True, coordinator_epoch=0, now_ms=2_000)  # offset 5
    assert log.high_watermark == 5
    assert log.ongoing_transactions() == []
    assert log.last_stable_offset == 2
    log.high_watermark = 6
    assert log.last_stable_offset == 6
    log.close()


def test_last_stable_offset_with_two_interleaved_producers(log_dir: Path) -> None:
    log = _open(log_dir)
    append(log, make_batch(2))
    log.high_watermark = log.log_end_offset
    assert log.last_stable_offset == 2
    _txn(log, P1, 0)  # offset 2
    _txn(log, P2, 0)  # offset 3
    _txn(log, P1, 1)  # offset 4
    assert log.last_stable_offset == 2
    _end(log, P1, commit=False)  # offset 5
    assert log.last_stable_offset == 3  # P2's transaction still open
    _txn(log, P1, 2)  # offset 6: P1's next transaction
    _end(log, P2, commit=True)  # offset 7
    assert log.last_stable_offset == 6
    _end(log, P1, commit=True)  # offset 8
    assert log.last_stable_offset == 9
    # The LSO never passes the high watermark.
    _txn(log, P2, 1)
    log.high_watermark = 9
    assert log.last_stable_offset == 9
    log.close()


def test_aborted_transactions_ranges(log_dir: Path) -> None:
    log = _open(log_dir)
    _txn(log, P1, 0, count=2)  # 0-1
    _txn(log, P2, 0)  # 2
    _end(log, P1, commit=False)  # 3: P1 aborted [0, 3], LSO then 2
    _end(log, P2, commit=True)  # 4
    _txn(log, P2, 1)  # 5
    _end(log, P2, commit=False)  # 6: P2 aborted [5, 6]
    append(log, make_batch(1))  # 7
    assert log.aborted_transactions(0, 8) == [(P1, 0), (P2, 5)]
    assert log.aborted_transactions(3, 5) == [(P1, 0)]
    assert log.aborted_transactions(4, 5) == []  # P1's marker is before the fetch offset
    assert log.aborted_transactions(4, 6) == [(P2, 5)]
    assert log.aborted_transactions(7, 8) == []
    assert log.aborted_transactions(0, 1) == [(P1, 0)]
    # read_uncommitted readers still get the aborted records: nothing is hidden in storage.
    assert len(read_records(log)) == 8
    log.close()


def test_markers_are_fenced_by_epoch_and_coordinator_epoch(log_dir: Path) -> None:
    log = _open(log_dir)
    _txn(log, P1, 0, epoch=2)
    with pytest.raises(InvalidProducerEpoch):
        log.append_control(P1, 1, commit=True, coordinator_epoch=0, now_ms=2_000)
    log.append_control(P1, 2, commit=False, coordinator_epoch=5, now_ms=2_000)
    with pytest.raises(TransactionCoordinatorFenced):
        log.append_control(P1, 2, commit=False, coordinator_epoch=4, now_ms=2_000)
    assert log.log_end_offset == 2
    [view] = log.producer_states()
    assert view.coordinator_epoch == 5
    log.close()


def test_marker_with_a_higher_epoch_fences_the_producer(log_dir: Path) -> None:
    # The coordinator aborts a zombie's transaction with the bumped epoch.
    log = _open(log_dir)
    _txn(log, P1, 0, epoch=0)
    _end(log, P1, commit=False, epoch=1)
    assert log.aborted_transactions(0, 2) == [(P1, 0)]
    with pytest.raises(InvalidProducerEpoch):
        append(log, idempotent_batch(P1, 0, 1, transactional=True))
    assert _txn(log, P1, 0, epoch=1) == 2
    log.close()


def test_marker_without_ongoing_transaction_is_written_but_indexes_nothing(log_dir: Path) -> None:
    log = _open(log_dir)
    offset = _end(log, P1, commit=False)
    assert offset == 0
    assert log.log_end_offset == 1
    assert log.aborted_transactions(0, 1) == []
    assert log.last_stable_offset == 1
    [view] = log.producer_states()
    assert (view.producer_epoch, view.last_sequence) == (0, -1)
    log.close()


def test_transaction_index_file_uses_kafkas_layout(log_dir: Path) -> None:
    log = _open(log_dir)
    _txn(log, P1, 0, count=2)
    _txn(log, P2, 0)
    _end(log, P1, commit=False)
    log.close()
    [path] = log_dir.glob("*.txnindex")
    data = path.read_bytes()
    assert len(data) == 34
    assert struct.unpack(">hqqqq", data) == (0, P1, 0, 3, 2)


def _transactional_history(log: PartitionLog) -> None:
    _txn(log, P1, 0, count=2)  # 0-1
    _txn(log, P2, 0)  # 2
    _end(log, P1, commit=False)  # 3
    for i in range(10):
        append(log, make_batch(2, value_size=80, tag=i))  # 4-23, rolls segments
    log.high_watermark = log.log_end_offset
    _txn(log, P1, 2)  # 24
    _end(log, P2, commit=False)  # 25: P2 aborted [2, 25]
    _txn(log, P2, 1)  # 26: P2's next transaction stays open


@pytest.mark.parametrize("clean", [True, False], ids=["close", "kill-9"])
def test_transactions_survive_reopen(log_dir: Path, clean: bool) -> None:
    log = _open(log_dir, segment_bytes=600)
    _transactional_history(log)
    assert len(log.segment_base_offsets()) > 2
    expected_aborted = log.aborted_transactions(0, log.log_end_offset)
    assert expected_aborted == [(P1, 0), (P2, 2)]
    expected_ongoing = log.ongoing_transactions()
    assert [t.first_offset for t in expected_ongoing] == [24, 26]
    if clean:
        log.close()
    else:
        log.flush()
        log._close_segments()
    reopened = _open(log_dir, segment_bytes=600)
    reopened.high_watermark = reopened.log_end_offset
    assert reopened.aborted_transactions(0, reopened.log_end_offset) == expected_aborted
    assert reopened.aborted_transactions(10, 20) == [(P2, 2)]
    assert reopened.ongoing_transactions() == expected_ongoing
    assert reopened.last_stable_offset == 24
    _end(reopened, P1, commit=True)
    assert reopened.last_stable_offset == 26
    reopened.close()


def test_kill_9_without_any_snapshot_rebuilds_transactions(log_dir: Path) -> None:
    log = _open(log_dir, segment_bytes=600)
    _transactional_history(log)
    log.flush()
    log._close_segments()
    for path in log_dir.glob("*.snapshot"):
        path.unlink()
    for path in log_dir.glob("*.txnindex"):
        path.unlink()
    reopened = _open(log_dir, segment_bytes=600)
    reopened.high_watermark = reopened.log_end_offset
    assert reopened.aborted_transactions(0, reopened.log_end_offset) == [(P1, 0), (P2, 2)]
    assert reopened.last_stable_offset == 24
    reopened.close()


def test_aborted_entry_lands_in_the_segment_holding_the_marker(log_dir: Path) -> None:
    log = _open(log_dir, segment_bytes=600)
    _transactional_history(log)
    first_segment, *_, active = log._segments
    assert [entry.producer_id for entry in first_segment.txn_index.entries] == [P1]
    assert [entry.producer_id for entry in active.txn_index.entries] == [P2]
    log.close()
