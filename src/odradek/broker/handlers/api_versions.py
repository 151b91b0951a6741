"""ApiVersions: derived from the dispatcher table, so only implemented versions are advertised
(one exception, Produce, below).

From v3 the answer also lists features (KIP-584): `transaction.version` is supported 0-2 and
finalized at 2, because every request KIP-890 part 2 changes is implemented (Produce v12,
EndTxn v5, TxnOffsetCommit v5 and the coordinator's epoch bump per transaction). A client that
sees level 2 uses all of them; one that does not keeps transaction version 1 (part 1).

One range is advertised wider than it is served, as Kafka 4 does (KAFKA-18659, ApiKeys'
`PRODUCE_API_VERSIONS_RESPONSE_MIN_VERSION`): Produce is listed from v0 although only v3+ is
served (KIP-896 removed v0-v2). Older librdkafka (librdkafka issue 4956; Debian's 2.0 build, which
kcat links, among them) enables gzip, snappy and lz4 only when the broker's Produce range
reaches down to v0 and otherwise sends every batch uncompressed without a word. Clients pick the
highest common version, so none sends v0-v2 because of the wider range; a Produce v0-v2 request
is still refused as Kafka 4's SocketServer refuses it: the connection is closed.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type

#: (feature name, supported min, supported max, finalized level)
FEATURES: tuple[tuple[str, int, int, int], ...] = (("transaction.version", 0, 2, 2),)
#: Kafka's is the metadata offset of the last feature change; features never change here.
FINALIZED_FEATURES_EPOCH = 1
_FEATURES_SINCE_VERSION = 3
#: ApiKey -> the min version advertised where it is below the served one (KAFKA-18659).
ADVERTISED_MIN_VERSIONS: dict[int, int] = {ApiKey.PRODUCE: 0}


def _features(api_version: int) -> dict[str, Any]:
    if api_version < _FEATURES_SINCE_VERSION:
        return {}
    module = response_module(ApiKey.API_VERSIONS, api_version)
    supported = nested(module, "SupportedFeatureKey")
    finalized = nested(module, "FinalizedFeatureKey")
    return {
        "supported_features": tuple(
            make(supported, name=name, min_version=low, max_version=high)
            for name, low, high, _level in FEATURES
        ),
        "finalized_features_epoch": FINALIZED_FEATURES_EPOCH,
        "finalized_features": tuple(
            make(finalized, name=name, max_version_level=level, min_version_level=level)
            for name, _low, _high, level in FEATURES
        ),
    }


def advertised_ranges() -> dict[int, tuple[int, int]]:
    """ApiKey -> (min, max) as ApiVersions lists it: the dispatcher table, with Produce's min
    lowered to 0 as Kafka 4 lists it (`ADVERTISED_MIN_VERSIONS`)."""
    return {
        key: (
            min(handler.min_version, ADVERTISED_MIN_VERSIONS.get(key, handler.min_version)),
            handler.max_version,
        )
        for key, handler in sorted(dispatcher.HANDLERS.items())
    }


def _api_keys(api_version: int) -> tuple[Any, ...]:
    entry = nested(response_module(ApiKey.API_VERSIONS, api_version), "ApiVersion")
    return tuple(
        make(entry, api_key=key, min_version=low, max_version=high)
        for key, (low, high) in advertised_ranges().items()
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
        **_features(header.api_version),
    )
