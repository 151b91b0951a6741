"""Dynamic configs of topics, brokers and groups (Kafka's ConfigurationControlManager).

Configs are ConfigRecords keyed by (resource type, resource name, config name); a record with a
null value deletes the key. Broker resource name "" holds the cluster-wide broker defaults.
IncrementalAlterConfigs' SET / DELETE / APPEND / SUBTRACT (list configs are comma-separated)
become ConfigRecords; topic values are checked with the storage layer's parsers (INVALID_CONFIG).

`unclean_leader_election_enabled_for_topic` resolves `unclean.leader.election.enable` as Kafka
does: the topic's config, else the cluster-wide broker default, else the controller's static
setting (false unless configured).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from kio.schema.errors import ErrorCode

from odradek.controller.messages import (
    AlterConfigOp,
    AlterConfigsResource,
    AlterConfigsResourceResponse,
)
from odradek.controller.records import ConfigRecord, ConfigResourceType
from odradek.storage.errors import InvalidConfig
from odradek.storage.log import LogConfig
from odradek.storage.log_manager import log_config_from_overrides

UNCLEAN_LEADER_ELECTION_ENABLE = "unclean.leader.election.enable"
_BOOLEAN_CONFIGS = frozenset({UNCLEAN_LEADER_ELECTION_ENABLE})

ConfigKey = tuple[int, str]


def validate_configs(resource_type: int, values: Mapping[str, str | None]) -> str | None:
    """Why `values` cannot be set on a resource of this type, or None when they can."""
    for name, value in values.items():
        if value is None:
            return f"Null value not supported for config {name}"
        if name in _BOOLEAN_CONFIGS and value.strip().lower() not in ("true", "false"):
            return f"Invalid value {value} for configuration {name}: Expected value to be a boolean"
    if resource_type == ConfigResourceType.TOPIC:
        try:
            log_config_from_overrides(LogConfig(), {k: v for k, v in values.items() if v})
        except InvalidConfig as error:
            return str(error)
    return None


class ConfigurationControlManager:
    """Configs per resource, from ConfigRecords."""

    def __init__(self, static_broker_defaults: Mapping[str, str] | None = None) -> None:
        #: The controller's own settings (server.properties), below every dynamic config.
        self.static_broker_defaults = dict(static_broker_defaults or {})
        self.configs: dict[ConfigKey, dict[str, str]] = {}

    def config(self, resource_type: int, resource_name: str) -> Mapping[str, str]:
        return self.configs.get((resource_type, resource_name), {})

    def topic_config(self, topic: str) -> Mapping[str, str]:
        return self.config(ConfigResourceType.TOPIC, topic)

    def unclean_leader_election_enabled_for_topic(self, topic: str) -> bool:
        for source in (
            self.topic_config(topic),
            self.config(ConfigResourceType.BROKER, ""),
            self.static_broker_defaults,
        ):
            value = source.get(UNCLEAN_LEADER_ELECTION_ENABLE)
            if value is not None:
                return value.strip().lower() == "true"
        return False

    def topic_config_records(
        self, topic: str, values: Iterable[tuple[str, str]]
    ) -> tuple[ConfigRecord, ...]:
        return tuple(
            ConfigRecord(ConfigResourceType.TOPIC, topic, name, value) for name, value in values
        )

    def incremental_alter_configs(
        self,
        resources: Iterable[AlterConfigsResource],
        topic_exists: Callable[[str], bool],
    ) -> tuple[list[ConfigRecord], list[AlterConfigsResourceResponse]]:
        """Records and per-resource results for IncrementalAlterConfigs.

        Errors: UNKNOWN_TOPIC_OR_PARTITION for a topic that does not exist, INVALID_REQUEST for
        a broker name that is not "" or an id, an unknown resource type or operation,
        INVALID_CONFIG for a value that does not parse.
        """
        records: list[ConfigRecord] = []
        responses: list[AlterConfigsResourceResponse] = []
        for resource in resources:
            error, message, changes = self._changes(resource, topic_exists)
            responses.append(
                AlterConfigsResourceResponse(
                    resource.resource_type, resource.resource_name, error, message
                )
            )
            if error is ErrorCode.none:
                records.extend(
                    ConfigRecord(resource.resource_type, resource.resource_name, name, value)
                    for name, value in changes.items()
                )
        return records, responses

    def _changes(
        self, resource: AlterConfigsResource, topic_exists: Callable[[str], bool]
    ) -> tuple[ErrorCode, str | None, dict[str, str | None]]:
        kind, name = resource.resource_type, resource.resource_name
        if kind == ConfigResourceType.TOPIC:
            if not topic_exists(name):
                return ErrorCode.unknown_topic_or_partition, f"Topic {name} does not exist", {}
        elif kind == ConfigResourceType.BROKER:
            if name and not name.isdigit():
                return ErrorCode.invalid_request, f"Invalid broker name {name}", {}
        elif kind != ConfigResourceType.GROUP:
            return ErrorCode.invalid_request, f"Unsupported resource type {kind}", {}
        current = dict(self.config(kind, name))
        changes: dict[str, str | None] = {}
        for config in resource.configs:
            op = config.config_operation
            if op == AlterConfigOp.SET:
                if config.value is None:
                    return ErrorCode.invalid_config, f"Null value for {config.name}", {}
                changes[config.name] = config.value
            elif op == AlterConfigOp.DELETE:
                changes[config.name] = None
            elif op in (AlterConfigOp.APPEND, AlterConfigOp.SUBTRACT):
                existing = changes.get(config.name, current.get(config.name))
                items = [item for item in (existing or "").split(",") if item]
                given = [item for item in (config.value or "").split(",") if item]
                if op == AlterConfigOp.APPEND:
                    items += [item for item in given if item not in items]
                else:
                    items = [item for item in items if item not in given]
                changes[config.name] = ",".join(items)
            else:
                return ErrorCode.invalid_request, f"Unknown operation {op}", {}
        merged = {**current, **changes}
        problem = validate_configs(kind, {k: v for k, v in merged.items() if v is not None})
        if problem is not None:
            return ErrorCode.invalid_config, problem, {}
        return ErrorCode.none, None, changes

    def delete_topic_configs(self, topic: str) -> None:
        self.configs.pop((ConfigResourceType.TOPIC, topic), None)

    def replay(self, record: ConfigRecord) -> None:
        key = (record.resource_type, record.resource_name)
        if record.value is None:
            values = self.configs.get(key)
            if values is not None:
                values.pop(record.name, None)
                if not values:
                    del self.configs[key]
        else:
            self.configs.setdefault(key, {})[record.name] = record.value
