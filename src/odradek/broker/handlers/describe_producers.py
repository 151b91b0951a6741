"""DescribeProducers: the producers each partition remembers (KIP-664's first step)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


@dispatcher.register(ApiKey.DESCRIBE_PRODUCERS, 0, 0)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    module = response_module(ApiKey.DESCRIBE_PRODUCERS, version)
    topic_type = nested(module, "TopicResponse")
    partition_type = nested(module, "PartitionResponse")
    state_type = nested(module, "ProducerState")
    topics = []
    for topic in request.topics:
        partitions = []
        for index in topic.partition_indexes:
            log = context.logs.log(topic.name, index)
            if log is None:
                partitions.append(
                    make(
                        partition_type,
                        partition_index=index,
                        error_code=ErrorCode.unknown_topic_or_partition,
                        error_message=None,
                        active_producers=(),
                    )
                )
                continue
            producers = tuple(
                make(
                    state_type,
                    producer_id=view.producer_id,
                    producer_epoch=view.producer_epoch,
                    last_sequence=view.last_sequence,
                    last_timestamp=view.last_timestamp,
                    coordinator_epoch=view.coordinator_epoch,
                    current_txn_start_offset=view.current_txn_start_offset,
                )
                for view in log.producer_states()
            )
            partitions.append(
                make(
                    partition_type,
                    partition_index=index,
                    error_code=ErrorCode.none,
                    error_message=None,
                    active_producers=producers,
                )
            )
        topics.append(make(topic_type, name=topic.name, partitions=tuple(partitions)))
    return make(
        response_type(ApiKey.DESCRIBE_PRODUCERS, version), throttle_time=0, topics=tuple(topics)
    )
