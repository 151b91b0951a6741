"""OffsetForLeaderEpoch: the end offset of a leader epoch (KIP-101/KIP-320).

One node has only ever had leader epoch 0, so epoch 0 ends at the log end offset, and any
later epoch is unknown.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type

LEADER_EPOCH = 0


@dispatcher.register(ApiKey.OFFSET_FOR_LEADER_EPOCH, 2, 4)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    module = response_module(ApiKey.OFFSET_FOR_LEADER_EPOCH, version)
    partition_type = nested(module, "EpochEndOffset")
    topic_type = nested(module, "OffsetForLeaderTopicResult")
    topics = []
    for topic in request.topics:
        partitions = []
        for partition in topic.partitions:
            log = context.logs.log(topic.topic, partition.partition)
            error, epoch, end_offset = ErrorCode.none, -1, -1
            if log is None:
                error = ErrorCode.unknown_topic_or_partition
            elif partition.current_leader_epoch > LEADER_EPOCH:
                error = ErrorCode.unknown_leader_epoch
            elif partition.leader_epoch >= LEADER_EPOCH:
                epoch, end_offset = LEADER_EPOCH, log.log_end_offset
            partitions.append(
                make(
                    partition_type,
                    error_code=error,
                    partition=partition.partition,
                    leader_epoch=epoch,
                    end_offset=end_offset,
                )
            )
        topics.append(make(topic_type, topic=topic.topic, partitions=tuple(partitions)))
    return make(
        response_type(ApiKey.OFFSET_FOR_LEADER_EPOCH, version),
        throttle_time=0,
        topics=tuple(topics),
    )
