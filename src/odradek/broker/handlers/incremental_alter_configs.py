"""IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on single topic, broker (dynamic
broker configs) and group configs."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
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

LIST_TYPE = 7


@dispatcher.register(ApiKey.INCREMENTAL_ALTER_CONFIGS, 0, 1)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
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
            lambda name: CONFIG_TYPES.get(name) == LIST_TYPE,
            # An override may be an empty list (cleanup.policy=""): that is the base then.
            lambda overrides, name: (
                overrides[name] if name in overrides else broker_default(context, name)
            ),
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
            # Unlike a topic, an empty broker override counts as none: the base is the default.
            lambda overrides, name: overrides.get(name) or context.config.properties.get(name, ""),
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
