"""Metadata: brokers, topics and partition leadership (one node leads everything)."""

from __future__ import annotations

import uuid
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import cluster_handlers, dispatcher
from odradek.broker.authorized_operations import cluster_operations, topic_operations
from odradek.broker.context import BrokerContext
from odradek.broker.topics import auto_create
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type
from odradek.storage.log_manager import TopicMetadata

ZERO_UUID = uuid.UUID(int=0)
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})


@dispatcher.register(ApiKey.METADATA, 0, 13)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    if context.cluster is not None:  # a cluster member: the controller decides
        return await cluster_handlers.metadata(context, header, request)
    version = header.api_version
    module = response_module(ApiKey.METADATA, version)
    topic_type = nested(module, "MetadataResponseTopic")
    partition_type = nested(module, "MetadataResponsePartition")
    node = context.node_id
    topic_operations_field = topic_operations(
        bool(getattr(request, "include_topic_authorized_operations", False))
    )

    def describe(name: str, topic: TopicMetadata | None, error: ErrorCode) -> Any:
        partitions = ()
        if topic is not None:
            partitions = tuple(
                make(
                    partition_type,
                    error_code=ErrorCode.none,
                    partition_index=index,
                    leader_id=node,
                    leader_epoch=0,
                    replica_nodes=(node,),
                    isr_nodes=(node,),
                    offline_replicas=(),
                )
                for index in range(topic.partitions)
            )
        return make(
            topic_type,
            error_code=error,
            name=name,
            topic_id=topic.topic_id if topic is not None else ZERO_UUID,
            is_internal=name in INTERNAL_TOPICS,
            partitions=partitions,
            topic_authorized_operations=topic_operations_field,
        )

    topics = context.logs.topics()
    # v0: an empty list means every topic; v1+: null means every topic.
    every_topic = request.topics is None or (version == 0 and not request.topics)
    allow_auto_create = getattr(request, "allow_auto_topic_creation", True)
    results = []
    if every_topic:
        results = [describe(name, topic, ErrorCode.none) for name, topic in sorted(topics.items())]
    else:
        for requested in request.topics:
            name = requested.name
            topic_id = getattr(requested, "topic_id", None)
            if name is None:
                found = context.logs.topic_by_id(topic_id) if topic_id else None
                if found is None:
                    results.append(
                        make(
                            topic_type,
                            error_code=ErrorCode.unknown_topic_id,
                            name=None,
                            topic_id=topic_id or ZERO_UUID,
                            partitions=(),
                        )
                    )
                    continue
                results.append(describe(found.name, found, ErrorCode.none))
                continue
            topic = topics.get(name)
            error = ErrorCode.none
            if topic is None:
                if allow_auto_create:
                    # Kafka answers LEADER_NOT_AVAILABLE for a topic it just created; one node
                    # leads every partition at once, so the new topic is described as ready.
                    topic, error = auto_create(context, name)
                else:
                    error = ErrorCode.unknown_topic_or_partition
            results.append(describe(name, topic, error))

    broker = make(
        nested(module, "MetadataResponseBroker"),
        node_id=node,
        host=context.advertised_host,
        port=context.advertised_port,
        rack=None,
    )
    return make(
        response_type(ApiKey.METADATA, version),
        throttle_time=0,
        brokers=(broker,),
        cluster_id=context.cluster_id,
        controller_id=node,
        topics=tuple(results),
        cluster_authorized_operations=cluster_operations(
            bool(getattr(request, "include_cluster_authorized_operations", False))
        ),
        error_code=ErrorCode.none,
    )
