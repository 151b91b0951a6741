"""The protocol sweep of tests/broker/test_every_api_version.py on a cluster (Kafka 4's model: one
controller, three brokers registered with it), where requests route by role.

The topic `sweep` has three replicas and min.insync.replicas=2; its leader is L. Every group and
transactional id the sweep names is chosen so that its coordinator (the leader of its
`__consumer_offsets` / `__transaction_state` partition) is another broker, C; the third broker,
B, is neither. Every advertised (api, version) gets the sweep's request twice:

- to B: Kafka's shape (correlation id, header version, a body kio decodes at that version to the
  last byte, no unknown or UNKNOWN_SERVER_ERROR codes, the nonexistent topic's error), and
  Kafka's redirect errors: NOT_LEADER_OR_FOLLOWER for the partition's data (Produce with
  KIP-951's CurrentLeader and NodeEndpoints from v10; Fetch, with both from v16 as KafkaApis
  fills them; ListOffsets, OffsetForLeaderEpoch, DeleteRecords, WriteTxnMarkers),
  NOT_COORDINATOR for group and transaction requests, and admin requests answered as the
  controller decides (forwarded, KIP-590). DescribeProducers is answered by any replica
  (Partition.activeProducerState). Kafka would also serve a consumer's Fetch v11+ from a
  follower (KIP-392: FetchParams.fetchOnlyLeader is false once the request carries client
  metadata); Odradek sends every consumer to the leader, which every client follows;
- to the broker that owns the request (L for partitions and admin, C for coordinators): the
  single broker's success-shaped answers.

Metadata and DescribeCluster at every version are compared across the three brokers: the live
brokers, a controller id that is a live broker (clients cannot reach a KRaft controller, so
Kafka's KRaftMetadataCache names a random alive broker), and the partition's leader, leader epoch
(v7+), replicas, ISR and offline replicas (v5+).

A node's log (WARNING and above) must show no error and no traceback while a request runs.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import (
    GROUP_KEY_TYPE,
    TRANSACTION_KEY_TYPE,
    create_replicated_topic,
    describe_topic,
    find_coordinator,
    wait_until,
)
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.errors import ErrorCode
from raw_client import RawClient, commit, encode_body, request_of
from test_every_api_version import (
    ADVERTISED,
    COMMITTED_GROUP,
    EXISTING_TOPIC_ERRORS,
    LISTED,
    NO_TOPICS,
    SWEEP,
    TOPIC,
    Sweep,
    Target,
    build,
    decode_exactly,
    error_codes,
    exchange,
    item_errors,
    make_sweep,
    missing_topic_errors,
    topic_elements,
)
from test_protocol_edges import batch, produce_request

from odradek.cluster import Cluster
from odradek.coordinator.group.records import partition_for
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import request_type
from odradek.testing.pytest_plugin import cluster_test_config

pytestmark = pytest.mark.timeout(180)

#: A partition's data: only its leader reads or writes it.
PARTITION_APIS = frozenset(
    {
        ApiKey.PRODUCE,
        ApiKey.FETCH,
        ApiKey.LIST_OFFSETS,
        ApiKey.OFFSET_FOR_LEADER_EPOCH,
        ApiKey.DELETE_RECORDS,
        ApiKey.DESCRIBE_PRODUCERS,
        ApiKey.WRITE_TXN_MARKERS,
    }
)
#: Answered by the group's coordinator.
GROUP_APIS = frozenset(
    {
        ApiKey.OFFSET_COMMIT,
        ApiKey.OFFSET_FETCH,
        ApiKey.JOIN_GROUP,
        ApiKey.HEARTBEAT,
        ApiKey.LEAVE_GROUP,
        ApiKey.SYNC_GROUP,
        ApiKey.DESCRIBE_GROUPS,
        ApiKey.DELETE_GROUPS,
        ApiKey.TXN_OFFSET_COMMIT,
        ApiKey.OFFSET_DELETE,
        ApiKey.CONSUMER_GROUP_HEARTBEAT,
        ApiKey.CONSUMER_GROUP_DESCRIBE,
    }
)
#: Answered by the transactional id's coordinator.
TRANSACTION_APIS = frozenset(
    {
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ApiKey.ADD_OFFSETS_TO_TXN,
        ApiKey.END_TXN,
        ApiKey.DESCRIBE_TRANSACTIONS,
    }
)
#: Decided by the controller, whichever broker is asked (KIP-590 forwarding).
ADMIN_APIS = frozenset(
    {
        ApiKey.CREATE_TOPICS,
        ApiKey.DELETE_TOPICS,
        ApiKey.CREATE_PARTITIONS,
        ApiKey.ALTER_CONFIGS,
        ApiKey.INCREMENTAL_ALTER_CONFIGS,
        ApiKey.DESCRIBE_CONFIGS,
    }
)
#: Kafka checks topics before it asks the coordinator: a nonexistent one is
#: UNKNOWN_TOPIC_OR_PARTITION on every broker (KafkaApis.handleOffsetCommitRequest,
#: handleTxnOffsetCommitRequest, handleAddPartitionsToTxnRequest).
TOPICS_CHECKED_FIRST = frozenset(
    {ApiKey.OFFSET_COMMIT, ApiKey.TXN_OFFSET_COMMIT, ApiKey.ADD_PARTITIONS_TO_TXN}
)
#: The topic elsewhere: its one replica is on L, so B holds none of it.
ELSEWHERE = "sweep-elsewhere"


@dataclasses.dataclass
class ClusterSweep(Sweep):
    """A sweep whose group and transactional id have the coordinator the test chose."""

    group_name: str = ""
    transactional_name: str = ""

    @property
    def group(self) -> str:
        return self.group_name

    @property
    def transactional_id(self) -> str:
        return self.transactional_name


@dataclasses.dataclass
class Layout:
    """The running cluster and who does what in it."""

    cluster: Cluster
    topic_id: uuid.UUID
    elsewhere_id: uuid.UUID
    elsewhere_epoch: int
    leader: int
    leader_epoch: int
    coordinator: int
    bystander: int
    committed_group: str
    #: Partition index -> leader of `__consumer_offsets` and of `__transaction_state`.
    offsets_leaders: dict[int, int]
    transaction_leaders: dict[int, int]

    def name_led_by_coordinator(self, prefix: str, transactional: bool) -> str:
        """`prefix`, or `prefix-N` for the first N, whose coordinator is `coordinator`."""
        leaders = self.transaction_leaders if transactional else self.offsets_leaders
        for attempt in range(1000):
            name = prefix if attempt == 0 else f"{prefix}-{attempt}"
            if leaders[partition_for(name, len(leaders))] == self.coordinator:
                return name
        raise AssertionError(f"no name for {prefix} lands on broker {self.coordinator}")


def _internal_leaders(cluster: Cluster, topic: str) -> dict[int, int]:
    described = describe_topic(cluster, topic)
    return {int(p.partition_index): int(p.leader_id) for p in described.partitions}


def _doomed(phase: str, version: int) -> str:
    return f"sweep-doomed-{phase}-v{version}"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    """Three brokers (no auto-creation, so a missing topic stays missing); `sweep` with three
    replicas holding one batch; `sweep-elsewhere` on its leader alone; a committed offset; both
    coordinator topics; a topic for each DeleteTopics version of each phase."""
    config = cluster_test_config({"auto.create.topics.enable": "false"})
    with Cluster(brokers=3, data_dir=tmp_path_factory.mktemp("cluster-sweep"), config=config) as (
        cluster
    ):
        create_replicated_topic(cluster, TOPIC, 1)
        cluster.wait_for_isr(TOPIC, 0, size=3, timeout_s=20)
        state = cluster.describe_partition(TOPIC, 0)
        leader = state.leader
        # Both coordinator topics exist once a coordinator is asked for.
        find_coordinator(cluster, "sweep-probe", GROUP_KEY_TYPE)
        find_coordinator(cluster, "sweep-probe", TRANSACTION_KEY_TYPE)
        offsets_leaders = _internal_leaders(cluster, "__consumer_offsets")
        transaction_leaders = _internal_leaders(cluster, "__transaction_state")
        coordinator = next(
            node
            for node in cluster.node_ids
            if node != leader
            and node in offsets_leaders.values()
            and node in transaction_leaders.values()
        )
        (bystander,) = set(cluster.node_ids) - {leader, coordinator}

        admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})
        low, high = ADVERTISED[ApiKey.DELETE_TOPICS]
        new_topics = [NewTopic(ELSEWHERE, num_partitions=1, replica_assignment=[[leader]])] + [
            NewTopic(_doomed(phase, version), num_partitions=1, replication_factor=1)
            for phase in ("bystander", "owner")
            for version in range(low, high + 1)
        ]
        for future in admin.create_topics(new_topics).values():
            future.result(15)

        layout = Layout(
            cluster=cluster,
            topic_id=describe_topic(cluster, TOPIC).topic_id,
            elsewhere_id=describe_topic(cluster, ELSEWHERE).topic_id,
            elsewhere_epoch=cluster.describe_partition(ELSEWHERE, 0).leader_epoch,
            leader=leader,
            leader_epoch=state.leader_epoch,
            coordinator=coordinator,
            bystander=bystander,
            committed_group="",
            offsets_leaders=offsets_leaders,
            transaction_leaders=transaction_leaders,
        )
        layout.committed_group = layout.name_led_by_coordinator(COMMITTED_GROUP, False)
        with RawClient(cluster.broker_address(leader)) as client:
            produced = client.request(produce_request(9, TOPIC, batch(3), acks=-1))
            assert produced.responses[0].partition_responses[0].error_code == ErrorCode.none
        with RawClient(cluster.broker_address(coordinator)) as client:
            wait_until(
                lambda: commit(client, layout.committed_group, TOPIC, 0, 1) == ErrorCode.none,
                message="a committed offset",
            )
        wait_until(lambda: _metadata_agrees(cluster), message="every broker's metadata agrees")
        yield layout


def _metadata_agrees(cluster: Cluster) -> bool:
    seen = {
        tuple(
            (p.leader_id, p.leader_epoch, p.replica_nodes, p.isr_nodes)
            for p in describe_topic(cluster, TOPIC, node).partitions
        )
        for node in cluster.node_ids
    }
    return len(seen) == 1


@pytest.fixture
def clean_logs(layout: Layout) -> Iterator[None]:
    """No node logs an error or a traceback while the test runs."""
    cluster = layout.cluster
    nodes = [cluster.controller_id, *cluster.node_ids]
    paths = {node: Path(cluster.log_path(node)) for node in nodes}
    sizes = {node: path.stat().st_size if path.exists() else 0 for node, path in paths.items()}
    yield
    bad = []
    for node, path in paths.items():
        if not path.exists():
            continue
        with path.open("rb") as log:
            log.seek(sizes[node])
            for line in log.read().decode(errors="replace").splitlines():
                if " ERROR " in line or " CRITICAL " in line or "Traceback" in line:
                    bad.append(f"node {node}: {line}")
    assert bad == []


# ---------------------------------------------------------------------------------------------
# Requests and answers.


def cluster_sweep(layout: Layout, api_key: int, version: int, phase: str) -> ClusterSweep:
    """The single broker's sweep with names for this cluster: groups and transactional ids
    coordinated by C, a nonexistent topic and a doomed topic of this phase."""
    base = make_sweep(api_key, version, layout.topic_id)
    values = {field.name: getattr(base, field.name) for field in dataclasses.fields(base)}
    values["missing"] = Target(f"sweep-missing-{phase}-{api_key}-v{version}", uuid.uuid4())
    if api_key == ApiKey.DELETE_TOPICS:
        values["existing"] = Target(_doomed(phase, version), uuid.UUID(int=0))
    overrides = dict(base.overrides)
    if overrides.get("group_id") == COMMITTED_GROUP:
        overrides["group_id"] = layout.committed_group
    if api_key == ApiKey.DESCRIBE_GROUPS:
        overrides["groups"] = lambda sweep: (sweep.group, layout.committed_group)
    if api_key == ApiKey.FIND_COORDINATOR:
        overrides["key"] = lambda sweep: sweep.group  # v0-3 name one key
    values["overrides"] = overrides
    prefix = f"sweep-{phase}-{api_key}-{version}"
    return ClusterSweep(
        **values,
        group_name=layout.name_led_by_coordinator(f"{prefix}-group", False),
        transactional_name=layout.name_led_by_coordinator(f"{prefix}-txn", True),
    )


def answer(address: str, sweep: Sweep) -> Any:
    """Send `sweep`'s request to `address`; its answer, checked for shape and for error codes
    Kafka never gives (UNKNOWN_SERVER_ERROR, codes outside Kafka's table)."""
    api_key, version = sweep.api_key, sweep.version
    request = build(request_type(api_key, version), sweep, None, {})
    correlation_id = 0x5EE9 + api_key * 100 + version
    with RawClient(address) as client:
        body = exchange(client, api_key, version, encode_body(request), correlation_id)
        response = decode_exactly(api_key, version, body)
        assert client.request(request_of(ApiKey.API_VERSIONS, 0)()).error_code == ErrorCode.none
    codes = list(error_codes(response))
    known = {int(code) for code in ErrorCode}
    assert [(path, code) for path, code in codes if code not in known] == []
    assert [(path, code) for path, code in codes if code == ErrorCode.unknown_server_error] == []
    return response


def check_topics(
    response: Any,
    sweep: Sweep,
    missing: set[ErrorCode],
    existing: set[ErrorCode] | None,
    mentioned: bool = True,
) -> None:
    """The nonexistent topic's errors are among `missing`, the existing topic's among
    `existing` (unchecked when None); with `mentioned` False an answer may leave both topics
    out (a group-level error)."""
    missing_elements = list(topic_elements(response, sweep.missing))
    if not mentioned and not missing_elements:
        return
    assert missing_elements, f"the answer does not mention the nonexistent topic: {response}"
    got = item_errors(missing_elements)
    assert got, f"no error code for the nonexistent topic: {missing_elements}"
    assert set(got) <= missing, f"nonexistent topic: {got}, Kafka gives {missing}"
    if existing is not None:
        existing_elements = list(topic_elements(response, sweep.existing))
        assert existing_elements, f"the answer does not mention the existing topic: {response}"
        got = item_errors(existing_elements)
        assert set(got) <= existing, f"existing topic: {got}, Kafka gives {existing}"


def coordinated(api_key: int) -> bool:
    return api_key in GROUP_APIS or api_key in TRANSACTION_APIS


def owner(layout: Layout, api_key: int) -> int:
    """The broker a request of `api_key` belongs to."""
    return layout.coordinator if coordinated(api_key) else layout.leader


# ---------------------------------------------------------------------------------------------
# The sweep on the cluster.


@pytest.mark.parametrize("node_index", [0, 1, 2])
def test_api_versions_lists_the_handler_table(layout: Layout, node_index: int) -> None:
    """The served ranges, with Produce listed from v0 as Kafka 4 lists it (KAFKA-18659)."""
    node = layout.cluster.node_ids[node_index]
    with RawClient(layout.cluster.broker_address(node)) as client:
        response = client.request(
            request_of(ApiKey.API_VERSIONS, 3)(
                client_software_name="sweep", client_software_version="1.0"
            )
        )
    advertised = {e.api_key: (e.min_version, e.max_version) for e in response.api_keys}
    assert advertised == LISTED


def _check_redirect(layout: Layout, sweep: Sweep, response: Any) -> None:
    """What B answers beyond the topics' error codes."""
    api_key, version = sweep.api_key, sweep.version
    if api_key == ApiKey.PRODUCE and version >= 10:
        (partition,) = next(topic_elements(response, sweep.existing)).partition_responses
        check_current_leader(layout, response, partition, layout.leader_epoch)
    if api_key == ApiKey.FETCH and version >= 12:
        (partition,) = next(topic_elements(response, sweep.existing)).partitions
        check_current_leader(
            layout, response, partition, layout.leader_epoch if version >= 16 else None
        )
    if coordinated(api_key) and api_key not in TOPICS_CHECKED_FIRST:
        codes = {code for _path, code in error_codes(response)}
        assert ErrorCode.not_coordinator in codes, response
    if api_key == ApiKey.FIND_COORDINATOR:
        nodes = (
            [response.node_id]
            if version < 4
            else [coordinator.node_id for coordinator in response.coordinators]
        )
        assert nodes == [layout.coordinator]


def check_current_leader(
    layout: Layout, response: Any, partition: Any, leader_epoch: int | None
) -> None:
    """KIP-951: a NOT_LEADER_OR_FOLLOWER partition names the leader and its epoch, and the
    response carries the leader's endpoint; with `leader_epoch` None (Fetch v12-15) Kafka
    leaves CurrentLeader unset (-1, -1) and sends no endpoint."""
    current = partition.current_leader
    if leader_epoch is None:
        assert (current.leader_id, current.leader_epoch) == (-1, -1)
        return
    assert (current.leader_id, current.leader_epoch) == (layout.leader, leader_epoch)
    endpoints = {(e.node_id, e.host, e.port) for e in response.node_endpoints}
    assert endpoints == {(layout.leader, *_host_port(layout.cluster.broker_address(layout.leader)))}


def _bystander_existing_errors(api_key: int, version: int) -> set[ErrorCode] | None:
    if api_key == ApiKey.DESCRIBE_PRODUCERS:
        # Any replica with the log answers (Kafka's Partition.activeProducerState).
        return {ErrorCode.none}
    if api_key in PARTITION_APIS:
        return {ErrorCode.not_leader_or_follower}
    if api_key == ApiKey.ADD_PARTITIONS_TO_TXN:
        return EXISTING_TOPIC_ERRORS[api_key]
    if coordinated(api_key):
        return {ErrorCode.not_coordinator}
    return EXISTING_TOPIC_ERRORS.get(api_key)


@pytest.mark.usefixtures("clean_logs")
@pytest.mark.parametrize(("api_key", "version"), SWEEP)
def test_every_api_version_to_a_bystander(layout: Layout, api_key: int, version: int) -> None:
    """To B, neither the partition's leader nor the coordinator."""
    sweep = cluster_sweep(layout, api_key, version, "bystander")
    response = answer(layout.cluster.broker_address(layout.bystander), sweep)
    if api_key not in NO_TOPICS:
        missing = missing_topic_errors(api_key, version)
        group_level = coordinated(api_key) and api_key not in TOPICS_CHECKED_FIRST
        if group_level:
            missing = missing | {ErrorCode.not_coordinator}
        check_topics(
            response,
            sweep,
            missing,
            _bystander_existing_errors(api_key, version),
            # OffsetFetch v2+ and OffsetDelete put NOT_COORDINATOR on the group alone
            # (OffsetFetchRequest / OffsetDeleteRequest.getErrorResponse).
            mentioned=not group_level,
        )
    _check_redirect(layout, sweep, response)


@pytest.mark.usefixtures("clean_logs")
@pytest.mark.parametrize(("api_key", "version"), SWEEP)
def test_every_api_version_to_its_owner(layout: Layout, api_key: int, version: int) -> None:
    """To L (partition and admin requests) or C (group and transaction requests)."""
    sweep = cluster_sweep(layout, api_key, version, "owner")
    response = answer(layout.cluster.broker_address(owner(layout, api_key)), sweep)
    if api_key not in NO_TOPICS:
        check_topics(
            response,
            sweep,
            missing_topic_errors(api_key, version),
            EXISTING_TOPIC_ERRORS.get(api_key),
        )
    codes = {code for _path, code in error_codes(response)}
    assert ErrorCode.not_coordinator not in codes
    assert ErrorCode.not_leader_or_follower not in codes


FETCH_VERSIONS = [
    pytest.param(version, id=f"FETCH-v{version}")
    for version in range(ADVERTISED[ApiKey.FETCH][0], ADVERTISED[ApiKey.FETCH][1] + 1)
]


@pytest.mark.usefixtures("clean_logs")
@pytest.mark.parametrize("version", FETCH_VERSIONS)
def test_fetch_from_a_broker_without_a_replica(layout: Layout, version: int) -> None:
    """B holds no replica of `sweep-elsewhere`: NOT_LEADER_OR_FOLLOWER at every version, and
    from v16 KIP-951's CurrentLeader and the leader's NodeEndpoint (KafkaApis fills both only
    from v16; CurrentLeader, in the schema from v12, stays -1 before)."""
    sweep = cluster_sweep(layout, ApiKey.FETCH, version, "elsewhere")
    sweep.existing = Target(ELSEWHERE, layout.elsewhere_id)
    response = answer(layout.cluster.broker_address(layout.bystander), sweep)
    check_topics(
        response,
        sweep,
        missing_topic_errors(ApiKey.FETCH, version),
        {ErrorCode.not_leader_or_follower},
    )
    (partition,) = next(topic_elements(response, sweep.existing)).partitions
    if version >= 12:
        check_current_leader(
            layout, response, partition, layout.elsewhere_epoch if version >= 16 else None
        )


# ---------------------------------------------------------------------------------------------
# What every broker says about the cluster.


def _endpoints(layout: Layout) -> set[tuple[int, str, int]]:
    cluster = layout.cluster
    return {(node, *_host_port(cluster.broker_address(node))) for node in cluster.node_ids}


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


METADATA_VERSIONS = [
    pytest.param(version, id=f"METADATA-v{version}")
    for version in range(ADVERTISED[ApiKey.METADATA][0], ADVERTISED[ApiKey.METADATA][1] + 1)
]


@pytest.mark.usefixtures("clean_logs")
@pytest.mark.parametrize("version", METADATA_VERSIONS)
def test_metadata_agrees_on_every_broker(layout: Layout, version: int) -> None:
    """Every broker lists the three live brokers, a live broker as the controller (v1+), the
    cluster id (v2+), and the same partition: leader, leader epoch (v7+), replicas, ISR,
    offline replicas (v5+), topic id (v10+)."""
    cluster = layout.cluster
    seen = []
    for node in cluster.node_ids:
        sweep = cluster_sweep(layout, ApiKey.METADATA, version, "metadata")
        response = answer(cluster.broker_address(node), sweep)
        assert {(b.node_id, b.host, b.port) for b in response.brokers} == _endpoints(layout)
        if version >= 1:
            assert response.controller_id in cluster.node_ids
        if version >= 2:
            assert response.cluster_id == cluster.cluster_id
        (topic,) = topic_elements(response, sweep.existing)
        assert topic.error_code == ErrorCode.none
        if version >= 1:
            assert topic.is_internal is False
        if version >= 10:
            assert topic.topic_id == layout.topic_id
        (partition,) = topic.partitions
        assert partition.error_code == ErrorCode.none
        assert partition.leader_id == layout.leader
        if version >= 7:
            assert partition.leader_epoch == layout.leader_epoch
        assert sorted(partition.replica_nodes) == cluster.node_ids
        assert sorted(partition.isr_nodes) == cluster.node_ids
        if version >= 5:
            assert partition.offline_replicas == ()
        seen.append(partition)
        (missing,) = topic_elements(response, sweep.missing)
        assert missing.error_code == ErrorCode.unknown_topic_or_partition
    assert all(partition == seen[0] for partition in seen)


DESCRIBE_CLUSTER_VERSIONS = [
    pytest.param(version, id=f"DESCRIBE_CLUSTER-v{version}")
    for version in range(
        ADVERTISED[ApiKey.DESCRIBE_CLUSTER][0], ADVERTISED[ApiKey.DESCRIBE_CLUSTER][1] + 1
    )
]


@pytest.mark.usefixtures("clean_logs")
@pytest.mark.parametrize("version", DESCRIBE_CLUSTER_VERSIONS)
def test_describe_cluster_agrees_on_every_broker(layout: Layout, version: int) -> None:
    """Every broker lists every live broker (unfenced, v2), the cluster id, and a live broker
    as the controller."""
    cluster = layout.cluster
    for node in cluster.node_ids:
        sweep = cluster_sweep(layout, ApiKey.DESCRIBE_CLUSTER, version, "describe")
        response = answer(cluster.broker_address(node), sweep)
        assert response.error_code == ErrorCode.none
        assert response.cluster_id == cluster.cluster_id
        assert response.controller_id in cluster.node_ids
        assert {(b.broker_id, b.host, b.port) for b in response.brokers} == _endpoints(layout)
        if version >= 1:
            assert response.endpoint_type == 1
        if version >= 2:
            assert [b.is_fenced for b in response.brokers] == [False] * len(cluster.node_ids)
