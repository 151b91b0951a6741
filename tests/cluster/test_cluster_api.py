"""odradek.Cluster's user-facing API on real processes: the `odradek_cluster` fixture (and its
marker), leader_of / wait_for_isr read from Metadata, pause / resume (SIGSTOP / SIGCONT), kill
and restart, and AsyncCluster under asyncio with aiokafka."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin import NewTopic as AioNewTopic
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from odradek import AsyncCluster, Cluster
from odradek.cluster import ClusterError


def create_topic(cluster: Cluster, name: str, partitions: int, replication_factor: int) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})
    futures = admin.create_topics([NewTopic(name, partitions, replication_factor)])
    futures[name].result(15)


def test_pause_fences_the_leader_and_leadership_moves(odradek_cluster: Cluster) -> None:
    cluster = odradek_cluster
    assert cluster.node_ids == [1, 2, 3]
    assert cluster.controller_id == 0
    create_topic(cluster, "orders", 1, 3)
    cluster.wait_for_isr("orders", 0, size=3, timeout_s=10)
    before = cluster.describe_partition("orders", 0)
    leader = cluster.leader_of("orders", 0)
    assert leader is not None
    assert leader == before.leader
    assert sorted(before.replicas) == [1, 2, 3]
    assert before.offline_replicas == ()

    cluster.pause(leader)
    assert cluster.is_paused(leader)
    assert cluster.is_running(leader)
    survivors = [node for node in cluster.node_ids if node != leader]
    # The paused broker stops heartbeating: fenced after broker.session.timeout.ms (3 s here).
    cluster.wait_for_brokers(survivors, timeout_s=15)
    isr = cluster.wait_for_isr("orders", 0, size=2, timeout_s=10)
    assert leader not in isr
    after = cluster.describe_partition("orders", 0)
    assert after.leader in survivors
    assert after.leader_epoch > before.leader_epoch
    assert after.offline_replicas == (leader,)

    cluster.resume(leader)
    assert not cluster.is_paused(leader)
    cluster.wait_for_brokers(cluster.node_ids, timeout_s=15)

    victim = cluster.leader_of("orders", 0)
    assert victim is not None
    cluster.kill(victim)
    assert not cluster.is_running(victim)
    with pytest.raises(ClusterError, match="still running"):
        cluster.restart(leader)
    cluster.restart(victim)
    cluster.wait_for_brokers(cluster.node_ids, timeout_s=15)

    with pytest.raises(ClusterError, match="did not reach 4"):  # three replicas: never four
        cluster.wait_for_isr("orders", 0, size=4, timeout_s=0.3)
    with pytest.raises(ClusterError, match="does not know topic"):
        cluster.leader_of("nowhere", 0)
    with pytest.raises(ClusterError, match="no partition 5"):
        cluster.leader_of("orders", 5)
    with pytest.raises(ClusterError, match="not paused"):
        cluster.resume(1)
    with pytest.raises(ValueError, match="no node 9"):
        cluster.kill(9)


@pytest.mark.odradek_cluster(brokers=2, config={"min.insync.replicas": "2"})
def test_a_two_broker_cluster_sizes_its_internal_topics(odradek_cluster: Cluster) -> None:
    assert odradek_cluster.node_ids == [1, 2]
    admin = AdminClient({"bootstrap.servers": odradek_cluster.bootstrap_servers})
    resource = ConfigResource(ResourceType.BROKER, "1")
    configs = admin.describe_configs([resource])[resource].result(15)
    values = {name: entry.value for name, entry in configs.items()}
    assert values["offsets.topic.replication.factor"] == "2"
    assert values["transaction.state.log.replication.factor"] == "2"
    assert values["transaction.state.log.min.isr"] == "2"
    assert values["min.insync.replicas"] == "2"
    assert values["broker.session.timeout.ms"] == "3000"


def test_async_cluster_with_aiokafka(tmp_path_factory: pytest.TempPathFactory) -> None:
    async def scenario() -> None:
        async with AsyncCluster(
            brokers=1, data_dir=tmp_path_factory.mktemp("async-cluster")
        ) as cluster:
            assert cluster.node_ids == [1]
            admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
            await admin.start()
            try:
                await admin.create_topics([AioNewTopic("events", 1, 1)])
            finally:
                await admin.close()
            assert await cluster.wait_for_isr("events", 0, size=1, timeout_s=10) == (1,)
            assert await cluster.leader_of("events", 0) == 1
            await cluster.kill(1)
            assert not cluster.sync.is_running(1)
            await cluster.restart(1)
            await cluster.wait_for_brokers([1], timeout_s=15)
        assert not cluster.sync.is_running(cluster.controller_id)

    asyncio.run(scenario())
