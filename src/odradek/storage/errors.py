"""Errors raised by the storage layer; the broker maps each to a Kafka error code."""

# Named after Kafka's exceptions and error codes, not with an Error suffix.
# ruff: noqa: N818

from __future__ import annotations


class StorageError(Exception):
    """Base class for every storage error (KAFKA_STORAGE_ERROR when nothing more specific)."""


class OffsetOutOfRange(StorageError):
    """A fetch offset below the log start offset or above the log end offset."""

    def __init__(self, fetch_offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(f"offset {fetch_offset} is outside [{log_start_offset}, {log_end_offset}]")
        self.fetch_offset = fetch_offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class RecordBatchTooLarge(StorageError):
    """A batch larger than max.message.bytes (MESSAGE_TOO_LARGE / RECORD_LIST_TOO_LARGE)."""


class InvalidConfig(StorageError):
    """A topic configuration value that cannot be parsed or is out of range (INVALID_CONFIG)."""


class InvalidTopicName(StorageError):
    """A topic name Kafka would reject (INVALID_TOPIC_EXCEPTION)."""


class TopicAlreadyExists(StorageError):
    """CreateTopics for a name that exists (TOPIC_ALREADY_EXISTS)."""


class UnknownTopicOrPartition(StorageError):
    """A topic or partition this log manager does not hold (UNKNOWN_TOPIC_OR_PARTITION)."""


class InvalidPartitions(StorageError):
    """A partition count that is not allowed (INVALID_PARTITIONS)."""


class OutOfOrderSequence(StorageError):
    """A producer sequence that is neither the next one nor a retained duplicate.

    OUT_OF_ORDER_SEQUENCE_NUMBER: a gap, a sequence older than every retained batch, or a new
    epoch that does not start at sequence 0. Nothing was appended.
    """


class InvalidProducerEpoch(StorageError):
    """A batch or marker from an epoch older than the producer's current one (fenced).

    Produce answers INVALID_PRODUCER_EPOCH (Kafka since 2.7); WriteTxnMarkers the same.
    """


class InvalidTxnState(StorageError):
    """A non-transactional batch from a producer with an ongoing transaction (INVALID_TXN_STATE)."""


class TransactionCoordinatorFenced(StorageError):
    """A marker from a coordinator epoch older than one already seen for this producer.

    TRANSACTION_COORDINATOR_FENCED, as Kafka's ProducerAppendInfo.checkCoordinatorEpoch.
    """


class OffsetsOutOfOrder(StorageError):
    """A follower append whose offsets do not continue the log (nothing was appended).

    Kafka's UnexpectedAppendOffsetException (the first batch starts below the log end offset)
    and OffsetsOutOfOrderException (a batch does not start after the previous one ends): the
    replica fetcher must truncate or refetch, never write over or between existing offsets.
    """

    def __init__(self, message: str, first_offset: int, log_end_offset: int) -> None:
        super().__init__(message)
        self.first_offset = first_offset
        self.log_end_offset = log_end_offset


class CorruptRecord(StorageError):
    """A replicated batch that fails its length, magic or CRC check (CORRUPT_MESSAGE)."""
