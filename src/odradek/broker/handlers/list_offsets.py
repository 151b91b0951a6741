"""ListOffsets: earliest (-2), latest (-1), max timestamp (-3) and offsets by timestamp; from v8
earliest-local (-4, KIP-405) and from v9 latest-tiered (-5, KIP-1005). Without tiered storage
the local log starts at the log start offset, and nothing is tiered: -5 answers offset -1 with
leader epoch -1, as Kafka's UnifiedLog does when remote storage is off. v10's timeout only
bounds remote-storage reads, which Odradek never makes.

The isolation level (v2+) sets the upper bound: read_committed sees up to the last stable
offset, read_uncommitted up to the high watermark.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL_TIMESTAMP = -4
LATEST_TIERED_TIMESTAMP = -5
LEADER_EPOCH = 0
READ_COMMITTED = 1


@dispatcher.register(ApiKey.LIST_OFFSETS, 1, 10)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    module = response_module(ApiKey.LIST_OFFSETS, version)
    partition_type = nested(module, "ListOffsetsPartitionResponse")
    topic_type = nested(module, "ListOffsetsTopicResponse")

    def answer(
        index: int,
        error: ErrorCode,
        offset: int = -1,
        timestamp: int = -1,
        epoch: int = LEADER_EPOCH,
    ) -> Any:
        return make(
            partition_type,
            partition_index=index,
            error_code=error,
            timestamp=timestamp,
            offset=offset,
            leader_epoch=epoch if error == ErrorCode.none else -1,
            old_style_offsets=(),
        )

    read_committed = getattr(request, "isolation_level", 0) == READ_COMMITTED
    replicas = context.cluster.replicas if context.cluster is not None else None
    # KIP-207: only clients (v2+, which carry an isolation level) get OFFSET_NOT_AVAILABLE;
    # a follower (replica_id >= 0) reads the leader's log end offset.
    from_client = version >= 2 and request.replica_id < 0
    topics = []
    for topic in request.topics:
        partitions = []
        for partition in topic.partitions:
            index = partition.partition_index
            log = context.logs.log(topic.name, index)
            current_leader_epoch = getattr(partition, "current_leader_epoch", -1)
            epoch = LEADER_EPOCH
            if replicas is not None:
                # A cluster: the partition's leader answers, checked against its epoch.
                hosted, route_error, _leader = replicas.route(
                    topic.name, index, current_leader_epoch
                )
                if route_error is ErrorCode.none and hosted is not None:
                    error = hosted.state.list_offsets_error(from_client)
                    route_error = ErrorCode.none if error is None else error
                    epoch = hosted.state.leader_epoch
                if route_error is not ErrorCode.none:
                    partitions.append(answer(index, route_error))
                    continue
                current_leader_epoch = -1
            if log is None:
                partitions.append(answer(index, ErrorCode.unknown_topic_or_partition))
                continue
            if current_leader_epoch > LEADER_EPOCH:
                partitions.append(answer(index, ErrorCode.unknown_leader_epoch))
                continue
            upper = log.last_stable_offset if read_committed else log.high_watermark
            timestamp = partition.timestamp
            if timestamp == LATEST_TIMESTAMP:
                partitions.append(answer(index, ErrorCode.none, upper, epoch=epoch))
            elif timestamp == EARLIEST_TIMESTAMP or (
                timestamp == EARLIEST_LOCAL_TIMESTAMP and version >= 8
            ):
                partitions.append(answer(index, ErrorCode.none, log.log_start_offset, epoch=epoch))
            elif timestamp == LATEST_TIERED_TIMESTAMP and version >= 9:
                partitions.append(answer(index, ErrorCode.none, -1, -1, -1))
            elif timestamp < 0 and timestamp != MAX_TIMESTAMP:
                partitions.append(answer(index, ErrorCode.unsupported_version))
            else:
                # Kafka's Partition.fetchOffsetForTimestamp: a lookup by time and the max
                # timestamp both answer only an offset below the HW (read_committed: the LSO).
                if timestamp == MAX_TIMESTAMP:
                    found = log.max_timestamp_offset()
                else:
                    found = log.offset_for_timestamp(timestamp)
                if found is None or found[0] >= upper:
                    partitions.append(answer(index, ErrorCode.none))
                else:
                    partitions.append(answer(index, ErrorCode.none, found[0], found[1]))
        topics.append(make(topic_type, name=topic.name, partitions=tuple(partitions)))
    return make(response_type(ApiKey.LIST_OFFSETS, version), throttle_time=0, topics=tuple(topics))
