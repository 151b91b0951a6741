"""Dynamic configs: the broker and cluster-default broker resources (KIP-226) and the GROUP
resource (KIP-848 group configs), changed with (Incremental)AlterConfigs and kept in the
config store (`storage/config_store.py`, Kafka's ConfigRecords).

Precedence of a broker property, highest first, as Kafka's DynamicBrokerConfig: the dynamic
value for this broker id (DYNAMIC_BROKER_CONFIG), the dynamic cluster-wide default, resource
name "" (DYNAMIC_DEFAULT_BROKER_CONFIG), `server.properties` / CLI (STATIC_BROKER_CONFIG),
Kafka's default (DEFAULT_CONFIG). `context.config` is always the effective result; a change is
applied by swapping it and pushing the `log.*` topic defaults into every log.

A group's configs override the broker's `group.*` defaults; each is checked against the
broker's min/max bounds as Kafka's GroupConfig.validate does. The KIP-848 coordinator applies
`consumer.session.timeout.ms` and `consumer.heartbeat.interval.ms`; the share and streams ones
are stored and described (Odradek has no share or streams groups yet).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker.config import BrokerConfig, ConfigError
from odradek.broker.context import (
    DEFAULT_CONFIG,
    DYNAMIC_DEFAULT_BROKER_CONFIG,
    BrokerContext,
    default_log_config,
)
from odradek.broker.topics import TOPIC_CONFIG_BROKER_DEFAULTS, ConfigEntry, config_value_error
from odradek.coordinator.group import ConsumerGroupOverrides
from odradek.storage.config_store import (
    RESOURCE_BROKER,
    RESOURCE_GROUP,
    ConfigImage,
    ConfigRecord,
    ConfigStore,
)
from odradek.storage.log_manager import (
    METADATA_DIRECTORY_NAME,
    InvalidConfig,
    log_config_from_overrides,
)

logger = logging.getLogger(__name__)

CONFIG_STORE_FILE = "dynamic-configs.log"

# Kafka's ConfigSource for a group's own config, and its ConfigType codes.
GROUP_CONFIG = 8
BOOLEAN, STRING, INT, LONG, DOUBLE, LIST = 1, 2, 3, 5, 6, 7

# The broker properties Kafka lets AlterConfigs change at runtime (DynamicBrokerConfig's
# AllDynamicConfigs) that Odradek knows, with their ConfigType. Odradek applies the `log.*`
# topic defaults, message.max.bytes, min.insync.replicas, log.cleaner.backoff.ms and
# producer.id.expiration.ms; the thread, buffer and connection settings have no behaviour
# behind them here and are only stored and reported.
DYNAMIC_BROKER_CONFIG_TYPES: dict[str, int] = {
    "log.segment.bytes": INT,
    "log.roll.ms": LONG,
    "log.roll.hours": INT,
    "log.roll.jitter.ms": LONG,
    "log.retention.ms": LONG,
    "log.retention.minutes": INT,
    "log.retention.hours": INT,
    "log.retention.bytes": LONG,
    "log.index.interval.bytes": INT,
    "log.index.size.max.bytes": INT,
    "log.flush.interval.messages": LONG,
    "log.flush.interval.ms": LONG,
    "log.message.timestamp.type": STRING,
    "log.message.timestamp.before.max.ms": LONG,
    "log.message.timestamp.after.max.ms": LONG,
    "log.cleanup.policy": LIST,
    "log.cleaner.delete.retention.ms": LONG,
    "log.cleaner.min.compaction.lag.ms": LONG,
    "log.cleaner.max.compaction.lag.ms": LONG,
    "log.cleaner.min.cleanable.ratio": DOUBLE,
    "log.segment.delete.delay.ms": LONG,
    "log.preallocate": BOOLEAN,
    "compression.type": STRING,
    "unclean.leader.election.enable": BOOLEAN,
    "min.insync.replicas": INT,
    "message.max.bytes": INT,
    "log.cleaner.backoff.ms": LONG,
    "log.cleaner.threads": INT,
    "log.cleaner.dedupe.buffer.size": LONG,
    "log.cleaner.io.buffer.size": INT,
    "log.cleaner.io.buffer.load.factor": DOUBLE,
    "log.cleaner.io.max.bytes.per.second": DOUBLE,
    "num.io.threads": INT,
    "num.network.threads": INT,
    "num.replica.fetchers": INT,
    "num.recovery.threads.per.data.dir": INT,
    "background.threads": INT,
    "max.connections": INT,
    "max.connections.per.ip": INT,
    "producer.id.expiration.ms": INT,
}
_AT_LEAST_ONE = {
    "num.io.threads",
    "num.network.threads",
    "num.replica.fetchers",
    "num.recovery.threads.per.data.dir",
    "background.threads",
    "log.cleaner.threads",
    "producer.id.expiration.ms",
    "message.max.bytes",
    "min.insync.replicas",
}
_TOPIC_NAME_OF_BROKER_PROPERTY = {
    broker: topic for topic, broker in TOPIC_CONFIG_BROKER_DEFAULTS.items()
}


@dataclasses.dataclass(frozen=True, slots=True)
class GroupConfigDef:
    """One group config (Kafka 4.1's GroupConfig): its type, the broker property that gives
    its default (None: `default` is Kafka's literal), the lowest value ConfigDef accepts, and
    the broker properties bounding it."""

    config_type: int
    broker_default: str | None
    default: str = ""
    at_least: int = 1
    minimum: str | None = None
    maximum: str | None = None


GROUP_CONFIGS: dict[str, GroupConfigDef] = {
    "consumer.session.timeout.ms": GroupConfigDef(
        INT,
        "group.consumer.session.timeout.ms",
        minimum="group.consumer.min.session.timeout.ms",
        maximum="group.consumer.max.session.timeout.ms",
    ),
    "consumer.heartbeat.interval.ms": GroupConfigDef(
        INT,
        "group.consumer.heartbeat.interval.ms",
        minimum="group.consumer.min.heartbeat.interval.ms",
        maximum="group.consumer.max.heartbeat.interval.ms",
    ),
    "share.session.timeout.ms": GroupConfigDef(
        INT,
        "group.share.session.timeout.ms",
        minimum="group.share.min.session.timeout.ms",
        maximum="group.share.max.session.timeout.ms",
    ),
    "share.heartbeat.interval.ms": GroupConfigDef(
        INT,
        "group.share.heartbeat.interval.ms",
        minimum="group.share.min.heartbeat.interval.ms",
        maximum="group.share.max.heartbeat.interval.ms",
    ),
    "share.record.lock.duration.ms": GroupConfigDef(
        INT,
        "group.share.record.lock.duration.ms",
        at_least=1000,
        minimum="group.share.min.record.lock.duration.ms",
        maximum="group.share.max.record.lock.duration.ms",
    ),
    "share.auto.offset.reset": GroupConfigDef(STRING, None, default="latest"),
    "share.isolation.level": GroupConfigDef(STRING, None, default="read_uncommitted"),
    "streams.session.timeout.ms": GroupConfigDef(
        INT,
        "group.streams.session.timeout.ms",
        minimum="group.streams.min.session.timeout.ms",
        maximum="group.streams.max.session.timeout.ms",
    ),
    "streams.heartbeat.interval.ms": GroupConfigDef(
        INT,
        "group.streams.heartbeat.interval.ms",
        minimum="group.streams.min.heartbeat.interval.ms",
        maximum="group.streams.max.heartbeat.interval.ms",
    ),
    "streams.num.standby.replicas": GroupConfigDef(
        INT,
        "group.streams.num.standby.replicas",
        at_least=0,
        maximum="group.streams.max.standby.replicas",
    ),
}
# session timeout > heartbeat interval, per group type (GroupConfig.validateValues).
_SESSION_AND_HEARTBEAT = (
    ("consumer.session.timeout.ms", "consumer.heartbeat.interval.ms"),
    ("share.session.timeout.ms", "share.heartbeat.interval.ms"),
    ("streams.session.timeout.ms", "streams.heartbeat.interval.ms"),
)
# ISO-8601 durations without years or months (Java's Duration.parse), e.g. PT1H, P1DT2H3M4.5S.
_ISO_DURATION = re.compile(r"P(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?", re.IGNORECASE)


def config_store_path(log_dir: Path) -> Path:
    return log_dir / METADATA_DIRECTORY_NAME / CONFIG_STORE_FILE


def static_overrides(config: BrokerConfig) -> dict[str, str]:
    """The properties the operator set (file or CLI), without Kafka's defaults."""
    return {name: config.properties[name] for name in config.unknown_or_set}


def effective_config(static: BrokerConfig, image: ConfigImage) -> BrokerConfig:
    """`static` with the dynamic cluster default and this broker's dynamic values on top.

    Raises ConfigError when the combination is not a valid configuration.
    """
    merged = {
        **static_overrides(static),
        **image.configs(RESOURCE_BROKER, ""),
        **image.configs(RESOURCE_BROKER, str(static.node_id)),
    }
    config = BrokerConfig.from_properties(merged)
    # Sources are judged against what was given statically, not the dynamic layers. log.dirs
    # is read-only (never dynamic): the static config's directory object is kept as given
    # (the simulator's is a path on its in-memory file system).
    return dataclasses.replace(
        config,
        unknown_or_set=static.unknown_or_set,
        unknown=static.unknown,
        log_dir=static.log_dir,
    )


def open_dynamic_configs(static: BrokerConfig) -> tuple[ConfigStore, BrokerConfig]:
    """Open the config store under the log directory; returns it and the effective config.

    A stored combination that no longer validates (server.properties changed underneath) is
    logged and the static configuration is used, as Kafka skips invalid dynamic configs.
    """
    store = ConfigStore.open(config_store_path(static.log_dir))
    try:
        return store, effective_config(static, store.image)
    except ConfigError as error:
        logger.error("dynamic broker configs ignored: %s", error)
        return store, static


def load_group_configs(context: BrokerContext) -> None:
    """Hand every stored group's consumer overrides to the KIP-848 coordinator."""
    if context.config_store is None:
        return
    for (resource_type, name), configs in context.config_store.image.resources.items():
        if resource_type == RESOURCE_GROUP:
            apply_group_configs(context, name, configs)


def apply_group_configs(context: BrokerContext, group_id: str, configs: Mapping[str, str]) -> None:
    """Hand group `group_id`'s consumer overrides (empty: none) to the KIP-848 coordinator."""
    session = configs.get("consumer.session.timeout.ms")
    heartbeat = configs.get("consumer.heartbeat.interval.ms")
    context.groups.coordinator.consumer.set_group_overrides(
        group_id,
        ConsumerGroupOverrides(
            int(session) if session is not None else None,
            int(heartbeat) if heartbeat is not None else None,
        ),
    )


# -- incremental operations ------------------------------------------------------------------

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def apply_operations(
    current: Mapping[str, str],
    operations: Any,
    list_config: Callable[[str], bool],
    list_base: Callable[[Mapping[str, str], str], str],
) -> tuple[dict[str, str] | None, str | None]:
    """IncrementalAlterConfigs' SET/DELETE/APPEND/SUBTRACT over a resource's overrides
    (topic, broker or group; Kafka's ConfigAdminManager.prepareIncrementalConfigs).

    `list_config(name)` says whether APPEND/SUBTRACT apply; `list_base(overrides, name)` is the
    comma-separated value such an operation starts from, given the overrides so far. Returns
    (new overrides, None) or (None, the message for INVALID_CONFIG).
    """
    updated = dict(current)
    for config in operations:
        name, operation, value = config.name, config.config_operation, config.value
        if operation == SET:
            if value is None:
                return None, f"Null value not supported for: {name}"
            updated[name] = value
        elif operation == DELETE:
            updated.pop(name, None)
        elif operation in (APPEND, SUBTRACT):
            if not list_config(name):
                return None, f"Config value append/subtract is not allowed for config {name!r}"
            base = list_base(updated, name)
            items = [item for item in base.split(",") if item]
            for item in (value or "").split(","):
                if operation == APPEND and item and item not in items:
                    items.append(item)
                elif operation == SUBTRACT and item in items:
                    items.remove(item)
            updated[name] = ",".join(items)
        else:
            return None, f"Unknown config operation {operation}"
    return updated, None


# -- broker resources ------------------------------------------------------------------------


def broker_resource_error(context: BrokerContext, resource_name: str) -> str | None:
    """Kafka's answer to a broker resource naming another broker (or not a number)."""
    if resource_name in ("", str(context.node_id)):
        return None
    return (
        f"Unexpected broker id, expected {context.node_id} or empty string, "
        f"but received {resource_name}"
    )


def _type_error(name: str, value: str, config_type: int) -> str | None:
    prefix = f"Invalid value {value} for configuration {name}"
    if config_type in (INT, LONG):
        try:
            number = int(value.strip())
        except ValueError:
            kind = "INT" if config_type == INT else "LONG"
            return f"{prefix}: Not a number of type {kind}"
        if config_type == INT and not -(2**31) <= number < 2**31:
            return f"{prefix}: Not a number of type INT"
        if name in _AT_LEAST_ONE and number < 1:
            return f"{prefix}: Value must be at least 1"
    elif config_type == DOUBLE:
        try:
            float(value.strip())
        except ValueError:
            return f"{prefix}: Not a number of type DOUBLE"
    elif config_type == BOOLEAN and value.strip().lower() not in ("true", "false"):
        return f"{prefix}: Expected value to be either true or false"
    return None


def _broker_value_error(context: BrokerContext, name: str, value: str) -> str | None:
    problem = _type_error(name, value, DYNAMIC_BROKER_CONFIG_TYPES[name])
    if problem is not None:
        return problem
    topic_name = _TOPIC_NAME_OF_BROKER_PROPERTY.get(name)
    if topic_name is None:
        return None
    problem = config_value_error(topic_name, value)
    if problem is not None:
        return problem.replace(f"configuration {topic_name}", f"configuration {name}")
    try:
        log_config_from_overrides(context.logs.default_config, {topic_name: value})
    except InvalidConfig as error:
        return str(error)
    return None


def alter_broker_configs(
    context: BrokerContext,
    resource_name: str,
    new_overrides: Mapping[str, str],
    *,
    validate_only: bool,
) -> tuple[ErrorCode, str | None]:
    """Make `new_overrides` the dynamic configs of the broker resource `resource_name` (this
    broker's id, or "" for the cluster-wide default): check, persist, apply.

    Errors as Kafka's ConfigAdminManager gives them: INVALID_REQUEST for another broker's id,
    a property that is not dynamic ("Cannot update these configs dynamically: Set(...)") or a
    bad value.
    """
    problem = broker_resource_error(context, resource_name)
    if problem is not None:
        return ErrorCode.invalid_request, problem
    store = context.config_store
    if store is None:
        return ErrorCode.invalid_request, "Dynamic broker configs are not available."
    current = store.image.configs(RESOURCE_BROKER, resource_name)
    changed = {name: value for name, value in new_overrides.items() if current.get(name) != value}
    static_only = sorted(
        name
        for name in set(changed) | (set(current) - set(new_overrides))
        if name not in DYNAMIC_BROKER_CONFIG_TYPES
    )
    if static_only:
        return (
            ErrorCode.invalid_request,
            f"Cannot update these configs dynamically: Set({', '.join(static_only)})",
        )
    resource = f"ConfigResource(type=BROKER, name='{resource_name}')"
    for name, value in sorted(changed.items()):
        problem = _broker_value_error(context, name, value)
        if problem is not None:
            return (
                ErrorCode.invalid_request,
                f"Invalid config value for resource {resource}: {problem}",
            )
    records = [
        ConfigRecord(RESOURCE_BROKER, resource_name, name, value)
        for name, value in sorted(changed.items())
    ] + [
        ConfigRecord(RESOURCE_BROKER, resource_name, name, None)
        for name in sorted(set(current) - set(new_overrides))
    ]
    trial = ConfigImage({key: dict(value) for key, value in store.image.resources.items()})
    for record in records:
        trial.replay(record)
    static = context.static_config or context.config
    try:
        updated = effective_config(static, trial)
        default_log = default_log_config(updated)
        for topic in context.logs.topics().values():
            log_config_from_overrides(default_log, topic.config)
    except (ConfigError, InvalidConfig) as error:
        return ErrorCode.invalid_request, f"Invalid config value for resource {resource}: {error}"
    if validate_only or not records:
        return ErrorCode.none, None
    store.append(records)
    apply_broker_config(context, updated)
    logger.info(
        "dynamic broker configs of %s now %s",
        f"broker {resource_name}" if resource_name else "the cluster default",
        dict(store.image.configs(RESOURCE_BROKER, resource_name)),
    )
    return ErrorCode.none, None


def apply_broker_config(context: BrokerContext, config: BrokerConfig) -> None:
    """Make `config` the broker's effective configuration where Odradek has the behaviour."""
    context.config = config
    context.logs.set_default_config(default_log_config(config))
    context.transactions.apply_config(config)


def describe_broker_configs(
    context: BrokerContext, resource_name: str, keys: Any
) -> list[ConfigEntry]:
    """DescribeConfigs of a broker resource. This broker's id: every property with its value
    and source (synonyms: each layer that sets it); "": only the dynamic cluster defaults, as
    Kafka answers for the default resource."""
    entries = []
    if resource_name == "":
        store = context.config_store
        defaults = store.image.configs(RESOURCE_BROKER, "") if store is not None else {}
        for name, value in sorted(defaults.items()):
            if keys is not None and name not in keys:
                continue
            entries.append(
                ConfigEntry(
                    name,
                    value,
                    DYNAMIC_DEFAULT_BROKER_CONFIG,
                    False,
                    DYNAMIC_BROKER_CONFIG_TYPES.get(name, STRING),
                    ((name, value, DYNAMIC_DEFAULT_BROKER_CONFIG),),
                )
            )
        return entries
    for name, value in sorted(context.config.properties.items()):
        if keys is not None and name not in keys:
            continue
        layers = context.broker_property_layers(name) or [(value, DEFAULT_CONFIG)]
        entries.append(
            ConfigEntry(
                name,
                value,
                layers[0][1],
                name not in DYNAMIC_BROKER_CONFIG_TYPES,
                DYNAMIC_BROKER_CONFIG_TYPES.get(name, STRING),
                tuple((name, layer_value, source) for layer_value, source in layers),
            )
        )
    return entries


# -- group resources -------------------------------------------------------------------------


def _group_default(context: BrokerContext, definition: GroupConfigDef) -> tuple[str, int]:
    if definition.broker_default is None:
        return definition.default, DEFAULT_CONFIG
    return (
        context.config.properties[definition.broker_default],
        context.broker_property_source(definition.broker_default),
    )


def group_config_error(context: BrokerContext, configs: Mapping[str, str]) -> str | None:
    """Kafka's GroupConfig.validate: names, types, and the broker's min/max bounds."""
    for name in configs:
        if name not in GROUP_CONFIGS:
            return f"Unknown group config name: {name}"
    values: dict[str, int] = {}
    properties = context.config.properties
    for name, definition in GROUP_CONFIGS.items():
        value = configs.get(name)
        if definition.config_type != INT:
            if value is None:
                continue
            if name == "share.isolation.level" and value not in (
                "read_committed",
                "read_uncommitted",
            ):
                return (
                    f"Invalid value {value} for configuration {name}: String must be one of: "
                    "read_committed, read_uncommitted"
                )
            if name == "share.auto.offset.reset" and not _valid_auto_offset_reset(value):
                return (
                    f"Invalid value {value} for configuration {name}: Invalid value `{value}` "
                    f"for configuration {name}. The value must be either 'earliest', "
                    "'latest' or of the format 'by_duration:<PnDTnHnMn.nS.>'."
                )
            continue
        text = value if value is not None else _group_default(context, definition)[0]
        try:
            number = int(text.strip())
        except ValueError:
            return f"Invalid value {text} for configuration {name}: Not a number of type INT"
        if value is not None and number < definition.at_least:
            return (
                f"Invalid value {text} for configuration {name}: "
                f"Value must be at least {definition.at_least}"
            )
        values[name] = number
        if value is None:
            continue
        if definition.minimum is not None and number < int(properties[definition.minimum]):
            return f"{name} must be greater than or equal to {definition.minimum}"
        if definition.maximum is not None and number > int(properties[definition.maximum]):
            return f"{name} must be less than or equal to {definition.maximum}"
    for session, heartbeat in _SESSION_AND_HEARTBEAT:
        if (session in configs or heartbeat in configs) and values[session] <= values[heartbeat]:
            return f"{session} must be greater than {heartbeat}"
    return None


def _valid_auto_offset_reset(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("earliest", "latest"):
        return True
    if not lowered.startswith("by_duration:"):
        return False
    duration = value.strip()[len("by_duration:") :]
    return (
        bool(duration) and duration.upper() != "P" and _ISO_DURATION.fullmatch(duration) is not None
    )


def alter_group_configs(
    context: BrokerContext,
    group_id: str,
    new_overrides: Mapping[str, str],
    *,
    validate_only: bool,
) -> tuple[ErrorCode, str | None]:
    """Make `new_overrides` the configs of group `group_id`: check (INVALID_CONFIG, Kafka's
    messages), persist, and hand the consumer ones to the KIP-848 coordinator."""
    if not group_id:
        return ErrorCode.invalid_request, "Group name must not be empty"
    store = context.config_store
    if store is None:
        return ErrorCode.invalid_request, "Group configs are not available."
    problem = group_config_error(context, new_overrides)
    if problem is not None:
        return ErrorCode.invalid_config, problem
    if validate_only:
        return ErrorCode.none, None
    current = store.image.configs(RESOURCE_GROUP, group_id)
    records = [
        ConfigRecord(RESOURCE_GROUP, group_id, name, value)
        for name, value in sorted(new_overrides.items())
        if current.get(name) != value
    ] + [
        ConfigRecord(RESOURCE_GROUP, group_id, name, None)
        for name in sorted(set(current) - set(new_overrides))
    ]
    store.append(records)
    apply_group_configs(context, group_id, store.image.configs(RESOURCE_GROUP, group_id))
    return ErrorCode.none, None


def group_overrides(context: BrokerContext, group_id: str) -> Mapping[str, str]:
    store = context.config_store
    return store.image.configs(RESOURCE_GROUP, group_id) if store is not None else {}


def describe_group_configs(context: BrokerContext, group_id: str, keys: Any) -> list[ConfigEntry]:
    """Every group config with its value: the group's own (GROUP_CONFIG) or the broker
    default behind it, whose source and property are the synonym."""
    overrides = group_overrides(context, group_id)
    entries = []
    for name, definition in sorted(GROUP_CONFIGS.items()):
        if keys is not None and name not in keys:
            continue
        default_value, default_source = _group_default(context, definition)
        synonyms: list[tuple[str, str | None, int]] = []
        if name in overrides:
            value, source = overrides[name], GROUP_CONFIG
            synonyms.append((name, value, GROUP_CONFIG))
        else:
            value, source = default_value, default_source
        if definition.broker_default is not None:
            synonyms.append((definition.broker_default, default_value, default_source))
        else:
            synonyms.append((name, default_value, DEFAULT_CONFIG))
        entries.append(
            ConfigEntry(name, value, source, False, definition.config_type, tuple(synonyms))
        )
    return entries
