"""Durability of a replicated cluster with real processes and real clients (issue 12):
"safety lives in epochs, never in timers".

A controller and three brokers (`odradek.Cluster`); broker 3 reaches the controller through a
TCP proxy the tests can cut, so it can be isolated from the controller while clients still
reach it (the zombie-leader window). Every test leaves three live brokers behind.

- acks=1 without idempotence loses what the leader acknowledged when in-sync followers that
  had not fetched it take over; acks=all with the same schedule loses nothing;
- two of three brokers down: acks=all times out, then (ISR shrunk) gets NOT_ENOUGH_REPLICAS;
  acks=1 is acknowledged but not visible until the ISR is back to min.insync.replicas;
- unclean.leader.election.enable off: offline, nothing lost; on: the out-of-sync replica leads
  RECOVERING, then RECOVERED, the loss is logged, and open transactions are aborted;
- KIP-101: two quick leader changes, the returning replicas truncate to the diverging epoch and
  every replica's log is byte-identical;
- the zombie leader: acks=1 writes it takes after a new leader is elected are truncated when it
  returns; acks=all writes sent to it are never acknowledged;
- a stray replica (topic deleted and recreated while its broker was down) is dropped;
- confluent-kafka, kafka-python and aiokafka follow a leader kill without losing acknowledged
  writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import consume_messages, describe_topic, wait_until
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.cli.cluster import read_metadata_image
from odradek.cli.wire import WireClient
from odradek.cluster import Cluster
from odradek.protocol.record_batch import Record, decode_batches, encode_batch

LAG_TIME_MS = 3000
SESSION_TIMEOUT_MS = 4000
#: A follower's Fetch waits at most this long at the leader (the replica fetcher's max wait).
REPLICA_FETCH_MAX_WAIT_S = 0.5
PROXIED_BROKER = 3

NONE = 0
LEADER_NOT_AVAILABLE = 5
REQUEST_TIMED_OUT = 7
NOT_ENOUGH_REPLICAS = 19


class ControllerProxy:
    """A TCP proxy between one broker and the controller; `cut()` closes every connection and
    refuses new ones until `heal()` (the broker's process and its client listener stay up)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.target: tuple[str, int] | None = None
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set() or self.target is None:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self._open = []

    def heal(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


class ProxiedCluster(Cluster):
    """A `Cluster` whose broker `PROXIED_BROKER` reaches the controller through `proxy`."""

    def __init__(self, proxy: ControllerProxy, **options: Any) -> None:
        super().__init__(**options)
        self.proxy = proxy
        proxy.target = ("127.0.0.1", self.controller_port)

    def _properties(self, node_id: int) -> dict[str, str]:
        properties = super()._properties(node_id)
        if node_id == PROXIED_BROKER:
            properties["controller.quorum.voters"] = (
                f"{self.controller_id}@127.0.0.1:{self.proxy.port}"
            )
        return properties


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedCluster]:
    proxy = ControllerProxy()
    try:
        with ProxiedCluster(
            proxy,
            brokers=3,
            data_dir=tmp_path_factory.mktemp("durability"),  # node logs kept for a reader
            log_level="INFO",
            config={
                "broker.session.timeout.ms": str(SESSION_TIMEOUT_MS),
                "broker.heartbeat.interval.ms": "500",
                "replica.lag.time.max.ms": str(LAG_TIME_MS),
                "odradek.acks.all.fsync": "false",  # Kafka's behaviour: acks from page caches
            },
        ) as running:
            yield running
    finally:
        proxy.close()


@pytest.fixture(autouse=True)
def all_brokers_back(cluster: ProxiedCluster) -> Iterator[None]:
    """Whatever a test stopped, the next one starts with three live brokers."""
    yield
    cluster.proxy.heal()
    for node in cluster.node_ids:
        if cluster.is_paused(node):
            cluster.resume(node)
        if not cluster.is_running(node):
            cluster.restart(node)
    cluster.wait_for_brokers(cluster.node_ids, timeout_s=30)


# -- helpers --------------------------------------------------------------------------------


def create_topic(
    cluster: Cluster,
    name: str,
    *,
    replicas: Sequence[int] | None = None,
    config: dict[str, str] | None = None,
) -> None:
    """One partition; `replicas` fixes the assignment (first = preferred leader), else RF=3."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})
    settings = {"min.insync.replicas": "2", **(config or {})}
    topic = (
        NewTopic(name, num_partitions=1, replication_factor=3, config=settings)
        if replicas is None
        else NewTopic(name, num_partitions=1, replica_assignment=[list(replicas)], config=settings)
    )
    admin.create_topics([topic])[name].result(15)
    size = 3 if replicas is None else len(replicas)
    wait_until(lambda: len(describe(cluster, name).isr_nodes) == size, message="full ISR")


def describe(cluster: Cluster, topic: str, via: int | None = None) -> Any:
    """Partition 0 of `topic` as Metadata v12 from one running, unpaused broker."""
    nodes = (
        [via]
        if via is not None
        else [n for n in cluster.node_ids if cluster.is_running(n) and not cluster.is_paused(n)]
    )
    described = describe_topic(cluster, topic, nodes[0])
    return described.partitions[0] if described.partitions else None


def leader_of(cluster: Cluster, topic: str, via: int | None = None) -> int:
    return int(describe(cluster, topic, via).leader_id)


def isr_of(cluster: Cluster, topic: str, via: int | None = None) -> list[int]:
    return sorted(int(node) for node in describe(cluster, topic, via).isr_nodes)


def followers_of(cluster: Cluster, topic: str, leader: int) -> list[int]:
    return [int(n) for n in describe(cluster, topic).replica_nodes if int(n) != leader]


def wait_for_new_leader(cluster: Cluster, topic: str, old: int) -> int:
    wait_until(
        lambda: leader_of(cluster, topic) not in (old, -1),
        timeout_s=SESSION_TIMEOUT_MS / 1000 + 20,
        message="a new leader",
    )
    return leader_of(cluster, topic)


def raw_produce(
    cluster: Cluster, node: int, topic: str, value: bytes, acks: int, timeout_ms: int = 1000
) -> tuple[int, int]:
    """One record by Produce v9 straight to `node`: (error code, base offset)."""
    with WireClient(cluster.broker_address(node), timeout=timeout_ms / 1000 + 10) as client:
        records = encode_batch([Record(key=None, value=value, timestamp=int(time.time() * 1000))])
        data = client.build(0, 9, "PartitionProduceData", index=0, records=records)
        topic_data = client.build(0, 9, "TopicProduceData", name=topic, partition_data=(data,))
        response = client.request(
            0, 9, transactional_id=None, acks=acks, timeout=timeout_ms, topic_data=(topic_data,)
        )
    answer = response.responses[0].partition_responses[0]
    return int(answer.error_code), int(answer.base_offset)


def latest_offset(cluster: Cluster, node: int, topic: str) -> int:
    """ListOffsets v7 latest (read_uncommitted) from `node`: the high watermark clients see."""
    with WireClient(cluster.broker_address(node), timeout=5) as client:
        partition = client.build(
            2, 7, "ListOffsetsPartition", partition_index=0, current_leader_epoch=-1, timestamp=-1
        )
        topic_type = client.build(2, 7, "ListOffsetsTopic", name=topic, partitions=(partition,))
        response = client.request(2, 7, replica_id=-1, isolation_level=0, topics=(topic_type,))
    answer = response.topics[0].partitions[0]
    assert answer.error_code == NONE, answer
    return int(answer.offset)


def log_bytes(cluster: Cluster, node: int, topic: str) -> bytes:
    """Every segment of `topic`-0 on `node`, in offset order, as one byte string."""
    directory = cluster.data_dir / f"node-{node}" / f"{topic}-0"
    return b"".join(path.read_bytes() for path in sorted(directory.glob("*.log")))


def log_values(cluster: Cluster, node: int, topic: str) -> list[bytes | None]:
    """The record values in `node`'s log of `topic`-0, control batches left out."""
    return [
        record.value
        for header, records in decode_batches(log_bytes(cluster, node, topic))
        if not header.is_control
        for record in records
    ]


def wait_for_identical_logs(cluster: Cluster, topic: str, nodes: Sequence[int]) -> bytes:
    def identical() -> bool:
        logs = {log_bytes(cluster, node, topic) for node in nodes}
        return len(logs) == 1 and next(iter(logs)) != b""

    wait_until(identical, timeout_s=30, message="byte-identical replica logs")
    return log_bytes(cluster, nodes[0], topic)


def consume_values(
    cluster: Cluster, topic: str, until: Any, timeout_s: float = 20.0, **extra: Any
) -> list[bytes]:
    """Values read from offset 0 by a confluent-kafka consumer until `until(values)` holds or
    `timeout_s` passes."""
    messages = consume_messages(
        cluster,
        topic,
        lambda read: bool(until([m.value() for m in read])),
        timeout_s,
        poll_s=0.2,
        **extra,
    )
    return [m.value() for m in messages]


def plain_producer(cluster: Cluster, acks: str, **extra: Any) -> Producer:
    return Producer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "acks": acks,
            "linger.ms": 0,
            "log_level": 0,
            **extra,
        }
    )


def produce_confirmed(producer: Producer, topic: str, values: Sequence[bytes]) -> list[int]:
    """Produce `values`, flush; the offsets they were acknowledged at (asserts no error)."""
    offsets: list[int] = []
    errors: list[Any] = []

    def on_delivery(error: Any, message: Any) -> None:
        (errors if error is not None else offsets).append(error or message.offset())

    for value in values:
        producer.produce(topic, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert errors == []
    return offsets


def node_log(cluster: Cluster, node: int) -> str:
    return Path(cluster.log_path(node)).read_text(errors="replace")


# -- (b) acks=1 vs acks=all with paused followers -------------------------------------------


def test_acks_1_records_the_leader_acknowledged_are_lost_when_followers_take_over(
    cluster: ProxiedCluster,
) -> None:
    """Both followers SIGSTOPped for well under replica.lag.time.max.ms and the session
    timeout (they stay in the ISR), acks=1 records acknowledged by the leader, the leader
    killed -9, the followers resumed: one of them leads and the acknowledged records are gone.
    The old leader, back, truncates to the diverging epoch and converges byte-identically."""
    topic = "durability-acks1"
    create_topic(cluster, topic)
    producer = plain_producer(cluster, "1", **{"enable.idempotence": False})
    committed = [b"committed-%d" % n for n in range(20)]
    produce_confirmed(producer, topic, committed)
    leader = leader_of(cluster, topic)
    followers = followers_of(cluster, topic, leader)
    wait_until(lambda: all(log_values(cluster, f, topic) == committed for f in followers))
    for follower in followers:
        cluster.pause(follower)
    try:
        # A SIGSTOPped follower's socket still receives: let the Fetches they had in flight be
        # answered (empty) first, so nothing written next reaches them.
        time.sleep(REPLICA_FETCH_MAX_WAIT_S + 0.2)
        doomed = [b"doomed-%d" % n for n in range(5)]
        offsets = produce_confirmed(producer, topic, doomed)
        assert offsets == list(range(20, 25))  # acknowledged by the leader alone
        cluster.kill(leader)
    finally:
        for follower in followers:
            cluster.resume(follower)
    # The followers were never out of the ISR: the controller elects one of them cleanly.
    new_leader = wait_for_new_leader(cluster, topic, leader)
    assert new_leader in followers
    survivors = consume_values(cluster, topic, lambda v: len(v) >= 20, timeout_s=10)
    assert survivors == committed
    assert latest_offset(cluster, new_leader, topic) == 20
    assert not set(doomed) & set(log_values(cluster, new_leader, topic))
    # The old leader comes back as a follower and drops what only it had.
    cluster.restart(leader)
    cluster.wait_for_brokers(cluster.node_ids)
    after = [b"after-%d" % n for n in range(5)]
    assert produce_confirmed(producer, topic, after) == list(range(20, 25))
    wait_for_identical_logs(cluster, topic, cluster.node_ids)
    assert log_values(cluster, leader, topic) == committed + after
    producer.flush(5)


def test_acks_all_same_schedule_loses_nothing(cluster: ProxiedCluster) -> None:
    """The schedule above with acks=all: the produce does not complete while the followers are
    paused; after the leader dies it completes (retried on the new leader) and nothing
    acknowledged is lost."""
    topic = "durability-acksall"
    create_topic(cluster, topic)
    producer = plain_producer(
        cluster, "all", **{"enable.idempotence": True, "message.timeout.ms": 60000}
    )
    committed = [b"committed-%d" % n for n in range(20)]
    produce_confirmed(producer, topic, committed)
    leader = leader_of(cluster, topic)
    followers = followers_of(cluster, topic, leader)
    acknowledged: list[bytes] = []
    failed: list[Any] = []

    def on_delivery(error: Any, message: Any) -> None:
        (failed if error is not None else acknowledged).append(error or message.value())

    for follower in followers:
        cluster.pause(follower)
    try:
        pending = [b"pending-%d" % n for n in range(5)]
        for value in pending:
            producer.produce(topic, value=value, on_delivery=on_delivery)
        # The leader appended them, but its high watermark waits for the paused ISR members.
        producer.flush(0.5)
        assert acknowledged == []
        assert failed == []
        cluster.kill(leader)
    finally:
        for follower in followers:
            cluster.resume(follower)
    assert producer.flush(60) == 0
    assert failed == []
    assert acknowledged == pending
    wait_for_new_leader(cluster, topic, leader)
    values = consume_values(cluster, topic, lambda v: len(v) >= 25)
    assert values == committed + pending


# -- two of three brokers down -------------------------------------------------------------


def test_two_of_three_down_acks_all_refused_acks_1_invisible_until_isr_recovers(
    cluster: ProxiedCluster,
) -> None:
    topic = "durability-two-down"
    create_topic(cluster, topic)
    producer = plain_producer(cluster, "all")
    produce_confirmed(producer, topic, [b"before-%d" % n for n in range(10)])
    producer.flush(5)
    leader = leader_of(cluster, topic)
    followers = followers_of(cluster, topic, leader)
    for follower in followers:
        cluster.kill(follower)
    # Before the ISR shrinks (lag time) and the controller fences them (session timeout),
    # acks=all waits for replicas that never fetch: REQUEST_TIMED_OUT.
    error, _ = raw_produce(cluster, leader, topic, b"timed-out", acks=-1, timeout_ms=500)
    assert error == REQUEST_TIMED_OUT
    wait_until(
        lambda: isr_of(cluster, topic, via=leader) == [leader],
        timeout_s=SESSION_TIMEOUT_MS / 1000 + 15,
        message="ISR shrunk to the leader",
    )
    error, _ = raw_produce(cluster, leader, topic, b"refused", acks=-1)
    assert error == NOT_ENOUGH_REPLICAS
    error, offset = raw_produce(cluster, leader, topic, b"acks-1", acks=1)
    assert error == NONE
    # Appended, acknowledged, but the HW does not advance below min.insync.replicas.
    high_watermark = latest_offset(cluster, leader, topic)
    assert high_watermark <= offset
    seen = consume_values(cluster, topic, lambda v: b"acks-1" in v, timeout_s=3)
    assert b"acks-1" not in seen
    assert len(seen) == high_watermark
    # One follower back: the ISR reaches min.insync.replicas, the HW moves, it is visible.
    cluster.restart(followers[0])
    wait_until(lambda: len(isr_of(cluster, topic, via=leader)) == 2, message="ISR of 2")
    wait_until(lambda: latest_offset(cluster, leader, topic) > offset, message="HW advances")
    seen = consume_values(cluster, topic, lambda v: b"acks-1" in v)
    assert b"acks-1" in seen
    assert b"refused" not in seen
    cluster.restart(followers[1])
    wait_until(lambda: len(isr_of(cluster, topic, via=leader)) == 3, message="ISR of 3")
    wait_for_identical_logs(cluster, topic, cluster.node_ids)


# -- KIP-101: two quick leader changes --------------------------------------------------------


def test_two_quick_leader_changes_returning_replicas_truncate_to_the_diverging_epoch(
    cluster: ProxiedCluster,
) -> None:
    """Broker 1 leads epoch 0 and takes acks=1 records nobody else has; it dies, 2 leads epoch
    1 and takes records at the same offsets; 2 dies at once, 3 leads epoch 2. When 1 and 2
    return, each truncates to where its last epoch diverges from the leader's log (never to a
    remembered high watermark) and all three logs end byte-identical."""
    topic = "durability-kip101"
    create_topic(cluster, topic, replicas=[1, 2, 3])
    assert leader_of(cluster, topic) == 1
    acks_1 = plain_producer(cluster, "1", **{"enable.idempotence": False})
    committed = [b"committed-%d" % n for n in range(10)]
    produce_confirmed(acks_1, topic, committed)
    wait_until(lambda: all(log_values(cluster, n, topic) == committed for n in (2, 3)))
    cluster.pause(2)
    cluster.pause(3)
    try:
        time.sleep(REPLICA_FETCH_MAX_WAIT_S + 0.2)
        only_on_1 = [b"only-on-1-%d" % n for n in range(4)]
        assert produce_confirmed(acks_1, topic, only_on_1) == [10, 11, 12, 13]
        cluster.kill(1)
    finally:
        cluster.resume(2)
        cluster.resume(3)
    assert wait_for_new_leader(cluster, topic, 1) == 2
    acks_all = plain_producer(cluster, "all", **{"enable.idempotence": True})
    epoch_1 = [b"epoch-1-%d" % n for n in range(2)]
    assert produce_confirmed(acks_all, topic, epoch_1) == [10, 11]
    cluster.kill(2)
    assert wait_for_new_leader(cluster, topic, 2) == 3
    cluster.restart(1)
    cluster.restart(2)
    cluster.wait_for_brokers(cluster.node_ids)
    epoch_2 = [b"epoch-2-%d" % n for n in range(3)]
    assert produce_confirmed(acks_all, topic, epoch_2) == [12, 13, 14]
    wait_for_identical_logs(cluster, topic, [3, 1, 2])
    assert log_values(cluster, 1, topic) == committed + epoch_1 + epoch_2
    assert "diverged at epoch 0: truncated to 10" in node_log(cluster, 1)


# -- the zombie leader ------------------------------------------------------------------------


def test_isolated_leader_keeps_taking_acks_1_writes_that_are_truncated_when_it_returns(
    cluster: ProxiedCluster,
) -> None:
    """Broker 3 leads and is cut from the controller (its client listener stays up). The
    controller fences it and elects broker 1; clients that still reach 3 get acks=1 writes
    acknowledged there (Kafka's zombie-leader window), while acks=all writes sent to 3 are never
    acknowledged: the followers now fetch from 1 and the controller is out of reach, so 3's
    high watermark cannot move. Reconnected, 3 follows 1 and truncates its zombie writes."""
    topic = "durability-zombie"
    create_topic(cluster, topic, replicas=[PROXIED_BROKER, 1, 2])
    assert leader_of(cluster, topic) == PROXIED_BROKER
    committed = [b"committed-%d" % n for n in range(10)]
    produce_confirmed(plain_producer(cluster, "all"), topic, committed)
    cluster.proxy.cut()
    wait_until(
        lambda: leader_of(cluster, topic, via=1) == 1,
        timeout_s=SESSION_TIMEOUT_MS / 1000 + 20,
        message="broker 1 elected",
    )
    # The isolated broker has not heard of it: it still answers as the leader.
    assert leader_of(cluster, topic, via=PROXIED_BROKER) == PROXIED_BROKER
    error, zombie_offset = raw_produce(cluster, PROXIED_BROKER, topic, b"zombie-acks-1", acks=1)
    assert (error, zombie_offset) == (NONE, 10)
    error, _ = raw_produce(cluster, PROXIED_BROKER, topic, b"zombie-acks-all", acks=-1)
    assert error == REQUEST_TIMED_OUT
    new_epoch = [b"new-epoch-%d" % n for n in range(3)]
    # A client of the new leader: bootstrapped from brokers 1 and 2 (one that asked the zombie
    # for metadata first would be sent to it, and time out there, as in Kafka).
    majority = ",".join(cluster.broker_address(node) for node in (1, 2))
    new_producer = plain_producer(cluster, "all", **{"bootstrap.servers": majority})
    assert produce_confirmed(new_producer, topic, new_epoch) == [10, 11, 12]
    cluster.proxy.heal()
    cluster.wait_for_brokers(cluster.node_ids)
    wait_for_identical_logs(cluster, topic, [1, 2, PROXIED_BROKER])
    assert log_values(cluster, PROXIED_BROKER, topic) == committed + new_epoch
    values = consume_values(cluster, topic, lambda v: len(v) >= 13)
    assert values == committed + new_epoch


# -- a stray replica --------------------------------------------------------------------------


def test_replica_of_a_deleted_and_recreated_topic_is_dropped_on_return(
    cluster: ProxiedCluster,
) -> None:
    """Broker 2 is down while its topic is deleted and recreated under the same name (a new
    topic id). Back, it drops its old replica and replicates the new topic from scratch: the
    old records are never served."""
    topic = "durability-stray"
    create_topic(cluster, topic, replicas=[1, 2, 3])
    old = [b"old-%d" % n for n in range(30)]
    produce_confirmed(plain_producer(cluster, "all"), topic, old)
    wait_until(lambda: log_values(cluster, 2, topic) == old)
    cluster.kill(2)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})
    admin.delete_topics([topic])[topic].result(15)
    wait_until(lambda: describe(cluster, topic) is None, message="topic deleted")
    admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=1,
                replica_assignment=[[1, 3]],
                config={"min.insync.replicas": "1"},
            )
        ]
    )[topic].result(15)
    new = [b"new-%d" % n for n in range(3)]
    produce_confirmed(plain_producer(cluster, "all"), topic, new)
    assert log_values(cluster, 2, topic) == old  # still on the stopped broker's disk
    cluster.restart(2)
    cluster.wait_for_brokers(cluster.node_ids)
    wait_until(
        lambda: not (cluster.data_dir / "node-2" / f"{topic}-0").exists(),
        message="stray replica deleted",
    )
    with WireClient(cluster.broker_address(2), timeout=5) as client:
        records = encode_batch([Record(key=None, value=b"x", timestamp=1)])
        data = client.build(0, 9, "PartitionProduceData", index=0, records=records)
        topic_data = client.build(0, 9, "TopicProduceData", name=topic, partition_data=(data,))
        response = client.request(
            0, 9, transactional_id=None, acks=-1, timeout=1000, topic_data=(topic_data,)
        )
    assert response.responses[0].partition_responses[0].error_code == 6  # NOT_LEADER_OR_FOLLOWER
    assert consume_values(cluster, topic, lambda v: len(v) >= 3) == new


# -- real clients across a leader kill --------------------------------------------------------


def _confluent_round(
    cluster: Cluster, topic: str, kill_leader: Any
) -> tuple[list[bytes], list[bytes]]:
    producer = plain_producer(
        cluster, "all", **{"enable.idempotence": True, "message.timeout.ms": 60000}
    )
    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "group.id": f"follow-{topic}",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    acknowledged: list[bytes] = []
    consumed: list[bytes] = []

    def read(count: int) -> None:
        deadline = time.monotonic() + 60
        while len(consumed) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                consumed.append(message.value())

    try:
        for phase in (0, 1):
            values = [b"confluent-%d-%03d" % (phase, n) for n in range(100)]
            produce_confirmed(producer, topic, values)
            acknowledged += values
            read(len(acknowledged))
            if phase == 0:
                kill_leader()
    finally:
        consumer.close()
    return acknowledged, consumed


def _kafka_python_round(
    cluster: Cluster, topic: str, kill_leader: Any
) -> tuple[list[bytes], list[bytes]]:
    import kafka

    producer = kafka.KafkaProducer(
        bootstrap_servers=cluster.bootstrap_servers.split(","),
        acks="all",
        retries=20,
        retry_backoff_ms=200,
        request_timeout_ms=10000,
    )
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=cluster.bootstrap_servers.split(","),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    consumer.assign([kafka.TopicPartition(topic, 0)])
    acknowledged: list[bytes] = []
    consumed: list[bytes] = []

    def read(count: int) -> None:
        deadline = time.monotonic() + 60
        while len(consumed) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                consumed.extend(record.value for record in batch)

    try:
        for phase in (0, 1):
            for n in range(100):
                value = b"kafka-python-%d-%03d" % (phase, n)
                producer.send(topic, value=value, partition=0).get(timeout=60)
                acknowledged.append(value)
            read(len(acknowledged))
            if phase == 0:
                kill_leader()
    finally:
        producer.close(timeout=5)
        consumer.close()
    return acknowledged, consumed


def _aiokafka_round(
    cluster: Cluster, topic: str, kill_leader: Any
) -> tuple[list[bytes], list[bytes]]:
    import aiokafka

    async def run() -> tuple[list[bytes], list[bytes]]:
        producer = aiokafka.AIOKafkaProducer(
            bootstrap_servers=cluster.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=10000,
        )
        consumer = aiokafka.AIOKafkaConsumer(
            bootstrap_servers=cluster.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await producer.start()
        await consumer.start()
        consumer.assign([aiokafka.TopicPartition(topic, 0)])
        acknowledged: list[bytes] = []
        consumed: list[bytes] = []
        try:
            for phase in (0, 1):
                for n in range(100):
                    value = b"aiokafka-%d-%03d" % (phase, n)
                    await producer.send_and_wait(topic, value=value, partition=0)
                    acknowledged.append(value)
                deadline = time.monotonic() + 60
                while len(consumed) < len(acknowledged) and time.monotonic() < deadline:
                    for batch in (await consumer.getmany(timeout_ms=200)).values():
                        consumed.extend(record.value for record in batch)
                if phase == 0:
                    await asyncio.to_thread(kill_leader)
        finally:
            await producer.stop()
            await consumer.stop()
        return acknowledged, consumed

    return asyncio.run(run())


# The clients leave sockets of connections refused by the killed broker to the garbage
# collector (ResourceWarning); collected here, so they are not blamed on a later test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "client_round",
    [_confluent_round, _kafka_python_round, _aiokafka_round],
    ids=["confluent-kafka", "kafka-python", "aiokafka"],
)
def test_clients_follow_a_leader_kill_without_losing_acknowledged_writes(
    cluster: ProxiedCluster, client_round: Any
) -> None:
    """A producer (acks=all, retries) and a consumer of each client library: 100 records, the
    leader killed -9, 100 more. Every acknowledged record is read back, in order."""
    topic = f"durability-client-{client_round.__name__.strip('_')}"
    create_topic(cluster, topic)
    leader = leader_of(cluster, topic)
    acknowledged, consumed = client_round(cluster, topic, lambda: cluster.kill(leader))
    gc.collect()
    assert len(acknowledged) == 200
    # Retries without idempotence may duplicate; they may not lose or reorder.
    assert list(dict.fromkeys(consumed)) == acknowledged
    assert leader_of(cluster, topic) != leader


# -- unclean leader election ------------------------------------------------------------------


def test_unclean_leader_election_off_keeps_the_partition_offline_on_loses_and_recovers(
    cluster: ProxiedCluster,
) -> None:
    """Two topics on brokers [1, 2, 3] (min.insync.replicas=1), one with
    unclean.leader.election.enable false, one true. 2 and 3 die, 1 alone takes acknowledged
    writes, 1 dies, 2 (out of sync) comes back. Off: no leader, LEADER_NOT_AVAILABLE, and when
    1 returns nothing is lost. On: 2 leads RECOVERING, recovers (RECOVERED), says what is lost;
    1 returns as a follower and truncates to 2's log."""
    clean, unclean = "durability-clean-only", "durability-unclean"
    for topic, allowed in ((clean, "false"), (unclean, "true")):
        create_topic(
            cluster,
            topic,
            replicas=[1, 2, 3],
            config={"min.insync.replicas": "1", "unclean.leader.election.enable": allowed},
        )
    producer = plain_producer(cluster, "all", **{"enable.idempotence": True})
    committed = [b"committed-%d" % n for n in range(10)]
    only_on_1 = [b"only-on-1-%d" % n for n in range(5)]
    for topic in (clean, unclean):
        produce_confirmed(producer, topic, committed)
    cluster.kill(2)
    cluster.kill(3)
    for topic in (clean, unclean):
        wait_until(
            lambda topic=topic: isr_of(cluster, topic, via=1) == [1],
            timeout_s=SESSION_TIMEOUT_MS / 1000 + 15,
            message="ISR of broker 1 alone",
        )
        produce_confirmed(producer, topic, only_on_1)
    producer.flush(5)
    cluster.kill(1)
    cluster.restart(2)
    cluster.wait_for_brokers([2], timeout_s=30)
    # Clean only: 1 was the last ISR member, nobody else may lead.
    wait_until(lambda: leader_of(cluster, unclean, via=2) == 2, message="unclean election")
    assert leader_of(cluster, clean, via=2) == -1
    assert raw_produce(cluster, 2, clean, b"x", acks=1)[0] == LEADER_NOT_AVAILABLE
    # Unclean: 2 leads what it has; the records only 1 had are gone.
    wait_until(
        lambda: (
            "unclean leader election: broker 2 leads durability-unclean-0" in node_log(cluster, 2)
        ),
        message="the loss logged on the new leader",
    )

    def recovery_state() -> int:
        image = read_metadata_image(cluster.controller_address)
        topic_id = image.topics_by_name[unclean]
        return int(image.topics_by_id[topic_id].partitions[0].leader_recovery_state)

    wait_until(lambda: recovery_state() == 0, message="RECOVERED")
    assert consume_values(cluster, unclean, lambda v: len(v) >= 15, timeout_s=3) == committed
    cluster.restart(1)
    cluster.restart(3)
    cluster.wait_for_brokers(cluster.node_ids)
    # Clean: 1 leads again with everything.
    wait_until(lambda: leader_of(cluster, clean) == 1, message="broker 1 leads again")
    values = consume_values(cluster, clean, lambda v: len(v) >= 15)
    assert values == committed + only_on_1
    # Unclean: 1 truncates its extra records; 2 logged the exact range lost.
    wait_for_identical_logs(cluster, unclean, [2, 1, 3])
    assert log_values(cluster, 1, unclean) == committed
    assert "its records in [10, 15) are not in this log" in node_log(cluster, 2)
