"""`__transaction_state` partitions on a single broker (Kafka's
`transaction.state.log.num.partitions`, default 50; TransactionStateManager.partitionFor):

- the topic is created with 50 partitions by default, or with the configured count, and a
  transactional id's state goes to partition `abs(hashCode(id)) % partitions` (Java's
  String.hashCode, computed here independently);
- a data directory whose `__transaction_state` has 1 partition (written before the topic had
  more, or with the setting at 1) still loads under the default setting: the topic keeps its 1
  partition, as Kafka keeps an existing topic's partition count, and the producer's state is
  there (InitProducerId bumps its epoch instead of handing out a new producer id);
- transactions whose ids live in different partitions commit independently, and
  ListTransactions lists the ids of every partition.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from odradek.broker.server import Broker
from odradek.cli.wire import DescribedTransaction, WireClient, decode_describe_transactions
from odradek.protocol.api_keys import ApiKey
from odradek.testing.pytest_plugin import TEST_CONFIG

pytestmark = pytest.mark.timeout(120)

TRANSACTION_STATE = "__transaction_state"


def java_string_hash(text: str) -> int:
    """Java's String.hashCode: s[0]*31^(n-1) + ... over UTF-16 code units, as a signed int."""
    value = 0
    units = text.encode("utf-16-be")
    for index in range(0, len(units), 2):
        value = (value * 31 + int.from_bytes(units[index : index + 2], "big")) % 2**32
    return value - 2**32 if value >= 2**31 else value


def kafka_partition_for(transactional_id: str, partitions: int) -> int:
    """Utils.abs(transactionalId.hashCode) % partitions (Utils.abs maps MIN_VALUE to 0)."""
    hashed = java_string_hash(transactional_id)
    return (0 if hashed == -(2**31) else abs(hashed)) % partitions


def test_the_java_hash_this_file_checks_against() -> None:
    # Known Java values: "hello".hashCode() == 99162322; "polygenelubricants".hashCode() is
    # Integer.MIN_VALUE, which Kafka's Utils.abs turns into 0.
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert kafka_partition_for("polygenelubricants", 50) == 0
    from odradek.coordinator.txn import transaction_partition_for

    for transactional_id in ["", "hello", "polygenelubricants", "ü-€-𝄞", *map(str, range(200))]:
        assert transaction_partition_for(transactional_id, 50) == kafka_partition_for(
            transactional_id, 50
        )


def state_partition_counts(bootstrap: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    topic = admin.list_topics(TRANSACTION_STATE, timeout=10).topics[TRANSACTION_STATE]
    assert topic.error is None
    return len(topic.partitions)


def listed_ids(bootstrap: str) -> set[str]:
    """ListTransactions v0 on the broker: every transactional id it coordinates."""
    with WireClient(bootstrap, timeout=10) as client:
        response = client.request(
            ApiKey.LIST_TRANSACTIONS, 0, state_filters=(), producer_id_filters=()
        )
    assert response.error_code == 0
    return {entry.transactional_id for entry in response.transaction_states}


def describe(bootstrap: str, ids: list[str]) -> dict[str, DescribedTransaction]:
    with WireClient(bootstrap, timeout=10) as client:
        body = client.request_body(ApiKey.DESCRIBE_TRANSACTIONS, 0, transactional_ids=tuple(ids))
    return {entry.transactional_id: entry for entry in decode_describe_transactions(body)}


def transactional_producer(bootstrap: str, transactional_id: str) -> Producer:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": transactional_id, "log_level": 0}
    )
    producer.init_transactions(30)
    return producer


def log_end_offsets(data_dir: Path, partitions: int) -> dict[int, int]:
    """Partitions of `__transaction_state` holding records (their directory's .log bytes)."""
    sizes = {}
    for index in range(partitions):
        directory = data_dir / f"{TRANSACTION_STATE}-{index}"
        sizes[index] = sum(path.stat().st_size for path in directory.glob("*.log"))
    return sizes


def read_committed(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    try:
        for _attempt in range(100):
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                values.append(message.value())
            if len(values) >= count:
                break
    finally:
        consumer.close()
    return values


def test_default_is_fifty_partitions_and_ids_land_in_their_hash_partition(
    tmp_path: Path,
) -> None:
    ids = [f"spread-{number}" for number in range(6)]
    partitions = {kafka_partition_for(transactional_id, 50) for transactional_id in ids}
    assert len(partitions) > 1, "the ids must spread over several partitions"
    with Broker(data_dir=tmp_path, config=TEST_CONFIG) as broker:
        bootstrap = broker.bootstrap_servers
        producers = [
            transactional_producer(bootstrap, transactional_id) for transactional_id in ids
        ]
        assert state_partition_counts(bootstrap) == 50
        for number, producer in enumerate(producers):
            producer.begin_transaction()
            producer.produce("spread", f"value-{number}".encode(), partition=0)
            producer.commit_transaction(30)
        assert sorted(read_committed(bootstrap, "spread", len(ids))) == [
            f"value-{number}".encode() for number in range(len(ids))
        ]
        assert listed_ids(bootstrap) == set(ids)
        assert {entry.state for entry in describe(bootstrap, ids).values()} == {"CompleteCommit"}
        for producer in producers:
            producer.flush(5)
    # Only the ids' own partitions hold records (each written partition: its coordinator
    # epoch and the ids' transactions).
    sizes = log_end_offsets(tmp_path, 50)
    assert {index for index, size in sizes.items() if size > 0} == partitions


def test_configured_partition_count_is_honoured(tmp_path: Path) -> None:
    config = {**TEST_CONFIG, "transaction.state.log.num.partitions": "7"}
    with Broker(data_dir=tmp_path, config=config) as broker:
        transactional_producer(broker.bootstrap_servers, "configured")
        assert state_partition_counts(broker.bootstrap_servers) == 7
    sizes = log_end_offsets(tmp_path, 7)
    assert {index for index, size in sizes.items() if size > 0} == {
        kafka_partition_for("configured", 7)
    }


def test_a_one_partition_transaction_log_still_loads_and_keeps_one_partition(
    tmp_path: Path,
) -> None:
    # Written with one partition (as every Odradek before `transaction.state.log.num.partitions`
    # was honoured), with a committed transaction and a producer id to keep.
    ids = [f"kept-{number}" for number in range(4)]
    one = {**TEST_CONFIG, "transaction.state.log.num.partitions": "1"}
    with Broker(data_dir=tmp_path, config=one) as broker:
        producer_ids = {}
        for transactional_id in ids:
            producer = transactional_producer(broker.bootstrap_servers, transactional_id)
            producer.begin_transaction()
            producer.produce("kept", transactional_id.encode(), partition=0)
            producer.commit_transaction(30)
        for transactional_id, entry in describe(broker.bootstrap_servers, ids).items():
            producer_ids[transactional_id] = entry.producer_id
    # Restarted with the default (50): the existing topic keeps its one partition.
    with Broker(data_dir=tmp_path, config=TEST_CONFIG) as broker:
        bootstrap = broker.bootstrap_servers
        assert state_partition_counts(bootstrap) == 1
        for transactional_id, entry in describe(bootstrap, ids).items():
            assert entry.error == 0
            assert entry.state == "CompleteCommit"
            assert entry.producer_id == producer_ids[transactional_id]
        assert listed_ids(bootstrap) == set(ids)
        producer = transactional_producer(bootstrap, ids[0])
        producer.begin_transaction()
        producer.produce("kept", b"after-restart", partition=0)
        producer.commit_transaction(30)
        assert read_committed(bootstrap, "kept", 5)[-1] == b"after-restart"
        (again,) = describe(bootstrap, [ids[0]]).values()
        assert again.producer_id == producer_ids[ids[0]]
        assert again.producer_epoch == 1  # the second init_transactions() bumped it
    assert not (tmp_path / f"{TRANSACTION_STATE}-1").exists()
