"""What every handler may reach: configuration, the logs, the purgatory, the broker's identity."""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from odradek.broker.clock import now_ms
from odradek.broker.config import DEFAULTS, BrokerConfig, topic_defaults_from_broker
from odradek.broker.group_runtime import GroupRuntime
from odradek.broker.purgatory import DataArrived, GroupCommit
from odradek.broker.txn_runtime import TxnRuntime
from odradek.storage.config_store import RESOURCE_BROKER, ConfigStore
from odradek.storage.log import LogConfig
from odradek.storage.log_manager import LogManager, log_config_from_overrides

if TYPE_CHECKING:
    from odradek.broker.cluster_member import ClusterMember


logger = logging.getLogger(__name__)

# Kafka's ConfigSource values for a broker property.
DYNAMIC_BROKER_CONFIG = 2
DYNAMIC_DEFAULT_BROKER_CONFIG = 3
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5


def default_log_config(config: BrokerConfig) -> LogConfig:
    """Broker-level `log.*` properties (and `compression.*`, named as the topic configs are)
    become the default for every topic. Raises InvalidConfig for a value Kafka refuses."""
    default = LogConfig(
        segment_bytes=config.log_segment_bytes,
        segment_ms=config.log_roll_ms,
        retention_ms=config.log_retention_ms,
        retention_bytes=config.log_retention_bytes,
        index_interval_bytes=config.log_index_interval_bytes,
        flush_messages=config.log_flush_interval_messages,
        flush_ms=config.log_flush_interval_ms,
        max_message_bytes=config.message_max_bytes,
        message_timestamp_type=config.log_message_timestamp_type,
        cleanup_policy=config.log_cleanup_policy,
    )
    return log_config_from_overrides(default, topic_defaults_from_broker(config.properties))


#: The listener name of the connection whose request is being handled (None: not set, e.g. a
#: single broker): a cluster member answers Metadata with that listener's endpoints, as Kafka.
CURRENT_LISTENER: ContextVar[str | None] = ContextVar("odradek_current_listener", default=None)


@dataclass
class BrokerContext:
    config: BrokerConfig
    logs: LogManager
    cluster_id: str
    advertised_host: str
    advertised_port: int
    data_arrived: DataArrived = field(default_factory=DataArrived)
    _group_commits: dict[tuple[str, int], GroupCommit] = field(default_factory=dict)
    # The group coordinator (consumer groups and committed offsets).
    groups: GroupRuntime = field(init=False)
    # The transaction coordinator (producer ids, transactions, markers).
    transactions: TxnRuntime = field(init=False)
    # server.properties / CLI as given; `config` is this plus the dynamic broker configs.
    static_config: BrokerConfig | None = None
    # Dynamic broker and group configs (dynamic_configs.py); None: not persisted.
    config_store: ConfigStore | None = None
    # This broker's registration and metadata image when a controller is configured
    # (process.roles); None for a single broker, which answers everything from its own logs.
    cluster: ClusterMember | None = None
    # A cluster broker's listeners: name -> (advertised host, port), ports resolved at start.
    listener_endpoints: dict[str, tuple[str, int]] = field(default_factory=dict)
    # A cluster broker reads no request before this is set: when the controller first unfences
    # it (Kafka's BrokerServer enables request processing only then). None: a single broker.
    serving: asyncio.Event | None = None

    def __post_init__(self) -> None:
        self.groups = GroupRuntime(self.config, self.logs, self.data_arrived, self.group_commit)
        self.transactions = TxnRuntime(
            self.config, self.logs, self.data_arrived, self.group_commit, self.groups
        )

    def broker_property_layers(self, name: str) -> list[tuple[str, int]]:
        """(value, ConfigSource) of every layer that sets broker property `name`, highest
        precedence first: this broker's dynamic value, the dynamic cluster default, the static
        configuration, Kafka's default (KIP-226's order)."""
        layers: list[tuple[str, int]] = []
        if self.config_store is not None:
            image = self.config_store.image
            for resource_name, source in (
                (str(self.node_id), DYNAMIC_BROKER_CONFIG),
                ("", DYNAMIC_DEFAULT_BROKER_CONFIG),
            ):
                value = image.configs(RESOURCE_BROKER, resource_name).get(name)
                if value is not None:
                    layers.append((value, source))
        static = self.static_config or self.config
        if name in static.unknown_or_set:
            layers.append((static.properties[name], STATIC_BROKER_CONFIG))
        if name in DEFAULTS:
            layers.append((DEFAULTS[name], DEFAULT_CONFIG))
        return layers

    def broker_property_source(self, name: str) -> int:
        """Where the effective value of broker property `name` comes from (ConfigSource)."""
        layers = self.broker_property_layers(name)
        return layers[0][1] if layers else DEFAULT_CONFIG

    @property
    def node_id(self) -> int:
        return self.config.node_id

    @staticmethod
    def now_ms() -> int:
        return now_ms()

    def group_commit(self, topic: str, partition: int) -> GroupCommit | None:
        log = self.logs.log(topic, partition)
        if log is None:
            return None
        key = (topic, partition)
        commit = self._group_commits.get(key)
        if commit is None or commit.log is not log:
            commit = GroupCommit(log)
            self._group_commits[key] = commit
        return commit

    def flushes_in_flight(self) -> list[asyncio.Task[None]]:
        """The group commits' fdatasync tasks still running (a shutdown lets them finish
        before it closes the logs under them)."""
        return [
            commit.flushing
            for commit in self._group_commits.values()
            if commit.flushing is not None
        ]

    def forget_partitions(self, topic: str) -> None:
        for key in [key for key in self._group_commits if key[0] == topic]:
            del self._group_commits[key]
