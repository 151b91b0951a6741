"""OffsetForLeaderEpoch: the end offset of a leader epoch (KIP-101/KIP-320).

Answered from the partition's leader-epoch cache, as Kafka's Partition.lastOffsetForLeaderEpoch:
a `current_leader_epoch` (-1: no check) below the log's leader epoch is FENCED_LEADER_EPOCH,
above it UNKNOWN_LEADER_EPOCH; otherwise the requested epoch's end offset (the log end offset
for the latest epoch), or -1/-1 for an epoch the cache cannot place. A single broker leads in
epoch 0 from the log's start. In a cluster the partition's leader epoch is the metadata's, and
whoever asks (a consumer, a follower, or a v2 request that names no replica) a broker that does
not lead gets NOT_LEADER_OR_FOLLOWER: Kafka's ReplicaManager.lastOffsetForLeaderEpoch passes
fetchOnlyFromLeader = true.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type
from odradek.replication.truncation import last_offset_for_leader_epoch


@dispatcher.register(ApiKey.OFFSET_FOR_LEADER_EPOCH, 2, 4)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    module = response_module(ApiKey.OFFSET_FOR_LEADER_EPOCH, version)
    partition_type = nested(module, "EpochEndOffset")
    topic_type = nested(module, "OffsetForLeaderTopicResult")
    replicas = context.cluster.replicas if context.cluster is not None else None
    topics = []
    for topic in request.topics:
        partitions = []
        for partition in topic.partitions:
            log = context.logs.log(topic.topic, partition.partition)
            error, epoch, end_offset = ErrorCode.none, -1, -1
            if replicas is not None:
                hosted, error, _leader = replicas.route(topic.topic, partition.partition)
                if hosted is not None:
                    answer = last_offset_for_leader_epoch(
                        hosted.log.leader_epoch_cache,
                        hosted.log.log_end_offset,
                        partition.leader_epoch,
                        current_leader_epoch=partition.current_leader_epoch,
                        leader_epoch=hosted.state.leader_epoch,
                        is_leader=hosted.state.is_leader,
                        fetch_only_from_leader=True,
                    )
                    error, epoch, end_offset = (
                        answer.error,
                        answer.leader_epoch,
                        answer.end_offset,
                    )
                if hosted is not None or error is not ErrorCode.none:
                    partitions.append(
                        make(
                            partition_type,
                            error_code=error,
                            partition=partition.partition,
                            leader_epoch=epoch,
                            end_offset=end_offset,
                        )
                    )
                    continue
            if log is None:
                error = ErrorCode.unknown_topic_or_partition
            elif partition.current_leader_epoch > log.leader_epoch:
                error = ErrorCode.unknown_leader_epoch
            elif 0 <= partition.current_leader_epoch < log.leader_epoch:
                error = ErrorCode.fenced_leader_epoch
            else:
                epoch, end_offset = log.end_offset_for_epoch(partition.leader_epoch)
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
