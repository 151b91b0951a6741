"""The checker's own cluster: a controller and N brokers as `odradek serve` child processes.

The checker never imports the broker (nor `odradek.cluster`, which reaches into the protocol
layer): it starts the processes itself, as `local_broker.py` does for one broker, and reads
partition state with a Metadata v12 request it encodes with kio.

    clients -> FaultProxy (one port per broker) -> CLIENT listener of each broker
    broker a -> link proxy (a->b) -> REPL<a> listener of broker b     (replication, KIP-392 aside)
    broker a -> controller proxy (a) -> the controller                 (registration, metadata)

Each broker `a` replicates over its own listener name `REPL<a>` (`inter.broker.listener.name`),
and every broker advertises its `REPL<a>` listener at the address of the link proxy `a -> b`: so
each direction between two brokers has a proxy of its own, and `isolate(b)` can cut broker `b` off
from the other brokers and from the controller while its CLIENT listener stays reachable — the
zombie-leader setup Kafka documents, without network namespaces (no root needed).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from odradek.check.local_broker import BROKER_OVERRIDES, BrokerStartError
from odradek.check.proxy import LinkProxy

CONTROLLER_ID = 0

# Timers short enough that a 20-second fault phase sees a failover: a broker that stops
# heartbeating is fenced after 4 s; a follower that stops fetching leaves the ISR after 3 s.
SESSION_TIMEOUT_MS = 4000
LAG_TIME_MAX_MS = 3000
CLUSTER_OVERRIDES = {
    "broker.session.timeout.ms": str(SESSION_TIMEOUT_MS),
    "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": str(LAG_TIME_MAX_MS),
}

UP = "up"
DOWN = "down"
PAUSED = "paused"
ISOLATED = "isolated"


class PortReservation:
    """Ports held for a cluster's lifetime by bound, never-listening sockets with SO_REUSEADDR:
    a node (asyncio binds with SO_REUSEADDR) can still listen on one, but no `bind(0)` or
    outgoing connection elsewhere picks it meanwhile — not even while its node is down between
    a kill and a restart. (Asking for a free port and closing it at once lets the kernel hand
    the same port to the next `bind(0)`, which a cluster of a dozen listeners does meet.)"""

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []

    def take(self) -> int:
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        self._sockets.append(holder)
        return int(holder.getsockname()[1])

    def close(self) -> None:
        for holder in self._sockets:
            holder.close()
        self._sockets.clear()


@dataclass(frozen=True, slots=True)
class PartitionView:
    """One partition as a Metadata v12 response states it; `leader` -1 when it has none."""

    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class LocalCluster:
    """A controller (node 0) and brokers 1..`brokers` under `directory`, each broker listening
    for clients on `client_ports[node]` and advertising that listener at `advertised[node]` (the
    fault proxy's port for it; set before `start`).

    `overrides` go to every node on top of the checker's short timers. Raises `BrokerStartError`
    when a node exits or the brokers do not all register within the start timeout.
    """

    def __init__(
        self,
        directory: Path,
        brokers: int,
        *,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.node_ids = list(range(1, brokers + 1))
        self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self.ports = PortReservation()
        self.controller_port = self.ports.take()
        self.client_ports = {node: self.ports.take() for node in self.node_ids}
        self.advertised = dict(self.client_ports)
        copies = min(3, brokers)
        self.overrides = {
            **BROKER_OVERRIDES,
            **CLUSTER_OVERRIDES,
            "offsets.topic.replication.factor": str(copies),
            "transaction.state.log.replication.factor": str(copies),
            "transaction.state.log.min.isr": str(min(2, brokers)),
            **(overrides or {}),
        }
        # Broker b's listener REPL<a> (what broker a fetches from) and its proxy a -> b.
        self.replication_ports = {
            (source, target): self.ports.take()
            for source in self.node_ids
            for target in self.node_ids
        }
        self.links = {
            (source, target): LinkProxy(("127.0.0.1", self.replication_ports[(source, target)]))
            for source in self.node_ids
            for target in self.node_ids
            if source != target
        }
        self.controller_links = {
            node: LinkProxy(("127.0.0.1", self.controller_port)) for node in self.node_ids
        }
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.paused: set[int] = set()
        self.isolated: set[int] = set()
        self._logs: dict[int, IO[bytes]] = {}

    # -- properties ------------------------------------------------------------------------

    def _properties(self, node: int) -> dict[str, str]:
        names = [f"REPL{source}" for source in self.node_ids]
        common = {
            "node.id": str(node),
            "cluster.id": self.cluster_id,
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": ",".join(
                f"{name}:PLAINTEXT" for name in ("CLIENT", *names, "CONTROLLER")
            ),
            "log.dirs": str(self.directory / f"node-{node}"),
        }
        if node == CONTROLLER_ID:
            return {
                **common,
                "process.roles": "controller",
                "listeners": f"CONTROLLER://127.0.0.1:{self.controller_port}",
                "controller.quorum.voters": f"{CONTROLLER_ID}@127.0.0.1:{self.controller_port}",
                **self.overrides,
            }
        listeners = [f"CLIENT://127.0.0.1:{self.client_ports[node]}"]
        advertised = [f"CLIENT://127.0.0.1:{self.advertised[node]}"]
        for source in self.node_ids:
            port = self.replication_ports[(source, node)]
            listeners.append(f"REPL{source}://127.0.0.1:{port}")
            if source != node:
                port = self.links[(source, node)].port
            advertised.append(f"REPL{source}://127.0.0.1:{port}")
        controller = self.controller_links[node].port
        return {
            **common,
            "process.roles": "broker",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "inter.broker.listener.name": f"REPL{node}",
            "controller.quorum.voters": f"{CONTROLLER_ID}@127.0.0.1:{controller}",
            **self.overrides,
        }

    def log_path(self, node: int) -> Path:
        return self.directory / f"node-{node}.log"

    # -- processes -------------------------------------------------------------------------

    def _spawn(self, node: int) -> None:
        arguments = [sys.executable, "-m", "odradek.cli", "serve", "--log-level", "WARNING"]
        for key, value in self._properties(node).items():
            arguments += ["--override", f"{key}={value}"]
        self.directory.mkdir(parents=True, exist_ok=True)
        if node not in self._logs:
            self._logs[node] = self.log_path(node).open("ab")
        self.processes[node] = subprocess.Popen(
            arguments,
            stdout=self._logs[node],
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.paused.discard(node)

    def _port(self, node: int) -> int:
        return self.controller_port if node == CONTROLLER_ID else self.client_ports[node]

    def _wait_listening(self, node: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running(node):
                raise BrokerStartError(f"node {node} exited; see {self.log_path(node)}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self._port(node)), timeout=0.2).close()
                return
            time.sleep(0.05)
        raise BrokerStartError(f"node {node} did not listen within {timeout} s")

    def start(self, timeout: float = 60.0) -> None:
        """Start the proxies, the controller, then every broker; return once every broker's
        Metadata lists all brokers (registered and unfenced)."""
        for link in (*self.links.values(), *self.controller_links.values()):
            link.start()
        self.start_node(CONTROLLER_ID, timeout)
        for node in self.node_ids:
            self._spawn(node)
        for node in self.node_ids:
            self._wait_listening(node, timeout)
        self.wait_for_brokers(timeout)

    def start_node(self, node: int, timeout: float = 30.0) -> None:
        """Start a node that is not running (a restart keeps its data and ports)."""
        if self.running(node):
            return
        self._spawn(node)
        self._wait_listening(node, timeout)

    def running(self, node: int) -> bool:
        process = self.processes.get(node)
        return process is not None and process.poll() is None

    def state(self, node: int) -> str:
        """up, down, paused or isolated (as the checker made it)."""
        if not self.running(node):
            return DOWN
        if node in self.paused:
            return PAUSED
        if node in self.isolated:
            return ISOLATED
        return UP

    def kill(self, node: int) -> None:
        """SIGKILL (a paused node too); in lazy storage mode its unsynced log bytes are gone."""
        process = self.processes.get(node)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        self.paused.discard(node)

    def kill_all(self) -> None:
        """SIGKILL every broker at the same instant (the controller stays up), then reap them."""
        for node in self.node_ids:
            process = self.processes.get(node)
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGKILL)
        for node in self.node_ids:
            process = self.processes.get(node)
            if process is not None:
                process.wait(timeout=30)
            self.paused.discard(node)

    def pause(self, node: int) -> None:
        process = self.processes.get(node)
        if process is not None and process.poll() is None and node not in self.paused:
            process.send_signal(signal.SIGSTOP)
            self.paused.add(node)

    def resume(self, node: int) -> None:
        process = self.processes.get(node)
        if process is not None and node in self.paused:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
        self.paused.discard(node)

    def isolate(self, node: int) -> None:
        """Cut `node` off from every other broker and from the controller (both directions);
        its CLIENT listener stays reachable."""
        self.isolated.add(node)
        self.controller_links[node].cut()
        for (source, target), link in self.links.items():
            if node in (source, target):
                link.cut()

    def heal(self, node: int | None = None) -> None:
        """Undo `isolate` for `node` (every node when None)."""
        nodes = list(self.isolated) if node is None else [node]
        for each in nodes:
            self.isolated.discard(each)
            self.controller_links[each].heal()
            for (source, target), link in self.links.items():
                if each in (source, target) and not {source, target} & self.isolated:
                    link.heal()

    def heal_all(self) -> None:
        """Every node back: healed, resumed, started (the controller first)."""
        self.heal()
        for node in [CONTROLLER_ID, *self.node_ids]:
            self.resume(node)
            if not self.running(node):
                with contextlib.suppress(BrokerStartError):
                    self.start_node(node)

    def stop(self) -> None:
        """SIGTERM the brokers, then the controller (SIGKILL after 15 s); stop the proxies."""
        for node in list(self.paused):
            self.resume(node)
        self.heal()
        for group in (self.node_ids, [CONTROLLER_ID]):
            for node in group:
                process = self.processes.get(node)
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for node in group:
                process = self.processes.get(node)
                if process is None:
                    continue
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for link in (*self.links.values(), *self.controller_links.values()):
            link.stop()
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        self.ports.close()

    # -- metadata --------------------------------------------------------------------------

    def answering(self) -> list[int]:
        """Brokers that run, are not paused and not isolated (their metadata is current)."""
        return [node for node in self.node_ids if self.state(node) == UP]

    def metadata(self, topic: str | None, via: int | None = None) -> Any:
        """Metadata v12 from broker `via` (default: the first answering one) over its own CLIENT
        listener (no fault proxy in between); OSError when none answers."""
        candidates = [via] if via is not None else self.answering()
        error: OSError = OSError("no broker is up")
        for node in candidates:
            try:
                return metadata_request(("127.0.0.1", self.client_ports[node]), topic, 1.0)
            except OSError as failure:
                error = failure
        raise error

    def alive_brokers(self, via: int) -> list[int]:
        try:
            response = self.metadata(None, via)
        except OSError:
            return []
        return sorted(int(broker.node_id) for broker in response.brokers)

    def wait_for_brokers(self, timeout: float = 30.0) -> bool:
        """Until every answering broker lists every running broker as alive; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            expected = [node for node in self.node_ids if self.running(node)]
            if all(self.alive_brokers(node) == expected for node in self.answering()):
                return True
            time.sleep(0.1)
        return False

    def partitions(self, topic: str, via: int | None = None) -> dict[int, PartitionView]:
        """`topic`'s partitions as one broker states them ({} when unknown or none answers)."""
        try:
            response = self.metadata(topic, via)
        except OSError:
            return {}
        views: dict[int, PartitionView] = {}
        for described in response.topics:
            if int(described.error_code) != 0:
                continue
            for state in described.partitions:
                views[int(state.partition_index)] = PartitionView(
                    int(state.partition_index),
                    int(state.leader_id),
                    int(state.leader_epoch),
                    tuple(int(n) for n in state.replica_nodes),
                    tuple(int(n) for n in state.isr_nodes),
                )
        return views

    def leader_of(self, topic: str, partition: int) -> int:
        """The leader of `topic`-`partition` as an answering broker states it (-1: none)."""
        view = self.partitions(topic).get(partition)
        return -1 if view is None else view.leader

    def wait_for_leader(
        self, topic: str, partition: int, *, not_in: set[int], timeout: float
    ) -> int:
        """Until an answering broker names a leader of `topic`-`partition` outside `not_in`;
        returns it, or -1 after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader_of(topic, partition)
            if leader >= 0 and leader not in not_in:
                return leader
            time.sleep(0.1)
        return -1


_FRAME = struct.Struct(">i")
_HEADER = struct.Struct(">hhih")
_CLIENT_ID = b"odradek-check"
_METADATA = 3
_METADATA_VERSION = 12


def metadata_request(address: tuple[str, int], topic: str | None, timeout: float) -> Any:
    """Metadata v12 (Kafka's MetadataRequest, no auto-creation) from one broker, as kio's
    MetadataResponse: every topic when `topic` is None. Raises OSError when the broker does not
    answer in `timeout` s."""
    from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
    from kio.schema.metadata.v12.response import MetadataResponse
    from kio.schema.types import TopicName
    from kio.serial import entity_reader, entity_writer

    request = MetadataRequest(
        topics=None
        if topic is None
        else (MetadataRequestTopic(topic_id=None, name=TopicName(topic)),),
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )
    body = io.BytesIO()
    entity_writer(MetadataRequest)(body, request)
    # Request header v2: api key, version, correlation id, client id, no tagged fields.
    frame = (
        _HEADER.pack(_METADATA, _METADATA_VERSION, 1, len(_CLIENT_ID))
        + _CLIENT_ID
        + b"\x00"
        + body.getvalue()
    )
    with socket.create_connection(address, timeout=timeout) as connection:
        connection.settimeout(timeout)
        connection.sendall(_FRAME.pack(len(frame)) + frame)
        (size,) = _FRAME.unpack(_receive(connection, 4))
        response = _receive(connection, size)
    # Response header v1: correlation id, then (empty) tagged fields.
    decoded, _ = entity_reader(MetadataResponse)(response[5:], 0)
    return decoded


def _receive(connection: socket.socket, count: int) -> bytes:
    chunks = []
    while count:
        chunk = connection.recv(count)
        if not chunk:
            raise OSError("connection closed")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)
