"""DescribeAcls: SECURITY_DISABLED, as Kafka answers while no authorizer is configured."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, response_type

# KafkaApis' message when `authorizer.class.name` is unset.
NO_AUTHORIZER = "No Authorizer is configured."


@dispatcher.register(ApiKey.DESCRIBE_ACLS, 1, 3)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    return make(
        response_type(ApiKey.DESCRIBE_ACLS, header.api_version),
        throttle_time=0,
        error_code=ErrorCode.security_disabled,
        error_message=NO_AUTHORIZER,
        resources=(),
    )
