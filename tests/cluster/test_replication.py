"""Replication with real processes: a controller and three brokers (odradek.Cluster), RF=3
topics with min.insync.replicas=2, confluent-kafka producers and consumers.

The seed's Durability row (a): an idempotent acks=all producer loses nothing and duplicates
nothing when the leader is killed -9 mid-stream; followers' logs equal the leader's; the ISR
shrinks after replica.lag.time.max.ms and grows back; a broker restarted on an empty disk
rejoins the ISR only once caught up; a broker that does not lead answers
NOT_LEADER_OR_FOLLOWER naming the leader (KIP-951)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import (
    consume_messages,
    create_replicated_topic,
    describe_topic,
    wait_until,
)
from confluent_kafka import Producer

from odradek.cli.wire import WireClient
from odradek.cluster import Cluster

LAG_TIME_MS = 1500  # below the 3 s session timeout: the leader shrinks before fencing


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3,
        data_dir=tmp_path_factory.mktemp("replication"),  # node logs kept for a failure's reader
        log_level="INFO",
        config={
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "replica.lag.time.max.ms": str(LAG_TIME_MS),
        },
    ) as running:
        yield running


def create_topic(cluster: Cluster, name: str, partitions: int = 1) -> None:
    create_replicated_topic(cluster, name, partitions)
    wait_until(
        lambda: all(p.isr_nodes and len(p.isr_nodes) == 3 for p in describe(cluster, name).values())
    )


def describe(cluster: Cluster, topic: str, via: int | None = None) -> dict[int, Any]:
    """Metadata v12 of `topic` from one running broker: partition index -> partition."""
    return {int(p.partition_index): p for p in describe_topic(cluster, topic, via).partitions}


def leader_of(cluster: Cluster, topic: str, partition: int = 0) -> int:
    return int(describe(cluster, topic)[partition].leader_id)


def isr_of(cluster: Cluster, topic: str, partition: int = 0, via: int | None = None) -> list[int]:
    return sorted(int(node) for node in describe(cluster, topic, via)[partition].isr_nodes)


def producer(cluster: Cluster, **extra: Any) -> Producer:
    return Producer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 60000,
            "log_level": 0,
            **extra,
        }
    )


def consume_all(cluster: Cluster, topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    return consume_messages(
        cluster, topic, lambda messages: len(messages) >= expected, timeout_s, poll_s=0.5
    )


def test_acks_all_round_trip_on_three_replicas(cluster: Cluster) -> None:
    create_topic(cluster, "rf3-basic")
    client = producer(cluster)
    delivered: list[Any] = []
    for number in range(200):
        client.produce(
            "rf3-basic",
            value=str(number).encode(),
            on_delivery=lambda error, message: delivered.append((error, message)),
        )
    assert client.flush(30) == 0
    assert [error for error, _ in delivered if error is not None] == []
    messages = consume_all(cluster, "rf3-basic", 200)
    assert [m.value() for m in messages] == [str(n).encode() for n in range(200)]
    assert [m.offset() for m in messages] == list(range(200))


def log_bytes(cluster: Cluster, node: int, topic: str, partition: int = 0) -> bytes:
    """Every segment of `topic`-`partition` on `node`, in offset order, as one byte string
    (followers append the leader's batches exactly as written, so replicas compare equal)."""
    directory = cluster.data_dir / f"node-{node}" / f"{topic}-{partition}"
    return b"".join(path.read_bytes() for path in sorted(directory.glob("*.log")))


def test_leader_killed_mid_stream_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    """Durability row (a): idempotent acks=all, kill -9 the leader while producing."""
    topic = "rf3-leader-kill"
    create_topic(cluster, topic)
    old_leader = leader_of(cluster, topic)
    client = producer(cluster)
    acknowledged: list[tuple[bytes, int]] = []
    failed: list[Any] = []
    lock = threading.Lock()

    def on_delivery(error: Any, message: Any) -> None:
        with lock:
            if error is None:
                acknowledged.append((message.value(), message.offset()))
            else:
                failed.append(error)

    total = 3000
    for number in range(total):
        client.produce(topic, value=b"%06d" % number, on_delivery=on_delivery)
        client.poll(0)
        if number == total // 3:
            # Mid-stream: some records acknowledged, later ones still in flight.
            deadline = time.monotonic() + 20
            while len(acknowledged) < 200 and time.monotonic() < deadline:
                client.poll(0.005)
            cluster.kill(old_leader)
            acknowledged_before_kill = len(acknowledged)
        if number % 50 == 0:
            time.sleep(0.005)
    assert client.flush(90) == 0
    new_leader = leader_of(cluster, topic)
    assert new_leader != old_leader
    messages = consume_all(cluster, topic, len(acknowledged))
    values = [m.value() for m in messages]
    offsets = [m.offset() for m in messages]
    # Every acknowledged record is read back exactly once, at the offset it was acknowledged
    # with, and the offsets are contiguous.
    assert offsets == list(range(len(messages)))
    assert len(values) == len(set(values))
    assert sorted(acknowledged, key=lambda pair: pair[1]) == list(zip(values, offsets, strict=True))
    assert failed == []
    assert len(acknowledged) == total
    assert 200 <= acknowledged_before_kill < total
    # Followers' logs equal the leader's.
    cluster.restart(old_leader)
    cluster.wait_for_brokers(cluster.node_ids)
    wait_until(lambda: isr_of(cluster, topic) == cluster.node_ids, message="ISR back to 3")
    leader_log = log_bytes(cluster, new_leader, topic)
    assert leader_log
    wait_until(
        lambda: all(log_bytes(cluster, node, topic) == leader_log for node in cluster.node_ids),
        message="replica logs equal the leader's",
    )


def produce_some(cluster: Cluster, topic: str, count: int, size: int = 100) -> None:
    client = producer(cluster)
    for number in range(count):
        client.produce(topic, value=b"%08d" % number + b"x" * size)
        if number % 1000 == 0:
            client.poll(0)
    assert client.flush(60) == 0


def test_paused_follower_leaves_the_isr_and_rejoins(cluster: Cluster) -> None:
    """SIGSTOP a follower past replica.lag.time.max.ms: the ISR shrinks, acks=all goes on
    with the two left (min.insync.replicas=2); after SIGCONT it catches up and rejoins."""
    topic = "rf3-pause"
    create_topic(cluster, topic)
    leader = leader_of(cluster, topic)
    follower = next(node for node in cluster.node_ids if node != leader)
    cluster.pause(follower)
    try:
        # A follower that stops fetching lags only once the leader's log moves on (Kafka's
        # isCaughtUp): these acks=all records wait for the shrink, then complete with two.
        client = producer(cluster)
        for number in range(100):
            client.produce(topic, value=b"%d" % number)
        client.poll(0)
        wait_until(
            lambda: follower not in isr_of(cluster, topic, via=leader),
            timeout_s=LAG_TIME_MS / 1000 + 15,
            message="ISR shrink",
        )
        # The leader's lag check removed it (AlterPartition), not the controller's fencing.
        assert follower in cluster.alive_brokers(via=leader)
        assert client.flush(30) == 0
        produce_some(cluster, topic, 500)
    finally:
        cluster.resume(follower)
    wait_until(lambda: isr_of(cluster, topic, via=leader) == cluster.node_ids, message="rejoin")
    leader_log = log_bytes(cluster, leader, topic)
    wait_until(lambda: log_bytes(cluster, follower, topic) == leader_log, message="caught up")


def test_broker_restarted_on_an_empty_disk_rejoins_only_when_caught_up(
    cluster: Cluster,
) -> None:
    topic = "rf3-empty-disk"
    create_topic(cluster, topic)
    produce_some(cluster, topic, 20000, size=200)
    leader = leader_of(cluster, topic)
    follower = next(node for node in cluster.node_ids if node != leader)
    leader_log = log_bytes(cluster, leader, topic)
    cluster.kill(follower)
    wait_until(lambda: follower not in isr_of(cluster, topic, via=leader), message="shrink")
    shutil.rmtree(cluster.data_dir / f"node-{follower}")
    cluster.restart(follower)
    # Whenever the restarted broker is in the ISR again, it holds every record the leader has.
    while follower not in isr_of(cluster, topic, via=leader):
        time.sleep(0.05)
    assert log_bytes(cluster, follower, topic) == leader_log
    produce_some(cluster, topic, 10)


def test_non_leader_answers_not_leader_or_follower_with_the_leader(cluster: Cluster) -> None:
    """KIP-951: Produce v10 and Fetch v16 to a follower name the leader, its epoch and its
    endpoint."""
    from odradek.protocol.record_batch import Record, encode_batch

    topic = "rf3-not-leader"
    create_topic(cluster, topic)
    partition = describe(cluster, topic)[0]
    leader = int(partition.leader_id)
    follower = next(node for node in cluster.node_ids if node != leader)
    with WireClient(cluster.broker_address(follower), timeout=5) as client:
        records = encode_batch([Record(key=None, value=b"v", timestamp=1)])
        data = client.build(0, 10, "PartitionProduceData", index=0, records=records)
        topic_data = client.build(0, 10, "TopicProduceData", name=topic, partition_data=(data,))
        response = client.request(
            0, 10, transactional_id=None, acks=-1, timeout=5000, topic_data=(topic_data,)
        )
        answer = response.responses[0].partition_responses[0]
        assert answer.error_code == 6  # NOT_LEADER_OR_FOLLOWER
        assert answer.current_leader.leader_id == leader
        assert answer.current_leader.leader_epoch == int(partition.leader_epoch)
        assert [(e.node_id, e.port) for e in response.node_endpoints] == [
            (leader, cluster.ports[leader])
        ]

        fetch_partition = client.build(
            1,
            16,
            "FetchPartition",
            partition=0,
            current_leader_epoch=-1,
            fetch_offset=0,
            last_fetched_epoch=-1,
            log_start_offset=-1,
            partition_max_bytes=1 << 20,
        )
        fetch_topic = client.build(
            1,
            16,
            "FetchTopic",
            topic_id=partition_topic_id(cluster, topic),
            partitions=(fetch_partition,),
        )
        fetched = client.request(
            1,
            16,
            cluster_id=None,
            replica_state=client.build(1, 16, "ReplicaState", replica_id=-1, replica_epoch=-1),
            max_wait=0,
            min_bytes=0,
            max_bytes=1 << 20,
            isolation_level=0,
            session_id=0,
            session_epoch=-1,
            topics=(fetch_topic,),
            forgotten_topics_data=(),
            rack_id="",
        )
        result = fetched.responses[0].partitions[0]
        assert result.error_code == 6
        assert result.current_leader.leader_id == leader
        assert [(e.node_id, e.port) for e in fetched.node_endpoints] == [
            (leader, cluster.ports[leader])
        ]


def partition_topic_id(cluster: Cluster, topic: str) -> Any:
    return describe_topic(cluster, topic).topic_id


def list_offsets(cluster: Cluster, node: int, topic: str, current_leader_epoch: int) -> Any:
    with WireClient(cluster.broker_address(node), timeout=5) as client:
        partition = client.build(
            2,
            7,
            "ListOffsetsPartition",
            partition_index=0,
            current_leader_epoch=current_leader_epoch,
            timestamp=-1,
        )
        topic_type = client.build(2, 7, "ListOffsetsTopic", name=topic, partitions=(partition,))
        response = client.request(2, 7, replica_id=-1, isolation_level=0, topics=(topic_type,))
    return response.topics[0].partitions[0]


def end_offset_for_epoch(
    cluster: Cluster, node: int, topic: str, current_leader_epoch: int, epoch: int
) -> Any:
    with WireClient(cluster.broker_address(node), timeout=5) as client:
        partition = client.build(
            23,
            4,
            "OffsetForLeaderPartition",
            partition=0,
            current_leader_epoch=current_leader_epoch,
            leader_epoch=epoch,
        )
        topic_type = client.build(
            23, 4, "OffsetForLeaderTopic", topic=topic, partitions=(partition,)
        )
        response = client.request(23, 4, replica_id=-1, topics=(topic_type,))
    return response.topics[0].partitions[0]


def test_list_offsets_and_offset_for_leader_epoch_check_the_partition_epoch(
    cluster: Cluster,
) -> None:
    """KIP-320 against the partition's leader epoch from the metadata (not a constant), and
    NOT_LEADER_OR_FOLLOWER from a broker that does not lead."""
    topic = "rf3-epochs"
    create_topic(cluster, topic)
    produce_some(cluster, topic, 10)
    leader = leader_of(cluster, topic)
    # Move the leadership so the partition's epoch is above 0.
    cluster.kill(leader)
    wait_until(lambda: leader_of(cluster, topic) not in (leader, -1), message="new leader")
    partition = describe(cluster, topic)[0]
    new_leader, epoch = int(partition.leader_id), int(partition.leader_epoch)
    assert epoch >= 1
    try:
        produce_some(cluster, topic, 5)
        follower = next(n for n in cluster.node_ids if n not in (leader, new_leader))
        latest = list_offsets(cluster, new_leader, topic, epoch)
        assert (latest.error_code, latest.offset, latest.leader_epoch) == (0, 15, epoch)
        assert list_offsets(cluster, new_leader, topic, epoch + 1).error_code == 75  # UNKNOWN
        assert list_offsets(cluster, new_leader, topic, epoch - 1).error_code == 74  # FENCED
        assert list_offsets(cluster, follower, topic, epoch).error_code == 6
        answer = end_offset_for_epoch(cluster, new_leader, topic, epoch, epoch - 1)
        assert (answer.error_code, answer.leader_epoch, answer.end_offset) == (0, epoch - 1, 10)
        assert end_offset_for_epoch(cluster, new_leader, topic, epoch - 1, 0).error_code == 74
        assert end_offset_for_epoch(cluster, follower, topic, epoch, 0).error_code == 6
    finally:
        cluster.restart(leader)
        cluster.wait_for_brokers(cluster.node_ids)
