"""InitProducerId: a producer id and epoch for an idempotent or transactional producer.

With a transactional.id this bumps the epoch (fencing zombies) and aborts an open transaction
first; the answer is then CONCURRENT_TRANSACTIONS and the client retries. v5 (the last version
of transaction version 1) is the highest advertised: v6 is KIP-939's two-phase commit.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.group_runtime import milliseconds
from odradek.coordinator.txn import NO_PRODUCER_EPOCH, NO_PRODUCER_ID, error_for_version
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, response_type


@dispatcher.register(ApiKey.INIT_PRODUCER_ID, 0, 5)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    result = await context.transactions.init_producer_id(
        request.transactional_id,
        milliseconds(request.transaction_timeout),
        getattr(request, "producer_id", NO_PRODUCER_ID),
        getattr(request, "producer_epoch", NO_PRODUCER_EPOCH),
    )
    error = error_for_version(ApiKey.INIT_PRODUCER_ID, version, result.error)
    ok = error == ErrorCode.none
    return make(
        response_type(ApiKey.INIT_PRODUCER_ID, version),
        throttle_time=0,
        error_code=error,
        producer_id=result.producer_id if ok else NO_PRODUCER_ID,
        producer_epoch=result.producer_epoch if ok else NO_PRODUCER_EPOCH,
    )
