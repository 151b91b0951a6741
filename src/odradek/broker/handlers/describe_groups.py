"""DescribeGroups: state, protocol and members of classic groups.

A group that does not exist is reported Dead with no error before v6, GROUP_ID_NOT_FOUND from
v6 on (KIP-1043); member metadata and assignments are shown only in a Stable group, as in Kafka.
The answer waits until every group write before it is durable (GroupRuntime.read).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.authorized_operations import group_operations
from odradek.broker.context import BrokerContext
from odradek.broker.group_runtime import CoordinatorNotAvailableError
from odradek.coordinator.group import DescribedGroup
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


@dispatcher.register(ApiKey.DESCRIBE_GROUPS, 0, 6)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    module = response_module(ApiKey.DESCRIBE_GROUPS, version)
    group_type = nested(module, "DescribedGroup")
    member_type = nested(module, "DescribedGroupMember")
    coordinator = context.groups.coordinator

    def describe() -> list[tuple[DescribedGroup, bool]]:
        # On a cluster a group this broker does not coordinate gets NOT_COORDINATOR (or
        # COORDINATOR_LOAD_IN_PROGRESS), as each coordinator answers only for its own.
        answers = []
        for group_id in request.groups:
            not_here = context.groups.coordinator_error(group_id)
            if not_here is not None:
                answers.append((DescribedGroup(group_id, not_here, "", "", "", ()), True))
                continue
            (described,) = coordinator.describe_groups([group_id])
            answers.append((described, coordinator.group(group_id) is not None))
        return answers

    try:
        answers = await context.groups.read(describe)
    except CoordinatorNotAvailableError:
        answers = [
            (DescribedGroup(group_id, ErrorCode.not_coordinator, "", "", "", ()), True)
            for group_id in request.groups
        ]
    operations = group_operations(bool(getattr(request, "include_authorized_operations", False)))
    groups = []
    for described, exists in answers:
        error = described.error
        message = None
        if error == ErrorCode.group_id_not_found:
            if version < 6:
                error = ErrorCode.none
            elif not exists:
                message = f"Group {described.group_id} not found."
            else:
                message = f"Group {described.group_id} is not a classic group."
        groups.append(
            make(
                group_type,
                error_code=error,
                error_message=message,
                group_id=described.group_id,
                group_state=described.state,
                protocol_type=described.protocol_type,
                protocol_data=described.protocol_data,
                members=tuple(
                    make(
                        member_type,
                        member_id=member.member_id,
                        group_instance_id=member.group_instance_id,
                        client_id=member.client_id,
                        client_host=member.client_host,
                        member_metadata=member.metadata,
                        member_assignment=member.assignment,
                    )
                    for member in described.members
                ),
                authorized_operations=operations,
            )
        )
    return make(
        response_type(ApiKey.DESCRIBE_GROUPS, version), throttle_time=0, groups=tuple(groups)
    )
