"""The transaction coordinator's runtime: the asyncio edge around TransactionCoordinator.

It owns `__transaction_state` (one partition, compacted, created on first use), replays it and
starts the coordinator (a new coordinator epoch) when the broker starts, and runs every
operation as the coordinator's life cycle demands: append the records an operation returns as
one batch, wait for the fdatasync (`odradek.acks.all.fsync`: the log is written with acks=all,
as in Kafka), then `write_succeeded` / `write_failed`, and only then answer. Markers (COMMIT /
ABORT control batches) are written in-process to every partition of the transaction
(`PartitionLog.append_control`; on `__consumer_offsets` the group coordinator publishes or drops
the staged offsets), fetchers are woken, and `markers_written` records the completion.

Timers: transaction timeouts (`poll` at `next_deadline`, at least every
`transaction.abort.timed.out.transaction.cleanup.interval.ms`) and producer-id expiration in
every partition (`producer.id.expiration.ms`, checked every
`producer.id.expiration.check.interval.ms`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from kio.schema.errors import ErrorCode

from odradek.broker.clock import now_ms
from odradek.broker.config import BrokerConfig
from odradek.broker.group_runtime import OFFSETS_TOPIC, GroupRuntime
from odradek.broker.purgatory import DataArrived, GroupCommit
from odradek.coordinator.txn import (
    AddPartitionsToTxnResult,
    EndTxnResult,
    InitProducerIdResult,
    TopicPartition,
    TransactionCoordinator,
    TransactionRecord,
    TxnMarkers,
)
from odradek.protocol.record_batch import InvalidRecords, Record, decode_batches, encode_batch
from odradek.protocol.record_batch import validate_batches as validate
from odradek.storage.errors import (
    InvalidProducerEpoch,
    StorageError,
    TransactionCoordinatorFenced,
)
from odradek.storage.log import PartitionLog
from odradek.storage.log_manager import LogManager

_T = TypeVar("_T")
_MarkingResult = TypeVar("_MarkingResult", InitProducerIdResult, EndTxnResult)

logger = logging.getLogger(__name__)

TRANSACTION_STATE_TOPIC = "__transaction_state"
_READ_CHUNK_BYTES = 1 << 20
_RETRY_S = 0.5


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
        self.coordinator = TransactionCoordinator(
            groups.coordinator.partition_for, config.transaction_config()
        )
        self._logs = logs
        self._data_arrived = data_arrived
        self._group_commit = group_commit
        self._groups = groups
        self._started = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: list[asyncio.Task[None]] = []
        properties = config.properties
        self._abort_interval_ms = int(
            properties["transaction.abort.timed.out.transaction.cleanup.interval.ms"]
        )
        self._producer_expiration_ms = int(properties["producer.id.expiration.ms"])
        self._producer_check_ms = int(properties["producer.id.expiration.check.interval.ms"])

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self, now: int) -> int:
        """Replay `__transaction_state` and start the coordinator, if the topic exists (else
        both happen on first use). Returns the number of records read."""
        log = self._state_log()
        if log is None:
            return 0
        log.high_watermark = log.log_end_offset
        count = 0
        offset = log.log_start_offset
        end = log.log_end_offset
        while offset < end:
            read = log.read(offset, _READ_CHUNK_BYTES, end, True)
            if not read.records:
                break
            for header, records in decode_batches(read.records):
                if not header.is_control:
                    for record in records:
                        if record.offset >= offset and record.key is not None:
                            self.coordinator.replay(TransactionRecord(record.key, record.value))
                            count += 1
                offset = max(offset, header.next_offset)
        if count:
            logger.info("loaded %d record(s) from %s", count, TRANSACTION_STATE_TOPIC)
        self._start(now)
        return count

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._timers = [
            loop.create_task(self._timeout_loop()),
            loop.create_task(self._producer_expiration_loop()),
        ]

    async def stop(self) -> None:
        for task in [*self._timers, *self._tasks]:
            task.cancel()
        for task in [*self._timers, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._timers = []
        self._tasks.clear()

    def ensure_started(self) -> bool:
        """Create `__transaction_state` and start the coordinator on first use."""
        if self._started:
            return True
        if self._state_log() is None:
            try:
                self._logs.create_topic(
                    TRANSACTION_STATE_TOPIC,
                    1,
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
            logger.info("created %s", TRANSACTION_STATE_TOPIC)
        return self._start(now_ms())

    def _start(self, now: int) -> bool:
        start, records = self.coordinator.start(now)
        assert start.write_id is not None
        try:
            log = self._append(records, now)
            log.flush()
        except (OSError, StorageError, InvalidRecords) as error:
            logger.error("cannot start the transaction coordinator: %s", error)
            self.coordinator.write_failed(start.write_id, ErrorCode.kafka_storage_error)
            return False
        self.coordinator.write_succeeded(start.write_id)
        self._started = True
        logger.info("transaction coordinator epoch %d", start.coordinator_epoch)
        for markers in start.markers:
            self._spawn(self.complete(markers))
        return True

    def _state_log(self) -> PartitionLog | None:
        return self._logs.log(TRANSACTION_STATE_TOPIC, 0)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- writing __transaction_state ---------------------------------------------------------

    def _append(self, records: list[TransactionRecord], now: int) -> PartitionLog:
        log = self._state_log()
        if log is None:
            raise StorageError(f"{TRANSACTION_STATE_TOPIC} does not exist")
        batch = encode_batch(
            [Record(key=record.key, value=record.value) for record in records], base_timestamp=now
        )
        log.append(batch, validate(batch, log.config.max_message_bytes), now, 0)
        log.high_watermark = log.log_end_offset
        return log

    async def _detached(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run `coroutine` as the coordinator's own task and wait for it: a client that
        disconnects cancels its request, never the coordinator's half-done work (a write
        left unsettled blocks the transactional id; markers half written leave records open)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _write(self, records: list[TransactionRecord], write_id: int | None) -> ErrorCode:
        """Append `records` (one batch), wait until durable, and settle the write."""
        if not records or write_id is None:
            return ErrorCode.none
        return await self._detached(self._write_and_settle(records, write_id))

    async def _write_and_settle(
        self, records: list[TransactionRecord], write_id: int | None
    ) -> ErrorCode:
        if not records or write_id is None:
            return ErrorCode.none
        try:
            log = self._append(records, now_ms())
        except (OSError, StorageError, InvalidRecords) as error:
            logger.error("cannot append to %s: %s", TRANSACTION_STATE_TOPIC, error)
            return self.coordinator.write_failed(write_id, ErrorCode.kafka_storage_error)
        if self.config.acks_all_fsync:
            commit = self._group_commit(TRANSACTION_STATE_TOPIC, 0)
            if commit is not None:
                try:
                    await commit.wait_flushed(log.log_end_offset)
                except OSError:
                    return self.coordinator.write_failed(write_id, ErrorCode.kafka_storage_error)
        self.coordinator.write_succeeded(write_id)
        return ErrorCode.none

    # -- operations --------------------------------------------------------------------------

    async def init_producer_id(
        self,
        transactional_id: str | None,
        transaction_timeout_ms: int,
        expected_producer_id: int,
        expected_producer_epoch: int,
    ) -> InitProducerIdResult:
        if not self.ensure_started():
            return InitProducerIdResult(ErrorCode.coordinator_not_available)
        result, records = self.coordinator.init_producer_id(
            transactional_id,
            transaction_timeout_ms,
            now_ms(),
            expected_producer_id,
            expected_producer_epoch,
        )
        return await self._detached(self._settle_and_complete(result, records))

    async def add_partitions(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: Iterable[TopicPartition],
        verify_only: bool = False,
    ) -> AddPartitionsToTxnResult:
        wanted = list(partitions)
        if not self.ensure_started():
            return _every(wanted, ErrorCode.coordinator_not_available)
        result, records = self.coordinator.add_partitions_to_txn(
            transactional_id, producer_id, producer_epoch, wanted, now_ms(), verify_only
        )
        error = await self._write(records, result.write_id)
        if error != ErrorCode.none:
            return _every(wanted, error)
        return result

    def verify_partition(
        self, transactional_id: str, producer_id: int, producer_epoch: int, topic: str, index: int
    ) -> ErrorCode:
        """KIP-890 part 1 for Produce: is (topic, index) in the producer's ongoing
        transaction? Synchronous, so nothing can change between this answer and the append."""
        if not self.ensure_started():
            return ErrorCode.coordinator_not_available
        partition = TopicPartition(topic, index)
        result, _records = self.coordinator.add_partitions_to_txn(
            transactional_id, producer_id, producer_epoch, [partition], now_ms(), verify_only=True
        )
        return result.partition_errors.get(partition, result.error)

    async def add_offsets(
        self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> ErrorCode:
        if not self.ensure_started():
            return ErrorCode.coordinator_not_available
        result, records = self.coordinator.add_offsets_to_txn(
            transactional_id, producer_id, producer_epoch, group_id, now_ms()
        )
        error = await self._write(records, result.write_id)
        return error if error != ErrorCode.none else result.error

    async def end_txn(
        self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool
    ) -> EndTxnResult:
        if not self.ensure_started():
            return EndTxnResult(ErrorCode.coordinator_not_available)
        result, records = self.coordinator.end_txn(
            transactional_id, producer_id, producer_epoch, commit, now_ms()
        )
        return await self._detached(self._settle_and_complete(result, records))

    async def _settle_and_complete(
        self, result: _MarkingResult, records: list[TransactionRecord]
    ) -> _MarkingResult:
        """Write `records`, then the markers `result` carries, as one piece of the
        coordinator's own work (a client that disconnects cancels neither half).

        InitProducerId: the fenced producer's transaction is aborted before the answer, so
        the client's retry (it got CONCURRENT_TRANSACTIONS) finds it complete. EndTxn: Kafka
        answers once PrepareCommit/PrepareAbort is durable; the markers are in-process here,
        so answering after them costs little and makes the outcome visible to readers by the
        time the producer's commit returns."""
        error = await self._write_and_settle(records, result.write_id)
        if error != ErrorCode.none:
            return type(result)(error)
        if result.markers is not None:
            await self.complete(result.markers)
        return result

    # -- markers -----------------------------------------------------------------------------

    async def complete(self, markers: TxnMarkers) -> None:
        """Write the markers to every partition, then record the transaction complete."""
        waits: list[tuple[str, int, int]] = []
        for topic, index in markers.partitions:
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
        while True:
            result, records = self.coordinator.markers_written(markers, now_ms())
            if not records:
                return
            if await self._write(records, result.write_id) == ErrorCode.none:
                return
            await asyncio.sleep(_RETRY_S)

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
        the partition does not exist. Raises StorageError / OSError from the log."""
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

    # -- timers ------------------------------------------------------------------------------

    async def _timeout_loop(self) -> None:
        while True:
            now = now_ms()
            if self._started:
                deadline = self.coordinator.next_deadline()
                if deadline is not None and deadline <= now:
                    try:
                        await self._poll(now)
                    except Exception:
                        logger.exception("transaction timeout check failed")
                    deadline = self.coordinator.next_deadline()
                wait_ms = self._abort_interval_ms
                if deadline is not None:
                    wait_ms = min(wait_ms, deadline - now_ms())
            else:
                wait_ms = self._abort_interval_ms
            await asyncio.sleep(max(wait_ms, 5) / 1000)

    async def _poll(self, now: int) -> None:
        result, records = self.coordinator.poll(now)
        if await self._write(records, result.write_id) != ErrorCode.none:
            return
        for markers in result.aborts:
            logger.info(
                "aborting timed-out transaction %s (producer %d)",
                markers.transactional_id,
                markers.producer_id,
            )
            self._spawn(self.complete(markers))
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
