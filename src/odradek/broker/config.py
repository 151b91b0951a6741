"""Broker configuration under Kafka's property names (`server.properties` and overrides)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from odradek.coordinator.group.config import GroupConfig, MigrationPolicy
from odradek.coordinator.txn import TransactionConfig
from odradek.storage.lazy_files import STORAGE_MODES
from odradek.storage.log import LogConfig
from odradek.storage.log_manager import InvalidConfig, log_config_from_overrides

logger = logging.getLogger(__name__)

# Kafka's defaults, except where one node makes a replicated default meaningless: the
# replication factors and in-sync minimums of the internal topics are 1 here.
DEFAULTS: dict[str, str] = {
    "node.id": "1",
    "listeners": "PLAINTEXT://127.0.0.1:9092",
    "advertised.listeners": "",
    "log.dirs": "./data",
    "num.partitions": "1",
    "default.replication.factor": "1",
    "auto.create.topics.enable": "true",
    "delete.topic.enable": "true",
    "message.max.bytes": "1048588",
    "socket.request.max.bytes": "104857600",
    # The most partitions one DescribeTopicPartitions response carries (KIP-966).
    "max.request.partition.size.limit": "2000",
    "log.segment.bytes": "1073741824",
    "log.roll.ms": "",
    "log.roll.hours": "168",
    "log.retention.ms": "",
    "log.retention.minutes": "",
    "log.retention.hours": "168",
    "log.retention.bytes": "-1",
    "log.retention.check.interval.ms": "300000",
    "log.cleaner.enable": "true",
    "log.cleaner.backoff.ms": "15000",
    "log.index.interval.bytes": "4096",
    "log.flush.interval.messages": str(2**63 - 1),
    "log.flush.interval.ms": "",
    "log.flush.scheduler.interval.ms": str(2**63 - 1),
    "log.message.timestamp.type": "CreateTime",
    "log.cleanup.policy": "delete",
    "compression.type": "producer",
    "compression.gzip.level": "-1",
    "compression.lz4.level": "9",
    "compression.zstd.level": "3",
    "log.cleaner.delete.retention.ms": "86400000",
    "log.cleaner.min.compaction.lag.ms": "0",
    "log.cleaner.max.compaction.lag.ms": str(2**63 - 1),
    "log.cleaner.min.cleanable.ratio": "0.5",
    "log.index.size.max.bytes": "10485760",
    "log.roll.jitter.ms": "0",
    "log.segment.delete.delay.ms": "60000",
    "unclean.leader.election.enable": "false",
    "log.message.timestamp.before.max.ms": str(2**63 - 1),
    "log.message.timestamp.after.max.ms": "3600000",  # Kafka 4 (KIP-1030): one hour
    "log.preallocate": "false",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "50",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "50",
    "transaction.max.timeout.ms": "900000",
    "transaction.partition.verification.enable": "true",
    "transaction.state.log.segment.bytes": "104857600",
    "transactional.id.expiration.ms": "604800000",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "10000",
    "producer.id.expiration.ms": "86400000",
    "producer.id.expiration.check.interval.ms": "600000",
    "group.initial.rebalance.delay.ms": "3000",
    "group.min.session.timeout.ms": "6000",
    "group.max.session.timeout.ms": "1800000",
    "group.max.size": "2147483647",
    "group.consumer.session.timeout.ms": "45000",
    # Kafka's minimum; tests set it (and the session timeout) lower.
    "group.consumer.min.session.timeout.ms": "45000",
    "group.consumer.heartbeat.interval.ms": "5000",
    "group.consumer.min.heartbeat.interval.ms": "5000",
    "group.consumer.max.session.timeout.ms": "60000",
    "group.consumer.max.heartbeat.interval.ms": "15000",
    # Bounds and defaults of the share and streams group configs (GROUP resource); Odradek
    # has no share or streams groups yet, but their per-group configs are stored and checked.
    "group.share.session.timeout.ms": "45000",
    "group.share.min.session.timeout.ms": "45000",
    "group.share.max.session.timeout.ms": "60000",
    "group.share.heartbeat.interval.ms": "5000",
    "group.share.min.heartbeat.interval.ms": "5000",
    "group.share.max.heartbeat.interval.ms": "15000",
    "group.share.record.lock.duration.ms": "30000",
    "group.share.min.record.lock.duration.ms": "15000",
    "group.share.max.record.lock.duration.ms": "60000",
    "group.streams.session.timeout.ms": "45000",
    "group.streams.min.session.timeout.ms": "45000",
    "group.streams.max.session.timeout.ms": "60000",
    "group.streams.heartbeat.interval.ms": "5000",
    "group.streams.min.heartbeat.interval.ms": "5000",
    "group.streams.max.heartbeat.interval.ms": "15000",
    "group.streams.num.standby.replicas": "0",
    "group.streams.max.standby.replicas": "2",
    "group.consumer.assignors": "uniform,range",
    "group.consumer.migration.policy": "bidirectional",
    "offsets.retention.minutes": "10080",
    "offsets.retention.check.interval.ms": "600000",
    "offset.metadata.max.bytes": "4096",
    "offsets.topic.segment.bytes": "104857600",
    "num.io.threads": "8",
    # Dynamic in Kafka (DynamicBrokerConfig); Odradek stores and reports them, with no
    # behaviour behind them (one event loop, no replica fetchers or connection quotas).
    "num.network.threads": "3",
    "num.replica.fetchers": "1",
    "num.recovery.threads.per.data.dir": "2",
    "background.threads": "10",
    "log.cleaner.threads": "1",
    "log.cleaner.dedupe.buffer.size": "134217728",
    "log.cleaner.io.buffer.size": "524288",
    "log.cleaner.io.buffer.load.factor": "0.9",
    "log.cleaner.io.max.bytes.per.second": "1.7976931348623157E308",
    "max.connections": "2147483647",
    "max.connections.per.ip": "2147483647",
    "cluster.id": "",
    # KRaft (issue 12). Empty process.roles: one broker alone, exactly as before.
    "process.roles": "",
    "controller.quorum.voters": "",
    "controller.quorum.bootstrap.servers": "",
    "controller.listener.names": "",
    "listener.security.protocol.map": "",
    "inter.broker.listener.name": "",
    "broker.session.timeout.ms": "9000",
    "broker.heartbeat.interval.ms": "2000",
    "replica.lag.time.max.ms": "30000",
    # Kafka's replica fetcher settings. replica.fetch.max.bytes is 8 MiB here, not Kafka's
    # 1 MiB: each Fetch round on a follower costs a Python round trip and, with
    # odradek.acks.all.fsync, an fdatasync, so a follower behind by several 1 MiB batches
    # takes them in one round (replication_bench.py: ~20% less CPU per GB at RF=3).
    "replica.fetch.max.bytes": "8388608",
    "replica.fetch.response.max.bytes": "10485760",
    "replica.fetch.wait.max.ms": "500",
    "replica.fetch.min.bytes": "1",
    "odradek.acks.all.fsync": "true",
    # os: segment logs written straight to the OS; lazy: unsynced log bytes kept in memory only,
    # so a kill -9 loses them as a power cut would (storage/lazy_files.py; the checker's fault).
    "odradek.storage.mode": "os",
}


# Kafka names its assignors by Java class; both spellings are accepted.
_ASSIGNOR_CLASS_NAMES = {
    "org.apache.kafka.coordinator.group.assignor.UniformAssignor": "uniform",
    "org.apache.kafka.coordinator.group.assignor.RangeAssignor": "range",
}


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the property."""


def parse_properties(text: str) -> dict[str, str]:
    """Parse the Java properties subset that `server.properties` files use."""
    properties: dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        separator = min(
            (index for index in (line.find("="), line.find(":")) if index >= 0), default=-1
        )
        if separator < 0:
            raise ConfigError(f"cannot read property line {raw_line!r}: expected key=value")
        properties[line[:separator].strip()] = line[separator + 1 :].strip()
    return properties


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    host: str
    port: int


def parse_listeners(value: str, property_name: str) -> list[Listener]:
    listeners = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        parsed = urlsplit(item)
        if not parsed.scheme or parsed.port is None:
            raise ConfigError(f"{property_name}: {item!r} is not NAME://host:port")
        listeners.append(Listener(parsed.scheme.upper(), parsed.hostname or "0.0.0.0", parsed.port))
    return listeners


#: listener.security.protocol.map values Odradek speaks (Kafka's SecurityProtocol ids).
SECURITY_PROTOCOLS = {"PLAINTEXT": 0}


@dataclass(frozen=True, slots=True)
class ControllerVoter:
    """One entry of controller.quorum.voters: `id@host:port`."""

    node_id: int
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class KraftSettings:
    """process.roles and the controller settings of a KRaft node (KIP-500, KIP-631).

    `client_listener` is the listener this node's Kafka clients (or, on a controller-only node,
    brokers) connect to: a broker's `inter.broker.listener.name` (default: the first listener
    that is not a controller listener); a controller-only node's first controller listener.
    """

    roles: frozenset[str]
    listeners: tuple[Listener, ...]
    controller_listener_names: tuple[str, ...]
    #: controller.quorum.voters, or controller.quorum.bootstrap.servers with unknown ids (-1).
    voters: tuple[ControllerVoter, ...]
    inter_broker_listener_name: str
    session_timeout_ms: int
    heartbeat_interval_ms: int
    replica_lag_time_max_ms: int
    client_listener: Listener
    #: The follower's Fetch: per-partition and whole-response byte limits, MaxWaitMs, MinBytes.
    replica_fetch_max_bytes: int = 8 * 1024 * 1024
    replica_fetch_response_max_bytes: int = 10 * 1024 * 1024
    replica_fetch_wait_max_ms: int = 500
    replica_fetch_min_bytes: int = 1

    @property
    def is_broker(self) -> bool:
        return "broker" in self.roles

    @property
    def is_controller(self) -> bool:
        return "controller" in self.roles

    def controller_listener(self) -> Listener | None:
        """The listener this node's controller serves on (None on a broker-only node)."""
        for listener in self.listeners:
            if listener.name in self.controller_listener_names:
                return listener
        return None


def parse_voters(value: str, property_name: str) -> tuple[ControllerVoter, ...]:
    """`1@host:9093,2@host:9093` (voters) or `host:9093,...` (bootstrap servers: id -1)."""
    voters = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        node, _, address = item.rpartition("@")
        host, _, port = address.rpartition(":")
        try:
            voters.append(ControllerVoter(int(node) if node else -1, host, int(port)))
        except ValueError:
            raise ConfigError(f"{property_name}: {item!r} is not id@host:port") from None
        if not host:
            raise ConfigError(f"{property_name}: {item!r} is not id@host:port")
    return tuple(voters)


def parse_kraft_settings(properties: Mapping[str, str], listeners: list[Listener]) -> KraftSettings:
    """Check the KRaft properties as Kafka's KafkaConfig does; ConfigError names the property."""
    roles = frozenset(r.strip() for r in properties["process.roles"].split(",") if r.strip())
    if not roles or not roles <= {"broker", "controller"}:
        raise ConfigError(
            f"process.roles must be broker, controller or broker,controller, "
            f"got {properties['process.roles']!r}"
        )
    names = [listener.name for listener in listeners]
    if len(set(names)) != len(names):
        raise ConfigError("listeners: each listener name may appear once")
    controller_names = tuple(
        n.strip().upper() for n in properties["controller.listener.names"].split(",") if n.strip()
    )
    voters = parse_voters(properties["controller.quorum.voters"], "controller.quorum.voters")
    if not voters:
        voters = parse_voters(
            properties["controller.quorum.bootstrap.servers"],
            "controller.quorum.bootstrap.servers",
        )
    if not voters:
        raise ConfigError(
            "controller.quorum.voters (or controller.quorum.bootstrap.servers) must be set "
            "when process.roles is"
        )
    if not controller_names:
        raise ConfigError("controller.listener.names must be set when process.roles is")
    if "controller" in roles and not any(name in controller_names for name in names):
        raise ConfigError(
            f"controller.listener.names ({','.join(controller_names)}) must name one of the "
            f"listeners ({','.join(names)}) on a node with the controller role"
        )
    if "controller" not in roles and any(name in controller_names for name in names):
        raise ConfigError("listeners: a broker-only node must not listen on a controller listener")
    protocol_map: dict[str, str] = {}
    for item in filter(
        None, (p.strip() for p in properties["listener.security.protocol.map"].split(","))
    ):
        name, _, protocol = item.partition(":")
        protocol_map[name.strip().upper()] = protocol.strip().upper()
    if not protocol_map:
        # Kafka's effectiveListenerSecurityProtocolMap: with no map set, a controller listener
        # that is not named after a security protocol is PLAINTEXT.
        protocol_map = dict.fromkeys(controller_names, "PLAINTEXT")
    for name in names:
        protocol = protocol_map.get(name, name)
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"listener.security.protocol.map: listener {name} maps to {protocol}; "
                "only PLAINTEXT is supported"
            )
    broker_listeners = [listener for listener in listeners if listener.name not in controller_names]
    inter_broker = properties["inter.broker.listener.name"].strip().upper()
    if "broker" in roles:
        if not broker_listeners:
            raise ConfigError("listeners: a broker needs a listener that is not a controller's")
        if inter_broker and inter_broker not in [item.name for item in broker_listeners]:
            raise ConfigError(
                f"inter.broker.listener.name: {inter_broker} is not among the listeners"
            )
        inter_broker = inter_broker or broker_listeners[0].name
        client_listener = next(item for item in broker_listeners if item.name == inter_broker)
    else:
        client_listener = next(item for item in listeners if item.name in controller_names)
    node_id = _int(properties, "node.id")
    if "controller" in roles and voters[0].node_id not in (-1, node_id) and len(voters) == 1:
        raise ConfigError(
            f"controller.quorum.voters: this controller is node {node_id}, the voter is "
            f"{voters[0].node_id}"
        )
    if len(voters) > 1:
        raise ConfigError("controller.quorum.voters: one controller voter is supported for now")
    settings = KraftSettings(
        roles=roles,
        listeners=tuple(listeners),
        controller_listener_names=controller_names,
        voters=voters,
        inter_broker_listener_name=inter_broker,
        session_timeout_ms=_int(properties, "broker.session.timeout.ms"),
        heartbeat_interval_ms=_int(properties, "broker.heartbeat.interval.ms"),
        replica_lag_time_max_ms=_int(properties, "replica.lag.time.max.ms"),
        client_listener=client_listener,
        replica_fetch_max_bytes=_int(properties, "replica.fetch.max.bytes"),
        replica_fetch_response_max_bytes=_int(properties, "replica.fetch.response.max.bytes"),
        replica_fetch_wait_max_ms=_int(properties, "replica.fetch.wait.max.ms"),
        replica_fetch_min_bytes=_int(properties, "replica.fetch.min.bytes"),
    )
    if (
        min(
            settings.replica_fetch_max_bytes,
            settings.replica_fetch_response_max_bytes,
            settings.replica_fetch_min_bytes,
        )
        < 1
        or settings.replica_fetch_wait_max_ms < 0
    ):
        raise ConfigError(
            "replica.fetch.max.bytes, replica.fetch.response.max.bytes and "
            "replica.fetch.min.bytes must be at least 1, replica.fetch.wait.max.ms at least 0"
        )
    if settings.replica_fetch_wait_max_ms >= settings.replica_lag_time_max_ms:
        # Kafka's rule: a parked follower Fetch must not outlast the lag limit.
        raise ConfigError("replica.fetch.wait.max.ms must be below replica.lag.time.max.ms")
    if (
        settings.heartbeat_interval_ms < 1
        or settings.session_timeout_ms <= settings.heartbeat_interval_ms
    ):
        raise ConfigError(
            "broker.heartbeat.interval.ms must be at least 1 and below broker.session.timeout.ms"
        )
    return settings


def _int(properties: Mapping[str, str], name: str) -> int:
    value = properties[name]
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _bool(properties: Mapping[str, str], name: str) -> bool:
    value = properties[name].strip().lower()
    if value not in ("true", "false"):
        raise ConfigError(f"{name} must be true or false, got {properties[name]!r}")
    return value == "true"


def _storage_mode(properties: Mapping[str, str]) -> str:
    value = properties["odradek.storage.mode"].strip().lower()
    if value not in STORAGE_MODES:
        raise ConfigError(
            f"odradek.storage.mode must be one of {', '.join(STORAGE_MODES)}, "
            f"got {properties['odradek.storage.mode']!r}"
        )
    return value


def _milliseconds(properties: Mapping[str, str], *names_and_factors: tuple[str, int]) -> int:
    """Kafka's precedence for durations given in several units (ms over minutes over hours)."""
    for name, factor in names_and_factors:
        if properties.get(name, ""):
            return _int(properties, name) * factor
    return 2**63 - 1


@dataclass(frozen=True)
class BrokerConfig:
    properties: dict[str, str]
    node_id: int
    listener: Listener
    advertised_listener: Listener
    log_dir: Path
    num_partitions: int
    default_replication_factor: int
    auto_create_topics_enable: bool
    delete_topic_enable: bool
    message_max_bytes: int
    socket_request_max_bytes: int
    log_segment_bytes: int
    log_roll_ms: int
    log_retention_ms: int
    log_retention_bytes: int
    log_retention_check_interval_ms: int
    log_index_interval_bytes: int
    log_flush_interval_messages: int
    log_flush_interval_ms: int
    log_message_timestamp_type: str
    log_cleanup_policy: str
    min_insync_replicas: int
    acks_all_fsync: bool
    cluster_id: str
    unknown: tuple[str, ...] = field(default=())
    storage_mode: str = "os"  # odradek.storage.mode
    # Properties given explicitly (file or overrides), as opposed to Kafka's defaults.
    unknown_or_set: frozenset[str] = field(default=frozenset())
    # process.roles and the controller settings; None when process.roles is empty.
    kraft: KraftSettings | None = None
    # A cluster broker's listeners (not the controller's), as advertised: name, host, port.
    advertised_broker_listeners: tuple[Listener, ...] = ()

    @classmethod
    def from_properties(cls, overrides: Mapping[str, str]) -> BrokerConfig:
        properties = {**DEFAULTS, **overrides}
        listeners = parse_listeners(properties["listeners"], "listeners")
        advertised = parse_listeners(properties["advertised.listeners"], "advertised.listeners")
        kraft = parse_kraft_settings(properties, listeners) if properties["process.roles"] else None
        if kraft is None:
            if len(listeners) != 1:
                raise ConfigError("listeners: exactly one PLAINTEXT listener is supported")
            listener = listeners[0]
            if listener.name != "PLAINTEXT":
                raise ConfigError(f"listeners: only PLAINTEXT is supported, got {listener.name}")
        else:
            listener = kraft.client_listener
        broker_listeners: tuple[Listener, ...] = ()
        if kraft is not None and kraft.is_broker:
            # Every broker listener with the address it advertises (advertised.listeners by
            # name, else the listener itself), registered with the controller.
            broker_listeners = tuple(
                next((item for item in advertised if item.name == own.name), own)
                for own in kraft.listeners
                if own.name not in kraft.controller_listener_names
            )
            for item in broker_listeners:
                if item.host in ("0.0.0.0", "::", ""):
                    raise ConfigError(
                        f"advertised.listeners: listener {item.name} has a wildcard host; "
                        "set a real address"
                    )
        advertised = [item for item in advertised if item.name == listener.name] or advertised
        advertised_listener = advertised[0] if advertised else listener
        if advertised_listener.host in ("0.0.0.0", "::", ""):
            raise ConfigError(
                "advertised.listeners: a wildcard host cannot be advertised; set a real address"
            )
        log_dirs = [part.strip() for part in properties["log.dirs"].split(",") if part.strip()]
        if len(log_dirs) != 1:
            raise ConfigError("log.dirs: exactly one directory is supported")
        timestamp_type = properties["log.message.timestamp.type"]
        if timestamp_type not in ("CreateTime", "LogAppendTime"):
            raise ConfigError(
                f"log.message.timestamp.type must be CreateTime or LogAppendTime, "
                f"got {timestamp_type!r}"
            )
        config = cls(
            properties=properties,
            node_id=_int(properties, "node.id"),
            listener=listener,
            advertised_listener=advertised_listener,
            log_dir=Path(log_dirs[0]),
            num_partitions=_int(properties, "num.partitions"),
            default_replication_factor=_int(properties, "default.replication.factor"),
            auto_create_topics_enable=_bool(properties, "auto.create.topics.enable"),
            delete_topic_enable=_bool(properties, "delete.topic.enable"),
            message_max_bytes=_int(properties, "message.max.bytes"),
            socket_request_max_bytes=_int(properties, "socket.request.max.bytes"),
            log_segment_bytes=_int(properties, "log.segment.bytes"),
            log_roll_ms=_milliseconds(
                properties, ("log.roll.ms", 1), ("log.roll.hours", 3_600_000)
            ),
            log_retention_ms=_milliseconds(
                properties,
                ("log.retention.ms", 1),
                ("log.retention.minutes", 60_000),
                ("log.retention.hours", 3_600_000),
            ),
            log_retention_bytes=_int(properties, "log.retention.bytes"),
            log_retention_check_interval_ms=_int(properties, "log.retention.check.interval.ms"),
            log_index_interval_bytes=_int(properties, "log.index.interval.bytes"),
            log_flush_interval_messages=_int(properties, "log.flush.interval.messages"),
            log_flush_interval_ms=_milliseconds(properties, ("log.flush.interval.ms", 1)),
            log_message_timestamp_type=timestamp_type,
            log_cleanup_policy=properties["log.cleanup.policy"],
            min_insync_replicas=_int(properties, "min.insync.replicas"),
            acks_all_fsync=_bool(properties, "odradek.acks.all.fsync"),
            storage_mode=_storage_mode(properties),
            cluster_id=properties["cluster.id"],
            unknown=tuple(sorted(set(overrides) - set(DEFAULTS))),
            unknown_or_set=frozenset(overrides),
            kraft=kraft,
            advertised_broker_listeners=broker_listeners,
        )
        for name in ("num.partitions", "default.replication.factor", "message.max.bytes"):
            if _int(properties, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        try:  # compression.*, the timestamp bounds: the topic configs' own validators
            log_config_from_overrides(LogConfig(), topic_defaults_from_broker(properties))
        except InvalidConfig as error:
            raise ConfigError(str(error)) from None
        config.group_config()  # checks the group settings now, not on first use
        config.transaction_config()
        if config.log_retention_ms < 0:
            # Kafka: -1 means keep forever.
            object.__setattr__(config, "log_retention_ms", -1)
        return config

    def group_config(self) -> GroupConfig:
        """The group coordinator's settings, checked as Kafka checks them at startup."""
        properties = self.properties

        def number(name: str) -> int:
            return _int(properties, name)

        assignors = tuple(
            _ASSIGNOR_CLASS_NAMES.get(name.strip(), name.strip())
            for name in properties["group.consumer.assignors"].split(",")
            if name.strip()
        )
        unknown = [name for name in assignors if name not in ("uniform", "range")]
        if not assignors or unknown:
            raise ConfigError(
                f"group.consumer.assignors: expected uniform and/or range, got {unknown or '-'}"
            )
        try:
            migration_policy = MigrationPolicy.parse(properties["group.consumer.migration.policy"])
        except ValueError as error:
            raise ConfigError(f"group.consumer.migration.policy: {error}") from None
        config = GroupConfig(
            consumer_migration_policy=migration_policy,
            offsets_topic_partitions=number("offsets.topic.num.partitions"),
            initial_rebalance_delay_ms=number("group.initial.rebalance.delay.ms"),
            min_session_timeout_ms=number("group.min.session.timeout.ms"),
            max_session_timeout_ms=number("group.max.session.timeout.ms"),
            max_size=number("group.max.size"),
            consumer_session_timeout_ms=number("group.consumer.session.timeout.ms"),
            consumer_min_session_timeout_ms=number("group.consumer.min.session.timeout.ms"),
            consumer_heartbeat_interval_ms=number("group.consumer.heartbeat.interval.ms"),
            consumer_min_heartbeat_interval_ms=number("group.consumer.min.heartbeat.interval.ms"),
            consumer_assignors=assignors,
            offsets_retention_ms=number("offsets.retention.minutes") * 60_000,
            offsets_retention_check_interval_ms=number("offsets.retention.check.interval.ms"),
            offset_metadata_max_bytes=number("offset.metadata.max.bytes"),
        )
        if config.offsets_topic_partitions < 1:
            raise ConfigError("offsets.topic.num.partitions must be at least 1")
        if config.consumer_session_timeout_ms < config.consumer_min_session_timeout_ms:
            raise ConfigError(
                "group.consumer.session.timeout.ms must be at least "
                "group.consumer.min.session.timeout.ms"
            )
        if config.consumer_heartbeat_interval_ms < config.consumer_min_heartbeat_interval_ms:
            raise ConfigError(
                "group.consumer.heartbeat.interval.ms must be at least "
                "group.consumer.min.heartbeat.interval.ms"
            )
        if config.consumer_heartbeat_interval_ms >= config.consumer_session_timeout_ms:
            raise ConfigError(
                "group.consumer.heartbeat.interval.ms must be lower than "
                "group.consumer.session.timeout.ms"
            )
        if config.min_session_timeout_ms > config.max_session_timeout_ms:
            raise ConfigError(
                "group.min.session.timeout.ms must not exceed group.max.session.timeout.ms"
            )
        return config

    def transaction_config(self) -> TransactionConfig:
        """The transaction coordinator's settings, checked as Kafka checks them at startup."""
        for name in (
            "transaction.max.timeout.ms",
            "transactional.id.expiration.ms",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            "producer.id.expiration.ms",
            "producer.id.expiration.check.interval.ms",
        ):
            if _int(self.properties, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        return TransactionConfig(
            transaction_max_timeout_ms=_int(self.properties, "transaction.max.timeout.ms"),
            transactional_id_expiration_ms=_int(self.properties, "transactional.id.expiration.ms"),
            broker_id=self.node_id,
        )

    def with_overrides(self, overrides: Mapping[str, str]) -> BrokerConfig:
        return BrokerConfig.from_properties({**self.properties, **overrides})


# Broker properties that are also the topic defaults under the same name (KIP-390).
_COMPRESSION_PROPERTIES = (
    "compression.type",
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.zstd.level",
)
# Broker properties that are the topic defaults without their `log.` prefix (KIP-937).
_TIMESTAMP_BOUND_PROPERTIES = (
    "log.message.timestamp.before.max.ms",
    "log.message.timestamp.after.max.ms",
)


def topic_defaults_from_broker(properties: Mapping[str, str]) -> dict[str, str]:
    """The broker properties that are topic configs' defaults under the topic config's name
    (`compression.*` as is; `log.message.timestamp.{before,after}.max.ms` without `log.`), for
    `log_config_from_overrides` to parse with the topic configs' own validators."""
    defaults = {name: properties[name] for name in _COMPRESSION_PROPERTIES if name in properties}
    for name in _TIMESTAMP_BOUND_PROPERTIES:
        if name in properties:
            defaults[name.removeprefix("log.")] = properties[name]
    return defaults
