"""KIP-890 part 2 (transaction version 2) over the raw protocol, with requests built from kio's
schemas: no client here sends it yet.

KAFKA-17754 (the hole Jepsen found in every Kafka-compatible system): a produce of transaction
N that is delayed in the network arrives after transaction N+1 started. With the classic
protocol it carries the same producer id and epoch as N+1's batches, the partition is in N+1,
and the broker cannot tell: the record lands in N+1 and is committed with it. With part 2 every
EndTxn bumps the epoch, so the delayed batch's epoch is fenced.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kio.schema.errors import ErrorCode
from raw_client import RawClient
from test_txn_protocol import (
    add_partitions,
    create_topic,
    end_txn,
    fetch,
    init_producer_id,
    produce,
    request,
)

from odradek.broker.server import Broker
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import make, nested, request_module, request_type
from odradek.protocol.record_batch import Record, decode_batches, encode_batch


@pytest.fixture
def client(broker: Broker) -> Iterator[RawClient]:
    with RawClient(broker.bootstrap_servers) as raw:
        yield raw


def txn_batch(producer: tuple[int, int], sequence: int, value: bytes) -> bytes:
    return encode_batch(
        [Record(key=None, value=value)],
        producer_id=producer[0],
        producer_epoch=producer[1],
        base_sequence=sequence,
        is_transactional=True,
        base_timestamp=1_700_000_000_000,
    )


def committed_values(client: RawClient, topic: str) -> list[bytes | None]:
    """What a read_committed consumer delivers: transactional records whose transaction ended
    with a COMMIT marker (control record type 1), in log order."""
    open_batches: dict[int, list[bytes | None]] = {}
    committed: list[bytes | None] = []
    for header, records in decode_batches(fetch(client, topic, 1).records or b""):
        if header.is_control:
            pending = open_batches.pop(header.producer_id, [])
            key = records[0].key or b""
            if key[2:4] == b"\x00\x01":  # COMMIT
                committed.extend(pending)
        elif header.is_transactional:
            open_batches.setdefault(header.producer_id, []).extend(r.value for r in records)
        else:
            committed.extend(r.value for r in records)
    return committed


def end_txn_v5(
    client: RawClient, transactional_id: str, producer: tuple[int, int], commit: bool
) -> tuple[ErrorCode, tuple[int, int]]:
    response = client.request(
        request(
            ApiKey.END_TXN,
            5,
            transactional_id=transactional_id,
            producer_id=producer[0],
            producer_epoch=producer[1],
            committed=commit,
        )
    )
    return ErrorCode(response.error_code), (
        int(response.producer_id),
        int(response.producer_epoch),
    )


def test_delayed_produce_lands_in_the_next_transaction_with_the_classic_protocol(
    client: RawClient,
) -> None:
    """The hole, reproduced: what transaction version 1 cannot tell apart."""
    create_topic(client, "classic")
    producer = init_producer_id(client, "classic-txn")
    # Transaction N: the partition is added, its produce is sent... and delayed in the network.
    assert add_partitions(client, "classic-txn", producer, {"classic": [0]}) == {
        ("classic", 0): ErrorCode.none
    }
    delayed = txn_batch(producer, 0, b"from transaction N (aborted)")
    # The client gives up on N and aborts it; the delayed batch has not arrived.
    assert end_txn(client, "classic-txn", producer, commit=False) == ErrorCode.none
    # Transaction N+1, same producer id and epoch: the partition is added again.
    assert add_partitions(client, "classic-txn", producer, {"classic": [0]}) == {
        ("classic", 0): ErrorCode.none
    }
    # The delayed produce of N arrives now: same epoch, partition in the ongoing transaction.
    assert produce(client, "classic", delayed, "classic-txn").error_code == ErrorCode.none
    assert end_txn(client, "classic-txn", producer, commit=True) == ErrorCode.none
    # Transaction N was aborted, yet its record is committed as part of N+1.
    assert committed_values(client, "classic") == [b"from transaction N (aborted)"]


def test_delayed_produce_of_an_earlier_transaction_is_fenced_with_transaction_version_2(
    client: RawClient,
) -> None:
    create_topic(client, "kip890")
    producer = init_producer_id(client, "v2-txn")
    # Transaction N: Produce v12 adds the partition itself (no AddPartitionsToTxn).
    first = produce(client, "kip890", txn_batch(producer, 0, b"N committed"), "v2-txn", version=12)
    assert first.error_code == ErrorCode.none
    delayed = txn_batch(producer, 1, b"N delayed")  # sent now, arrives later
    error, next_producer = end_txn_v5(client, "v2-txn", producer, commit=True)
    assert error == ErrorCode.none
    assert next_producer == (producer[0], producer[1] + 1)
    # Transaction N+1 under the bumped epoch, sequences from 0 again.
    second = produce(client, "kip890", txn_batch(next_producer, 0, b"N+1"), "v2-txn", version=12)
    assert second.error_code == ErrorCode.none
    # The delayed produce of N arrives: its epoch is fenced, nothing is appended.
    late = produce(client, "kip890", delayed, "v2-txn", version=12)
    assert late.error_code == ErrorCode.invalid_producer_epoch
    # A delayed EndTxn of N cannot end N+1 either.
    stale_error, _ = end_txn_v5(client, "v2-txn", producer, commit=True)
    assert stale_error == ErrorCode.producer_fenced
    error, after = end_txn_v5(client, "v2-txn", next_producer, commit=False)
    assert error == ErrorCode.none
    assert after == (producer[0], producer[1] + 2)
    assert committed_values(client, "kip890") == [b"N committed"]


def test_delayed_end_txn_commits_the_next_transaction_with_the_classic_protocol(
    client: RawClient,
) -> None:
    """The EndTxn half of KAFKA-17754: version 1 has nothing to tell N's EndTxn from N+1's."""
    create_topic(client, "classic-end")
    producer = init_producer_id(client, "classic-end-txn")
    add_partitions(client, "classic-end-txn", producer, {"classic-end": [0]})
    assert end_txn(client, "classic-end-txn", producer, commit=False) == ErrorCode.none
    add_partitions(client, "classic-end-txn", producer, {"classic-end": [0]})
    batch = txn_batch(producer, 0, b"N+1, meant to be aborted")
    assert produce(client, "classic-end", batch, "classic-end-txn").error_code == ErrorCode.none
    # A retried/delayed commit of N arrives: it commits N+1.
    assert end_txn(client, "classic-end-txn", producer, commit=True) == ErrorCode.none
    assert committed_values(client, "classic-end") == [b"N+1, meant to be aborted"]


def test_end_txn_v5_retry_abort_of_empty_and_rotation_answers(client: RawClient) -> None:
    producer = init_producer_id(client, "v2-edges")
    # Abort with nothing added: allowed in version 2, and it bumps the epoch.
    error, bumped = end_txn_v5(client, "v2-edges", producer, commit=False)
    assert (error, bumped) == (ErrorCode.none, (producer[0], producer[1] + 1))
    # A retry of that abort (its answer lost) with the old epoch: the same answer.
    assert end_txn_v5(client, "v2-edges", producer, commit=False) == (ErrorCode.none, bumped)
    # A commit with nothing added, and the retried abort turned commit, are invalid.
    assert end_txn_v5(client, "v2-edges", bumped, commit=True)[0] == ErrorCode.invalid_txn_state
    assert end_txn_v5(client, "v2-edges", producer, commit=True)[0] == (ErrorCode.invalid_txn_state)
    # EndTxn v4 (version 1) from the same producer still works the classic way.
    assert end_txn(client, "v2-edges", bumped, commit=True, version=4) == (
        ErrorCode.invalid_txn_state
    )


def test_txn_offset_commit_v5_adds_the_offsets_partition_and_commits_with_the_bump(
    client: RawClient,
) -> None:
    create_topic(client, "eos-v2")
    producer = init_producer_id(client, "eos-v2-txn")
    batch = txn_batch(producer, 0, b"processed")
    assert produce(client, "eos-v2", batch, "eos-v2-txn", version=12).error_code == ErrorCode.none
    module = request_module(ApiKey.TXN_OFFSET_COMMIT, 5)
    response = client.request(
        make(
            request_type(ApiKey.TXN_OFFSET_COMMIT, 5),
            transactional_id="eos-v2-txn",
            group_id="eos-v2-group",
            producer_id=producer[0],
            producer_epoch=producer[1],
            generation_id=-1,
            member_id="",
            group_instance_id=None,
            topics=(
                make(
                    nested(module, "TxnOffsetCommitRequestTopic"),
                    name="eos-v2",
                    partitions=(
                        make(
                            nested(module, "TxnOffsetCommitRequestPartition"),
                            partition_index=0,
                            committed_offset=42,
                            committed_leader_epoch=-1,
                            committed_metadata="",
                        ),
                    ),
                ),
            ),
        )
    )
    assert response.topics[0].partitions[0].error_code == ErrorCode.none
    error, _next = end_txn_v5(client, "eos-v2-txn", producer, commit=True)
    assert error == ErrorCode.none
    fetched = client.request(
        request(
            ApiKey.OFFSET_FETCH,
            7,
            group_id="eos-v2-group",
            topics=(
                make(
                    nested(request_module(ApiKey.OFFSET_FETCH, 7), "OffsetFetchRequestTopic"),
                    name="eos-v2",
                    partition_indexes=(0,),
                ),
            ),
            require_stable=True,
        )
    )
    assert fetched.topics[0].partitions[0].committed_offset == 42
    assert committed_values(client, "eos-v2") == [b"processed"]
