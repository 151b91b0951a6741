"""ListTransactions: transactional ids, filtered by state, producer id, duration (v1,
KIP-994) and a transactional-id regular expression (v2, matched whole as Java's matches()).

Each broker lists the transactional ids it coordinates (Kafka's
TransactionStateManager.listTransactionStates); Kafka's admin client asks every broker and merges
the answers: the transactional ids of every `__transaction_state` partition it leads (alone:
every partition), an empty list if none, COORDINATOR_LOAD_IN_PROGRESS while one of them loads."""

from __future__ import annotations

import re
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


@dispatcher.register(ApiKey.LIST_TRANSACTIONS, 0, 2)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    module = response_module(ApiKey.LIST_TRANSACTIONS, version)
    state_type = nested(module, "TransactionState")
    response = response_type(ApiKey.LIST_TRANSACTIONS, version)
    pattern_text = getattr(request, "transactional_id_pattern", None)
    try:
        pattern = re.compile(pattern_text) if pattern_text else None
    except re.error:
        return make(
            response,
            throttle_time=0,
            error_code=ErrorCode.invalid_regular_expression,
            unknown_state_filters=(),
            transaction_states=(),
        )
    listed = context.transactions.list_transactions(
        request.state_filters,
        request.producer_id_filters,
        getattr(request, "duration_filter", -1),
        context.now_ms(),
    )
    return make(
        response,
        throttle_time=0,
        error_code=listed.error,
        unknown_state_filters=listed.unknown_state_filters,
        transaction_states=tuple(
            make(
                state_type,
                transactional_id=entry.transactional_id,
                producer_id=entry.producer_id,
                transaction_state=entry.transaction_state,
            )
            for entry in listed.transaction_states
            if pattern is None or pattern.fullmatch(entry.transactional_id)
        ),
    )
