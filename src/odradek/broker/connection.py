"""One client connection: frames in, handlers run (pipelined), responses out in request order."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from typing import Any

from odradek.broker import dispatcher
from odradek.broker.context import CURRENT_LISTENER, BrokerContext
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


# Reads land in this scratch buffer; a frame larger than what is left of it, or of at least
# LARGE_FRAME_BYTES and not yet complete, gets a buffer of its own, and the socket is then read
# straight into that frame (no accumulate-and-slice): a small frame is copied out of scratch
# whole, which for a producer's 100-250 KB batches was a copy of every byte.
READ_BUFFER_BYTES = 256 * 1024
LARGE_FRAME_BYTES = 64 * 1024
# Large-frame buffers are reused once their request is answered and nothing still views them:
# a fresh 1 MiB bytearray per produce request costs a zero fill plus, when the allocator has
# given the pages back, 256 page faults, which was a fifth of a 1 KiB-record produce's CPU.
# A pooled buffer has at least this capacity (a default-sized producer batch, with room for
# the request around it); the frame is a view of its first `size` bytes.
POOLED_FRAME_BYTES = 1024 * 1024 + 64 * 1024
# Free buffers kept by a broker for all its connections (a new connection starts with warm
# buffers instead of allocating its own), and the largest kept: a rare huge request does not
# pin its memory. Buffers of requests still being answered (acks=all waits) are not counted.
POOLED_FRAMES = 16
POOLED_FRAME_MAX_BYTES = 8 * 1024 * 1024
# Large frames a connection may hold at once (read, not yet answered); at this many the socket
# is not read until one is answered. uvloop reads a readable socket up to 32 times per loop
# iteration, so a client with megabytes queued used to get a dozen frames read before any of
# their requests ran: each needed a fresh buffer, and the pool was always empty when asked.
# Bounding them keeps every large frame in a warm pooled buffer (and a connection's memory at
# about this many frames), as Kafka bounds a channel by muting it while a request is processed.
MAX_LARGE_FRAMES_IN_FLIGHT = 8


def _is_unexported(buffer: bytearray) -> bool:
    """Whether no memoryview of `buffer` is alive: a bytearray with exports cannot change
    size (BufferError), so taking its last byte off and putting it back tells (O(1): the
    allocation is kept)."""
    last = buffer[-1]
    try:
        del buffer[-1:]
    except BufferError:
        return False
    buffer.append(last)
    return True


class KafkaConnection(asyncio.BufferedProtocol):
    """One client connection. `free_buffers` is the broker's pool of free large-frame
    buffers, shared by its connections (a connection of its own makes a private pool)."""

    def __init__(
        self,
        context: BrokerContext,
        connections: set[KafkaConnection],
        listener_name: str | None = None,
        free_buffers: list[bytearray] | None = None,
    ) -> None:
        self.context = context
        self.listener_name = listener_name
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.scratch = bytearray(READ_BUFFER_BYTES)
        self.scratch_view = memoryview(self.scratch)
        self.scratch_start = 0  # first unconsumed byte in scratch
        self.scratch_end = 0  # end of the bytes received into scratch
        self.frame: memoryview | None = None  # a large frame being read directly
        self.frame_buffer: bytearray | None = None  # the buffer under `frame`
        self.frame_filled = 0
        self.free_buffers: list[bytearray] = [] if free_buffers is None else free_buffers
        # After a large frame, the next read takes only the next frame's size prefix (as
        # Kafka's NetworkReceive reads every frame), so a large frame that follows is read
        # straight into its own buffer: read into the scratch buffer, up to 256 KiB of it had
        # to be copied out, a fifth of the bytes of a stream of ~700 KB produce requests.
        self.read_size_prefix_only = False
        self.large_frames_in_flight = 0  # frames with a buffer of their own, not yet answered
        self.pending: deque[asyncio.Future[list[bytes | memoryview] | None]] = deque()
        self.peer = "?"
        self.client_host = ""
        self.closing = False
        self.paused = False
        self.max_request_bytes = context.config.socket_request_max_bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both have the same API.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.client_host = f"/{peer[0]}" if peer else ""
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

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.frame is not None:
            return self.frame[self.frame_filled :]
        if self.scratch_end == len(self.scratch):
            # Move the unconsumed tail (less than one frame) to the front.
            remaining = self.scratch_end - self.scratch_start
            self.scratch[:remaining] = self.scratch_view[self.scratch_start : self.scratch_end]
            self.scratch_start, self.scratch_end = 0, remaining
        if self.read_size_prefix_only:
            # Nothing unconsumed but part of a size prefix: read up to its end.
            return self.scratch_view[self.scratch_end : self.scratch_start + 4]
        return self.scratch_view[self.scratch_end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.closing:
            return
        if self.frame is not None:
            self.frame_filled += nbytes
            if self.frame_filled == len(self.frame):
                frame, buffer = self.frame, self.frame_buffer
                self.frame = self.frame_buffer = None
                self.read_size_prefix_only = True
                self._submit(frame, buffer)
            return
        self.scratch_end += nbytes
        scratch = self.scratch
        while self.scratch_end - self.scratch_start >= 4 and not self.closing:
            start = self.scratch_start
            (size,) = _SIZE.unpack_from(scratch, start)
            if size < 0 or size > self.max_request_bytes:
                # Refused from its size prefix, before it is buffered.
                self.close(
                    f"request size {size} is outside 0..{self.max_request_bytes} "
                    "(socket.request.max.bytes)"
                )
                return
            available = self.scratch_end - start - 4
            self.read_size_prefix_only = False
            if available >= size:
                small_frame = scratch[start + 4 : start + 4 + size]
                self.scratch_start = start + 4 + size
                self._submit(small_frame)
                continue
            if size >= LARGE_FRAME_BYTES or size > len(scratch) - start - 4:
                # Large, or too big for what is left of scratch: give it its own buffer.
                self.large_frames_in_flight += 1
                buffer = self._frame_buffer(size)
                frame = memoryview(buffer)[:size]
                frame[:available] = self.scratch_view[start + 4 : self.scratch_end]
                self.frame, self.frame_buffer, self.frame_filled = frame, buffer, available
                self.scratch_start = self.scratch_end = 0
            return
        if self.scratch_start == self.scratch_end:
            self.scratch_start = self.scratch_end = 0

    def _frame_buffer(self, size: int) -> bytearray:
        """A buffer of at least `size` bytes: a free pooled one, or a new one."""
        free = self.free_buffers
        while free:
            buffer = free.pop()
            if len(buffer) >= size:
                return buffer
        return bytearray(max(size, POOLED_FRAME_BYTES))

    def _recycle(self, buffer: bytearray) -> None:
        """Keep `buffer` for a later frame once its request is answered, unless something
        still holds a view of it (then it is left to the garbage collector)."""
        self.large_frames_in_flight -= 1
        self._update_reading()
        if (
            len(self.free_buffers) < POOLED_FRAMES
            and len(buffer) <= POOLED_FRAME_MAX_BYTES
            and not self.closing
            and _is_unexported(buffer)
        ):
            self.free_buffers.append(buffer)

    def _submit(self, frame: bytearray | memoryview, buffer: bytearray | None = None) -> None:
        try:
            header, position = read_request_header(frame, _flexible_if_supported, self.client_host)
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
                if buffer is not None:
                    del frame
                    self._recycle(buffer)
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
        del request, frame
        self.pending.append(task)
        task.add_done_callback(self._on_done)
        if buffer is not None:
            task.add_done_callback(lambda _task: self._recycle(buffer))
        self._update_reading()

    def _update_reading(self) -> None:
        """Pause reading at MAX_IN_FLIGHT requests or MAX_LARGE_FRAMES_IN_FLIGHT large frames;
        resume below half the requests and below the frame bound."""
        transport = self.transport
        if transport is None or self.closing:
            return
        large = self.large_frames_in_flight
        if not self.paused:
            if len(self.pending) >= MAX_IN_FLIGHT or large >= MAX_LARGE_FRAMES_IN_FLIGHT:
                self.paused = True
                transport.pause_reading()
        elif len(self.pending) < MAX_IN_FLIGHT // 2 and large < MAX_LARGE_FRAMES_IN_FLIGHT:
            self.paused = False
            transport.resume_reading()

    async def _run(
        self, handler: dispatcher.ApiHandler, header: RequestHeader, request: Any
    ) -> list[bytes | memoryview] | None:
        if self.listener_name is not None:
            CURRENT_LISTENER.set(self.listener_name)  # this task's own context copy
        serving = self.context.serving
        if serving is not None and not serving.is_set():
            # A cluster broker not yet unfenced: the request waits unanswered, in order (Kafka's
            # broker enables request processing only once the controller has unfenced it).
            await serving.wait()
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
            if isinstance(error, dispatcher.CloseConnection):
                self.close(str(error))
                return
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
        if self.paused:
            self._update_reading()
