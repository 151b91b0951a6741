"""Idempotence and transactions over the raw protocol: deduplication of replayed batches
(also across a restart), sequence gaps, KIP-890's produce check, aborted ranges in Fetch, and
Kafka's error codes for bad input with the state left unchanged."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from raw_client import RawClient

from odradek.broker.server import Broker
from odradek.cli.wire import DescribedTransaction, decode_describe_transactions
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import make, nested, request_module, request_type
from odradek.protocol.record_batch import Record, decode_batches, encode_batch

pytestmark = pytest.mark.timeout(60)


def request(api_key: ApiKey, version: int, **fields: Any) -> Any:
    return make(request_type(api_key, version), **fields)


def child(api_key: ApiKey, version: int, type_name: str, **fields: Any) -> Any:
    return make(nested(request_module(api_key, version), type_name), **fields)


@pytest.fixture
def client(broker: Broker) -> Iterator[RawClient]:
    with RawClient(broker.bootstrap_servers) as raw:
        yield raw


def create_topic(client: RawClient, name: str, partitions: int = 1) -> None:
    topic = child(
        ApiKey.CREATE_TOPICS,
        5,
        "CreatableTopic",
        name=name,
        num_partitions=partitions,
        replication_factor=1,
        assignments=(),
        configs=(),
    )
    response = client.request(
        request(ApiKey.CREATE_TOPICS, 5, topics=(topic,), timeout=5000, validate_only=False)
    )
    assert response.topics[0].error_code == ErrorCode.none


def init_producer_id(client: RawClient, transactional_id: str | None = None) -> tuple[int, int]:
    response = client.request(
        request(
            ApiKey.INIT_PRODUCER_ID,
            4,
            transactional_id=transactional_id,
            transaction_timeout=60_000,
            producer_id=-1,
            producer_epoch=-1,
        )
    )
    assert response.error_code == ErrorCode.none
    return int(response.producer_id), int(response.producer_epoch)


def batch(
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    count: int = 3,
    transactional: bool = False,
) -> bytes:
    return encode_batch(
        [Record(key=b"k", value=b"v%d" % (base_sequence + i)) for i in range(count)],
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        is_transactional=transactional,
        base_timestamp=1_700_000_000_000,
    )


def produce(
    client: RawClient,
    topic: str,
    records: bytes,
    transactional_id: str | None = None,
    partition: int = 0,
    version: int = 9,
) -> Any:
    module = request_module(ApiKey.PRODUCE, version)
    response = client.request(
        make(
            request_type(ApiKey.PRODUCE, version),
            transactional_id=transactional_id,
            acks=-1,
            timeout=10_000,
            topic_data=(
                make(
                    nested(module, "TopicProduceData"),
                    name=topic,
                    partition_data=(
                        make(
                            nested(module, "PartitionProduceData"),
                            index=partition,
                            records=records,
                        ),
                    ),
                ),
            ),
        )
    )
    return response.responses[0].partition_responses[0]


def fetch(
    client: RawClient, topic: str, isolation_level: int, offset: int = 0, version: int = 11
) -> Any:
    module = request_module(ApiKey.FETCH, version)
    response = client.request(
        make(
            request_type(ApiKey.FETCH, version),
            replica_id=-1,
            max_wait=datetime.timedelta(0),
            min_bytes=0,
            max_bytes=1 << 20,
            isolation_level=isolation_level,
            session_id=0,
            session_epoch=-1,
            topics=(
                make(
                    nested(module, "FetchTopic"),
                    topic=topic,
                    partitions=(
                        make(
                            nested(module, "FetchPartition"),
                            partition=0,
                            current_leader_epoch=-1,
                            fetch_offset=offset,
                            log_start_offset=-1,
                            partition_max_bytes=1 << 20,
                        ),
                    ),
                ),
            ),
            forgotten_topics_data=(),
            rack_id="",
        )
    )
    return response.responses[0].partitions[0]


def values_in_log(client: RawClient, topic: str, isolation_level: int = 0) -> list[bytes | None]:
    result = fetch(client, topic, isolation_level)
    return [
        record.value
        for header, records in decode_batches(result.records or b"")
        if not header.is_control
        for record in records
    ]


def add_partitions(
    client: RawClient,
    transactional_id: str,
    producer: tuple[int, int],
    topics: dict[str, list[int]],
    version: int = 3,
) -> dict[tuple[str, int], ErrorCode]:
    response = client.request(
        request(
            ApiKey.ADD_PARTITIONS_TO_TXN,
            version,
            v3_and_below_transactional_id=transactional_id,
            v3_and_below_producer_id=producer[0],
            v3_and_below_producer_epoch=producer[1],
            v3_and_below_topics=tuple(
                child(
                    ApiKey.ADD_PARTITIONS_TO_TXN,
                    version,
                    "AddPartitionsToTxnTopic",
                    name=name,
                    partitions=tuple(partitions),
                )
                for name, partitions in topics.items()
            ),
        )
    )
    return {
        (topic.name, partition.partition_index): partition.partition_error_code
        for topic in response.results_by_topic_v3_and_below
        for partition in topic.results_by_partition
    }


def end_txn(
    client: RawClient,
    transactional_id: str,
    producer: tuple[int, int],
    commit: bool,
    version: int = 3,
) -> ErrorCode:
    response = client.request(
        request(
            ApiKey.END_TXN,
            version,
            transactional_id=transactional_id,
            producer_id=producer[0],
            producer_epoch=producer[1],
            committed=commit,
        )
    )
    return ErrorCode(response.error_code)


def describe(client: RawClient, transactional_id: str) -> DescribedTransaction:
    # kio cannot read the start time -1 of an id without an open transaction: read by hand.
    client.send(request(ApiKey.DESCRIBE_TRANSACTIONS, 0, transactional_ids=(transactional_id,)))
    frame = client.read_frame()
    (described,) = decode_describe_transactions(frame[5:])
    return described


# -- idempotence --------------------------------------------------------------------------


def test_replayed_batch_is_acknowledged_with_its_original_offset(client: RawClient) -> None:
    create_topic(client, "dedup")
    producer = init_producer_id(client)
    first = produce(client, "dedup", batch(*producer, 0))
    assert (first.error_code, first.base_offset) == (ErrorCode.none, 0)
    second = produce(client, "dedup", batch(*producer, 3))
    assert second.base_offset == 3
    # The response to the first batch was "lost": the client sends it again.
    replay = produce(client, "dedup", batch(*producer, 0))
    assert (replay.error_code, replay.base_offset) == (ErrorCode.none, 0)
    assert values_in_log(client, "dedup") == [b"v%d" % i for i in range(6)]


def test_deduplication_survives_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with Broker(data_dir=data_dir) as broker, RawClient(broker.bootstrap_servers) as client:
        create_topic(client, "dedup")
        producer = init_producer_id(client)
        assert produce(client, "dedup", batch(*producer, 0)).base_offset == 0
        assert produce(client, "dedup", batch(*producer, 3)).base_offset == 3
    with Broker(data_dir=data_dir) as broker, RawClient(broker.bootstrap_servers) as client:
        replay = produce(client, "dedup", batch(*producer, 3))
        assert (replay.error_code, replay.base_offset) == (ErrorCode.none, 3)
        assert values_in_log(client, "dedup") == [b"v%d" % i for i in range(6)]
        # The producer continues where it left off; a new producer id never repeats one.
        assert produce(client, "dedup", batch(*producer, 6)).base_offset == 6
        assert init_producer_id(client)[0] > producer[0]


def test_sequence_gap_is_out_of_order_and_appends_nothing(client: RawClient) -> None:
    create_topic(client, "gap")
    producer = init_producer_id(client)
    assert produce(client, "gap", batch(*producer, 0)).error_code == ErrorCode.none
    gap = produce(client, "gap", batch(*producer, 5))
    assert gap.error_code == ErrorCode.out_of_order_sequence_number
    assert gap.base_offset == -1
    assert values_in_log(client, "gap") == [b"v0", b"v1", b"v2"]
    # The right next sequence is still accepted.
    assert produce(client, "gap", batch(*producer, 3)).base_offset == 3


def test_stale_epoch_is_invalid_producer_epoch(client: RawClient) -> None:
    create_topic(client, "epochs")
    producer_id, _epoch = init_producer_id(client, "tx-epochs")
    assert add_partitions(client, "tx-epochs", (producer_id, 0), {"epochs": [0]}) == {
        ("epochs", 0): ErrorCode.none
    }
    records = batch(producer_id, 0, 0, transactional=True)
    assert produce(client, "epochs", records, "tx-epochs").error_code == ErrorCode.none
    assert end_txn(client, "tx-epochs", (producer_id, 0), commit=True) == ErrorCode.none
    bumped = init_producer_id(client, "tx-epochs")
    assert bumped == (producer_id, 1)
    assert add_partitions(client, "tx-epochs", bumped, {"epochs": [0]})[("epochs", 0)] == 0
    assert (
        produce(client, "epochs", batch(*bumped, 0, transactional=True), "tx-epochs").error_code
        == 0
    )
    stale = produce(client, "epochs", batch(producer_id, 0, 3, transactional=True), "tx-epochs")
    assert stale.error_code == ErrorCode.invalid_producer_epoch


# -- KIP-890 part 1 and readers -------------------------------------------------------------


def test_transactional_produce_to_a_partition_not_in_the_transaction(client: RawClient) -> None:
    create_topic(client, "kip890", partitions=2)
    producer = init_producer_id(client, "tx-890")
    assert add_partitions(client, "tx-890", producer, {"kip890": [0]})[("kip890", 0)] == 0
    refused = produce(client, "kip890", batch(*producer, 0, transactional=True), "tx-890", 1)
    assert refused.error_code == ErrorCode.invalid_txn_state
    accepted = produce(client, "kip890", batch(*producer, 0, transactional=True), "tx-890", 0)
    assert accepted.error_code == ErrorCode.none
    assert end_txn(client, "tx-890", producer, commit=True) == ErrorCode.none
    # A delayed batch after the commit: the partition is in no ongoing transaction any more.
    late = produce(client, "kip890", batch(*producer, 3, transactional=True), "tx-890", 0)
    assert late.error_code == ErrorCode.invalid_txn_state
    assert values_in_log(client, "kip890") == [b"v0", b"v1", b"v2"]


@pytest.mark.parametrize(
    ("version", "expected"),
    [(10, ErrorCode.invalid_txn_state), (11, ErrorCode.transaction_abortable)],
)
def test_produce_v11_gets_transaction_abortable_for_a_partition_not_in_the_transaction(
    client: RawClient, version: int, expected: ErrorCode
) -> None:
    # KIP-890: the coordinator answers TRANSACTION_ABORTABLE; Kafka passes it to Produce v11+
    # clients and turns it into INVALID_TXN_STATE for older ones (AddPartitionsToTxnManager).
    topic, transactional_id = f"kip890-v{version}", f"tx-890-v{version}"
    create_topic(client, topic, partitions=2)
    producer = init_producer_id(client, transactional_id)
    assert add_partitions(client, transactional_id, producer, {topic: [0]})[(topic, 0)] == 0
    records = batch(*producer, 0, transactional=True)
    refused = produce(client, topic, records, transactional_id, 1, version=version)
    assert refused.error_code == expected
    if expected == ErrorCode.invalid_txn_state:
        assert refused.error_message == "Partition was not added to the transaction"
    assert values_in_log(client, topic) == []


def test_read_committed_fetch_stops_at_lso_and_lists_aborted_ranges(client: RawClient) -> None:
    create_topic(client, "ranges")
    producer = init_producer_id(client, "tx-ranges")
    add_partitions(client, "tx-ranges", producer, {"ranges": [0]})
    produce(client, "ranges", batch(*producer, 0, transactional=True), "tx-ranges")
    open_txn = fetch(client, "ranges", isolation_level=1)
    assert (open_txn.high_watermark, open_txn.last_stable_offset) == (3, 0)
    assert open_txn.records in (b"", None)
    assert list(open_txn.aborted_transactions) == []
    assert len(values_in_log(client, "ranges", isolation_level=0)) == 3  # read_uncommitted
    assert end_txn(client, "tx-ranges", producer, commit=False) == ErrorCode.none
    aborted = fetch(client, "ranges", isolation_level=1)
    assert (aborted.high_watermark, aborted.last_stable_offset) == (4, 4)  # + the ABORT marker
    assert [(a.producer_id, a.first_offset) for a in aborted.aborted_transactions] == [
        (producer[0], 0)
    ]
    uncommitted = fetch(client, "ranges", isolation_level=0)
    assert uncommitted.aborted_transactions is None


# -- bad input -------------------------------------------------------------------------------


def test_end_txn_for_unknown_or_fenced_producer(client: RawClient) -> None:
    create_topic(client, "bad-end")
    assert end_txn(client, "nobody", (12345, 0), commit=True) == (
        ErrorCode.invalid_producer_id_mapping
    )
    producer = init_producer_id(client, "tx-bad-end")
    add_partitions(client, "tx-bad-end", producer, {"bad-end": [0]})
    before = describe(client, "tx-bad-end")
    assert before.state == "Ongoing"
    fenced = (producer[0], producer[1] + 1)
    assert end_txn(client, "tx-bad-end", fenced, commit=True) == ErrorCode.producer_fenced
    assert end_txn(client, "tx-bad-end", fenced, commit=True, version=1) == (
        ErrorCode.invalid_producer_epoch
    )
    assert end_txn(client, "tx-bad-end", (producer[0] + 1, 0), commit=False) == (
        ErrorCode.invalid_producer_id_mapping
    )
    after = describe(client, "tx-bad-end")
    assert after == before
    assert end_txn(client, "tx-bad-end", producer, commit=True) == ErrorCode.none
    # Committing an already committed transaction is a retry; aborting it is not.
    assert end_txn(client, "tx-bad-end", producer, commit=True) == ErrorCode.none
    assert end_txn(client, "tx-bad-end", producer, commit=False) == ErrorCode.invalid_txn_state


def test_add_partitions_for_unknown_topics(client: RawClient) -> None:
    create_topic(client, "known")
    producer = init_producer_id(client, "tx-unknown")
    errors = add_partitions(client, "tx-unknown", producer, {"known": [0], "missing": [0, 1]})
    assert errors == {
        ("known", 0): ErrorCode.operation_not_attempted,
        ("missing", 0): ErrorCode.unknown_topic_or_partition,
        ("missing", 1): ErrorCode.unknown_topic_or_partition,
    }
    assert describe(client, "tx-unknown").state == "Empty"
    assert add_partitions(client, "tx-unknown", producer, {"known": [7]}) == {
        ("known", 7): ErrorCode.unknown_topic_or_partition
    }
    assert describe(client, "tx-unknown").state == "Empty"


def test_add_partitions_v4_batched(client: RawClient) -> None:
    create_topic(client, "batched")
    producer = init_producer_id(client, "tx-batched")
    topics = (
        child(
            ApiKey.ADD_PARTITIONS_TO_TXN,
            4,
            "AddPartitionsToTxnTopic",
            name="batched",
            partitions=(0,),
        ),
    )

    def send(verify_only: bool) -> ErrorCode:
        transaction = child(
            ApiKey.ADD_PARTITIONS_TO_TXN,
            4,
            "AddPartitionsToTxnTransaction",
            transactional_id="tx-batched",
            producer_id=producer[0],
            producer_epoch=producer[1],
            verify_only=verify_only,
            topics=topics,
        )
        response = client.request(
            request(ApiKey.ADD_PARTITIONS_TO_TXN, 4, transactions=(transaction,))
        )
        result = response.results_by_transaction[0]
        assert result.transactional_id == "tx-batched"
        return ErrorCode(result.topic_results[0].results_by_partition[0].partition_error_code)

    assert send(verify_only=True) == ErrorCode.transaction_abortable
    assert send(verify_only=False) == ErrorCode.none
    assert send(verify_only=True) == ErrorCode.none


def test_txn_offset_commit_with_stale_generation(client: RawClient) -> None:
    create_topic(client, "offsets-in")
    join = client.request(
        request(
            ApiKey.JOIN_GROUP,
            5,
            group_id="copy-group",
            session_timeout=10_000,
            rebalance_timeout=10_000,
            member_id="",
            group_instance_id="static-1",
            protocol_type="consumer",
            protocols=(
                child(ApiKey.JOIN_GROUP, 5, "JoinGroupRequestProtocol", name="range", metadata=b""),
            ),
        )
    )
    assert join.error_code == ErrorCode.none
    producer = init_producer_id(client, "tx-offsets")
    response = client.request(
        request(
            ApiKey.ADD_OFFSETS_TO_TXN,
            3,
            transactional_id="tx-offsets",
            producer_id=producer[0],
            producer_epoch=producer[1],
            group_id="copy-group",
        )
    )
    assert response.error_code == ErrorCode.none

    def commit(generation: int, member_id: str, offset: int) -> ErrorCode:
        partition = child(
            ApiKey.TXN_OFFSET_COMMIT,
            3,
            "TxnOffsetCommitRequestPartition",
            partition_index=0,
            committed_offset=offset,
            committed_leader_epoch=-1,
            committed_metadata="",
        )
        topic = child(
            ApiKey.TXN_OFFSET_COMMIT,
            3,
            "TxnOffsetCommitRequestTopic",
            name="offsets-in",
            partitions=(partition,),
        )
        answer = client.request(
            request(
                ApiKey.TXN_OFFSET_COMMIT,
                3,
                transactional_id="tx-offsets",
                group_id="copy-group",
                producer_id=producer[0],
                producer_epoch=producer[1],
                generation_id=generation,
                member_id=member_id,
                group_instance_id="static-1",
                topics=(topic,),
            )
        )
        return ErrorCode(answer.topics[0].partitions[0].error_code)

    def committed_offset(require_stable: bool = False) -> tuple[int, ErrorCode]:
        answer = client.request(
            request(
                ApiKey.OFFSET_FETCH,
                7,
                group_id="copy-group",
                topics=(
                    child(
                        ApiKey.OFFSET_FETCH,
                        7,
                        "OffsetFetchRequestTopic",
                        name="offsets-in",
                        partition_indexes=(0,),
                    ),
                ),
                require_stable=require_stable,
            )
        )
        partition = answer.topics[0].partitions[0]
        return int(partition.committed_offset), ErrorCode(partition.error_code)

    generation = join.generation_id
    assert commit(generation + 1, join.member_id, 5) == ErrorCode.illegal_generation
    assert commit(generation, "someone-else", 5) == ErrorCode.fenced_instance_id
    assert committed_offset(require_stable=True) == (-1, ErrorCode.none)  # nothing staged
    assert commit(generation, join.member_id, 7) == ErrorCode.none
    # Staged, not visible: a read_committed consumer is told to wait (KIP-447).
    assert committed_offset() == (-1, ErrorCode.none)
    assert committed_offset(require_stable=True) == (-1, ErrorCode.unstable_offset_commit)
    assert end_txn(client, "tx-offsets", producer, commit=True) == ErrorCode.none
    assert committed_offset(require_stable=True) == (7, ErrorCode.none)


@pytest.mark.parametrize(
    ("version", "expected"),
    [(3, ErrorCode.invalid_txn_state), (4, ErrorCode.transaction_abortable)],
)
def test_txn_offset_commit_v4_gets_transaction_abortable_without_add_offsets(
    client: RawClient, version: int, expected: ErrorCode
) -> None:
    # The group's offsets partition is not in the transaction (no AddOffsetsToTxn): Kafka
    # answers TRANSACTION_ABORTABLE from v4 on, INVALID_TXN_STATE before.
    create_topic(client, f"offsets-abortable-v{version}")
    transactional_id = f"tx-offsets-abortable-v{version}"
    producer = init_producer_id(client, transactional_id)
    partition = child(
        ApiKey.TXN_OFFSET_COMMIT,
        version,
        "TxnOffsetCommitRequestPartition",
        partition_index=0,
        committed_offset=5,
        committed_leader_epoch=-1,
        committed_metadata="",
    )
    topic = child(
        ApiKey.TXN_OFFSET_COMMIT,
        version,
        "TxnOffsetCommitRequestTopic",
        name=f"offsets-abortable-v{version}",
        partitions=(partition,),
    )
    answer = client.request(
        request(
            ApiKey.TXN_OFFSET_COMMIT,
            version,
            transactional_id=transactional_id,
            group_id=f"abortable-group-v{version}",
            producer_id=producer[0],
            producer_epoch=producer[1],
            generation_id=-1,
            member_id="",
            group_instance_id=None,
            topics=(topic,),
        ),
        version,
    )
    assert answer.topics[0].partitions[0].error_code == expected
