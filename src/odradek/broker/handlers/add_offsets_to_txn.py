"""AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.coordinator.txn import error_for_version
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, response_type


@dispatcher.register(ApiKey.ADD_OFFSETS_TO_TXN, 0, 4)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    if context.groups.ensure_offsets_topic():
        error = await context.transactions.add_offsets(
            request.transactional_id, request.producer_id, request.producer_epoch, request.group_id
        )
    else:
        error = ErrorCode.coordinator_not_available
    return make(
        response_type(ApiKey.ADD_OFFSETS_TO_TXN, version),
        throttle_time=0,
        error_code=error_for_version(ApiKey.ADD_OFFSETS_TO_TXN, version, error),
    )
