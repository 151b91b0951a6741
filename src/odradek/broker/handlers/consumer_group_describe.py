"""ConsumerGroupDescribe (KIP-848): epochs, assignor, members with current and target
assignments."""

from __future__ import annotations

import uuid
from types import ModuleType
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.authorized_operations import OMITTED, group_operations
from odradek.broker.context import BrokerContext
from odradek.coordinator.group import ConsumerGroup
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type

CONSUMER_MEMBER_TYPE = 1


def _assignment(
    module: ModuleType, partitions: dict[uuid.UUID, frozenset[int]], names: dict[uuid.UUID, str]
) -> Any:
    partitions_type = nested(module, "TopicPartitions")
    return make(
        nested(module, "Assignment"),
        topic_partitions=tuple(
            make(
                partitions_type,
                topic_id=topic_id,
                topic_name=names.get(topic_id, ""),
                partitions=tuple(sorted(numbers)),
            )
            for topic_id, numbers in sorted(partitions.items())
            if numbers
        ),
    )


@dispatcher.register(ApiKey.CONSUMER_GROUP_DESCRIBE, 0, 1)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    module = response_module(ApiKey.CONSUMER_GROUP_DESCRIBE, version)
    group_type = nested(module, "DescribedGroup")
    member_type = nested(module, "Member")
    names = {info.topic_id: name for name, info in context.groups.topics().items()}
    coordinator = context.groups.coordinator
    operations = group_operations(request.include_authorized_operations)
    described = []
    for group_id in request.group_ids:
        # On a cluster a group another broker coordinates: NOT_COORDINATOR (or
        # COORDINATOR_LOAD_IN_PROGRESS) with nothing else, Kafka's
        # ConsumerGroupDescribeRequest.getErrorDescribedGroupList.
        not_here = context.groups.coordinator_error(group_id)
        group = coordinator.group(group_id) if not_here is None else None
        if not isinstance(group, ConsumerGroup):
            described.append(
                make(
                    group_type,
                    error_code=ErrorCode.group_id_not_found if not_here is None else not_here,
                    error_message=None
                    if not_here is not None
                    else f"Group {group_id} not found."
                    if group is None
                    else f"Group {group_id} is not a consumer group.",
                    group_id=group_id,
                    # Kafka's GroupMetadataManager.consumerGroupDescribe sets only the id, the
                    # error and its message: the rest keeps the schema's defaults, and
                    # KafkaApis fills authorized operations in only for groups without error.
                    group_state="",
                    group_epoch=0,
                    assignment_epoch=0,
                    assignor_name="",
                    members=(),
                    authorized_operations=OMITTED,
                )
            )
            continue
        members = tuple(
            make(
                member_type,
                member_id=member.member_id,
                instance_id=member.instance_id,
                rack_id=member.rack_id,
                member_epoch=member.member_epoch,
                client_id=member.client_id,
                client_host=member.client_host,
                subscribed_topic_names=tuple(sorted(member.subscribed_topic_names)),
                subscribed_topic_regex=member.subscribed_topic_regex,
                assignment=_assignment(module, member.assigned, names),
                target_assignment=_assignment(
                    module, group.target.get(member.member_id, {}), names
                ),
                member_type=CONSUMER_MEMBER_TYPE,
            )
            for member in group.members.values()
        )
        described.append(
            make(
                group_type,
                error_code=ErrorCode.none,
                error_message=None,
                group_id=group_id,
                group_state=group.state.value,
                group_epoch=group.group_epoch,
                assignment_epoch=group.assignment_epoch,
                assignor_name=group.assignor_name or coordinator.config.consumer_assignors[0],
                members=members,
                authorized_operations=operations,
            )
        )
    return make(
        response_type(ApiKey.CONSUMER_GROUP_DESCRIBE, version),
        throttle_time=0,
        groups=tuple(described),
    )
