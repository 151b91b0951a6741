"""DeleteTopics, by name (v0-5) or by topic id (v6); the groups' offsets there go too."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import cluster_handlers, dispatcher
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


@dispatcher.register(ApiKey.DELETE_TOPICS, 1, 6)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    if context.cluster is not None:  # a cluster member: the controller decides
        return await cluster_handlers.forward(context, header, request)
    version = header.api_version
    module = response_module(ApiKey.DELETE_TOPICS, version)
    result_type = nested(module, "DeletableTopicResult")
    requested: list[tuple[str | None, Any]] = (
        [(topic.name, topic.topic_id) for topic in request.topics]
        if version >= 6
        else [(name, None) for name in request.topic_names]
    )
    results = []
    for name, topic_id in requested:
        metadata = (
            context.logs.topics().get(name)
            if name is not None
            else context.logs.topic_by_id(topic_id)
        )
        if metadata is None:
            error = (
                ErrorCode.unknown_topic_id if name is None else ErrorCode.unknown_topic_or_partition
            )
            results.append(
                make(
                    result_type, name=name, topic_id=topic_id, error_code=error, error_message=None
                )
            )
            continue
        if not context.config.delete_topic_enable:
            results.append(
                make(
                    result_type,
                    name=metadata.name,
                    topic_id=metadata.topic_id,
                    error_code=ErrorCode.topic_deletion_disabled,
                    error_message="Topic deletion is disabled (delete.topic.enable=false).",
                )
            )
            continue
        context.logs.delete_topic(metadata.name)
        context.forget_partitions(metadata.name)
        # The group coordinator drops the deleted partitions' committed offsets (Kafka's
        # onPartitionsDeleted), so a topic created again under this name starts afresh.
        await context.groups.partitions_deleted(
            [(metadata.name, index) for index in range(metadata.partitions)]
        )
        results.append(
            make(
                result_type,
                name=metadata.name,
                topic_id=metadata.topic_id,
                error_code=ErrorCode.none,
                error_message=None,
            )
        )
    return make(
        response_type(ApiKey.DELETE_TOPICS, version), throttle_time=0, responses=tuple(results)
    )
