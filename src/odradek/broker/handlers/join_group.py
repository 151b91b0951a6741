"""JoinGroup: a member (re)joins a classic group; the answer may wait for the rebalance."""

from __future__ import annotations

from typing import Any

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.group_runtime import CoordinatorNotAvailableError, milliseconds
from odradek.coordinator.group import JoinGroupResponse, JoinRequest
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


@dispatcher.register(ApiKey.JOIN_GROUP, 0, 9)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    session_timeout = milliseconds(request.session_timeout)
    join = JoinRequest(
        group_id=request.group_id,
        member_id=request.member_id,
        group_instance_id=getattr(request, "group_instance_id", None),
        protocol_type=request.protocol_type,
        protocols=tuple(
            (protocol.name, bytes(protocol.metadata)) for protocol in request.protocols
        ),
        session_timeout_ms=session_timeout,
        # v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms=milliseconds(getattr(request, "rebalance_timeout", session_timeout)),
        client_id=header.client_id or "",
        client_host=header.client_host,
        api_version=version,
    )
    try:
        answer: JoinGroupResponse = await context.groups.run(
            lambda reference, now: context.groups.coordinator.join_group(
                reference, join, now, context.groups.topics()
            ),
            group_id=request.group_id,
        )
    except CoordinatorNotAvailableError as unavailable:
        answer = JoinGroupResponse(unavailable.error_code, member_id=join.member_id)
    member_type = nested(response_module(ApiKey.JOIN_GROUP, version), "JoinGroupResponseMember")
    flexible_names = version >= 7
    return make(
        response_type(ApiKey.JOIN_GROUP, version),
        throttle_time=0,
        error_code=answer.error,
        generation_id=answer.generation_id,
        protocol_type=answer.protocol_type,
        protocol_name=answer.protocol_name if flexible_names else (answer.protocol_name or ""),
        leader=answer.leader,
        skip_assignment=answer.skip_assignment,
        member_id=answer.member_id,
        members=tuple(
            make(
                member_type,
                member_id=member.member_id,
                group_instance_id=member.group_instance_id,
                metadata=member.metadata,
            )
            for member in answer.members
        ),
    )
