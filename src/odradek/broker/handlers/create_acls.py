"""CreateAcls: every creation answered SECURITY_DISABLED (no authorizer, as Kafka)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.handlers.describe_acls import NO_AUTHORIZER
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


@dispatcher.register(ApiKey.CREATE_ACLS, 1, 3)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    result_type = nested(response_module(ApiKey.CREATE_ACLS, version), "AclCreationResult")
    return make(
        response_type(ApiKey.CREATE_ACLS, version),
        throttle_time=0,
        results=tuple(
            make(
                result_type,
                error_code=ErrorCode.security_disabled,
                error_message=NO_AUTHORIZER,
            )
            for _creation in request.creations
        ),
    )
