"""DescribeConfigs for topics, the broker (and the cluster-wide default broker resource) and
groups (KIP-848 group configs)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.dynamic_configs import (
    broker_resource_error,
    describe_broker_configs,
    describe_group_configs,
)
from odradek.broker.topics import describe_topic_configs
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type

TOPIC = 2
BROKER = 4
GROUP = 32


@dispatcher.register(ApiKey.DESCRIBE_CONFIGS, 1, 4)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    module = response_module(ApiKey.DESCRIBE_CONFIGS, version)
    result_type = nested(module, "DescribeConfigsResult")
    entry_type = nested(module, "DescribeConfigsResourceResult")
    synonym_type = nested(module, "DescribeConfigsSynonym")
    include_synonyms = getattr(request, "include_synonyms", False)
    results = []
    for resource in request.resources:
        keys = resource.configuration_keys
        error, message, entries = ErrorCode.none, None, []
        if resource.resource_type == TOPIC and context.cluster is not None:
            # A cluster member answers from its image, hosting a replica or not.
            image = context.cluster.image
            if image.topic(resource.resource_name) is None:
                error = ErrorCode.unknown_topic_or_partition
                message = f"Topic '{resource.resource_name}' does not exist."
            else:
                overrides = image.configs.get((TOPIC, resource.resource_name), {})
                entries = describe_topic_configs(context, resource.resource_name, keys, overrides)
        elif resource.resource_type == TOPIC:
            if resource.resource_name not in context.logs.topics():
                error = ErrorCode.unknown_topic_or_partition
                message = f"Topic '{resource.resource_name}' does not exist."
            else:
                entries = describe_topic_configs(context, resource.resource_name, keys)
        elif resource.resource_type == BROKER:
            message = broker_resource_error(context, resource.resource_name)
            if message is not None:
                error = ErrorCode.invalid_request
            else:
                entries = describe_broker_configs(context, resource.resource_name, keys)
        elif resource.resource_type == GROUP:
            if not resource.resource_name:
                error = ErrorCode.invalid_request
                message = "Group name must not be empty"
            else:
                entries = describe_group_configs(context, resource.resource_name, keys)
        else:
            error = ErrorCode.invalid_request
            message = f"Unsupported resource type {resource.resource_type}."
        configs = tuple(
            make(
                entry_type,
                name=entry.name,
                value=entry.value,
                read_only=entry.read_only,
                is_default=entry.source == 5,
                config_source=entry.source,
                is_sensitive=False,
                synonyms=tuple(
                    make(synonym_type, name=name, value=value, source=source)
                    for name, value, source in entry.synonyms
                )
                if include_synonyms
                else (),
                config_type=entry.config_type,
                documentation=None,
            )
            for entry in entries
        )
        results.append(
            make(
                result_type,
                error_code=error,
                error_message=message,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
                configs=configs,
            )
        )
    return make(
        response_type(ApiKey.DESCRIBE_CONFIGS, version), throttle_time=0, results=tuple(results)
    )
