"""ListGroups: every group, optionally filtered by state (v4+) and type (v5+)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


@dispatcher.register(ApiKey.LIST_GROUPS, 0, 5)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    listed_type = nested(response_module(ApiKey.LIST_GROUPS, version), "ListedGroup")
    listed = context.groups.coordinator.list_groups(
        getattr(request, "states_filter", ()) or (), getattr(request, "types_filter", ()) or ()
    )
    return make(
        response_type(ApiKey.LIST_GROUPS, version),
        throttle_time=0,
        error_code=ErrorCode.none,
        groups=tuple(
            make(
                listed_type,
                group_id=group.group_id,
                protocol_type=group.protocol_type,
                group_state=group.state,
                group_type=group.group_type,
            )
            for group in listed
        ),
    )
