"""The follower's Fetch (replica.fetch.*) with real processes: a controller and three brokers.

A follower's Fetch with nothing to read parks on the leader for up to replica.fetch.wait.max.ms;
an append on the leader answers it at once (Kafka's DelayedFetch completes when data arrives),
so acks=all is acknowledged long before a parked Fetch would expire. With
replica.fetch.max.bytes below one batch each Fetch still returns one whole batch (KIP-74), and
the followers end with the leader's log byte for byte."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import consume_messages, create_replicated_topic, describe_topic, wait_until
from confluent_kafka import Producer

from odradek.broker.config import BrokerConfig, ConfigError
from odradek.cluster import Cluster

#: Longer than any produce below may take: only a woken Fetch acknowledges them in time.
PARKED_FETCH_MS = 25000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3,
        data_dir=tmp_path_factory.mktemp("replica-fetch"),  # node logs kept for a reader
        log_level="INFO",
        config={
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "replica.fetch.wait.max.ms": str(PARKED_FETCH_MS),
            "replica.fetch.max.bytes": "1",  # one batch per partition per Fetch
        },
    ) as running:
        yield running


def _create_topic(cluster: Cluster, name: str) -> None:
    create_replicated_topic(cluster, name, 1)
    wait_until(
        lambda: all(
            p.isr_nodes and len(p.isr_nodes) == 3 for p in describe_topic(cluster, name).partitions
        )
    )


def _leader(cluster: Cluster, topic: str) -> int:
    return int(describe_topic(cluster, topic).partitions[0].leader_id)


def _log_bytes(cluster: Cluster, node: int, topic: str) -> bytes:
    directory = cluster.data_dir / f"node-{node}" / f"{topic}-0"
    return b"".join(path.read_bytes() for path in sorted(directory.glob("*.log")))


def _producer(cluster: Cluster, **extra: Any) -> Producer:
    return Producer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "acks": "all",
            "log_level": 0,
            **extra,
        }
    )


def test_acks_all_is_answered_before_the_parked_follower_fetch_expires(cluster: Cluster) -> None:
    topic = "parked-fetch"
    _create_topic(cluster, topic)
    # A delivery error unless the followers' parked Fetches return with the new batch: each
    # produce must be acknowledged within a fifth of replica.fetch.wait.max.ms.
    client = _producer(
        cluster,
        **{"request.timeout.ms": PARKED_FETCH_MS // 5, "message.timeout.ms": PARKED_FETCH_MS // 5},
    )
    errors: list[Any] = []
    for number in range(8):
        client.produce(topic, value=b"%d" % number, on_delivery=lambda e, _m: errors.append(e))
        # One at a time: every produce arrives while both followers are parked.
        assert client.flush(PARKED_FETCH_MS / 1000) == 0
    assert errors == [None] * 8
    messages = consume_messages(cluster, topic, lambda got: len(got) >= 8, 30.0, poll_s=0.5)
    assert [m.value() for m in messages] == [b"%d" % n for n in range(8)]


def test_followers_fetching_one_batch_per_round_end_with_the_leaders_log(
    cluster: Cluster,
) -> None:
    topic = "one-batch-rounds"
    _create_topic(cluster, topic)
    client = _producer(cluster, **{"linger.ms": 20, "batch.num.messages": 50})
    for number in range(1000):
        client.produce(topic, value=b"v%04d" % number)
    assert client.flush(60) == 0
    leader = _leader(cluster, topic)
    expected = _log_bytes(cluster, leader, topic)
    assert expected
    followers = [node for node in cluster.node_ids if node != leader]
    wait_until(
        lambda: all(_log_bytes(cluster, node, topic) == expected for node in followers),
        message="followers hold the leader's log",
    )


def _kraft_broker(**overrides: str) -> dict[str, str]:
    return {
        "process.roles": "broker",
        "node.id": "1",
        "controller.quorum.voters": "0@127.0.0.1:9093",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "listeners": "PLAINTEXT://127.0.0.1:9092",
        **overrides,
    }


def test_replica_fetch_settings_are_read_and_checked() -> None:
    kraft = BrokerConfig.from_properties(
        _kraft_broker(**{"replica.fetch.max.bytes": "1048576", "replica.fetch.min.bytes": "7"})
    ).kraft
    assert kraft is not None
    assert (kraft.replica_fetch_max_bytes, kraft.replica_fetch_min_bytes) == (1048576, 7)
    assert kraft.replica_fetch_response_max_bytes == 10 * 1024 * 1024  # Kafka's default
    for bad in (
        {"replica.fetch.max.bytes": "0"},
        {"replica.fetch.response.max.bytes": "-1"},
        {"replica.fetch.min.bytes": "0"},
        {"replica.fetch.wait.max.ms": "-5"},
        {"replica.fetch.wait.max.ms": "30000"},  # not below replica.lag.time.max.ms
    ):
        with pytest.raises(ConfigError, match=r"replica\.fetch"):
            BrokerConfig.from_properties(_kraft_broker(**bad))
