"""EndTxn: commit or abort the producer's transaction.

v0-v4 are transaction version 1; v5 is KIP-890 part 2: every EndTxn bumps the producer epoch
and the answer carries the producer id and epoch of the producer's next transaction, so a
delayed EndTxn or produce of this transaction is fenced from the next one. Answered once
PrepareCommit/PrepareAbort is durable and the markers are written.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.coordinator.txn import (
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    TRANSACTION_VERSION_1,
    TRANSACTION_VERSION_2,
    error_for_version,
)
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, response_type

#: EndTxn v5 is the first version of transaction version 2 (EndTxnRequest.json).
TRANSACTION_V2_VERSION = 5


@dispatcher.register(ApiKey.END_TXN, 0, 5)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    transaction_version = (
        TRANSACTION_VERSION_2 if version >= TRANSACTION_V2_VERSION else TRANSACTION_VERSION_1
    )
    result = await context.transactions.end_txn(
        request.transactional_id,
        request.producer_id,
        request.producer_epoch,
        request.committed,
        transaction_version,
    )
    error = error_for_version(ApiKey.END_TXN, version, result.error)
    if version < TRANSACTION_V2_VERSION:
        return make(response_type(ApiKey.END_TXN, version), throttle_time=0, error_code=error)
    ok = error == ErrorCode.none
    return make(
        response_type(ApiKey.END_TXN, version),
        throttle_time=0,
        error_code=error,
        producer_id=result.producer_id if ok else NO_PRODUCER_ID,
        producer_epoch=result.producer_epoch if ok else NO_PRODUCER_EPOCH,
    )
