"""ApiVersions: derived from the dispatcher table, so only implemented versions are advertised."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


def _api_keys(api_version: int) -> tuple[Any, ...]:
    entry = nested(response_module(ApiKey.API_VERSIONS, api_version), "ApiVersion")
    return tuple(
        make(entry, api_key=key, min_version=handler.min_version, max_version=handler.max_version)
        for key, handler in sorted(dispatcher.HANDLERS.items())
    )


def unsupported_version_response() -> Any:
    """The v0-format UNSUPPORTED_VERSION answer that still lists the supported ranges."""
    return make(
        response_type(ApiKey.API_VERSIONS, 0),
        error_code=ErrorCode.unsupported_version,
        api_keys=_api_keys(0),
    )


# v4 is v3 (KAFKA-17011 only lets SupportedFeatures.MinVersion be 0; none are listed here).
@dispatcher.register(ApiKey.API_VERSIONS, 0, 4)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    return make(
        response_type(ApiKey.API_VERSIONS, header.api_version),
        error_code=ErrorCode.none,
        api_keys=_api_keys(header.api_version),
        throttle_time=0,
    )
