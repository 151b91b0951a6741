"""The checker's own broker: `odradek serve` as a child process, so it can be killed and paused.

The checker never imports the broker: it starts `python -m odradek.cli serve` on a fixed port (a
restart comes back on the same address and data) and talks to it only through Kafka clients.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

# Short timers so a 20-second run has room for faults: no initial rebalance delay, sessions down to
# one second, timed-out transactions aborted within a second.
BROKER_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "group.consumer.min.session.timeout.ms": "1000",
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.heartbeat.interval.ms": "500",
    "group.consumer.min.heartbeat.interval.ms": "100",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
    "num.partitions": "3",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class BrokerStartError(RuntimeError):
    """The broker process exited or did not listen in time."""


class LocalBroker:
    """`odradek serve` on `port` with its data in `data_dir`, advertising `advertised` if given."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        advertised: tuple[str, int] | None = None,
        overrides: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.advertised = advertised
        self.overrides = {**BROKER_OVERRIDES, **(overrides or {})}
        self.log_path = log_path or data_dir.parent / "broker.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        arguments = [sys.executable, "-m", "odradek.cli", "serve"]
        arguments += ["--host", self.host, "--port", str(self.port)]
        arguments += ["--data-dir", str(self.data_dir), "--log-level", "WARNING"]
        properties = dict(self.overrides)
        if self.advertised is not None:
            host, port = self.advertised
            properties["advertised.listeners"] = f"PLAINTEXT://{host}:{port}"
        for key, value in properties.items():
            arguments += ["--override", f"{key}={value}"]
        return arguments

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._log is None:
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.paused = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerStartError(
                    f"odradek serve exited with {self.process.returncode}; see {self.log_path}"
                )
            with contextlib.suppress(OSError), socket.create_connection(self.address, timeout=0.2):
                return
            time.sleep(0.05)
        self.kill()
        raise BrokerStartError(f"odradek serve did not listen within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; the page cache (or, in lazy mode, nothing) survives."""
        if self.process is None:
            return
        if self.paused:
            self.resume()
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def pause(self) -> None:
        if self.running and not self.paused and self.process is not None:
            self.process.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.process is not None and self.paused:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
            self.paused = False

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 20 s)."""
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
