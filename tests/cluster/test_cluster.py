"""A controller and three brokers as real processes (odradek.Cluster), seen through
confluent-kafka's AdminClient and Kafka's own requests: registration, metadata from the image,
replica placement, fencing after broker.session.timeout.ms, controlled shutdown, controller
restart (replay of the metadata log) and producer-id blocks (KIP-730)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import describe_topic as describe
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.cli.wire import WireClient
from odradek.cluster import Cluster

SESSION_TIMEOUT_MS = 3000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3,
        data_dir=tmp_path_factory.mktemp("cluster"),  # node logs kept for a failure's reader
        log_level="INFO",
        config={
            "broker.session.timeout.ms": str(SESSION_TIMEOUT_MS),
            "broker.heartbeat.interval.ms": "500",
        },
    ) as running:
        yield running


def admin(cluster: Cluster) -> AdminClient:
    return AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})


def partitions(cluster: Cluster, topic: str, via: int | None = None) -> dict[int, Any]:
    """Metadata v12 of `topic` from one running broker: partition index -> partition."""
    return {int(p.partition_index): p for p in describe(cluster, topic, via).partitions}


def create_topic(cluster: Cluster, name: str, count: int, replication_factor: int) -> None:
    client = admin(cluster)
    futures = client.create_topics(
        [NewTopic(name, num_partitions=count, replication_factor=replication_factor)]
    )
    futures[name].result(15)


def test_admin_client_sees_three_brokers_and_a_controller(cluster: Cluster) -> None:
    client = admin(cluster)  # kept: a collected client cancels its futures
    description = client.describe_cluster(request_timeout=10).result(15)
    assert sorted(node.id for node in description.nodes) == cluster.node_ids
    # In KRaft the controller is out of clients' reach: brokers report an alive broker.
    assert description.controller is not None
    assert description.controller.id in cluster.node_ids
    assert cluster.controller_id not in cluster.node_ids


def test_replicated_topic_has_three_replicas_and_spread_leaders(cluster: Cluster) -> None:
    create_topic(cluster, "spread", 6, 3)
    metadata = admin(cluster).list_topics("spread", timeout=10)
    described = metadata.topics["spread"].partitions
    assert len(described) == 6
    for partition in described.values():
        assert sorted(partition.replicas) == cluster.node_ids
        assert sorted(partition.isrs) == cluster.node_ids
        assert partition.leader in cluster.node_ids
    assert {p.leader for p in described.values()} == set(cluster.node_ids)
    # Every broker answers the same, from its own replay of the metadata log.
    for node in cluster.node_ids:
        seen = partitions(cluster, "spread", via=node)
        assert {i: (p.leader_id, tuple(p.replica_nodes)) for i, p in seen.items()} == {
            i: (p.leader, tuple(p.replicas)) for i, p in described.items()
        }


def test_producer_ids_are_distinct_across_brokers(cluster: Cluster) -> None:
    producer_ids = []
    for node in cluster.node_ids:
        with WireClient(cluster.broker_address(node), timeout=5) as client:
            response = client.request(
                22,
                4,
                transactional_id=None,
                transaction_timeout=60_000,
                producer_id=-1,
                producer_epoch=-1,
            )
        assert response.error_code == 0
        producer_ids.append(int(response.producer_id))
    assert len(set(producer_ids)) == 3
    # Each broker draws from its own block of 1000 (AllocateProducerIds).
    assert len({producer_id // 1000 for producer_id in producer_ids}) == 3


def test_killed_broker_is_fenced_and_its_leaderships_move(cluster: Cluster) -> None:
    create_topic(cluster, "failover", 6, 3)
    victim = cluster.node_ids[-1]
    led_before = [i for i, p in partitions(cluster, "failover").items() if p.leader_id == victim]
    assert led_before
    cluster.kill(victim)
    survivors = [n for n in cluster.node_ids if n != victim]
    cluster.wait_for_brokers(survivors, timeout_s=SESSION_TIMEOUT_MS / 1000 + 10)
    after = partitions(cluster, "failover")
    for index, partition in after.items():
        assert partition.leader_id in survivors
        assert victim not in partition.isr_nodes
        assert victim in partition.offline_replicas
        assert sorted(partition.replica_nodes) == cluster.node_ids
        if index in led_before:
            assert partition.leader_epoch > 0
    cluster.restart(victim)
    cluster.wait_for_brokers(cluster.node_ids, timeout_s=SESSION_TIMEOUT_MS / 1000 + 15)


def test_sigterm_is_a_controlled_shutdown(cluster: Cluster) -> None:
    create_topic(cluster, "controlled", 3, 3)
    leaving = cluster.node_ids[0]
    assert cluster.terminate(leaving, timeout_s=20) == 0
    log = cluster.log_path(leaving).read_text()
    assert "Controlled shutdown complete" in log
    for partition in partitions(cluster, "controlled").values():
        assert partition.leader_id != leaving
        assert leaving not in partition.isr_nodes
    cluster.restart(leaving)
    cluster.wait_for_brokers(cluster.node_ids, timeout_s=SESSION_TIMEOUT_MS / 1000 + 15)


def test_controller_restart_keeps_all_metadata(cluster: Cluster) -> None:
    create_topic(cluster, "durable", 4, 2)
    before = {t: partitions(cluster, t) for t in ("spread", "durable")}
    topic_ids = {name: describe(cluster, name).topic_id for name in ("spread", "durable")}
    cluster.kill(cluster.controller_id)
    cluster.restart(cluster.controller_id)
    create_topic(cluster, "after-restart", 2, 3)
    assert "after-restart" in admin(cluster).list_topics(timeout=10).topics
    for topic, described in before.items():
        now = partitions(cluster, topic)
        assert {i: tuple(p.replica_nodes) for i, p in now.items()} == {
            i: tuple(p.replica_nodes) for i, p in described.items()
        }
        assert {i: p.leader_epoch for i, p in now.items()} == {
            i: p.leader_epoch for i, p in described.items()
        }
    for name in ("spread", "durable"):
        assert describe(cluster, name).topic_id == topic_ids[name]
    cluster.wait_for_brokers(cluster.node_ids, timeout_s=SESSION_TIMEOUT_MS / 1000 + 15)
