"""FindCoordinator: this node coordinates every group and every transactional id (alone: the
transactional id's `__transaction_state` partition is created and loaded first); on a cluster
the leader of the key's `__consumer_offsets` / `__transaction_state` partition does
(`cluster_handlers.find_coordinator`; a transactional id's partition is
`abs(hashCode(id)) % partitions`, Kafka's TransactionStateManager.partitionFor).

v4+ asks for several keys at once (`coordinator_keys`) and gets one answer per key.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import cluster_handlers, dispatcher
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type

GROUP_KEY_TYPE = 0
TRANSACTION_KEY_TYPE = 1


@dispatcher.register(ApiKey.FIND_COORDINATOR, 0, 6)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    key_type = getattr(request, "key_type", GROUP_KEY_TYPE)

    async def answer(key: str) -> dict[str, Any]:
        if context.cluster is not None and key_type in (GROUP_KEY_TYPE, TRANSACTION_KEY_TYPE):
            error, node_id, host, port = await cluster_handlers.find_coordinator(
                context, key, key_type == TRANSACTION_KEY_TYPE
            )
            return {
                "key": key,
                "error_code": error,
                "error_message": None
                if error is ErrorCode.none
                else "The coordinator is not available.",
                "node_id": node_id,
                "host": host,
                "port": port,
            }
        if key_type in (GROUP_KEY_TYPE, TRANSACTION_KEY_TYPE):
            ready = (
                context.groups.ensure_offsets_topic()
                if key_type == GROUP_KEY_TYPE
                else context.transactions.coordinator_error(key) is None
            )
            if ready:
                return {
                    "key": key,
                    "error_code": ErrorCode.none,
                    "error_message": None,
                    "node_id": context.node_id,
                    "host": context.advertised_host,
                    "port": context.advertised_port,
                }
            error, message = (
                ErrorCode.coordinator_not_available,
                "The coordinator is not available.",
            )
        else:
            error, message = ErrorCode.invalid_request, f"Unknown coordinator key type {key_type}."
        return {
            "key": key,
            "error_code": error,
            "error_message": message,
            "node_id": -1,
            "host": "",
            "port": -1,
        }

    response = response_type(ApiKey.FIND_COORDINATOR, version)
    if version < 4:
        return make(response, throttle_time=0, **(await answer(request.key)))
    coordinator = nested(response_module(ApiKey.FIND_COORDINATOR, version), "Coordinator")
    return make(
        response,
        throttle_time=0,
        coordinators=tuple(
            [make(coordinator, **(await answer(key))) for key in request.coordinator_keys]
        ),
    )
