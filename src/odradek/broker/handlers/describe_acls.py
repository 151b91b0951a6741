"""DescribeAcls: SECURITY_DISABLED, as Kafka answers while no authorizer is configured."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type

# KafkaApis' message when `authorizer.class.name` is unset.
NO_AUTHORIZER = "No Authorizer is configured."


def security_disabled_response(
    api_key: ApiKey, version: int, field: str, entry: str, count: int, **extra: Any
) -> Any:
    """Response `api_key` v`version` with throttle_time 0 and, in `field`, `count` nested
    `entry` results each answered SECURITY_DISABLED with NO_AUTHORIZER (plus `extra` fields):
    how KafkaApis answers CreateAcls and DeleteAcls while no authorizer is configured."""
    result_type = nested(response_module(api_key, version), entry)
    result = make(
        result_type, error_code=ErrorCode.security_disabled, error_message=NO_AUTHORIZER, **extra
    )
    return make(response_type(api_key, version), throttle_time=0, **{field: (result,) * count})


@dispatcher.register(ApiKey.DESCRIBE_ACLS, 1, 3)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    return make(
        response_type(ApiKey.DESCRIBE_ACLS, header.api_version),
        throttle_time=0,
        error_code=ErrorCode.security_disabled,
        error_message=NO_AUTHORIZER,
        resources=(),
    )
