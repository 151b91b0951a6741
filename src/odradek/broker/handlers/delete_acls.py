"""DeleteAcls: every filter answered SECURITY_DISABLED (no authorizer, as Kafka)."""

from __future__ import annotations

from typing import Any

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.handlers.describe_acls import security_disabled_response
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader


@dispatcher.register(ApiKey.DELETE_ACLS, 1, 3)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    return security_disabled_response(
        ApiKey.DELETE_ACLS,
        header.api_version,
        "filter_results",
        "DeleteAclsFilterResult",
        len(request.filters),
        matching_acls=(),
    )
