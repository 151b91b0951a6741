"""The transaction coordinator: Kafka's transaction state machine, deterministic and I/O-free.

Behaviour follows Apache Kafka's TransactionCoordinator / TransactionMetadata /
TransactionStateManager for *transaction version 1* (EndTxn v0-v4, AddPartitionsToTxn v0-v5;
KIP-890 part 2 is not implemented). Time comes in as ``now_ms``; nothing here reads a clock.

Life cycle (the broker's side)
------------------------------
::

    coordinator = TransactionCoordinator(offsets_partition_for, TransactionConfig(...))
    for record in read(__transaction_state):   # TransactionRecord(key, value) in log order
        coordinator.replay(record)
    start, records = coordinator.start(now_ms) # coordinator epoch + 1; append `records`, then
    coordinator.write_succeeded(start.write_id)#   write start.markers (unfinished PrepareX txns)

Every mutating call returns ``(result, records)``. If ``records`` is non-empty then
``result.write_id`` is set and the broker must:

1. append ``records`` to ``__transaction_state`` as **one batch** (acks=all, uncompressed);
2. call ``write_succeeded(write_id)`` — or ``error = write_failed(write_id, append_error)``, which
   drops the prepared transition (state unchanged) and returns the code to answer with;
3. only then send the response / act on the markers in the result.

While a write for a transactional id is pending, other requests for it get
CONCURRENT_TRANSACTIONS (Kafka's pending state); clients retry.

Operations
----------
``init_producer_id(transactional_id, transaction_timeout_ms, now_ms, expected_producer_id=-1,
expected_producer_epoch=-1) -> (InitProducerIdResult, records)``
    ``None`` id: a fresh producer id, epoch 0. Otherwise: new id → fresh producer id, epoch 0;
    known id → epoch + 1 (fences zombies); epoch exhausted (>= 32766) → new producer id, epoch
    0. An Ongoing transaction is fenced first: result CONCURRENT_TRANSACTIONS **with**
    ``result.markers`` (ABORT at old epoch + 1) to write after the append, then
    ``markers_written``; the client retries. PrepareCommit/PrepareAbort → CONCURRENT_TRANSACTIONS;
    KIP-360 mismatch → PRODUCER_FENCED; timeout <= 0 or > ``transaction.max.timeout.ms`` →
    INVALID_TRANSACTION_TIMEOUT; empty id or half-given expected id/epoch → INVALID_REQUEST.
``add_partitions_to_txn(transactional_id, producer_id, producer_epoch, partitions, now_ms,
verify_only=False) -> (AddPartitionsToTxnResult, records)``
    ``result.error`` (NONE or the error of every partition) and ``result.partition_errors``.
    Unknown id / other producer id → INVALID_PRODUCER_ID_MAPPING; other epoch →
    PRODUCER_FENCED; PrepareX or pending → CONCURRENT_TRANSACTIONS; partitions already in an
    Ongoing transaction → NONE without records. ``verify_only`` (v4 broker-side check) never
    writes: per partition NONE or TRANSACTION_ABORTABLE (not in the transaction).
    The handler validates topics (UNKNOWN_TOPIC_OR_PARTITION, OPERATION_NOT_ATTEMPTED) first.
``add_offsets_to_txn(transactional_id, producer_id, producer_epoch, group_id, now_ms)``
    Adds ``("__consumer_offsets", offsets_partition_for(group_id))``; same errors.
``end_txn(transactional_id, producer_id, producer_epoch, commit, now_ms)``
    -> ``(EndTxnResult, records)``.
    Ongoing → PrepareCommit/PrepareAbort record; after the append answer NONE and write
    ``result.markers`` to every partition, then call ``markers_written(markers, now_ms)``
    (→ CompleteCommit/CompleteAbort record; if that append fails call it again later).
    Retries: same outcome already Complete → NONE; same outcome still Prepare →
    CONCURRENT_TRANSACTIONS (Kafka: the client retries until the markers are done); the
    opposite outcome or Empty → INVALID_TXN_STATE.
``poll(now_ms) -> (PollResult, records)`` and ``next_deadline() -> int | None``
    Aborts Ongoing transactions with ``start + timeout < now`` (epoch + 1: the producer is
    fenced, as Kafka's abortTimedOutTransactions) → ``result.aborts`` markers to write; writes
    tombstones for ids idle in Empty/Complete* for ``transactional.id.expiration.ms``.
``describe_transactions(ids)`` / ``list_transactions(state_filters, producer_id_filters,
duration_filter_ms, now_ms)``
    DescribeTransactions / ListTransactions entries; state names as Kafka's ("Ongoing", …).

Error codes are kio's ``ErrorCode``. Results say PRODUCER_FENCED; map it per request version
with :func:`error_for_version` / :func:`fenced_error_for` (INVALID_PRODUCER_EPOCH before
InitProducerId v4, AddPartitionsToTxn v2, AddOffsetsToTxn v2, EndTxn v2).

Records are described in :mod:`odradek.coordinator.txn.records`; producer ids in
:mod:`odradek.coordinator.txn.producer_ids`; the state table in
:mod:`odradek.coordinator.txn.state`.
"""

from odradek.coordinator.txn.coordinator import (
    CONSUMER_OFFSETS_TOPIC,
    AddOffsetsToTxnResult,
    AddPartitionsToTxnResult,
    CoordinatorSnapshot,
    DescribedTransaction,
    EndTxnResult,
    InitProducerIdResult,
    ListedTransaction,
    ListTransactionsResult,
    MarkersWrittenResult,
    PollResult,
    StartResult,
    TransactionConfig,
    TransactionCoordinator,
    TxnMarkers,
    merge_listed,
    transaction_partition_for,
)
from odradek.coordinator.txn.errors import (
    coordinator_error_for_append_error,
    error_for_version,
    fenced_error_for,
)
from odradek.coordinator.txn.producer_ids import (
    ControllerProducerIdManager,
    ProducerIdManager,
    ProducerIdsExhaustedError,
    ProducerIdsUnavailableError,
)
from odradek.coordinator.txn.records import (
    CoordinatorEpochEntry,
    DecodedRecord,
    ProducerIdBlockEntry,
    RecordDecodeError,
    TransactionLogEntry,
    TransactionRecord,
    UnknownEntry,
    decode_record,
    decode_transaction_log_value,
    encode_coordinator_epoch,
    encode_producer_id_block,
    encode_transaction_log_key,
    encode_transaction_log_value,
    transaction_log_record,
)
from odradek.coordinator.txn.state import (
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    TRANSACTION_VERSION_1,
    TRANSACTION_VERSION_2,
    VALID_PREVIOUS_STATES,
    InvalidTransitionError,
    TopicPartition,
    TransactionMetadata,
    TransactionState,
    TxnTransitMetadata,
    is_valid_transition,
)

__all__ = [
    "CONSUMER_OFFSETS_TOPIC",
    "NO_PRODUCER_EPOCH",
    "NO_PRODUCER_ID",
    "TRANSACTION_VERSION_1",
    "TRANSACTION_VERSION_2",
    "VALID_PREVIOUS_STATES",
    "AddOffsetsToTxnResult",
    "AddPartitionsToTxnResult",
    "ControllerProducerIdManager",
    "CoordinatorEpochEntry",
    "CoordinatorSnapshot",
    "DecodedRecord",
    "DescribedTransaction",
    "EndTxnResult",
    "InitProducerIdResult",
    "InvalidTransitionError",
    "ListTransactionsResult",
    "ListedTransaction",
    "MarkersWrittenResult",
    "PollResult",
    "ProducerIdBlockEntry",
    "ProducerIdManager",
    "ProducerIdsExhaustedError",
    "ProducerIdsUnavailableError",
    "RecordDecodeError",
    "StartResult",
    "TopicPartition",
    "TransactionConfig",
    "TransactionCoordinator",
    "TransactionLogEntry",
    "TransactionMetadata",
    "TransactionRecord",
    "TransactionState",
    "TxnMarkers",
    "TxnTransitMetadata",
    "UnknownEntry",
    "coordinator_error_for_append_error",
    "decode_record",
    "decode_transaction_log_value",
    "encode_coordinator_epoch",
    "encode_producer_id_block",
    "encode_transaction_log_key",
    "encode_transaction_log_value",
    "error_for_version",
    "fenced_error_for",
    "is_valid_transition",
    "merge_listed",
    "transaction_log_record",
    "transaction_partition_for",
]
