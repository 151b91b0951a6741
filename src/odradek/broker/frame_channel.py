"""A Kafka request channel that hands back raw response bodies, read without extra copies.

`KafkaChannel` reads through an `asyncio.StreamReader` and decodes with kio: fine for control
requests, but a replica Fetch response carries megabytes of batches, and the StreamReader's
buffer, `readexactly`, a slice and kio's records field would each copy them. Here a
`BufferedProtocol` receives every response frame straight into one reused buffer (the
kernel's copy is the only one) and `request` returns a memoryview of the body after the
response header, valid until the next request; the replica fetcher decodes it with
`protocol.fetch_response_reader`, whose records are views of that buffer, and appends them
before it sends its next Fetch.

One request in flight at a time, as Kafka's replica fetcher sends them. A broken connection,
a timeout or a reply with the wrong correlation id raises `ChannelError`; the next request
reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any, cast

from odradek.broker.kafka_channel import ChannelError
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import (
    encode_entity,
    is_flexible,
    make,
    request_type,
    skip_tagged_fields,
)

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_REQUEST_HEADER = struct.Struct(">hhi")  # api key, version, correlation id


class _FrameProtocol(asyncio.BufferedProtocol):
    """Reads size-prefixed frames: 4 bytes of size, then the frame into a reused buffer.

    The buffer grows (a new one, so views of the old stay valid) and is otherwise reused: a
    frame is valid until the next one is read, and the channel reads the next only after its
    caller is done with the last (one request in flight). Reuse spares zero-filling and
    faulting in megabytes of fresh memory per response.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._size_prefix = bytearray(4)
        self._buffer = bytearray(64 * 1024)
        self._frame: memoryview | None = None
        self._filled = 0
        self._waiter: asyncio.Future[memoryview] | None = None
        self._error: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._frame is None:
            return memoryview(self._size_prefix)[self._filled :]
        return self._frame[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        if self._frame is None:
            if self._filled < 4:
                return
            (size,) = _INT32.unpack(self._size_prefix)
            if size < 4:
                self._fail(ChannelError(f"response frame of {size} bytes"))
                return
            if size > len(self._buffer):
                self._buffer = bytearray(size)
            self._frame = memoryview(self._buffer)[:size]
            self._filled = 0
            return
        if self._filled == len(self._frame):
            frame = self._frame
            self._frame = None
            self._filled = 0
            waiter = self._waiter
            self._waiter = None
            if waiter is None or waiter.done():
                self._fail(ChannelError("a response nobody waits for"))
            else:
                waiter.set_result(frame)

    def eof_received(self) -> bool | None:
        self._fail(ChannelError("connection closed by the peer"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ChannelError(f"connection lost: {exc}" if exc else "connection closed"))

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def next_frame(self) -> asyncio.Future[memoryview]:
        """The next frame; call right after writing a request (before any await)."""
        waiter: asyncio.Future[memoryview] = asyncio.get_running_loop().create_future()
        if self._error is not None:
            waiter.set_exception(self._error)
        else:
            self._waiter = waiter
        return waiter


class FrameChannel:
    """One connection to `host:port` for requests whose responses are read raw (see above)."""

    def __init__(self, host: str, port: int, client_id: str, timeout_s: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id.encode()
        self.timeout_s = timeout_s
        self._protocol: _FrameProtocol | None = None
        self._lock = asyncio.Lock()
        self._correlation_id = 0

    async def request(
        self, api_key: int, version: int, timeout_s: float | None = None, **fields: Any
    ) -> memoryview:
        """Send a request built from `fields` (kio names); return the response body (after the
        response header) as a view valid until the next request. Raises `ChannelError`."""
        body = encode_entity(make(request_type(api_key, version), **fields))
        async with self._lock:
            try:
                async with asyncio.timeout(timeout_s or self.timeout_s):
                    return await self._round_trip(api_key, version, body)
            except (OSError, TimeoutError, ChannelError) as error:
                self._close()
                raise ChannelError(f"{self.host}:{self.port}: {error or 'timed out'}") from None
            except asyncio.CancelledError:
                self._close()  # its answer would arrive as the next request's
                raise

    async def _round_trip(self, api_key: int, version: int, body: bytes) -> memoryview:
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.transport.is_closing():
            loop = asyncio.get_running_loop()
            _transport, protocol = await loop.create_connection(
                _FrameProtocol, self.host, self.port
            )
            self._protocol = protocol
        assert protocol.transport is not None
        self._correlation_id += 1
        flexible = is_flexible(api_key, version)
        header = _REQUEST_HEADER.pack(api_key, version, self._correlation_id)
        header += _INT16.pack(len(self.client_id)) + self.client_id
        if flexible:
            header += b"\x00"
        protocol.transport.writelines((_INT32.pack(len(header) + len(body)), header, body))
        frame = await protocol.next_frame()
        (correlation_id,) = _INT32.unpack_from(frame, 0)
        if correlation_id != self._correlation_id:
            raise ChannelError(
                f"response correlation id {correlation_id}, expected {self._correlation_id}"
            )
        # ApiVersions answers with response header v0 at every version (KIP-511).
        if flexible and api_key != ApiKey.API_VERSIONS:
            return frame[skip_tagged_fields(frame, 4) :]
        return frame[4:]

    def _close(self) -> None:
        protocol = self._protocol
        self._protocol = None
        if protocol is not None and protocol.transport is not None:
            with contextlib.suppress(Exception):
                protocol.transport.close()

    async def close(self) -> None:
        self._close()
