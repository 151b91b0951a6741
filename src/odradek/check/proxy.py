"""A TCP proxy between Kafka clients and brokers that injects network faults.

Each broker gets its own proxy port. Clients connect to the addresses that Metadata,
FindCoordinator and DescribeCluster responses name, so the proxy rewrites those addresses to its
own ports (opening a port for a broker the first time a response names it); a broker that already
advertises a proxy port (the checker's local broker sets `advertised.listeners` to it) is left as
it is.

Faults (thread-safe; the proxy runs its own event loop in a background thread):

- `cut_nth(n)`: the n-th Produce request from now is forwarded and the connection is cut before its
  response reaches the client — the classic retry duplicate (the broker appended the batch, the
  client never heard so, and resends it). A Produce with acks=0 has no response: it is dropped
  and the connection cut, which is what a network failure does to a fire-and-forget write.
- `set_delay(seconds)`: hold every response for that long.
- `set_drop(True)`: silently drop every byte in both directions (a partition), until cleared.
- `cut_all()`: close every connection now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field

from odradek.check.wire import (
    PRODUCE,
    REWRITTEN_APIS,
    Address,
    RequestHeader,
    WireError,
    produce_acks,
    read_request_header,
    response_addresses,
    rewrite_response,
)

logger = logging.getLogger("odradek.check.proxy")

_MAX_FRAME = 200 * 1024 * 1024


@dataclass(slots=True)
class ProxyStats:
    connections: int = 0
    requests: int = 0
    responses: int = 0
    cuts: int = 0  # connections cut by a fault
    dropped_frames: int = 0
    delayed_responses: int = 0
    rewritten_responses: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(eq=False, slots=True)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    pending: dict[int, tuple[RequestHeader, bool]] = field(default_factory=dict)
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for writer in (self.client, self.upstream):
                with contextlib.suppress(Exception):
                    writer.transport.abort()


class FaultProxy:
    """Proxy `upstreams` (the bootstrap brokers) on `host`, rewriting advertised addresses."""

    def __init__(self, upstreams: Iterable[Address], host: str = "127.0.0.1") -> None:
        self.host = host
        self.stats = ProxyStats()
        self._upstreams = list(upstreams)
        self._listeners: dict[Address, tuple[asyncio.Server, int]] = {}  # upstream -> server, port
        self._own: set[Address] = set()
        self._connections: set[_Connection] = set()
        self._cut_countdown = 0
        self._delay = 0.0
        self._drop = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> str:
        """Start listening; returns the proxy's bootstrap.servers."""
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.result(timeout=10)
        return self.bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host}:{self.port_for(upstream)}" for upstream in self._upstreams)

    def port_for(self, upstream: Address) -> int:
        return self._listeners[upstream][1]

    def _run(self, ready: Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            for upstream in self._upstreams:
                loop.run_until_complete(self._listen(upstream))
        except Exception as error:
            ready.set_exception(error)
            return
        ready.set_result(None)
        loop.run_forever()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            for connection in list(self._connections):
                connection.close()
            for server, _ in self._listeners.values():
                server.close()
            loop.stop()

        loop.call_soon_threadsafe(lambda: loop.create_task(shutdown()))
        self._thread.join(timeout=10)
        self._loop = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- faults (any thread) -------------------------------------------------------------------
    def cut_nth(self, n: int = 1) -> None:
        """Cut the connection around the n-th Produce request from now."""
        with self._lock:
            self._cut_countdown = max(1, n)

    def set_delay(self, seconds: float) -> None:
        self._delay = max(0.0, seconds)

    def set_drop(self, drop: bool) -> None:
        self._drop = drop

    def cut_all(self) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._cut_all)

    def clear(self) -> None:
        with self._lock:
            self._cut_countdown = 0
        self._delay = 0.0
        self._drop = False

    @property
    def cut_armed(self) -> bool:
        return self._cut_countdown > 0

    def _cut_all(self) -> None:
        for connection in list(self._connections):
            self.stats.cuts += 1
            connection.close()

    # -- plumbing (event loop thread) ----------------------------------------------------------
    async def _listen(self, upstream: Address) -> int:
        existing = self._listeners.get(upstream)
        if existing is not None:
            return existing[1]

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Swallowed at shutdown: asyncio's stream callback (3.11) raises on a cancelled task.
            with contextlib.suppress(asyncio.CancelledError):
                await self._serve(upstream, reader, writer)

        server = await asyncio.start_server(accept, self.host, 0)
        port = int(server.sockets[0].getsockname()[1])
        self._listeners[upstream] = (server, port)
        self._own.add((self.host, port))
        logger.debug("proxy %s:%d -> %s:%d", self.host, port, *upstream)
        return port

    async def _serve(
        self, upstream: Address, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*upstream)
        except OSError:
            client.transport.abort()
            return
        connection = _Connection(client, upstream_writer)
        self._connections.add(connection)
        self.stats.connections += 1
        try:
            await asyncio.gather(
                self._requests(connection, client_reader),
                self._responses(connection, upstream_reader),
            )
        except (OSError, asyncio.IncompleteReadError, WireError, ConnectionError):
            pass
        finally:
            connection.close()
            self._connections.discard(connection)

    def _take_cut(self, header: RequestHeader) -> bool:
        if header.api_key != PRODUCE:
            return False
        with self._lock:
            if self._cut_countdown <= 0:
                return False
            self._cut_countdown -= 1
            return self._cut_countdown == 0

    async def _requests(self, connection: _Connection, reader: asyncio.StreamReader) -> None:
        while not connection.closed:
            frame = await _read_frame(reader)
            if self._drop:
                self.stats.dropped_frames += 1
                continue
            header = read_request_header(frame)
            self.stats.requests += 1
            cut = self._take_cut(header)
            if cut and produce_acks(frame) == 0:
                # No response will come: lose the write with the connection.
                self.stats.cuts += 1
                self.stats.dropped_frames += 1
                connection.close()
                return
            connection.pending[header.correlation_id] = (header, cut)
            connection.upstream.write(struct.pack(">i", len(frame)) + frame)
            await connection.upstream.drain()
            if header.api_key == PRODUCE and not cut:
                # acks=0 produces get no response; forget them so `pending` stays small.
                with contextlib.suppress(WireError):
                    if produce_acks(frame) == 0:
                        connection.pending.pop(header.correlation_id, None)

    async def _responses(self, connection: _Connection, reader: asyncio.StreamReader) -> None:
        while not connection.closed:
            frame = await _read_frame(reader)
            if self._drop:
                self.stats.dropped_frames += 1
                continue
            (correlation_id,) = struct.unpack_from(">i", frame)
            request, cut = connection.pending.pop(correlation_id, (None, False))
            if cut:
                # The broker did the work; the client will never know.
                self.stats.cuts += 1
                connection.close()
                return
            if self._delay > 0:
                self.stats.delayed_responses += 1
                await asyncio.sleep(self._delay)
            if request is not None and request.api_key in REWRITTEN_APIS:
                frame = await self._rewrite(frame, request)
            self.stats.responses += 1
            connection.client.write(struct.pack(">i", len(frame)) + frame)
            await connection.client.drain()

    async def _rewrite(self, frame: bytes, request: RequestHeader) -> bytes:
        try:
            addresses = response_addresses(frame, request.api_key, request.api_version)
        except WireError as error:
            logger.warning("cannot read a response to rewrite its addresses: %s", error)
            return frame
        ports: dict[Address, Address] = {}
        for address in addresses:
            if address in self._own:
                ports[address] = address
            else:
                ports[address] = (self.host, await self._listen(address))
        self.stats.rewritten_responses += 1
        return rewrite_response(frame, request.api_key, request.api_version, ports.__getitem__)


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    if size < 4 or size > _MAX_FRAME:
        raise WireError(f"frame size {size}")
    return await reader.readexactly(size)


class LinkProxy:
    """A plain TCP forwarder from its own port on 127.0.0.1 to `target` (one link between two
    nodes of the checker's cluster). `cut()` closes every connection and refuses new ones until
    `heal()`: the two ends stay up, only the link between them is gone, as in a network partition
    (a refused connection rather than a silent drop, so both sides notice within their
    timeouts as they would a partition's reset connections)."""

    def __init__(self, target: Address) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.5)  # so `stop` ends the accept loop
        self.port: int = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="odradek-link", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink), name="odradek-link-pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if self._cut.is_set():
                    break
                sink.sendall(chunk)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        with self._lock:
            for end in (source, sink):
                if end in self._open:
                    self._open.remove(end)
                    end.close()

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            connections, self._open = self._open, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def heal(self) -> None:
        self._cut.clear()

    def stop(self) -> None:
        self._closed.set()
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()
