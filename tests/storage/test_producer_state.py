"""Idempotent producers in the partition log: sequences, duplicates, epochs, recovery."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from storage_helpers import append, headers_of, idempotent_batch, make_batch, small_config

from odradek.storage import (
    AppendOrigin,
    InvalidProducerEpoch,
    InvalidTxnState,
    OutOfOrderSequence,
    PartitionLog,
)
from odradek.storage.producer_state import snapshot_offsets, snapshot_path

PID = 1000
INT32_MAX = 2**31 - 1


def _open(log_dir: Path, **config: int | str) -> PartitionLog:
    return PartitionLog.open(log_dir, small_config(**config), now_ms=0)


def _crash(log: PartitionLog) -> None:
    """kill -9: no flush, no snapshot, no index files, no clean-shutdown marker."""
    log._close_segments()


def test_in_order_sequences_are_appended(log_dir: Path) -> None:
    log = _open(log_dir)
    first = append(log, idempotent_batch(PID, 0, 0, count=3))
    second = append(log, idempotent_batch(PID, 0, 3, count=2))
    assert (first.first_offset, first.last_offset, first.duplicate) == (0, 2, False)
    assert (second.first_offset, second.last_offset) == (3, 4)
    [view] = log.producer_states()
    assert (view.producer_id, view.producer_epoch, view.last_sequence) == (PID, 0, 4)
    assert view.current_txn_start_offset == -1
    log.close()


def test_duplicate_returns_original_offsets_and_writes_nothing(log_dir: Path) -> None:
    log = _open(log_dir)
    batch = idempotent_batch(PID, 0, 0, count=2, timestamp=5_000)
    append(log, make_batch(3))
    original = append(log, batch)
    append(log, idempotent_batch(PID, 0, 2))
    end = log.log_end_offset
    size = log.size_in_bytes
    retry = append(log, batch, now_ms=9_999)
    assert retry.duplicate
    assert (retry.first_offset, retry.last_offset) == (original.first_offset, original.last_offset)
    assert retry.max_timestamp == 5_001
    assert (log.log_end_offset, log.size_in_bytes) == (end, size)
    log.close()


def test_every_one_of_the_last_five_batches_is_a_duplicate(log_dir: Path) -> None:
    log = _open(log_dir)
    batches = [idempotent_batch(PID, 0, 2 * i, count=2, tag=i) for i in range(7)]
    infos = [append(log, batch) for batch in batches]
    end = log.log_end_offset
    for batch, info in zip(batches[2:], infos[2:], strict=True):
        retry = append(log, batch)
        assert retry.duplicate
        assert retry.first_offset == info.first_offset
    # The 6th-oldest is no longer retained: never appended again, not acknowledged.
    with pytest.raises(OutOfOrderSequence):
        append(log, batches[1])
    with pytest.raises(OutOfOrderSequence):
        append(log, batches[0])
    assert log.log_end_offset == end
    assert append(log, idempotent_batch(PID, 0, 14)).first_offset == end
    log.close()


def test_sequence_gap_is_refused_and_changes_nothing(log_dir: Path) -> None:
    log = _open(log_dir)
    append(log, idempotent_batch(PID, 0, 0, count=2))
    with pytest.raises(OutOfOrderSequence):
        append(log, idempotent_batch(PID, 0, 3))
    # A batch overlapping a retained one without matching it exactly is not a duplicate.
    with pytest.raises(OutOfOrderSequence):
        append(log, idempotent_batch(PID, 0, 1))
    assert log.log_end_offset == 2
    assert log.producer_states()[0].last_sequence == 1
    assert append(log, idempotent_batch(PID, 0, 2)).first_offset == 2
    log.close()


def test_epoch_fencing(log_dir: Path) -> None:
    log = _open(log_dir)
    append(log, idempotent_batch(PID, 3, 0, count=2))
    with pytest.raises(InvalidProducerEpoch):
        append(log, idempotent_batch(PID, 2, 2))
    with pytest.raises(OutOfOrderSequence):
        append(log, idempotent_batch(PID, 4, 5))  # a new epoch starts at sequence 0
    bumped = append(log, idempotent_batch(PID, 4, 0))
    assert bumped.first_offset == 2
    assert not bumped.duplicate
    with pytest.raises(InvalidProducerEpoch):
        append(log, idempotent_batch(PID, 3, 2))
    # Retained batches of the old epoch are gone: the old epoch's first batch is fenced,
    # the new epoch's sequence 0 is now the duplicate.
    assert append(log, idempotent_batch(PID, 4, 0)).duplicate
    assert log.log_end_offset == 3
    log.close()


def test_sequence_wraps_at_int32_max(log_dir: Path) -> None:
    log = _open(log_dir)
    append(log, idempotent_batch(PID, 0, INT32_MAX - 1, count=2))  # new producer: any start
    assert log.producer_states()[0].last_sequence == INT32_MAX
    append(log, idempotent_batch(PID, 0, 0, count=3))
    assert log.producer_states()[0].last_sequence == 2
    # A batch that itself spans the wrap: sequences 2**31-1, 0, 1.
    log2 = PartitionLog.open(log_dir.with_name("other-0"), small_config(), now_ms=0)
    append(log2, idempotent_batch(PID, 0, INT32_MAX, count=3))
    assert log2.producer_states()[0].last_sequence == 1
    assert append(log2, idempotent_batch(PID, 0, INT32_MAX, count=3)).duplicate
    assert append(log2, idempotent_batch(PID, 0, 2)).first_offset == 3
    log.close()
    log2.close()


def test_unknown_producer_may_start_at_any_sequence(log_dir: Path) -> None:
    # Kafka since KIP-360 (2.5): a producer whose state is gone continues with any sequence
    # instead of getting UNKNOWN_PRODUCER_ID.
    log = _open(log_dir)
    assert append(log, idempotent_batch(PID, 0, 42)).first_offset == 0
    with pytest.raises(OutOfOrderSequence):
        append(log, idempotent_batch(PID, 0, 44))
    append(log, idempotent_batch(PID, 0, 43))
    log.close()


def test_non_idempotent_batches_need_no_state(log_dir: Path) -> None:
    log = _open(log_dir)
    append(log, make_batch(2))
    append(log, make_batch(2))
    assert log.producer_states() == []
    log.close()


def test_non_transactional_batch_during_a_transaction_is_refused(log_dir: Path) -> None:
    log = _open(log_dir)
    append(log, idempotent_batch(PID, 0, 0, transactional=True))
    with pytest.raises(InvalidTxnState):
        append(log, idempotent_batch(PID, 0, 1))
    assert log.log_end_offset == 1
    log.close()


def test_coordinator_origin_checks_only_the_epoch(log_dir: Path) -> None:
    log = _open(log_dir)
    append(log, idempotent_batch(PID, 1, 0, transactional=True))
    records = idempotent_batch(PID, 1, -1, transactional=True)
    log.append(records, headers_of(records), 1_000, origin=AppendOrigin.COORDINATOR)
    stale = idempotent_batch(PID, 0, -1, transactional=True)
    with pytest.raises(InvalidProducerEpoch):
        log.append(stale, headers_of(stale), 1_000, origin=AppendOrigin.COORDINATOR)
    assert log.log_end_offset == 2
    log.close()


def test_log_append_time_duplicate_reports_the_original_time(log_dir: Path) -> None:
    log = _open(log_dir, message_timestamp_type="LogAppendTime")
    batch = idempotent_batch(PID, 0, 0)
    first = append(log, batch, now_ms=7_000)
    retry = append(log, batch, now_ms=8_000)
    assert retry.duplicate
    assert retry.log_append_time_ms == first.log_append_time_ms == 7_000
    log.close()


def test_multiple_producers_are_independent(log_dir: Path) -> None:
    log = _open(log_dir)
    append(log, idempotent_batch(1, 0, 0))
    append(log, idempotent_batch(2, 5, 0))
    append(log, idempotent_batch(1, 0, 1))
    with pytest.raises(OutOfOrderSequence):
        append(log, idempotent_batch(2, 5, 2))
    assert [(v.producer_id, v.producer_epoch, v.last_sequence) for v in log.producer_states()] == [
        (1, 0, 1),
        (2, 5, 0),
    ]
    log.close()


# -- recovery ---------------------------------------------------------------------------------


def _five_then_more(log: PartitionLog, batches: int = 8) -> list[bytes]:
    sent = [idempotent_batch(PID, 0, 3 * i, count=3, tag=i) for i in range(batches)]
    for batch in sent:
        append(log, batch)
    return sent


@pytest.mark.parametrize("clean", [True, False], ids=["close", "kill-9"])
def test_deduplication_survives_reopen(log_dir: Path, clean: bool) -> None:
    log = _open(log_dir, segment_bytes=1 << 20)
    sent = _five_then_more(log)
    infos = [append(log, batch) for batch in sent[-5:]]
    assert all(info.duplicate for info in infos)
    if clean:
        log.close()
    else:
        _crash(log)
    reopened = _open(log_dir, segment_bytes=1 << 20)
    end = reopened.log_end_offset
    for batch, info in zip(sent[-5:], infos, strict=True):
        retry = append(reopened, batch)
        assert retry.duplicate
        assert retry.first_offset == info.first_offset
    with pytest.raises(OutOfOrderSequence):
        append(reopened, sent[-6])
    assert reopened.log_end_offset == end
    assert append(reopened, idempotent_batch(PID, 0, 24)).first_offset == end
    reopened.close()


def test_kill_9_after_rolls_replays_from_the_latest_snapshot(log_dir: Path) -> None:
    log = _open(log_dir, segment_bytes=400)
    sent = _five_then_more(log, batches=20)
    assert len(log.segment_base_offsets()) > 3
    assert snapshot_offsets(log_dir)  # taken on roll
    assert len(snapshot_offsets(log_dir)) <= 2  # old ones deleted
    _crash(log)
    reopened = _open(log_dir, segment_bytes=400)
    assert reopened.log_end_offset == 60
    for batch in sent[-5:]:
        assert append(reopened, batch).duplicate
    with pytest.raises(OutOfOrderSequence):
        append(reopened, sent[-6])
    reopened.close()


def test_corrupt_or_missing_snapshots_fall_back_to_replaying_the_log(log_dir: Path) -> None:
    log = _open(log_dir, segment_bytes=400)
    sent = _five_then_more(log, batches=12)
    log.close()
    for offset in snapshot_offsets(log_dir):
        path = snapshot_path(log_dir, offset)
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    reopened = _open(log_dir, segment_bytes=400)
    for batch in sent[-5:]:
        assert append(reopened, batch).duplicate
    reopened.close()
    for offset in snapshot_offsets(log_dir):
        snapshot_path(log_dir, offset).unlink()
    again = _open(log_dir, segment_bytes=400)
    assert [v.last_sequence for v in again.producer_states()] == [35]
    assert append(again, sent[-1]).duplicate
    again.close()


def test_snapshot_beyond_the_recovered_end_is_ignored(log_dir: Path) -> None:
    log = _open(log_dir, segment_bytes=1 << 20)
    sent = _five_then_more(log, batches=6)
    log.close()
    active = sorted(log_dir.glob("*.log"))[-1]
    size = active.stat().st_size
    # Lose the last batch (as a power loss would); the close snapshot describes it.
    os.truncate(active, size - len(sent[-1]))
    (log_dir / ".kafka_cleanshutdown").unlink()
    reopened = _open(log_dir, segment_bytes=1 << 20)
    assert reopened.log_end_offset == 15
    assert reopened.producer_states()[0].last_sequence == 14
    assert append(reopened, sent[-1]).first_offset == 15  # re-sent, appended again
    assert append(reopened, sent[-2]).duplicate
    reopened.close()


def test_delete_records_keeps_producer_state(log_dir: Path) -> None:
    log = _open(log_dir, segment_bytes=300)
    sent = _five_then_more(log, batches=10)
    log.high_watermark = log.log_end_offset
    log.delete_records_before(log.log_end_offset)
    assert log.log_start_offset == 30
    assert append(log, sent[-1]).duplicate
    log.close()
    reopened = _open(log_dir, segment_bytes=300)
    assert append(reopened, sent[-1]).duplicate
    assert append(reopened, idempotent_batch(PID, 0, 30)).first_offset == 30
    reopened.close()


def test_expiration(log_dir: Path) -> None:
    log = _open(log_dir)
    append(log, idempotent_batch(1, 0, 0, timestamp=1_000))
    append(log, idempotent_batch(2, 0, 0, timestamp=5_000))
    append(log, idempotent_batch(3, 0, 0, timestamp=1_000, transactional=True))
    assert log.expire_producers(now_ms=5_999, producer_id_expiration_ms=5_000) == 0
    assert log.expire_producers(now_ms=6_000, producer_id_expiration_ms=5_000) == 1
    # Producer 3 is idle just as long but has an ongoing transaction: kept.
    assert [v.producer_id for v in log.producer_states()] == [2, 3]
    # An expired producer is unknown again: any sequence is accepted.
    assert not append(log, idempotent_batch(1, 0, 0)).duplicate
    log.close()
    reopened = _open(log_dir)
    assert [v.producer_id for v in reopened.producer_states()] == [1, 2, 3]
    reopened.close()
