"""Named listeners on a cluster, as Kafka: each broker listens on CLIENT and REPLICATION,
registers both with the controller, answers Metadata with the endpoints of the listener a client
came in on, and replicates over `inter.broker.listener.name` (REPLICATION) — seen in the TCP
connections the broker processes hold (Linux /proc)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.cli.wire import WireClient
from odradek.cluster import Cluster

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3,
        data_dir=tmp_path_factory.mktemp("listeners"),
        log_level="INFO",
        listener_names=("CLIENT", "REPLICATION"),
        inter_broker_listener_name="REPLICATION",
    ) as running:
        yield running


def metadata_ports(address: str) -> set[int]:
    """The broker ports a Metadata v12 request to `address` lists."""
    with WireClient(address, timeout=10) as client:
        response = client.request(
            3,
            12,
            topics=None,
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        )
    return {int(broker.port) for broker in response.brokers}


def established_remote_ports(pid: int) -> list[int]:
    """Remote ports of the established TCP connections process `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and inode in inodes:
                ports.append(int(remote.rsplit(":", 1)[1], 16))
    return ports


def test_clients_see_their_listener_and_replication_uses_its_own(cluster: Cluster) -> None:
    client_ports = {cluster.listener_ports[node]["CLIENT"] for node in cluster.node_ids}
    replication_ports = {cluster.listener_ports[node]["REPLICATION"] for node in cluster.node_ids}
    # Metadata per listener: the same cluster, each listener's own endpoints.
    first = cluster.node_ids[0]
    assert metadata_ports(cluster.broker_address(first)) == client_ports
    replication_address = f"127.0.0.1:{cluster.listener_ports[first]['REPLICATION']}"
    assert metadata_ports(replication_address) == replication_ports

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})
    admin.create_topics([NewTopic("routed", num_partitions=3, replication_factor=3)])[
        "routed"
    ].result(15)
    producer = Producer(
        {"bootstrap.servers": cluster.bootstrap_servers, "acks": "all", "log_level": 0}
    )
    for index in range(300):
        producer.produce("routed", f"record-{index}".encode(), partition=index % 3)
    assert producer.flush(20) == 0  # acks=all: the followers fetched every record
    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "group.id": "routed-reader",
            "auto.offset.reset": "earliest",
            "log_level": 0,
        }
    )
    consumer.subscribe(["routed"])
    received = 0
    try:
        while received < 300:
            message = consumer.poll(10)
            assert message is not None, f"only {received} of 300 records read"
            assert message.error() is None
            received += 1
    finally:
        consumer.close()

    # Every broker follows two leaders: its replica fetchers hold connections to the other
    # brokers' REPLICATION ports, and no broker connects to another's CLIENT port.
    for node in cluster.node_ids:
        pid = cluster.pid(node)
        remote = established_remote_ports(pid)
        others = {cluster.listener_ports[n]["REPLICATION"] for n in cluster.node_ids if n != node}
        assert others <= set(remote), (node, remote)
        assert not client_ports & set(remote), (node, remote)


def test_find_coordinator_names_the_listener_the_client_came_in_on(cluster: Cluster) -> None:
    """Kafka answers FindCoordinator with the coordinator's endpoint on the listener the
    request arrived on (as Metadata does): a client on CLIENT must not be sent to REPLICATION,
    or its group traffic would ride the replication listener."""
    client_ports = {cluster.listener_ports[node]["CLIENT"] for node in cluster.node_ids}
    replication_ports = {cluster.listener_ports[node]["REPLICATION"] for node in cluster.node_ids}
    first = cluster.node_ids[0]
    for address, expected in (
        (cluster.broker_address(first), client_ports),
        (f"127.0.0.1:{cluster.listener_ports[first]['REPLICATION']}", replication_ports),
    ):
        deadline = time.monotonic() + 20
        while True:
            with WireClient(address, timeout=10) as client:
                response = client.request(10, 3, key="listener-group", key_type=0)
            if response.error_code == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # __consumer_offsets is being created
        assert response.error_code == 0, response
        assert int(response.port) in expected, (address, response)
