"""The transaction coordinator's runtime: the asyncio edge around TransactionCoordinator.

It owns `__transaction_state` (compacted, `transaction.state.log.num.partitions` partitions,
50 by default, created on first use; a topic that already exists keeps its partition count, as
Kafka's does). A transactional id belongs to partition `abs(hashCode(id)) % partitions`
(Java's String.hashCode, Kafka's TransactionStateManager.partitionFor), and each partition has
its own TransactionCoordinator with its own coordinator epoch. Alone, the partitions holding
records are replayed and their coordinators started (each a new coordinator epoch) when the
broker starts, an empty one on its first use; every operation runs as the coordinator's life
cycle demands: append the records an operation returns as
one batch, wait for the fdatasync (`odradek.acks.all.fsync`: the log is written with acks=all,
as in Kafka), then `write_succeeded` / `write_failed`, and only then answer. Markers (COMMIT /
ABORT control batches) are written in-process to every partition of the transaction
(`PartitionLog.append_control`; on `__consumer_offsets` the group coordinator publishes or drops
the staged offsets), fetchers are woken, and `markers_written` records the completion.

On a cluster (`process.roles` set) `__transaction_state` is a replicated topic the controller
places, and the leader of a transactional id's partition is its transaction coordinator
(Kafka's TransactionStateManager.loadTransactionsForTxnTopicPartition /
removeTransactionsForTxnTopicPartition): `on_election` replays that partition into a fresh
coordinator and starts it with the partition's leader epoch as coordinator epoch (its first
write waits for the high watermark: COORDINATOR_LOAD_IN_PROGRESS meanwhile); `on_resignation`
drops it (NOT_COORDINATOR); every partition loads and unloads on its own. Every
`__transaction_state` append is the leader's and waits until
the high watermark passes it (acks=all). Producer ids come only from the controller's
AllocateProducerIds blocks (`ControllerProducerIdManager`), on every broker: an idempotent
producer's InitProducerId is answered by any broker. Markers go to partitions this broker leads
in-process and to the others' leaders with WriteTxnMarkers (Kafka's
TransactionMarkerChannelManager), retried until they land.

Timers: transaction timeouts (`poll` of every coordinator at its `next_deadline`, at least every
`transaction.abort.timed.out.transaction.cleanup.interval.ms`) and producer-id expiration in
every partition (`producer.id.expiration.ms`, checked every
`producer.id.expiration.check.interval.ms`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from kio.schema.errors import ErrorCode

from odradek.broker.clock import now_ms
from odradek.broker.config import BrokerConfig
from odradek.broker.group_runtime import OFFSETS_TOPIC, GroupRuntime
from odradek.broker.kafka_channel import ChannelError, KafkaChannel
from odradek.broker.purgatory import DataArrived, GroupCommit
from odradek.broker.shutdown import cancel_and_wait
from odradek.coordinator.txn import (
    TRANSACTION_VERSION_2,
    AddPartitionsToTxnResult,
    ControllerProducerIdManager,
    DescribedTransaction,
    EndTxnResult,
    InitProducerIdResult,
    ListTransactionsResult,
    ProducerIdManager,
    ProducerIdsUnavailableError,
    TopicPartition,
    TransactionCoordinator,
    TransactionRecord,
    TransactionState,
    TxnMarkers,
    merge_listed,
    transaction_partition_for,
)
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import make, nested, request_module
from odradek.protocol.record_batch import InvalidRecords, Record, decode_batches, encode_batch
from odradek.protocol.record_batch import validate_batches as validate
from odradek.storage.errors import (
    InvalidProducerEpoch,
    StorageError,
    TransactionCoordinatorFenced,
)
from odradek.storage.log import PartitionLog
from odradek.storage.log_manager import LogManager

if TYPE_CHECKING:
    from odradek.broker.replica_manager import HostedPartition, ReplicaManager

_T = TypeVar("_T")
_MarkingResult = TypeVar("_MarkingResult", InitProducerIdResult, EndTxnResult)

logger = logging.getLogger(__name__)

TRANSACTION_STATE_TOPIC = "__transaction_state"
_READ_CHUNK_BYTES = 1 << 20
_RETRY_S = 0.5
_WRITE_TXN_MARKERS_VERSION = 1
_ADD_PARTITIONS_TO_TXN_VERSION = 5


class NotLeaderError(StorageError):
    """On a cluster: this broker does not lead the partition (NOT_LEADER_OR_FOLLOWER)."""


class TxnRuntime:
    def __init__(
        self,
        config: BrokerConfig,
        logs: LogManager,
        data_arrived: DataArrived,
        group_commit: Callable[[str, int], GroupCommit | None],
        groups: GroupRuntime,
    ) -> None:
        self.config = config
        self._groups = groups
        self.clustered = config.kraft is not None
        # A cluster member's producer ids come only from the controller's blocks; the
        # allocator outlives the coordinators loaded and unloaded with leadership.
        self.producer_ids: ControllerProducerIdManager | None = (
            ControllerProducerIdManager(config.node_id) if self.clustered else None
        )
        # Alone: one allocator for every partition's coordinator (a block record goes to the
        # partition whose write hands out the block's first id; loading replays them all).
        transaction_config = config.transaction_config()
        self._shared_producer_ids: ProducerIdManager = self.producer_ids or ProducerIdManager(
            transaction_config.producer_id_block_size, broker_id=transaction_config.broker_id
        )
        #: Called when the producer-id allocator wants the controller's next block.
        self.on_producer_ids_wanted: Callable[[], None] | None = None
        # One coordinator per `__transaction_state` partition this broker coordinates (alone:
        # every partition started so far; on a cluster: those it leads, loaded or loading).
        self._coordinators: dict[int, TransactionCoordinator] = {}
        self._serving: set[int] = set()
        # Alone: the partition count of the topic (None until it is known to exist).
        self._partition_count: int | None = None
        # A cluster member's replica manager (set when it is built); None for a single broker.
        self.replicas: ReplicaManager | None = None
        self._loading: dict[int, asyncio.Task[None]] = {}
        # Marker writes and detached coordinator writes, by `__transaction_state` partition.
        self._partition_tasks: dict[int, set[asyncio.Task[Any]]] = {}
        self._marker_channels: dict[int, KafkaChannel] = {}
        self._verify_channels: dict[int, KafkaChannel] = {}
        # KIP-890 verification guards by (topic, partition, producer id): a marker written
        # there removes the guard, voiding a verification answer still in flight.
        self._verification_guards: dict[tuple[str, int, int], object] = {}
        self._logs = logs
        self._data_arrived = data_arrived
        self._group_commit = group_commit
        self._groups = groups
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: list[asyncio.Task[None]] = []
        properties = config.properties
        self._abort_interval_ms = int(
            properties["transaction.abort.timed.out.transaction.cleanup.interval.ms"]
        )
        self._producer_expiration_ms = int(properties["producer.id.expiration.ms"])
        self._producer_check_ms = int(properties["producer.id.expiration.check.interval.ms"])
        self._append_timeout_ms = int(properties.get("request.timeout.ms", 30_000))

    def _new_coordinator(self) -> TransactionCoordinator:
        return TransactionCoordinator(
            self._groups.coordinator.partition_for,
            self.config.transaction_config(),
            producer_ids=self._shared_producer_ids,
        )

    # -- partitions --------------------------------------------------------------------------

    def partition_count(self) -> int:
        """The number of `__transaction_state` partitions: the topic's own count where it
        exists (alone: on disk; on a cluster: in the metadata image), else
        `transaction.state.log.num.partitions` (the count it will be created with)."""
        if self.replicas is not None:
            described = self.replicas.member.image.topic(TRANSACTION_STATE_TOPIC)
            if described is not None and described.partitions:
                return len(described.partitions)
        elif self._partition_count is not None:
            return self._partition_count
        else:
            topic = self._logs.topics().get(TRANSACTION_STATE_TOPIC)
            if topic is not None:
                self._partition_count = topic.partitions
                return topic.partitions
        return self.configured_partitions()

    def configured_partitions(self) -> int:
        """`transaction.state.log.num.partitions` (Kafka's default 50), at least 1."""
        return max(1, int(self.config.properties.get("transaction.state.log.num.partitions", 50)))

    def partition_for(self, transactional_id: str) -> int:
        """The `__transaction_state` partition holding `transactional_id`."""
        return transaction_partition_for(transactional_id, self.partition_count())

    def _coordinator(self, transactional_id: str) -> tuple[int, TransactionCoordinator] | ErrorCode:
        """The serving coordinator of `transactional_id` and its partition, or the error to
        answer (`coordinator_error`)."""
        partition = self.partition_for(transactional_id)
        error = self._partition_error(partition)
        if error is not None:
            return error
        return partition, self._coordinators[partition]

    def apply_config(self, config: BrokerConfig) -> None:
        """A dynamic broker config change: `producer.id.expiration.ms` is dynamic in Kafka."""
        self.config = config
        self._producer_expiration_ms = int(config.properties["producer.id.expiration.ms"])

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self, now: int) -> int:
        """Alone: replay every `__transaction_state` partition that holds records and start
        its coordinator (a prepared transaction's markers are written now, not on the id's
        next use); an empty partition starts on first use. Returns the number of records
        read. On a cluster nothing: a partition loads when this broker becomes its leader."""
        if self.clustered or self._logs.topics().get(TRANSACTION_STATE_TOPIC) is None:
            return 0
        count = 0
        for partition in range(self.partition_count()):
            log = self._state_log(partition)
            if log is None or log.log_end_offset <= log.log_start_offset:
                continue
            log.high_watermark = log.log_end_offset
            coordinator = self._new_coordinator()
            self._coordinators[partition] = coordinator
            count += self._replay(coordinator, log, log.log_end_offset)
            self._start(partition, now)
        if count:
            logger.info("loaded %d record(s) from %s", count, TRANSACTION_STATE_TOPIC)
        return count

    def _replay(self, coordinator: TransactionCoordinator, log: PartitionLog, end: int) -> int:
        count = 0
        offset = log.log_start_offset
        while offset < end:
            read = log.read(offset, _READ_CHUNK_BYTES, end, True)
            if not read.records:
                break
            for header, records in decode_batches(read.records):
                if not header.is_control:
                    for record in records:
                        if record.offset >= offset and record.key is not None:
                            coordinator.replay(TransactionRecord(record.key, record.value))
                            count += 1
                offset = max(offset, header.next_offset)
        return count

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._timers = [
            loop.create_task(self._timeout_loop()),
            loop.create_task(self._producer_expiration_loop()),
        ]

    async def stop(self) -> None:
        """Stop the timers, marker writes and loading, each bounded (shutdown.py)."""
        await cancel_and_wait(
            [*self._timers, *self._tasks, *self._loading.values()],
            "transaction timers, markers and loading",
        )
        self._timers = []
        self._tasks.clear()
        self._partition_tasks.clear()
        self._loading.clear()
        for channel in [*self._marker_channels.values(), *self._verify_channels.values()]:
            await channel.close()

    # -- a cluster: coordinating while leading __transaction_state ----------------------------

    def coordinator_error(self, transactional_id: str) -> ErrorCode | None:
        """None when this broker coordinates `transactional_id` (its partition's coordinator
        serves); else what to answer: alone COORDINATOR_NOT_AVAILABLE (the topic cannot be
        created), on a cluster COORDINATOR_LOAD_IN_PROGRESS while the partition loads and
        NOT_COORDINATOR when another broker leads it."""
        return self._partition_error(self.partition_for(transactional_id))

    def _partition_error(self, partition: int) -> ErrorCode | None:
        if self.ensure_started(partition):
            return None
        if not self.clustered:
            return ErrorCode.coordinator_not_available
        if partition in self._loading:
            return ErrorCode.coordinator_load_in_progress
        return ErrorCode.not_coordinator

    def serving_partitions(self) -> list[int]:
        """The `__transaction_state` partitions whose coordinator serves here, ascending."""
        return sorted(self._serving)

    def loading_partitions(self) -> list[int]:
        """The `__transaction_state` partitions loading here (cluster), ascending."""
        return sorted(self._loading)

    def on_election(self, partition: int, leader_epoch: int) -> None:
        """This broker leads `__transaction_state`-`partition` in `leader_epoch`: load its
        transactions into a fresh coordinator whose epoch is `leader_epoch`."""
        self.on_resignation(partition)
        self._loading[partition] = asyncio.get_running_loop().create_task(
            self._load_as_leader(partition, leader_epoch)
        )

    def on_resignation(self, partition: int) -> None:
        """This broker no longer leads `__transaction_state`-`partition`: drop its coordinator
        (its pending writes fail with NOT_COORDINATOR when the replica manager fails them)."""
        loading = self._loading.pop(partition, None)
        if loading is not None:
            loading.cancel()
        if partition in self._serving:
            logger.info(
                "transaction coordinator of %s-%d unloaded", TRANSACTION_STATE_TOPIC, partition
            )
        for task in list(self._partition_tasks.pop(partition, ())):
            task.cancel()
        self._serving.discard(partition)
        self._coordinators.pop(partition, None)

    async def _load_as_leader(self, partition: int, leader_epoch: int) -> None:
        try:
            log = self._state_log(partition)
            if log is None:
                logger.warning(
                    "cannot load %s-%d: no local log", TRANSACTION_STATE_TOPIC, partition
                )
                return
            coordinator = self._new_coordinator()
            self._coordinators[partition] = coordinator
            count = self._replay(coordinator, log, log.log_end_offset)
            while True:
                start, records = coordinator.start(now_ms(), coordinator_epoch=leader_epoch)
                written = await self._write(partition, coordinator, records, start.write_id)
                if written == ErrorCode.none:
                    break
                if coordinator is not self._coordinators.get(partition):
                    return
                await asyncio.sleep(_RETRY_S)
            self._serving.add(partition)
            logger.info(
                "transaction coordinator of %s-%d loaded %d record(s), coordinator epoch %d",
                TRANSACTION_STATE_TOPIC,
                partition,
                count,
                start.coordinator_epoch,
            )
            for markers in start.markers:
                self._spawn(partition, self.complete(partition, coordinator, markers))
        finally:
            if self._loading.get(partition) is asyncio.current_task():
                del self._loading[partition]

    def _wants_producer_ids(self) -> None:
        if (
            self.producer_ids is not None
            and self.producer_ids.wants_block()
            and self.on_producer_ids_wanted is not None
        ):
            self.on_producer_ids_wanted()

    def ensure_started(self, partition: int) -> bool:
        """Alone: create `__transaction_state` (`transaction.state.log.num.partitions`
        partitions) and start `partition`'s coordinator on first use. On a cluster: whether
        this broker leads `partition` and has loaded it (the controller creates the topic)."""
        if partition in self._serving:
            return True
        if self.clustered:
            return False
        if self._logs.topics().get(TRANSACTION_STATE_TOPIC) is None:
            partitions = self.configured_partitions()
            try:
                self._logs.create_topic(
                    TRANSACTION_STATE_TOPIC,
                    partitions,
                    {
                        "cleanup.policy": "compact",
                        "segment.bytes": self.config.properties[
                            "transaction.state.log.segment.bytes"
                        ],
                    },
                )
            except (StorageError, OSError) as error:
                logger.error("cannot create %s: %s", TRANSACTION_STATE_TOPIC, error)
                return False
            self._partition_count = partitions
            logger.info("created %s with %d partition(s)", TRANSACTION_STATE_TOPIC, partitions)
        if partition >= self.partition_count():
            return False
        self._coordinators.setdefault(partition, self._new_coordinator())
        return self._start(partition, now_ms())

    def _start(self, partition: int, now: int) -> bool:
        coordinator = self._coordinators[partition]
        start, records = coordinator.start(now)
        assert start.write_id is not None
        try:
            log = self._append(partition, records, now)
            log.flush()
        except (OSError, StorageError, InvalidRecords) as error:
            logger.error("cannot start the transaction coordinator: %s", error)
            coordinator.write_failed(start.write_id, ErrorCode.kafka_storage_error)
            return False
        coordinator.write_succeeded(start.write_id)
        self._serving.add(partition)
        logger.debug(
            "transaction coordinator of %s-%d, epoch %d",
            TRANSACTION_STATE_TOPIC,
            partition,
            start.coordinator_epoch,
        )
        for markers in start.markers:
            self._spawn(partition, self.complete(partition, coordinator, markers))
        return True

    def _state_log(self, partition: int) -> PartitionLog | None:
        return self._logs.log(TRANSACTION_STATE_TOPIC, partition)

    def _spawn(self, partition: int, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coroutine` as `partition`'s coordinator's own work (cancelled when it unloads)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        tasks = self._partition_tasks.setdefault(partition, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    # -- writing __transaction_state ---------------------------------------------------------

    def _append(self, partition: int, records: list[TransactionRecord], now: int) -> PartitionLog:
        log = self._state_log(partition)
        if log is None:
            raise StorageError(f"{TRANSACTION_STATE_TOPIC} does not exist")
        batch = encode_batch(
            [Record(key=record.key, value=record.value) for record in records], base_timestamp=now
        )
        if self.clustered:
            hosted = self._led(TRANSACTION_STATE_TOPIC, partition)
            if hosted is None:
                raise NotLeaderError(f"not the leader of {TRANSACTION_STATE_TOPIC}-{partition}")
            log.append(batch, validate(batch, log.config.max_message_bytes), now)
            assert self.replicas is not None
            self.replicas.after_leader_append(hosted)
            return log
        log.append(batch, validate(batch, log.config.max_message_bytes), now, 0)
        log.high_watermark = log.log_end_offset
        return log

    def _led(self, topic: str, index: int) -> HostedPartition | None:
        """The hosted partition if this broker leads it (cluster only)."""
        hosted = self.replicas.partition(topic, index) if self.replicas is not None else None
        return hosted if hosted is not None and hosted.state.is_leader else None

    async def _replicated(self, topic: str, index: int, end: int) -> ErrorCode:
        """acks=all on a cluster: until the high watermark of `topic`-`index` passes `end`."""
        hosted = self.replicas.partition(topic, index) if self.replicas is not None else None
        if hosted is None or self.replicas is None:
            return ErrorCode.not_leader_or_follower
        return await self.replicas.wait_for_acks_all(hosted, end - 1, self._append_timeout_ms)

    async def _detached(self, partition: int, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run `coroutine` as the coordinator's own task and wait for it: a client that
        disconnects cancels its request, never the coordinator's half-done work (a write
        left unsettled blocks the transactional id; markers half written leave records open)."""
        task: asyncio.Task[_T] = self._spawn(partition, coroutine)
        return await asyncio.shield(task)

    async def _write(
        self,
        partition: int,
        coordinator: TransactionCoordinator,
        records: list[TransactionRecord],
        write_id: int | None,
    ) -> ErrorCode:
        """Append `records` (one batch) to `partition`, wait until durable (on a cluster:
        replicated), and settle the write with `coordinator`, which made it."""
        if not records or write_id is None:
            return ErrorCode.none
        return await self._detached(
            partition, self._write_and_settle(partition, coordinator, records, write_id)
        )

    async def _write_and_settle(
        self,
        partition: int,
        coordinator: TransactionCoordinator,
        records: list[TransactionRecord],
        write_id: int | None,
    ) -> ErrorCode:
        if not records or write_id is None:
            return ErrorCode.none
        try:
            log = self._append(partition, records, now_ms())
        except InvalidRecords as error:
            # A record too large for the topic (a 32767-byte transactional id under a small
            # message.max.bytes): Kafka answers UNKNOWN_SERVER_ERROR, not a retriable error.
            logger.warning("cannot append to %s: %s", TRANSACTION_STATE_TOPIC, error)
            return coordinator.write_failed(write_id, ErrorCode(error.error_code))
        except NotLeaderError:
            return coordinator.write_failed(write_id, ErrorCode.not_leader_or_follower)
        except (OSError, StorageError) as error:
            logger.error("cannot append to %s: %s", TRANSACTION_STATE_TOPIC, error)
            return coordinator.write_failed(write_id, ErrorCode.kafka_storage_error)
        if self.clustered:
            error_code = await self._replicated(
                TRANSACTION_STATE_TOPIC, partition, log.log_end_offset
            )
            if coordinator is not self._coordinators.get(partition):
                # Unloaded meanwhile: the write's fate belongs to the next coordinator's load.
                return ErrorCode.not_coordinator
            if error_code is not ErrorCode.none:
                return coordinator.write_failed(write_id, error_code)
            coordinator.write_succeeded(write_id)
            return ErrorCode.none
        if self.config.acks_all_fsync:
            commit = self._group_commit(TRANSACTION_STATE_TOPIC, partition)
            if commit is not None:
                try:
                    await commit.wait_flushed(log.log_end_offset)
                except OSError:
                    return coordinator.write_failed(write_id, ErrorCode.kafka_storage_error)
        coordinator.write_succeeded(write_id)
        return ErrorCode.none

    # -- operations --------------------------------------------------------------------------

    async def init_producer_id(
        self,
        transactional_id: str | None,
        transaction_timeout_ms: int,
        expected_producer_id: int,
        expected_producer_epoch: int,
    ) -> InitProducerIdResult:
        if transactional_id is None and self.producer_ids is not None:
            # A cluster member answers an idempotent producer itself, from the controller's
            # block: nothing to store (Kafka's handleInitProducerId without a transactional id).
            return self._idempotent_producer_id(self.producer_ids)
        # Alone, an idempotent producer's id (and its block record) goes through partition 0.
        found = self._coordinator(transactional_id or "")
        if isinstance(found, ErrorCode):
            return InitProducerIdResult(found)
        partition, coordinator = found
        result, records = coordinator.init_producer_id(
            transactional_id,
            transaction_timeout_ms,
            now_ms(),
            expected_producer_id,
            expected_producer_epoch,
        )
        self._wants_producer_ids()
        return await self._detached(
            partition, self._settle_and_complete(partition, coordinator, result, records)
        )

    def _idempotent_producer_id(
        self, producer_ids: ControllerProducerIdManager
    ) -> InitProducerIdResult:
        try:
            producer_id, _record = producer_ids.allocate()
        except ProducerIdsUnavailableError:
            result = InitProducerIdResult(ErrorCode.coordinator_load_in_progress)
        else:
            result = InitProducerIdResult(ErrorCode.none, producer_id, 0)
        self._wants_producer_ids()
        return result

    async def add_partitions(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: Iterable[TopicPartition],
        verify_only: bool = False,
        client_transaction_version: int | None = None,
    ) -> AddPartitionsToTxnResult:
        wanted = list(partitions)
        found = self._coordinator(transactional_id)
        if isinstance(found, ErrorCode):
            return _every(wanted, found)
        partition, coordinator = found
        result, records = coordinator.add_partitions_to_txn(
            transactional_id,
            producer_id,
            producer_epoch,
            wanted,
            now_ms(),
            verify_only,
            client_transaction_version,
        )
        error = await self._write(partition, coordinator, records, result.write_id)
        if error != ErrorCode.none:
            return _every(wanted, error)
        return result

    async def verify_partition(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        topic: str,
        index: int,
        add: bool = False,
    ) -> ErrorCode:
        """KIP-890 for Produce, just before the append of a transactional batch that would
        start the producer's transaction on `topic`-`index`: is the partition in the
        producer's ongoing transaction? With `add` (part 2, Produce v12) the partition is
        first added to it, as AddPartitionsToTxn would.

        Where this broker coordinates the transactional id (alone, always) the check is
        synchronous, so nothing can change between this answer and the append. On a cluster
        whose coordinator is another broker, the partition's leader asks it with
        AddPartitionsToTxn v5 (`verify_only` unless `add`; Kafka's AddPartitionsToTxnManager)
        under a verification guard: a marker written for the producer on this partition while
        the question is in flight voids the answer (INVALID_TXN_STATE, Kafka's
        VerificationGuard), so a transaction that ended meanwhile is never reopened by a late
        batch. Off with `transaction.partition.verification.enable=false` (every batch NONE)."""
        if self.config.properties.get("transaction.partition.verification.enable") == "false":
            return ErrorCode.none
        state_partition = self.partition_for(transactional_id)
        if self.clustered and self._led(TRANSACTION_STATE_TOPIC, state_partition) is None:
            return await self._verify_remotely(
                transactional_id, producer_id, producer_epoch, topic, index, add
            )
        if add:
            error = await self.add_partition_implicitly(
                transactional_id, producer_id, producer_epoch, topic, index
            )
            if error != ErrorCode.none:
                return error
        found = self._coordinator(transactional_id)
        if isinstance(found, ErrorCode):
            return found
        _state_partition, coordinator = found
        partition = TopicPartition(topic, index)
        result, _records = coordinator.add_partitions_to_txn(
            transactional_id, producer_id, producer_epoch, [partition], now_ms(), verify_only=True
        )
        return result.partition_errors.get(partition, result.error)

    async def _verify_remotely(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        topic: str,
        index: int,
        add: bool,
    ) -> ErrorCode:
        hosted = self._led(topic, index)
        if hosted is None:
            return ErrorCode.not_leader_or_follower
        leader_epoch = hosted.state.leader_epoch
        key = (topic, index, producer_id)
        guard = self._verification_guards.setdefault(key, object())
        error = await self._ask_coordinator(
            transactional_id, producer_id, producer_epoch, topic, index, verify_only=not add
        )
        if error != ErrorCode.none:
            return error
        now_led = self._led(topic, index)
        if now_led is not hosted or hosted.state.leader_epoch != leader_epoch:
            return ErrorCode.not_leader_or_follower
        if hosted.log.has_ongoing_transaction(producer_id, producer_epoch):
            # Another batch of the same transaction started it meanwhile (Kafka checks the
            # guard only for a batch that would start the transaction).
            return ErrorCode.none
        if self._verification_guards.get(key) is not guard:
            return ErrorCode.invalid_txn_state
        del self._verification_guards[key]
        return ErrorCode.none

    async def _ask_coordinator(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        topic: str,
        index: int,
        verify_only: bool,
    ) -> ErrorCode:
        """AddPartitionsToTxn v5 for one partition to the transaction coordinator (the leader
        of the id's `__transaction_state` partition); its error for the partition. An
        unreachable or unknown coordinator is NOT_COORDINATOR, which a producer retries."""
        coordinator = self._coordinator_node(transactional_id)
        if coordinator is None or coordinator == self.config.node_id:
            return ErrorCode.not_coordinator
        channel = await self._channel_to(coordinator, self._verify_channels, "txn-verify")
        if channel is None:
            return ErrorCode.not_coordinator
        module = request_module(ApiKey.ADD_PARTITIONS_TO_TXN, _ADD_PARTITIONS_TO_TXN_VERSION)
        try:
            response = await channel.request(
                ApiKey.ADD_PARTITIONS_TO_TXN,
                _ADD_PARTITIONS_TO_TXN_VERSION,
                timeout_s=self._append_timeout_ms / 1000,
                transactions=(
                    make(
                        nested(module, "AddPartitionsToTxnTransaction"),
                        transactional_id=transactional_id,
                        producer_id=producer_id,
                        producer_epoch=producer_epoch,
                        verify_only=verify_only,
                        topics=(
                            make(
                                nested(module, "AddPartitionsToTxnTopic"),
                                name=topic,
                                partitions=(index,),
                            ),
                        ),
                    ),
                ),
            )
        except ChannelError as error:
            logger.info("verifying %s-%d with broker %d: %s", topic, index, coordinator, error)
            return ErrorCode.not_coordinator
        if response.error_code != ErrorCode.none:
            return ErrorCode(response.error_code)
        for transaction in response.results_by_transaction:
            for topic_result in transaction.topic_results:
                for partition in topic_result.results_by_partition:
                    return ErrorCode(partition.partition_error_code)
        return ErrorCode.unknown_server_error

    def _coordinator_node(self, transactional_id: str) -> int | None:
        """The broker leading `transactional_id`'s `__transaction_state` partition in this
        broker's metadata image."""
        if self.replicas is None:
            return None
        image = self.replicas.member.image
        described = image.topic(TRANSACTION_STATE_TOPIC)
        partition = self.partition_for(transactional_id)
        if described is None or partition not in described.partitions:
            return None
        leader = described.partitions[partition].leader
        return leader if leader >= 0 else None

    async def add_offsets(
        self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> ErrorCode:
        found = self._coordinator(transactional_id)
        if isinstance(found, ErrorCode):
            return found
        partition, coordinator = found
        result, records = coordinator.add_offsets_to_txn(
            transactional_id, producer_id, producer_epoch, group_id, now_ms()
        )
        error = await self._write(partition, coordinator, records, result.write_id)
        return error if error != ErrorCode.none else result.error

    async def add_partition_implicitly(
        self, transactional_id: str, producer_id: int, producer_epoch: int, topic: str, index: int
    ) -> ErrorCode:
        """KIP-890 part 2 (Produce v12, TxnOffsetCommit v5): the partition joins the
        producer's transaction (starting one if none is open) as AddPartitionsToTxn would."""
        partition = TopicPartition(topic, index)
        result = await self.add_partitions(
            transactional_id,
            producer_id,
            producer_epoch,
            [partition],
            client_transaction_version=TRANSACTION_VERSION_2,
        )
        return result.partition_errors.get(partition, result.error)

    async def end_txn(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        transaction_version: int = 1,
    ) -> EndTxnResult:
        found = self._coordinator(transactional_id)
        if isinstance(found, ErrorCode):
            return EndTxnResult(found)
        partition, coordinator = found
        result, records = coordinator.end_txn(
            transactional_id, producer_id, producer_epoch, commit, now_ms(), transaction_version
        )
        return await self._detached(
            partition, self._settle_and_complete(partition, coordinator, result, records)
        )

    async def _settle_and_complete(
        self,
        partition: int,
        coordinator: TransactionCoordinator,
        result: _MarkingResult,
        records: list[TransactionRecord],
    ) -> _MarkingResult:
        """Write `records`, then the markers `result` carries, as one piece of the
        coordinator's own work (a client that disconnects cancels neither half).

        InitProducerId: the fenced producer's transaction is aborted before the answer, so
        the client's retry (it got CONCURRENT_TRANSACTIONS) finds it complete. EndTxn: Kafka
        answers once PrepareCommit/PrepareAbort is durable; the markers are in-process here,
        so answering after them costs little and makes the outcome visible to readers by the
        time the producer's commit returns."""
        error = await self._write_and_settle(partition, coordinator, records, result.write_id)
        if error != ErrorCode.none:
            return type(result)(error)
        if result.markers is not None:
            await self.complete(partition, coordinator, result.markers)
        return result

    # -- Describe / List ---------------------------------------------------------------------

    def describe_transactions(self, transactional_ids: Iterable[str]) -> list[DescribedTransaction]:
        """DescribeTransactions: each id from its partition's coordinator; NOT_COORDINATOR /
        COORDINATOR_LOAD_IN_PROGRESS (cluster) or COORDINATOR_NOT_AVAILABLE (alone) for an id
        this broker does not coordinate (now)."""
        described = []
        for transactional_id in transactional_ids:
            found = self._coordinator(transactional_id)
            if isinstance(found, ErrorCode):
                described.append(DescribedTransaction(transactional_id, found))
            else:
                described.extend(found[1].describe_transactions([transactional_id]))
        return described

    def list_transactions(
        self,
        state_filters: Iterable[str] = (),
        producer_id_filters: Iterable[int] = (),
        duration_filter_ms: int = -1,
        now: int = 0,
    ) -> ListTransactionsResult:
        """ListTransactions over every `__transaction_state` partition coordinated here
        (Kafka's TransactionStateManager.listTransactionStates): COORDINATOR_LOAD_IN_PROGRESS
        while one of them loads, as Kafka answers. A partition no coordinator has started
        (alone: an empty one) holds no transaction."""
        if self._loading:
            return ListTransactionsResult(ErrorCode.coordinator_load_in_progress)
        state_filters = tuple(state_filters)
        producer_id_filters = tuple(producer_id_filters)
        coordinators = [self._coordinators[partition] for partition in sorted(self._serving)]
        if not coordinators:
            unknown = tuple(
                name
                for name in dict.fromkeys(state_filters)
                if TransactionState.from_kafka_name(name) is None
            )
            return ListTransactionsResult(ErrorCode.none, unknown)
        return merge_listed(
            coordinator.list_transactions(
                state_filters, producer_id_filters, duration_filter_ms, now
            )
            for coordinator in coordinators
        )

    # -- markers -----------------------------------------------------------------------------

    async def complete(
        self, partition: int, coordinator: TransactionCoordinator, markers: TxnMarkers
    ) -> None:
        """Write the markers to every partition, then record the transaction complete with
        `coordinator` (of `__transaction_state`-`partition`) unless it was unloaded."""
        waits: list[tuple[str, int, int]] = []
        if self.clustered:
            # Every partition at once (Kafka's marker channel sends one WriteTxnMarkers per
            # broker, all in flight together): a transaction's commit costs one replication
            # round trip, not one per partition.
            await asyncio.gather(
                *(
                    self._mark_on_cluster(markers, topic, index)
                    for topic, index in markers.partitions
                )
            )
        # Alone every marker is an in-process append: one after the other.
        for topic, index in () if self.clustered else markers.partitions:
            end: int | None = None
            while True:
                try:
                    end = self._write_marker(markers, topic, index, now_ms())
                except (InvalidProducerEpoch, TransactionCoordinatorFenced) as error:
                    # A marker the partition refuses (an older epoch): nothing to write there,
                    # as Kafka's marker channel treats it. (A deleted partition returns None.)
                    logger.warning("marker for %s-%d not written: %s", topic, index, error)
                except (OSError, StorageError) as error:
                    # A failed write (KAFKA_STORAGE_ERROR, retriable in Kafka): the marker must
                    # land, or the partition's records stay open until the producer's next
                    # transaction ends there and its marker settles them with the wrong outcome.
                    logger.error("marker for %s-%d failed, retrying: %s", topic, index, error)
                    await asyncio.sleep(_RETRY_S)
                    continue
                break
            if end is not None:
                waits.append((topic, index, end))
        if self.config.acks_all_fsync:
            for topic, index, end in waits:
                commit = self._group_commit(topic, index)
                if commit is not None:
                    with contextlib.suppress(OSError):
                        await commit.wait_flushed(end)
        while coordinator is self._coordinators.get(partition):
            result, records = coordinator.markers_written(markers, now_ms())
            if not records:
                return
            if await self._write(partition, coordinator, records, result.write_id) == (
                ErrorCode.none
            ):
                return
            await asyncio.sleep(_RETRY_S)

    async def _mark_on_cluster(self, markers: TxnMarkers, topic: str, index: int) -> None:
        """One partition's marker on a cluster, until it is replicated where the partition is
        led (in-process here, else WriteTxnMarkers to its leader) or can never be written."""
        while True:
            try:
                end = self._write_marker(markers, topic, index, now_ms())
            except NotLeaderError:
                # Another broker leads it: WriteTxnMarkers there (KIP-98's marker channel).
                if await self._send_marker(markers, topic, index):
                    return
                await asyncio.sleep(_RETRY_S)
                continue
            except (InvalidProducerEpoch, TransactionCoordinatorFenced) as error:
                logger.warning("marker for %s-%d not written: %s", topic, index, error)
                return
            except (OSError, StorageError) as error:
                # Retriable (KAFKA_STORAGE_ERROR): the marker must land.
                logger.error("marker for %s-%d failed, retrying: %s", topic, index, error)
                await asyncio.sleep(_RETRY_S)
                continue
            if end is not None and (
                await self._replicated(topic, index, end) is not ErrorCode.none
            ):
                # Not replicated (leadership moved, or too few replicas): write it again
                # where the partition is led now; a repeated marker is harmless.
                await asyncio.sleep(_RETRY_S)
                continue
            return

    def _write_marker(self, markers: TxnMarkers, topic: str, index: int, now: int) -> int | None:
        return self.write_marker(
            topic,
            index,
            markers.producer_id,
            markers.producer_epoch,
            markers.commit,
            markers.coordinator_epoch,
            now,
        )

    async def _send_marker(self, markers: TxnMarkers, topic: str, index: int) -> bool:
        """WriteTxnMarkers v1 for one partition to its leader (from the metadata image); True
        once it is written there (or cannot ever be: the partition is gone, the producer's or
        the coordinator's epoch is older), False to retry."""
        replicas = self.replicas
        if replicas is None:
            return True
        image = replicas.member.image
        topic_id = image.topics_by_name.get(topic)
        if topic_id is None or index not in image.topics_by_id[topic_id].partitions:
            logger.warning("marker for %s-%d: no such partition", topic, index)
            return True
        leader = image.topics_by_id[topic_id].partitions[index].leader
        if leader == self.config.node_id:
            return False
        channel = await self._channel_to(leader, self._marker_channels, "txn-markers")
        if channel is None:
            return False
        module = request_module(ApiKey.WRITE_TXN_MARKERS, _WRITE_TXN_MARKERS_VERSION)
        try:
            response = await channel.request(
                ApiKey.WRITE_TXN_MARKERS,
                _WRITE_TXN_MARKERS_VERSION,
                timeout_s=self._append_timeout_ms / 1000 + 5,
                markers=(
                    make(
                        nested(module, "WritableTxnMarker"),
                        producer_id=markers.producer_id,
                        producer_epoch=markers.producer_epoch,
                        transaction_result=markers.commit,
                        topics=(
                            make(
                                nested(module, "WritableTxnMarkerTopic"),
                                name=topic,
                                partition_indexes=(index,),
                            ),
                        ),
                        coordinator_epoch=markers.coordinator_epoch,
                    ),
                ),
            )
        except ChannelError as error:
            logger.info("marker for %s-%d to broker %d: %s", topic, index, leader, error)
            return False
        error_code = ErrorCode(response.markers[0].topics[0].partitions[0].error_code)
        if error_code is ErrorCode.none:
            return True
        if error_code in (
            ErrorCode.invalid_producer_epoch,
            ErrorCode.transaction_coordinator_fenced,
        ):
            logger.warning("marker for %s-%d refused: %s", topic, index, error_code.name)
            return True
        # UNKNOWN_TOPIC_OR_PARTITION is retried, as Kafka's TransactionMarkerRequestCompletion-
        # Handler retries it: a leader whose metadata lags (a restart) does not know the
        # partition yet, and a dropped marker leaves the transaction open there for good. A
        # partition that is really gone leaves this image first (the check above).
        logger.info("marker for %s-%d: %s, retrying", topic, index, error_code.name)
        return False

    async def _channel_to(
        self, node_id: int, channels: dict[int, KafkaChannel], purpose: str
    ) -> KafkaChannel | None:
        """The channel in `channels` to broker `node_id` at its current endpoint (from the
        metadata image); None while the broker is unknown, fenced or has no such listener."""
        replicas = self.replicas
        if replicas is None or node_id < 0:
            return None
        registration = replicas.member.image.brokers.get(node_id)
        if registration is None or registration.fenced:
            return None
        endpoint = next(
            (e for e in registration.listeners if e.name == replicas.member.listener_name), None
        )
        if endpoint is None:
            return None
        channel = channels.get(node_id)
        if channel is None or (channel.host, channel.port) != (endpoint.host, endpoint.port):
            if channel is not None:
                await channel.close()
            channel = KafkaChannel(
                endpoint.host, endpoint.port, f"odradek-{purpose}-{self.config.node_id}"
            )
            channels[node_id] = channel
        return channel

    def write_marker(
        self,
        topic: str,
        index: int,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        now: int,
    ) -> int | None:
        """Append one marker (WriteTxnMarkers' work); the end offset to wait on, or None when
        the partition does not exist. Raises StorageError / OSError from the log; on a
        cluster NotLeaderError when this broker does not lead the partition."""
        if self.clustered:
            return self._write_marker_as_leader(
                topic, index, producer_id, producer_epoch, commit, coordinator_epoch, now
            )
        if topic == OFFSETS_TOPIC:
            if self._logs.log(topic, index) is None:
                return None
            return self._groups.write_marker(
                index, producer_id, producer_epoch, commit, coordinator_epoch, now
            )
        log = self._logs.log(topic, index)
        if log is None:
            return None
        info = log.append_control(producer_id, producer_epoch, commit, coordinator_epoch, now)
        # One node: every append is immediately in the whole ISR.
        log.high_watermark = log.log_end_offset
        self._data_arrived.notify((topic, index))
        return info.last_offset + 1

    def _write_marker_as_leader(
        self,
        topic: str,
        index: int,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        now: int,
    ) -> int | None:
        if self._logs.log(topic, index) is None and (
            self.replicas is None or topic not in self.replicas.member.image.topics_by_name
        ):
            return None
        hosted = self._led(topic, index)
        if hosted is None:
            raise NotLeaderError(f"not the leader of {topic}-{index}")
        self._verification_guards.pop((topic, index, producer_id), None)
        if topic == OFFSETS_TOPIC:
            return self._groups.write_marker(
                index, producer_id, producer_epoch, commit, coordinator_epoch, now
            )
        info = hosted.log.append_control(
            producer_id, producer_epoch, commit, coordinator_epoch, now
        )
        assert self.replicas is not None
        self.replicas.after_leader_append(hosted)
        return info.last_offset + 1

    async def wait_replicated(self, topic: str, index: int, end: int) -> ErrorCode:
        """WriteTxnMarkers on a cluster: until the marker ending at `end` is replicated."""
        return await self._replicated(topic, index, end)

    # -- timers ------------------------------------------------------------------------------

    async def _timeout_loop(self) -> None:
        while True:
            now = now_ms()
            wait_ms = self._abort_interval_ms
            for partition in sorted(self._serving):
                coordinator = self._coordinators.get(partition)
                if coordinator is None:
                    continue
                deadline = coordinator.next_deadline()
                if deadline is not None and deadline <= now:
                    try:
                        await self._poll(partition, coordinator, now)
                    except Exception:
                        logger.exception("transaction timeout check failed")
                    deadline = coordinator.next_deadline()
                if deadline is not None:
                    wait_ms = min(wait_ms, deadline - now_ms())
            await asyncio.sleep(max(wait_ms, 5) / 1000)

    async def _poll(self, partition: int, coordinator: TransactionCoordinator, now: int) -> None:
        result, records = coordinator.poll(now)
        if await self._write(partition, coordinator, records, result.write_id) != ErrorCode.none:
            return
        for markers in result.aborts:
            logger.info(
                "aborting timed-out transaction %s (producer %d)",
                markers.transactional_id,
                markers.producer_id,
            )
            self._spawn(partition, self.complete(partition, coordinator, markers))
        for transactional_id in result.expired:
            logger.info("transactional id %s expired", transactional_id)

    async def _producer_expiration_loop(self) -> None:
        while True:
            await asyncio.sleep(self._producer_check_ms / 1000)
            now = now_ms()
            for log in self._logs.all_logs().values():
                try:
                    log.expire_producers(now, self._producer_expiration_ms)
                except (OSError, StorageError) as error:
                    logger.error("producer expiration failed: %s", error)


def _every(partitions: list[TopicPartition], error: ErrorCode) -> AddPartitionsToTxnResult:
    return AddPartitionsToTxnResult(error, dict.fromkeys(partitions, error))
