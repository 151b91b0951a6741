"""``__transaction_state`` record encoding: Kafka's layouts, byte for byte."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.coordinator.txn import (
    CoordinatorEpochEntry,
    ProducerIdBlockEntry,
    RecordDecodeError,
    TopicPartition,
    TransactionLogEntry,
    TransactionRecord,
    TransactionState,
    TxnTransitMetadata,
    UnknownEntry,
    decode_record,
    decode_transaction_log_value,
    encode_coordinator_epoch,
    encode_producer_id_block,
    encode_transaction_log_key,
    encode_transaction_log_value,
    transaction_log_record,
)

S = TransactionState


def ongoing(**changes: object) -> TxnTransitMetadata:
    fields: dict[str, object] = {
        "producer_id": 1000,
        "last_producer_id": -1,
        "producer_epoch": 2,
        "last_producer_epoch": -1,
        "txn_timeout_ms": 60000,
        "state": S.ONGOING,
        "topic_partitions": frozenset({TopicPartition("ab", 1), TopicPartition("ab", 0)}),
        "txn_start_timestamp": 5,
        "txn_last_update_timestamp": 6,
    }
    fields.update(changes)
    return TxnTransitMetadata(**fields)  # type: ignore[arg-type]


def test_key_is_version_zero_and_a_string() -> None:
    assert encode_transaction_log_key("tx") == b"\x00\x00\x00\x02tx"


def test_value_v0_layout() -> None:
    expected = (
        struct.pack(">hqhib", 0, 1000, 2, 60000, 1)
        + struct.pack(">i", 1)  # one topic
        + struct.pack(">h", 2)
        + b"ab"
        + struct.pack(">iii", 2, 0, 1)  # partitions 0, 1
        + struct.pack(">qq", 6, 5)  # last update, start
    )
    assert encode_transaction_log_value(ongoing(), version=0) == expected
    assert decode_transaction_log_value(expected) == ongoing()


def test_value_v1_layout_with_tagged_fields() -> None:
    value = encode_transaction_log_value(ongoing(last_producer_id=7, last_producer_epoch=1))
    expected = (
        struct.pack(">hqhib", 1, 1000, 2, 60000, 1)
        + b"\x02"  # compact array: one topic
        + b"\x03ab"
        + b"\x03"
        + struct.pack(">ii", 0, 1)
        + b"\x00"  # topic's tagged fields
        + struct.pack(">qq", 6, 5)
        + b"\x02"  # two tagged fields
        + b"\x00\x08"
        + struct.pack(">q", 7)  # tag 0: previous producer id
        + b"\xe8\x07\x02"
        + struct.pack(">h", 1)  # tag 1000: Odradek's last producer epoch
    )
    assert value == expected


def test_empty_state_writes_null_partitions() -> None:
    empty = ongoing(state=S.EMPTY, topic_partitions=frozenset(), txn_start_timestamp=-1)
    v0 = encode_transaction_log_value(empty, version=0)
    assert v0[17:21] == struct.pack(">i", -1)
    v1 = encode_transaction_log_value(empty)
    assert v1[17:18] == b"\x00"
    assert decode_transaction_log_value(v0) == empty
    assert decode_transaction_log_value(v1) == empty
    with pytest.raises(ValueError, match="Empty"):
        encode_transaction_log_value(ongoing(state=S.EMPTY))


def test_transaction_version_2_tags_round_trip_and_unknown_tags_are_skipped() -> None:
    value = encode_transaction_log_value(ongoing())
    assert value.endswith(b"\x00")
    # Kafka's tag 1 (next producer id) and tag 2 (client transaction version), then tag 5.
    extended = (
        value[:-1]
        + b"\x03"
        + b"\x01\x08"
        + struct.pack(">q", 99)
        + b"\x02\x02\x00\x02"
        + b"\x05\x01\x07"
    )
    expected = dataclasses.replace(ongoing(), next_producer_id=99, client_transaction_version=2)
    assert decode_transaction_log_value(extended) == expected
    assert decode_transaction_log_value(encode_transaction_log_value(expected)) == expected


def test_tombstone_and_unknown_keys() -> None:
    record = transaction_log_record("tx", None)
    assert record.value is None
    assert decode_record(record) == TransactionLogEntry("tx", None)
    assert decode_record(TransactionRecord(b"\x00\x07", b"x")) == UnknownEntry(7)


def test_producer_id_block_and_coordinator_epoch_records() -> None:
    block = encode_producer_id_block(3000, broker_id=4)
    assert block.key == b"\x03\xe8"
    assert block.value == struct.pack(">hiqq", 0, 4, -1, 3000)
    assert decode_record(block) == ProducerIdBlockEntry(4, -1, 3000)
    epoch = encode_coordinator_epoch(12)
    assert epoch.key == b"\x03\xe9"
    assert decode_record(epoch) == CoordinatorEpochEntry(12)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x00\x02" + bytes(30),  # unknown value version
        encode_transaction_log_value(ongoing())[:-3],  # truncated
        encode_transaction_log_value(ongoing()) + b"\x00",  # trailing byte
        struct.pack(">hqhib", 0, 1, 0, 1, 9) + struct.pack(">iqq", -1, 0, 0),  # status 9
    ],
)
def test_malformed_values_raise(value: bytes) -> None:
    with pytest.raises(RecordDecodeError):
        decode_record(TransactionRecord(encode_transaction_log_key("tx"), value))


def test_malformed_odradek_records_raise() -> None:
    with pytest.raises(RecordDecodeError):
        decode_record(TransactionRecord(b"\x03\xe8", None))
    with pytest.raises(RecordDecodeError):
        decode_record(TransactionRecord(b"\x03\xe9", b"\x00\x01\x00\x00\x00\x01"))


transits = st.builds(
    TxnTransitMetadata,
    producer_id=st.integers(0, 2**63 - 1),
    last_producer_id=st.integers(-1, 2**63 - 1),
    producer_epoch=st.integers(0, 32767),
    last_producer_epoch=st.integers(-1, 32767),
    txn_timeout_ms=st.integers(1, 2**31 - 1),
    state=st.sampled_from([s for s in S if s is not S.EMPTY]),
    topic_partitions=st.frozensets(
        st.builds(TopicPartition, st.text(min_size=1, max_size=8), st.integers(0, 2**31 - 1)),
        max_size=6,
    ),
    txn_start_timestamp=st.integers(-1, 2**62),
    txn_last_update_timestamp=st.integers(0, 2**62),
)


@given(st.text(max_size=30), transits)
def test_round_trip(transactional_id: str, transit: TxnTransitMetadata) -> None:
    record = transaction_log_record(transactional_id, transit)
    assert decode_record(record) == TransactionLogEntry(transactional_id, transit)


@given(transits)
def test_v0_round_trip_forgets_only_the_v1_fields(transit: TxnTransitMetadata) -> None:
    decoded = decode_transaction_log_value(encode_transaction_log_value(transit, version=0))
    assert decoded == TxnTransitMetadata(
        **{
            **{f: getattr(transit, f) for f in TxnTransitMetadata.__dataclass_fields__},
            "last_producer_id": -1,
            "last_producer_epoch": -1,
        }
    )
