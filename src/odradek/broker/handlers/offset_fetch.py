"""OffsetFetch: a group's committed offsets; v8+ asks for several groups at once.

With `require_stable` (v7+, KIP-447; sent by read_committed consumers) a partition whose offset
an open transaction has staged answers UNSTABLE_OFFSET_COMMIT, and the client retries. The
answer waits until every group write before it is durable (GroupRuntime.read).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.group_runtime import CoordinatorNotAvailableError, NotCoordinatorError
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type

NO_OFFSET = -1
NO_LEADER_EPOCH = -1


@dispatcher.register(ApiKey.OFFSET_FETCH, 1, 9)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    module = response_module(ApiKey.OFFSET_FETCH, version)
    multi = version >= 8
    topic_type = nested(
        module, "OffsetFetchResponseTopics" if multi else "OffsetFetchResponseTopic"
    )
    partition_type = nested(
        module, "OffsetFetchResponsePartitions" if multi else "OffsetFetchResponsePartition"
    )
    coordinator = context.groups.coordinator

    require_stable = getattr(request, "require_stable", False)

    def unstable(group_id: str, topic: str, index: int) -> bool:
        return require_stable and coordinator.has_pending_txn_offset(group_id, topic, index)

    def fetch(
        group_id: str, topics: Any, member_id: str | None, member_epoch: int
    ) -> tuple[ErrorCode, tuple[Any, ...]]:
        wanted = (
            None
            if topics is None
            else {topic.name: tuple(topic.partition_indexes) for topic in topics}
        )
        error, offsets = coordinator.fetch_offsets(group_id, wanted, member_id, member_epoch)
        return error, tuple(
            make(
                topic_type,
                name=name,
                partitions=tuple(
                    make(
                        partition_type,
                        partition_index=index,
                        committed_offset=NO_OFFSET if value is None else value.offset,
                        committed_leader_epoch=NO_LEADER_EPOCH
                        if value is None
                        else value.leader_epoch,
                        metadata="" if value is None else value.metadata,
                        error_code=ErrorCode.none,
                    )
                    if not unstable(group_id, name, index)
                    else make(
                        partition_type,
                        partition_index=index,
                        committed_offset=NO_OFFSET,
                        committed_leader_epoch=NO_LEADER_EPOCH,
                        metadata="",
                        error_code=ErrorCode.unstable_offset_commit,
                    )
                    for index, value in partitions.items()
                ),
            )
            for name, partitions in offsets.items()
        )

    response = response_type(ApiKey.OFFSET_FETCH, version)
    if not multi:
        try:
            error, topics = await context.groups.read(
                lambda: fetch(request.group_id, request.topics, None, -1),
                group_id=request.group_id,
            )
        except NotCoordinatorError as not_coordinator:
            error, topics = not_coordinator.error_code, ()
        except CoordinatorNotAvailableError:
            error, topics = ErrorCode.not_coordinator, ()
        if version < 2 and error is not ErrorCode.none:
            # v1 has no group-level error: Kafka's OffsetFetchRequest.getErrorResponse puts it
            # on every requested partition (a client reads NOT_COORDINATOR there).
            topics = tuple(
                make(
                    topic_type,
                    name=topic.name,
                    partitions=tuple(
                        make(
                            partition_type,
                            partition_index=index,
                            committed_offset=NO_OFFSET,
                            metadata="",
                            error_code=error,
                        )
                        for index in topic.partition_indexes
                    ),
                )
                for topic in request.topics
            )
        return make(response, throttle_time=0, topics=topics, error_code=error)
    group_type = nested(module, "OffsetFetchResponseGroup")

    def fetch_groups() -> list[tuple[str, ErrorCode, tuple[Any, ...]]]:
        answers: list[tuple[str, ErrorCode, tuple[Any, ...]]] = []
        for group in request.groups:
            # On a cluster each group is answered by its own coordinator.
            not_here = context.groups.coordinator_error(group.group_id)
            if not_here is not None:
                answers.append((group.group_id, not_here, ()))
                continue
            answers.append(
                (
                    group.group_id,
                    *fetch(
                        group.group_id,
                        group.topics,
                        getattr(group, "member_id", None),
                        getattr(group, "member_epoch", -1),
                    ),
                )
            )
        return answers

    try:
        answers = await context.groups.read(fetch_groups)
    except CoordinatorNotAvailableError:
        answers = [(group.group_id, ErrorCode.not_coordinator, ()) for group in request.groups]
    groups = [
        make(group_type, group_id=group_id, topics=topics, error_code=error)
        for group_id, error, topics in answers
    ]
    return make(response, throttle_time=0, groups=tuple(groups))
