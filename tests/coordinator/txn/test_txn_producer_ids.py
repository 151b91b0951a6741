"""Producer ids: blocks persisted before use, never repeated across crashes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from txn_helpers import Harness

from odradek.coordinator.txn import (
    ProducerIdBlockEntry,
    ProducerIdManager,
    ProducerIdsExhaustedError,
    TransactionConfig,
    TransactionRecord,
    decode_record,
)


def block_end(record: TransactionRecord | None) -> int | None:
    if record is None:
        return None
    entry = decode_record(record)
    assert isinstance(entry, ProducerIdBlockEntry)
    return entry.next_producer_id


def test_block_record_accompanies_ids_until_appended() -> None:
    manager = ProducerIdManager(block_size=3)
    first, record = manager.allocate()
    assert (first, block_end(record)) == (0, 3)
    second, record = manager.allocate()  # first write still in flight: carry it again
    assert (second, block_end(record)) == (1, 3)
    manager.block_appended(3)
    third, record = manager.allocate()
    assert (third, record) == (2, None)
    fourth, record = manager.allocate()
    assert (fourth, block_end(record)) == (3, 6)


def test_replay_starts_past_the_newest_block() -> None:
    manager = ProducerIdManager(block_size=1000)
    manager.replay_block(1000)
    manager.replay_block(3000)
    manager.replay_block(2000)  # out of order never moves it back
    assert manager.allocate()[0] == 3000


def test_exhaustion_raises() -> None:
    manager = ProducerIdManager(block_size=10)
    manager.replay_block(2**63 - 5)
    with pytest.raises(ProducerIdsExhaustedError):
        manager.allocate()


def test_block_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ProducerIdManager(block_size=0)


@given(
    st.lists(
        st.tuples(st.sampled_from(["ok", "fail", "crash"]), st.integers(1, 4)),
        min_size=1,
        max_size=30,
    ),
    st.integers(1, 5),
)
def test_ids_never_repeat_across_crashes(steps: list[tuple[str, int]], block_size: int) -> None:
    """Allocate through the coordinator; some writes fail, some crashes lose everything not in
    the log. No id a client was ever given (write succeeded) is handed out again."""
    config = TransactionConfig(producer_id_block_size=block_size)
    harness = Harness(config)
    handed_out: set[int] = set()
    for outcome, count in steps:
        if outcome == "crash":
            harness = harness.restart()
            continue
        for _ in range(count):
            result, records = harness.coordinator.init_producer_id(None, 0, 0)
            if outcome == "ok" or not records:
                harness.commit(result, records)
                assert result.producer_id not in handed_out
                handed_out.add(result.producer_id)
            else:
                harness.fail(result, records)
