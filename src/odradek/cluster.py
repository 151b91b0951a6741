"""`odradek.Cluster`: one controller process and N broker processes on 127.0.0.1.

A sync context manager over `odradek serve` subprocesses (process.roles=controller, then
process.roles=broker), for tests and `odradek cluster up`:

>>> with Cluster(brokers=3) as cluster:            # doctest: +SKIP
...     admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
...     cluster.kill(2)        # SIGKILL
...     cluster.restart(2)

Node ids: the controller is `controller_id` (0 unless given); brokers are 1..N. Each node has
its own data directory under `data_dir` (a temporary one unless given). `start()` returns once
every broker answers Metadata listing all N brokers, i.e. registered and unfenced.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["Cluster", "ClusterError"]


class ClusterError(RuntimeError):
    """A node did not start, or the cluster did not become ready in time."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Cluster:
    """A controller and `brokers` brokers as subprocesses (see the module docstring)."""

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
        self.config = dict(config or {})
        self.log_level = log_level
        ports = (
            [base_port + index for index in range(brokers + 1)]
            if base_port is not None
            else [_free_port() for _ in range(brokers + 1)]
        )
        self.controller_port = ports[0]
        self.ports = dict(zip(self.node_ids, ports[1:], strict=True))
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

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
        return ",".join(f"127.0.0.1:{self.ports[node]}" for node in self.node_ids)

    @property
    def controller_address(self) -> str:
        return f"127.0.0.1:{self.controller_port}"

    def broker_address(self, node_id: int) -> str:
        return f"127.0.0.1:{self.ports[node_id]}"

    def is_running(self, node_id: int) -> bool:
        process = self._processes.get(node_id)
        return process is not None and process.poll() is None

    # -- processes -------------------------------------------------------------------------

    def _properties(self, node_id: int) -> dict[str, str]:
        common = {
            "node.id": str(node_id),
            "cluster.id": self.cluster_id,
            "controller.quorum.voters": f"{self.controller_id}@{self.controller_address}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
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
                "listeners": f"PLAINTEXT://{self.broker_address(node_id)}",
            }
        return {**common, **self.config}

    def _spawn(self, node_id: int) -> None:
        arguments = [sys.executable, "-m", "odradek.cli", "serve", "--log-level", self.log_level]
        for key, value in self._properties(node_id).items():
            arguments += ["--override", f"{key}={value}"]
        log_path = self.data_dir / f"node-{node_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
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
        """Start the controller, then every broker; wait until all brokers are unfenced."""
        self._spawn(self.controller_id)
        self._wait_for_port(self.controller_port, self.controller_id, timeout_s)
        for node_id in self.node_ids:
            self._spawn(node_id)
        self.wait_for_brokers(self.node_ids, timeout_s)
        return self

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

    def alive_brokers(self, via: int | None = None) -> list[int]:
        """The broker ids a running broker's Metadata lists (registered and unfenced)."""
        from odradek.cli.wire import WireClient

        candidates = [via] if via is not None else [n for n in self.node_ids if self.is_running(n)]
        for node_id in candidates:
            try:
                with WireClient(self.broker_address(node_id), timeout=2) as client:
                    response = client.request(
                        3,
                        12,
                        topics=(),
                        allow_auto_topic_creation=False,
                        include_topic_authorized_operations=False,
                    )
                    return sorted(int(b.node_id) for b in response.brokers)
            except Exception:
                continue
        return []

    def wait_for_brokers(self, expected: list[int], timeout_s: float = 30.0) -> None:
        """Until every running broker lists exactly `expected` as alive."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            running = [n for n in self.node_ids if self.is_running(n)]
            if all(self.alive_brokers(via=n) == sorted(expected) for n in running):
                return
            time.sleep(0.1)
        raise ClusterError(f"brokers {expected} were not all alive within {timeout_s} s")

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (a broker, or the controller)."""
        process = self._processes[node_id]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def pause(self, node_id: int) -> None:
        """SIGSTOP one node: it keeps its sockets but answers nothing (a hung process)."""
        self._processes[node_id].send_signal(signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        """SIGCONT a paused node."""
        self._processes[node_id].send_signal(signal.SIGCONT)

    def terminate(self, node_id: int, timeout_s: float = 30.0) -> int:
        """SIGTERM one node (a broker shuts down in a controlled way); its exit code."""
        process = self._processes[node_id]
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=timeout_s)

    def restart(self, node_id: int, timeout_s: float = 30.0) -> None:
        """Start a stopped node again on the same data directory and port."""
        if self.is_running(node_id):
            raise ClusterError(f"node {node_id} is still running")
        self._spawn(node_id)
        port = self.controller_port if node_id == self.controller_id else self.ports[node_id]
        self._wait_for_port(port, node_id, timeout_s)

    def stop(self) -> None:
        """SIGTERM every node (brokers first), SIGKILL what does not exit in time."""
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


def _new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
