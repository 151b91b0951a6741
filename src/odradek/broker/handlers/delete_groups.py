"""DeleteGroups: remove empty groups and their committed offsets (tombstones)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.group_runtime import CoordinatorNotAvailableError
from odradek.coordinator.group import DeleteGroupsResponse
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


@dispatcher.register(ApiKey.DELETE_GROUPS, 0, 2)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    requested = list(dict.fromkeys(request.groups_names))
    # On a cluster, groups another broker coordinates get NOT_COORDINATOR.
    elsewhere = {
        name: error
        for name in requested
        if (error := context.groups.coordinator_error(name)) is not None
    }
    names = [name for name in requested if name not in elsewhere]
    try:
        answer: DeleteGroupsResponse = await context.groups.run(
            lambda reference, now: context.groups.coordinator.delete_groups(reference, names, now)
        )
    except CoordinatorNotAvailableError:
        answer = DeleteGroupsResponse(dict.fromkeys(names, ErrorCode.coordinator_not_available))
    if elsewhere:
        answer = DeleteGroupsResponse({**answer.errors, **elsewhere})
    result_type = nested(response_module(ApiKey.DELETE_GROUPS, version), "DeletableGroupResult")
    return make(
        response_type(ApiKey.DELETE_GROUPS, version),
        throttle_time=0,
        results=tuple(
            make(result_type, group_id=group_id, error_code=error)
            for group_id, error in answer.errors.items()
        ),
    )
