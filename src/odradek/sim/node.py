"""A simulated broker node: the real `odradek.broker.Broker` on the simulated loop, network and
disk, with crash and restart on the same disk."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from pathlib import Path
from typing import cast

from odradek.broker.context import BrokerContext
from odradek.broker.server import Broker
from odradek.sim.disk import SimFiles
from odradek.sim.loop import SimLoop, run_in_node
from odradek.sim.memfs import MemoryFileSystem, SimPath
from odradek.sim.network import SimNetwork
from odradek.sim.trace import Trace

BROKER_PORT = 9092

# What the simulated broker runs with beyond Kafka's defaults: small internal topics (fewer
# logs to open on every restart) and no initial rebalance delay.
SIM_BROKER_CONFIG: Mapping[str, str] = {
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "0",
    "log.cleaner.backoff.ms": "5000",
}


class SimBroker:
    """One broker process on node `name`, its disk at `/sim/<name>` in the memory file system."""

    def __init__(
        self,
        name: str,
        loop: SimLoop,
        network: SimNetwork,
        trace: Trace,
        rng: random.Random,
        config: Mapping[str, str],
        fs: MemoryFileSystem,
    ) -> None:
        self.name = name
        self.fs = fs
        self.loop = loop
        self.network = network
        self.trace = trace
        self.rng = rng
        self.config = {**SIM_BROKER_CONFIG, **config}
        self.broker: Broker | None = None
        self.files: SimFiles | None = None
        self.incarnation = 0
        self.fdatasyncs = 0

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.name}:{BROKER_PORT}"

    @property
    def context(self) -> BrokerContext | None:
        return None if self.broker is None else self.broker.context

    async def start(self) -> None:
        """Start (or restart) the broker process; recovery runs on the same simulated disk."""
        self.incarnation += 1
        self.network.node_up(self.name)
        self.files = SimFiles(self.fs, self.rng)
        # A SimPath has the Path methods storage uses, on the memory file system.
        data_dir = cast(Path, SimPath(f"/sim/{self.name}"))
        self.broker = Broker(
            data_dir=data_dir,
            host=self.name,
            port=BROKER_PORT,
            config=self.config,
            files=self.files,
        )
        # Every path the broker derives from its log directory is then a simulated one.
        self.broker.config = dataclasses.replace(self.broker.config, log_dir=data_dir)
        await run_in_node(self.name, self.broker.start())
        self.trace.event(f"start {self.name} (incarnation {self.incarnation})")

    def crash(self, power_loss: bool) -> None:
        """End the process at once: no clean shutdown, connections reset, tasks gone.

        A process crash keeps what the OS was given; a power loss also drops every byte not
        fdatasync'ed and may tear each file's last write.
        """
        if self.broker is None:
            return
        self.network.node_down(self.name)
        cancelled = self.loop.kill_node(self.name)
        lost = 0
        if self.files is not None:
            self.fdatasyncs += self.files.fdatasyncs
            lost = self.files.crash(power_loss)
        kind = "power loss" if power_loss else "process crash"
        self.trace.event(
            f"crash {self.name} ({kind}): {cancelled} task(s) ended, {lost} unsynced byte(s) lost"
        )
        self.broker = None
        self.files = None

    @property
    def running(self) -> bool:
        return self.broker is not None
