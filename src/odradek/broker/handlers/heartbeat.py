"""Heartbeat: a classic member says it is alive and learns whether a rebalance started.

While the coordinator is still loading the group's `__consumer_offsets` partition (a new
leader on a cluster) the answer is NONE, as Kafka's GroupCoordinatorService.heartbeat ("the
group is still loading, so blindly respond"): clients such as aiokafka treat
COORDINATOR_LOAD_IN_PROGRESS on a heartbeat as fatal."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.group_runtime import CoordinatorNotAvailableError
from odradek.coordinator.group import ErrorResponse
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, response_type


@dispatcher.register(ApiKey.HEARTBEAT, 0, 4)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    instance_id = getattr(request, "group_instance_id", None)
    try:
        answer: ErrorResponse = await context.groups.run(
            lambda reference, now: context.groups.coordinator.heartbeat(
                reference,
                request.group_id,
                request.generation_id,
                request.member_id,
                instance_id,
                now,
            ),
            group_id=request.group_id,
        )
    except CoordinatorNotAvailableError as unavailable:
        error = unavailable.error_code
        answer = ErrorResponse(
            ErrorCode.none if error is ErrorCode.coordinator_load_in_progress else error
        )
    return make(
        response_type(ApiKey.HEARTBEAT, header.api_version),
        throttle_time=0,
        error_code=answer.error,
    )
