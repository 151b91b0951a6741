"""Group APIs over the raw protocol: Kafka's error codes for bad input, and nothing changes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from raw_client import RawClient, child, commit, committed, request

from odradek.broker.server import Broker
from odradek.protocol.api_keys import ApiKey

pytestmark = pytest.mark.timeout(60)

CONSUMER_METADATA = b"\x00\x00\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x00"  # v0, topics ["t"]


@pytest.fixture
def client(odradek_broker: Broker) -> Any:
    with RawClient(odradek_broker.bootstrap_servers) as raw:
        yield raw


def create_topic(client: RawClient, name: str, partitions: int) -> None:
    topic = child(
        ApiKey.CREATE_TOPICS,
        5,
        "CreatableTopic",
        name=name,
        num_partitions=partitions,
        replication_factor=1,
        assignments=(),
        configs=(),
    )
    response = client.request(
        request(ApiKey.CREATE_TOPICS, 5, topics=(topic,), timeout=5000, validate_only=False)
    )
    assert response.topics[0].error_code == ErrorCode.none


def join(
    client: RawClient,
    group: str,
    member_id: str = "",
    version: int = 5,
    session_timeout: int = 10_000,
    instance_id: str | None = None,
) -> Any:
    protocol = child(
        ApiKey.JOIN_GROUP,
        version,
        "JoinGroupRequestProtocol",
        name="range",
        metadata=CONSUMER_METADATA,
    )
    return client.request(
        request(
            ApiKey.JOIN_GROUP,
            version,
            group_id=group,
            session_timeout=session_timeout,
            rebalance_timeout=10_000,
            member_id=member_id,
            group_instance_id=instance_id,
            protocol_type="consumer",
            protocols=(protocol,),
        )
    )


def sync(client: RawClient, group: str, generation: int, member_id: str, assignment: bytes) -> Any:
    item = child(
        ApiKey.SYNC_GROUP,
        3,
        "SyncGroupRequestAssignment",
        member_id=member_id,
        assignment=assignment,
    )
    return client.request(
        request(
            ApiKey.SYNC_GROUP,
            3,
            group_id=group,
            generation_id=generation,
            member_id=member_id,
            group_instance_id=None,
            assignments=(item,),
        )
    )


def test_find_coordinator_batched_keys_and_transaction_type(
    client: RawClient, odradek_broker: Broker
) -> None:
    response = client.request(
        request(ApiKey.FIND_COORDINATOR, 4, key_type=0, coordinator_keys=("a", "b"))
    )
    assert [c.key for c in response.coordinators] == ["a", "b"]
    assert all(c.error_code == ErrorCode.none for c in response.coordinators)
    assert response.coordinators[0].port == odradek_broker.port
    old = client.request(request(ApiKey.FIND_COORDINATOR, 0, key="a"))
    assert (old.error_code, old.port) == (ErrorCode.none, odradek_broker.port)
    txn = client.request(request(ApiKey.FIND_COORDINATOR, 3, key="tx", key_type=1))
    assert (txn.error_code, txn.port) == (ErrorCode.none, odradek_broker.port)


def test_two_step_join_sync_heartbeat_and_fencing(client: RawClient) -> None:
    first = join(client, "g")
    assert first.error_code == ErrorCode.member_id_required
    member_id = first.member_id
    joined = join(client, "g", member_id)
    assert joined.error_code == ErrorCode.none
    assert joined.leader == member_id
    assert joined.generation_id == 1
    assert [m.member_id for m in joined.members] == [member_id]
    synced = sync(client, "g", 1, member_id, b"assignment")
    assert (synced.error_code, synced.assignment) == (ErrorCode.none, b"assignment")

    def heartbeat(generation: int, member: str) -> ErrorCode:
        response = client.request(
            request(
                ApiKey.HEARTBEAT,
                4,
                group_id="g",
                generation_id=generation,
                member_id=member,
                group_instance_id=None,
            )
        )
        return ErrorCode(response.error_code)

    assert heartbeat(1, member_id) == ErrorCode.none
    assert heartbeat(0, member_id) == ErrorCode.illegal_generation
    assert heartbeat(1, "nobody") == ErrorCode.unknown_member_id
    assert sync(client, "g", 7, member_id, b"").error_code == ErrorCode.illegal_generation
    # Old versions have no MEMBER_ID_REQUIRED step.
    assert join(client, "g2", version=3).error_code == ErrorCode.none


def test_bad_commits_get_kafka_errors_and_change_nothing(client: RawClient) -> None:
    create_topic(client, "t", 2)
    member_id = join(client, "g").member_id
    joined = join(client, "g", member_id)
    sync(client, "g", joined.generation_id, member_id, b"")
    assert commit(client, "g", "t", 0, 5, joined.generation_id, member_id) == ErrorCode.none
    assert committed(client, "g", "t", 0) == 5

    bad = [
        (("t", 9, 6, joined.generation_id, member_id), ErrorCode.unknown_topic_or_partition),
        (("missing", 0, 6, joined.generation_id, member_id), ErrorCode.unknown_topic_or_partition),
        (("t", 0, 6, joined.generation_id + 1, member_id), ErrorCode.illegal_generation),
        (("t", 0, 6, joined.generation_id, "stranger"), ErrorCode.unknown_member_id),
        (("t", 0, 6, -1, ""), ErrorCode.unknown_member_id),
    ]
    for (topic, partition, offset, generation, member), expected in bad:
        assert commit(client, "g", topic, partition, offset, generation, member) == expected
    too_large = commit(client, "g", "t", 0, 6, joined.generation_id, member_id, "x" * 4097)
    assert too_large == ErrorCode.offset_metadata_too_large
    assert committed(client, "g", "t", 0) == 5
    assert committed(client, "g", "t", 1) == -1
    assert committed(client, "g", "missing", 0) == -1
    # A commit to a group that does not exist, with a generation, is refused too.
    assert commit(client, "nogroup", "t", 0, 1, 3, "m") == ErrorCode.illegal_generation
    assert committed(client, "nogroup", "t", 0) == -1
    # exactly 4096 bytes of metadata is fine
    assert commit(client, "g", "t", 0, 7, joined.generation_id, member_id, "x" * 4096) == (
        ErrorCode.none
    )


def test_commit_metadata_size_counts_utf16_code_units_as_kafka(client: RawClient) -> None:
    # Kafka compares String.length() with offset.metadata.max.bytes (4096): UTF-16 code units,
    # not UTF-8 bytes, and a character outside the BMP counts twice.
    create_topic(client, "utf16", 1)
    two_bytes_each = "\u00e9" * 4096  # 8192 bytes of UTF-8, 4096 code units
    assert commit(client, "utf16-group", "utf16", 0, 3, metadata=two_bytes_each) == ErrorCode.none
    assert committed(client, "utf16-group", "utf16", 0) == 3
    astral = "\U0001f600" * 2049  # 2049 characters, 4098 code units
    assert (
        commit(client, "utf16-group", "utf16", 0, 4, metadata=astral)
        == ErrorCode.offset_metadata_too_large
    )
    assert committed(client, "utf16-group", "utf16", 0) == 3


def commit_many(
    client: RawClient, group: str, topic: str, offsets: dict[int, int], metadata: str
) -> dict[int, ErrorCode]:
    version = 8
    parts = tuple(
        child(
            ApiKey.OFFSET_COMMIT,
            version,
            "OffsetCommitRequestPartition",
            partition_index=partition,
            committed_offset=offset,
            committed_leader_epoch=-1,
            committed_metadata=metadata,
        )
        for partition, offset in offsets.items()
    )
    topic_entry = child(
        ApiKey.OFFSET_COMMIT, version, "OffsetCommitRequestTopic", name=topic, partitions=parts
    )
    response = client.request(
        request(
            ApiKey.OFFSET_COMMIT,
            version,
            group_id=group,
            generation_id_or_member_epoch=-1,
            member_id="",
            group_instance_id=None,
            topics=(topic_entry,),
        )
    )
    return {
        partition.partition_index: ErrorCode(partition.error_code)
        for partition in response.topics[0].partitions
    }


def test_commits_the_offsets_topic_cannot_hold_are_unknown_server_error(tmp_path: Path) -> None:
    # Kafka 4's group coordinator answers a commit it cannot write with UNKNOWN_SERVER_ERROR on
    # every partition (CoordinatorOperationExceptionHelper; INVALID_COMMIT_OFFSET_SIZE was the
    # removed coordinator's answer): an append larger than __consumer_offsets' max.message.bytes,
    # or a metadata string longer than an offset record holds (32767 bytes).
    config = {"offset.metadata.max.bytes": "100000"}
    with (
        Broker(data_dir=tmp_path, config=config) as broker,
        RawClient(broker.bootstrap_servers) as raw,
    ):
        create_topic(raw, "big-metadata", 40)
        assert commit(raw, "big", "big-metadata", 0, 1) == ErrorCode.none
        too_long = commit(raw, "big", "big-metadata", 0, 2, metadata="m" * 40_000)
        assert too_long == ErrorCode.unknown_server_error
        # 40 records of 30 000 bytes: more than the topic's 1 MiB max.message.bytes.
        every = dict.fromkeys(range(40), 3)
        too_large = commit_many(raw, "big", "big-metadata", every, "m" * 30_000)
        assert set(too_large.values()) == {ErrorCode.unknown_server_error}
        assert committed(raw, "big", "big-metadata", 0) == 1
        assert committed(raw, "big", "big-metadata", 1) == -1
        # What fits is still committed.
        assert commit_many(raw, "big", "big-metadata", {0: 4, 1: 4}, "m" * 30_000) == {
            0: ErrorCode.none,
            1: ErrorCode.none,
        }
        assert committed(raw, "big", "big-metadata", 1) == 4


def test_simple_commits_describe_list_and_delete(client: RawClient) -> None:
    create_topic(client, "t", 1)
    assert commit(client, "simple", "t", 0, 3) == ErrorCode.none
    member_id = join(client, "busy").member_id
    join(client, "busy", member_id)

    listed = client.request(request(ApiKey.LIST_GROUPS, 5, states_filter=(), types_filter=()))
    by_id = {group.group_id: group for group in listed.groups}
    assert by_id["simple"].group_state == "Empty"
    assert by_id["busy"].group_state == "CompletingRebalance"
    assert by_id["busy"].group_type == "classic"
    only_empty = client.request(request(ApiKey.LIST_GROUPS, 4, states_filter=("empty",)))
    assert [group.group_id for group in only_empty.groups] == ["simple"]

    described = client.request(
        request(
            ApiKey.DESCRIBE_GROUPS, 5, groups=("busy", "nope"), include_authorized_operations=False
        )
    )
    assert described.groups[0].group_state == "CompletingRebalance"
    assert described.groups[0].members[0].member_id == member_id
    assert (described.groups[1].error_code, described.groups[1].group_state) == (
        ErrorCode.none,
        "Dead",
    )
    v6 = client.request(
        request(ApiKey.DESCRIBE_GROUPS, 6, groups=("nope",), include_authorized_operations=False)
    )
    assert v6.groups[0].error_code == ErrorCode.group_id_not_found

    deleted = client.request(
        request(ApiKey.DELETE_GROUPS, 2, groups_names=("simple", "busy", "nope"))
    )
    errors = {result.group_id: result.error_code for result in deleted.results}
    assert errors == {
        "simple": ErrorCode.none,
        "busy": ErrorCode.non_empty_group,
        "nope": ErrorCode.group_id_not_found,
    }
    assert committed(client, "simple", "t", 0) == -1


def test_offset_fetch_multi_group_and_offset_delete(client: RawClient) -> None:
    create_topic(client, "t", 2)
    assert commit(client, "a", "t", 0, 10) == ErrorCode.none
    assert commit(client, "b", "t", 1, 20) == ErrorCode.none
    groups = (
        child(ApiKey.OFFSET_FETCH, 8, "OffsetFetchRequestGroup", group_id="a", topics=None),
        child(ApiKey.OFFSET_FETCH, 8, "OffsetFetchRequestGroup", group_id="b", topics=None),
    )
    response = client.request(request(ApiKey.OFFSET_FETCH, 8, groups=groups, require_stable=False))
    found = {
        (group.group_id, topic.name, partition.partition_index): partition.committed_offset
        for group in response.groups
        for topic in group.topics
        for partition in topic.partitions
    }
    assert found == {("a", "t", 0): 10, ("b", "t", 1): 20}

    partition = child(ApiKey.OFFSET_DELETE, 0, "OffsetDeleteRequestPartition", partition_index=0)
    topic = child(
        ApiKey.OFFSET_DELETE, 0, "OffsetDeleteRequestTopic", name="t", partitions=(partition,)
    )
    deleted = client.request(request(ApiKey.OFFSET_DELETE, 0, group_id="a", topics=(topic,)))
    assert deleted.error_code == ErrorCode.none
    assert deleted.topics[0].partitions[0].error_code == ErrorCode.none
    assert committed(client, "a", "t", 0) == -1
    missing = client.request(request(ApiKey.OFFSET_DELETE, 0, group_id="zzz", topics=(topic,)))
    assert missing.error_code == ErrorCode.group_id_not_found


def test_batch_leave_and_session_expiry(client: RawClient, odradek_broker: Broker) -> None:
    # A member that never heartbeats is removed after its session timeout.
    member_id = join(client, "lazy", session_timeout=1000).member_id
    joined = join(client, "lazy", member_id, session_timeout=1000)
    assert sync(client, "lazy", joined.generation_id, member_id, b"").error_code == ErrorCode.none
    deadline = time.monotonic() + 10
    state = ""
    while time.monotonic() < deadline:
        described = client.request(
            request(
                ApiKey.DESCRIBE_GROUPS, 5, groups=("lazy",), include_authorized_operations=False
            )
        )
        state = described.groups[0].group_state
        if state == "Empty":
            break
        time.sleep(0.2)
    assert state == "Empty"

    # Batch leave by instance id (v3+), with per-member errors.
    static = join(client, "s", version=5, instance_id="i-1")
    assert static.error_code == ErrorCode.none
    identity = child(ApiKey.LEAVE_GROUP, 5, "MemberIdentity", member_id="", group_instance_id="i-1")
    stranger = child(ApiKey.LEAVE_GROUP, 5, "MemberIdentity", member_id="x", group_instance_id=None)
    left = client.request(
        request(ApiKey.LEAVE_GROUP, 5, group_id="s", members=(identity, stranger))
    )
    assert left.error_code == ErrorCode.none
    assert [m.error_code for m in left.members] == [ErrorCode.none, ErrorCode.unknown_member_id]


@pytest.mark.parametrize("version", [5, 9])
def test_a_32k_instance_id_still_gets_an_encodable_member_id(
    client: RawClient, version: int
) -> None:
    """A static member's id is `<group.instance.id>-<uuid>`; with a 32,767-byte instance id it
    would not fit a protocol STRING. The broker answered with a traceback and a closed
    connection; now the prefix is shortened and the member joins."""
    joined = join(client, f"long-member-{version}", version=version, instance_id="i" * 32_767)
    assert joined.error_code == ErrorCode.none
    assert len(joined.member_id.encode()) <= 32_767
    assert joined.member_id.startswith("i" * 1000)
    # The same connection still serves requests.
    again = join(client, f"after-{version}", version=version, instance_id="short")
    assert again.error_code == ErrorCode.none
