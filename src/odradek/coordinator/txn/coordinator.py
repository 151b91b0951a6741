"""The transaction coordinator: Kafka's TransactionCoordinator + TransactionStateManager as one
deterministic state machine (no I/O, no clock: every operation takes ``now_ms``).

Every mutating operation returns ``(result, records)``. When ``records`` is non-empty,
``result.write_id`` names the write: the broker appends ``records`` to ``__transaction_state``
as one batch, then calls :meth:`TransactionCoordinator.write_succeeded` (the prepared transitions
take effect) or :meth:`TransactionCoordinator.write_failed` (they are dropped, the state is
unchanged, and it returns the error code for the response). Only then does it act on the result
(send the response, write the markers it lists).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from kio.schema.errors import ErrorCode

from odradek.coordinator.group.records import partition_for
from odradek.coordinator.txn.errors import coordinator_error_for_append_error
from odradek.coordinator.txn.producer_ids import (
    DEFAULT_BLOCK_SIZE,
    ProducerIdManager,
    ProducerIdsUnavailableError,
)
from odradek.coordinator.txn.records import (
    CoordinatorEpochEntry,
    ProducerIdBlockEntry,
    TransactionLogEntry,
    TransactionRecord,
    decode_record,
    encode_coordinator_epoch,
    transaction_log_record,
)
from odradek.coordinator.txn.state import (
    MAX_PRODUCER_EPOCH,
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    TRANSACTION_VERSION_2,
    InvalidTransitionError,
    TopicPartition,
    TransactionMetadata,
    TransactionState,
    TxnTransitMetadata,
    is_epoch_exhausted,
)

#: Kafka's ``__consumer_offsets``: AddOffsetsToTxn adds the group's partition of it.
CONSUMER_OFFSETS_TOPIC = "__consumer_offsets"

_PREPARED = (TransactionState.PREPARE_COMMIT, TransactionState.PREPARE_ABORT)
_COMPLETED = (TransactionState.COMPLETE_COMMIT, TransactionState.COMPLETE_ABORT)


@dataclasses.dataclass(frozen=True, slots=True)
class TransactionConfig:
    """Kafka's broker settings for the coordinator, with Kafka's defaults."""

    #: ``transaction.max.timeout.ms``
    transaction_max_timeout_ms: int = 900_000
    #: ``transactional.id.expiration.ms``
    transactional_id_expiration_ms: int = 604_800_000
    #: Ids reserved per producer-id-block record (Kafka: 1000).
    producer_id_block_size: int = DEFAULT_BLOCK_SIZE
    #: ``node.id`` / ``broker.id``, stored in the producer-id-block record.
    broker_id: int = 0


# -- what the broker is told to do --------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TxnMarkers:
    """Write a COMMIT (``commit``) or ABORT control batch for ``producer_id``/``producer_epoch``
    with ``coordinator_epoch`` to every partition in ``partitions`` (WriteTxnMarkers semantics),
    then call :meth:`TransactionCoordinator.markers_written` with this object.

    A partition of ``__consumer_offsets`` means the group coordinator must also commit / drop
    the transactional offsets ``producer_id`` staged for its groups. Retry retriable failures;
    a partition whose topic was deleted counts as written (as Kafka's marker channel does).
    """

    transactional_id: str
    producer_id: int
    producer_epoch: int
    coordinator_epoch: int
    commit: bool
    partitions: tuple[TopicPartition, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class StartResult:
    coordinator_epoch: int
    #: Transactions found in PrepareCommit/PrepareAbort: finish them (after the write).
    markers: tuple[TxnMarkers, ...]
    write_id: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class InitProducerIdResult:
    error: ErrorCode
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH
    #: Set with CONCURRENT_TRANSACTIONS when an Ongoing transaction was fenced: after the write
    #: succeeded, write these ABORT markers (epoch = old epoch + 1); the client retries.
    markers: TxnMarkers | None = None
    write_id: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AddPartitionsToTxnResult:
    #: NONE, or the error every partition gets.
    error: ErrorCode
    #: One entry per requested partition (the response's per-partition results).
    partition_errors: Mapping[TopicPartition, ErrorCode]
    write_id: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AddOffsetsToTxnResult:
    error: ErrorCode
    #: The ``__consumer_offsets`` partition that holds the group's offsets.
    offsets_partition: TopicPartition
    write_id: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class EndTxnResult:
    error: ErrorCode
    #: After the write succeeded: write these markers (the response need not wait for them).
    markers: TxnMarkers | None = None
    write_id: int | None = None
    #: Transaction version 2 (EndTxn v5): the producer id and epoch of the producer's next
    #: transaction; -1 otherwise or on error.
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH


@dataclasses.dataclass(frozen=True, slots=True)
class MarkersWrittenResult:
    #: NONE; or why the completion is not (any longer) needed — the broker just drops it.
    error: ErrorCode
    write_id: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PollResult:
    #: Timed-out transactions aborted by the coordinator (epoch bumped: the producer is fenced).
    aborts: tuple[TxnMarkers, ...] = ()
    #: Transactional ids whose tombstone is in ``records``.
    expired: tuple[str, ...] = ()
    write_id: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DescribedTransaction:
    """One entry of a DescribeTransactions response. An entry with an error keeps the
    defaults of Kafka's DescribeTransactionsResponse schema (zeros and an empty state), as
    TransactionCoordinator.handleDescribeTransactions sets only the error code."""

    transactional_id: str
    error: ErrorCode
    transaction_state: str = ""
    transaction_timeout_ms: int = 0
    transaction_start_time_ms: int = 0
    producer_id: int = 0
    producer_epoch: int = 0
    #: ``(topic, partitions)`` pairs, sorted.
    topics: tuple[tuple[str, tuple[int, ...]], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class ListedTransaction:
    transactional_id: str
    producer_id: int
    transaction_state: str


@dataclasses.dataclass(frozen=True, slots=True)
class ListTransactionsResult:
    error: ErrorCode
    unknown_state_filters: tuple[str, ...] = ()
    transaction_states: tuple[ListedTransaction, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class CoordinatorSnapshot:
    """Everything the log determines: equal for a live coordinator and one rebuilt by replay."""

    transactions: Mapping[str, TxnTransitMetadata]
    producer_id_block_end: int
    coordinator_epoch: int


@dataclasses.dataclass(slots=True)
class _PendingWrite:
    transits: list[tuple[str, TxnTransitMetadata, bool]] = dataclasses.field(default_factory=list)
    tombstones: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    block_end: int | None = None
    coordinator_epoch: int | None = None


Records = list[TransactionRecord]
_Result = TypeVar(
    "_Result",
    InitProducerIdResult,
    AddPartitionsToTxnResult,
    EndTxnResult,
    MarkersWrittenResult,
    PollResult,
)


class TransactionCoordinator:
    """Kafka's transaction coordinator for every transactional id (one ``__transaction_state``
    partition's worth). Construct, :meth:`replay` the log, :meth:`start`, then serve."""

    def __init__(
        self,
        offsets_partition_for: Callable[[str], int],
        config: TransactionConfig | None = None,
        producer_ids: ProducerIdManager | None = None,
    ) -> None:
        self.config = config or TransactionConfig()
        self._offsets_partition_for = offsets_partition_for
        # A cluster member passes its ControllerProducerIdManager, shared by the coordinators
        # it loads and unloads as it gains and loses `__transaction_state` leadership.
        self._producer_ids = producer_ids or ProducerIdManager(
            self.config.producer_id_block_size, broker_id=self.config.broker_id
        )
        self._transactions: dict[str, TransactionMetadata] = {}
        self._coordinator_epoch = 0
        self._starting = False
        self._loaded = False
        self._pending: dict[int, _PendingWrite] = {}
        self._write_ids = itertools.count(1)

    @property
    def producer_ids(self) -> ProducerIdManager:
        """The producer id allocator (a cluster member installs the controller's blocks)."""
        return self._producer_ids

    # -- load -----------------------------------------------------------------------------------

    @property
    def coordinator_epoch(self) -> int:
        return self._coordinator_epoch

    @property
    def loaded(self) -> bool:
        return self._loaded

    def replay(self, record: TransactionRecord) -> None:
        """Apply one ``__transaction_state`` record read back at start (in log order)."""
        if self._loaded or self._starting:
            raise RuntimeError("replay happens before start()")
        entry = decode_record(record)
        if isinstance(entry, TransactionLogEntry):
            if entry.metadata is None:
                self._transactions.pop(entry.transactional_id, None)
            else:
                self._transactions[entry.transactional_id] = TransactionMetadata.from_transit(
                    entry.transactional_id, entry.metadata
                )
                self._producer_ids.observe(entry.metadata.producer_id)
        elif isinstance(entry, ProducerIdBlockEntry):
            self._producer_ids.replay_block(entry.next_producer_id)
        elif isinstance(entry, CoordinatorEpochEntry):
            self._coordinator_epoch = max(self._coordinator_epoch, entry.coordinator_epoch)
        # Unknown key versions are skipped, as Kafka's loader does.

    def start(
        self, now_ms: int, coordinator_epoch: int | None = None
    ) -> tuple[StartResult, Records]:
        """Finish loading: persist coordinator epoch + 1 (or `coordinator_epoch`, on a cluster
        the `__transaction_state` partition's leader epoch, as in Kafka) and list the
        transactions whose markers must be (re)written. Requests get
        COORDINATOR_LOAD_IN_PROGRESS until the write succeeds; call again if it failed."""
        if self._loaded or self._starting:
            raise RuntimeError("start() already called")
        epoch = self._coordinator_epoch + 1 if coordinator_epoch is None else coordinator_epoch
        self._starting = True
        write_id = self._new_write(_PendingWrite(coordinator_epoch=epoch))
        markers = tuple(
            self._markers(transactional_id, metadata, coordinator_epoch=epoch)
            for transactional_id, metadata in sorted(self._transactions.items())
            if metadata.state in _PREPARED
        )
        return StartResult(epoch, markers, write_id), [encode_coordinator_epoch(epoch)]

    # -- writes ---------------------------------------------------------------------------------

    def write_succeeded(self, write_id: int) -> None:
        """The records of ``write_id`` are in the log: apply their transitions."""
        write = self._pending.pop(write_id)
        if write.block_end is not None:
            self._producer_ids.block_appended(write.block_end)
        for transactional_id, transit, _created in write.transits:
            self._transactions[transactional_id].complete_transition(transit)
        for transactional_id, producer_epoch in write.tombstones:
            metadata = self._transactions.get(transactional_id)
            if (
                metadata is not None
                and metadata.pending_state is TransactionState.DEAD
                and metadata.producer_epoch == producer_epoch
            ):
                del self._transactions[transactional_id]
        if write.coordinator_epoch is not None:
            self._coordinator_epoch = write.coordinator_epoch
            self._starting = False
            self._loaded = True

    def write_failed(self, write_id: int, append_error: ErrorCode) -> ErrorCode:
        """The append of ``write_id`` failed with ``append_error``: drop its transitions (state
        unchanged) and return the error code to answer with (Kafka's mapping)."""
        write = self._pending.pop(write_id)
        for transactional_id, _transit, created in write.transits:
            if created:
                del self._transactions[transactional_id]
            else:
                self._transactions[transactional_id].abort_transition()
        for transactional_id, _epoch in write.tombstones:
            self._transactions[transactional_id].abort_transition()
        if write.coordinator_epoch is not None:
            self._starting = False
        return coordinator_error_for_append_error(append_error)

    # -- InitProducerId -------------------------------------------------------------------------

    def init_producer_id(
        self,
        transactional_id: str | None,
        transaction_timeout_ms: int,
        now_ms: int,
        expected_producer_id: int = NO_PRODUCER_ID,
        expected_producer_epoch: int = NO_PRODUCER_EPOCH,
    ) -> tuple[InitProducerIdResult, Records]:
        """InitProducerId. ``expected_*`` are the request's producer_id/producer_epoch (v3+,
        KIP-360), -1 when absent. COORDINATOR_LOAD_IN_PROGRESS while loading and while a
        cluster member waits for its next producer-id block."""
        if not self._loaded:
            return InitProducerIdResult(ErrorCode.coordinator_load_in_progress), []
        try:
            return self._init_producer_id(
                transactional_id,
                transaction_timeout_ms,
                now_ms,
                expected_producer_id,
                expected_producer_epoch,
            )
        except ProducerIdsUnavailableError:
            # Raised before any state changed: ids are drawn before transitions are prepared.
            return InitProducerIdResult(ErrorCode.coordinator_load_in_progress), []

    def _init_producer_id(
        self,
        transactional_id: str | None,
        transaction_timeout_ms: int,
        now_ms: int,
        expected_producer_id: int,
        expected_producer_epoch: int,
    ) -> tuple[InitProducerIdResult, Records]:
        if transactional_id is None:
            # Idempotent producer: a fresh id, epoch 0, whatever it sent.
            write = _PendingWrite()
            producer_id, block_records = self._allocate_producer_id(write)
            result = InitProducerIdResult(ErrorCode.none, producer_id, 0)
            return self._with_write(result, write, block_records)
        if not transactional_id:
            return InitProducerIdResult(ErrorCode.invalid_request), []
        if not 0 < transaction_timeout_ms <= self.config.transaction_max_timeout_ms:
            return InitProducerIdResult(ErrorCode.invalid_transaction_timeout), []
        expected: tuple[int, int] | None
        if expected_producer_id == NO_PRODUCER_ID and expected_producer_epoch == NO_PRODUCER_EPOCH:
            expected = None
        elif NO_PRODUCER_ID in (expected_producer_id, expected_producer_epoch):
            return InitProducerIdResult(ErrorCode.invalid_request), []
        else:
            expected = (expected_producer_id, expected_producer_epoch)

        write = _PendingWrite()
        records: Records = []
        metadata = self._transactions.get(transactional_id)
        created = metadata is None
        if metadata is None:
            producer_id, records = self._allocate_producer_id(write)
            metadata = TransactionMetadata(
                transactional_id=transactional_id,
                producer_id=producer_id,
                last_producer_id=NO_PRODUCER_ID,
                producer_epoch=NO_PRODUCER_EPOCH,
                last_producer_epoch=NO_PRODUCER_EPOCH,
                txn_timeout_ms=transaction_timeout_ms,
                state=TransactionState.EMPTY,
                topic_partitions=frozenset(),
                txn_start_timestamp=-1,
                txn_last_update_timestamp=now_ms,
            )
        if metadata.pending_transition_in_progress:
            return InitProducerIdResult(ErrorCode.concurrent_transactions), []
        if expected is not None and not self._is_valid_expected_producer(metadata, *expected):
            return InitProducerIdResult(ErrorCode.producer_fenced), []

        state = metadata.state
        if state in _PREPARED:
            return InitProducerIdResult(ErrorCode.concurrent_transactions), []
        if state is TransactionState.ONGOING:
            # Fence the current producer and abort its transaction; the client retries after
            # the abort completes and then gets a second epoch bump (or a new producer id).
            transit = metadata.prepare_fence_and_abort(now_ms)
            write.transits.append((transactional_id, transit, False))
            records.append(transaction_log_record(transactional_id, transit))
            markers = self._markers(transactional_id, metadata, transit=transit)
            result = InitProducerIdResult(ErrorCode.concurrent_transactions, markers=markers)
            return self._with_write(result, write, records)
        if state not in (TransactionState.EMPTY, *_COMPLETED):
            raise InvalidTransitionError(f"{transactional_id} found in state {state.kafka_name}")

        new_transit: TxnTransitMetadata | None
        if metadata.is_producer_epoch_exhausted and (
            expected is None or expected[1] == metadata.producer_epoch
        ):
            new_producer_id, block_records = self._allocate_producer_id(write)
            records.extend(block_records)
            new_transit = metadata.prepare_producer_id_rotation(
                new_producer_id,
                transaction_timeout_ms,
                now_ms,
                record_last_epoch=expected is not None,
            )
        else:
            new_transit = metadata.prepare_increment_producer_epoch(
                transaction_timeout_ms, None if expected is None else expected[1], now_ms
            )
            if new_transit is None:
                return InitProducerIdResult(ErrorCode.producer_fenced), []
        if created:
            self._transactions[transactional_id] = metadata
        write.transits.append((transactional_id, new_transit, created))
        records.append(transaction_log_record(transactional_id, new_transit))
        result = InitProducerIdResult(
            ErrorCode.none, new_transit.producer_id, new_transit.producer_epoch
        )
        return self._with_write(result, write, records)

    @staticmethod
    def _is_valid_expected_producer(
        metadata: TransactionMetadata, producer_id: int, producer_epoch: int
    ) -> bool:
        # Kafka's isValidProducerId: new metadata, the current id (its epoch is checked by the
        # bump), or the previous id with an exhausted epoch (a retried rotation).
        return (
            metadata.producer_epoch == NO_PRODUCER_EPOCH
            or producer_id == metadata.producer_id
            or (producer_id == metadata.last_producer_id and is_epoch_exhausted(producer_epoch))
        )

    # -- AddPartitionsToTxn / AddOffsetsToTxn ---------------------------------------------------

    def add_partitions_to_txn(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: Iterable[TopicPartition],
        now_ms: int,
        verify_only: bool = False,
        client_transaction_version: int | None = None,
    ) -> tuple[AddPartitionsToTxnResult, Records]:
        """AddPartitionsToTxn for one transaction (call once per transaction of a v4+ batch).

        ``verify_only`` (v4+, KIP-890): write nothing, answer per partition NONE if it is in the
        ongoing transaction, else TRANSACTION_ABORTABLE (Kafka >= 3.8; a produce handler that
        must answer INVALID_TXN_STATE maps it). ``client_transaction_version`` 2 is the implicit
        add of a Produce v12 / TxnOffsetCommit v5 (KIP-890 part 2), recorded with the
        transaction so that its end bumps the epoch."""
        requested = tuple(dict.fromkeys(TopicPartition(*tp) for tp in partitions))

        def every(error: ErrorCode) -> tuple[AddPartitionsToTxnResult, Records]:
            return AddPartitionsToTxnResult(error, dict.fromkeys(requested, error)), []

        if not self._loaded:
            return every(ErrorCode.coordinator_load_in_progress)
        if not transactional_id:
            return every(ErrorCode.invalid_request)
        metadata = self._transactions.get(transactional_id)
        if metadata is None or metadata.producer_id != producer_id:
            return every(ErrorCode.invalid_producer_id_mapping)
        if metadata.producer_epoch != producer_epoch:
            return every(ErrorCode.producer_fenced)
        if verify_only:
            if metadata.state in _PREPARED:
                return every(ErrorCode.concurrent_transactions)
            return AddPartitionsToTxnResult(
                ErrorCode.none,
                {
                    tp: ErrorCode.none
                    if tp in metadata.topic_partitions
                    else ErrorCode.transaction_abortable
                    for tp in requested
                },
            ), []
        if metadata.pending_transition_in_progress or metadata.state in _PREPARED:
            return every(ErrorCode.concurrent_transactions)
        if metadata.state is TransactionState.ONGOING and metadata.topic_partitions.issuperset(
            requested
        ):
            return every(ErrorCode.none)
        transit = metadata.prepare_add_partitions(requested, now_ms, client_transaction_version)
        write = _PendingWrite(transits=[(transactional_id, transit, False)])
        result = AddPartitionsToTxnResult(ErrorCode.none, dict.fromkeys(requested, ErrorCode.none))
        return self._with_write(result, write, [transaction_log_record(transactional_id, transit)])

    def add_offsets_to_txn(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        group_id: str,
        now_ms: int,
    ) -> tuple[AddOffsetsToTxnResult, Records]:
        """AddOffsetsToTxn: add the group's ``__consumer_offsets`` partition to the transaction."""
        partition = TopicPartition(CONSUMER_OFFSETS_TOPIC, self._offsets_partition_for(group_id))
        added, records = self.add_partitions_to_txn(
            transactional_id, producer_id, producer_epoch, (partition,), now_ms
        )
        return AddOffsetsToTxnResult(added.error, partition, added.write_id), records

    # -- EndTxn and markers ---------------------------------------------------------------------

    def end_txn(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        now_ms: int,
        transaction_version: int = 1,
    ) -> tuple[EndTxnResult, Records]:
        """EndTxn: ``transaction_version`` 1 for EndTxn v0-v4, 2 for v5 (KIP-890 part 2, see
        :meth:`_end_txn_v2`)."""
        if transaction_version >= TRANSACTION_VERSION_2:
            return self._end_txn_v2(transactional_id, producer_id, producer_epoch, commit, now_ms)
        if not self._loaded:
            return EndTxnResult(ErrorCode.coordinator_load_in_progress), []
        if not transactional_id:
            return EndTxnResult(ErrorCode.invalid_request), []
        metadata = self._transactions.get(transactional_id)
        if metadata is None or metadata.producer_id != producer_id:
            return EndTxnResult(ErrorCode.invalid_producer_id_mapping), []
        if metadata.producer_epoch != producer_epoch:
            return EndTxnResult(ErrorCode.producer_fenced), []
        if metadata.pending_transition_in_progress:
            return EndTxnResult(ErrorCode.concurrent_transactions), []
        state = metadata.state
        if state is TransactionState.ONGOING:
            transit = metadata.prepare_abort_or_commit(commit, now_ms)
            write = _PendingWrite(transits=[(transactional_id, transit, False)])
            markers = self._markers(transactional_id, metadata, transit=transit)
            record = transaction_log_record(transactional_id, transit)
            return self._with_write(EndTxnResult(ErrorCode.none, markers), write, [record])
        matches = (
            TransactionState.COMPLETE_COMMIT if commit else TransactionState.COMPLETE_ABORT,
            TransactionState.PREPARE_COMMIT if commit else TransactionState.PREPARE_ABORT,
        )
        if state is matches[0]:
            return EndTxnResult(ErrorCode.none), []  # a retry of a finished EndTxn
        if state is matches[1]:
            return EndTxnResult(ErrorCode.concurrent_transactions), []  # markers in flight
        # Empty (no transaction), or the opposite outcome already decided.
        return EndTxnResult(ErrorCode.invalid_txn_state), []

    def _end_txn_v2(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        now_ms: int,
    ) -> tuple[EndTxnResult, Records]:
        """EndTxn v5 (Kafka's endTransaction for transaction version 2).

        Every end bumps the epoch (a new producer id at epoch 0 once it is exhausted), and the
        answer carries the producer id and epoch of the next transaction. A request is valid at
        the current epoch, or — a retry whose answer was lost — at the epoch just before it
        once the transaction is prepared or complete; a delayed EndTxn of an earlier
        transaction is therefore PRODUCER_FENCED instead of ending the current one
        (KAFKA-17754). An abort with nothing added (Empty/Complete*) is allowed and bumps too.
        """
        if not self._loaded:
            return EndTxnResult(ErrorCode.coordinator_load_in_progress), []
        if not transactional_id:
            return EndTxnResult(ErrorCode.invalid_request), []
        metadata = self._transactions.get(transactional_id)
        if metadata is None:
            return EndTxnResult(ErrorCode.invalid_producer_id_mapping), []
        state = metadata.state
        retry_on_overflow = (
            metadata.last_producer_id == producer_id
            and producer_epoch == MAX_PRODUCER_EPOCH - 1
            and metadata.producer_epoch == 0
        )
        retry_on_epoch_bump = metadata.producer_epoch == producer_epoch + 1
        if state in _PREPARED:
            valid_epoch = retry_on_epoch_bump
        elif state in _COMPLETED:
            valid_epoch = (
                retry_on_epoch_bump
                or retry_on_overflow
                or producer_epoch == metadata.producer_epoch
            )
        else:
            valid_epoch = producer_epoch == metadata.producer_epoch
        is_retry = retry_on_epoch_bump or retry_on_overflow
        if metadata.producer_id != producer_id and not retry_on_overflow:
            return EndTxnResult(ErrorCode.invalid_producer_id_mapping), []
        if not valid_epoch:
            return EndTxnResult(ErrorCode.producer_fenced), []
        if metadata.pending_transition_in_progress:
            return EndTxnResult(ErrorCode.concurrent_transactions), []
        finished = TransactionState.COMPLETE_COMMIT if commit else TransactionState.COMPLETE_ABORT
        if state is TransactionState.ONGOING:
            pass
        elif state is finished and is_retry:
            # The answer to the EndTxn that completed it was lost: the same answer again.
            return EndTxnResult(
                ErrorCode.none,
                producer_id=metadata.producer_id,
                producer_epoch=metadata.producer_epoch,
            ), []
        elif state in (TransactionState.EMPTY, *_COMPLETED) and not commit and not is_retry:
            pass  # abort with nothing added: still bump the epoch
        elif state is (
            TransactionState.PREPARE_COMMIT if commit else TransactionState.PREPARE_ABORT
        ):
            return EndTxnResult(ErrorCode.concurrent_transactions), []
        else:
            return EndTxnResult(ErrorCode.invalid_txn_state), []
        write = _PendingWrite()
        records: Records = []
        next_producer_id = NO_PRODUCER_ID
        if metadata.is_producer_epoch_exhausted:
            next_producer_id, records = self._allocate_producer_id(write)
        transit = metadata.prepare_end_with_epoch_bump(commit, next_producer_id, now_ms)
        write.transits.append((transactional_id, transit, False))
        records.append(transaction_log_record(transactional_id, transit))
        markers = self._markers(transactional_id, metadata, transit=transit)
        if next_producer_id != NO_PRODUCER_ID:
            next_id, next_epoch = next_producer_id, 0
        else:
            next_id, next_epoch = transit.producer_id, transit.producer_epoch
        result = EndTxnResult(
            ErrorCode.none, markers, producer_id=next_id, producer_epoch=next_epoch
        )
        return self._with_write(result, write, records)

    def markers_written(
        self, markers: TxnMarkers, now_ms: int
    ) -> tuple[MarkersWrittenResult, Records]:
        """Every marker of ``markers`` is appended: record CompleteCommit/CompleteAbort. If that
        write fails, call again later (the markers need not be rewritten)."""
        metadata = self._transactions.get(markers.transactional_id)
        if markers.coordinator_epoch != self._coordinator_epoch or not self._loaded:
            return MarkersWrittenResult(ErrorCode.not_coordinator), []
        if metadata is None or metadata.producer_id != markers.producer_id:
            return MarkersWrittenResult(ErrorCode.invalid_producer_id_mapping), []
        if metadata.producer_epoch != markers.producer_epoch:
            return MarkersWrittenResult(ErrorCode.producer_fenced), []
        if metadata.pending_transition_in_progress:
            return MarkersWrittenResult(ErrorCode.concurrent_transactions), []
        prepared = (
            TransactionState.PREPARE_COMMIT if markers.commit else TransactionState.PREPARE_ABORT
        )
        completed = (
            TransactionState.COMPLETE_COMMIT if markers.commit else TransactionState.COMPLETE_ABORT
        )
        if metadata.state is completed:
            return MarkersWrittenResult(ErrorCode.none), []
        if metadata.state is not prepared:
            return MarkersWrittenResult(ErrorCode.invalid_txn_state), []
        transit = metadata.prepare_complete(now_ms)
        write = _PendingWrite(transits=[(markers.transactional_id, transit, False)])
        record = transaction_log_record(markers.transactional_id, transit)
        return self._with_write(MarkersWrittenResult(ErrorCode.none), write, [record])

    # -- time -----------------------------------------------------------------------------------

    def poll(self, now_ms: int) -> tuple[PollResult, Records]:
        """Abort transactions open longer than their timeout (bumping the epoch, which fences
        the producer, as Kafka's abortTimedOutTransactions does) and expire transactional ids
        idle for ``transactional.id.expiration.ms`` (tombstones)."""
        if not self._loaded:
            return PollResult(), []
        write = _PendingWrite()
        records: Records = []
        aborts: list[TxnMarkers] = []
        expired: list[str] = []
        expire_before = now_ms - self.config.transactional_id_expiration_ms
        for transactional_id, metadata in sorted(self._transactions.items()):
            if metadata.pending_transition_in_progress:
                continue
            if (
                metadata.state is TransactionState.ONGOING
                and metadata.txn_start_timestamp + metadata.txn_timeout_ms < now_ms
            ):
                transit = metadata.prepare_fence_and_abort(now_ms)
                write.transits.append((transactional_id, transit, False))
                records.append(transaction_log_record(transactional_id, transit))
                aborts.append(self._markers(transactional_id, metadata, transit=transit))
            elif (
                metadata.state.expiration_allowed
                and metadata.txn_last_update_timestamp <= expire_before
            ):
                metadata.prepare_dead()
                write.tombstones.append((transactional_id, metadata.producer_epoch))
                records.append(transaction_log_record(transactional_id, None))
                expired.append(transactional_id)
        return self._with_write(PollResult(tuple(aborts), tuple(expired)), write, records)

    def next_deadline(self) -> int | None:
        """The earliest ``now_ms`` at which :meth:`poll` has work, or None."""
        deadlines: list[int] = []
        for metadata in self._transactions.values():
            if metadata.pending_transition_in_progress:
                continue
            if metadata.state is TransactionState.ONGOING:
                deadlines.append(metadata.txn_start_timestamp + metadata.txn_timeout_ms + 1)
            elif metadata.state.expiration_allowed:
                deadlines.append(
                    metadata.txn_last_update_timestamp + self.config.transactional_id_expiration_ms
                )
        return min(deadlines, default=None)

    # -- Describe / List ------------------------------------------------------------------------

    def describe_transactions(self, transactional_ids: Sequence[str]) -> list[DescribedTransaction]:
        described = []
        for transactional_id in transactional_ids:
            metadata = self._transactions.get(transactional_id)
            if not self._loaded:
                error = ErrorCode.coordinator_load_in_progress
            elif not transactional_id:
                error = ErrorCode.invalid_request
            elif metadata is None or metadata.state is TransactionState.DEAD:
                error = ErrorCode.transactional_id_not_found
            else:
                by_topic: dict[str, list[int]] = {}
                for topic, partition in sorted(metadata.topic_partitions):
                    by_topic.setdefault(topic, []).append(partition)
                described.append(
                    DescribedTransaction(
                        transactional_id=transactional_id,
                        error=ErrorCode.none,
                        transaction_state=metadata.state.kafka_name,
                        transaction_timeout_ms=metadata.txn_timeout_ms,
                        transaction_start_time_ms=metadata.txn_start_timestamp,
                        producer_id=metadata.producer_id,
                        producer_epoch=metadata.producer_epoch,
                        topics=tuple((topic, tuple(ids)) for topic, ids in by_topic.items()),
                    )
                )
                continue
            described.append(DescribedTransaction(transactional_id, error))
        return described

    def list_transactions(
        self,
        state_filters: Iterable[str] = (),
        producer_id_filters: Iterable[int] = (),
        duration_filter_ms: int = -1,
        now_ms: int = 0,
    ) -> ListTransactionsResult:
        """ListTransactions; ``duration_filter_ms`` >= 0 keeps transactions running longer than
        it (``now - start > duration``, KIP-994)."""
        if not self._loaded:
            return ListTransactionsResult(ErrorCode.coordinator_load_in_progress)
        state_names = list(dict.fromkeys(state_filters))
        wanted_states = set()
        unknown = []
        for name in state_names:
            state = TransactionState.from_kafka_name(name)
            if state is None:
                unknown.append(name)
            else:
                wanted_states.add(state)
        producer_ids = set(producer_id_filters)
        listed = []
        for transactional_id, metadata in sorted(self._transactions.items()):
            if metadata.state is TransactionState.DEAD:
                continue
            if producer_ids and metadata.producer_id not in producer_ids:
                continue
            if state_names and metadata.state not in wanted_states:
                continue
            if (
                duration_filter_ms >= 0
                and now_ms - metadata.txn_start_timestamp <= duration_filter_ms
            ):
                continue
            listed.append(
                ListedTransaction(transactional_id, metadata.producer_id, metadata.state.kafka_name)
            )
        return ListTransactionsResult(ErrorCode.none, tuple(unknown), tuple(listed))

    # -- inspection -----------------------------------------------------------------------------

    def transaction(self, transactional_id: str) -> TxnTransitMetadata | None:
        """The committed (appended) state of ``transactional_id``, if known."""
        metadata = self._transactions.get(transactional_id)
        return None if metadata is None else metadata.durable_view()

    def pending_state(self, transactional_id: str) -> TransactionState | None:
        metadata = self._transactions.get(transactional_id)
        return None if metadata is None else metadata.pending_state

    def snapshot(self) -> CoordinatorSnapshot:
        return CoordinatorSnapshot(
            transactions={
                transactional_id: metadata.durable_view()
                for transactional_id, metadata in sorted(self._transactions.items())
            },
            producer_id_block_end=self._producer_ids.durable_block_end,
            coordinator_epoch=self._coordinator_epoch,
        )

    # -- helpers --------------------------------------------------------------------------------

    def _allocate_producer_id(self, write: _PendingWrite) -> tuple[int, Records]:
        producer_id, block_record = self._producer_ids.allocate()
        if block_record is None:
            return producer_id, []
        write.block_end = self._producer_ids.block_end
        return producer_id, [block_record]

    def _new_write(self, write: _PendingWrite) -> int:
        write_id = next(self._write_ids)
        self._pending[write_id] = write
        return write_id

    def _with_write(
        self, result: _Result, write: _PendingWrite, records: Records
    ) -> tuple[_Result, Records]:
        if not records:
            return result, records
        return dataclasses.replace(result, write_id=self._new_write(write)), records

    def _markers(
        self,
        transactional_id: str,
        metadata: TransactionMetadata,
        *,
        transit: TxnTransitMetadata | None = None,
        coordinator_epoch: int | None = None,
    ) -> TxnMarkers:
        source = transit or metadata.durable_view()
        return TxnMarkers(
            transactional_id=transactional_id,
            producer_id=source.producer_id,
            producer_epoch=source.producer_epoch,
            coordinator_epoch=self._coordinator_epoch
            if coordinator_epoch is None
            else coordinator_epoch,
            commit=source.state is TransactionState.PREPARE_COMMIT,
            partitions=tuple(sorted(source.topic_partitions)),
        )


def transaction_partition_for(transactional_id: str, partitions: int) -> int:
    """The ``__transaction_state`` partition of ``transactional_id`` among ``partitions``:
    Kafka's ``Utils.abs(transactionalId.hashCode) % transactionTopicPartitionCount``
    (TransactionStateManager.partitionFor; Java's String.hashCode over UTF-16 code units)."""
    return partition_for(transactional_id, partitions)


def merge_listed(results: Iterable[ListTransactionsResult]) -> ListTransactionsResult:
    """ListTransactions over several coordinators (one per ``__transaction_state`` partition
    led here, as Kafka's TransactionStateManager.listTransactionStates walks them): the first
    error, the unknown state filters, every listed transaction sorted by transactional id."""
    error = ErrorCode.none
    unknown: tuple[str, ...] = ()
    listed: list[ListedTransaction] = []
    for result in results:
        if result.error is not ErrorCode.none and error is ErrorCode.none:
            error = result.error
        unknown = unknown or result.unknown_state_filters
        listed.extend(result.transaction_states)
    listed.sort(key=lambda entry: entry.transactional_id)
    return ListTransactionsResult(error, unknown, tuple(listed))


def topic_partitions(pairs: Iterable[tuple[str, int]]) -> list[TopicPartition]:
    """Convenience: ``[("t", 0), …]`` -> TopicPartitions."""
    return [TopicPartition(topic, partition) for topic, partition in pairs]
