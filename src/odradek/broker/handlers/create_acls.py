"""CreateAcls: every creation answered SECURITY_DISABLED (no authorizer, as Kafka)."""

from __future__ import annotations

from typing import Any

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.handlers.describe_acls import security_disabled_response
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader


@dispatcher.register(ApiKey.CREATE_ACLS, 1, 3)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    return security_disabled_response(
        ApiKey.CREATE_ACLS,
        header.api_version,
        "results",
        "AclCreationResult",
        len(request.creations),
    )
