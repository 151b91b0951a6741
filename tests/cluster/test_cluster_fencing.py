"""Zombie fencing across brokers (a controller and three brokers, RF=3, min.insync.replicas=2):
a transactional producer fenced by a new instance with the same transactional.id — the new one
bootstrapped from another broker — can neither write nor commit, whichever broker it sends to:

- confluent-kafka: the old producer's next record (to a partition led by a broker that is not
  the transaction coordinator) and its commit fail with a fencing error;
- the raw protocol, the old (producer id, epoch) after the new instance's InitProducerId: a
  Produce to the partition it already wrote (its leader has the abort marker of the new epoch),
  a Produce v12 to a partition it never added (the leader asks the coordinator, KIP-890 part 2),
  AddPartitionsToTxn, AddOffsetsToTxn and EndTxn to the coordinator: each refused with
  INVALID_PRODUCER_EPOCH or PRODUCER_FENCED (Kafka's ProducerStateManager and
  TransactionCoordinator; KIP-588 answers PRODUCER_FENCED from these request versions on);
- a read_committed reader sees only the new instance's records.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import (
    TRANSACTION_KEY_TYPE,
    create_replicated_topic,
    find_coordinator,
    wait_until,
)
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kio.schema.errors import ErrorCode

from odradek.cli.wire import WireClient
from odradek.cluster import Cluster
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.record_batch import Record, encode_batch

pytestmark = pytest.mark.timeout(180)

FENCING_ERRORS = {ErrorCode.invalid_producer_epoch, ErrorCode.producer_fenced}
# librdkafka reports a fenced producer as _FENCED (its own code) or the broker's code.
CLIENT_FENCING_CODES = {
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
}
RETRIABLE = {
    ErrorCode.concurrent_transactions,
    ErrorCode.coordinator_load_in_progress,
    ErrorCode.coordinator_not_available,
    ErrorCode.not_coordinator,
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3,
        data_dir=tmp_path_factory.mktemp("fencing"),
        log_level="INFO",
        config={
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.num.partitions": "3",
            "group.initial.rebalance.delay.ms": "0",
        },
    ) as running:
        yield running


def partitions_led_elsewhere(
    cluster: Cluster, topic: str, partitions: int, avoid: int
) -> list[int]:
    """The partitions of `topic` whose leader is not broker `avoid` (waits for two)."""
    found: list[int] = []

    def look() -> bool:
        found[:] = [
            index
            for index in range(partitions)
            if cluster.leader_of(topic, index) not in (None, avoid)
        ]
        return len(found) >= 2

    wait_until(look, message=f"two partitions of {topic} led by another broker than {avoid}")
    return found


def request(cluster: Cluster, node: int, api_key: int, version: int, **fields: Any) -> Any:
    """One request to broker `node`, repeated while the answer's top-level error is retriable."""
    deadline = time.monotonic() + 30
    while True:
        with WireClient(cluster.broker_address(node), timeout=15) as client:
            response = client.request(api_key, version, **fields)
        error = getattr(response, "error_code", ErrorCode.none)
        if ErrorCode(error) not in RETRIABLE or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def init_producer_id(cluster: Cluster, node: int, transactional_id: str) -> tuple[int, int]:
    response = request(
        cluster,
        node,
        ApiKey.INIT_PRODUCER_ID,
        4,
        transactional_id=transactional_id,
        transaction_timeout=60_000,
        producer_id=-1,
        producer_epoch=-1,
    )
    assert response.error_code == ErrorCode.none
    return int(response.producer_id), int(response.producer_epoch)


def add_partition(
    cluster: Cluster,
    node: int,
    transactional_id: str,
    producer: tuple[int, int],
    topic: str,
    index: int,
) -> ErrorCode:
    with WireClient(cluster.broker_address(node), timeout=15) as client:
        entry = client.build(
            ApiKey.ADD_PARTITIONS_TO_TXN,
            3,
            "AddPartitionsToTxnTopic",
            name=topic,
            partitions=(index,),
        )
        response = client.request(
            ApiKey.ADD_PARTITIONS_TO_TXN,
            3,
            v3_and_below_transactional_id=transactional_id,
            v3_and_below_producer_id=producer[0],
            v3_and_below_producer_epoch=producer[1],
            v3_and_below_topics=(entry,),
        )
    (result,) = response.results_by_topic_v3_and_below
    return ErrorCode(result.results_by_partition[0].partition_error_code)


def produce(
    cluster: Cluster,
    node: int,
    transactional_id: str,
    producer: tuple[int, int],
    topic: str,
    index: int,
    base_sequence: int,
    value: bytes,
    version: int = 9,
) -> ErrorCode:
    """One transactional batch of one record (acks=all) to broker `node`; the partition's error."""
    records = encode_batch(
        [Record(key=None, value=value)],
        producer_id=producer[0],
        producer_epoch=producer[1],
        base_sequence=base_sequence,
        is_transactional=True,
        base_timestamp=1_700_000_000_000,
    )
    with WireClient(cluster.broker_address(node), timeout=15) as client:
        partition = client.build(
            ApiKey.PRODUCE, version, "PartitionProduceData", index=index, records=records
        )
        topic_data = client.build(
            ApiKey.PRODUCE, version, "TopicProduceData", name=topic, partition_data=(partition,)
        )
        response = client.request(
            ApiKey.PRODUCE,
            version,
            transactional_id=transactional_id,
            acks=-1,
            timeout=10_000,
            topic_data=(topic_data,),
        )
    return ErrorCode(response.responses[0].partition_responses[0].error_code)


def read_committed(cluster: Cluster, topic: str, index: int, until: bytes) -> list[bytes]:
    """Values of `topic`-`index` a read_committed reader gets from offset 0 until it has read
    `until`, and 1 s more (anything after it would show), or 20 s pass."""
    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    consumer.assign([TopicPartition(topic, index, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                values.append(message.value() or b"")
                if message.value() == until:
                    deadline = min(deadline, time.monotonic() + 1)
    finally:
        consumer.close()
    return values


def test_a_client_fenced_through_another_broker_can_neither_write_nor_commit(
    cluster: Cluster,
) -> None:
    transactional_id = f"fenced-client-{uuid.uuid4()}"
    coordinator = find_coordinator(cluster, transactional_id, TRANSACTION_KEY_TYPE)
    topic = f"fenced-client-{uuid.uuid4().hex[:8]}"
    create_replicated_topic(cluster, topic, 3)
    index = partitions_led_elsewhere(cluster, topic, 3, coordinator)[0]
    first, second = cluster.node_ids[0], cluster.node_ids[1]

    def producer(bootstrap_node: int) -> Any:
        return Producer(
            {
                "bootstrap.servers": cluster.broker_address(bootstrap_node),
                "transactional.id": transactional_id,
                "log_level": 0,
            }
        )

    old = producer(first)
    old.init_transactions(30)
    old.begin_transaction()
    old.produce(topic, b"old-1", partition=index)
    assert old.flush(30) == 0

    new = producer(second)  # another broker: the old instance's bootstrap is not involved
    new.init_transactions(30)  # fences `old` and aborts its open transaction
    new.begin_transaction()
    new.produce(topic, b"new-1", partition=index)
    new.commit_transaction(30)

    # The old instance's record reaches the partition's leader (not the coordinator), which
    # refuses its epoch: librdkafka raises the fatal fencing error from flush.
    old.produce(topic, b"old-2", partition=index)
    with pytest.raises(KafkaException) as written:
        old.flush(30)
    error = written.value.args[0]
    assert error.code() in CLIENT_FENCING_CODES, error
    assert error.fatal(), error
    with pytest.raises(KafkaException) as refused:
        old.commit_transaction(30)
    error = refused.value.args[0]
    assert error.code() in CLIENT_FENCING_CODES, error
    assert error.fatal(), error

    assert read_committed(cluster, topic, index, until=b"new-1") == [b"new-1"]


def test_the_fenced_epoch_is_refused_by_every_broker_it_reaches(cluster: Cluster) -> None:
    transactional_id = f"fenced-raw-{uuid.uuid4()}"
    coordinator = find_coordinator(cluster, transactional_id, TRANSACTION_KEY_TYPE)
    topic = f"fenced-raw-{uuid.uuid4().hex[:8]}"
    create_replicated_topic(cluster, topic, 3)
    written, untouched = partitions_led_elsewhere(cluster, topic, 3, coordinator)[:2]
    written_leader = cluster.leader_of(topic, written)
    untouched_leader = cluster.leader_of(topic, untouched)
    assert written_leader is not None
    assert untouched_leader is not None

    old = init_producer_id(cluster, coordinator, transactional_id)
    assert add_partition(cluster, coordinator, transactional_id, old, topic, written) == (
        ErrorCode.none
    )
    assert (
        produce(cluster, written_leader, transactional_id, old, topic, written, 0, b"old-1")
        == ErrorCode.none
    )

    # The new instance: its InitProducerId aborts the old transaction (markers to the leader of
    # `written`) and bumps the epoch.
    new = init_producer_id(cluster, coordinator, transactional_id)
    assert new[0] == old[0]
    assert new[1] > old[1]

    refusals = {
        "Produce to the partition it wrote": produce(
            cluster, written_leader, transactional_id, old, topic, written, 1, b"old-2"
        ),
        "Produce v12 to a partition never added": produce(
            cluster, untouched_leader, transactional_id, old, topic, untouched, 0, b"old-3", 12
        ),
        "AddPartitionsToTxn": add_partition(
            cluster, coordinator, transactional_id, old, topic, untouched
        ),
        "AddOffsetsToTxn": ErrorCode(
            request(
                cluster,
                coordinator,
                ApiKey.ADD_OFFSETS_TO_TXN,
                3,
                transactional_id=transactional_id,
                producer_id=old[0],
                producer_epoch=old[1],
                group_id=f"fenced-group-{uuid.uuid4().hex[:8]}",
            ).error_code
        ),
        "EndTxn commit": ErrorCode(
            request(
                cluster,
                coordinator,
                ApiKey.END_TXN,
                3,
                transactional_id=transactional_id,
                producer_id=old[0],
                producer_epoch=old[1],
                committed=True,
            ).error_code
        ),
    }
    not_fenced = {what: error for what, error in refusals.items() if error not in FENCING_ERRORS}
    assert not_fenced == {}, refusals

    # The new instance commits one record to each partition: all a reader ever sees.
    for index, leader in ((written, written_leader), (untouched, untouched_leader)):
        assert add_partition(cluster, coordinator, transactional_id, new, topic, index) == (
            ErrorCode.none
        )
        assert (
            produce(cluster, leader, transactional_id, new, topic, index, 0, b"new-%d" % index)
            == ErrorCode.none
        )
    committed = request(
        cluster,
        coordinator,
        ApiKey.END_TXN,
        3,
        transactional_id=transactional_id,
        producer_id=new[0],
        producer_epoch=new[1],
        committed=True,
    )
    assert committed.error_code == ErrorCode.none
    for index in (written, untouched):
        assert read_committed(cluster, topic, index, until=b"new-%d" % index) == [b"new-%d" % index]
