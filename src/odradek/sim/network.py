"""The simulated network: nodes with addresses, in-memory TCP-like connections, seeded faults.

A node is a name (`broker-0`, `client-1`); a server listens on `(host, port)` where the host is
its node's name. A connection is two ordered byte pipes. Each write is delivered after a latency
drawn from the seeded RNG, never before an earlier write on the same pipe (TCP keeps order
within a connection), so bytes on different connections are reordered freely.

Faults:
- `reset(connection)`: both ends see `connection_lost(ConnectionResetError)`; bytes in flight
  are lost (the "request arrived, response never came back" duplicate scenario).
- `cut(source, destination, until)`: a one-way partition. Bytes from `source` to
  `destination` are held back until the cut heals (TCP retransmits them), and new connections
  between them wait; clients time out and reconnect as they would on a real network.
- `node_down(node)`: every connection of a crashed node is reset and it accepts no new ones.

Nothing here touches a socket. Deliveries run in the receiving node's context, so a crashed
node's pending deliveries are cancelled with its timers.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from odradek.sim.loop import SimLoop, call_in_node, current_node
from odradek.sim.trace import Trace


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """One-way latency in seconds: uniform in [low, high], with a rare spike."""

    low: float = 0.0002
    high: float = 0.002
    spike_probability: float = 0.01
    spike: float = 0.05

    def draw(self, rng: random.Random) -> float:
        latency = rng.uniform(self.low, self.high)
        if rng.random() < self.spike_probability:
            latency += rng.uniform(0, self.spike)
        return latency


class _SimSocket:
    """What `asyncio.Server.sockets` callers read: the bound address."""

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)

    def getsockname(self) -> tuple[str, int]:
        return self._address


class SimServer:
    """A listening endpoint (the part of `asyncio.Server` the broker uses)."""

    def __init__(
        self,
        network: SimNetwork,
        node: str,
        host: str,
        port: int,
        factory: Callable[[], asyncio.BaseProtocol],
    ) -> None:
        self.network = network
        self.node = node
        self.host = host
        self.port = port
        self.factory = factory
        self.sockets = [_SimSocket(host, port)]
        self.serving = True

    def close(self) -> None:
        self.serving = False
        self.network.servers.pop((self.host, self.port), None)

    async def wait_closed(self) -> None:
        return None

    def is_serving(self) -> bool:
        return self.serving


@dataclass(slots=True)
class _Pipe:
    """One direction of a connection: its last scheduled delivery keeps bytes in order.

    `pending` is the data of the last delivery while it is still scheduled and has not
    started: a write that would arrive no earlier joins it (one timer, one hand-over).
    """

    source: str
    destination: str
    last_delivery: float = 0.0
    pending: list[bytes] | None = None


@dataclass(eq=False, slots=True)
class Connection:
    """Two transports joined by two pipes; `number` names it in the trace."""

    number: int
    client_node: str
    server_node: str
    client: SimTransport = field(init=False)
    server: SimTransport = field(init=False)
    broken: bool = False

    def describe(self) -> str:
        return f"#{self.number} {self.client_node}->{self.server_node}"


class SimTransport(asyncio.Transport):
    """One end of a simulated connection, as `asyncio.Transport`."""

    def __init__(
        self,
        network: SimNetwork,
        connection: Connection,
        node: str,
        peer_node: str,
        local: tuple[str, int],
        remote: tuple[str, int],
    ) -> None:
        super().__init__()
        self.network = network
        self.connection = connection
        self.node = node
        self.peer_node = peer_node
        self.local = local
        self.remote = remote
        self.protocol: asyncio.BaseProtocol | None = None
        self.peer: SimTransport | None = None
        self.pipe = _Pipe(node, peer_node)
        self.closing = False
        self.lost = False
        self.reading = True
        self.inbox: list[bytes] = []
        self.eof_pending = False
        # The context deliveries to this end run in (its node's): made once, reused.
        self.context = contextvars.copy_context()
        self.context.run(current_node.set, node)

    # -- asyncio.Transport -------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.remote
        if name == "sockname":
            return self.local
        return default

    def is_closing(self) -> bool:
        return self.closing or self.lost

    def close(self) -> None:
        if self.closing or self.lost:
            return
        self.closing = True
        self.network.send_close(self)

    def abort(self) -> None:
        self.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def is_reading(self) -> bool:
        return self.reading and not self.lost

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        if self.reading:
            return
        self.reading = True
        if self.inbox or self.eof_pending:
            self.network.loop.call_soon(self.network.drain_inbox, self)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or self.lost:
            return
        self.network.send(self, data if type(data) is bytes else bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        self.close()

    def can_write_eof(self) -> bool:
        return False


class SimNetwork:
    """Every node's listeners and connections, and the faults between them."""

    def __init__(
        self, loop: SimLoop, rng: random.Random, trace: Trace, latency: LatencyModel
    ) -> None:
        self.loop = loop
        self.rng = rng
        self.trace = trace
        self.latency = latency
        self.servers: dict[tuple[str, int], SimServer] = {}
        self.connections: dict[int, Connection] = {}
        self.down: set[str] = set()
        # (source, destination) -> virtual time the one-way cut heals.
        self.cuts: dict[tuple[str, str], float] = {}
        self._next_connection = 1
        self._next_port: dict[str, int] = {}
        self.bytes_delivered = 0
        # Every delivered byte, in delivery order: two runs of one seed must match it.
        self.digest = hashlib.blake2b(digest_size=16)
        loop.network = self

    # -- listening and connecting ------------------------------------------------------------

    def listen(
        self, node: str, host: str, port: int, factory: Callable[[], asyncio.BaseProtocol]
    ) -> SimServer:
        if host != node:
            raise OSError(f"node {node} cannot listen on another node's address {host}")
        if port == 0:
            port = 9092
        if (host, port) in self.servers:
            raise OSError(f"address {host}:{port} already in use")
        server = SimServer(self, node, host, port, factory)
        self.servers[(host, port)] = server
        self.trace.event(f"listen {host}:{port}")
        return server

    async def connect(
        self, node: str, host: str, port: int, factory: Callable[[], asyncio.BaseProtocol]
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        # The handshake: one round trip, held back by a cut either way.
        await asyncio.sleep(self.latency.draw(self.rng) * 2)
        while True:
            heal = max(self.cuts.get((node, host), 0.0), self.cuts.get((host, node), 0.0))
            if heal <= self.loop.time():
                break
            await asyncio.sleep(heal - self.loop.time())
        server = self.servers.get((host, port))
        if server is None or host in self.down or node in self.down:
            self.trace.event(f"connect {node} -> {host}:{port} refused")
            raise ConnectionRefusedError(f"connection to {host}:{port} refused")
        number = self._next_connection
        self._next_connection += 1
        client_port = self._next_port.get(node, 40000)
        self._next_port[node] = client_port + 1
        connection = Connection(number, node, host)
        client = SimTransport(self, connection, node, host, (node, client_port), (host, port))
        serving = SimTransport(self, connection, host, node, (host, port), (node, client_port))
        client.peer, serving.peer = serving, client
        connection.client, connection.server = client, serving
        self.connections[number] = connection
        protocol = factory()
        client.protocol = protocol
        server_protocol = call_in_node(host, server.factory)
        serving.protocol = server_protocol
        call_in_node(host, lambda: server_protocol.connection_made(serving))
        protocol.connection_made(client)
        self.trace.event(f"connect {connection.describe()}:{port}")
        return client, protocol

    # -- bytes -------------------------------------------------------------------------------

    def _delivery_time(self, pipe: _Pipe) -> float:
        now = self.loop.time()
        when = now + self.latency.draw(self.rng)
        heal = self.cuts.get((pipe.source, pipe.destination)) if self.cuts else None
        if heal is not None and heal > now:
            when = max(when, heal + self.latency.draw(self.rng))
        # Strictly after the previous delivery: equal timer deadlines pop in no fixed order.
        when = max(when, pipe.last_delivery + 1e-7)
        pipe.last_delivery = when
        return when

    def _schedule(self, transport: SimTransport, callback: Callable[[], None]) -> None:
        peer = transport.peer
        assert peer is not None
        transport.pipe.pending = None
        self.loop.call_at(self._delivery_time(transport.pipe), callback, context=peer.context)

    def send(self, transport: SimTransport, data: bytes) -> None:
        if transport.connection.broken or not data:
            return
        peer = transport.peer
        assert peer is not None
        pipe = transport.pipe
        previous = pipe.last_delivery
        when = self._delivery_time(pipe)
        pending = pipe.pending
        if pending is not None and when - previous < 2e-7:
            # It would land right behind the delivery still waiting: ride along with it.
            pipe.last_delivery = previous
            pending.append(data)
            return
        pending = pipe.pending = [data]
        connection = transport.connection
        self.loop.call_at(
            when, self._deliver_pending, connection, peer, pipe, pending, context=peer.context
        )

    def _deliver_pending(
        self, connection: Connection, receiver: SimTransport, pipe: _Pipe, pending: list[bytes]
    ) -> None:
        if pipe.pending is pending:
            pipe.pending = None
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        self._deliver(connection, receiver, data)

    def send_close(self, transport: SimTransport) -> None:
        connection = transport.connection
        # The closing end is done at once; the peer hears of it after the bytes before it.
        self.loop.call_soon(self._lose, transport, None)
        if connection.broken:
            return
        peer = transport.peer
        assert peer is not None
        self._schedule(transport, lambda: self._deliver_close(connection, peer))

    def _deliver(self, connection: Connection, receiver: SimTransport, data: bytes) -> None:
        if connection.broken or receiver.lost:
            return
        if not receiver.reading or receiver.inbox:
            receiver.inbox.append(data)
            return
        self._hand_to_protocol(receiver, data)

    def _hand_to_protocol(self, receiver: SimTransport, data: bytes) -> None:
        self.bytes_delivered += len(data)
        self.digest.update(receiver.node.encode())
        self.digest.update(data)
        protocol = receiver.protocol
        if isinstance(protocol, asyncio.BufferedProtocol):
            view = memoryview(data)
            while view and not receiver.lost:
                buffer = memoryview(protocol.get_buffer(len(view)))
                size = min(len(buffer), len(view))
                buffer[:size] = view[:size]
                protocol.buffer_updated(size)
                view = view[size:]
        elif isinstance(protocol, asyncio.Protocol):
            protocol.data_received(data)

    def drain_inbox(self, receiver: SimTransport) -> None:
        while receiver.inbox and receiver.reading and not receiver.lost:
            self._hand_to_protocol(receiver, receiver.inbox.pop(0))
        if receiver.eof_pending and not receiver.inbox and receiver.reading:
            receiver.eof_pending = False
            self._lose(receiver, None)

    def _deliver_close(self, connection: Connection, receiver: SimTransport) -> None:
        if receiver.lost:
            return
        if receiver.inbox:
            receiver.eof_pending = True
            return
        self._lose(receiver, None)

    def _lose(self, transport: SimTransport, error: Exception | None) -> None:
        if transport.lost:
            return
        transport.lost = True
        transport.closing = True
        transport.inbox.clear()
        if transport.protocol is not None:
            transport.protocol.connection_lost(error)
        connection = transport.connection
        if connection.client.lost and connection.server.lost:
            self.connections.pop(connection.number, None)

    # -- faults ------------------------------------------------------------------------------

    def reset(self, connection: Connection, reason: str) -> None:
        """Break a connection: bytes in flight are lost, both ends see a reset."""
        if connection.broken:
            return
        connection.broken = True
        self.trace.event(f"reset {connection.describe()} ({reason})")
        for end in (connection.client, connection.server):
            self.loop.call_soon(self._lose, end, ConnectionResetError(reason), context=end.context)

    def cut(self, source: str, destination: str, seconds: float) -> None:
        """Hold back every byte from `source` to `destination` for `seconds`."""
        heal = self.loop.time() + seconds
        self.cuts[(source, destination)] = max(heal, self.cuts.get((source, destination), 0.0))
        self.trace.event(f"cut {source} -> {destination} for {seconds * 1000:.0f} ms")

    def heal_all(self) -> None:
        self.cuts.clear()

    def node_down(self, node: str) -> None:
        """A crashed node: reset its connections, refuse new ones, stop listening."""
        self.down.add(node)
        for key in [key for key, server in self.servers.items() if server.node == node]:
            del self.servers[key]
        for connection in list(self.connections.values()):
            if node in (connection.client_node, connection.server_node):
                self.reset(connection, f"{node} crashed")

    def close_all(self) -> None:
        """The run is over: every transport still open counts as closing (a stream writer
        freed after the loop closed would otherwise warn that it was never closed)."""
        for connection in self.connections.values():
            connection.client.closing = connection.server.closing = True

    def node_up(self, node: str) -> None:
        self.down.discard(node)

    def connections_of(self, node: str) -> list[Connection]:
        return [
            connection
            for connection in self.connections.values()
            if not connection.broken and node in (connection.client_node, connection.server_node)
        ]
