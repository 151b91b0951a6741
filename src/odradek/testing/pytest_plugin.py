"""pytest plugin (entry point `odradek`): the `odradek_broker` and `odradek_cluster` fixtures.

def test_round_trip(odradek_broker):
    producer = Producer({"bootstrap.servers": odradek_broker.bootstrap_servers})

@pytest.mark.odradek_cluster(brokers=3, config={"min.insync.replicas": "2"})
def test_failover(odradek_cluster):
    odradek_cluster.kill(odradek_cluster.leader_of("orders", 0))
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from odradek.broker.server import Broker
    from odradek.cluster import Cluster

# Tests want a fast first join and no waiting on timers that only matter in production: no
# initial rebalance delay, and session timeouts (classic and KIP-848) allowed down to 1 s.
TEST_CONFIG = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.min.session.timeout.ms": "1000",
    "group.consumer.heartbeat.interval.ms": "500",
    "group.consumer.min.heartbeat.interval.ms": "100",
}

#: A test cluster also fences a killed or paused broker after 3 s (Kafka's default is 9 s) and
#: heartbeats every 0.5 s; `odradek.cluster.replication_defaults` sizes the internal topics.
CLUSTER_TEST_CONFIG = {
    **TEST_CONFIG,
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "odradek_cluster(brokers=3, config=None): the size and extra broker settings of the "
        "test's `odradek_cluster`",
    )


def cluster_test_config(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """`CLUSTER_TEST_CONFIG` with `overrides` on top (Kafka's property names)."""
    return {**CLUSTER_TEST_CONFIG, **(overrides or {})}


@pytest.fixture
def odradek_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker on an ephemeral 127.0.0.1 port with its data in a temporary directory."""
    # Imported here, not at plugin load: kio registers Hypothesis strategies on import, which
    # Hypothesis refuses before its own plugin has loaded.
    from odradek.broker.server import Broker

    data_dir = tmp_path_factory.mktemp("odradek-data")
    with Broker(data_dir=data_dir, config=TEST_CONFIG) as broker:
        yield broker


@pytest.fixture
def odradek_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A controller and N brokers (3 unless `@pytest.mark.odradek_cluster(brokers=N)`) as
    processes on free 127.0.0.1 ports, started and registered before the test runs (a few
    seconds), stopped after it.

    Settings: `CLUSTER_TEST_CONFIG` (fast group joins, brokers fenced 3 s after they stop
    heartbeating), internal topics sized to the cluster (`offsets.topic.replication.factor`
    and `transaction.state.log.replication.factor` = min(3, N),
    `transaction.state.log.min.isr` = min(2, N)), then the marker's `config`. Node logs stay
    in the test's temporary directory (`node-<id>.log`) for a failure's reader.
    """
    from odradek.cluster import Cluster

    marker = request.node.get_closest_marker("odradek_cluster")
    if marker is not None and marker.args:
        raise pytest.UsageError(
            "odradek_cluster marker takes keywords only: "
            "@pytest.mark.odradek_cluster(brokers=N, config={...})"
        )
    options = dict(marker.kwargs) if marker is not None else {}
    brokers = int(options.pop("brokers", 3))
    overrides = options.pop("config", None)
    if options:
        raise pytest.UsageError(f"odradek_cluster marker: unknown options {sorted(options)}")
    data_dir = tmp_path_factory.mktemp("odradek-cluster")
    with Cluster(brokers, data_dir=data_dir, config=cluster_test_config(overrides)) as cluster:
        yield cluster
