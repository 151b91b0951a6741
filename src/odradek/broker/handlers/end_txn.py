"""EndTxn: commit or abort the producer's transaction (transaction version 1).

Answered once PrepareCommit/PrepareAbort is durable and the markers are written. v5 (KIP-890
part 2: an epoch bump per transaction) is not advertised.
"""

from __future__ import annotations

from typing import Any

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.coordinator.txn import error_for_version
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, response_type


@dispatcher.register(ApiKey.END_TXN, 0, 4)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    result = await context.transactions.end_txn(
        request.transactional_id, request.producer_id, request.producer_epoch, request.committed
    )
    return make(
        response_type(ApiKey.END_TXN, version),
        throttle_time=0,
        error_code=error_for_version(ApiKey.END_TXN, version, result.error),
    )
