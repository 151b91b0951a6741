"""LeaveGroup: one member (v0-v2) or a batch of members by id or instance id (v3+) leave."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.group_runtime import CoordinatorNotAvailableError
from odradek.coordinator.group import LeaveGroupResponse
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


@dispatcher.register(ApiKey.LEAVE_GROUP, 0, 5)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    if version < 3:
        leaving: list[tuple[str, str | None]] = [(request.member_id, None)]
    else:
        leaving = [(member.member_id, member.group_instance_id) for member in request.members]
    try:
        answer: LeaveGroupResponse = await context.groups.run(
            lambda reference, now: context.groups.coordinator.leave_group(
                reference, request.group_id, leaving, now
            ),
            group_id=request.group_id,
        )
    except CoordinatorNotAvailableError as unavailable:
        answer = LeaveGroupResponse(unavailable.error_code)
    response = response_type(ApiKey.LEAVE_GROUP, version)
    if version < 3:
        error = answer.error
        if error == ErrorCode.none and answer.members:
            error = answer.members[0][2]
        return make(response, throttle_time=0, error_code=error)
    member_type = nested(response_module(ApiKey.LEAVE_GROUP, version), "MemberResponse")
    return make(
        response,
        throttle_time=0,
        error_code=answer.error,
        members=tuple(
            make(
                member_type,
                member_id=member_id,
                group_instance_id=instance_id,
                error_code=error,
            )
            for member_id, instance_id, error in answer.members
        ),
    )
