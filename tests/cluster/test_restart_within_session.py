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
from collections.abc import Iterator
from typing import Any

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
    """One acks=1 Produce of `value` to partition 0 on `node`: (error code, base offset)."""
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
