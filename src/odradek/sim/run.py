"""One simulated run: a seed decides every latency, fault, client choice and random id.

`run_seed(SimOptions(seed=7))` builds the loop, network, disk and broker, runs the clients under
the seeded fault schedule for `seconds` of simulated time, lets in-flight work settle with
faults healed, checks the final logs, and returns a `SimResult` whose `fingerprint` is the same
for every run of the seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
import warnings
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.sim.cluster import CLUSTER_FAULTS, CLUSTER_LOAD, ClusterWorld
from odradek.sim.invariants import Checker, InvariantBrokenError, Violation
from odradek.sim.loop import DeadlockError, SimLoop, run_in_node
from odradek.sim.memfs import MemoryFileSystem
from odradek.sim.network import LatencyModel, SimNetwork
from odradek.sim.node import SimBroker
from odradek.sim.patches import simulated_process, virtual_now_ms
from odradek.sim.trace import Trace
from odradek.sim.workload import KIP848_GROUP_CONFIG, TOPIC, Clients, Load
from odradek.sim.world import StuckError, bounded_loop, run_phases, step_watchdog

logger = logging.getLogger(__name__)

BROKER = "broker-0"

# Fault kinds `--faults` accepts; the default runs all but disk-error.
FAULTS = ("crash", "power-loss", "reset", "cut", "consumer-crash", "disk-error")
DEFAULT_FAULTS = ("crash", "power-loss", "reset", "cut", "consumer-crash")

# Mean simulated seconds between two faults of a kind.
_FAULT_MEAN_INTERVAL_S = {
    "crash": 12.0,
    "power-loss": 15.0,
    "reset": 1.5,
    "cut": 4.0,
    "consumer-crash": 10.0,
    "disk-error": 5.0,
}
SETTLE_S = 20.0
# Transactions left open time out (10 s) and the coordinator's abort check runs every 10 s.
QUIESCE_S = 30.0
CHECK_INTERVAL_S = 0.05


@dataclass(frozen=True, slots=True)
class SimOptions:
    """One run: its seed, simulated length, faults, load and broker settings."""

    seed: int
    seconds: float = 30.0
    faults: tuple[str, ...] = DEFAULT_FAULTS
    load: Load = field(default_factory=Load)
    acks_all_fsync: bool = True
    broker_config: tuple[tuple[str, str], ...] = ()
    # 1: one broker alone; more: a controller and this many brokers (odradek.sim.cluster).
    brokers: int = 1

    def command(self) -> str:
        """The command line that replays this run."""
        parts = [f"odradek sim --seed {self.seed}", f"--seconds {self.seconds:g}"]
        if self.brokers != 1:
            parts.append(f"--brokers {self.brokers}")
        default_faults, default_load = (
            (DEFAULT_FAULTS, Load()) if self.brokers == 1 else (CLUSTER_FAULTS, CLUSTER_LOAD)
        )
        if self.faults != default_faults:
            parts.append(f"--faults {','.join(self.faults) or 'none'}")
        if not self.acks_all_fsync:
            parts.append("--no-fsync")
        if self.load.messages_per_second != default_load.messages_per_second:
            parts.append(f"--rate {self.load.messages_per_second:g}")
        return " ".join(parts)


@dataclass(slots=True)
class SimResult:
    options: SimOptions
    violation: Violation | None
    fingerprint: str
    trace: list[str]
    simulated_s: float
    wall_s: float
    stats: dict[str, int]
    errors: list[str]

    @property
    def ok(self) -> bool:
        return self.violation is None


class _World:
    """Everything one run owns."""

    def __init__(self, options: SimOptions, loop: SimLoop, fs: MemoryFileSystem) -> None:
        seed = options.seed
        self.options = options
        self.loop = loop
        self.trace = Trace(loop.time)
        self.network = SimNetwork(
            loop, random.Random(f"{seed}:network"), self.trace, LatencyModel()
        )
        self.fault_rng = random.Random(f"{seed}:faults")
        self.disk_rng = random.Random(f"{seed}:disk")
        loop.executor_latency = self._executor_latency
        config = {"odradek.acks.all.fsync": "true" if options.acks_all_fsync else "false"}
        config.update(KIP848_GROUP_CONFIG)
        config.update(dict(options.broker_config))
        self.broker = SimBroker(BROKER, loop, self.network, self.trace, self.disk_rng, config, fs)
        self.stop = asyncio.Event()
        self.checker = Checker(
            loop.time, TOPIC, options.load.partitions, lambda _violation: self.stop.set()
        )
        self.clients = Clients(
            self.broker.bootstrap_servers,
            self.checker,
            self.trace,
            random.Random(f"{seed}:clients"),
            options.load,
            virtual_now_ms(loop.time),
            self._spawn,
        )
        self.fault_counts: dict[str, int] = {}
        self.disk_errors = False

    @property
    def restarts(self) -> int:
        return self.broker.incarnation - 1

    def _spawn(self, node: str, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return run_in_node(node, self._guard(coroutine))

    async def _guard(self, coroutine: Coroutine[Any, Any, None]) -> None:
        with contextlib.suppress(InvariantBrokenError):
            await coroutine

    def _executor_latency(self, function: Any) -> float:
        # An fdatasync: a fraction of a millisecond to a few, now and then much longer.
        latency = self.disk_rng.uniform(0.0002, 0.003)
        if self.disk_rng.random() < 0.01:
            latency += self.disk_rng.uniform(0, 0.05)
        return latency

    # -- the run -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start()
        context = self.broker.context
        assert context is not None
        context.logs.create_topic(TOPIC, self.options.load.partitions, {})
        self.trace.event(f"topic {TOPIC} with {self.options.load.partitions} partition(s)")

    def fault_tasks(self) -> list[asyncio.Task[None]]:
        return [self.loop.create_task(self._faults(kind)) for kind in self.options.faults]

    async def heal(self) -> None:
        self.network.heal_all()
        self.disk_errors = False
        if not self.broker.running:
            await self.broker.start()

    async def quiesce(self) -> None:
        await self._transactions_settle()

    def final(self) -> None:
        context = self.broker.context
        assert context is not None
        logs = {
            partition: log
            for (topic, partition), log in context.logs.all_logs().items()
            if topic == TOPIC
        }
        counts = self.checker.final(logs)
        self.trace.event(
            f"final: {counts['records']} record(s) in the log, "
            f"{counts['acknowledged']} acknowledged"
        )

    async def _transactions_settle(self) -> None:
        """With the clients gone, every transaction must end: markers written, nothing left
        prepared, and the last stable offset back at the high watermark on every partition
        (an open transaction times out and is aborted within QUIESCE_S)."""
        deadline = self.loop.time() + QUIESCE_S
        unsettled: list[str] = []
        while True:
            context = self.broker.context
            unsettled = [] if context is None else _unsettled(context)
            if not unsettled or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.1)
        if unsettled and self.checker.unsynced_power_loss:
            # Without fsync a power loss can lose the coordinator's record of a transaction
            # whose data survived: a hanging transaction (KIP-664), the accepted trade-off.
            self.trace.event(f"hanging after an unsynced power loss: {', '.join(unsettled[:4])}")
        elif unsettled:
            with contextlib.suppress(InvariantBrokenError):
                self.checker.fail(
                    "transactions-end",
                    f"{QUIESCE_S:g} s after the clients stopped: {', '.join(unsettled[:4])}",
                )

    async def check_continuously(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            context = self.broker.context
            if context is None:
                continue
            try:
                self.checker.broker_state(
                    (f"{topic}-{partition}", log)
                    for (topic, partition), log in context.logs.all_logs().items()
                )
            except InvariantBrokenError:
                return

    async def _faults(self, kind: str) -> None:
        rng = random.Random(self.fault_rng.getrandbits(64))
        mean = _FAULT_MEAN_INTERVAL_S[kind]
        while True:
            await asyncio.sleep(rng.expovariate(1 / mean))
            self.fault_counts[kind] = self.fault_counts.get(kind, 0) + 1
            if kind in ("crash", "power-loss"):
                await self._crash_and_restart(rng, power_loss=kind == "power-loss")
            elif kind == "reset":
                connections = self.network.connections_of(BROKER)
                if connections:
                    self.network.reset(rng.choice(connections), "fault")
            elif kind == "cut":
                clients = sorted(
                    {connection.client_node for connection in self.network.connections_of(BROKER)}
                )
                if clients:
                    client = rng.choice(clients)
                    source, destination = (
                        (client, BROKER) if rng.random() < 0.5 else (BROKER, client)
                    )
                    self.network.cut(source, destination, rng.uniform(0.1, 3.0))
            elif kind == "consumer-crash":
                await self._crash_consumer(rng)
            elif kind == "disk-error":
                await self._disk_errors(rng)

    async def _crash_and_restart(self, rng: random.Random, power_loss: bool) -> None:
        if not self.broker.running:
            return
        self.broker.crash(power_loss)
        if power_loss:
            self.checker.power_losses += 1
            if not self.options.acks_all_fsync:
                self.checker.unsynced_power_loss = True
        await asyncio.sleep(rng.uniform(0.05, 1.5))
        await self.broker.start()

    async def _crash_consumer(self, rng: random.Random) -> None:
        """A consumer process dies (its tasks end, its connections reset, nothing committed on
        the way out) and a new instance starts on the node: the group must rebalance."""
        if not self.options.load.consumers or not self.clients.consuming:
            return
        index = rng.randrange(self.options.load.consumers)
        node = f"consumer-{index}"
        self.network.node_down(node)
        cancelled = self.loop.kill_node(node)
        self.network.node_up(node)
        self.trace.event(f"crash {node}: {cancelled} task(s) ended")
        await asyncio.sleep(rng.uniform(0.05, 2.0))
        if self.clients.consuming:
            self.clients.start_consumer(index)

    async def _disk_errors(self, rng: random.Random) -> None:
        files = self.broker.files
        if files is None:
            return
        seconds = rng.uniform(0.05, 0.5)
        self.trace.event(f"disk errors on {BROKER} for {seconds * 1000:.0f} ms")
        files.failing_writes = 0.3
        await asyncio.sleep(seconds)
        if self.broker.files is files:
            files.failing_writes = 0.0


def _unsettled(context: BrokerContext) -> list[str]:
    """What still holds a transaction open: prepared or ongoing transactions, and partitions
    whose last stable offset lags their high watermark."""
    listed = context.transactions.list_transactions(
        ("Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence")
    )
    found = [
        f"{item.transactional_id} is {item.transaction_state}" for item in listed.transaction_states
    ]
    for (topic, partition), log in context.logs.all_logs().items():
        if log.last_stable_offset < log.high_watermark:
            found.append(
                f"{topic}-{partition} last stable offset {log.last_stable_offset} < high "
                f"watermark {log.high_watermark}"
            )
    return found


class _ErrorLog(logging.Handler):
    """Keeps the broker's and clients' error lines for the report (not the trace)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < 200:
            self.lines.append(f"{record.name}: {record.getMessage()}")


def run_seed(options: SimOptions) -> SimResult:
    """Run one seed to the end (or to its first broken invariant)."""
    dispatcher.load_handlers()
    with warnings.catch_warnings():
        # A run cut short at a violation leaves clients unclosed: their finalizers warn when
        # the run's objects are freed, here, rather than at some later garbage collection.
        warnings.simplefilter("ignore", ResourceWarning)
        result = _run_seed(options)
        gc.collect()
    return result


def _run_seed(options: SimOptions) -> SimResult:
    started = time.perf_counter()
    loop = bounded_loop(options.seed, options.seconds)
    world: _World | ClusterWorld | None = None
    errors = _ErrorLog()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(errors)
    root.setLevel(logging.ERROR)
    try:
        fs = MemoryFileSystem()
        with simulated_process(loop.time, options.seed, fs):
            world = (
                _World(options, loop, fs)
                if options.brokers == 1
                else ClusterWorld(options, loop, fs)
            )
            try:
                with step_watchdog(loop):
                    loop.run_until_complete(run_phases(world, options.seconds, SETTLE_S))
            except KeyboardInterrupt:
                if loop.stuck_in_step is None:
                    raise
                world.checker.violations.append(Violation("stuck", loop.stuck_in_step, loop.time()))
            except DeadlockError as error:
                world.checker.violations.append(Violation("progress", str(error), loop.time()))
            except StuckError as error:
                world.checker.violations.append(Violation("stuck", str(error), loop.time()))
            finally:
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                with contextlib.suppress(Exception):
                    loop.run_until_complete(asyncio.sleep(0))
                world.network.close_all()
                gc.collect()
                loop.close()
    finally:
        root.removeHandler(errors)
        root.setLevel(previous_level)
    assert world is not None
    violation = world.checker.violations[0] if world.checker.violations else None
    if violation is not None:
        world.trace.event(f"VIOLATION {violation}")
    stats = {
        "sent": world.clients.sent,
        "failed": world.clients.failed,
        "acknowledged": len(world.checker.acked),
        "transactions": world.clients.transactions,
        "reads": world.checker.reads,
        "bytes_delivered": world.network.bytes_delivered,
        "restarts": world.restarts,
        "steps": loop.steps,
        **{f"fault_{kind}": count for kind, count in sorted(world.fault_counts.items())},
    }
    return SimResult(
        options=options,
        violation=violation,
        fingerprint=world.trace.fingerprint(world.network.digest.digest()),
        trace=world.trace.lines,
        simulated_s=loop.time(),
        wall_s=time.perf_counter() - started,
        stats=stats,
        errors=errors.lines,
    )
