"""Transaction states, the table of valid previous states, and per-transactional-id metadata.

Follows Kafka's ``TransactionState`` / ``TransactionMetadata`` / ``TxnTransitMetadata``, for
transaction version 1 and 2 (KIP-890 part 2: every EndTxn bumps the producer epoch, and an empty
transaction may be aborted): a change is first *prepared* — validated
against :data:`VALID_PREVIOUS_STATES` and recorded as the pending state — and only *completed*
after the record describing it was appended to ``__transaction_state``. If the append fails the
pending transition is dropped and the metadata is unchanged.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import NamedTuple

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
#: Kafka's ``Short.MaxValue``.
MAX_PRODUCER_EPOCH = 32767
#: ``transaction.version`` levels: 0/1 is the classic protocol, 2 is KIP-890 part 2.
TRANSACTION_VERSION_1 = 1
TRANSACTION_VERSION_2 = 2


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class TransactionState(enum.Enum):
    """Kafka's transaction states: ``value`` is the status byte stored in the log."""

    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def kafka_name(self) -> str:
        """The name DescribeTransactions / ListTransactions report ("Empty", "PrepareCommit" …)."""
        return _KAFKA_NAMES[self]

    @classmethod
    def from_kafka_name(cls, name: str) -> TransactionState | None:
        return _BY_KAFKA_NAME.get(name)

    @property
    def expiration_allowed(self) -> bool:
        """Whether an idle transactional id may expire in this state (isExpirationAllowed)."""
        return self in (
            TransactionState.EMPTY,
            TransactionState.COMPLETE_COMMIT,
            TransactionState.COMPLETE_ABORT,
        )


_KAFKA_NAMES = {
    TransactionState.EMPTY: "Empty",
    TransactionState.ONGOING: "Ongoing",
    TransactionState.PREPARE_COMMIT: "PrepareCommit",
    TransactionState.PREPARE_ABORT: "PrepareAbort",
    TransactionState.COMPLETE_COMMIT: "CompleteCommit",
    TransactionState.COMPLETE_ABORT: "CompleteAbort",
    TransactionState.DEAD: "Dead",
    TransactionState.PREPARE_EPOCH_FENCE: "PrepareEpochFence",
}
_BY_KAFKA_NAME = {name: state for state, name in _KAFKA_NAMES.items()}

_S = TransactionState

#: For each state, the states it may be entered from (Kafka's ``validPreviousStates``; PrepareAbort
#: from Empty/Complete* is transaction version 2's abort of an empty transaction).
VALID_PREVIOUS_STATES: Mapping[TransactionState, frozenset[TransactionState]] = {
    _S.EMPTY: frozenset({_S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}),
    _S.ONGOING: frozenset({_S.ONGOING, _S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}),
    _S.PREPARE_COMMIT: frozenset({_S.ONGOING}),
    _S.PREPARE_ABORT: frozenset(
        {_S.ONGOING, _S.PREPARE_EPOCH_FENCE, _S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}
    ),
    _S.COMPLETE_COMMIT: frozenset({_S.PREPARE_COMMIT}),
    _S.COMPLETE_ABORT: frozenset({_S.PREPARE_ABORT}),
    _S.DEAD: frozenset({_S.EMPTY, _S.COMPLETE_ABORT, _S.COMPLETE_COMMIT}),
    _S.PREPARE_EPOCH_FENCE: frozenset({_S.ONGOING}),
}


def is_valid_transition(current: TransactionState, target: TransactionState) -> bool:
    return current in VALID_PREVIOUS_STATES[target]


def is_epoch_exhausted(producer_epoch: int) -> bool:
    """Kafka never hands out ``Short.MaxValue`` so that it can always fence once more."""
    return producer_epoch >= MAX_PRODUCER_EPOCH - 1


class InvalidTransitionError(Exception):
    """A transition the state table (or Kafka's completion checks) forbids: a coordinator bug."""


@dataclasses.dataclass(frozen=True, slots=True)
class TxnTransitMetadata:
    """The complete target of one transition; what a ``__transaction_state`` value encodes."""

    producer_id: int
    last_producer_id: int
    producer_epoch: int
    last_producer_epoch: int
    txn_timeout_ms: int
    state: TransactionState
    topic_partitions: frozenset[TopicPartition]
    txn_start_timestamp: int
    txn_last_update_timestamp: int
    #: Transaction version 2, an exhausted epoch: the producer id the transaction completes to.
    next_producer_id: int = NO_PRODUCER_ID
    #: The transaction version of the client driving the transaction (0 or 1: classic; 2).
    client_transaction_version: int = 0


@dataclasses.dataclass(slots=True)
class TransactionMetadata:
    """The coordinator's view of one transactional id (mutable; only this package mutates it)."""

    transactional_id: str
    producer_id: int
    last_producer_id: int
    producer_epoch: int
    last_producer_epoch: int
    txn_timeout_ms: int
    state: TransactionState
    topic_partitions: frozenset[TopicPartition]
    txn_start_timestamp: int
    txn_last_update_timestamp: int
    next_producer_id: int = NO_PRODUCER_ID
    client_transaction_version: int = 0
    #: The state of the transition waiting for its log append, if any.
    pending_state: TransactionState | None = None

    @classmethod
    def from_transit(
        cls, transactional_id: str, transit: TxnTransitMetadata
    ) -> TransactionMetadata:
        return cls(
            transactional_id=transactional_id,
            producer_id=transit.producer_id,
            last_producer_id=transit.last_producer_id,
            producer_epoch=transit.producer_epoch,
            last_producer_epoch=transit.last_producer_epoch,
            txn_timeout_ms=transit.txn_timeout_ms,
            state=transit.state,
            topic_partitions=transit.topic_partitions,
            txn_start_timestamp=transit.txn_start_timestamp,
            txn_last_update_timestamp=transit.txn_last_update_timestamp,
            next_producer_id=transit.next_producer_id,
            client_transaction_version=transit.client_transaction_version,
        )

    @property
    def pending_transition_in_progress(self) -> bool:
        return self.pending_state is not None

    @property
    def is_producer_epoch_exhausted(self) -> bool:
        return is_epoch_exhausted(self.producer_epoch)

    def durable_view(self) -> TxnTransitMetadata:
        """The fields a log record carries: used to compare live and replayed state."""
        return TxnTransitMetadata(
            producer_id=self.producer_id,
            last_producer_id=self.last_producer_id,
            producer_epoch=self.producer_epoch,
            last_producer_epoch=self.last_producer_epoch,
            txn_timeout_ms=self.txn_timeout_ms,
            state=self.state,
            topic_partitions=self.topic_partitions,
            txn_start_timestamp=self.txn_start_timestamp,
            txn_last_update_timestamp=self.txn_last_update_timestamp,
            next_producer_id=self.next_producer_id,
            client_transaction_version=self.client_transaction_version,
        )

    # -- prepare: validate against the table, set the pending state, return the target ----------

    def prepare_transition(
        self,
        state: TransactionState,
        *,
        producer_id: int | None = None,
        producer_epoch: int | None = None,
        last_producer_epoch: int | None = None,
        txn_timeout_ms: int | None = None,
        topic_partitions: Iterable[TopicPartition] | None = None,
        txn_start_timestamp: int | None = None,
        update_timestamp: int,
        last_producer_id: int | None = None,
        next_producer_id: int = NO_PRODUCER_ID,
        client_transaction_version: int | None = None,
    ) -> TxnTransitMetadata:
        """Validate ``self.state -> state`` and record ``state`` as pending; fields not given
        keep their current values. Raises :class:`InvalidTransitionError`."""
        if self.pending_state is not None:
            raise InvalidTransitionError(
                f"{self.transactional_id}: preparing {state.kafka_name} while "
                f"{self.pending_state.kafka_name} is pending"
            )
        if not is_valid_transition(self.state, state):
            raise InvalidTransitionError(
                f"{self.transactional_id}: {self.state.kafka_name} is not a valid previous "
                f"state of {state.kafka_name}"
            )
        new_producer_id = self.producer_id if producer_id is None else producer_id
        new_epoch = self.producer_epoch if producer_epoch is None else producer_epoch
        if new_producer_id < 0:
            raise InvalidTransitionError(f"illegal producer id {new_producer_id}")
        if state is not TransactionState.DEAD and not 0 <= new_epoch <= MAX_PRODUCER_EPOCH:
            raise InvalidTransitionError(f"illegal producer epoch {new_epoch}")
        transit = TxnTransitMetadata(
            producer_id=new_producer_id,
            # Kafka remembers the id in use before a move to Empty (InitProducerId) as the
            # "last" one, so that a retried InitProducerId after an id rotation is recognised.
            last_producer_id=(
                last_producer_id
                if last_producer_id is not None
                else self.producer_id
                if state is TransactionState.EMPTY
                else self.last_producer_id
            ),
            producer_epoch=new_epoch,
            last_producer_epoch=(
                self.last_producer_epoch if last_producer_epoch is None else last_producer_epoch
            ),
            txn_timeout_ms=self.txn_timeout_ms if txn_timeout_ms is None else txn_timeout_ms,
            state=state,
            topic_partitions=(
                self.topic_partitions if topic_partitions is None else frozenset(topic_partitions)
            ),
            txn_start_timestamp=(
                self.txn_start_timestamp if txn_start_timestamp is None else txn_start_timestamp
            ),
            txn_last_update_timestamp=update_timestamp,
            next_producer_id=next_producer_id,
            client_transaction_version=(
                self.client_transaction_version
                if client_transaction_version is None
                else client_transaction_version
            ),
        )
        self.pending_state = state
        return transit

    def prepare_increment_producer_epoch(
        self, txn_timeout_ms: int, expected_producer_epoch: int | None, now_ms: int
    ) -> TxnTransitMetadata | None:
        """InitProducerId's epoch bump; None means the caller is fenced (PRODUCER_FENCED)."""
        if self.is_producer_epoch_exhausted:
            raise InvalidTransitionError(f"{self.transactional_id}: producer epochs exhausted")
        bumped = self.producer_epoch + 1
        if expected_producer_epoch is None:
            next_epoch, last_epoch = bumped, NO_PRODUCER_EPOCH
        elif self.producer_epoch in (NO_PRODUCER_EPOCH, expected_producer_epoch):
            # KIP-360: the producer continues after an error and nobody else initialised since.
            next_epoch, last_epoch = bumped, self.producer_epoch
        elif expected_producer_epoch == self.last_producer_epoch:
            # A retry of a bump whose response was lost: answer the same epoch again.
            next_epoch, last_epoch = self.producer_epoch, self.last_producer_epoch
        else:
            return None
        return self.prepare_transition(
            TransactionState.EMPTY,
            producer_epoch=next_epoch,
            last_producer_epoch=last_epoch,
            txn_timeout_ms=txn_timeout_ms,
            topic_partitions=(),
            txn_start_timestamp=-1,
            update_timestamp=now_ms,
        )

    def prepare_producer_id_rotation(
        self, new_producer_id: int, txn_timeout_ms: int, now_ms: int, record_last_epoch: bool
    ) -> TxnTransitMetadata:
        return self.prepare_transition(
            TransactionState.EMPTY,
            producer_id=new_producer_id,
            producer_epoch=0,
            last_producer_epoch=self.producer_epoch if record_last_epoch else NO_PRODUCER_EPOCH,
            txn_timeout_ms=txn_timeout_ms,
            topic_partitions=(),
            txn_start_timestamp=-1,
            update_timestamp=now_ms,
        )

    def prepare_add_partitions(
        self,
        partitions: Iterable[TopicPartition],
        now_ms: int,
        client_transaction_version: int | None = None,
    ) -> TxnTransitMetadata:
        starts_transaction = self.state in (
            TransactionState.EMPTY,
            TransactionState.COMPLETE_COMMIT,
            TransactionState.COMPLETE_ABORT,
        )
        return self.prepare_transition(
            TransactionState.ONGOING,
            topic_partitions=self.topic_partitions | frozenset(partitions),
            txn_start_timestamp=now_ms if starts_transaction else self.txn_start_timestamp,
            update_timestamp=now_ms,
            client_transaction_version=client_transaction_version,
        )

    def prepare_abort_or_commit(self, commit: bool, now_ms: int) -> TxnTransitMetadata:
        state = TransactionState.PREPARE_COMMIT if commit else TransactionState.PREPARE_ABORT
        return self.prepare_transition(state, update_timestamp=now_ms)

    def prepare_end_with_epoch_bump(
        self, commit: bool, next_producer_id: int, now_ms: int
    ) -> TxnTransitMetadata:
        """Transaction version 2's EndTxn (Kafka's prepareAbortOrCommit with an epoch bump): the
        epoch goes up by one, so the markers and the producer's next transaction carry a new
        epoch and nothing of this transaction can land in the next. ``next_producer_id`` (an
        exhausted epoch) is what :meth:`prepare_complete` moves to, with epoch 0. An abort from
        Empty/Complete* (nothing was added) starts and ends its transaction at ``now_ms``."""
        state = TransactionState.PREPARE_COMMIT if commit else TransactionState.PREPARE_ABORT
        empty = self.state is not TransactionState.ONGOING
        return self.prepare_transition(
            state,
            producer_epoch=min(self.producer_epoch + 1, MAX_PRODUCER_EPOCH),
            last_producer_epoch=self.producer_epoch,
            txn_start_timestamp=now_ms if empty else None,
            update_timestamp=now_ms,
            next_producer_id=next_producer_id,
            client_transaction_version=TRANSACTION_VERSION_2,
        )

    def prepare_fence_and_abort(self, now_ms: int) -> TxnTransitMetadata:
        """Kafka's epoch fence: Ongoing -> PrepareEpochFence -> PrepareAbort with the epoch bumped.

        PrepareEpochFence is never written to the log: only the PrepareAbort carrying the bumped
        epoch is, so a failed append leaves the epoch unbumped (Kafka needs
        ``hasFailedEpochFence`` for the same case because it bumps in memory first).
        """
        if self.producer_epoch >= MAX_PRODUCER_EPOCH:
            raise InvalidTransitionError(
                f"{self.transactional_id}: cannot fence epoch Short.MaxValue"
            )
        self.prepare_transition(TransactionState.PREPARE_EPOCH_FENCE, update_timestamp=now_ms)
        self.pending_state = None
        fenced_from = self.state
        self.state = TransactionState.PREPARE_EPOCH_FENCE
        try:
            return self.prepare_transition(
                TransactionState.PREPARE_ABORT,
                producer_epoch=self.producer_epoch + 1,
                last_producer_epoch=NO_PRODUCER_EPOCH,
                update_timestamp=now_ms,
            )
        finally:
            # The live state stays as it was until the PrepareAbort record is appended.
            self.state = fenced_from

    def prepare_complete(self, now_ms: int) -> TxnTransitMetadata:
        if self.state is TransactionState.PREPARE_COMMIT:
            state = TransactionState.COMPLETE_COMMIT
        elif self.state is TransactionState.PREPARE_ABORT:
            state = TransactionState.COMPLETE_ABORT
        else:
            raise InvalidTransitionError(
                f"{self.transactional_id}: cannot complete from {self.state.kafka_name}"
            )
        if self.next_producer_id != NO_PRODUCER_ID:
            # Transaction version 2 with an exhausted epoch: the producer continues under a
            # new id at epoch 0 (the client saw MAX-1 then 0).
            return self.prepare_transition(
                state,
                producer_id=self.next_producer_id,
                producer_epoch=0,
                last_producer_id=self.producer_id,
                topic_partitions=(),
                update_timestamp=now_ms,
            )
        return self.prepare_transition(state, topic_partitions=(), update_timestamp=now_ms)

    def prepare_dead(self) -> TxnTransitMetadata:
        return self.prepare_transition(
            TransactionState.DEAD,
            topic_partitions=(),
            update_timestamp=self.txn_last_update_timestamp,
        )

    # -- complete / abort -------------------------------------------------------------------------

    def complete_transition(self, transit: TxnTransitMetadata) -> None:
        """Apply a prepared transition after its record was appended (Kafka's
        ``completeTransitionTo``, with its consistency checks)."""
        target = self.pending_state
        if target is None or target is not transit.state:
            raise InvalidTransitionError(
                f"{self.transactional_id}: completing {transit.state.kafka_name} but pending is "
                f"{target.kafka_name if target else None}"
            )
        same_producer = (
            transit.producer_id == self.producer_id
            and transit.producer_epoch == self.producer_epoch
        )
        if target is TransactionState.EMPTY:
            valid_bump = transit.producer_epoch == self.producer_epoch + 1 or (
                transit.producer_epoch == 0 and transit.producer_id != self.producer_id
            )
            ok = (
                (transit.producer_epoch == self.producer_epoch or valid_bump)
                and not transit.topic_partitions
                and transit.txn_start_timestamp == -1
            )
        elif target is TransactionState.ONGOING:
            ok = (
                same_producer
                and self.topic_partitions <= transit.topic_partitions
                and transit.txn_timeout_ms == self.txn_timeout_ms
            )
        elif target in (TransactionState.PREPARE_COMMIT, TransactionState.PREPARE_ABORT):
            epoch_bump = transit.client_transaction_version >= TRANSACTION_VERSION_2
            # The fence path (and every transaction version 2 EndTxn) bumps the epoch by one.
            epoch_ok = same_producer or (
                (target is TransactionState.PREPARE_ABORT or epoch_bump)
                and transit.producer_id == self.producer_id
                and transit.producer_epoch in (self.producer_epoch + 1, MAX_PRODUCER_EPOCH)
            )
            empty_abort = (
                epoch_bump
                and target is TransactionState.PREPARE_ABORT
                and self.state is not TransactionState.ONGOING
            )
            ok = (
                epoch_ok
                and transit.topic_partitions == self.topic_partitions
                and transit.txn_timeout_ms == self.txn_timeout_ms
                and (transit.txn_start_timestamp == self.txn_start_timestamp or empty_abort)
            )
        elif target in (TransactionState.COMPLETE_COMMIT, TransactionState.COMPLETE_ABORT):
            rotated = (
                self.next_producer_id != NO_PRODUCER_ID
                and transit.producer_id == self.next_producer_id
                and transit.producer_epoch == 0
            )
            ok = (
                (same_producer or rotated)
                and transit.txn_timeout_ms == self.txn_timeout_ms
                and transit.txn_start_timestamp != -1
            )
        else:
            # PrepareEpochFence is never completed (it is immediately followed by PrepareAbort)
            # and Dead is completed by removing the transactional id, not by storing it.
            ok = False
        if not ok or transit.txn_last_update_timestamp < 0:
            raise InvalidTransitionError(
                f"{self.transactional_id}: inconsistent transition from {self} to {transit}"
            )
        self.producer_id = transit.producer_id
        self.last_producer_id = transit.last_producer_id
        self.producer_epoch = transit.producer_epoch
        self.last_producer_epoch = transit.last_producer_epoch
        self.txn_timeout_ms = transit.txn_timeout_ms
        self.topic_partitions = transit.topic_partitions
        self.txn_start_timestamp = transit.txn_start_timestamp
        self.txn_last_update_timestamp = transit.txn_last_update_timestamp
        self.next_producer_id = transit.next_producer_id
        self.client_transaction_version = transit.client_transaction_version
        self.state = target
        self.pending_state = None

    def abort_transition(self) -> None:
        """The append failed: forget the pending transition; the metadata is unchanged."""
        self.pending_state = None
