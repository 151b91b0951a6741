"""A broker restarted while the controller is unreachable has an empty metadata image: until
it has caught up with the metadata log it must not serve the replicated partitions whose logs
it still has on disk. It used to serve them as a single broker serves its own topics: an
acks=1 write was appended and acknowledged, the high watermark jumped to the log end (no
follower had the records), consumers could read them, and the controller's next leader (an
ISR member without them) later had the restarted broker truncate them (found by the
simulator: `odradek sim --seed 2 --seconds 8 --brokers 3 --faults
crash,power-loss,cut,controller-crash,isolate-leader`, hw-below-isr-leo).

Kafka's broker answers a partition missing from its metadata cache with
UNKNOWN_TOPIC_OR_PARTITION (ReplicaManager.getPartitionOrException) and enables request
processing only once it has caught up with the metadata (BrokerServer.startup).
Real processes (odradek.Cluster): the controller killed, a broker killed and restarted, a raw
acks=1 Produce and a Fetch by topic name to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import create_replicated_topic, describe_topic, wait_until
from confluent_kafka import Producer

from odradek.cli.wire import WireClient
from odradek.cluster import Cluster
from odradek.protocol.record_batch import Record, encode_batch

TOPIC = "restart-before-metadata"
RECORDS = 20
UNKNOWN_TOPIC_OR_PARTITION = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3,
        data_dir=tmp_path_factory.mktemp("restart-before-metadata"),
        log_level="INFO",
        config={
            "broker.session.timeout.ms": "6000",
            "broker.heartbeat.interval.ms": "500",
            "replica.lag.time.max.ms": "2000",
        },
    ) as running:
        yield running


def _produce_acks_1(cluster: Cluster, node: int, value: bytes) -> int:
    """One acks=1 Produce v9 of `value` to partition 0 on `node`: its error code."""
    with WireClient(cluster.broker_address(node), timeout=5) as client:
        records = encode_batch([Record(key=None, value=value, timestamp=1)])
        data = client.build(0, 9, "PartitionProduceData", index=0, records=records)
        topic_data = client.build(0, 9, "TopicProduceData", name=TOPIC, partition_data=(data,))
        response = client.request(
            0, 9, transactional_id=None, acks=1, timeout=5000, topic_data=(topic_data,)
        )
    return int(response.responses[0].partition_responses[0].error_code)


def _fetch_by_name(cluster: Cluster, node: int) -> Any:
    """A consumer's Fetch v12 (by topic name, as aiokafka and kafka-python send it) of
    partition 0 from offset 0 on `node`: the partition's answer."""
    with WireClient(cluster.broker_address(node), timeout=5) as client:
        partition = client.build(
            1,
            12,
            "FetchPartition",
            partition=0,
            current_leader_epoch=-1,
            fetch_offset=0,
            last_fetched_epoch=-1,
            log_start_offset=-1,
            partition_max_bytes=1 << 20,
        )
        topic = client.build(1, 12, "FetchTopic", topic=TOPIC, partitions=(partition,))
        response = client.request(
            1,
            12,
            cluster_id=None,
            replica_id=-1,
            max_wait=0,
            min_bytes=0,
            max_bytes=1 << 20,
            isolation_level=0,
            session_id=0,
            session_epoch=-1,
            topics=(topic,),
            forgotten_topics_data=(),
            rack_id="",
        )
    return response.responses[0].partitions[0]


def _log_bytes(cluster: Cluster, node: int) -> bytes:
    directory = cluster.data_dir / f"node-{node}" / f"{TOPIC}-0"
    return b"".join(path.read_bytes() for path in sorted(directory.glob("*.log")))


def test_a_broker_restarted_without_the_controller_serves_no_replicated_partition(
    cluster: Cluster,
) -> None:
    create_replicated_topic(cluster, TOPIC, 1)
    wait_until(lambda: len(describe_topic(cluster, TOPIC).partitions[0].isr_nodes) == 3)
    producer = Producer(
        {"bootstrap.servers": cluster.bootstrap_servers, "acks": "all", "log_level": 0}
    )
    for number in range(RECORDS):
        producer.produce(TOPIC, value=b"before-%d" % number, partition=0)
    assert producer.flush(30) == 0
    leader = int(describe_topic(cluster, TOPIC).partitions[0].leader_id)
    wait_until(
        lambda: all(
            _log_bytes(cluster, node) == _log_bytes(cluster, leader) for node in cluster.node_ids
        ),
        message="followers caught up",
    )
    cluster.kill(cluster.controller_id)
    cluster.kill(leader)
    cluster.restart(leader)
    # No metadata yet: the partition's log is on disk, but the broker does not know its role.
    error = _produce_acks_1(cluster, leader, b"unreplicated")
    assert error == UNKNOWN_TOPIC_OR_PARTITION, (
        f"the restarted broker answered an acks=1 write with error code {error} before it "
        f"had any metadata: it served the replicated partition as a single broker"
    )
    fetched = _fetch_by_name(cluster, leader)
    assert int(fetched.error_code) == UNKNOWN_TOPIC_OR_PARTITION
    assert not fetched.records
    # With the controller back, the broker registers and rejoins; one history everywhere.
    cluster.restart(cluster.controller_id)
    cluster.wait_for_brokers(cluster.node_ids)
    for number in range(RECORDS):
        producer.produce(TOPIC, value=b"after-%d" % number, partition=0)
    assert producer.flush(30) == 0
    wait_until(
        lambda: len(describe_topic(cluster, TOPIC).partitions[0].isr_nodes) == 3,
        timeout_s=30,
        message="rejoin",
    )
    wait_until(
        lambda: len({_log_bytes(cluster, node) for node in cluster.node_ids}) == 1,
        message="replicas agree",
    )
    assert b"unreplicated" not in _log_bytes(cluster, leader)
