"""Partition logs on local disk: segments, indexes, recovery, retention, topics.

Synchronous file I/O only; callers pass the current time in. Kafka's roles and names:
`LogSegment` (segment.py), `OffsetIndex` / `TimeIndex` (index.py), `PartitionLog` with its
LogLoader recovery (log.py) and `LogManager` (log_manager.py).
"""

from odradek.storage.errors import (
    InvalidConfig,
    InvalidPartitions,
    InvalidTopicName,
    OffsetOutOfRange,
    RecordBatchTooLarge,
    StorageError,
    TopicAlreadyExists,
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

__all__ = [
    "AppendInfo",
    "InvalidConfig",
    "InvalidPartitions",
    "InvalidTopicName",
    "LogConfig",
    "LogManager",
    "OffsetOutOfRange",
    "PartitionLog",
    "ReadResult",
    "RecordBatchTooLarge",
    "StorageError",
    "TopicAlreadyExists",
    "TopicMetadata",
    "TopicPartition",
    "UnknownTopicOrPartition",
    "log_config_from_overrides",
    "validate_topic_name",
]
