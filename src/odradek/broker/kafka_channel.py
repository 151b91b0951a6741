"""An asyncio Kafka request channel from one node to another (Kafka's NodeToControllerChannel).

Requests are encoded with kio's schemas (`odradek.protocol.codec`), sent one at a time, and the
decoded kio response returned. A broken connection raises `ChannelError`; the next request
reconnects. Used by brokers to reach the controller (registration, heartbeats, the metadata
fetch, forwarded admin requests). The replica fetchers use `frame_channel.FrameChannel`, which
reads responses without copying their records.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

from kio.serial import entity_reader

from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import encode_entity, is_flexible, make, request_type, response_type

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")


class ChannelError(ConnectionError):
    """The peer could not be reached or closed the connection mid-request."""


class KafkaChannel:
    """One connection to `host:port`, serialized: one request in flight at a time."""

    def __init__(self, host: str, port: int, client_id: str, timeout_s: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id.encode()
        self.timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._correlation_id = 0

    async def request(
        self, api_key: int, version: int, timeout_s: float | None = None, **fields: Any
    ) -> Any:
        """Send a request built from `fields` (kio names); return the decoded response."""
        return await self.send(
            make(request_type(api_key, version), **fields), api_key, version, timeout_s
        )

    async def send(
        self, entity: Any, api_key: int, version: int, timeout_s: float | None = None
    ) -> Any:
        """Send a kio request entity of `version`; return the decoded response."""
        body = encode_entity(entity)
        async with self._lock:
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the response
                # and drops a cancellation that arrives with it (a stopping task runs on).
                async with asyncio.timeout(timeout_s or self.timeout_s):
                    return await self._round_trip(api_key, version, body)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
                self._close()
                raise ChannelError(f"{self.host}:{self.port}: {error or 'timed out'}") from None

    async def _round_trip(self, api_key: int, version: int, body: bytes) -> Any:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._correlation_id += 1
        flexible = is_flexible(api_key, version)
        header = _INT16.pack(api_key) + _INT16.pack(version) + _INT32.pack(self._correlation_id)
        header += _INT16.pack(len(self.client_id)) + self.client_id
        if flexible:
            header += b"\x00"
        frame = header + body
        self._writer.write(_INT32.pack(len(frame)) + frame)
        await self._writer.drain()
        (size,) = _INT32.unpack(await self._reader.readexactly(4))
        response = await self._reader.readexactly(size)
        position = 4 + (1 if flexible and api_key != ApiKey.API_VERSIONS else 0)
        decoded, _ = entity_reader(response_type(api_key, version))(response[position:], 0)
        return decoded

    def _close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._reader = self._writer = None

    async def close(self) -> None:
        self._close()
