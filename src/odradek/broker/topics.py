"""Topic operations shared by Metadata (auto-creation), CreateTopics and the admin handlers."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from kio.schema.errors import ErrorCode

from odradek.broker.context import DEFAULT_CONFIG, BrokerContext
from odradek.storage.log_manager import InvalidConfig, InvalidTopicName, TopicMetadata

logger = logging.getLogger(__name__)

# Topic-level configs and the broker property each one defaults to (Kafka's mapping).
TOPIC_CONFIG_BROKER_DEFAULTS: dict[str, str] = {
    "cleanup.policy": "log.cleanup.policy",
    "max.message.bytes": "message.max.bytes",
    "message.timestamp.type": "log.message.timestamp.type",
    "min.insync.replicas": "min.insync.replicas",
    "retention.bytes": "log.retention.bytes",
    "retention.ms": "log.retention.ms",
    "segment.bytes": "log.segment.bytes",
    "segment.ms": "log.roll.ms",
    "flush.messages": "log.flush.interval.messages",
    "flush.ms": "log.flush.interval.ms",
    "index.interval.bytes": "log.index.interval.bytes",
    "compression.type": "compression.type",
    "compression.gzip.level": "compression.gzip.level",
    "compression.lz4.level": "compression.lz4.level",
    "compression.zstd.level": "compression.zstd.level",
    "delete.retention.ms": "log.cleaner.delete.retention.ms",
    "min.compaction.lag.ms": "log.cleaner.min.compaction.lag.ms",
    "max.compaction.lag.ms": "log.cleaner.max.compaction.lag.ms",
    "min.cleanable.dirty.ratio": "log.cleaner.min.cleanable.ratio",
    "segment.index.bytes": "log.index.size.max.bytes",
    "segment.jitter.ms": "log.roll.jitter.ms",
    "file.delete.delay.ms": "log.segment.delete.delay.ms",
    "unclean.leader.election.enable": "unclean.leader.election.enable",
    "message.timestamp.before.max.ms": "log.message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms": "log.message.timestamp.after.max.ms",
    "preallocate": "log.preallocate",
}

# Topic-level configs with no broker property behind them, and their defaults (Kafka's
# LogConfig): the replication throttles are lists of "partition:broker" pairs, or "*".
TOPIC_ONLY_CONFIG_DEFAULTS: dict[str, str] = {
    "leader.replication.throttled.replicas": "",
    "follower.replication.throttled.replicas": "",
}
TOPIC_CONFIG_NAMES = frozenset(TOPIC_CONFIG_BROKER_DEFAULTS) | frozenset(TOPIC_ONLY_CONFIG_DEFAULTS)
_THROTTLED_REPLICA = re.compile(r"([0-9]+:[0-9]+)?")

# Value checks for the configs storage does not parse itself.
_LONG_CONFIGS = {
    "delete.retention.ms",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "segment.index.bytes",
    "segment.jitter.ms",
    "file.delete.delay.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
}
_BOOLEAN_CONFIGS = {"unclean.leader.election.enable", "preallocate"}


def config_value_error(name: str, value: str) -> str | None:
    """Kafka's message for a value it would refuse, or None."""
    if name in _LONG_CONFIGS:
        try:
            number = int(value)
        except ValueError:
            return f"Invalid value {value} for configuration {name}: Not a number of type LONG"
        if number < 0:
            return f"Invalid value {value} for configuration {name}: Value must be at least 0"
    elif name in _BOOLEAN_CONFIGS:
        if value.lower() not in ("true", "false"):
            return (
                f"Invalid value {value} for configuration {name}: "
                "Expected value to be either true or false"
            )
    elif name == "min.cleanable.dirty.ratio":
        try:
            ratio = float(value)
        except ValueError:
            return f"Invalid value {value} for configuration {name}: Not a number of type DOUBLE"
        if not 0 <= ratio <= 1:
            return f"Invalid value {value} for configuration {name}: Value must be between 0 and 1"
    elif name in TOPIC_ONLY_CONFIG_DEFAULTS:
        # Kafka's ThrottledReplicaListValidator.
        items = [item.strip() for item in value.split(",")]
        if items != ["*"] and not all(_THROTTLED_REPLICA.fullmatch(item) for item in items):
            return (
                f"Invalid value {value} for configuration {name}: {name} must be the literal "
                "'*' or a list of replicas in the following format: "
                "[partitionId]:[brokerId],[partitionId]:[brokerId],..."
            )
    return None


@dataclass(frozen=True, slots=True)
class TopicError:
    error_code: ErrorCode
    message: str | None


def broker_default(context: BrokerContext, name: str) -> str:
    """The value a topic config takes when the topic does not override it."""
    config = context.config
    values = {
        "retention.ms": str(config.log_retention_ms),
        "segment.ms": str(config.log_roll_ms),
        "flush.ms": str(config.log_flush_interval_ms),
    }
    if name in values:
        return values[name]
    if name in TOPIC_ONLY_CONFIG_DEFAULTS:
        return TOPIC_ONLY_CONFIG_DEFAULTS[name]
    return config.properties[TOPIC_CONFIG_BROKER_DEFAULTS[name]]


def create_topic(
    context: BrokerContext,
    name: str,
    num_partitions: int,
    replication_factor: int,
    configs: Mapping[str, str],
    *,
    validate_only: bool = False,
) -> tuple[TopicMetadata | None, TopicError | None]:
    """Create a topic as Kafka's controller would; -1 means the broker default."""
    if num_partitions == -1:
        num_partitions = context.config.num_partitions
    if replication_factor == -1:
        replication_factor = context.config.default_replication_factor
    if name in context.logs.topics():
        return None, TopicError(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.")
    if num_partitions <= 0:
        return None, TopicError(
            ErrorCode.invalid_partitions, "Number of partitions must be larger than 0."
        )
    if replication_factor <= 0:
        return None, TopicError(
            ErrorCode.invalid_replication_factor, "Replication factor must be larger than 0."
        )
    if replication_factor > 1:
        # One broker: there is nowhere to put a second replica.
        return None, TopicError(
            ErrorCode.invalid_replication_factor,
            f"Unable to replicate the partition {replication_factor} time(s): "
            "The target replication factor of "
            f"{replication_factor} cannot be reached because only 1 broker(s) are registered.",
        )
    unknown = sorted(set(configs) - TOPIC_CONFIG_NAMES)
    if unknown:
        return None, TopicError(
            ErrorCode.invalid_config, f"Unknown topic config name: {unknown[0]}"
        )
    for config_name, value in configs.items():
        problem = config_value_error(config_name, value)
        if problem is not None:
            return None, TopicError(ErrorCode.invalid_config, problem)
    if validate_only:
        try:
            context.logs.validate_topic(name, configs)
        except InvalidTopicName as error:
            return None, TopicError(ErrorCode.invalid_topic_exception, str(error))
        except InvalidConfig as error:
            return None, TopicError(ErrorCode.invalid_config, str(error))
        return None, None
    try:
        topic = context.logs.create_topic(name, num_partitions, dict(configs))
    except InvalidTopicName as error:
        return None, TopicError(ErrorCode.invalid_topic_exception, str(error))
    except InvalidConfig as error:
        return None, TopicError(ErrorCode.invalid_config, str(error))
    logger.info("created topic %s with %d partition(s)", name, num_partitions)
    return topic, None


def auto_create(context: BrokerContext, name: str) -> tuple[TopicMetadata | None, ErrorCode]:
    """Metadata-driven auto-creation (`auto.create.topics.enable`)."""
    if not context.config.auto_create_topics_enable:
        return None, ErrorCode.unknown_topic_or_partition
    topic, error = create_topic(context, name, -1, -1, {})
    if error is not None:
        if error.error_code == ErrorCode.topic_already_exists:
            return context.logs.topics().get(name), ErrorCode.none
        return None, (
            ErrorCode.invalid_topic_exception
            if error.error_code == ErrorCode.invalid_topic_exception
            else ErrorCode.unknown_topic_or_partition
        )
    return topic, ErrorCode.none


def topic_by_id(context: BrokerContext, topic_id: uuid.UUID) -> TopicMetadata | None:
    return context.logs.topic_by_id(topic_id)


# Kafka's ConfigSource values.
DYNAMIC_TOPIC_CONFIG = 1

# Kafka's ConfigType values (DescribeConfigs v3+).
CONFIG_TYPES: dict[str, int] = {
    "cleanup.policy": 7,
    "max.message.bytes": 3,
    "message.timestamp.type": 2,
    "min.insync.replicas": 3,
    "retention.bytes": 5,
    "retention.ms": 5,
    "segment.bytes": 3,
    "segment.ms": 5,
    "flush.messages": 5,
    "flush.ms": 5,
    "index.interval.bytes": 3,
    "compression.type": 2,
    "compression.gzip.level": 3,
    "compression.lz4.level": 3,
    "compression.zstd.level": 3,
    "delete.retention.ms": 5,
    "min.compaction.lag.ms": 5,
    "max.compaction.lag.ms": 5,
    "min.cleanable.dirty.ratio": 6,
    "segment.index.bytes": 3,
    "segment.jitter.ms": 5,
    "file.delete.delay.ms": 5,
    "unclean.leader.election.enable": 1,
    "message.timestamp.before.max.ms": 5,
    "message.timestamp.after.max.ms": 5,
    "preallocate": 1,
    "leader.replication.throttled.replicas": 7,
    "follower.replication.throttled.replicas": 7,
}


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    name: str
    value: str | None
    source: int
    read_only: bool
    config_type: int
    synonyms: tuple[tuple[str, str | None, int], ...]


def describe_topic_configs(
    context: BrokerContext,
    topic: str,
    keys: Mapping[str, object] | list[str] | tuple[str, ...] | None,
    overrides: Mapping[str, str] | None = None,
) -> list[ConfigEntry]:
    """Every topic config with its effective value and where that value comes from."""
    if overrides is None:
        metadata = context.logs.topics().get(topic)
        overrides = metadata.config if metadata is not None else {}
    entries = []
    for name in sorted(TOPIC_CONFIG_NAMES):
        if keys is not None and name not in keys:
            continue
        broker_property = TOPIC_CONFIG_BROKER_DEFAULTS.get(name)
        broker_value = broker_default(context, name)
        broker_source = (
            context.broker_property_source(broker_property)
            if broker_property is not None
            else DEFAULT_CONFIG
        )
        synonyms: list[tuple[str, str | None, int]] = []
        if name in overrides:
            value, source = overrides[name], DYNAMIC_TOPIC_CONFIG
            synonyms.append((name, value, DYNAMIC_TOPIC_CONFIG))
        else:
            value, source = broker_value, broker_source
        if broker_property is not None:
            synonyms.append((broker_property, broker_value, broker_source))
        entries.append(
            ConfigEntry(name, value, source, False, CONFIG_TYPES.get(name, 2), tuple(synonyms))
        )
    return entries


def alter_topic_configs(
    context: BrokerContext, topic: str, new_overrides: Mapping[str, str], *, validate_only: bool
) -> TopicError | None:
    """Replace a topic's overrides after checking every name and value."""
    if topic not in context.logs.topics():
        return TopicError(ErrorCode.unknown_topic_or_partition, f"Topic '{topic}' does not exist.")
    unknown = sorted(set(new_overrides) - TOPIC_CONFIG_NAMES)
    if unknown:
        return TopicError(ErrorCode.invalid_config, f"Unknown topic config name: {unknown[0]}")
    for config_name, value in new_overrides.items():
        problem = config_value_error(config_name, value)
        if problem is not None:
            return TopicError(ErrorCode.invalid_config, problem)
    try:
        context.logs.validate_topic(topic, new_overrides)
        if not validate_only:
            context.logs.alter_topic_config(topic, dict(new_overrides))
    except InvalidConfig as error:
        return TopicError(ErrorCode.invalid_config, str(error))
    return None
