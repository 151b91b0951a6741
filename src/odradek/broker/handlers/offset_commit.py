"""OffsetCommit: store a group's consumed positions in `__consumer_offsets`.

Partitions the broker does not have get UNKNOWN_TOPIC_OR_PARTITION here and never reach the
coordinator, which checks the generation (classic) or member epoch (KIP-848) and the metadata
size; the answer comes after the append, when the offsets are visible to OffsetFetch.
"""

from __future__ import annotations

from typing import Any

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.group_runtime import CoordinatorNotAvailableError
from odradek.broker.handlers._offsets import known_partitions, partition_commits, response_topics
from odradek.coordinator.group import CommitRequest, OffsetCommitResponse
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, response_type


@dispatcher.register(ApiKey.OFFSET_COMMIT, 2, 9)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    errors, known = known_partitions(context, request.topics)
    valid = partition_commits(known)
    if valid:
        commit = CommitRequest(
            group_id=request.group_id,
            generation_id_or_member_epoch=request.generation_id_or_member_epoch,
            member_id=request.member_id,
            group_instance_id=getattr(request, "group_instance_id", None),
            offsets=valid,
            api_version=version,
        )
        try:
            answer: OffsetCommitResponse = await context.groups.run(
                lambda reference, now: context.groups.coordinator.commit_offsets(
                    reference, commit, now
                ),
                group_id=request.group_id,
            )
        except CoordinatorNotAvailableError as unavailable:
            answer = OffsetCommitResponse(
                {
                    topic: dict.fromkeys(partitions, unavailable.error_code)
                    for topic, partitions in valid.items()
                }
            )
        for topic_name, partitions in answer.errors.items():
            errors[topic_name].update(partitions)
    return make(
        response_type(ApiKey.OFFSET_COMMIT, version),
        throttle_time=0,
        topics=response_topics(ApiKey.OFFSET_COMMIT, version, "OffsetCommitResponse", errors),
    )
