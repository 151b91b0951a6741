"""ApiKey -> handler table. The ApiVersions answer is derived from this table, so a version is
advertised exactly when a handler claims it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from odradek.protocol.codec import RequestHeader

if TYPE_CHECKING:
    from odradek.broker.context import BrokerContext

# A handler returns a kio response entity, a pre-encoded body (list of buffers), or None when
# Kafka sends no response (Produce with acks=0).
Response = Any
Handler = Callable[["BrokerContext", RequestHeader, Any], Awaitable[Response]]


class CloseConnection(Exception):  # noqa: N818 -- a signal, not an error of the broker
    """Raised by a handler whose answer is to close the connection (Kafka's
    RequestChannel.closeConnection), e.g. a failed Produce with acks=0. The responses to the
    requests before it on the connection are sent first; the message is logged as one line."""


@dataclass(frozen=True, slots=True)
class ApiHandler:
    api_key: int
    min_version: int
    max_version: int
    handle: Handler


HANDLERS: dict[int, ApiHandler] = {}


def register(api_key: int, min_version: int, max_version: int) -> Callable[[Handler], Handler]:
    def decorator(handle: Handler) -> Handler:
        HANDLERS[int(api_key)] = ApiHandler(int(api_key), min_version, max_version, handle)
        return handle

    return decorator


def supported(api_key: int, api_version: int) -> ApiHandler | None:
    handler = HANDLERS.get(api_key)
    if handler is None or not handler.min_version <= api_version <= handler.max_version:
        return None
    return handler


def load_handlers() -> None:
    """Import every handler module so each registers itself."""
    from odradek.broker import handlers  # noqa: F401  (import side effect: registration)
