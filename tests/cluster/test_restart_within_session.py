"""A leader killed and restarted before the controller noticed (within
`broker.session.timeout.ms`), with its partition's log gone (what a power loss does to bytes
never fsynced, odradek.acks.all.fsync=false), must not lead that partition again in the epoch
its previous incarnation led: the followers hold the records of that epoch, and new batches at
the same offsets in the same epoch are a divergence no truncation finds (found by the
simulator: `odradek sim --seed 2 --seconds 8 --brokers 3 --faults power-loss --no-fsync`).

Kafka's broker serves no request before the controller has its new registration, which moves
the old incarnation's leaderships to new epochs; Odradek takes up no leadership before then.
Real processes (odradek.Cluster), a raw Produce with acks=1 to the restarted broker.
"""

from __future__ import annotations

import shutil
import socket
import struct
from collections.abc import Iterator
from typing import Any

import click
import pytest
from cluster_helpers import create_replicated_topic, describe_topic, wait_until
from confluent_kafka import Producer

from odradek.cli.wire import WireClient
from odradek.cluster import Cluster
from odradek.protocol.record_batch import Record, encode_batch

# Long enough that the restart below lands well inside the old incarnation's session.
SESSION_TIMEOUT_MS = 10_000
TOPIC = "restart-within-session"
RECORDS = 50


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3,
        data_dir=tmp_path_factory.mktemp("restart-within-session"),
        log_level="INFO",
        config={
            "broker.session.timeout.ms": str(SESSION_TIMEOUT_MS),
            "broker.heartbeat.interval.ms": "500",
            "replica.lag.time.max.ms": "2000",
        },
    ) as running:
        yield running


def _partition(cluster: Cluster, via: int | None = None) -> Any:
    return describe_topic(cluster, TOPIC, via).partitions[0]


def _produce_acks_1(cluster: Cluster, node: int, value: bytes) -> tuple[int, int]:
    """One acks=1 Produce of `value` to partition 0 on `node`: (error code, base offset);
    (-1, -1) when `node` does not answer in 5 s (a broker not yet unfenced reads nothing)."""
    try:
        return _produce_acks_1_or_raise(cluster, node, value)
    except (OSError, click.ClickException):
        return -1, -1


def _produce_acks_1_or_raise(cluster: Cluster, node: int, value: bytes) -> tuple[int, int]:
    with WireClient(cluster.broker_address(node), timeout=5) as client:
        records = encode_batch([Record(key=None, value=value, timestamp=1)])
        data = client.build(0, 9, "PartitionProduceData", index=0, records=records)
        topic_data = client.build(0, 9, "TopicProduceData", name=TOPIC, partition_data=(data,))
        response = client.request(
            0, 9, transactional_id=None, acks=1, timeout=5000, topic_data=(topic_data,)
        )
    answer = response.responses[0].partition_responses[0]
    return int(answer.error_code), int(answer.base_offset)


def _log_bytes(cluster: Cluster, node: int) -> bytes:
    directory = cluster.data_dir / f"node-{node}" / f"{TOPIC}-0"
    return b"".join(path.read_bytes() for path in sorted(directory.glob("*.log")))


def test_a_leader_restarted_within_its_session_on_a_lost_log_does_not_reuse_its_epoch(
    cluster: Cluster,
) -> None:
    create_replicated_topic(cluster, TOPIC, 1)
    wait_until(lambda: len(_partition(cluster).isr_nodes) == 3, message="full ISR")
    producer = Producer(
        {"bootstrap.servers": cluster.bootstrap_servers, "acks": "all", "log_level": 0}
    )
    for number in range(RECORDS):
        producer.produce(TOPIC, value=b"before-%d" % number, partition=0)
    assert producer.flush(30) == 0
    before = _partition(cluster)
    leader, epoch = int(before.leader_id), int(before.leader_epoch)
    followers = [node for node in cluster.node_ids if node != leader]
    wait_until(
        lambda: all(_log_bytes(cluster, node) == _log_bytes(cluster, leader) for node in followers),
        message="followers caught up",
    )
    cluster.kill(leader)
    # The power loss took every byte of the partition's log the leader had not fsynced.
    shutil.rmtree(cluster.data_dir / f"node-{leader}" / f"{TOPIC}-0")
    cluster.restart(leader)
    # The other brokers still name it leader in `epoch`: its session has not expired.
    assert int(_partition(cluster, followers[0]).leader_epoch) == epoch
    error, offset = _produce_acks_1(cluster, leader, b"after-restart")
    assert error != 0, (
        f"the restarted broker took an acks=1 write at offset {offset} in epoch {epoch}, "
        f"where its followers hold the records its previous incarnation wrote"
    )
    # Once the controller has moved the leadership (a new epoch), every replica converges on
    # one history: the records written before the crash, then the new ones.
    wait_until(
        lambda: int(_partition(cluster, followers[0]).leader_epoch) > epoch,
        timeout_s=SESSION_TIMEOUT_MS / 1000 + 20,
        message="a new leader epoch",
    )
    for number in range(RECORDS):
        producer.produce(TOPIC, value=b"after-%d" % number, partition=0)
    assert producer.flush(30) == 0
    wait_until(lambda: len(_partition(cluster).isr_nodes) == 3, timeout_s=30, message="rejoin")
    wait_until(
        lambda: len({_log_bytes(cluster, node) for node in cluster.node_ids}) == 1,
        message="replicas agree",
    )
    assert _log_bytes(cluster, leader).count(b"before-") == RECORDS
    assert b"after-restart" not in _log_bytes(cluster, leader)


def _api_versions_frame(correlation_id: int) -> bytes:
    """ApiVersions v0 (header v1, client id "probe"), as a size-prefixed frame."""
    body = struct.pack(">hhih", 18, 0, correlation_id, 5) + b"probe"
    return struct.pack(">i", len(body)) + body


def _read_frame(sock: socket.socket) -> bytes:
    size = b""
    while len(size) < 4:
        chunk = sock.recv(4 - len(size))
        assert chunk, "the broker closed the connection"
        size += chunk
    (length,) = struct.unpack(">i", size)
    data = b""
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        assert chunk, "the broker closed the connection"
        data += chunk
    return data


def test_a_restarted_broker_reads_no_request_before_it_is_unfenced(cluster: Cluster) -> None:
    """Kafka's broker enables request processing only once the controller has unfenced it
    (BrokerServer). Before that it may still be named leader or coordinator in the epoch of
    its previous incarnation, which it no longer is: an answer from it then (NOT_COORDINATOR
    from the coordinator every broker names) left librdkafka's OffsetFetch unretried for good
    (test_coordinators' transaction reader). With the controller stopped (SIGSTOP) the
    restarted broker cannot register: a request it gets is accepted and waits unread, and it
    is answered once the controller is back and has unfenced the broker."""
    broker = cluster.node_ids[-1]
    cluster.kill(broker)
    cluster.pause(cluster.controller_id)
    try:
        cluster.restart(broker)
        host, port = cluster.broker_address(broker).rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as probe:
            probe.sendall(_api_versions_frame(7))
            probe.settimeout(3)
            with pytest.raises(TimeoutError):
                probe.recv(1)
            cluster.resume(cluster.controller_id)
            probe.settimeout(SESSION_TIMEOUT_MS / 1000 + 30)
            answer = _read_frame(probe)
    finally:
        if cluster.is_paused(cluster.controller_id):
            cluster.resume(cluster.controller_id)
    correlation_id, error_code = struct.unpack(">ih", answer[:6])
    assert (correlation_id, error_code) == (7, 0)
    cluster.wait_for_brokers(cluster.node_ids, timeout_s=SESSION_TIMEOUT_MS / 1000 + 30)
