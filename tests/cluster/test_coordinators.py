"""Coordinators on a cluster, with real processes (odradek.Cluster: a controller and three
brokers): `__consumer_offsets` and `__transaction_state` are replicated topics the controller
places, FindCoordinator names the leader of the key's partition, a new leader loads the
partition and the old one unloads it, and producer ids come only from the controller's
AllocateProducerIds blocks.

- a confluent-kafka consumer group keeps its committed offsets when the broker leading its
  `__consumer_offsets` partition is killed -9, and goes on from them (nothing skipped, nothing
  below the last commit read again);
- 3 brokers x 1,000 InitProducerId across a controller restart and a kill -9 of every broker in
  turn hand out 3,000 distinct producer ids;
- a transactional producer commits (and aborts) through a coordinator on another broker than
  the partition's leader: the markers travel with WriteTxnMarkers;
- a KIP-848 group (group.protocol=consumer) gets every partition of a topic with no replica on
  its coordinator (the assignors read the metadata image, not the local logs);
- DescribeTopicPartitions answers from the metadata image on every broker, as Metadata does;
- ListTransactions: the coordinator lists its transactional ids, every other broker an empty
  list; DescribeTransactions elsewhere is NOT_COORDINATOR; `odradek txn list|describe` work
  from any broker;
- kafka-python and aiokafka groups keep their committed offsets across a kill -9 of their
  coordinator, as confluent-kafka's does.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from cluster_helpers import create_replicated_topic as create_topic
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.errors import ErrorCode

from odradek.cli.main import cli
from odradek.cli.wire import WireClient, decode_describe_transactions
from odradek.cluster import Cluster
from odradek.coordinator.group.records import partition_for

SESSION_TIMEOUT_MS = 3000
OFFSETS_PARTITIONS = 3
FIND_COORDINATOR = 10
INIT_PRODUCER_ID = 22
RETRIABLE = {
    ErrorCode.coordinator_load_in_progress,
    ErrorCode.coordinator_not_available,
    ErrorCode.not_coordinator,
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3,
        data_dir=tmp_path_factory.mktemp("coordinators"),
        log_level="INFO",
        config={
            "broker.session.timeout.ms": str(SESSION_TIMEOUT_MS),
            "broker.heartbeat.interval.ms": "500",
            "replica.lag.time.max.ms": "1500",
            "offsets.topic.num.partitions": str(OFFSETS_PARTITIONS),
        },
    ) as running:
        yield running


def wait_until(condition: Any, timeout_s: float = 30.0, message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{message} not met in {timeout_s} s"
        time.sleep(0.1)


def running_broker(cluster: Cluster) -> int:
    return next(n for n in cluster.node_ids if cluster.is_running(n))


def find_coordinator(cluster: Cluster, key: str, key_type: int) -> int | None:
    """FindCoordinator v3 from a running broker: the coordinator's node id, or None."""
    with WireClient(cluster.broker_address(running_broker(cluster)), timeout=10) as client:
        response = client.request(FIND_COORDINATOR, 3, key=key, key_type=key_type)
    return int(response.node_id) if response.error_code == ErrorCode.none else None


def restart(cluster: Cluster, node_id: int) -> None:
    cluster.restart(node_id)
    cluster.wait_for_brokers(cluster.node_ids, timeout_s=SESSION_TIMEOUT_MS / 1000 + 20)


def test_group_keeps_its_offsets_when_its_coordinator_is_killed(cluster: Cluster) -> None:
    topic, group = "orders", "billing"
    create_topic(cluster, topic, 1)
    producer = Producer(
        {"bootstrap.servers": cluster.bootstrap_servers, "acks": "all", "log_level": 0}
    )
    for value in range(200):
        producer.produce(topic, str(value).encode())
    assert producer.flush(30) == 0

    coordinator = wait_until(
        lambda: find_coordinator(cluster, group, 0), message="a group coordinator"
    )
    # The coordinator leads the group's partition of the replicated __consumer_offsets.
    offsets = cluster.describe_partition("__consumer_offsets", hash_partition(group))
    assert offsets.leader == coordinator
    assert sorted(offsets.replicas) == cluster.node_ids

    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
            "log_level": 0,
        }
    )
    consumer.subscribe([topic])
    seen: list[int] = []
    try:
        while len(seen) < 100:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                seen.append(int(message.value() or b"-1"))
                if len(seen) == 100:
                    consumer.commit(message=message, asynchronous=False)
        committed_before = len(seen)
        cluster.wait_for_isr("__consumer_offsets", hash_partition(group), 3, timeout_s=15)

        cluster.kill(coordinator)
        new_coordinator = wait_until(
            lambda: (
                (node := find_coordinator(cluster, group, 0)) not in (None, coordinator) and node
            ),
            message="a new group coordinator",
        )
        assert new_coordinator != coordinator
        # The new coordinator loaded the group's committed offset.
        (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        assert committed.offset == committed_before

        deadline = time.monotonic() + 60
        while len(set(seen)) < 200 and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                seen.append(int(message.value() or b"-1"))
                consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()
    assert sorted(set(seen)) == list(range(200)), "a message was skipped"
    # At least once: only what followed the last commit may be read again.
    assert len(seen[:committed_before]) == len(set(seen[:committed_before]))
    assert all(value >= committed_before for value in seen[committed_before:])

    restart(cluster, coordinator)
    # A fresh member of the group starts at the last commit, wherever the coordinator is now.
    fresh = Consumer(
        {"bootstrap.servers": cluster.bootstrap_servers, "group.id": group, "log_level": 0}
    )
    try:
        (committed,) = fresh.committed([TopicPartition(topic, 0)], timeout=30)
        assert committed.offset == 200
    finally:
        fresh.close()


def hash_partition(group: str) -> int:
    return partition_for(group, OFFSETS_PARTITIONS)


def init_producer_ids(cluster: Cluster, node_id: int, count: int) -> list[int]:
    """`count` idempotent InitProducerId (v4) answers from broker `node_id`, retrying the
    retriable errors (a block being fetched, a broker just restarted)."""
    ids: list[int] = []
    deadline = time.monotonic() + 60
    while len(ids) < count:
        assert time.monotonic() < deadline, f"broker {node_id} gave {len(ids)} producer ids"
        try:
            with WireClient(cluster.broker_address(node_id), timeout=10) as client:
                while len(ids) < count:
                    response = client.request(
                        INIT_PRODUCER_ID,
                        4,
                        transactional_id=None,
                        transaction_timeout=60_000,
                        producer_id=-1,
                        producer_epoch=-1,
                    )
                    if response.error_code == ErrorCode.none:
                        ids.append(int(response.producer_id))
                        continue
                    assert response.error_code in RETRIABLE, response.error_code
                    time.sleep(0.05)
        except OSError:
            time.sleep(0.2)
    return ids


def test_producer_ids_stay_unique_across_restarts_and_kills(cluster: Cluster) -> None:
    ids: list[int] = []
    disruptions = ["controller", *cluster.node_ids]
    for disruption in disruptions:
        for node in cluster.node_ids:
            ids += init_producer_ids(cluster, node, 250)
        if disruption == "controller":
            cluster.kill(cluster.controller_id)
            cluster.restart(cluster.controller_id)
            cluster.wait_for_brokers(cluster.node_ids, timeout_s=30)
        else:
            assert isinstance(disruption, int)
            cluster.kill(disruption)
            restart(cluster, disruption)
    assert len(ids) == 3 * 1000
    assert len(set(ids)) == len(ids), "a producer id was handed out twice"


def test_transaction_commits_through_a_coordinator_on_another_broker(cluster: Cluster) -> None:
    transactional_id = f"copier-{uuid.uuid4()}"
    coordinator = wait_until(
        lambda: find_coordinator(cluster, transactional_id, 1),
        message="a transaction coordinator",
    )
    topic = "settled"
    create_topic(cluster, topic, 3)
    # A partition whose leader is not the transaction coordinator (leaders are spread).
    (partition,) = wait_until(
        lambda: [i for i in range(3) if cluster.leader_of(topic, i) not in (None, coordinator)][:1],
        message="a partition led elsewhere",
    )

    producer = Producer(
        {
            # Bootstrapping through the coordinator: a broker answering FindCoordinator with
            # "this node" would write the markers into its own copy of the partition.
            "bootstrap.servers": cluster.broker_address(coordinator),
            "transactional.id": transactional_id,
            "log_level": 0,
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for value in range(10):
        producer.produce(topic, f"committed-{value}".encode(), partition=partition)
    producer.commit_transaction(30)
    producer.begin_transaction()
    for value in range(5):
        producer.produce(topic, f"aborted-{value}".encode(), partition=partition)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"last", partition=partition)
    producer.commit_transaction(30)

    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    consumer.assign([TopicPartition(topic, partition)])
    values: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while "last" not in values and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                values.append((message.value() or b"").decode())
    finally:
        consumer.close()
    # The markers were written on the partition's leader: committed records are visible, the
    # aborted ones are not, and the last stable offset moved past both transactions.
    assert values == [f"committed-{value}" for value in range(10)] + ["last"]


# -- KIP-848, DescribeTopicPartitions and transactions across brokers --------------------------


def create_topic_on(cluster: Cluster, name: str, assignment: list[list[int]]) -> None:
    """A topic whose partition i has the replicas assignment[i] (the first is preferred)."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=len(assignment), replica_assignment=assignment)]
    )
    futures[name].result(15)
    for partition, replicas in enumerate(assignment):
        cluster.wait_for_isr(name, partition, len(replicas), timeout_s=15)


def test_kip848_group_gets_every_partition_of_a_topic_its_coordinator_does_not_host(
    cluster: Cluster,
) -> None:
    group = f"kip848-{uuid.uuid4()}"
    coordinator = wait_until(
        lambda: find_coordinator(cluster, group, 0), message="a group coordinator"
    )
    first, second = (node for node in cluster.node_ids if node != coordinator)
    topic = f"elsewhere-{uuid.uuid4().hex[:8]}"
    # No replica on the coordinator: its local logs know nothing of the topic.
    create_topic_on(cluster, topic, [[first, second], [second, first]] * 2)

    config = {
        "bootstrap.servers": cluster.bootstrap_servers,
        "group.id": group,
        "group.protocol": "consumer",
        "log_level": 0,
    }
    consumers = [Consumer(dict(config)) for _ in range(2)]
    try:
        for consumer in consumers:
            consumer.subscribe([topic])

        def spread() -> bool:
            for consumer in consumers:
                consumer.poll(0.1)
            owned = [{tp.partition for tp in c.assignment()} for c in consumers]
            return owned[0].isdisjoint(owned[1]) and owned[0] | owned[1] == {0, 1, 2, 3}

        wait_until(spread, message="every partition assigned")
    finally:
        for consumer in consumers:
            consumer.close()


DESCRIBE_TOPIC_PARTITIONS = 75


def test_describe_topic_partitions_answers_from_the_cluster_metadata(cluster: Cluster) -> None:
    placed = [node for node in cluster.node_ids if cluster.is_running(node)][:2]
    elsewhere = next(node for node in cluster.node_ids if node not in placed)
    topic = f"described-{uuid.uuid4().hex[:8]}"
    create_topic_on(cluster, topic, [placed, placed[::-1], placed])
    expected = [cluster.describe_partition(topic, index) for index in range(3)]

    for via in cluster.node_ids:  # the broker without a replica answers the same
        with WireClient(cluster.broker_address(via), timeout=10) as client:
            response = client.request(
                DESCRIBE_TOPIC_PARTITIONS,
                0,
                topics=(client.build(DESCRIBE_TOPIC_PARTITIONS, 0, "TopicRequest", name=topic),),
                response_partition_limit=2000,
                cursor=None,
            )
        (described,) = response.topics
        assert described.error_code == ErrorCode.none, via
        assert [int(p.partition_index) for p in described.partitions] == [0, 1, 2]
        for partition, state in zip(described.partitions, expected, strict=True):
            assert partition.error_code == ErrorCode.none
            assert int(partition.leader_id) == state.leader
            assert int(partition.leader_id) != elsewhere
            assert int(partition.leader_epoch) == state.leader_epoch
            assert tuple(partition.replica_nodes) == state.replicas
            assert sorted(partition.isr_nodes) == sorted(state.isr)
            assert tuple(partition.offline_replicas) == ()
            assert tuple(partition.eligible_leader_replicas) == ()
        assert [int(p.replica_nodes[0]) for p in described.partitions] == [
            placed[0],
            placed[1],
            placed[0],
        ]


LIST_TRANSACTIONS = 66
DESCRIBE_TRANSACTIONS = 65


def test_transactions_are_listed_and_described_by_their_coordinator_only(
    cluster: Cluster,
) -> None:
    transactional_id = f"lister-{uuid.uuid4()}"
    coordinator = wait_until(
        lambda: find_coordinator(cluster, transactional_id, 1),
        message="a transaction coordinator",
    )
    topic = f"listed-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic, 1)
    producer = Producer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "transactional.id": transactional_id,
            "log_level": 0,
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"open")
    assert producer.flush(30) == 0  # the partition is in the transaction: Ongoing
    try:
        for node in cluster.node_ids:
            with WireClient(cluster.broker_address(node), timeout=10) as client:
                listed = client.request(
                    LIST_TRANSACTIONS, 0, state_filters=(), producer_id_filters=()
                )
                body = client.request_body(
                    DESCRIBE_TRANSACTIONS, 0, transactional_ids=(transactional_id,)
                )
            (described,) = decode_describe_transactions(body)
            # Kafka: every broker answers (the admin client asks them all); only the
            # coordinator knows the transactional id.
            assert listed.error_code == ErrorCode.none, node
            ids = {entry.transactional_id for entry in listed.transaction_states}
            if node == coordinator:
                assert transactional_id in ids
                assert described.error == ErrorCode.none
                assert described.state == "Ongoing"
                assert described.partitions == ((topic, 0),)
            else:
                assert transactional_id not in ids, node
                assert described.error == ErrorCode.not_coordinator, node

        # The CLI finds it from any broker: list asks every broker, describe the coordinator.
        other = next(node for node in cluster.node_ids if node != coordinator)
        listed_text = odradek_cli("txn", "list", "--json", "-b", cluster.broker_address(other))
        assert any(
            json.loads(line)["transactional_id"] == transactional_id
            for line in listed_text.splitlines()
        )
        described_text = odradek_cli(
            "txn", "describe", transactional_id, "--json", "-b", cluster.broker_address(other)
        )
        assert json.loads(described_text)["state"] == "Ongoing"
    finally:
        producer.abort_transaction(30)


def odradek_cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


# -- kafka-python and aiokafka groups across a coordinator kill --------------------------------


def _kafka_python_group(
    cluster: Cluster, topic: str, group: str, kill_coordinator: Any
) -> tuple[list[int], int, int]:
    """Read 100, commit, kill the coordinator, read on (committing) to 200: (values read,
    offset committed before the kill, committed offset the new coordinator reports)."""
    import kafka

    consumer = kafka.KafkaConsumer(
        topic,
        bootstrap_servers=cluster.bootstrap_servers.split(","),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=100,
        session_timeout_ms=10_000,
        request_timeout_ms=15_000,
    )
    partition = kafka.TopicPartition(topic, 0)
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while len(seen) < 100 and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=100 - len(seen)).values():
                seen.extend(int(record.value) for record in batch)
        consumer.commit()
        committed_before = len(seen)
        kill_coordinator()
        committed_after = wait_until(
            lambda: _kafka_python_committed(consumer, partition), timeout_s=30
        )
        deadline = time.monotonic() + 60
        while len(set(seen)) < 200 and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                seen.extend(int(record.value) for record in batch)
                consumer.commit()
    finally:
        consumer.close(autocommit=False)
    return seen, committed_before, committed_after


def _kafka_python_committed(consumer: Any, partition: Any) -> int | None:
    import kafka.errors

    try:
        committed = consumer.committed(partition)
    except kafka.errors.KafkaError:  # the coordinator moving: asked again
        return None
    return None if committed is None else int(committed)


def _aiokafka_group(
    cluster: Cluster, topic: str, group: str, kill_coordinator: Any
) -> tuple[list[int], int, int]:
    import aiokafka
    import aiokafka.errors

    async def run() -> tuple[list[int], int, int]:
        consumer = aiokafka.AIOKafkaConsumer(
            topic,
            bootstrap_servers=cluster.bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            request_timeout_ms=15_000,
        )
        await consumer.start()
        partition = aiokafka.TopicPartition(topic, 0)
        seen: list[int] = []
        try:
            deadline = time.monotonic() + 30
            while len(seen) < 100 and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500, max_records=100 - len(seen))
                for batch in batches.values():
                    seen.extend(int(record.value) for record in batch)
            await consumer.commit()
            committed_before = len(seen)
            await asyncio.to_thread(kill_coordinator)
            committed_after = -1
            deadline = time.monotonic() + 30
            while committed_after < 0 and time.monotonic() < deadline:
                try:
                    committed_after = await consumer.committed(partition) or -1
                except aiokafka.errors.KafkaError:  # the coordinator moving: asked again
                    await asyncio.sleep(0.2)
            deadline = time.monotonic() + 60
            while len(set(seen)) < 200 and time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    seen.extend(int(record.value) for record in batch)
                    await consumer.commit()
        finally:
            await consumer.stop()
        return seen, committed_before, committed_after

    return asyncio.run(run())


# The clients leave sockets of connections refused by the killed broker to the garbage
# collector (ResourceWarning); collected here, so they are not blamed on a later test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "client_group", [_kafka_python_group, _aiokafka_group], ids=["kafka-python", "aiokafka"]
)
def test_client_group_keeps_its_offsets_when_its_coordinator_is_killed(
    cluster: Cluster, client_group: Any
) -> None:
    name = client_group.__name__.strip("_")
    topic, group = f"orders-{name}", f"billing-{name}"
    coordinator = wait_until(
        lambda: find_coordinator(cluster, group, 0), message="a group coordinator"
    )
    # The coordinator only follows the topic: its kill moves the group, not the partition.
    others = [node for node in cluster.node_ids if node != coordinator]
    create_topic_on(cluster, topic, [[*others, coordinator]])
    producer = Producer(
        {"bootstrap.servers": cluster.bootstrap_servers, "acks": "all", "log_level": 0}
    )
    for value in range(200):
        producer.produce(topic, str(value).encode())
    assert producer.flush(30) == 0

    def kill_coordinator() -> None:
        cluster.wait_for_isr("__consumer_offsets", hash_partition(group), 3, timeout_s=15)
        cluster.kill(coordinator)
        wait_until(
            lambda: find_coordinator(cluster, group, 0) not in (None, coordinator),
            message="a new group coordinator",
        )

    seen, committed_before, committed_after = client_group(cluster, topic, group, kill_coordinator)
    gc.collect()
    assert committed_before == 100
    # The new coordinator loaded the group's committed offset.
    assert committed_after == committed_before
    assert sorted(set(seen)) == list(range(200)), "a message was skipped"
    # At least once: only what followed the last commit may be read again.
    assert seen[:committed_before] == list(range(committed_before))
    assert all(value >= committed_before for value in seen[committed_before:])

    restart(cluster, coordinator)
    fresh = Consumer(
        {"bootstrap.servers": cluster.bootstrap_servers, "group.id": group, "log_level": 0}
    )
    try:
        (committed,) = fresh.committed([TopicPartition(topic, 0)], timeout=30)
        assert committed.offset == 200
    finally:
        fresh.close()
        gc.collect()  # the client's sockets to the killed broker, within this test's filter
