"""`odradek.Cluster`: one controller process and N broker processes on 127.0.0.1.

A sync context manager over `odradek serve` subprocesses (process.roles=controller, then
process.roles=broker), for tests and `odradek cluster up`; `AsyncCluster` is the same for
`async with` (its waits run in a thread, so the event loop and aiokafka keep running):

>>> with Cluster(brokers=3) as cluster:            # doctest: +SKIP
...     admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
...     leader = cluster.leader_of("orders", 0)
...     cluster.kill(leader)                       # SIGKILL
...     cluster.wait_for_isr("orders", 0, size=2)
...     cluster.restart(leader)

Node ids: the controller is `controller_id` (0 unless given); brokers are 1..N. Each node has
its own data directory under `data_dir` (a temporary one unless given) and its log in
`node-<id>.log` there; `cluster.json` there records the addresses (`odradek cluster status
--data-dir` reads it). `start()` returns once every broker answers Metadata listing all N
brokers, i.e. registered and unfenced.

Partition state (`describe_partition`, `leader_of`, `wait_for_isr`) is read as a client reads
it: a Metadata v12 request to a running, unpaused broker, answered from that broker's replay of
the controller's metadata log. Errors: `ClusterError` when a node does not start, no broker
answers, a topic is unknown, or a wait times out; `ValueError` for an unknown node id.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "AsyncCluster",
    "Cluster",
    "ClusterError",
    "PartitionState",
    "replication_defaults",
]

#: Written into `data_dir` by `start()`: cluster id, controller and broker addresses.
CLUSTER_FILE = "cluster.json"
_METADATA_VERSION = 12
_NO_LEADER = -1


class ClusterError(RuntimeError):
    """A node did not start, no broker answered, a topic or partition is unknown, or a wait
    timed out."""


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One partition as a Metadata v12 response states it (Kafka's MetadataResponsePartition).

    `leader` is None when the partition has no leader (Kafka's -1: every ISR member is
    offline); `offline_replicas` are replicas on brokers that are fenced or not registered.
    """

    topic: str
    partition: int
    leader: int | None
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline_replicas: tuple[int, ...]


def replication_defaults(brokers: int) -> dict[str, str]:
    """The broker settings a cluster of `brokers` brokers gets unless it sets them: Kafka's
    defaults for the internal topics (3 copies, min ISR 2), capped by the number of brokers so a
    one- or two-broker cluster still works (Kafka's own single-node quickstart does the same)."""
    return {
        "offsets.topic.replication.factor": str(min(3, brokers)),
        "transaction.state.log.replication.factor": str(min(3, brokers)),
        "transaction.state.log.min.isr": str(min(2, brokers)),
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Cluster:
    """A controller and `brokers` brokers as subprocesses (see the module docstring).

    `config` is applied to every node on top of `replication_defaults(brokers)`; `base_port`
    puts the controller on that port and the brokers on the next ones (default: free ports).
    `listener_names` gives each broker one listener per name (Kafka's named listeners, all
    PLAINTEXT); clients use the first (`ports`, `bootstrap_servers`), the others get free
    ports (`listener_ports`); `inter_broker_listener_name` is the one replication uses
    (default: the first).
    Raises `ValueError` for fewer than one broker or a controller id among the broker ids.
    """

    def __init__(
        self,
        brokers: int = 3,
        *,
        data_dir: str | Path | None = None,
        base_port: int | None = None,
        config: Mapping[str, str] | None = None,
        controller_id: int = 0,
        cluster_id: str | None = None,
        log_level: str = "WARNING",
        listener_names: Sequence[str] = ("PLAINTEXT",),
        inter_broker_listener_name: str | None = None,
    ) -> None:
        if brokers < 1:
            raise ValueError("a cluster needs at least one broker")
        self._temporary = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="odradek-cluster-"))
        self.controller_id = controller_id
        self.node_ids = list(range(controller_id + 1, controller_id + 1 + brokers))
        if controller_id in self.node_ids:
            raise ValueError("the controller id must differ from every broker id")
        self.cluster_id = cluster_id or self._stored_cluster_id() or _new_cluster_id()
        self.config = {**replication_defaults(brokers), **(config or {})}
        self.log_level = log_level
        ports = (
            [base_port + index for index in range(brokers + 1)]
            if base_port is not None
            else [_free_port() for _ in range(brokers + 1)]
        )
        self.controller_port = ports[0]
        self.ports = dict(zip(self.node_ids, ports[1:], strict=True))
        self.listener_names = tuple(name.upper() for name in listener_names)
        self.inter_broker_listener_name = inter_broker_listener_name
        #: Each broker's port per listener; the first listener's is `ports` (the clients').
        self.listener_ports: dict[int, dict[str, int]] = {
            node: {
                name: self.ports[node] if index == 0 else _free_port()
                for index, name in enumerate(self.listener_names)
            }
            for node in self.node_ids
        }
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._paused: set[int] = set()
        #: Nodes stopped on purpose (kill, terminate): their exit is not a failure.
        self._stopped: set[int] = set()

    def _stored_cluster_id(self) -> str | None:
        meta = self.data_dir / f"node-{self.controller_id}" / "meta.properties"
        if not meta.exists():
            return None
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1]
        return None

    # -- addresses -------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """Every broker's `127.0.0.1:port`, comma separated: a client's `bootstrap.servers`."""
        return ",".join(f"127.0.0.1:{self.ports[node]}" for node in self.node_ids)

    @property
    def controller_address(self) -> str:
        """The controller's `127.0.0.1:port` (its CONTROLLER listener; clients cannot use it)."""
        return f"127.0.0.1:{self.controller_port}"

    def broker_address(self, node_id: int) -> str:
        """`127.0.0.1:port` of broker `node_id`; `KeyError` for an unknown broker id."""
        return f"127.0.0.1:{self.ports[node_id]}"

    def is_running(self, node_id: int) -> bool:
        """The node's process exists and has not exited (a paused node is running)."""
        process = self._processes.get(node_id)
        return process is not None and process.poll() is None

    def is_paused(self, node_id: int) -> bool:
        """The node was stopped with `pause` and not resumed since."""
        return node_id in self._paused

    # -- processes -------------------------------------------------------------------------

    def _properties(self, node_id: int) -> dict[str, str]:
        common = {
            "node.id": str(node_id),
            "cluster.id": self.cluster_id,
            "controller.quorum.voters": f"{self.controller_id}@{self.controller_address}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": ",".join(
                f"{name}:PLAINTEXT" for name in (*self.listener_names, "CONTROLLER")
            ),
            "log.dirs": str(self.data_dir / f"node-{node_id}"),
            "group.initial.rebalance.delay.ms": "0",
        }
        if node_id == self.controller_id:
            common |= {
                "process.roles": "controller",
                "listeners": f"CONTROLLER://{self.controller_address}",
            }
        else:
            common |= {
                "process.roles": "broker",
                "listeners": ",".join(
                    f"{name}://127.0.0.1:{port}"
                    for name, port in self.listener_ports[node_id].items()
                ),
            }
            if self.inter_broker_listener_name is not None:
                common["inter.broker.listener.name"] = self.inter_broker_listener_name
        return {**common, **self.config}

    def _spawn(self, node_id: int) -> None:
        arguments = [sys.executable, "-m", "odradek.cli", "serve", "--log-level", self.log_level]
        for key, value in self._properties(node_id).items():
            arguments += ["--override", f"{key}={value}"]
        log_path = self.data_dir / f"node-{node_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._stopped.discard(node_id)
        with log_path.open("ab") as log_file:
            self._processes[node_id] = subprocess.Popen(
                arguments,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ},
                # Ctrl-C reaches only the parent, which stops brokers before the controller.
                start_new_session=True,
            )

    def start(self, timeout_s: float = 30.0) -> Cluster:
        """Start the controller, then every broker; wait until all brokers are unfenced.

        `timeout_s` (seconds) bounds each wait; `ClusterError` if a node exits or the brokers
        are not all registered in time (the node logs say why).
        """
        self._spawn(self.controller_id)
        self._wait_for_port(self.controller_port, self.controller_id, timeout_s)
        for node_id in self.node_ids:
            self._spawn(node_id)
        self.wait_for_brokers(self.node_ids, timeout_s)
        self._write_cluster_file()
        return self

    def _write_cluster_file(self) -> None:
        layout = {
            "cluster_id": self.cluster_id,
            "controller_id": self.controller_id,
            "controller_address": self.controller_address,
            "brokers": {str(node): self.broker_address(node) for node in self.node_ids},
        }
        (self.data_dir / CLUSTER_FILE).write_text(json.dumps(layout, indent=2) + "\n")

    def _wait_for_port(self, port: int, node_id: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_running(node_id):
                raise ClusterError(f"node {node_id} exited; see {self.log_path(node_id)}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise ClusterError(f"node {node_id} did not listen on {port} in {timeout_s} s")

    def log_path(self, node_id: int) -> Path:
        return self.data_dir / f"node-{node_id}.log"

    def _answering(self) -> list[int]:
        return [n for n in self.node_ids if self.is_running(n) and n not in self._paused]

    def alive_brokers(self, via: int | None = None) -> list[int]:
        """The broker ids a running broker's Metadata lists (registered and unfenced); [] when
        no broker (or not `via`) answers."""
        candidates = [via] if via is not None else self._answering()
        for node_id in candidates:
            try:
                response = _metadata(self.broker_address(node_id), (), timeout_s=2.0)
            except OSError:
                continue
            return sorted(int(broker.node_id) for broker in response.brokers)
        return []

    def describe_partition(
        self, topic: str, partition: int, via: int | None = None
    ) -> PartitionState:
        """`topic`-`partition` as broker `via` (default: the first running, unpaused broker
        that answers) states it in Metadata v12.

        Raises `ClusterError` when no broker answers or the broker does not know the topic
        or the partition.
        """
        candidates = [via] if via is not None else self._answering()
        for node_id in candidates:
            try:
                response = _metadata(self.broker_address(node_id), (topic,), timeout_s=2.0)
            except OSError:
                continue
            (described,) = response.topics
            if described.error_code != 0:
                raise ClusterError(
                    f"broker {node_id} does not know topic {topic!r} "
                    f"(error code {int(described.error_code)})"
                )
            for state in described.partitions:
                if int(state.partition_index) == partition:
                    leader = int(state.leader_id)
                    return PartitionState(
                        topic,
                        partition,
                        None if leader == _NO_LEADER else leader,
                        int(state.leader_epoch),
                        tuple(int(n) for n in state.replica_nodes),
                        tuple(int(n) for n in state.isr_nodes),
                        tuple(int(n) for n in state.offline_replicas),
                    )
            raise ClusterError(f"topic {topic!r} has no partition {partition}")
        raise ClusterError("no running broker answered Metadata")

    def leader_of(self, topic: str, partition: int) -> int | None:
        """The broker id leading `topic`-`partition` (None: no leader, every ISR member is
        offline). Read from Metadata; `ClusterError` as in `describe_partition`."""
        return self.describe_partition(topic, partition).leader

    def wait_for_isr(
        self, topic: str, partition: int, size: int, timeout_s: float = 30.0
    ) -> tuple[int, ...]:
        """Until every running, unpaused broker reports an ISR of exactly `size` brokers for
        `topic`-`partition` (a shrink after a kill or pause, or a rejoin); returns that ISR.

        `timeout_s` is in seconds; `ClusterError` on timeout, naming the last ISR seen.
        """
        deadline = time.monotonic() + timeout_s
        seen: tuple[int, ...] | None = None
        while True:
            states: list[tuple[int, ...]] = []
            for node_id in self._answering():
                try:
                    states.append(self.describe_partition(topic, partition, via=node_id).isr)
                except ClusterError:
                    states.append(())  # not known there yet: keep waiting
            if states:
                seen = states[0]
                if all(len(isr) == size for isr in states) and len(set(states)) == 1:
                    return states[0]
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"the ISR of {topic}-{partition} did not reach {size} broker(s) within "
                    f"{timeout_s} s (last seen: {list(seen) if seen is not None else 'nothing'})"
                )
            time.sleep(0.1)

    def wait_for_brokers(self, expected: Sequence[int], timeout_s: float = 30.0) -> None:
        """Until every running, unpaused broker lists exactly `expected` as alive (a killed
        broker drops out after `broker.session.timeout.ms`). `ClusterError` after `timeout_s`
        seconds."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            running = self._answering()
            if all(self.alive_brokers(via=n) == sorted(expected) for n in running):
                return
            # A broker expected alive whose process has exited (a busy port, a bad setting)
            # will not register: say so now, naming its log, rather than at the timeout.
            for node_id in expected:
                process = self._processes.get(node_id)
                if (
                    process is not None
                    and node_id not in self._stopped
                    and process.poll() is not None
                ):
                    raise ClusterError(
                        f"node {node_id} exited (status {process.returncode}); "
                        f"see {self.log_path(node_id)}"
                    )
            time.sleep(0.1)
        raise ClusterError(f"brokers {expected} were not all alive within {timeout_s} s")

    def _process(self, node_id: int) -> subprocess.Popen[bytes]:
        if node_id != self.controller_id and node_id not in self.ports:
            raise ValueError(f"no node {node_id} in this cluster")
        process = self._processes.get(node_id)
        if process is None:
            raise ClusterError(f"node {node_id} was never started")
        return process

    def pid(self, node_id: int) -> int:
        """The process id of node `node_id` (`ClusterError` if it was never started)."""
        return self._process(node_id).pid

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (a broker, or the controller), paused or not; returns once it has
        exited. Its data directory stays; `restart` brings it back."""
        process = self._process(node_id)
        self._stopped.add(node_id)
        process.send_signal(signal.SIGKILL)
        process.wait()
        self._paused.discard(node_id)

    def pause(self, node_id: int) -> None:
        """SIGSTOP one node: its process keeps its sockets and memory but answers nothing, as
        a long GC pause or a frozen VM would; the controller fences a paused broker after
        `broker.session.timeout.ms`. `ClusterError` if it is not running."""
        process = self._process(node_id)
        if process.poll() is not None:
            raise ClusterError(f"node {node_id} is not running")
        process.send_signal(signal.SIGSTOP)
        self._paused.add(node_id)

    def resume(self, node_id: int) -> None:
        """SIGCONT a paused node: it carries on where it stopped (a fenced broker registers
        again). `ClusterError` if it is not paused."""
        if node_id not in self._paused:
            raise ClusterError(f"node {node_id} is not paused")
        self._process(node_id).send_signal(signal.SIGCONT)
        self._paused.discard(node_id)

    def terminate(self, node_id: int, timeout_s: float = 30.0) -> int:
        """SIGTERM one node (a broker shuts down in a controlled way); its exit code.
        `subprocess.TimeoutExpired` if it has not exited after `timeout_s` seconds."""
        if node_id in self._paused:
            self.resume(node_id)  # a stopped process would hold the SIGTERM until SIGCONT
        process = self._process(node_id)
        self._stopped.add(node_id)
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=timeout_s)

    def restart(self, node_id: int, timeout_s: float = 30.0) -> None:
        """Start a stopped (killed or terminated) node again on the same data directory and
        port; returns once it listens. `ClusterError` if it is still running or does not
        listen within `timeout_s` seconds. Use `wait_for_brokers` to wait for its
        registration."""
        if self.is_running(node_id):
            raise ClusterError(f"node {node_id} is still running")
        self._spawn(node_id)
        port = self.controller_port if node_id == self.controller_id else self.ports[node_id]
        self._wait_for_port(port, node_id, timeout_s)

    def stop(self) -> None:
        """SIGTERM every node (brokers first), SIGKILL what does not exit in time."""
        for node_id in list(self._paused):
            self.resume(node_id)
        # Brokers first, while the controller can still release them; then the controller.
        for group in (self.node_ids, [self.controller_id]):
            for node_id in group:
                process = self._processes.get(node_id)
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for node_id in group:
                process = self._processes.get(node_id)
                if process is None:
                    continue
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class AsyncCluster:
    """`Cluster` for asyncio code: `async with AsyncCluster(brokers=3) as cluster:`.

    Takes `Cluster`'s arguments. Starting, stopping and every wait run in a worker thread, so
    clients on the same event loop (aiokafka) keep running meanwhile; `cluster.sync` is the
    underlying `Cluster` for the non-blocking calls (`is_running`, `broker_address`, ...).
    """

    def __init__(self, brokers: int = 3, **options: Any) -> None:
        self.sync = Cluster(brokers, **options)

    @property
    def bootstrap_servers(self) -> str:
        return self.sync.bootstrap_servers

    @property
    def node_ids(self) -> list[int]:
        return self.sync.node_ids

    @property
    def controller_id(self) -> int:
        return self.sync.controller_id

    @property
    def data_dir(self) -> Path:
        return self.sync.data_dir

    async def start(self, timeout_s: float = 30.0) -> AsyncCluster:
        await asyncio.to_thread(self.sync.start, timeout_s)
        return self

    async def stop(self) -> None:
        await asyncio.to_thread(self.sync.stop)

    async def kill(self, node_id: int) -> None:
        await asyncio.to_thread(self.sync.kill, node_id)

    async def pause(self, node_id: int) -> None:
        self.sync.pause(node_id)

    async def resume(self, node_id: int) -> None:
        self.sync.resume(node_id)

    async def terminate(self, node_id: int, timeout_s: float = 30.0) -> int:
        return await asyncio.to_thread(self.sync.terminate, node_id, timeout_s)

    async def restart(self, node_id: int, timeout_s: float = 30.0) -> None:
        await asyncio.to_thread(self.sync.restart, node_id, timeout_s)

    async def describe_partition(self, topic: str, partition: int) -> PartitionState:
        return await asyncio.to_thread(self.sync.describe_partition, topic, partition)

    async def leader_of(self, topic: str, partition: int) -> int | None:
        return await asyncio.to_thread(self.sync.leader_of, topic, partition)

    async def wait_for_isr(
        self, topic: str, partition: int, size: int, timeout_s: float = 30.0
    ) -> tuple[int, ...]:
        return await asyncio.to_thread(self.sync.wait_for_isr, topic, partition, size, timeout_s)

    async def wait_for_brokers(self, expected: Sequence[int], timeout_s: float = 30.0) -> None:
        await asyncio.to_thread(self.sync.wait_for_brokers, expected, timeout_s)

    async def __aenter__(self) -> AsyncCluster:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def _new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


_FRAME = struct.Struct(">i")
_HEADER = struct.Struct(">hhih")
_CLIENT_ID = b"odradek-cluster"


def _metadata(address: str, topics: Sequence[str] | None, timeout_s: float) -> Any:
    """Metadata v12 from one broker, as a client sends it (no auto-creation): `topics` None
    asks for every topic, () for none. Raises OSError when the broker does not answer."""
    from kio.serial import entity_reader

    from odradek.protocol.codec import (
        encode_entity,
        make,
        nested,
        request_module,
        request_type,
        response_type,
    )

    api_key, version = 3, _METADATA_VERSION
    topic_type = nested(request_module(api_key, version), "MetadataRequestTopic")
    body = encode_entity(
        make(
            request_type(api_key, version),
            topics=None
            if topics is None
            else tuple(make(topic_type, name=name, topic_id=None) for name in topics),
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        )
    )
    # Request header v2: api key, version, correlation id, client id, no tagged fields.
    frame = _HEADER.pack(api_key, version, 1, len(_CLIENT_ID)) + _CLIENT_ID + b"\x00" + body
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as connection:
        connection.sendall(_FRAME.pack(len(frame)) + frame)
        (size,) = _FRAME.unpack(_receive(connection, 4))
        response = _receive(connection, size)
    # Response header v1: correlation id, then (empty) tagged fields.
    decoded, _ = entity_reader(response_type(api_key, version))(response[5:], 0)
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
