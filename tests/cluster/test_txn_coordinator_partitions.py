"""`__transaction_state` with Kafka's 50 partitions on a 3-broker cluster (odradek.Cluster):

- FindCoordinator (key type 1) names the leader of partition `abs(hashCode(id)) % 50` (Java's
  String.hashCode, computed here independently), and ids of different partitions get
  coordinators on different brokers;
- confluent-kafka transactions through two coordinators on different brokers both commit, and
  a read_committed reader sees both;
- DescribeTransactions answers on each id's own coordinator and NOT_COORDINATOR on the others;
  ListTransactions on a broker lists the ids of the partitions it leads;
- killing one coordinator broker moves only the partitions it led: every other partition keeps
  its leader and leader epoch, the other id keeps its coordinator, and the killed broker's id
  gets a new coordinator (a new coordinator epoch) through which its producer commits again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from cluster_helpers import consume_messages, create_replicated_topic, wait_until
from confluent_kafka import Producer
from kio.schema.errors import ErrorCode

from odradek.cli.wire import WireClient, decode_describe_transactions
from odradek.cluster import Cluster, ClusterError, PartitionState
from odradek.protocol.api_keys import ApiKey

TRANSACTION_STATE = "__transaction_state"
PARTITIONS = 50
SESSION_TIMEOUT_MS = 3000
TRANSACTION_KEY_TYPE = 1

pytestmark = pytest.mark.timeout(240)


def java_string_hash(text: str) -> int:
    """Java's String.hashCode: s[0]*31^(n-1) + ... over UTF-16 code units, as a signed int."""
    value = 0
    units = text.encode("utf-16-be")
    for index in range(0, len(units), 2):
        value = (value * 31 + int.from_bytes(units[index : index + 2], "big")) % 2**32
    return value - 2**32 if value >= 2**31 else value


def kafka_partition_for(transactional_id: str) -> int:
    """Utils.abs(transactionalId.hashCode) % 50 (Utils.abs maps MIN_VALUE to 0)."""
    hashed = java_string_hash(transactional_id)
    return (0 if hashed == -(2**31) else abs(hashed)) % PARTITIONS


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3,
        data_dir=tmp_path_factory.mktemp("txn-partitions"),
        log_level="INFO",
        config={
            "broker.session.timeout.ms": str(SESSION_TIMEOUT_MS),
            "broker.heartbeat.interval.ms": "500",
            "replica.lag.time.max.ms": "1500",
        },
    ) as running:
        yield running


def running_broker(cluster: Cluster) -> int:
    return next(n for n in cluster.node_ids if cluster.is_running(n))


def find_coordinator(cluster: Cluster, transactional_id: str) -> int | None:
    with WireClient(cluster.broker_address(running_broker(cluster)), timeout=10) as client:
        response = client.request(
            ApiKey.FIND_COORDINATOR, 3, key=transactional_id, key_type=TRANSACTION_KEY_TYPE
        )
    return int(response.node_id) if response.error_code == ErrorCode.none else None


def state_partitions(cluster: Cluster) -> dict[int, PartitionState]:
    return {
        index: cluster.describe_partition(TRANSACTION_STATE, index) for index in range(PARTITIONS)
    }


def coordinator_of(cluster: Cluster, transactional_id: str, avoid: int = -1) -> int:
    """FindCoordinator's answer for `transactional_id` once there is one other than `avoid`."""
    found: list[int] = []

    def known() -> bool:
        node = find_coordinator(cluster, transactional_id)
        if node is not None and node != avoid:
            found.append(node)
            return True
        return False

    wait_until(known, timeout_s=30, message=f"a coordinator for {transactional_id}")
    return found[-1]


def ids_on_two_brokers(cluster: Cluster) -> tuple[str, str, dict[int, PartitionState]]:
    """Two fresh transactional ids whose partitions are led by different brokers."""
    coordinator_of(cluster, f"warm-up-{uuid.uuid4()}")  # creates __transaction_state
    wait_until(
        lambda: all(state.leader is not None for state in state_partitions(cluster).values()),
        message="every __transaction_state partition led",
    )
    states = state_partitions(cluster)
    first = f"first-{uuid.uuid4()}"
    while True:
        second = f"second-{uuid.uuid4()}"
        if states[kafka_partition_for(second)].leader != states[kafka_partition_for(first)].leader:
            return first, second, states


def describe_on(cluster: Cluster, node: int, transactional_id: str) -> tuple[ErrorCode, str]:
    with WireClient(cluster.broker_address(node), timeout=10) as client:
        body = client.request_body(
            ApiKey.DESCRIBE_TRANSACTIONS, 0, transactional_ids=(transactional_id,)
        )
    (described,) = decode_describe_transactions(body)
    return described.error, described.state


def listed_on(cluster: Cluster, node: int) -> set[str]:
    with WireClient(cluster.broker_address(node), timeout=10) as client:
        response = client.request(
            ApiKey.LIST_TRANSACTIONS, 0, state_filters=(), producer_id_filters=()
        )
    assert response.error_code == ErrorCode.none
    return {entry.transactional_id for entry in response.transaction_states}


def transactional_producer(cluster: Cluster, transactional_id: str) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "transactional.id": transactional_id,
            "log_level": 0,
        }
    )
    producer.init_transactions(60)
    return producer


def commit_one(producer: Producer, topic: str, value: bytes) -> None:
    producer.begin_transaction()
    producer.produce(topic, value, partition=0)
    producer.commit_transaction(60)


def read_committed(cluster: Cluster, topic: str, expected: set[bytes]) -> set[bytes]:
    messages = consume_messages(
        cluster,
        topic,
        until=lambda messages: {m.value() for m in messages} >= expected,
        timeout_s=30,
        poll_s=0.5,
        **{"isolation.level": "read_committed"},
    )
    return {message.value() for message in messages}


def test_find_coordinator_names_the_leader_of_the_ids_hash_partition(cluster: Cluster) -> None:
    _first, _second, states = ids_on_two_brokers(cluster)
    assert len(states) == PARTITIONS
    with pytest.raises(ClusterError):
        cluster.describe_partition(TRANSACTION_STATE, PARTITIONS)
    ids = [f"hashed-{number}" for number in range(40)]
    answers = {
        transactional_id: coordinator_of(cluster, transactional_id) for transactional_id in ids
    }
    states = state_partitions(cluster)
    for transactional_id, node in answers.items():
        assert node == states[kafka_partition_for(transactional_id)].leader, transactional_id
    assert len(set(answers.values())) == 3, "40 ids over 50 partitions on 3 brokers"


def test_transactions_through_coordinators_on_two_brokers_then_one_is_killed(
    cluster: Cluster,
) -> None:
    first, second, _states = ids_on_two_brokers(cluster)
    first_coordinator = coordinator_of(cluster, first)
    second_coordinator = coordinator_of(cluster, second)
    assert first_coordinator != second_coordinator
    topic = f"two-coordinators-{uuid.uuid4().hex[:8]}"
    create_replicated_topic(cluster, topic, 1)
    cluster.wait_for_isr(topic, 0, 3)
    producers = {first: transactional_producer(cluster, first)}
    producers[second] = transactional_producer(cluster, second)
    commit_one(producers[first], topic, b"first-1")
    commit_one(producers[second], topic, b"second-1")
    assert read_committed(cluster, topic, {b"first-1", b"second-1"}) >= {b"first-1", b"second-1"}

    # Each id is described by its own coordinator only; each broker lists its own ids.
    for transactional_id, coordinator in ((first, first_coordinator), (second, second_coordinator)):
        assert describe_on(cluster, coordinator, transactional_id) == (
            ErrorCode.none,
            "CompleteCommit",
        )
        for other in cluster.node_ids:
            if other != coordinator:
                assert describe_on(cluster, other, transactional_id)[0] == (
                    ErrorCode.not_coordinator
                )
    assert first in listed_on(cluster, first_coordinator)
    assert first not in listed_on(cluster, second_coordinator)
    assert second in listed_on(cluster, second_coordinator)

    # Kill the first id's coordinator: only the partitions it led move.
    before = state_partitions(cluster)
    moved = {index for index, state in before.items() if state.leader == first_coordinator}
    assert kafka_partition_for(first) in moved
    assert kafka_partition_for(second) not in moved
    cluster.kill(first_coordinator)
    try:
        wait_until(
            lambda: all(
                cluster.leader_of(TRANSACTION_STATE, index) not in (None, first_coordinator)
                for index in moved
            ),
            timeout_s=SESSION_TIMEOUT_MS / 1000 + 20,
            message="new leaders for the killed broker's partitions",
        )
        after = state_partitions(cluster)
        for index, state in before.items():
            if index in moved:
                assert after[index].leader != first_coordinator
                assert after[index].leader_epoch > state.leader_epoch
            else:
                assert (after[index].leader, after[index].leader_epoch) == (
                    state.leader,
                    state.leader_epoch,
                ), f"{TRANSACTION_STATE}-{index} moved"
        assert coordinator_of(cluster, second) == second_coordinator
        successor = coordinator_of(cluster, first, avoid=first_coordinator)
        assert successor == after[kafka_partition_for(first)].leader
        # Both producers go on: the first finds its new coordinator, which loaded the id.
        commit_one(producers[second], topic, b"second-2")
        commit_one(producers[first], topic, b"first-2")
        wait_until(
            lambda: describe_on(cluster, successor, first) == (ErrorCode.none, "CompleteCommit"),
            message="the first id described by its new coordinator",
        )
        expected = {b"first-1", b"second-1", b"first-2", b"second-2"}
        assert read_committed(cluster, topic, expected) >= expected
    finally:
        for producer in producers.values():
            producer.flush(5)
        cluster.restart(first_coordinator)
        cluster.wait_for_brokers(cluster.node_ids, timeout_s=SESSION_TIMEOUT_MS / 1000 + 20)
