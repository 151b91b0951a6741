"""IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on single topic, broker (dynamic
broker configs) and group configs; on a cluster they go to the controller as ConfigRecords
(cluster_configs.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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

TOPIC, BROKER = 2, 4
LIST_TYPE = 7


def _topic_list_base(context: BrokerContext) -> Callable[[Mapping[str, str], str], str]:
    # An override may be an empty list (cleanup.policy=""): that is the base then.
    return lambda overrides, name: (
        overrides[name] if name in overrides else broker_default(context, name)
    )


def _broker_list_base(context: BrokerContext) -> Callable[[Mapping[str, str], str], str]:
    # Unlike a topic, an empty broker override counts as none: the base is the default.
    return lambda overrides, name: overrides.get(name) or context.config.properties.get(name, "")


def _is_topic_list(name: str) -> bool:
    return CONFIG_TYPES.get(name) == LIST_TYPE


def _is_broker_list(name: str) -> bool:
    return DYNAMIC_BROKER_CONFIG_TYPES.get(name) == LIST


def _on_cluster(context: BrokerContext) -> cluster_configs.NewOverrides:
    """The operations applied to a resource's current overrides in the metadata image."""

    def new_overrides(
        resource: Any, current: Mapping[str, str]
    ) -> tuple[dict[str, str] | None, str | None]:
        if resource.resource_type == TOPIC:
            return apply_operations(
                current, resource.configs, _is_topic_list, _topic_list_base(context)
            )
        if resource.resource_type == BROKER:
            return apply_operations(
                current, resource.configs, _is_broker_list, _broker_list_base(context)
            )
        return apply_operations(current, resource.configs, lambda name: False, lambda o, n: "")

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
        updated, problem = apply_operations(
            metadata.config,
            resource.configs,
            _is_topic_list,
            _topic_list_base(context),
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
            _is_broker_list,
            _broker_list_base(context),
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
            lambda overrides, name: "",
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
