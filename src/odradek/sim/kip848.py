"""A KIP-848 consumer group member for the simulation, on aiokafka's connection machinery.

aiokafka speaks only the classic group protocol. This member adds what it lacks: the
ConsumerGroupHeartbeat loop (join with epoch 0, heartbeat at the interval the coordinator gives,
leave with epoch -1), assignment reconciliation (revoked partitions are committed then dropped,
new ones start from the group's committed offset), OffsetCommit v9 carrying the member id and
member epoch, and Metadata v12 to map the assignment's topic ids to names. Records are fetched by
an `AIOKafkaConsumer` without a group whose assignment the member sets (`assign`), so fetching,
isolation levels and aborted-transaction filtering stay aiokafka's own.

The request and response layouts follow Kafka's message definitions
(ConsumerGroupHeartbeatRequest/Response.json v0, OffsetCommitRequest/Response.json v9,
MetadataRequest/Response.json v12); the client behaviour follows KIP-848's
ConsumerMembershipManager (fenced or unknown member: drop the assignment without committing and
rejoin with epoch 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from io import BytesIO
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import ConnectionGroup, CoordinationType
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.protocol.abstract import AbstractType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int8,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

CONSUMER_GROUP_HEARTBEAT = 68
OFFSET_COMMIT = 8
METADATA = 3

# Error codes the member reacts to (Kafka's Errors).
NONE = 0
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
UNKNOWN_MEMBER_ID = 25
FENCED_MEMBER_EPOCH = 110
STALE_MEMBER_EPOCH = 113

LEAVE_EPOCH = -1


class Uuid(AbstractType[uuid.UUID]):  # type: ignore[misc]
    """A 16-byte UUID (Kafka's `uuid` type)."""

    @classmethod
    def encode(cls, value: uuid.UUID) -> bytes:
        return value.bytes

    @classmethod
    def decode(cls, data: BytesIO) -> uuid.UUID:
        return uuid.UUID(bytes=data.read(16))


class _NullableStruct:
    """A nullable struct field in a flexible version: an int8 marker (-1 null), then the
    struct."""

    def __init__(self, *fields: tuple[str, Any]) -> None:
        self.schema = Schema(*fields)

    def encode(self, value: Any) -> bytes:
        if value is None:
            marker: bytes = Int8.encode(-1)
            return marker
        encoded: bytes = Int8.encode(1) + self.schema.encode(value)
        return encoded

    def decode(self, data: BytesIO) -> Any:
        if Int8.decode(data) < 0:
            return None
        return self.schema.decode(data)

    def repr(self, value: Any) -> str:
        return "NULL" if value is None else self.schema.repr(value)


_TOPIC_PARTITIONS = CompactArray(
    ("topic_id", Uuid), ("partitions", CompactArray(Int32)), ("tags", TaggedFields)
)


class ConsumerGroupHeartbeatResponse_v0(Response):  # type: ignore[misc]  # noqa: N801 - aiokafka's naming
    API_KEY = CONSUMER_GROUP_HEARTBEAT
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", CompactString("utf-8")),
        ("member_id", CompactString("utf-8")),
        ("member_epoch", Int32),
        ("heartbeat_interval_ms", Int32),
        (
            "assignment",
            _NullableStruct(("topic_partitions", _TOPIC_PARTITIONS), ("tags", TaggedFields)),
        ),
        ("tags", TaggedFields),
    )


class ConsumerGroupHeartbeatRequest_v0(RequestStruct):  # type: ignore[misc]  # noqa: N801
    FLEXIBLE_VERSION = True
    API_KEY = CONSUMER_GROUP_HEARTBEAT
    API_VERSION = 0
    RESPONSE_TYPE = ConsumerGroupHeartbeatResponse_v0
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        ("member_id", CompactString("utf-8")),
        ("member_epoch", Int32),
        ("instance_id", CompactString("utf-8")),
        ("rack_id", CompactString("utf-8")),
        ("rebalance_timeout_ms", Int32),
        ("subscribed_topic_names", CompactArray(CompactString("utf-8"))),
        ("server_assignor", CompactString("utf-8")),
        ("topic_partitions", _TOPIC_PARTITIONS),
        ("tags", TaggedFields),
    )


class ConsumerGroupHeartbeatRequest(Request[ConsumerGroupHeartbeatRequest_v0]):  # type: ignore[misc]
    API_KEY = CONSUMER_GROUP_HEARTBEAT

    def __init__(self, *fields: Any) -> None:
        self._fields = fields

    def build(
        self, request_struct_class: type[ConsumerGroupHeartbeatRequest_v0]
    ) -> ConsumerGroupHeartbeatRequest_v0:
        return request_struct_class(*self._fields, {})


class OffsetCommitResponse_v9(Response):  # type: ignore[misc]  # noqa: N801
    API_KEY = OFFSET_COMMIT
    API_VERSION = 9
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32), ("error_code", Int16), ("tags", TaggedFields)
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class OffsetCommitRequest_v9(RequestStruct):  # type: ignore[misc]  # noqa: N801
    FLEXIBLE_VERSION = True
    API_KEY = OFFSET_COMMIT
    API_VERSION = 9
    RESPONSE_TYPE = OffsetCommitResponse_v9
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        ("generation_id_or_member_epoch", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("committed_offset", Int64),
                        ("committed_leader_epoch", Int32),
                        ("committed_metadata", CompactString("utf-8")),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class OffsetCommitRequest(Request[OffsetCommitRequest_v9]):  # type: ignore[misc]
    API_KEY = OFFSET_COMMIT

    def __init__(self, *fields: Any) -> None:
        self._fields = fields

    def build(self, request_struct_class: type[OffsetCommitRequest_v9]) -> OffsetCommitRequest_v9:
        return request_struct_class(*self._fields, {})


class MetadataResponse_v12(Response):  # type: ignore[misc]  # noqa: N801
    API_KEY = METADATA
    API_VERSION = 12
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            CompactArray(
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            CompactArray(
                ("error_code", Int16),
                ("name", CompactString("utf-8")),
                ("topic_id", Uuid),
                ("is_internal", Boolean),
                (
                    "partitions",
                    CompactArray(
                        ("error_code", Int16),
                        ("partition_index", Int32),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("replica_nodes", CompactArray(Int32)),
                        ("isr_nodes", CompactArray(Int32)),
                        ("offline_replicas", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("topic_authorized_operations", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class MetadataRequest_v12(RequestStruct):  # type: ignore[misc]  # noqa: N801
    FLEXIBLE_VERSION = True
    API_KEY = METADATA
    API_VERSION = 12
    RESPONSE_TYPE = MetadataResponse_v12
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(
                ("topic_id", Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields)
            ),
        ),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class MetadataRequest(Request[MetadataRequest_v12]):  # type: ignore[misc]
    API_KEY = METADATA

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[MetadataRequest_v12]) -> MetadataRequest_v12:
        return request_struct_class(
            [(uuid.UUID(int=0), name, {}) for name in self._topics], False, False, {}
        )


class ConsumerGroupMember:
    """One member of a KIP-848 consumer group subscribed to `topic`.

    `consumer` is an `AIOKafkaConsumer` started without a group: the member sets its assignment.
    `on_assigned(member_epoch, partitions)` hears of every assignment the member takes on, at the
    epoch the coordinator gave it (the checker keeps one owner per partition per epoch).
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        group_id: str,
        topic: str,
        on_assigned: Callable[[int, frozenset[int]], None],
        rebalance_timeout_ms: int = 10_000,
    ) -> None:
        self.consumer = consumer
        self.client: Any = consumer._client
        self.group_id = group_id
        self.topic = topic
        self.on_assigned = on_assigned
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.member_id = ""
        self.member_epoch = 0
        self.owned: frozenset[int] = frozenset()
        self.topic_id: uuid.UUID | None = None
        self.heartbeat_interval_s = 1.0
        self.joined = False
        # (member epoch, partitions, commit revoked ones first) from the last heartbeat, until
        # the consumer's task applies it.
        self.pending: tuple[int, frozenset[int], bool] | None = None

    # -- requests ----------------------------------------------------------------------------

    async def _coordinator(self) -> int:
        node_id: int = await self.client.coordinator_lookup(CoordinationType.GROUP, self.group_id)
        return node_id

    async def _send_to_coordinator(self, request: Request[Any]) -> Any:
        node_id = await self._coordinator()
        return await self.client.send(node_id, request, group=ConnectionGroup.COORDINATION)

    async def _topic_ids(self) -> dict[uuid.UUID, str]:
        node_id = self.client.get_random_node()
        response = await self.client.send(node_id, MetadataRequest([self.topic]))
        return {
            topic_id: name
            for error_code, name, topic_id, *_rest in response.topics
            if error_code == NONE
        }

    # -- the heartbeat loop ------------------------------------------------------------------

    async def run(self, keep_going: Callable[[], bool]) -> None:
        """Heartbeat until `keep_going()` is false (the caller then commits and leaves)."""
        while keep_going():
            if self.pending is not None and not self.joined:
                # Fenced: rejoin only once the consumer gave up what it held.
                await asyncio.sleep(0.05)
                continue
            try:
                await self.heartbeat()
            except (KafkaError, OSError):
                await asyncio.sleep(0.2)
                continue
            await asyncio.sleep(self.heartbeat_interval_s)

    async def heartbeat(self) -> None:
        """One ConsumerGroupHeartbeat: report what the member owns, note what comes back (the
        consumer's task applies it: `reconcile`)."""
        if self.topic_id is None:
            ids = {name: topic_id for topic_id, name in (await self._topic_ids()).items()}
            self.topic_id = ids.get(self.topic)
            if self.topic_id is None:
                return
        owned: list[tuple[uuid.UUID, list[int], dict[int, bytes]]] = (
            [(self.topic_id, sorted(self.owned), {})] if self.member_epoch > 0 else []
        )
        response = await self._send_to_coordinator(
            ConsumerGroupHeartbeatRequest(
                self.group_id,
                self.member_id,
                self.member_epoch,
                None,
                None,
                self.rebalance_timeout_ms,
                [self.topic],
                None,
                owned,
            )
        )
        error = response.error_code
        if error in (FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID):
            # Someone else may own these partitions now: they are lost (no commit), and the
            # member rejoins with epoch 0 once the consumer let them go.
            self.pending = (0, frozenset(), False)
            self.member_id, self.member_epoch, self.joined = "", 0, False
            return
        if error in (COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS):
            self.client.force_metadata_update()
            await asyncio.sleep(0.2)
            return
        if error != NONE:
            await asyncio.sleep(0.2)
            return
        self.joined = True
        self.member_id = response.member_id or self.member_id
        self.heartbeat_interval_s = max(response.heartbeat_interval_ms, 100) / 1000
        epoch = response.member_epoch
        if response.assignment is None:
            if self.pending is None:
                self.member_epoch = epoch
            return
        topic_partitions = response.assignment[0]
        target = frozenset(
            partition
            for topic_id, partitions, _tags in topic_partitions
            if topic_id == self.topic_id
            for partition in partitions
        )
        self.pending = (epoch, target, True)

    async def reconcile(self) -> bool:
        """Apply the assignment the last heartbeat brought, in the consumer's own task (between
        two polls, so no fetched record of an old assignment is reported under the new one).
        Revoked partitions are committed first; new ones start at the group's committed offset;
        kept ones keep their position. True when the assignment changed."""
        if self.pending is None:
            return False
        epoch, target, commit_revoked = self.pending
        if target == self.owned and epoch == self.member_epoch and commit_revoked:
            self.pending = None  # the same assignment again: nothing to do
            return False
        kept = self.owned & target
        revoked = self.owned - target
        if revoked and commit_revoked:
            with contextlib.suppress(KafkaError, OSError):
                await self.commit(revoked)
        positions: dict[int, int] = {}
        for partition in sorted(kept):
            with contextlib.suppress(KafkaError, AssertionError, IllegalStateError):
                positions[partition] = await self.consumer.position(
                    TopicPartition(self.topic, partition)
                )
        added = target - kept
        committed: dict[int, int] = {}
        if added:
            try:
                committed = await self._committed(added)
            except (KafkaError, OSError):
                return False  # tried again before the next poll
        if self.pending is None or self.pending[:2] != (epoch, target):
            return False  # a newer heartbeat answered meanwhile: apply that one
        self.pending = None
        self.consumer.assign([TopicPartition(self.topic, p) for p in sorted(target)])
        for partition in sorted(target):
            tp = TopicPartition(self.topic, partition)
            offset = positions.get(partition, committed.get(partition, -1))
            if offset >= 0:
                self.consumer.seek(tp, offset)
            else:
                await self.consumer.seek_to_beginning(tp)
        self.owned = target
        if epoch > 0:
            self.member_epoch = epoch
            self.on_assigned(epoch, target)
        return True

    async def _committed(self, partitions: frozenset[int]) -> dict[int, int]:
        response = await self._send_to_coordinator(
            OffsetFetchRequest(self.group_id, [(self.topic, sorted(partitions))])
        )
        return {
            partition: offset
            for _topic, items in response.topics
            for partition, offset, _metadata, error_code in items
            if error_code == NONE
        }

    async def commit(self, partitions: frozenset[int] | None = None) -> bool:
        """OffsetCommit v9 of the consumer's positions with this member's id and epoch; False
        when the coordinator refused it (a stale or fenced epoch)."""
        chosen = self.owned if partitions is None else partitions
        if not chosen or self.member_epoch <= 0:
            return False
        offsets: list[tuple[int, int, int, str | None, dict[int, bytes]]] = []
        for partition in sorted(chosen):
            try:
                position = await self.consumer.position(TopicPartition(self.topic, partition))
            except (KafkaError, AssertionError, IllegalStateError):
                continue
            offsets.append((partition, position, -1, None, {}))
        if not offsets:
            return False
        response = await self._send_to_coordinator(
            OffsetCommitRequest(
                self.group_id,
                self.member_epoch,
                self.member_id,
                None,
                [(self.topic, offsets, {})],
            )
        )
        return all(
            error_code == NONE
            for _name, items, _tags in response.topics
            for _partition, error_code, _item_tags in items
        )

    async def leave(self) -> None:
        """Leave the group (member epoch -1); its partitions go to the others at once."""
        leaving = asyncio.wait_for(
            self._send_to_coordinator(
                ConsumerGroupHeartbeatRequest(
                    self.group_id, self.member_id, LEAVE_EPOCH, None, None, -1, None, None, None
                )
            ),
            2.0,
        )
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            await leaving
        self.joined = False
