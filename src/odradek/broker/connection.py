"""One client connection: frames in, handlers run (pipelined), responses out in request order."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from typing import Any

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.handlers.api_versions import unsupported_version_response
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import (
    RequestHeader,
    encode_entity,
    frame_response,
    is_flexible,
    read_request_body,
    read_request_header,
)
from odradek.protocol.tolerant_reader import RemoteProtocolError

logger = logging.getLogger(__name__)

_SIZE = struct.Struct(">i")
# Requests read ahead of the one being answered; past this the socket is not read, which pushes
# back on the client as Kafka does by muting a busy channel.
MAX_IN_FLIGHT = 64


def _flexible_if_supported(api_key: int, api_version: int) -> bool:
    if dispatcher.supported(api_key, api_version) is None:
        return False
    return is_flexible(api_key, api_version)


class KafkaConnection(asyncio.Protocol):
    def __init__(self, context: BrokerContext, connections: set[KafkaConnection]) -> None:
        self.context = context
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: deque[asyncio.Future[list[bytes | memoryview] | None]] = deque()
        self.peer = "?"
        self.closing = False
        self.paused = False
        self.max_request_bytes = context.config.socket_request_max_bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both have the same API.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.connections.discard(self)
        for task in self.pending:
            task.cancel()
        self.pending.clear()

    def close(self, reason: str) -> None:
        if not self.closing:
            logger.warning("closing connection from %s: %s", self.peer, reason)
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        buffer = self.buffer
        buffer += data
        while len(buffer) >= 4:
            (size,) = _SIZE.unpack_from(buffer, 0)
            if size < 0 or size > self.max_request_bytes:
                # Refused before it is buffered: Kafka's socket.request.max.bytes guard.
                self.close(
                    f"request size {size} is outside 0..{self.max_request_bytes} "
                    "(socket.request.max.bytes)"
                )
                buffer.clear()
                return
            if len(buffer) < 4 + size:
                return
            frame = bytes(buffer[4 : 4 + size])
            del buffer[: 4 + size]
            self._submit(frame)
            if self.closing:
                return

    def _submit(self, frame: bytes) -> None:
        try:
            header, position = read_request_header(frame, _flexible_if_supported)
        except RemoteProtocolError as error:
            self.close(f"malformed request header: {error}")
            return
        handler = dispatcher.supported(header.api_key, header.api_version)
        if handler is None:
            if header.api_key == ApiKey.API_VERSIONS:
                # The ApiVersions fallback: an unknown version gets a v0-format
                # UNSUPPORTED_VERSION answer that still lists what we support.
                body = encode_entity(unsupported_version_response())
                self._enqueue_ready(frame_response(header, [body]))
                return
            self.close(
                f"unsupported API key {header.api_key} version {header.api_version} "
                f"(client {header.client_id!r})"
            )
            return
        try:
            request = read_request_body(header, frame, position)
        except RemoteProtocolError as error:
            self.close(f"malformed {ApiKey(header.api_key).name} v{header.api_version}: {error}")
            return
        task = asyncio.get_running_loop().create_task(self._run(handler, header, request))
        self.pending.append(task)
        task.add_done_callback(self._on_done)
        if len(self.pending) >= MAX_IN_FLIGHT and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    async def _run(
        self, handler: dispatcher.ApiHandler, header: RequestHeader, request: Any
    ) -> list[bytes | memoryview] | None:
        response = await handler.handle(self.context, header, request)
        if response is None:
            return None
        body = response if isinstance(response, list) else [encode_entity(response)]
        return frame_response(header, body)

    def _enqueue_ready(self, response: list[bytes | memoryview]) -> None:
        future: asyncio.Future[list[bytes | memoryview] | None] = (
            asyncio.get_running_loop().create_future()
        )
        future.set_result(response)
        self.pending.append(future)
        self._on_done(future)

    def _on_done(self, _task: object) -> None:
        pending = self.pending
        transport = self.transport
        while pending and pending[0].done():
            task = pending.popleft()
            if task.cancelled():
                continue
            error = task.exception()
            if error is not None:
                logger.error(
                    "handler failed for %s; closing the connection",
                    self.peer,
                    exc_info=error,
                )
                self.close("internal error in a handler")
                return
            response = task.result()
            if response is not None and transport is not None and not self.closing:
                transport.writelines(response)
        if self.paused and len(pending) < MAX_IN_FLIGHT // 2 and transport is not None:
            self.paused = False
            transport.resume_reading()
