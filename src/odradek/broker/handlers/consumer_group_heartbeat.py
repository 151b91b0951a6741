"""ConsumerGroupHeartbeat (KIP-848): join, stay, reconcile and leave in one request.

The assignment is computed on the broker (`uniform` or `range`); topics are named by id.
"""

from __future__ import annotations

from typing import Any

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.group_runtime import CoordinatorNotAvailableError, milliseconds
from odradek.coordinator.group import ConsumerGroupHeartbeatResponse, HeartbeatRequest
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


@dispatcher.register(ApiKey.CONSUMER_GROUP_HEARTBEAT, 0, 1)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    owned = (
        None
        if request.topic_partitions is None
        else {
            item.topic_id: frozenset(item.partitions)
            for item in request.topic_partitions
            if item.topic_id is not None
        }
    )
    heartbeat = HeartbeatRequest(
        group_id=request.group_id,
        member_id=request.member_id,
        member_epoch=request.member_epoch,
        instance_id=request.instance_id,
        rack_id=request.rack_id,
        rebalance_timeout_ms=milliseconds(request.rebalance_timeout),
        subscribed_topic_names=None
        if request.subscribed_topic_names is None
        else tuple(request.subscribed_topic_names),
        subscribed_topic_regex=getattr(request, "subscribed_topic_regex", None),
        server_assignor=request.server_assignor,
        owned=owned,
        client_id=header.client_id or "",
        client_host=header.client_host,
        api_version=version,
    )
    groups = context.groups
    try:
        answer: ConsumerGroupHeartbeatResponse = await groups.run(
            lambda reference, now: groups.coordinator.consumer_group_heartbeat(
                reference, heartbeat, groups.topics(), now
            ),
            group_id=request.group_id,
        )
    except CoordinatorNotAvailableError as unavailable:
        answer = ConsumerGroupHeartbeatResponse(unavailable.error_code)
    module = response_module(ApiKey.CONSUMER_GROUP_HEARTBEAT, version)
    assignment = None
    if answer.assignment is not None:
        partitions_type = nested(module, "TopicPartitions")
        assignment = make(
            nested(module, "Assignment"),
            topic_partitions=tuple(
                make(partitions_type, topic_id=topic_id, partitions=tuple(sorted(numbers)))
                for topic_id, numbers in sorted(answer.assignment.items())
            ),
        )
    return make(
        response_type(ApiKey.CONSUMER_GROUP_HEARTBEAT, version),
        throttle_time=0,
        error_code=answer.error,
        error_message=answer.error_message,
        member_id=answer.member_id,
        member_epoch=answer.member_epoch,
        heartbeat_interval=answer.heartbeat_interval_ms,
        assignment=assignment,
    )
