"""DescribeTransactions: state, producer, timeout and partitions of transactional ids.

Only the transactional id's coordinator describes it (the leader of its `__transaction_state`
partition): on a cluster another broker answers NOT_COORDINATOR (COORDINATOR_LOAD_IN_PROGRESS
while it loads that partition), as Kafka's
TransactionStateManager does, and the admin client asks the coordinator FindCoordinator names;
alone, a broker that cannot create `__transaction_state` answers COORDINATOR_NOT_AVAILABLE."""

from __future__ import annotations

import datetime
from typing import Any

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


def _timestamp(milliseconds: int) -> datetime.datetime:
    # kio writes datetime fields as epoch milliseconds; -1 (no transaction) stays -1.
    return datetime.datetime.fromtimestamp(milliseconds / 1000, tz=datetime.UTC)


@dispatcher.register(ApiKey.DESCRIBE_TRANSACTIONS, 0, 0)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    module = response_module(ApiKey.DESCRIBE_TRANSACTIONS, version)
    state_type = nested(module, "TransactionState")
    topic_type = nested(module, "TopicData")
    described = context.transactions.describe_transactions(request.transactional_ids)
    states = []
    for entry in described:
        states.append(
            make(
                state_type,
                error_code=entry.error,
                transactional_id=entry.transactional_id,
                transaction_state=entry.transaction_state,
                transaction_timeout=entry.transaction_timeout_ms,
                transaction_start_time=_timestamp(entry.transaction_start_time_ms),
                producer_id=entry.producer_id,
                producer_epoch=entry.producer_epoch,
                topics=tuple(
                    make(topic_type, topic=topic, partitions=partitions)
                    for topic, partitions in entry.topics
                ),
            )
        )
    return make(
        response_type(ApiKey.DESCRIBE_TRANSACTIONS, version),
        throttle_time=0,
        transaction_states=tuple(states),
    )
