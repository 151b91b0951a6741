"""LogManager: the topics and partition logs of one data directory (`log.dirs`).

Topic metadata (name, topic id, partition count, config overrides) lives in
`<data>/__odradek_meta/topics/<name>.json`, replaced atomically; each partition's log lives in
`<data>/<topic>-<partition>/` with Kafka's `partition.metadata` naming its topic id. Deleting a
topic first marks its metadata deleted, so a crash half-way finishes the deletion on the next
open instead of resurrecting a partial topic.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from odradek.determinism import random_uuid
from odradek.storage._files import fsync_directory, write_file_atomically
from odradek.storage.cleaner import CleanResult
from odradek.storage.errors import (
    InvalidConfig,
    InvalidPartitions,
    InvalidTopicName,
    StorageError,
    TopicAlreadyExists,
    UnknownTopicOrPartition,
)
from odradek.storage.lazy_files import OS_FILES, SegmentFiles
from odradek.storage.log import LogConfig, PartitionLog

__all__ = [
    "InvalidConfig",
    "InvalidPartitions",
    "InvalidTopicName",
    "LogManager",
    "TopicAlreadyExists",
    "TopicMetadata",
    "TopicPartition",
    "UnknownTopicOrPartition",
    "kafka_uuid_string",
    "log_config_from_overrides",
    "validate_topic_name",
]

METADATA_DIRECTORY_NAME = "__odradek_meta"
PARTITION_METADATA_FILE_NAME = "partition.metadata"
MAX_TOPIC_NAME_LENGTH = 249
_LEGAL_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]+")
_METADATA_VERSION = 0
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    """A topic as stored: `config` holds only the overrides, as the user gave them."""

    name: str
    topic_id: uuid.UUID
    partitions: int
    config: Mapping[str, str]


def kafka_uuid_string(value: uuid.UUID) -> str:
    """A topic id as Kafka prints it: URL-safe base64 of the 16 bytes, no padding."""
    return base64.urlsafe_b64encode(value.bytes).rstrip(b"=").decode("ascii")


def validate_topic_name(name: str) -> None:
    """Kafka's Topic.validate: raise InvalidTopicName for a name a broker would refuse."""
    if not name:
        raise InvalidTopicName("Topic name is illegal, it can't be empty")
    if name in (".", ".."):
        raise InvalidTopicName('Topic name cannot be "." or ".."')
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise InvalidTopicName(
            f"Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LENGTH} "
            f"characters, topic name: {name}"
        )
    if not _LEGAL_TOPIC_NAME.fullmatch(name):
        raise InvalidTopicName(
            f'Topic name "{name}" is illegal, it contains a character other than '
            "ASCII alphanumerics, '.', '_' and '-'"
        )


def _parse_long(key: str, value: str, minimum: int = _INT64_MIN, maximum: int = _INT64_MAX) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise InvalidConfig(
            f"Invalid value {value} for configuration {key}: Not a number of type LONG"
        ) from None
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise InvalidConfig(f"Invalid value {value} for configuration {key}: out of range")
    if number < minimum:
        raise InvalidConfig(
            f"Invalid value {value} for configuration {key}: Value must be at least {minimum}"
        )
    if number > maximum:
        raise InvalidConfig(
            f"Invalid value {value} for configuration {key}: Value must be no more than {maximum}"
        )
    return number


def _int_parser(minimum: int, maximum: int = _INT64_MAX) -> Callable[[str, str], Any]:
    def parse(key: str, value: str) -> int:
        return _parse_long(key, value, minimum, maximum)

    return parse


def _parse_timestamp_type(key: str, value: str) -> str:
    value = value.strip()
    if value not in ("CreateTime", "LogAppendTime"):
        raise InvalidConfig(
            f"Invalid value {value} for configuration {key}: String must be one of: "
            "CreateTime, LogAppendTime"
        )
    return value


def _parse_cleanup_policy(key: str, value: str) -> str:
    """compact, delete, both, or empty: an empty policy neither compacts nor deletes by time
    or size (delete with infinite retention; DeleteRecords still applies), as in Kafka's
    UnifiedLog.deleteOldSegments."""
    policies = [policy.strip() for policy in value.split(",") if policy.strip()]
    for policy in policies:
        if policy not in ("compact", "delete"):
            raise InvalidConfig(
                f"Invalid value {policy} for configuration {key}: "
                "String must be one of: compact, delete"
            )
    return ",".join(policies)


_COMPRESSION_TYPES = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")


def _parse_compression_type(key: str, value: str) -> str:
    # Kafka's ConfigDef trims strings and ValidString.in compares case-sensitively.
    value = value.strip()
    if value not in _COMPRESSION_TYPES:
        raise InvalidConfig(
            f"Invalid value {value} for configuration {key}: String must be one of: "
            + ", ".join(_COMPRESSION_TYPES)
        )
    return value


def _parse_gzip_level(key: str, value: str) -> int:
    level = _parse_long(key, value)
    if level != -1 and not 1 <= level <= 9:
        raise InvalidConfig(f"Invalid value {value} for configuration {key}: [1,...,9] or -1")
    return level


def _parse_ratio(key: str, value: str) -> float:
    try:
        ratio = float(value.strip())
    except ValueError:
        raise InvalidConfig(
            f"Invalid value {value} for configuration {key}: Not a number of type DOUBLE"
        ) from None
    if not 0 <= ratio <= 1:
        raise InvalidConfig(
            f"Invalid value {value} for configuration {key}: Value must be between 0 and 1"
        )
    return ratio


# Kafka's topic-level config name -> (LogConfig field, parser with Kafka's validators).
_TOPIC_CONFIGS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "segment.bytes": ("segment_bytes", _int_parser(14, _INT32_MAX)),
    "segment.ms": ("segment_ms", _int_parser(1)),
    "segment.index.bytes": ("segment_index_bytes", _int_parser(4, _INT32_MAX)),
    "index.interval.bytes": ("index_interval_bytes", _int_parser(0, _INT32_MAX)),
    "retention.ms": ("retention_ms", _int_parser(-1)),
    "retention.bytes": ("retention_bytes", _int_parser(_INT64_MIN)),
    "flush.messages": ("flush_messages", _int_parser(1)),
    "flush.ms": ("flush_ms", _int_parser(0)),
    "max.message.bytes": ("max_message_bytes", _int_parser(0, _INT32_MAX)),
    "message.timestamp.type": ("message_timestamp_type", _parse_timestamp_type),
    "message.timestamp.before.max.ms": ("message_timestamp_before_max_ms", _int_parser(0)),
    "message.timestamp.after.max.ms": ("message_timestamp_after_max_ms", _int_parser(0)),
    "cleanup.policy": ("cleanup_policy", _parse_cleanup_policy),
    "min.insync.replicas": ("min_insync_replicas", _int_parser(1, _INT32_MAX)),
    "delete.retention.ms": ("delete_retention_ms", _int_parser(0)),
    "min.compaction.lag.ms": ("min_compaction_lag_ms", _int_parser(0)),
    "min.cleanable.dirty.ratio": ("min_cleanable_dirty_ratio", _parse_ratio),
    "compression.type": ("compression_type", _parse_compression_type),
    "compression.gzip.level": ("compression_gzip_level", _parse_gzip_level),
    "compression.lz4.level": ("compression_lz4_level", _int_parser(1, 17)),
    "compression.zstd.level": ("compression_zstd_level", _int_parser(-131072, 22)),
}
assert {field for field, _ in _TOPIC_CONFIGS.values()} == {f.name for f in fields(LogConfig)}


def log_config_from_overrides(default: LogConfig, overrides: Mapping[str, str]) -> LogConfig:
    """The LogConfig for a topic: `default` with its overrides applied.

    Raises InvalidConfig for a value Kafka would refuse. Keys storage does not know are
    ignored (they are still stored with the topic and returned by `topics()`).
    """
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        known = _TOPIC_CONFIGS.get(key)
        if known is None:
            continue
        if value is None:
            raise InvalidConfig(f"Invalid value null for configuration {key}")
        field, parse = known
        changes[field] = parse(key, value)
    return replace(default, **changes) if changes else default


def _metadata_bytes(topic: TopicMetadata, deleted: bool = False) -> bytes:
    document = {
        "version": _METADATA_VERSION,
        "name": topic.name,
        "topic_id": str(topic.topic_id),
        "partitions": topic.partitions,
        "config": dict(topic.config),
        "deleted": deleted,
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def _parse_metadata(data: bytes) -> tuple[TopicMetadata, bool]:
    document = json.loads(data)
    if document.get("version") != _METADATA_VERSION:
        raise StorageError(f"unsupported topic metadata version {document.get('version')}")
    topic = TopicMetadata(
        name=str(document["name"]),
        topic_id=uuid.UUID(document["topic_id"]),
        partitions=int(document["partitions"]),
        config=MappingProxyType({str(k): str(v) for k, v in document["config"].items()}),
    )
    return topic, bool(document.get("deleted", False))


def _partition_metadata_bytes(topic_id: uuid.UUID) -> bytes:
    return f"version: 0\ntopic_id: {kafka_uuid_string(topic_id)}\n".encode()


def _read_partition_topic_id(directory: Path) -> str | None:
    try:
        text = (directory / PARTITION_METADATA_FILE_NAME).read_text()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "topic_id":
            return value.strip()
    return None


class LogManager:
    """Every topic and partition log under one data directory.

    Used from one thread, except that `flush_all` and `PartitionLog.flush` may run on others.
    """

    def __init__(
        self, data_dir: Path, default_config: LogConfig, files: SegmentFiles = OS_FILES
    ) -> None:
        self.data_dir = data_dir
        self._default_config = default_config
        # The file layer every partition's segment logs go through (lazy_files.py).
        self.files = files
        self._metadata_directory = data_dir / METADATA_DIRECTORY_NAME / "topics"
        self._topics: dict[str, TopicMetadata] = {}
        self._topics_view = MappingProxyType(self._topics)
        self._topics_by_id: dict[uuid.UUID, TopicMetadata] = {}
        self._configs: dict[str, LogConfig] = {}
        self._logs: dict[TopicPartition, PartitionLog] = {}
        self._closed = False

    @classmethod
    def open(
        cls,
        data_dir: Path,
        default_config: LogConfig,
        now_ms: int,
        files: SegmentFiles = OS_FILES,
    ) -> LogManager:
        """Open (or create) the data directory and recover every partition log in it.

        Finishes deleting topics whose deletion was interrupted. `files`: see lazy_files.py.
        """
        manager = cls(data_dir, default_config, files)
        manager._metadata_directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(manager._metadata_directory.iterdir()):
            if path.name.endswith(".tmp"):
                path.unlink()
                continue
            if path.suffix != ".json":
                continue
            topic, deleted = _parse_metadata(path.read_bytes())
            if deleted:
                manager._remove_partition_directories(topic.name, topic.partitions)
                path.unlink()
                continue
            config = log_config_from_overrides(default_config, topic.config)
            manager._register(topic, config)
            for partition in range(topic.partitions):
                manager._open_partition(topic, partition, config, now_ms, fresh=False)
        fsync_directory(manager._metadata_directory)
        return manager

    # -- queries -----------------------------------------------------------------------------

    @property
    def default_config(self) -> LogConfig:
        return self._default_config

    def topics(self) -> Mapping[str, TopicMetadata]:
        """A read-only live view of every topic by name."""
        return self._topics_view

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMetadata | None:
        return self._topics_by_id.get(topic_id)

    def topic_config(self, name: str) -> LogConfig:
        """The effective LogConfig of a topic (defaults plus its overrides)."""
        config = self._configs.get(name)
        if config is None:
            raise UnknownTopicOrPartition(f"unknown topic {name}")
        return config

    def log(self, topic: str, partition: int) -> PartitionLog | None:
        return self._logs.get(TopicPartition(topic, partition))

    def all_logs(self) -> dict[TopicPartition, PartitionLog]:
        return dict(self._logs)

    def logs_due_for_flush(self, now_ms: int) -> list[PartitionLog]:
        """Logs whose oldest unflushed append is at least their flush.ms old."""
        return [log for log in self._logs.values() if log.flush_due(now_ms)]

    # -- topic changes -----------------------------------------------------------------------

    def validate_topic(self, name: str, config_overrides: Mapping[str, str]) -> LogConfig:
        """Check a name and overrides as create_topic would; returns the effective config."""
        validate_topic_name(name)
        return log_config_from_overrides(self._default_config, config_overrides)

    def create_topic(
        self,
        name: str,
        partitions: int,
        config_overrides: Mapping[str, str],
        topic_id: uuid.UUID | None = None,
    ) -> TopicMetadata:
        config = self.validate_topic(name, config_overrides)
        if name in self._topics:
            raise TopicAlreadyExists(f"Topic '{name}' already exists.")
        collision_key = name.replace(".", "_")
        for existing in self._topics:
            if existing.replace(".", "_") == collision_key:
                raise InvalidTopicName(f"Topic '{name}' collides with existing topic: {existing}")
        if partitions < 1:
            raise InvalidPartitions("Number of partitions must be larger than 0.")
        if topic_id is None:
            topic_id = random_uuid()
        if topic_id.int == 0 or topic_id in self._topics_by_id:
            raise StorageError(f"topic id {topic_id} is zero or already in use")
        topic = TopicMetadata(
            name=name,
            topic_id=topic_id,
            partitions=partitions,
            config=MappingProxyType(dict(config_overrides)),
        )
        self._write_metadata(topic)
        self._register(topic, config)
        for partition in range(partitions):
            # An empty new log does not look at the clock.
            self._open_partition(topic, partition, config, now_ms=0, fresh=True)
        return topic

    def create_partitions(self, name: str, new_total: int) -> TopicMetadata:
        topic = self._existing(name)
        if new_total <= topic.partitions:
            raise InvalidPartitions(
                f"Topic currently has {topic.partitions} partitions, "
                f"{new_total} would not be an increase."
            )
        grown = replace(topic, partitions=new_total)
        self._write_metadata(grown)
        self._register(grown, self._configs[name])
        for partition in range(topic.partitions, new_total):
            self._open_partition(grown, partition, self._configs[name], now_ms=0, fresh=True)
        return grown

    def alter_topic_config(self, name: str, overrides: Mapping[str, str]) -> TopicMetadata:
        """Replace a topic's overrides (all of them) and apply them to its logs."""
        topic = self._existing(name)
        config = log_config_from_overrides(self._default_config, overrides)
        altered = replace(topic, config=MappingProxyType(dict(overrides)))
        self._write_metadata(altered)
        self._register(altered, config)
        for partition in range(topic.partitions):
            log = self._logs.get(TopicPartition(name, partition))
            if log is not None:
                log.update_config(config)
        return altered

    def set_default_config(self, default_config: LogConfig) -> None:
        """New broker-level defaults (dynamic `log.*` broker configs): every topic's effective
        config is rebuilt from them and its overrides, and applied to its logs."""
        for topic in self._topics.values():
            log_config_from_overrides(default_config, topic.config)  # raises before any change
        self._default_config = default_config
        for name, topic in list(self._topics.items()):
            config = log_config_from_overrides(default_config, topic.config)
            self._register(topic, config)
            for partition in range(topic.partitions):
                log = self._logs.get(TopicPartition(name, partition))
                if log is not None:
                    log.update_config(config)

    def delete_topic(self, name: str) -> None:
        topic = self._existing(name)
        path = self._metadata_path(name)
        write_file_atomically(path, _metadata_bytes(topic, deleted=True))
        del self._topics[name]
        del self._topics_by_id[topic.topic_id]
        del self._configs[name]
        for partition in range(topic.partitions):
            log = self._logs.pop(TopicPartition(name, partition), None)
            if log is not None:
                log.delete()
        self._remove_partition_directories(name, topic.partitions)
        path.unlink()
        fsync_directory(self._metadata_directory)

    # -- whole-directory operations ----------------------------------------------------------

    def enforce_retention(self, now_ms: int) -> int:
        """Apply retention to every log; returns the bytes deleted."""
        return sum(log.enforce_retention(now_ms) for log in list(self._logs.values()))

    def clean(self, now_ms: int, force: bool = False) -> dict[TopicPartition, CleanResult]:
        """Compact every log whose cleanup.policy includes compact; returns what was done,
        for the logs where something was."""
        results: dict[TopicPartition, CleanResult] = {}
        for topic_partition, log in list(self._logs.items()):
            if log.config.compacts:
                result = log.clean(now_ms, force)
                if result.cleaned:
                    results[topic_partition] = result
        return results

    def expire_producers(self, now_ms: int, producer_id_expiration_ms: int) -> int:
        """Apply producer.id.expiration.ms to every log; returns producers removed."""
        return sum(
            log.expire_producers(now_ms, producer_id_expiration_ms)
            for log in list(self._logs.values())
        )

    def flush_all(self) -> None:
        for log in list(self._logs.values()):
            log.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for log in self._logs.values():
            log.close()

    # -- internals ---------------------------------------------------------------------------

    def _existing(self, name: str) -> TopicMetadata:
        topic = self._topics.get(name)
        if topic is None:
            raise UnknownTopicOrPartition(f"This server does not host this topic: {name}")
        return topic

    def _register(self, topic: TopicMetadata, config: LogConfig) -> None:
        self._topics[topic.name] = topic
        self._topics_by_id[topic.topic_id] = topic
        self._configs[topic.name] = config

    def _metadata_path(self, name: str) -> Path:
        return self._metadata_directory / f"{name}.json"

    def _write_metadata(self, topic: TopicMetadata) -> None:
        write_file_atomically(self._metadata_path(topic.name), _metadata_bytes(topic))

    def _partition_directory(self, name: str, partition: int) -> Path:
        return self.data_dir / f"{name}-{partition}"

    def _remove_partition_directories(self, name: str, partitions: int) -> None:
        for partition in range(partitions):
            shutil.rmtree(self._partition_directory(name, partition), ignore_errors=True)
        fsync_directory(self.data_dir)

    def _open_partition(
        self, topic: TopicMetadata, partition: int, config: LogConfig, now_ms: int, fresh: bool
    ) -> None:
        directory = self._partition_directory(topic.name, partition)
        expected_id = kafka_uuid_string(topic.topic_id)
        found_id = _read_partition_topic_id(directory)
        if found_id is not None and found_id != expected_id:
            if not fresh:
                raise StorageError(
                    f"{directory} belongs to topic id {found_id}, expected {expected_id}"
                )
            # Left behind by an earlier topic of the same name: not this topic's data.
            shutil.rmtree(directory)
        elif fresh and directory.exists():
            shutil.rmtree(directory)
        log = PartitionLog.open(directory, config, now_ms, self.files)
        if found_id != expected_id or fresh:
            write_file_atomically(
                directory / PARTITION_METADATA_FILE_NAME, _partition_metadata_bytes(topic.topic_id)
            )
        self._logs[TopicPartition(topic.name, partition)] = log
