"""CreateTopics: partitions, replication factor (one broker: at most 1) and topic configs."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import cluster_handlers, dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.topics import create_topic, describe_topic_configs
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type

# Kafka's ReplicationControlManager.MAX_PARTITIONS_PER_BATCH: a request asking for more partitions
# than this in total is refused whole, before anything is created.
MAX_PARTITIONS_PER_REQUEST = 10_000
TOO_MANY_PARTITIONS = "Excessively large number of partitions per request."


def requested_partitions(topics: Any, default_partitions: int) -> int:
    """The partitions a CreateTopics request asks for, counted as Kafka's
    validateTotalNumberOfPartitions does (-1 is the default, other non-positive counts none)."""
    total = 0
    for topic in topics:
        if topic.assignments:
            total += len(topic.assignments)
        elif topic.num_partitions == -1:
            total += default_partitions
        elif topic.num_partitions > 0:
            total += topic.num_partitions
    return total


@dispatcher.register(ApiKey.CREATE_TOPICS, 2, 7)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    if context.cluster is not None:  # a cluster member: the controller decides
        return await cluster_handlers.forward(context, header, request)
    version = header.api_version
    module = response_module(ApiKey.CREATE_TOPICS, version)
    result_type = nested(module, "CreatableTopicResult")
    config_type = nested(module, "CreatableTopicConfigs") if version >= 5 else None

    def failed(name: str, error: ErrorCode, message: str | None) -> Any:
        return make(
            result_type,
            name=name,
            topic_id=None,
            error_code=error,
            error_message=message,
            topic_config_error_code=0,
            num_partitions=-1,
            replication_factor=-1,
            configs=None,
        )

    if requested_partitions(request.topics, context.config.num_partitions) > (
        MAX_PARTITIONS_PER_REQUEST
    ):
        names = dict.fromkeys(topic.name for topic in request.topics)
        return make(
            response_type(ApiKey.CREATE_TOPICS, version),
            throttle_time=0,
            topics=tuple(
                failed(name, ErrorCode.policy_violation, TOO_MANY_PARTITIONS) for name in names
            ),
        )
    results = []
    seen: set[str] = set()
    duplicates = {
        topic.name
        for topic in request.topics
        if [t.name for t in request.topics].count(topic.name) > 1
    }
    for topic in request.topics:
        if topic.name in duplicates:
            if topic.name in seen:
                continue
            seen.add(topic.name)
            results.append(
                failed(
                    topic.name,
                    ErrorCode.invalid_request,
                    f"Duplicate topic name {topic.name!r} in the request.",
                )
            )
            continue
        configs = {
            config.name: config.value for config in topic.configs if config.value is not None
        }
        num_partitions = topic.num_partitions
        replication_factor = topic.replication_factor
        if topic.assignments:
            # Manual assignment: every replica list must name this broker alone.
            num_partitions = len(topic.assignments)
            replication_factor = max(len(a.broker_ids) for a in topic.assignments)
            if (
                any(list(a.broker_ids) != [context.node_id] for a in topic.assignments)
                and replication_factor <= 1
            ):
                results.append(
                    failed(
                        topic.name,
                        ErrorCode.invalid_replica_assignment,
                        "Replica assignment names an unknown broker.",
                    )
                )
                continue
        created, error = create_topic(
            context,
            topic.name,
            num_partitions,
            replication_factor,
            configs,
            validate_only=request.validate_only,
        )
        if error is not None:
            results.append(failed(topic.name, error.error_code, error.message))
            continue
        described = ()
        if config_type is not None:
            described = tuple(
                make(
                    config_type,
                    name=entry.name,
                    value=entry.value,
                    read_only=entry.read_only,
                    config_source=entry.source,
                    is_sensitive=False,
                )
                for entry in describe_topic_configs(
                    context, topic.name, None, configs if created is None else None
                )
            )
        results.append(
            make(
                result_type,
                name=topic.name,
                topic_id=created.topic_id if created is not None else None,
                error_code=ErrorCode.none,
                error_message=None,
                topic_config_error_code=0,
                num_partitions=num_partitions
                if num_partitions != -1
                else context.config.num_partitions,
                replication_factor=1,
                configs=described,
            )
        )
    return make(
        response_type(ApiKey.CREATE_TOPICS, version), throttle_time=0, topics=tuple(results)
    )
