"""A simulated cluster: one controller and `brokers` brokers in one simulated process.

Every node runs the real code on its own simulated disk (`/sim/<node>`) and address (`<node>:
<port>`); the broker-to-controller and broker-to-broker channels (`KafkaChannel`, asyncio
streams) go over the simulated network exactly as the clients' connections do. The node
properties are the ones `odradek.cluster.Cluster` gives a real cluster's processes.

The workload is an idempotent acks=all producer and a consumer on a topic of replication
factor 3 with `min.insync.replicas=2`; the fault is a broker killed and restarted on the same
disk (no power loss). The replication invariants (Kafka's ReplicaManager / Partition contract):

- `acknowledged-writes-survive`: every acknowledged acks=all write is read back at its offset
  (no unclean election, no power loss here);
- `replicas-agree`: no two different batches at one offset across replicas;
- `log-start-below-hw`, `hw-below-leo`: log start <= high watermark <= log end on every
  replica (checked continuously);
- `leader-in-isr`: the leader is in the ISR, or the partition is offline (checked
  continuously on the controller's state).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import random
import uuid
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from odradek.broker.config import BrokerConfig
from odradek.broker.controller_server import ControllerServer
from odradek.cluster import replication_defaults
from odradek.protocol.record_batch import decode_batches
from odradek.sim.disk import SimFiles
from odradek.sim.invariants import Checker, InvariantBrokenError
from odradek.sim.loop import SimLoop, run_in_node
from odradek.sim.memfs import MemoryFileSystem, SimPath
from odradek.sim.network import LatencyModel, SimNetwork
from odradek.sim.node import BROKER_PORT, SimBroker
from odradek.sim.patches import virtual_now_ms
from odradek.sim.trace import Trace
from odradek.sim.workload import TOPIC, Clients, Load
from odradek.storage.log import PartitionLog
from odradek.storage.log_manager import TopicPartition

if TYPE_CHECKING:
    from odradek.sim.run import SimOptions

CONTROLLER = "controller"
CONTROLLER_ID = 0
CONTROLLER_PORT = 9093
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
# The faults cluster mode runs (kill -9 of a broker and its restart on the same disk).
CLUSTER_FAULTS = ("crash",)
# Mean simulated seconds between two broker kills.
_CRASH_MEAN_INTERVAL_S = 8.0
SETTLE_S = 20.0
# After the clients stop, replicas get this long to converge before the logs are compared.
CONVERGE_S = 30.0
CHECK_INTERVAL_S = 0.05
TOPIC_CREATE_TIMEOUT_S = 30.0

#: The cluster mode's default load: one idempotent producer, one consumer.
CLUSTER_LOAD = Load(
    partitions=3,
    idempotent_producers=1,
    transactional_producers=0,
    consumers=1,
    messages_per_second=100.0,
    zombies=False,
)


def broker_name(node_id: int) -> str:
    return f"broker-{node_id}"


def cluster_id_for(seed: int) -> str:
    """Kafka's cluster id format (a UUID, base64url without padding), drawn from the seed."""
    drawn = uuid.UUID(int=random.Random(f"{seed}:cluster-id").getrandbits(128))
    return base64.urlsafe_b64encode(drawn.bytes).decode().rstrip("=")


def _common_properties(node_id: int, cluster_id: str) -> dict[str, str]:
    """What `odradek.cluster.Cluster._properties` gives every node, on simulated addresses."""
    return {
        "node.id": str(node_id),
        "cluster.id": cluster_id,
        "controller.quorum.voters": f"{CONTROLLER_ID}@{CONTROLLER}:{CONTROLLER_PORT}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "group.initial.rebalance.delay.ms": "0",
    }


class SimController:
    """The controller process (`process.roles=controller`) on node `controller`."""

    def __init__(
        self,
        trace: Trace,
        cluster_id: str,
        config: Mapping[str, str],
        fs: MemoryFileSystem,
        rng: random.Random,
    ) -> None:
        self.trace = trace
        self.fs = fs
        self.rng = rng
        self.cluster_id = cluster_id
        self.properties = {
            **_common_properties(CONTROLLER_ID, cluster_id),
            "process.roles": "controller",
            "listeners": f"CONTROLLER://{CONTROLLER}:{CONTROLLER_PORT}",
            "log.dirs": f"/sim/{CONTROLLER}",
            **config,
        }
        self.server: ControllerServer | None = None

    async def start(self) -> None:
        config = BrokerConfig.from_properties(self.properties)
        config = dataclasses.replace(config, log_dir=cast(Path, SimPath(f"/sim/{CONTROLLER}")))
        self.server = ControllerServer(config, self.cluster_id, SimFiles(self.fs, self.rng))
        await run_in_node(CONTROLLER, self.server.start())
        self.trace.event(f"start {CONTROLLER}")


class ClusterWorld:
    """Everything one cluster run owns (the cluster counterpart of `run._World`)."""

    def __init__(self, options: SimOptions, loop: SimLoop, fs: MemoryFileSystem) -> None:
        seed = options.seed
        unsupported = sorted(set(options.faults) - set(CLUSTER_FAULTS))
        if unsupported:
            raise ValueError(
                f"cluster mode runs only the faults {', '.join(CLUSTER_FAULTS)}; "
                f"not yet: {', '.join(unsupported)}"
            )
        self.options = options
        self.loop = loop
        self.trace = Trace(loop.time)
        self.network = SimNetwork(
            loop, random.Random(f"{seed}:network"), self.trace, LatencyModel()
        )
        self.fault_rng = random.Random(f"{seed}:faults")
        self.disk_rng = random.Random(f"{seed}:disk")
        loop.executor_latency = self._executor_latency
        self.cluster_id = cluster_id_for(seed)
        shared = {
            **replication_defaults(options.brokers),
            "odradek.acks.all.fsync": "true" if options.acks_all_fsync else "false",
            **dict(options.broker_config),
        }
        self.controller = SimController(self.trace, self.cluster_id, shared, fs, self.disk_rng)
        self.node_ids = list(range(CONTROLLER_ID + 1, CONTROLLER_ID + 1 + options.brokers))
        self.brokers: dict[int, SimBroker] = {}
        for node_id in self.node_ids:
            config = {
                **_common_properties(node_id, self.cluster_id),
                "process.roles": "broker",
                **shared,
            }
            self.brokers[node_id] = SimBroker(
                broker_name(node_id), loop, self.network, self.trace, self.disk_rng, config, fs
            )
        self.stop = asyncio.Event()
        self.checker = Checker(
            loop.time, TOPIC, options.load.partitions, lambda _violation: self.stop.set()
        )
        self.bootstrap_servers = ",".join(
            f"{broker_name(node_id)}:{BROKER_PORT}" for node_id in self.node_ids
        )
        self.clients = Clients(
            self.bootstrap_servers,
            self.checker,
            self.trace,
            random.Random(f"{seed}:clients"),
            options.load,
            virtual_now_ms(loop.time),
            self._spawn,
        )
        self.fault_counts: dict[str, int] = {}

    @property
    def restarts(self) -> int:
        return sum(broker.incarnation - 1 for broker in self.brokers.values())

    def _spawn(self, node: str, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return run_in_node(node, self._guard(coroutine))

    async def _guard(self, coroutine: Coroutine[Any, Any, None]) -> None:
        with contextlib.suppress(InvariantBrokenError):
            await coroutine

    def _executor_latency(self, function: Any) -> float:
        latency = self.disk_rng.uniform(0.0002, 0.003)
        if self.disk_rng.random() < 0.01:
            latency += self.disk_rng.uniform(0, 0.05)
        return latency

    # -- the run -----------------------------------------------------------------------------

    async def main(self) -> None:
        await self.controller.start()
        for broker in self.brokers.values():
            await broker.start()
        await self._create_topic()
        checks = self.loop.create_task(self._check_continuously())
        self.clients.start()
        faults = [self.loop.create_task(self._crashes()) for _ in self.options.faults]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self.options.seconds)
        for task in faults:
            task.cancel()
        await asyncio.gather(*faults, return_exceptions=True)
        for broker in self.brokers.values():
            if not broker.running:
                await broker.start()
        if not self.stop.is_set():
            self.trace.event("load stops; faults healed")
            settle = self.loop.create_task(self.clients.settle(SETTLE_S))
            stopped = self.loop.create_task(self.stop.wait())
            await asyncio.wait([settle, stopped], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not settle.done():
                settle.cancel()
        else:
            for task in self.clients.tasks:
                task.cancel()
        await asyncio.gather(*self.clients.tasks, return_exceptions=True)
        if not self.stop.is_set():
            await self._converge()
        checks.cancel()
        await asyncio.gather(checks, return_exceptions=True)
        if not self.checker.violations:
            with contextlib.suppress(InvariantBrokenError):
                self._final()

    async def _create_topic(self) -> None:
        """Create the topic through a broker (forwarded to the controller), as a client does;
        retried until every broker has registered (RF=3 needs three unfenced brokers)."""
        deadline = self.loop.time() + TOPIC_CREATE_TIMEOUT_S
        topic = NewTopic(
            TOPIC,
            self.options.load.partitions,
            REPLICATION_FACTOR,
            topic_configs={"min.insync.replicas": str(MIN_INSYNC_REPLICAS)},
        )
        while True:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers, request_timeout_ms=5000
            )
            try:
                await run_in_node("admin", admin.start())
                response = await run_in_node("admin", admin.create_topics([topic]))
                errors = [error for _name, error, *_ in response.topic_errors if error != 0]
                if not errors:
                    break
                detail = f"error code {errors[0]}"
            except (KafkaError, AttributeError) as error:
                # AttributeError: aiokafka's admin reads the controller id of a Metadata
                # response before any broker has registered (it is -1 then).
                detail = str(error)
            finally:
                with contextlib.suppress(Exception):
                    await run_in_node("admin", admin.close())
            if self.loop.time() >= deadline:
                raise RuntimeError(f"creating {TOPIC} failed: {detail}")
            await asyncio.sleep(0.5)
        await self._wait_for_full_isr(TOPIC_CREATE_TIMEOUT_S)
        self.trace.event(
            f"topic {TOPIC} with {self.options.load.partitions} partition(s), "
            f"replication factor {REPLICATION_FACTOR}, min.insync.replicas {MIN_INSYNC_REPLICAS}"
        )

    def _partitions(self) -> list[tuple[int, int, tuple[int, ...], tuple[int, ...]]]:
        """(partition, leader, replicas, isr) of the topic, from the controller's state."""
        server = self.controller.server
        if server is None or server.controller is None:
            return []
        found = []
        for topic, partition_id, registration in server.controller.replication.all_partitions():
            if topic.name == TOPIC:
                found.append(
                    (
                        partition_id,
                        registration.leader,
                        tuple(registration.replicas),
                        tuple(registration.isr),
                    )
                )
        return sorted(found)

    async def _wait_for_full_isr(self, seconds: float) -> bool:
        deadline = self.loop.time() + seconds
        while self.loop.time() < deadline:
            partitions = self._partitions()
            if len(partitions) == self.options.load.partitions and all(
                len(isr) == len(replicas) for _, _, replicas, isr in partitions
            ):
                return True
            await asyncio.sleep(0.1)
        return False

    def _replica_logs(self, partition: int) -> dict[int, PartitionLog]:
        logs: dict[int, PartitionLog] = {}
        for node_id, broker in self.brokers.items():
            context = broker.context
            if context is None:
                continue
            log = context.logs.all_logs().get(TopicPartition(TOPIC, partition))
            if log is not None:
                logs[node_id] = log
        return logs

    async def _converge(self) -> None:
        """Wait until every replica has every record and the high watermarks match."""
        deadline = self.loop.time() + CONVERGE_S
        while self.loop.time() < deadline:
            if await self._wait_for_full_isr(0.1) and all(
                len({(log.log_end_offset, log.high_watermark) for log in logs.values()}) == 1
                and len(logs) == REPLICATION_FACTOR
                for logs in map(self._replica_logs, range(self.options.load.partitions))
            ):
                self.trace.event("replicas converged")
                return
            await asyncio.sleep(0.1)
        self.trace.event("replicas did not converge")

    async def _check_continuously(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            try:
                self._check_state()
            except InvariantBrokenError:
                return

    def _check_state(self) -> None:
        for node_id, broker in self.brokers.items():
            context = broker.context
            if context is None:
                continue
            logs = [
                (f"{topic}-{partition} on {broker_name(node_id)}", log)
                for (topic, partition), log in context.logs.all_logs().items()
            ]
            for name, log in logs:
                if log.log_start_offset > log.high_watermark:
                    self.checker.fail(
                        "log-start-below-hw",
                        f"{name}: log start {log.log_start_offset} > high watermark "
                        f"{log.high_watermark}",
                    )
            self.checker.broker_state(logs)
        for partition, leader, _replicas, isr in self._partitions():
            if leader >= 0 and leader not in isr:
                self.checker.fail(
                    "leader-in-isr",
                    f"{TOPIC}-{partition}: leader {leader} is not in the ISR {list(isr)}",
                )

    def _final(self) -> None:
        self._check_state()
        leader_logs: dict[int, PartitionLog] = {}
        for partition, leader, _replicas, _isr in self._partitions():
            logs = self._replica_logs(partition)
            if leader in logs:
                leader_logs[partition] = logs[leader]
            self._compare_replicas(partition, logs)
        if len(leader_logs) != self.options.load.partitions:
            self.checker.fail(
                "partitions-online",
                f"only partitions {sorted(leader_logs)} have a leader at the end",
            )
        counts = self.checker.final(leader_logs)
        self.trace.event(
            f"final: {counts['records']} record(s) in the leaders' logs, "
            f"{counts['acknowledged']} acknowledged; replicas agree"
        )

    def _compare_replicas(self, partition: int, logs: dict[int, PartitionLog]) -> None:
        """No two different batches at one offset across the replicas' logs."""
        seen: dict[int, tuple[int, int, int]] = {}  # base offset -> (next offset, crc, node)
        for node_id, log in sorted(logs.items()):
            for base_offset, next_offset, crc in _batches(log):
                first = seen.setdefault(base_offset, (next_offset, crc, node_id))
                if first[:2] != (next_offset, crc):
                    self.checker.fail(
                        "replicas-agree",
                        f"{TOPIC}-{partition} offset {base_offset}: {broker_name(first[2])} has "
                        f"a batch to {first[0]} (crc {first[1]}), {broker_name(node_id)} one to "
                        f"{next_offset} (crc {crc})",
                    )

    async def _crashes(self) -> None:
        """Kill a running broker now and then (never the last two: min ISR 2 must be able
        to hold) and restart it on the same disk after a while."""
        rng = random.Random(self.fault_rng.getrandbits(64))
        while True:
            await asyncio.sleep(rng.expovariate(1 / _CRASH_MEAN_INTERVAL_S))
            running = [node_id for node_id, broker in self.brokers.items() if broker.running]
            if len(running) < len(self.brokers):
                continue
            node_id = rng.choice(running)
            self.fault_counts["crash"] = self.fault_counts.get("crash", 0) + 1
            self.brokers[node_id].crash(power_loss=False)
            await asyncio.sleep(rng.uniform(0.5, 6.0))
            await self.brokers[node_id].start()


def _batches(log: PartitionLog) -> list[tuple[int, int, int]]:
    """(base offset, next offset, crc) of every batch in the log."""
    found: list[tuple[int, int, int]] = []
    offset = log.log_start_offset
    end = log.log_end_offset
    while offset < end:
        read = log.read(offset, 1 << 20, end, True)
        if not read.records:
            break
        for header, _batch in decode_batches(read.records):
            found.append((header.base_offset, header.next_offset, header.crc))
            offset = max(offset, header.next_offset)
    return found
