"""Partition logs on local disk: segments, indexes, recovery, retention, topics.

Synchronous file I/O only; callers pass the current time in. Kafka's roles and names:
`LogSegment` (segment.py), `OffsetIndex` / `TimeIndex` (index.py), `PartitionLog` with its
LogLoader recovery (log.py), `ProducerStateManager` (producer_state.py), the compaction
`Cleaner` (cleaner.py) and `LogManager` (log_manager.py).
"""

from odradek.storage.cleaner import CleanResult
from odradek.storage.errors import (
    InvalidConfig,
    InvalidPartitions,
    InvalidProducerEpoch,
    InvalidTopicName,
    InvalidTxnState,
    OffsetOutOfRange,
    OutOfOrderSequence,
    RecordBatchTooLarge,
    StorageError,
    TopicAlreadyExists,
    TransactionCoordinatorFenced,
    UnknownTopicOrPartition,
)
from odradek.storage.log import AppendInfo, LogConfig, PartitionLog, ReadResult
from odradek.storage.log_manager import (
    LogManager,
    TopicMetadata,
    TopicPartition,
    log_config_from_overrides,
    validate_topic_name,
)
from odradek.storage.producer_state import (
    AppendOrigin,
    OngoingTransaction,
    ProducerStateView,
)

__all__ = [
    "AppendInfo",
    "AppendOrigin",
    "CleanResult",
    "InvalidConfig",
    "InvalidPartitions",
    "InvalidProducerEpoch",
    "InvalidTopicName",
    "InvalidTxnState",
    "LogConfig",
    "LogManager",
    "OffsetOutOfRange",
    "OngoingTransaction",
    "OutOfOrderSequence",
    "PartitionLog",
    "ProducerStateView",
    "ReadResult",
    "RecordBatchTooLarge",
    "StorageError",
    "TopicAlreadyExists",
    "TopicMetadata",
    "TopicPartition",
    "TransactionCoordinatorFenced",
    "UnknownTopicOrPartition",
    "log_config_from_overrides",
    "validate_topic_name",
]
