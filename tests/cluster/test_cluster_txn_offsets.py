"""Offsets in transactions across brokers (a controller and three brokers, RF=3 with
min.insync.replicas=2 everywhere), with the raw protocol so each step is exact (KIP-98, KIP-447):

- AddOffsetsToTxn goes to the transaction coordinator, TxnOffsetCommit to the group coordinator
  — the leader of the group's `__consumer_offsets` partition, on ANOTHER broker;
- until the COMMIT marker reaches that partition, OffsetFetch with require_stable answers
  UNSTABLE_OFFSET_COMMIT and a plain OffsetFetch the previous offset; once it has, both give the
  transaction's offset; after an ABORT marker the previous offset stays;
- the same when the partition's leader changes in between: killed (SIGKILL) between
  TxnOffsetCommit and EndTxn — the new leader loads the pending offsets from the replicated log
  and the marker makes them visible there; and (marked slow) killed after EndTxn started — the
  coordinator, unable to reach the paused leader, sends the marker to the new leader.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import click
import pytest
from cluster_helpers import (
    GROUP_KEY_TYPE,
    TRANSACTION_KEY_TYPE,
    create_replicated_topic,
    find_coordinator,
    wait_until,
)
from kio.schema.errors import ErrorCode

from odradek.cli.wire import WireClient, decode_describe_transactions
from odradek.cluster import Cluster
from odradek.protocol.api_keys import ApiKey

pytestmark = pytest.mark.timeout(180)

RETRIABLE = {
    ErrorCode.concurrent_transactions,
    ErrorCode.coordinator_load_in_progress,
    ErrorCode.coordinator_not_available,
    ErrorCode.not_coordinator,
    ErrorCode.not_enough_replicas,
    ErrorCode.request_timed_out,
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3,
        data_dir=tmp_path_factory.mktemp("txn-offsets"),
        log_level="INFO",
        config={
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "replica.lag.time.max.ms": "1500",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.num.partitions": "3",
            "group.initial.rebalance.delay.ms": "0",
        },
    ) as running:
        yield running


class Transaction:
    """One transactional.id's raw requests: to its coordinator, and to its group's."""

    def __init__(self, cluster: Cluster, topic: str) -> None:
        self.cluster = cluster
        self.topic = topic
        self.transactional_id = f"offsets-{uuid.uuid4()}"
        self.coordinator = find_coordinator(cluster, self.transactional_id, TRANSACTION_KEY_TYPE)
        # A group whose coordinator is another broker than the transaction coordinator.
        for attempt in range(100):
            group = f"offsets-group-{uuid.uuid4().hex[:8]}-{attempt}"
            group_coordinator = find_coordinator(cluster, group, GROUP_KEY_TYPE)
            if group_coordinator != self.coordinator:
                break
        self.group, self.group_coordinator = group, group_coordinator
        assert self.group_coordinator != self.coordinator
        response = self.retrying(
            self.coordinator,
            ApiKey.INIT_PRODUCER_ID,
            4,
            transactional_id=self.transactional_id,
            transaction_timeout=60_000,
            producer_id=-1,
            producer_epoch=-1,
        )
        assert response.error_code == ErrorCode.none
        self.producer = (int(response.producer_id), int(response.producer_epoch))

    def retrying(self, node: int, api_key: int, version: int, **fields: Any) -> Any:
        deadline = time.monotonic() + 30
        while True:
            with WireClient(self.cluster.broker_address(node), timeout=15) as client:
                response = client.request(api_key, version, **fields)
            if ErrorCode(response.error_code) not in RETRIABLE or time.monotonic() > deadline:
                return response
            time.sleep(0.2)

    def add_offsets(self) -> ErrorCode:
        return ErrorCode(
            self.retrying(
                self.coordinator,
                ApiKey.ADD_OFFSETS_TO_TXN,
                3,
                transactional_id=self.transactional_id,
                producer_id=self.producer[0],
                producer_epoch=self.producer[1],
                group_id=self.group,
            ).error_code
        )

    def commit_offset(self, offset: int) -> ErrorCode:
        """TxnOffsetCommit v3 to the group coordinator (no group membership: generation -1)."""
        with WireClient(self.cluster.broker_address(self.group_coordinator), timeout=15) as client:
            partition = client.build(
                ApiKey.TXN_OFFSET_COMMIT,
                3,
                "TxnOffsetCommitRequestPartition",
                partition_index=0,
                committed_offset=offset,
                committed_leader_epoch=-1,
                committed_metadata="",
            )
            topic = client.build(
                ApiKey.TXN_OFFSET_COMMIT,
                3,
                "TxnOffsetCommitRequestTopic",
                name=self.topic,
                partitions=(partition,),
            )
            response = client.request(
                ApiKey.TXN_OFFSET_COMMIT,
                3,
                transactional_id=self.transactional_id,
                group_id=self.group,
                producer_id=self.producer[0],
                producer_epoch=self.producer[1],
                generation_id=-1,
                member_id="",
                group_instance_id=None,
                topics=(topic,),
            )
        return ErrorCode(response.topics[0].partitions[0].error_code)

    def end(self, commit: bool) -> ErrorCode:
        return ErrorCode(
            self.retrying(
                self.coordinator,
                ApiKey.END_TXN,
                3,
                transactional_id=self.transactional_id,
                producer_id=self.producer[0],
                producer_epoch=self.producer[1],
                committed=commit,
            ).error_code
        )

    def fetch(self, require_stable: bool, node: int | None = None) -> tuple[int, ErrorCode]:
        """OffsetFetch v7 from the group coordinator (or `node`): (offset, partition error)."""
        target = self.group_coordinator if node is None else node
        with WireClient(self.cluster.broker_address(target), timeout=10) as client:
            topic = client.build(
                ApiKey.OFFSET_FETCH,
                7,
                "OffsetFetchRequestTopic",
                name=self.topic,
                partition_indexes=(0,),
            )
            response = client.request(
                ApiKey.OFFSET_FETCH,
                7,
                group_id=self.group,
                topics=(topic,),
                require_stable=require_stable,
            )
        assert response.error_code == ErrorCode.none, response
        (partition,) = response.topics[0].partitions
        return int(partition.committed_offset), ErrorCode(partition.error_code)

    def state(self) -> str | None:
        try:
            with WireClient(self.cluster.broker_address(self.coordinator), timeout=10) as client:
                body = client.request_body(
                    ApiKey.DESCRIBE_TRANSACTIONS, 0, transactional_ids=(self.transactional_id,)
                )
        except (OSError, click.ClickException):
            return None
        (described,) = decode_describe_transactions(body)
        return described.state if described.error == ErrorCode.none else None

    def new_group_coordinator(self) -> int:
        """After the group coordinator died: wait for the next one and use it."""
        killed = self.group_coordinator
        self.group_coordinator = find_coordinator(
            self.cluster, self.group, GROUP_KEY_TYPE, avoid=killed
        )
        return self.group_coordinator


def stable_fetch(transaction: Transaction) -> tuple[int, ErrorCode]:
    """OffsetFetch require_stable, asked again while the coordinator is loading."""
    answers: list[tuple[int, ErrorCode]] = []

    def loaded() -> bool:
        try:
            answers.append(transaction.fetch(require_stable=True))
        except (OSError, click.ClickException, AssertionError):
            return False
        return answers[-1][1] not in RETRIABLE

    wait_until(loaded, timeout_s=30, message="an OffsetFetch answer from the group coordinator")
    return answers[-1]


@pytest.fixture
def topic(cluster: Cluster) -> str:
    name = f"offsets-in-{uuid.uuid4().hex[:8]}"
    create_replicated_topic(cluster, name, 1)
    cluster.wait_for_isr(name, 0, 3)
    return name


def test_txn_offsets_on_another_broker_become_visible_with_the_commit_marker(
    cluster: Cluster, topic: str
) -> None:
    transaction = Transaction(cluster, topic)
    assert transaction.add_offsets() == ErrorCode.none
    assert transaction.commit_offset(42) == ErrorCode.none
    assert transaction.fetch(require_stable=False) == (-1, ErrorCode.none)
    assert transaction.fetch(require_stable=True) == (-1, ErrorCode.unstable_offset_commit)
    assert transaction.end(commit=True) == ErrorCode.none
    assert transaction.fetch(require_stable=True) == (42, ErrorCode.none)
    assert transaction.fetch(require_stable=False) == (42, ErrorCode.none)

    # The next transaction's offsets are aborted: 42 stays, and is stable again.
    assert transaction.add_offsets() == ErrorCode.none
    assert transaction.commit_offset(99) == ErrorCode.none
    # Kafka's GroupMetadataManager answers INVALID_OFFSET (-1) with UNSTABLE_OFFSET_COMMIT.
    assert transaction.fetch(require_stable=True) == (-1, ErrorCode.unstable_offset_commit)
    assert transaction.fetch(require_stable=False) == (42, ErrorCode.none)
    assert transaction.end(commit=False) == ErrorCode.none
    assert transaction.fetch(require_stable=True) == (42, ErrorCode.none)


def test_txn_offsets_survive_a_group_coordinator_killed_before_end_txn(
    cluster: Cluster, topic: str
) -> None:
    transaction = Transaction(cluster, topic)
    assert transaction.add_offsets() == ErrorCode.none
    assert transaction.commit_offset(42) == ErrorCode.none
    killed = transaction.group_coordinator
    cluster.kill(killed)
    try:
        successor = transaction.new_group_coordinator()
        assert successor != killed
        # The new leader loaded the pending offsets from the log: still not visible.
        assert stable_fetch(transaction) == (-1, ErrorCode.unstable_offset_commit)
        assert transaction.fetch(require_stable=False) == (-1, ErrorCode.none)
        assert transaction.end(commit=True) == ErrorCode.none
        assert stable_fetch(transaction) == (42, ErrorCode.none)
    finally:
        cluster.restart(killed)
        cluster.wait_for_brokers(cluster.node_ids, timeout_s=40)


@pytest.mark.soak
def test_txn_offsets_reach_the_new_leader_when_the_group_coordinator_dies_during_end_txn(
    cluster: Cluster, topic: str
) -> None:
    transaction = Transaction(cluster, topic)
    assert transaction.add_offsets() == ErrorCode.none
    assert transaction.commit_offset(42) == ErrorCode.none
    stuck = transaction.group_coordinator
    cluster.pause(stuck)  # the COMMIT marker cannot reach it
    try:
        try:
            with WireClient(cluster.broker_address(transaction.coordinator), timeout=3) as client:
                client.request(
                    ApiKey.END_TXN,
                    3,
                    transactional_id=transaction.transactional_id,
                    producer_id=transaction.producer[0],
                    producer_epoch=transaction.producer[1],
                    committed=True,
                )
        except click.ClickException:
            pass  # the broker may answer EndTxn only once the markers are written
        wait_until(
            lambda: transaction.state() in ("PrepareCommit", "CompleteCommit"),
            message="the commit decided",
        )
        cluster.kill(stuck)
        transaction.new_group_coordinator()
        wait_until(
            lambda: transaction.state() == "CompleteCommit",
            timeout_s=40,
            message="the COMMIT marker written to the new leader",
        )
        assert stable_fetch(transaction) == (42, ErrorCode.none)
        assert transaction.fetch(require_stable=False) == (42, ErrorCode.none)
    finally:
        if cluster.is_paused(stuck):
            cluster.resume(stuck)
        if not cluster.is_running(stuck):
            cluster.restart(stuck)
        cluster.wait_for_brokers(cluster.node_ids, timeout_s=40)
    # The restarted broker, a follower now, changes nothing.
    assert stable_fetch(transaction) == (42, ErrorCode.none)
