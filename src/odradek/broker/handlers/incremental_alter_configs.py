"""IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on single topic, broker (dynamic
broker configs) and group configs; on a cluster they go to the controller as ConfigRecords
(cluster_configs.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import cluster_configs, dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.dynamic_configs import (
    DYNAMIC_BROKER_CONFIG_TYPES,
    LIST,
    alter_broker_configs,
    alter_group_configs,
    apply_operations,
    group_overrides,
)
from odradek.broker.handlers.alter_configs import alter_resources
from odradek.broker.topics import CONFIG_TYPES, alter_topic_configs, broker_default
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader
from odradek.storage.config_store import RESOURCE_BROKER

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
TOPIC, BROKER = 2, 4
LIST_TYPE = 7


def _apply(
    context: BrokerContext, topic: str, current: dict[str, str], operations: Any
) -> tuple[dict[str, str] | None, str | None]:
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
            if CONFIG_TYPES.get(name) != LIST_TYPE:
                return None, f"Config value append/subtract is not allowed for config {name!r}"
            # An override may be an empty list (cleanup.policy=""): that is the base then.
            base = updated[name] if name in updated else broker_default(context, name)
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


def _on_cluster(context: BrokerContext) -> cluster_configs.NewOverrides:
    """The operations applied to a resource's current overrides in the metadata image."""

    def new_overrides(
        resource: Any, current: Mapping[str, str]
    ) -> tuple[dict[str, str] | None, str | None]:
        if resource.resource_type == TOPIC:
            return _apply(context, resource.resource_name, dict(current), resource.configs)
        if resource.resource_type == BROKER:
            return apply_operations(
                current,
                resource.configs,
                lambda name: DYNAMIC_BROKER_CONFIG_TYPES.get(name) == LIST,
                lambda name: context.config.properties.get(name, ""),
            )
        return apply_operations(current, resource.configs, lambda name: False, lambda name: "")

    return new_overrides


@dispatcher.register(ApiKey.INCREMENTAL_ALTER_CONFIGS, 0, 1)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    if context.cluster is not None:
        return await cluster_configs.alter_configs(context, header, request, _on_cluster(context))

    def alter_topic(resource: Any) -> tuple[ErrorCode, str | None]:
        metadata = context.logs.topics().get(resource.resource_name)
        if metadata is None:
            return (
                ErrorCode.unknown_topic_or_partition,
                f"Topic '{resource.resource_name}' does not exist.",
            )
        updated, problem = _apply(
            context, resource.resource_name, dict(metadata.config), resource.configs
        )
        if updated is None:
            return ErrorCode.invalid_config, problem
        failure = alter_topic_configs(
            context, resource.resource_name, updated, validate_only=request.validate_only
        )
        if failure is not None:
            return failure.error_code, failure.message
        return ErrorCode.none, None

    def alter_broker(resource: Any) -> tuple[ErrorCode, str | None]:
        store = context.config_store
        current = store.image.configs(RESOURCE_BROKER, resource.resource_name) if store else {}
        updated, problem = apply_operations(
            current,
            resource.configs,
            lambda name: DYNAMIC_BROKER_CONFIG_TYPES.get(name) == LIST,
            lambda name: context.config.properties.get(name, ""),
        )
        if updated is None:
            return ErrorCode.invalid_config, problem
        return alter_broker_configs(
            context, resource.resource_name, updated, validate_only=request.validate_only
        )

    def alter_group(resource: Any) -> tuple[ErrorCode, str | None]:
        updated, problem = apply_operations(
            group_overrides(context, resource.resource_name),
            resource.configs,
            lambda name: False,
            lambda name: "",
        )
        if updated is None:
            return ErrorCode.invalid_config, problem
        return alter_group_configs(
            context, resource.resource_name, updated, validate_only=request.validate_only
        )

    return alter_resources(
        ApiKey.INCREMENTAL_ALTER_CONFIGS,
        header.api_version,
        request.resources,
        alter_topic,
        alter_broker,
        alter_group,
    )
