"""The simulated clients: aiokafka producers and consumers on the simulated loop.

- idempotent producers (acks=all, retries), each value `i<producer>-<n>`;
- acks=1 producers (not idempotent), each value `a<producer>-<n>`: the leader alone
  acknowledges, so a leader cut off from its followers takes their writes until it learns it
  was replaced (Kafka's zombie-leader window); those writes may be lost or duplicated;
- one transactional producer: transactions of 1-4 records over random partitions, each also
  committing offset `<txn>` for a consumer group (TxnOffsetCommit), 80 % committed, 20 %
  aborted; now and then a second instance with the same transactional id fences it mid-way
  (the zombie: it keeps sending and tries to commit);
- consumers in one classic group, one read_committed and one read_uncommitted;
- an observer that reads the transactional group's committed offset (OffsetFetch).

Every client reports to the `Checker`; each runs as a task of its own node (`producer-0`,
`consumer-1`, ...), so it connects from that node's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from odradek.sim.invariants import Checker, TxnState
from odradek.sim.kip848 import ConsumerGroupMember
from odradek.sim.trace import Trace

logger = logging.getLogger(__name__)

TOPIC = "sim"
GROUP = "sim-group"
TXN_GROUP = "sim-txn-offsets"
TRANSACTIONAL_ID = "sim-txn"

# Client timeouts, in simulated ms: long enough to ride out a broker restart or a cut.
REQUEST_TIMEOUT_MS = 8_000
RETRY_BACKOFF_MS = 50
METADATA_MAX_AGE_MS = 5_000
# Client pacing: realistic settings that keep the clients from polling for nothing (every idle
# request costs the simulation as much as a real one). Session timeout 6 s, heartbeat 1 s (a
# third of Kafka's rule), autocommit every second, the observer's OffsetFetch once a second.
LINGER_MS = 5
FETCH_MAX_WAIT_MS = 500
HEARTBEAT_INTERVAL_MS = 1_000
OBSERVER_INTERVAL_S = 1.0
# The broker's KIP-848 group timings, as short as the classic group's (Kafka's defaults, 45 s
# and 5 s, would leave a crashed member's partitions unread for most of a run).
KIP848_GROUP_CONFIG = {
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.min.session.timeout.ms": "6000",
    "group.consumer.heartbeat.interval.ms": "1000",
    "group.consumer.min.heartbeat.interval.ms": "1000",
}
CLOSE_TIMEOUT_S = 10.0
ZOMBIE_TIMEOUT_S = 5.0
# A transaction's commit or abort that takes longer is given up on (outcome unknown).
END_TXN_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Load:
    """How much the clients do: messages per simulated second over all producers."""

    partitions: int = 6
    idempotent_producers: int = 2
    transactional_producers: int = 1
    consumers: int = 2
    messages_per_second: float = 200.0
    zombies: bool = True
    # acks=1 producers (`a<producer>-<n>`), whose acknowledged writes may be lost.
    acks_1_producers: int = 0
    # The consumers' group protocol: "classic" (aiokafka's own), "consumer" (KIP-848, the
    # member in odradek.sim.kip848), or None: a third of the seeds use "consumer".
    group_protocol: str | None = None


class Clients:
    """Starts the clients, stops their load, and waits for what they sent to settle."""

    def __init__(
        self,
        bootstrap_servers: str,
        checker: Checker,
        trace: Trace,
        rng: random.Random,
        load: Load,
        now_ms: Callable[[], int],
        spawn: Callable[[str, Coroutine[Any, Any, None]], asyncio.Task[None]],
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.checker = checker
        self.trace = trace
        self.rng = rng
        self.load = load
        self.now_ms = now_ms
        self.spawn = spawn
        self.producing = True
        self.consuming = True
        self.tasks: list[asyncio.Task[None]] = []
        self.in_flight: dict[str, asyncio.Future[Any]] = {}
        self.consumer_incarnations: dict[int, int] = {}
        self.group_protocol = load.group_protocol or (
            "consumer" if random.Random(rng.getrandbits(64)).random() < 1 / 3 else "classic"
        )
        self.sent = 0
        self.failed = 0
        self.transactions = 0

    def start(self) -> None:
        load = self.load
        senders = load.idempotent_producers + load.transactional_producers + load.acks_1_producers
        interval = senders / load.messages_per_second if load.messages_per_second > 0 else 1.0
        for index in range(load.idempotent_producers):
            self.tasks.append(
                self.spawn(f"producer-{index}", self._idempotent_producer(index, interval))
            )
        for index in range(load.transactional_producers):
            self.tasks.append(
                self.spawn(f"txn-producer-{index}", self._transactional_producer(index, interval))
            )
        for index in range(load.acks_1_producers):
            self.tasks.append(
                self.spawn(f"acks-1-producer-{index}", self._acks_1_producer(index, interval))
            )
        for index in range(load.consumers):
            self.start_consumer(index)
        if load.transactional_producers:
            self.tasks.append(self.spawn("observer", self._txn_offsets_observer()))

    def start_consumer(self, index: int) -> None:
        """Start (or, after its node crashed, restart) consumer `index` as a new instance."""
        incarnation = self.consumer_incarnations.get(index, 0) + 1
        self.consumer_incarnations[index] = incarnation
        consume = self._consumer if self.group_protocol == "classic" else self._kip848_consumer
        self.tasks.append(
            self.spawn(f"consumer-{index}", consume(index, index % 2 == 0, incarnation))
        )

    async def settle(self, seconds: float) -> None:
        """Stop producing, give in-flight sends `seconds` to finish, then stop everything."""
        self.producing = False
        deadline = asyncio.get_running_loop().time() + seconds
        while self.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        self.consuming = False
        remaining = max(deadline - asyncio.get_running_loop().time(), 1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), remaining)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- helpers -----------------------------------------------------------------------------

    def _producer(self, client_id: str, **settings: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            retry_backoff_ms=RETRY_BACKOFF_MS,
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            # Kafka 4.0's default (KIP-1030): sends that meet one in flight share a request.
            linger_ms=LINGER_MS,
            **settings,
        )

    async def _start(self, name: str, make: Callable[[], Any]) -> Any:
        """Start a client, retrying while the broker is unreachable; None once load stopped."""
        attempt = 0
        while self.producing or self.consuming:
            attempt += 1
            client = make()
            try:
                await client.start()
            except (KafkaError, OSError) as error:
                self.trace.event(f"{name} start failed ({type(error).__name__})")
                await _stop_quietly(client)
                await asyncio.sleep(0.2 * min(attempt, 5))
                continue
            return client
        return None

    def _report_producer_id(
        self, name: str, producer: AIOKafkaProducer, transactional_id: str | None
    ) -> None:
        manager = producer._txn_manager
        if manager is None or manager.producer_id < 0:
            return
        self.checker.producer_id(
            name, transactional_id, manager.producer_id, manager.producer_epoch
        )

    # -- idempotent producers ----------------------------------------------------------------

    async def _idempotent_producer(self, index: int, interval: float) -> None:
        name = f"producer-{index}"
        rng = random.Random(self.rng.getrandbits(64))
        producer = await self._start(name, lambda: self._producer(name))
        if producer is None:
            return
        self._report_producer_id(name, producer, None)
        sequence = 0
        try:
            while self.producing:
                await asyncio.sleep(rng.expovariate(1 / interval))
                if not self.producing:
                    break
                value = f"i{index}-{sequence}"
                sequence += 1
                partition = rng.randrange(self.load.partitions)
                try:
                    future = await producer.send(
                        TOPIC, value.encode(), partition=partition, timestamp_ms=self.now_ms()
                    )
                except KafkaError as error:
                    self.failed += 1
                    self.trace.event(f"{name} send {value} refused ({type(error).__name__})")
                    continue
                self.sent += 1
                self.in_flight[value] = future
                future.add_done_callback(
                    lambda done, value=value: self._acked(name, producer, value, done)
                )
            while self.in_flight:
                await asyncio.sleep(0.05)
        finally:
            await _stop_quietly(producer)

    # -- acks=1 producers ---------------------------------------------------------------------

    async def _acks_1_producer(self, index: int, interval: float) -> None:
        """Writes `a<index>-<n>` with acks=1 and no idempotence (aiokafka retries, so a
        value may land twice); what the leader acknowledged is reported, not required to
        survive."""
        name = f"acks-1-producer-{index}"
        rng = random.Random(self.rng.getrandbits(64))
        producer = await self._start(
            name,
            lambda: AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=name,
                acks=1,
                enable_idempotence=False,
                request_timeout_ms=REQUEST_TIMEOUT_MS,
                retry_backoff_ms=RETRY_BACKOFF_MS,
                metadata_max_age_ms=METADATA_MAX_AGE_MS,
                linger_ms=LINGER_MS,
            ),
        )
        if producer is None:
            return
        sequence = 0
        try:
            while self.producing:
                await asyncio.sleep(rng.expovariate(1 / interval))
                if not self.producing:
                    break
                value = f"a{index}-{sequence}"
                sequence += 1
                try:
                    future = await producer.send(
                        TOPIC,
                        value.encode(),
                        partition=rng.randrange(self.load.partitions),
                        timestamp_ms=self.now_ms(),
                    )
                except KafkaError as error:
                    self.failed += 1
                    self.trace.event(f"{name} send {value} refused ({type(error).__name__})")
                    continue
                self.sent += 1
                self.in_flight[value] = future
                future.add_done_callback(
                    lambda done, value=value: self._leader_acked(name, value, done)
                )
            while self.in_flight:
                await asyncio.sleep(0.05)
        finally:
            await _stop_quietly(producer)

    def _delivered(self, name: str, value: str, future: asyncio.Future[Any]) -> Any:
        """The record metadata of a finished send, or None (cancelled, or failed: counted and
        traced); the value is no longer in flight either way."""
        self.in_flight.pop(value, None)
        if future.cancelled():
            return None
        error = future.exception()
        if error is not None:
            self.failed += 1
            self.trace.event(f"{name} {value} failed ({type(error).__name__})")
            return None
        return future.result()

    def _leader_acked(self, name: str, value: str, future: asyncio.Future[Any]) -> None:
        metadata = self._delivered(name, value, future)
        if metadata is not None:
            self.checker.leader_acknowledged(value, metadata.partition, metadata.offset)

    def _acked(
        self, name: str, producer: AIOKafkaProducer, value: str, future: asyncio.Future[Any]
    ) -> None:
        metadata = self._delivered(name, value, future)
        if metadata is not None:
            self._report_producer_id(name, producer, None)
            self.checker.acknowledged(value, metadata.partition, metadata.offset)

    # -- the transactional producer ----------------------------------------------------------

    async def _transactional_producer(self, index: int, interval: float) -> None:
        name = f"txn-producer-{index}"
        transactional_id = f"{TRANSACTIONAL_ID}-{index}"
        rng = random.Random(self.rng.getrandbits(64))
        producer: AIOKafkaProducer | None = None
        number = index * 1_000_000
        incarnation = 0

        def make() -> AIOKafkaProducer:
            return self._producer(
                f"{name}.{incarnation}",
                transactional_id=transactional_id,
                transaction_timeout_ms=10_000,
            )

        try:
            while self.producing:
                if producer is None:
                    incarnation += 1
                    producer = await self._start(name, make)
                    if producer is None:
                        return
                    self._report_producer_id(name, producer, transactional_id)
                number += 1
                self.transactions += 1
                txn = self.checker.txn(number)
                zombie = self.load.zombies and rng.random() < 0.03
                try:
                    await producer.begin_transaction()
                    count = rng.randint(1, 4)
                    for position in range(count):
                        if zombie and position == count - 1 and position > 0:
                            # A second instance fences this one before its last send, once
                            # the earlier sends are on the broker (with linger they could
                            # still wait in the client, and the zombie's partitions would never
                            # join its transaction: its last send would fail at
                            # AddPartitionsToTxn and never reach a partition).
                            await producer.flush()
                            incarnation += 1
                            successor = await self._start(name, make)
                            if successor is None:
                                # The load stopped first: nothing fenced this instance, so
                                # its commit below is a real one.
                                txn.commit_requested = True
                                txn.state = TxnState.COMMITTING
                            else:
                                txn.state = TxnState.UNKNOWN
                                self.trace.event(f"{name} txn {number}: fenced by a new instance")
                            # The zombie carries on beside its successor, as a real one would.
                            self.tasks.append(
                                asyncio.get_running_loop().create_task(
                                    self._zombie_finish(name, producer, txn, rng)
                                )
                            )
                            producer = successor
                            if producer is not None:
                                self._report_producer_id(name, producer, transactional_id)
                            break
                        value = f"t{number}-{position}"
                        partition = rng.randrange(self.load.partitions)
                        txn.sent[value] = partition
                        await producer.send(
                            TOPIC, value.encode(), partition=partition, timestamp_ms=self.now_ms()
                        )
                        await asyncio.sleep(rng.expovariate(1 / interval))
                    if zombie:
                        continue
                    await producer.send_offsets_to_transaction(
                        {TopicPartition(TOPIC, 0): number}, TXN_GROUP
                    )
                    if rng.random() < 0.8:
                        txn.commit_requested = True
                        txn.state = TxnState.COMMITTING
                        await asyncio.wait_for(producer.commit_transaction(), END_TXN_TIMEOUT_S)
                        txn.state = TxnState.COMMITTED
                    else:
                        txn.state = TxnState.ABORTING
                        await asyncio.wait_for(producer.abort_transaction(), END_TXN_TIMEOUT_S)
                        txn.state = TxnState.ABORTED
                    self.trace.event(f"{name} txn {number} {txn.state.value}")
                except (KafkaError, OSError, TimeoutError) as error:
                    self.trace.event(f"{name} txn {number} failed ({type(error).__name__})")
                    txn.state = TxnState.UNKNOWN
                    await _stop_quietly(producer)
                    producer = None
        finally:
            if producer is not None:
                await _stop_quietly(producer)

    async def _zombie_finish(
        self, name: str, zombie: AIOKafkaProducer, txn: Any, rng: random.Random
    ) -> None:
        """The fenced instance sends once more and asks to commit: both must fail."""
        value = f"t{txn.number}-z"
        # A partition already in the transaction: the send goes straight to Produce (no
        # AddPartitionsToTxn first), so the broker's epoch check is what must stop it.
        txn.sent[value] = rng.choice(sorted(set(txn.sent.values())))
        try:
            await asyncio.wait_for(
                zombie.send(
                    TOPIC, value.encode(), partition=txn.sent[value], timestamp_ms=self.now_ms()
                ),
                ZOMBIE_TIMEOUT_S,
            )
            # aiokafka can wait forever once its sender hit the fence: bound the attempt.
            await asyncio.wait_for(zombie.commit_transaction(), ZOMBIE_TIMEOUT_S)
            self.trace.event(f"{name} zombie commit of txn {txn.number} succeeded")
        except (KafkaError, OSError, TimeoutError) as error:
            self.trace.event(f"{name} zombie txn {txn.number} failed ({type(error).__name__})")
        finally:
            await _stop_quietly(zombie, ZOMBIE_TIMEOUT_S)

    # -- consumers ---------------------------------------------------------------------------

    async def _consumer(self, index: int, read_committed: bool, incarnation: int) -> None:
        name = f"consumer-{index}"
        # The instance, for the checker: a restarted consumer starts a new reader.
        reader = f"{name}.{incarnation}"
        checker = self.checker
        session = 0
        holder: list[AIOKafkaConsumer] = []

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                return None

            async def on_partitions_assigned(self, assigned: Any) -> None:
                nonlocal session
                session += 1
                generation = holder[0]._coordinator.generation if holder else -1
                checker.assigned(reader, generation, [tp.partition for tp in assigned])

        def make() -> AIOKafkaConsumer:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=name,
                group_id=GROUP,
                isolation_level="read_committed" if read_committed else "read_uncommitted",
                auto_offset_reset="earliest",
                enable_auto_commit=True,
                auto_commit_interval_ms=1_000,
                # Fetches wait for a batch of records (or Kafka's default 500 ms) rather than
                # answer each one; a consumer with nothing to read asks twice a second.
                fetch_min_bytes=64 * 1024,
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                session_timeout_ms=6_000,
                heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
                request_timeout_ms=REQUEST_TIMEOUT_MS,
                retry_backoff_ms=RETRY_BACKOFF_MS,
                metadata_max_age_ms=METADATA_MAX_AGE_MS,
            )
            consumer.subscribe([TOPIC], listener=Listener())
            holder[:] = [consumer]
            return consumer

        consumer = await self._start(name, make)
        if consumer is None:
            return
        try:
            while self.consuming:
                try:
                    batches = await consumer.getmany(timeout_ms=FETCH_MAX_WAIT_MS)
                except KafkaError as error:
                    self.trace.event(f"{name} poll failed ({type(error).__name__})")
                    await asyncio.sleep(0.1)
                    continue
                for topic_partition, messages in batches.items():
                    for message in messages:
                        checker.read(
                            reader,
                            session * 1000 + checker.power_losses,
                            read_committed,
                            topic_partition.partition,
                            message.offset,
                            message.value.decode(),
                        )
        finally:
            await _stop_quietly(consumer)

    async def _kip848_consumer(self, index: int, read_committed: bool, incarnation: int) -> None:
        """A consumer in a KIP-848 group: the member heartbeats and sets the assignment, a
        group-less aiokafka consumer fetches, offsets are committed every second with the
        member's epoch."""
        name = f"consumer-{index}"
        reader = f"{name}.{incarnation}"
        checker = self.checker
        session = 0

        def on_assigned(epoch: int, partitions: frozenset[int]) -> None:
            checker.assigned(reader, epoch, partitions)

        consumer = await self._start(
            name,
            lambda: AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=name,
                isolation_level="read_committed" if read_committed else "read_uncommitted",
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                fetch_min_bytes=64 * 1024,
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                request_timeout_ms=REQUEST_TIMEOUT_MS,
                retry_backoff_ms=RETRY_BACKOFF_MS,
                metadata_max_age_ms=METADATA_MAX_AGE_MS,
            ),
        )
        if consumer is None:
            return
        member = ConsumerGroupMember(consumer, GROUP, TOPIC, on_assigned)
        heartbeats = asyncio.get_running_loop().create_task(member.run(lambda: self.consuming))
        next_commit = asyncio.get_running_loop().time() + 1.0
        try:
            while self.consuming and not heartbeats.done():
                if await member.reconcile():
                    session += 1
                if not member.owned:
                    await asyncio.sleep(0.1)
                    continue
                try:
                    batches = await consumer.getmany(timeout_ms=FETCH_MAX_WAIT_MS)
                except (KafkaError, AssertionError) as error:
                    self.trace.event(f"{name} poll failed ({type(error).__name__})")
                    await asyncio.sleep(0.1)
                    continue
                for topic_partition, messages in batches.items():
                    if topic_partition.partition not in member.owned:
                        continue
                    for message in messages:
                        checker.read(
                            reader,
                            session * 1000 + checker.power_losses,
                            read_committed,
                            topic_partition.partition,
                            message.offset,
                            message.value.decode(),
                        )
                if asyncio.get_running_loop().time() >= next_commit:
                    next_commit = asyncio.get_running_loop().time() + 1.0
                    with contextlib.suppress(KafkaError, OSError):
                        await member.commit()
        finally:
            with contextlib.suppress(KafkaError, OSError):
                await asyncio.wait_for(member.commit(), CLOSE_TIMEOUT_S)
            heartbeats.cancel()
            await asyncio.gather(heartbeats, return_exceptions=True)
            if member.joined:
                await member.leave()
            await _stop_quietly(consumer)

    async def _txn_offsets_observer(self) -> None:
        name = "observer"
        consumer = await self._start(
            name,
            lambda: AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=name,
                group_id=TXN_GROUP,
                enable_auto_commit=False,
                request_timeout_ms=REQUEST_TIMEOUT_MS,
                retry_backoff_ms=RETRY_BACKOFF_MS,
                metadata_max_age_ms=METADATA_MAX_AGE_MS,
            ),
        )
        if consumer is None:
            return
        try:
            while self.consuming:
                await asyncio.sleep(OBSERVER_INTERVAL_S)
                try:
                    committed = await consumer.committed(TopicPartition(TOPIC, 0))
                except KafkaError:
                    continue
                self.checker.txn_offsets(-1 if committed is None else committed)
        finally:
            await _stop_quietly(consumer)


async def _stop_quietly(client: Any, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.stop(), timeout_s)
