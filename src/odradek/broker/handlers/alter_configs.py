"""AlterConfigs (the legacy, whole-set form): a resource's overrides become exactly the given
set — a topic's, a broker's or the cluster default's (dynamic broker configs), a group's. On a
cluster the change goes to the controller as ConfigRecords (cluster_configs.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import cluster_configs, dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.dynamic_configs import alter_broker_configs, alter_group_configs
from odradek.broker.topics import alter_topic_configs
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type

TOPIC = 2
BROKER = 4
GROUP = 32

Alter = Callable[[Any], tuple[ErrorCode, str | None]]


def resource_result(
    result_type: type[Any], resource: Any, error: ErrorCode, message: str | None
) -> Any:
    return make(
        result_type,
        error_code=error,
        error_message=message,
        resource_type=resource.resource_type,
        resource_name=resource.resource_name,
    )


def alter_resources(
    api_key: ApiKey,
    version: int,
    resources: Any,
    alter_topic: Alter,
    alter_broker: Alter,
    alter_group: Alter,
) -> Any:
    """The response to an (Incremental)AlterConfigs request: each resource is answered by the
    callable for its type; other resource types are not supported."""
    result_type = nested(response_module(api_key, version), "AlterConfigsResourceResponse")
    results = []
    for resource in resources:
        if resource.resource_type == TOPIC:
            error, message = alter_topic(resource)
        elif resource.resource_type == BROKER:
            error, message = alter_broker(resource)
        elif resource.resource_type == GROUP:
            error, message = alter_group(resource)
        else:
            error, message = ErrorCode.invalid_request, "Unsupported resource type."
        results.append(resource_result(result_type, resource, error, message))
    return make(response_type(api_key, version), throttle_time=0, responses=tuple(results))


def _given(resource: Any, current: Any) -> tuple[dict[str, str] | None, str | None]:
    """AlterConfigs replaces every override of the resource with the given set."""
    del current
    return {c.name: c.value for c in resource.configs if c.value is not None}, None


@dispatcher.register(ApiKey.ALTER_CONFIGS, 0, 2)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    if context.cluster is not None:
        return await cluster_configs.alter_configs(context, header, request, _given)

    def alter_topic(resource: Any) -> tuple[ErrorCode, str | None]:
        overrides = {c.name: c.value for c in resource.configs if c.value is not None}
        failure = alter_topic_configs(
            context, resource.resource_name, overrides, validate_only=request.validate_only
        )
        return (failure.error_code, failure.message) if failure else (ErrorCode.none, None)

    def alter_broker(resource: Any) -> tuple[ErrorCode, str | None]:
        overrides = {c.name: c.value for c in resource.configs if c.value is not None}
        return alter_broker_configs(
            context, resource.resource_name, overrides, validate_only=request.validate_only
        )

    def alter_group(resource: Any) -> tuple[ErrorCode, str | None]:
        overrides = {c.name: c.value for c in resource.configs if c.value is not None}
        return alter_group_configs(
            context, resource.resource_name, overrides, validate_only=request.validate_only
        )

    return alter_resources(
        ApiKey.ALTER_CONFIGS,
        header.api_version,
        request.resources,
        alter_topic,
        alter_broker,
        alter_group,
    )
