"""SIGTERM always stops a broker, promptly and cleanly, with real processes (odradek.Cluster:
a controller and three brokers) under an acks=all produce load and a consumer group: each
broker in turn, then all three at once; every one exits within 10 s with status 0
(controlled shutdown, then every stop step bounded, see odradek.broker.shutdown), and the
restarted cluster takes the producer's remaining records."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.cluster import Cluster
from odradek.testing.pytest_plugin import cluster_test_config

EXIT_TIMEOUT_S = 10.0

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3,
        data_dir=tmp_path_factory.mktemp("sigterm"),  # node logs kept for a failure's reader
        log_level="INFO",
        config=cluster_test_config(
            {"replica.lag.time.max.ms": "1500", "offsets.topic.num.partitions": "3"}
        ),
    ) as running:
        yield running


class Load:
    """An idempotent acks=all producer and a committing consumer group, each on a thread,
    until `stop()`."""

    def __init__(self, cluster: Cluster, topic: str) -> None:
        self.cluster = cluster
        self.topic = topic
        self.acknowledged = 0
        self.consumed = 0
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._produce, daemon=True),
            threading.Thread(target=self._consume, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _produce(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.cluster.bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 120_000,
                "log_level": 0,
            }
        )

        def delivered(error: object, _message: object) -> None:
            if error is None:
                self.acknowledged += 1

        while not self._stopping.is_set():
            for _ in range(50):
                try:
                    producer.produce(self.topic, b"x" * 200, on_delivery=delivered)
                except BufferError:
                    break
            producer.poll(0.02)
        assert producer.flush(120) == 0

    def _consume(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.cluster.bootstrap_servers,
                "group.id": "sigterm-readers",
                "auto.offset.reset": "earliest",
                "auto.commit.interval.ms": 200,
                "log_level": 0,
            }
        )
        consumer.subscribe([self.topic])
        try:
            while not self._stopping.is_set():
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    self.consumed += 1
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(150)


def terminate(cluster: Cluster, node: int) -> int:
    """SIGTERM `node`; its exit status, which must come within EXIT_TIMEOUT_S."""
    started = time.monotonic()
    try:
        return cluster.terminate(node, timeout_s=EXIT_TIMEOUT_S)
    except Exception as error:  # subprocess.TimeoutExpired: the hang this test is about
        raise AssertionError(
            f"broker {node} did not exit {time.monotonic() - started:.1f} s after SIGTERM "
            f"({error}); see {cluster.log_path(node)}"
        ) from None


def test_sigterm_stops_every_broker_under_load(cluster: Cluster) -> None:
    topic = "sigterm-load"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})
    admin.create_topics([NewTopic(topic, 3, 3, config={"min.insync.replicas": "2"})])[topic].result(
        15
    )
    for partition in range(3):
        cluster.wait_for_isr(topic, partition, 3, timeout_s=15)
    load = Load(cluster, topic)
    try:
        for node in cluster.node_ids:  # a rolling restart
            time.sleep(0.5)  # records in flight on every broker
            assert terminate(cluster, node) == 0, cluster.log_path(node)
            cluster.restart(node)
            cluster.wait_for_brokers(cluster.node_ids, timeout_s=30)
        time.sleep(0.5)
        with ThreadPoolExecutor(len(cluster.node_ids)) as pool:
            codes = list(pool.map(lambda node: terminate(cluster, node), cluster.node_ids))
        assert codes == [0] * len(codes)
        for node in cluster.node_ids:
            cluster.restart(node)
        cluster.wait_for_brokers(cluster.node_ids, timeout_s=30)
    finally:
        load.stop()
    # The load really ran, across the stops: the restarted cluster took the rest.
    assert load.acknowledged > 0
    assert load.consumed > 0
