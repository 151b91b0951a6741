"""A simulated cluster: one controller and `brokers` brokers in one simulated process.

Every node runs the real code on its own simulated disk (`/sim/<node>`) and address (`<node>:
<port>`); the broker-to-controller and broker-to-broker channels (`KafkaChannel`, asyncio
streams) go over the simulated network exactly as the clients' connections do. The node
properties are the ones `odradek.cluster.Cluster` gives a real cluster's processes, with short
failure detection (`broker.session.timeout.ms` 3 s, `replica.lag.time.max.ms` 2 s) so that a
fault fences brokers and shrinks ISRs within a short run.

The workload is an idempotent acks=all producer and a consumer (and an acks=1 producer with
`isolate-leader`) on a topic of replication factor 3 with `min.insync.replicas=2`. The faults
(`CLUSTER_FAULTS`, a seeded schedule each):

- `crash`: a broker killed (kill -9) and restarted on the same disk after a while;
- `power-loss`: the same, and every byte the broker did not fdatasync is gone;
- `cut`: the network between two brokers, or a broker and the controller, holds back every
  byte one way or both ways for a while (connections stay open, as TCP's do);
- `controller-crash`: the controller killed and restarted on its metadata log;
- `isolate-leader` (opt-in, `OPT_IN_CLUSTER_FAULTS`): the leader of a partition of the topic
  cut off, both ways, from the other brokers and the controller (not from the clients) for
  longer than the session timeout, then healed: the controller elects a new leader while the
  old one, not knowing it, goes on taking acks=1 writes (Kafka's zombie-leader window); when
  it returns its log diverges from the new leader's and must be truncated to the diverging
  epoch (KIP-101/595);
- `late-alter-partition` (opt-in): an AlterPartition from a partition's leader that the network
  held back arrives at the controller seconds later (a copy of the leader's state when it was
  sent: its broker epoch, leader epoch, partition epoch and ISR), after the ISR may have moved
  on; the controller must fence it by its epochs (FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION:
  KIP-497's partition epoch, Kafka's zombie AlterPartition), or a stale ISR naming a replica
  that has since fallen behind replaces the current one.

At most one broker is down at a time (two replicas can always form the minimum ISR). The
replication invariants (Kafka's ReplicaManager / Partition contract), from
`odradek.sim.invariants.ClusterChecks`:

- `acknowledged-writes-survive`: every acknowledged acks=all write is read back at its offset
  from the final leader's log, unless an unclean election happened or a broker lost power with
  `odradek.acks.all.fsync` off;
- `consumed-records-survive`: a record a consumer returned is never truncated later: it is in
  the final leader's log at the offset it was read at (same exceptions);
- `one-batch-per-offset` (within each replica's log) and `replicas-agree` (across the
  replicas): no two different batches at one offset on any replica (acks=1 writes may be
  lost, never left diverging: replicas that still disagree `DIVERGENCE_GRACE_S` into the
  convergence wait fail at once);
- `log-start-below-hw`, `hw-below-leo`, `hw-below-isr-leo`: log start <= high watermark <=
  min log end offset over the ISR (checked continuously);
- `acknowledged-on-isr`: every acknowledged acks=all write is in the log of every running ISR
  member, any of which the controller may elect (checked continuously);
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

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AIOKafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.protocol.produce import ProduceRequest
from kio.schema.errors import ErrorCode

from odradek.broker.config import BrokerConfig
from odradek.broker.controller_server import ControllerServer
from odradek.broker.kafka_channel import ChannelError, KafkaChannel
from odradek.cluster import replication_defaults
from odradek.controller import kio_adapter
from odradek.coordinator.group.records import partition_for
from odradek.protocol.codec import make, nested, request_module
from odradek.protocol.record_batch import Record, encode_batch
from odradek.sim.disk import SimFiles
from odradek.sim.invariants import (
    Checker,
    ClusterChecks,
    InvariantBrokenError,
    TransactionChecks,
    TxnState,
)
from odradek.sim.loop import SimLoop, run_in_node
from odradek.sim.memfs import MemoryFileSystem, SimPath
from odradek.sim.network import LatencyModel, SimNetwork
from odradek.sim.node import BROKER_PORT, SimBroker
from odradek.sim.patches import virtual_now_ms
from odradek.sim.trace import Trace
from odradek.sim.workload import TOPIC, TRANSACTIONAL_ID, TXN_GROUP, Clients, Load
from odradek.storage.log import PartitionLog
from odradek.storage.log_manager import TopicPartition

if TYPE_CHECKING:
    from odradek.sim.run import SimOptions

CONTROLLER = "controller"
CONTROLLER_ID = 0
CONTROLLER_PORT = 9093
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
# The faults cluster mode runs; the default runs them all.
CLUSTER_FAULTS = ("crash", "power-loss", "cut", "controller-crash")
# Faults a cluster run takes when named in `--faults` only (adding them to the default would
# move every seed the planted bugs are caught at). With `isolate-leader` the load gains an
# acks=1 producer (the writes a zombie leader takes).
OPT_IN_CLUSTER_FAULTS = ("isolate-leader", "late-alter-partition")
# Mean simulated seconds between two faults of a kind.
_FAULT_MEAN_INTERVAL_S = {
    "crash": 5.0,
    "power-loss": 8.0,
    "cut": 2.0,
    "controller-crash": 10.0,
    "isolate-leader": 5.0,
    "late-alter-partition": 2.0,
}
# How long the network holds a late AlterPartition back (simulated seconds): past
# `replica.lag.time.max.ms`, so the leader may have shrunk the ISR meanwhile.
LATE_ALTER_PARTITION_DELAY_S = (1.0, 6.0)
_ALTER_PARTITION_VERSION = 3
# Failure detection short enough for a run of a few seconds to see fencing and ISR shrinks.
CLUSTER_TIMEOUTS = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": "2000",
}
SETTLE_S = 20.0
# After the clients stop, replicas get this long to converge before the logs are compared.
CONVERGE_S = 30.0
# Into the convergence wait, replicas still holding different batches at one offset fail the
# run at once: a diverging suffix is cut on the first Fetch after a heal, so one still there
# is never cut (a replica re-fetching forever would otherwise spin until CONVERGE_S).
DIVERGENCE_GRACE_S = 5.0
CHECK_INTERVAL_S = 0.05
TOPIC_CREATE_TIMEOUT_S = 30.0

#: The cluster mode's default load: one idempotent producer, one consumer (and an acks=1
#: producer when `isolate-leader` runs).
CLUSTER_LOAD = Load(
    partitions=3,
    idempotent_producers=1,
    transactional_producers=0,
    consumers=1,
    messages_per_second=100.0,
    zombies=False,
)


#: The faults a transactional cluster run adds to `CLUSTER_FAULTS`.
TXN_FAULTS = ("coordinator-crash", "late-batch")
#: Every fault of a transactional cluster run: the broker, network and controller faults, and
#: kills of the transaction coordinator.
CLUSTER_TXN_FAULTS = (*CLUSTER_FAULTS, *TXN_FAULTS)
# Mean simulated seconds between two transactional faults of a kind.
_TXN_FAULT_MEAN_INTERVAL_S = {"coordinator-crash": 4.0, "late-batch": 2.0}
# The late-batch producer's transactional id and its transactions' numbers (apart from the
# transactional producers' `index * 1_000_000 + n`).
LATE_TRANSACTIONAL_ID = "sim-late"
_LATE_TXN_BASE = 900_000_000
# With the clients gone, open transactions time out (the producer's 10 s) and the coordinator's
# abort check runs every 10 s: every transaction ends within this long.
TXN_QUIESCE_S = 30.0
TRANSACTION_STATE_TOPIC = "__transaction_state"

#: The transactional cluster load: an idempotent producer, a transactional producer (records
#: over several partitions and the offsets of a consumer group in each transaction, now and
#: then fenced by a new instance), a read_committed and a read_uncommitted consumer.
CLUSTER_TXN_LOAD = Load(
    partitions=3,
    idempotent_producers=1,
    transactional_producers=1,
    consumers=2,
    messages_per_second=100.0,
    zombies=True,
    group_protocol="classic",
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
    """The controller process (`process.roles=controller`) on node `controller`, killed and
    restarted on its metadata log by the `controller-crash` fault."""

    def __init__(
        self,
        loop: SimLoop,
        network: SimNetwork,
        trace: Trace,
        cluster_id: str,
        config: Mapping[str, str],
        fs: MemoryFileSystem,
        rng: random.Random,
    ) -> None:
        self.loop = loop
        self.network = network
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
        self.files: SimFiles | None = None
        self.incarnation = 0

    @property
    def running(self) -> bool:
        return self.server is not None

    async def start(self) -> None:
        self.incarnation += 1
        self.network.node_up(CONTROLLER)
        config = BrokerConfig.from_properties(self.properties)
        config = dataclasses.replace(config, log_dir=cast(Path, SimPath(f"/sim/{CONTROLLER}")))
        self.files = SimFiles(self.fs, self.rng)
        self.server = ControllerServer(config, self.cluster_id, self.files)
        await run_in_node(CONTROLLER, self.server.start())
        self.trace.event(f"start {CONTROLLER} (incarnation {self.incarnation})")

    def crash(self) -> None:
        """kill -9: connections reset, tasks gone; the metadata log keeps what was written."""
        if self.server is None:
            return
        self.network.node_down(CONTROLLER)
        cancelled = self.loop.kill_node(CONTROLLER)
        if self.files is not None:
            self.files.crash(False)
        self.trace.event(f"crash {CONTROLLER} (process crash): {cancelled} task(s) ended")
        self.server = None
        self.files = None


class ClusterWorld:
    """Everything one cluster run owns (the cluster counterpart of `run._World`)."""

    def __init__(self, options: SimOptions, loop: SimLoop, fs: MemoryFileSystem) -> None:
        seed = options.seed
        unsupported = sorted(
            set(options.faults) - {*CLUSTER_FAULTS, *OPT_IN_CLUSTER_FAULTS, *TXN_FAULTS}
        )
        if unsupported:
            raise ValueError(
                f"cluster mode runs only the faults {', '.join((*CLUSTER_FAULTS, *TXN_FAULTS))}; "
                f"not: {', '.join(unsupported)}"
            )
        if "isolate-leader" in options.faults and not options.load.acks_1_producers:
            options = dataclasses.replace(
                options, load=dataclasses.replace(options.load, acks_1_producers=1)
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
            **CLUSTER_TIMEOUTS,
            "odradek.acks.all.fsync": "true" if options.acks_all_fsync else "false",
            **dict(options.broker_config),
        }
        self.controller = SimController(
            loop, self.network, self.trace, self.cluster_id, shared, fs, self.disk_rng
        )
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
        self.checks = ClusterChecks(self.checker)
        self.transaction_checks = TransactionChecks(self.checker)
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
        # A broker is down (crash or power loss): no second one goes down meanwhile.
        self._broker_down = False
        self._late_batches = 0

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

    # -- the run (odradek.sim.world.run_phases) ----------------------------------------------

    async def start(self) -> None:
        await self.controller.start()
        for broker in self.brokers.values():
            await broker.start()
        await self._create_topic()

    def fault_tasks(self) -> list[asyncio.Task[None]]:
        return [
            self.loop.create_task(
                self._txn_faults(kind) if kind in TXN_FAULTS else self._faults(kind)
            )
            for kind in self.options.faults
        ]

    async def heal(self) -> None:
        self.network.heal_all()
        if not self.controller.running:
            await self.controller.start()
        for broker in self.brokers.values():
            if not broker.running:
                await broker.start()

    async def quiesce(self) -> None:
        await self._converge()
        await self._transactions_settle()

    def _check_replicas_agree(self) -> None:
        for topic, partition, _leader, _replicas, _isr in self._all_partitions():
            self.checks.replicas_agree(
                f"{topic}-{partition}",
                {
                    broker_name(node_id): log
                    for node_id, log in self._replica_logs(partition, topic).items()
                },
            )

    def final(self) -> None:
        self._check_state()
        leader_logs: dict[int, PartitionLog] = {}
        for topic, partition, leader, _replicas, _isr in self._all_partitions():
            logs = self._replica_logs(partition, topic)
            if leader in logs and topic == TOPIC:
                leader_logs[partition] = logs[leader]
            self.checks.replicas_agree(
                f"{topic}-{partition}",
                {broker_name(node_id): log for node_id, log in logs.items()},
            )
        if len(leader_logs) != self.options.load.partitions:
            self.checker.fail(
                "partitions-online",
                f"only partitions {sorted(leader_logs)} have a leader at the end",
            )
        counts = self.checker.final(leader_logs)
        self.checks.consumed_records_survive(leader_logs)
        if not self.checks.loss_allowed:
            self.transaction_checks.read_committed_outcomes(leader_logs)
        self.trace.event(
            f"final: {counts['records']} record(s) in the leaders' logs, "
            f"{counts['acknowledged']} acknowledged; replicas agree"
        )

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
        return [
            (partition, leader, replicas, isr)
            for topic, partition, leader, replicas, isr in self._all_partitions()
            if topic == TOPIC
        ]

    def _all_partitions(self) -> list[tuple[str, int, int, tuple[int, ...], tuple[int, ...]]]:
        """(topic, partition, leader, replicas, isr) of every partition (the internal topics'
        too), from the controller's state."""
        server = self.controller.server
        if server is None or server.controller is None:
            return []
        found = []
        for topic, partition_id, registration in server.controller.replication.all_partitions():
            if int(registration.leader_recovery_state) != 0:
                # KIP-704's RECOVERING: this leader was elected uncleanly.
                self.checks.unclean_election = True
            found.append(
                (
                    topic.name,
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

    def _replica_logs(self, partition: int, topic: str = TOPIC) -> dict[int, PartitionLog]:
        logs: dict[int, PartitionLog] = {}
        for node_id, broker in self.brokers.items():
            context = broker.context
            if context is None:
                continue
            log = context.logs.all_logs().get(TopicPartition(topic, partition))
            if log is not None:
                logs[node_id] = log
        return logs

    async def _converge(self) -> None:
        """Wait until every replica has every record and the high watermarks match; replicas
        that still disagree `DIVERGENCE_GRACE_S` in fail `replicas-agree` (checked each second)."""
        started = self.loop.time()
        deadline = started + CONVERGE_S
        next_agreement_check = started + DIVERGENCE_GRACE_S
        while self.loop.time() < deadline:
            if self.loop.time() >= next_agreement_check:
                next_agreement_check += 1.0
                try:
                    self._check_replicas_agree()
                except InvariantBrokenError:
                    return
            if await self._wait_for_full_isr(0.1) and all(
                len({(log.log_end_offset, log.high_watermark) for log in logs.values()}) == 1
                and len(logs) == REPLICATION_FACTOR
                for logs in map(self._replica_logs, range(self.options.load.partitions))
            ):
                self.trace.event("replicas converged")
                return
            await asyncio.sleep(0.1)
        self.trace.event("replicas did not converge")

    async def check_continuously(self) -> None:
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
            self.checks.replica_state(
                (f"{topic}-{partition} on {broker_name(node_id)}", log)
                for (topic, partition), log in context.logs.all_logs().items()
            )
        for topic, partition, leader, _replicas, isr in self._all_partitions():
            name = f"{topic}-{partition}"
            self.checks.leader_in_isr(name, leader, isr)
            logs = self._replica_logs(partition, topic)
            isr_logs = {broker_name(node): logs[node] for node in isr if node in logs}
            if leader in logs:
                self.checks.high_watermark_within_isr(
                    name, broker_name(leader), logs[leader], isr_logs
                )
            if topic == TOPIC:
                self.checks.acknowledged_on_isr(name, partition, isr_logs)

    # -- faults ------------------------------------------------------------------------------

    async def _faults(self, kind: str) -> None:
        rng = random.Random(self.fault_rng.getrandbits(64))
        mean = _FAULT_MEAN_INTERVAL_S[kind]
        while True:
            await asyncio.sleep(rng.expovariate(1 / mean))
            if kind in ("crash", "power-loss"):
                await self._crash_broker(rng, power_loss=kind == "power-loss")
            elif kind == "cut":
                self._cut(rng)
            elif kind == "controller-crash":
                await self._crash_controller(rng)
            elif kind == "isolate-leader":
                await self._isolate_leader(rng)
            elif kind == "late-alter-partition":
                await self._late_alter_partition(rng)

    def _count(self, kind: str) -> None:
        self.fault_counts[kind] = self.fault_counts.get(kind, 0) + 1

    async def _crash_broker(self, rng: random.Random, power_loss: bool) -> None:
        """Kill a broker (never a second one while one is down: two replicas can always form
        the minimum ISR) and restart it on the same disk after a while."""
        if self._broker_down:
            return
        node_id = rng.choice(self.node_ids)
        broker = self.brokers[node_id]
        self._broker_down = True
        try:
            self._count("power-loss" if power_loss else "crash")
            broker.crash(power_loss)
            if power_loss:
                self.checker.power_losses += 1
                if not self.options.acks_all_fsync:
                    self.checker.unsynced_power_loss = True
            await asyncio.sleep(rng.uniform(0.5, 6.0))
            # Shielded: the end of the fault schedule must not leave a restart half done.
            await asyncio.shield(self.loop.create_task(broker.start()))
        finally:
            self._broker_down = False

    def _cut(self, rng: random.Random) -> None:
        """Hold back the bytes between two brokers, or a broker and the controller, one way
        or both ways, for up to a few seconds (beyond the session and lag timeouts)."""
        first = broker_name(rng.choice(self.node_ids))
        others = [broker_name(node) for node in self.node_ids if broker_name(node) != first]
        second = rng.choice([*others, CONTROLLER])
        if rng.random() < 0.5:
            first, second = second, first
        seconds = rng.uniform(0.1, 5.0)
        self._count("cut")
        self.network.cut(first, second, seconds)
        if rng.random() < 0.5:
            self.network.cut(second, first, seconds)

    async def _crash_controller(self, rng: random.Random) -> None:
        if not self.controller.running:
            return
        self._count("controller-crash")
        self.controller.crash()
        await asyncio.sleep(rng.uniform(0.2, 4.0))
        await asyncio.shield(self.loop.create_task(self.controller.start()))

    async def _isolate_leader(self, rng: random.Random) -> None:
        """Cut the leader of one of the topic's partitions off from the other brokers and the
        controller, both ways, for longer than `broker.session.timeout.ms` (the controller
        fences it and elects another leader), then heal. The clients still reach it: an acks=1
        producer that has not refreshed its metadata keeps writing to the old leader, which
        does not know it was replaced (Kafka's zombie-leader window)."""
        partitions = [
            (partition, leader) for partition, leader, _r, _i in self._partitions() if leader >= 0
        ]
        if not partitions:
            return
        partition, leader = rng.choice(partitions)
        isolated = broker_name(leader)
        session_s = int(CLUSTER_TIMEOUTS["broker.session.timeout.ms"]) / 1000
        seconds = rng.uniform(session_s + 1.0, session_s + 4.0)
        self._count("isolate-leader")
        self.trace.event(f"isolate {isolated} (leader of {TOPIC}-{partition}) for {seconds:.1f} s")
        others = [broker_name(node) for node in self.node_ids if node != leader]
        for other in [*others, CONTROLLER]:
            self.network.cut(isolated, other, seconds)
            self.network.cut(other, isolated, seconds)
        await asyncio.sleep(seconds)

    async def _late_alter_partition(self, rng: random.Random) -> None:
        """Copy the AlterPartition a leader of one of the topic's partitions sends for its
        current view (its broker epoch, leader epoch, partition epoch, and ISR with the broker
        epochs it knows) and deliver it to the controller, from the leader's node, after
        `LATE_ALTER_PARTITION_DELAY_S`: a request the network held back. Dropped when the
        leader's process ended meanwhile (its connections went with it). The answer goes
        nowhere: the leader moved on; only what the controller commits counts."""
        partitions = [
            (partition, leader) for partition, leader, _r, _i in self._partitions() if leader >= 0
        ]
        if not partitions:
            return
        partition, leader = rng.choice(partitions)
        broker = self.brokers[leader]
        context = broker.context
        member = None if context is None else context.cluster
        hosted = None if member is None else member.replicas.partition(TOPIC, partition)
        if member is None or hosted is None or not hosted.state.is_leader:
            return
        state = hosted.state
        isr = []
        for broker_id in sorted(state.isr):
            replica = state.replica_state(broker_id)
            epoch = state.local_broker_epoch if broker_id == leader else None
            if replica is not None:
                epoch = replica.broker_epoch
            isr.append((broker_id, -1 if epoch is None else epoch))
        incarnation = broker.incarnation
        request = {
            "broker_id": leader,
            "broker_epoch": member.broker_epoch,
            "topic_id": hosted.topic_id,
            "partition": partition,
            "leader_epoch": state.leader_epoch,
            "partition_epoch": state.partition_epoch,
            "isr": tuple(isr),
        }
        self._count("late-alter-partition")
        delay = rng.uniform(*LATE_ALTER_PARTITION_DELAY_S)
        name = broker_name(leader)
        self.trace.event(
            f"late AlterPartition of {TOPIC}-{partition} from {name} (leader epoch "
            f"{state.leader_epoch}, partition epoch {state.partition_epoch}, ISR "
            f"{[broker_id for broker_id, _ in isr]}) held back {delay:.1f} s"
        )
        await asyncio.sleep(delay)
        if broker.incarnation != incarnation or not broker.running:
            return
        await run_in_node(name, self._send_late_alter_partition(request))

    async def _send_late_alter_partition(self, request: dict[str, Any]) -> None:
        module = request_module(kio_adapter.ALTER_PARTITION, _ALTER_PARTITION_VERSION)
        data = make(
            nested(module, "PartitionData"),
            partition_index=request["partition"],
            leader_epoch=request["leader_epoch"],
            new_isr_with_epochs=tuple(
                make(nested(module, "BrokerState"), broker_id=broker_id, broker_epoch=epoch)
                for broker_id, epoch in request["isr"]
            ),
            leader_recovery_state=0,
            partition_epoch=request["partition_epoch"],
        )
        channel = KafkaChannel(
            CONTROLLER, CONTROLLER_PORT, f"odradek-alter-partition-{request['broker_id']}"
        )
        try:
            response = await channel.request(
                kio_adapter.ALTER_PARTITION,
                _ALTER_PARTITION_VERSION,
                timeout_s=5.0,
                broker_id=request["broker_id"],
                broker_epoch=request["broker_epoch"],
                topics=(
                    make(
                        nested(module, "TopicData"),
                        topic_id=request["topic_id"],
                        partitions=(data,),
                    ),
                ),
            )
            error = ErrorCode(response.error_code)
            if error is ErrorCode.none and response.topics:
                error = ErrorCode(response.topics[0].partitions[0].error_code)
            self.trace.event(f"late AlterPartition of {TOPIC}-{request['partition']}: {error.name}")
        except ChannelError as error:
            self.trace.event(f"late AlterPartition not delivered: {error}")
        finally:
            await channel.close()

    # -- transactions ------------------------------------------------------------------------

    async def _txn_faults(self, kind: str) -> None:
        """The transactional faults (`TXN_FAULTS`), on their own seeded schedule."""
        rng = random.Random(self.fault_rng.getrandbits(64))
        while True:
            await asyncio.sleep(rng.expovariate(1 / _TXN_FAULT_MEAN_INTERVAL_S[kind]))
            if kind == "coordinator-crash":
                await self._crash_coordinator(rng)
            elif kind == "late-batch" and self.clients.producing:
                self._late_batches += 1
                self._count("late-batch")
                await run_in_node(
                    "late-producer", self._guarded_late_batch(rng, self._late_batches)
                )

    async def _guarded_late_batch(self, rng: random.Random, episode: int) -> None:
        with contextlib.suppress(InvariantBrokenError):
            await self._late_batch(rng, episode)

    async def _late_batch(self, rng: random.Random, episode: int) -> None:
        """A transactional batch that arrives after its transaction ended (KIP-890's hanging
        transaction): a producer (`sim-late`) writes one record to a partition in a
        transaction and aborts it; then its next batch for that partition (same producer id
        and epoch, the next sequence, as a request the network held back would carry)
        arrives. Transaction version 1 bumps no epoch at an abort, so only the partition
        leader's verification with the coordinator stops it; were it appended, it would open
        a transaction the coordinator never heard of."""
        number = _LATE_TXN_BASE + episode
        txn = self.checker.txn(number)
        partition = rng.randrange(self.options.load.partitions)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"late-producer.{episode}",
            acks="all",
            enable_idempotence=True,
            transactional_id=LATE_TRANSACTIONAL_ID,
            transaction_timeout_ms=10_000,
            request_timeout_ms=5_000,
        )
        try:
            await asyncio.wait_for(producer.start(), 10)
            await producer.begin_transaction()
            value = f"t{number}-0"
            txn.sent[value] = partition
            await asyncio.wait_for(
                await producer.send(
                    TOPIC, value.encode(), partition=partition, timestamp_ms=self.clients.now_ms()
                ),
                10,
            )
            txn.state = TxnState.ABORTING
            await asyncio.wait_for(producer.abort_transaction(), 10)
            txn.state = TxnState.ABORTED
            manager = producer._txn_manager
            topic_partition = AIOKafkaTopicPartition(TOPIC, partition)
            leader = producer.client.cluster.leader_for_partition(topic_partition)
            if manager is None or leader is None or leader < 0:
                return
            late = f"t{number}-late"
            txn.sent[late] = partition
            batch = encode_batch(
                [Record(key=None, value=late.encode())],
                producer_id=manager.producer_id,
                producer_epoch=manager.producer_epoch,
                base_sequence=manager.sequence_number(topic_partition),
                is_transactional=True,
                base_timestamp=self.clients.now_ms(),
            )
            request = ProduceRequest(
                transactional_id=LATE_TRANSACTIONAL_ID,
                required_acks=-1,
                timeout=5_000,
                topics=[(TOPIC, [(partition, batch)])],
            )
            response = await asyncio.wait_for(producer.client.send(leader, request), 10)
            error = response.topics[0][1][0][1]
            self.trace.event(f"late batch {late} to {TOPIC}-{partition}: error code {error}")
        except (KafkaError, OSError, TimeoutError) as error:
            if txn.state is not TxnState.ABORTED:
                txn.state = TxnState.UNKNOWN
            self.trace.event(f"late batch {number} failed ({type(error).__name__})")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)

    def transaction_coordinator(self, transactional_id: str) -> int | None:
        """The broker leading the `__transaction_state` partition of `transactional_id` in the
        controller's state (Kafka's `abs(transactionalId.hashCode) % partitions`), or None
        while it has no leader."""
        leaders = {
            partition: leader
            for topic, partition, leader, _replicas, _isr in self._all_partitions()
            if topic == TRANSACTION_STATE_TOPIC
        }
        if not leaders:
            return None
        leader = leaders.get(partition_for(transactional_id, len(leaders)), -1)
        return leader if leader >= 0 else None

    async def _crash_coordinator(self, rng: random.Random) -> None:
        """kill -9 the transactional producer's transaction coordinator (the broker leading
        its `__transaction_state` partition) and restart it after a while; skipped while
        another broker is down."""
        if self._broker_down:
            return
        node_id = self.transaction_coordinator(f"{TRANSACTIONAL_ID}-0")
        if node_id is None:
            return
        broker = self.brokers[node_id]
        self._broker_down = True
        try:
            self._count("coordinator-crash")
            self.trace.event(f"coordinator-crash: {broker_name(node_id)} coordinates")
            broker.crash(False)
            await asyncio.sleep(rng.uniform(0.5, 6.0))
            await asyncio.shield(self.loop.create_task(broker.start()))
        finally:
            self._broker_down = False

    def _unsettled_transactions(self) -> list[str]:
        """What still holds a transaction open: a transaction Ongoing or Prepare* on a running
        broker's coordinator, or a partition whose leader's last stable offset lags its high
        watermark."""
        found: list[str] = []
        for node_id, broker in sorted(self.brokers.items()):
            context = broker.context
            if context is None:
                continue
            listed = context.transactions.list_transactions(
                ("Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence")
            )
            found.extend(
                f"{item.transactional_id} is {item.transaction_state} on {broker_name(node_id)}"
                for item in listed.transaction_states
            )
        for topic, partition, leader, _replicas, _isr in self._all_partitions():
            log = self._replica_logs(partition, topic).get(leader)
            if log is not None and log.last_stable_offset < log.high_watermark:
                found.append(
                    f"{topic}-{partition} on {broker_name(leader)}: last stable offset "
                    f"{log.last_stable_offset} < high watermark {log.high_watermark}"
                )
        return found

    async def _transactions_settle(self) -> None:
        """After the replicas converged: every transaction ends within `TXN_QUIESCE_S` (none
        left Ongoing or Prepare*, every leader's LSO at its HW), and the transactional group's
        committed offset matches the transactions' outcomes (`TransactionChecks`)."""
        deadline = self.loop.time() + TXN_QUIESCE_S
        while True:
            unsettled = self._unsettled_transactions()
            if not unsettled or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.1)
        with contextlib.suppress(InvariantBrokenError):
            if unsettled and self.checks.loss_allowed:
                # A hanging transaction after lost writes (KIP-664): the accepted trade-off.
                self.trace.event(f"hanging after a loss: {', '.join(unsettled[:4])}")
            elif unsettled:
                self.transaction_checks.transactions_end(unsettled, TXN_QUIESCE_S)
            if self.options.load.transactional_producers and not self.checks.loss_allowed:
                committed = await self._txn_group_offset()
                if committed is not None:
                    self.transaction_checks.offsets_match_outcomes(committed)

    async def _txn_group_offset(self) -> int | None:
        """The transactional group's committed offset of partition 0 (OffsetFetch through a
        client); -1 for none, None when no broker answered."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=TXN_GROUP,
            enable_auto_commit=False,
            request_timeout_ms=5000,
        )
        try:
            await run_in_node("admin", consumer.start())
            for _attempt in range(20):
                try:
                    committed = await run_in_node(
                        "admin", consumer.committed(AIOKafkaTopicPartition(TOPIC, 0))
                    )
                except KafkaError:
                    await asyncio.sleep(0.5)
                    continue
                return -1 if committed is None else int(committed)
        except KafkaError as error:
            self.trace.event(f"final offset fetch failed ({type(error).__name__})")
        finally:
            with contextlib.suppress(Exception):
                await run_in_node("admin", consumer.stop())
        return None
