"""Shared helpers for the benchmark scripts: broker processes, free ports, CPU time, tables.

Every broker a benchmark starts is an `odradek serve` child process on 127.0.0.1 with its own
temporary data directory; it is stopped by PID (SIGTERM, then wait, SIGKILL only if it hangs)
and its directory removed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ODRADEK = Path(sys.executable).with_name("odradek")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> float:
    """Poll connect() until the port accepts; return the monotonic time it first did."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return time.monotonic()
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {HOST}:{port}") from None
            time.sleep(0.002)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may contain spaces; split after its closing paren.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class BrokerProcess:
    """`odradek serve` as a child process, with a temporary data dir."""

    def __init__(self, overrides: dict[str, str] | None = None, port: int | None = None) -> None:
        self.overrides = overrides or {}
        self.port = port or free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix="odradek-bench-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr_tail: list[bytes] = []

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        command = [
            str(ODRADEK),
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "WARNING",
        ]
        for key, value in self.overrides.items():
            command += ["--override", f"{key}={value}"]
        return command

    def start(self, timeout: float = 15.0) -> BrokerProcess:
        # A session of its own, as a broker started as a service (or `make run` in another
        # terminal) has: with the kernel's autogroup scheduling (sched_autogroup_enabled) a
        # child in the benchmark's session shared the client's CPU share instead of competing
        # with it as another program does.
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        # Drain stderr so a chatty broker never blocks on a full pipe; keep the tail for errors.
        threading.Thread(target=self._drain, daemon=True).start()
        try:
            wait_for_port(self.port, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                "broker did not start:\n" + b"".join(self._stderr_tail).decode(errors="replace")
            ) from None
        return self

    def _drain(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr_tail = [*self._stderr_tail[-20:], line]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> BrokerProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def settle_page_cache() -> str:
    """Write back and drop the page cache so each write pass starts from the same state.

    On the VMs this was measured on, a page cache already full of an earlier pass's pages
    halves write throughput (plain `dd` shows it too), so passes are only comparable after
    this. Dropping caches needs root; otherwise only sync, and say so.
    """
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as control:
            control.write("3\n")
    except OSError:
        return "sync only (not root: page cache not dropped)"
    return "sync + drop_caches"


def create_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    config: dict[str, str],
    replication_factor: int = 1,
) -> None:
    """Create `topic`; one that already exists (a broker given with --bootstrap) is kept."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=partitions,
                replication_factor=replication_factor,
                config=config,
            )
        ],
        operation_timeout=10,
    )
    for future in futures.values():
        try:
            future.result(timeout=15)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table when rich is installed, plain aligned text otherwise."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
        print(f"\n{title}")
        print("  ".join(str(c).rjust(w) for c, w in zip(columns, widths, strict=True)))
        for row in rows:
            print("  ".join(str(v).rjust(w) for v, w in zip(row, widths, strict=True)))
        return
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*(str(value) for value in row))
    Console(width=160).print(table)
