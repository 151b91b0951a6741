"""SyncGroup: the leader hands in the assignments; every member gets its own."""

from __future__ import annotations

from typing import Any

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.group_runtime import CoordinatorNotAvailableError
from odradek.coordinator.group import SyncGroupResponse, SyncRequest
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, response_type


@dispatcher.register(ApiKey.SYNC_GROUP, 0, 5)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    sync = SyncRequest(
        group_id=request.group_id,
        generation_id=request.generation_id,
        member_id=request.member_id,
        group_instance_id=getattr(request, "group_instance_id", None),
        protocol_type=getattr(request, "protocol_type", None),
        protocol_name=getattr(request, "protocol_name", None),
        assignments={item.member_id: bytes(item.assignment) for item in request.assignments},
    )
    try:
        answer: SyncGroupResponse = await context.groups.run(
            lambda reference, now: context.groups.coordinator.sync_group(
                reference, sync, now, context.groups.topics()
            ),
            group_id=request.group_id,
        )
    except CoordinatorNotAvailableError as unavailable:
        answer = SyncGroupResponse(unavailable.error_code)
    return make(
        response_type(ApiKey.SYNC_GROUP, version),
        throttle_time=0,
        error_code=answer.error,
        protocol_type=answer.protocol_type,
        protocol_name=answer.protocol_name,
        assignment=answer.assignment,
    )
