"""The group coordinator's runtime: the asyncio edge around the deterministic GroupCoordinator.

It owns the coordinator, parks a request whose answer comes later (a future per request
reference), appends the records an operation returns to `__consumer_offsets` through the normal
PartitionLog.append, and resolves the futures only after the append (and, with
`odradek.acks.all.fsync`, after the fdatasync: `__consumer_offsets` is written with acks=all,
as in Kafka). A timer task feeds the clock to `poll`. On start, `load` replays every partition
of `__consumer_offsets` to rebuild groups and offsets.

On a cluster (`process.roles` set) `__consumer_offsets` is a replicated topic the controller
places, and this broker coordinates only the groups of the partitions it leads (Kafka's
GroupCoordinator.onElection / onResignation): the replica manager calls `on_election` when it
becomes a partition's leader (the partition is replayed, and waits for its high watermark to
reach the loaded end: COORDINATOR_LOAD_IN_PROGRESS meanwhile) and `on_resignation` when it
stops (the partition's groups are forgotten: NOT_COORDINATOR). Appends go through the replica
manager as the leader's (the log's leader epoch) and their answers wait until the high
watermark passes them (acks=all, `offsets.commit.timeout.ms`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from kio.schema.errors import ErrorCode

from odradek.broker.clock import now_ms
from odradek.broker.config import BrokerConfig
from odradek.broker.purgatory import DataArrived, GroupCommit
from odradek.broker.shutdown import cancel_and_wait
from odradek.coordinator.group import (
    CoordinatorRecord,
    GroupCoordinator,
    ReadResponse,
    Result,
    TopicInfo,
)
from odradek.coordinator.group.results import Completion
from odradek.coordinator.txn import coordinator_error_for_append_error
from odradek.protocol.record_batch import (
    InvalidRecords,
    Record,
    decode_batches,
    encode_batch,
    validate_batches,
)
from odradek.storage.errors import (
    InvalidProducerEpoch,
    InvalidTxnState,
    RecordBatchTooLarge,
    StorageError,
    UnknownTopicOrPartition,
)
from odradek.storage.log import PartitionLog
from odradek.storage.log_manager import LogManager
from odradek.storage.producer_state import AppendOrigin

if TYPE_CHECKING:
    from odradek.broker.replica_manager import HostedPartition, ReplicaManager

logger = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC, "__transaction_state"})
_READ_CHUNK_BYTES = 1 << 20
# A control record's key: version int16, type int16 (ABORT 0, COMMIT 1).
_CONTROL_KEY = struct.Struct(">hh")
CONTROL_COMMIT = 1


class CoordinatorNotAvailableError(Exception):
    """`__consumer_offsets` cannot be created or written (`error_code`: what to answer)."""

    def __init__(
        self, message: object = "", error_code: ErrorCode = ErrorCode.coordinator_not_available
    ) -> None:
        super().__init__(message)
        self.error_code = error_code


class NotCoordinatorError(CoordinatorNotAvailableError):
    """On a cluster: this broker does not lead the group's `__consumer_offsets` partition
    (NOT_COORDINATOR) or is still loading it (COORDINATOR_LOAD_IN_PROGRESS)."""


Operation = Callable[[int, int], Result]
T = TypeVar("T")


@dataclass(slots=True)
class _Waiting:
    """Answers held until their write, and every write queued before it, is durable."""

    responses: list[tuple[int, Any]]
    completions: list[Completion]
    durable: bool
    error: ErrorCode | None = None


def append_error(error: Exception) -> ErrorCode:
    """The answer to a failed `__consumer_offsets` append, as Kafka 4's group coordinator maps
    it (CoordinatorOperationExceptionHelper.handleOperationException, used by OffsetCommit and
    TxnOffsetCommit alike): a missing partition -> COORDINATOR_NOT_AVAILABLE, a storage error ->
    NOT_COORDINATOR, records too large -> UNKNOWN_SERVER_ERROR (INVALID_COMMIT_OFFSET_SIZE was
    the answer of the coordinator Kafka 4 removed)."""
    if isinstance(error, InvalidRecords | RecordBatchTooLarge):
        return ErrorCode.unknown_server_error
    if isinstance(error, UnknownTopicOrPartition):
        return ErrorCode.coordinator_not_available
    return ErrorCode.not_coordinator


class GroupRuntime:
    def __init__(
        self,
        config: BrokerConfig,
        logs: LogManager,
        data_arrived: DataArrived,
        group_commit: Callable[[str, int], GroupCommit | None],
    ) -> None:
        self.config = config
        self.group_config = config.group_config()
        self.coordinator = GroupCoordinator(self.group_config)
        self._logs = logs
        self._data_arrived = data_arrived
        self._group_commit = group_commit
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._references = itertools.count(1)
        self._wakeup: asyncio.Event | None = None
        self._timer: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        # Answers waiting for durability, in append order (Kafka's deferred event queue).
        self._waiting: deque[_Waiting] = deque()
        self._draining = False
        # A cluster member's replica manager (set when it is built); None for a single broker.
        self.replicas: ReplicaManager | None = None
        self.clustered = config.kraft is not None
        # Cluster only: the partitions whose groups this broker coordinates, and those loading.
        self._owned: set[int] = set()
        self._loading: dict[int, asyncio.Task[None]] = {}
        self._commit_timeout_ms = int(config.properties.get("offsets.commit.timeout.ms", 5000))

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self, now: int) -> int:
        """Replay `__consumer_offsets` (if it exists); returns the number of records read.
        On a cluster nothing: partitions load when this broker becomes their leader."""
        if self.clustered:
            return 0
        count = 0
        topic = self._logs.topics().get(OFFSETS_TOPIC)
        if topic is not None:
            for partition in range(topic.partitions):
                log = self._logs.log(OFFSETS_TOPIC, partition)
                if log is not None:
                    count += self._replay_log(log, partition, now)
        self.coordinator.finish_loading(now)
        if count:
            logger.info("loaded %d record(s) from %s", count, OFFSETS_TOPIC)
            self._drop_offsets_of_missing_partitions(now)
        return count

    def _drop_offsets_of_missing_partitions(self, now: int) -> None:
        """Offsets of a partition that no longer exists (the broker stopped between deleting
        a topic and storing the tombstones): tombstone them now."""
        topics = self._logs.topics()
        missing = [
            (topic, index)
            for topic, index in self.coordinator.offset_partitions()
            if topic not in topics or index >= topics[topic].partitions
        ]
        if not missing:
            return
        result = self.coordinator.on_partitions_deleted(0, missing, now)
        try:
            self._append(result.records, now)
        except (OSError, StorageError, InvalidRecords) as error:
            logger.error("cannot drop the offsets of deleted partitions: %s", error)
            return
        for record in result.records:
            self.coordinator.replay(record.key, record.value, now)
        logger.info("dropped the offsets of %d deleted partition(s)", len(missing))

    def _replay_log(
        self, log: PartitionLog, partition: int, now: int, end: int | None = None
    ) -> int:
        if end is None:
            # One node: everything in the log was appended by this broker and is committed.
            log.high_watermark = log.log_end_offset
            end = log.log_end_offset
        offset = log.log_start_offset
        count = 0
        while offset < end:
            read = log.read(offset, _READ_CHUNK_BYTES, end, True)
            if not read.records:
                break
            for header, records in decode_batches(read.records):
                if header.is_control:
                    # A transaction marker: publish or drop the producer's staged offsets.
                    if header.base_offset >= offset and records and records[0].key:
                        commit = _CONTROL_KEY.unpack_from(records[0].key)[1] == CONTROL_COMMIT
                        self.coordinator.complete_transaction(header.producer_id, commit, partition)
                    offset = max(offset, header.next_offset)
                    continue
                producer_id = header.producer_id if header.is_transactional else -1
                for record in records:
                    if record.offset >= offset and record.key is not None:
                        self.coordinator.replay(record.key, record.value, now, producer_id)
                        count += 1
                offset = max(offset, header.next_offset)
        return count

    # -- a cluster: coordinating the partitions this broker leads --------------------------

    def coordinator_error(self, group_id: str) -> ErrorCode | None:
        """None when this broker coordinates `group_id` (always, alone); on a cluster
        NOT_COORDINATOR when it does not lead the group's partition, COORDINATOR_LOAD_IN_PROGRESS
        while it loads it."""
        if not self.clustered:
            return None
        partition = self.coordinator.partition_for(group_id)
        if partition in self._owned:
            return None
        if partition in self._loading:
            return ErrorCode.coordinator_load_in_progress
        return ErrorCode.not_coordinator

    def _check(self, group_id: str | None) -> None:
        if group_id is not None:
            error = self.coordinator_error(group_id)
            if error is not None:
                raise NotCoordinatorError(group_id, error)

    def on_election(self, partition: int, leader_epoch: int) -> None:
        """This broker leads `__consumer_offsets`-`partition` from `leader_epoch` on (Kafka's
        GroupCoordinator.onElection): load its groups unless already coordinating them."""
        if partition in self._owned or partition in self._loading:
            return
        task = asyncio.get_running_loop().create_task(self._load_partition(partition))
        self._loading[partition] = task
        task.add_done_callback(lambda _task: self._loading.pop(partition, None))
        logger.info("loading %s-%d (leader epoch %d)", OFFSETS_TOPIC, partition, leader_epoch)

    def on_resignation(self, partition: int) -> None:
        """This broker no longer leads `__consumer_offsets`-`partition` (Kafka's
        GroupCoordinator.onResignation): forget its groups; parked answers get NOT_COORDINATOR."""
        loading = self._loading.pop(partition, None)
        if loading is not None:
            loading.cancel()
        elif partition not in self._owned:
            return
        self._owned.discard(partition)
        self._deliver(self.coordinator.unload_partition(partition))
        logger.info("unloaded %s-%d", OFFSETS_TOPIC, partition)

    async def _load_partition(self, partition: int) -> None:
        """Replay the partition's log to its end, then wait until the high watermark reaches
        that end (a new leader may hold records not yet committed), then coordinate."""
        replicas = self.replicas
        log = self._logs.log(OFFSETS_TOPIC, partition)
        hosted = replicas.partition(OFFSETS_TOPIC, partition) if replicas is not None else None
        if log is None or hosted is None:
            logger.warning("cannot load %s-%d: not hosted here", OFFSETS_TOPIC, partition)
            return
        end = log.log_end_offset
        try:
            count = self._replay_log(log, partition, now_ms(), end)
        except (OSError, StorageError, InvalidRecords) as error:
            logger.error("cannot load %s-%d: %s", OFFSETS_TOPIC, partition, error)
            self.coordinator.unload_partition(partition)
            return
        while replicas is not None and hosted.state.high_watermark < end:
            if await replicas.wait_for_acks_all(hosted, end - 1, 1000) is not ErrorCode.none:
                await asyncio.sleep(0.1)
        self.coordinator.finish_loading(now_ms(), partition)
        self._owned.add(partition)
        if self._wakeup is not None:
            self._wakeup.set()
        logger.info(
            "coordinating the groups of %s-%d (%d record(s) loaded)",
            OFFSETS_TOPIC,
            partition,
            count,
        )

    def _leader_partition(self, partition: int) -> HostedPartition:
        """The hosted partition, if this broker leads it; else StorageError (NOT_COORDINATOR)."""
        assert self.replicas is not None
        hosted = self.replicas.partition(OFFSETS_TOPIC, partition)
        if hosted is None or not hosted.state.is_leader:
            raise StorageError(f"not the leader of {OFFSETS_TOPIC}-{partition}")
        return hosted

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._timer = asyncio.get_running_loop().create_task(self._timer_loop())

    async def stop(self) -> None:
        """Stop the timer, durability waits and loading, bounded (shutdown.py)."""
        timer = [self._timer] if self._timer is not None else []
        await cancel_and_wait(
            [*timer, *self._flushes, *self._loading.values()],
            "the group timer, offset-commit waits and loading",
        )
        self._timer = None
        for future in self._futures.values():
            if not future.done():
                future.cancel()
        self._futures.clear()

    # -- the internal topic ------------------------------------------------------------------

    def ensure_offsets_topic(self) -> bool:
        """Create `__consumer_offsets` on first use; False if it cannot be created. On a
        cluster the controller creates it (FindCoordinator asks): always True here, and each
        operation checks that this broker coordinates its group."""
        if self.clustered or OFFSETS_TOPIC in self._logs.topics():
            return True
        try:
            self._logs.create_topic(
                OFFSETS_TOPIC,
                self.group_config.offsets_topic_partitions,
                {
                    "cleanup.policy": "compact",
                    "segment.bytes": self.config.properties["offsets.topic.segment.bytes"],
                },
            )
        except (StorageError, OSError) as error:
            logger.error("cannot create %s: %s", OFFSETS_TOPIC, error)
            return False
        logger.info(
            "created %s with %d partition(s)",
            OFFSETS_TOPIC,
            self.group_config.offsets_topic_partitions,
        )
        return True

    def topics(self) -> dict[str, TopicInfo]:
        """What the KIP-848 assignors may assign: every topic but the internal ones, with its
        topic id and partition count. On a cluster from the metadata image (every topic of the
        cluster, as Kafka's GroupCoordinatorService reads its MetadataImage), since a
        coordinator hosts the logs of only some topics; alone from the local logs."""
        if self.replicas is not None:
            image = self.replicas.member.image
            return {
                topic.name: TopicInfo(topic.topic_id, max(topic.partitions, default=-1) + 1)
                for topic in image.topics_by_id.values()
                if topic.name not in INTERNAL_TOPICS
            }
        return {
            name: TopicInfo(metadata.topic_id, metadata.partitions)
            for name, metadata in self._logs.topics().items()
            if name not in INTERNAL_TOPICS
        }

    # -- operations --------------------------------------------------------------------------

    async def run(self, operation: Operation, group_id: str | None = None) -> Any:
        """Run a write operation `operation(ref, now_ms)` and wait for its response. On a
        cluster, NotCoordinatorError unless this broker coordinates `group_id`."""
        if not self.ensure_offsets_topic():
            raise CoordinatorNotAvailableError(OFFSETS_TOPIC)
        self._check(group_id)
        reference = next(self._references)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._futures[reference] = future
        try:
            self.apply(operation(reference, now_ms()))
            return await future
        finally:
            self._futures.pop(reference, None)

    async def read(self, compute: Callable[[], T], group_id: str | None = None) -> T:
        """A read (OffsetFetch, DescribeGroups): `compute()` now, answer once every write
        appended before it is durable, so no answer shows state a crash could still take back
        (Kafka's runtime defers a read behind the highest pending offset). Raises
        CoordinatorNotAvailableError if one of those writes failed; on a cluster
        NotCoordinatorError unless this broker coordinates `group_id`."""
        self._check(group_id)
        value = compute()
        if not self._waiting:
            return value
        reference = next(self._references)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._futures[reference] = future
        try:
            self._enqueue(_Waiting([(reference, ReadResponse(value))], [], durable=True))
            answer: ReadResponse = await future
        finally:
            self._futures.pop(reference, None)
        if answer.error != ErrorCode.none:
            raise CoordinatorNotAvailableError(answer.error)
        return value

    async def partitions_deleted(self, topic_partitions: list[tuple[str, int]]) -> None:
        """Drop every committed and staged offset of deleted partitions (DeleteTopics)."""
        if OFFSETS_TOPIC not in self._logs.topics():
            return
        answer = await self.run(
            lambda reference, now: self.coordinator.on_partitions_deleted(
                reference, topic_partitions, now
            )
        )
        if answer.error != ErrorCode.none:
            logger.error("cannot drop the offsets of deleted partitions: %s", answer.error.name)

    def apply(self, result: Result) -> None:
        """Append the result's records; its responses wait behind every earlier write until
        all are durable (with `odradek.acks.all.fsync`), then its completions run."""
        if self._wakeup is not None:
            self._wakeup.set()
        if not result.records:
            self._enqueue(_Waiting(result.responses, result.completions, durable=True))
            return
        now = now_ms()
        try:
            ends = self._append(result.records, now, result.producer_id, result.producer_epoch)
        except (InvalidProducerEpoch, InvalidTxnState) as error:
            # A fenced transactional producer (KIP-447's epoch check on TxnOffsetCommit).
            code = (
                ErrorCode.invalid_producer_epoch
                if isinstance(error, InvalidProducerEpoch)
                else ErrorCode.invalid_txn_state
            )
            self._enqueue(_Waiting(result.responses, result.completions, True, code))
            return
        except (OSError, StorageError, InvalidRecords) as error:
            logger.error("cannot append to %s: %s", OFFSETS_TOPIC, error)
            code = append_error(error)
            self._enqueue(_Waiting(result.responses, result.completions, True, code))
            return
        if result.replay_after_append:
            for record in result.records:
                self.coordinator.replay(record.key, record.value, now, result.producer_id)
        self._track(_Waiting(result.responses, result.completions, durable=False), ends)

    def _track(self, waiting: _Waiting, ends: dict[int, int]) -> None:
        """Queue `waiting`; it is durable once every partition in `ends` is flushed there (on a
        cluster: once the high watermark passes there)."""
        if not self.config.acks_all_fsync and not self.clustered:
            waiting.durable = True
            self._enqueue(waiting)
            return
        self._waiting.append(waiting)
        task = asyncio.get_running_loop().create_task(self._await_durable(waiting, ends))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    def _append(
        self,
        records: list[CoordinatorRecord],
        now: int,
        producer_id: int = -1,
        producer_epoch: int = -1,
    ) -> dict[int, int]:
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            by_partition.setdefault(record.partition, []).append(
                Record(key=record.key, value=record.value)
            )
        ends: dict[int, int] = {}
        for partition, batch_records in sorted(by_partition.items()):
            log = self._logs.log(OFFSETS_TOPIC, partition)
            if log is None:
                raise UnknownTopicOrPartition(f"{OFFSETS_TOPIC}-{partition} does not exist")
            batch = encode_batch(
                batch_records,
                base_timestamp=now,
                producer_id=producer_id,
                producer_epoch=producer_epoch,
                is_transactional=producer_id >= 0,
            )
            headers = validate_batches(batch, log.config.max_message_bytes)
            if self.clustered:
                hosted = self._leader_partition(partition)
                info = log.append(batch, headers, now, origin=AppendOrigin.COORDINATOR)
                assert self.replicas is not None
                self.replicas.after_leader_append(hosted)
            else:
                info = log.append(
                    batch, headers, now, partition_leader_epoch=0, origin=AppendOrigin.COORDINATOR
                )
                log.high_watermark = log.log_end_offset
                self._data_arrived.notify((OFFSETS_TOPIC, partition))
            ends[partition] = info.last_offset + 1
        return ends

    def write_marker(
        self,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        now: int,
    ) -> int:
        """Write a transaction marker to `__consumer_offsets`-`partition` and publish or drop
        the producer's staged offsets there; returns the end offset to wait on for
        durability. Answers to later group requests wait for the marker to be durable too.
        Raises StorageError / OSError like PartitionLog.append_control."""
        log = self._logs.log(OFFSETS_TOPIC, partition)
        if log is None:
            raise StorageError(f"{OFFSETS_TOPIC}-{partition} does not exist")
        if self.clustered:
            hosted = self._leader_partition(partition)
            info = log.append_control(producer_id, producer_epoch, commit, coordinator_epoch, now)
            assert self.replicas is not None
            self.replicas.after_leader_append(hosted)
        else:
            info = log.append_control(producer_id, producer_epoch, commit, coordinator_epoch, now)
            log.high_watermark = log.log_end_offset
            self._data_arrived.notify((OFFSETS_TOPIC, partition))
        self.coordinator.complete_transaction(producer_id, commit, partition)
        end = info.last_offset + 1
        self._track(_Waiting([], [], durable=False), {partition: end})
        return end

    async def _await_durable(self, waiting: _Waiting, ends: dict[int, int]) -> None:
        if self.clustered:
            await self._await_replicated(waiting, ends)
            return
        try:
            for partition, end in ends.items():
                commit = self._group_commit(OFFSETS_TOPIC, partition)
                if commit is not None:
                    await commit.wait_flushed(end)
        except OSError as error:
            # Kafka maps KAFKA_STORAGE_ERROR from a coordinator append to NOT_COORDINATOR; the
            # write and everything queued behind it fail, as Kafka fails the deferred events.
            logger.error("cannot flush %s: %s", OFFSETS_TOPIC, error)
            failing = False
            for each in self._waiting:
                failing = failing or each is waiting
                if failing and each.error is None:
                    each.error = ErrorCode.not_coordinator
        waiting.durable = True
        self._drain()

    async def _await_replicated(self, waiting: _Waiting, ends: dict[int, int]) -> None:
        """acks=all for a coordinator write on a cluster: until the high watermark passes every
        partition's end, mapped as Kafka's coordinator maps append errors (NOT_COORDINATOR when
        leadership moved, COORDINATOR_NOT_AVAILABLE for a timeout or too few replicas)."""
        replicas = self.replicas
        for partition, end in ends.items():
            hosted = replicas.partition(OFFSETS_TOPIC, partition) if replicas else None
            if replicas is None or hosted is None:
                error = ErrorCode.not_leader_or_follower
            else:
                error = await replicas.wait_for_acks_all(hosted, end - 1, self._commit_timeout_ms)
            if error is not ErrorCode.none:
                logger.warning(
                    "%s-%d write not replicated: %s", OFFSETS_TOPIC, partition, error.name
                )
                if waiting.error is None:
                    waiting.error = coordinator_error_for_append_error(error)
                break
        waiting.durable = True
        self._drain()

    def _enqueue(self, waiting: _Waiting) -> None:
        self._waiting.append(waiting)
        self._drain()

    def _drain(self) -> None:
        """Release, in append order, every queued answer whose writes (and every earlier
        write) are durable; then run its completions, whose results queue behind."""
        if self._draining:
            return
        self._draining = True
        try:
            while self._waiting and (
                self._waiting[0].durable or self._waiting[0].error is not None
            ):
                waiting = self._waiting.popleft()
                error = waiting.error
                if error is None:
                    self._deliver(waiting.responses)
                else:
                    self._deliver(
                        [
                            (reference, answer.with_error(error))
                            for reference, answer in waiting.responses
                        ]
                    )
                for completion in waiting.completions:
                    try:
                        self.apply(completion(error or ErrorCode.none, now_ms()))
                    except Exception:
                        logger.exception("group coordinator completion failed")
        finally:
            self._draining = False

    def _deliver(self, responses: list[tuple[int, Any]]) -> None:
        for reference, response in responses:
            future = self._futures.get(reference)
            if future is not None and not future.done():
                future.set_result(response)

    # -- timers ------------------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        assert self._wakeup is not None
        while True:
            now = now_ms()
            deadline = self.coordinator.next_deadline()
            if deadline is None or deadline <= now:
                try:
                    self.apply(self.coordinator.poll(now, self.topics()))
                except Exception:
                    logger.exception("group coordinator timer failed")
                deadline = self.coordinator.next_deadline()
            self._wakeup.clear()
            timeout = None if deadline is None else max(deadline - now_ms(), 1) / 1000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()


def milliseconds(value: Any) -> int:
    """kio decodes duration fields as timedelta; the coordinator works in milliseconds."""
    if isinstance(value, int):
        return value
    return int(value.total_seconds() * 1000)
