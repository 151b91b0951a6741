"""Fetch: raw batch bytes from the log, long-polled on MinBytes / MaxWaitMs.

The response is a list of buffers (headers + the log's bytes), never joined into one copy.
read_uncommitted reads to the high watermark (aborted data included, as in Kafka);
read_committed stops at the last stable offset and carries the aborted transactions that
overlap what it may read, which the client uses to drop aborted batches.

In a cluster (`process.roles`): a consumer's partition is routed to its leader
(NOT_LEADER_OR_FOLLOWER, with CurrentLeader and NodeEndpoints from v16; LEADER_NOT_AVAILABLE;
KIP-320 epoch errors against the partition's leader epoch) and reads up to the HW; a replica's
Fetch (replica_id >= 0, or ReplicaState from v15) is validated by the leader (diverging epoch,
OFFSET_OUT_OF_RANGE), records the follower's position (HW, ISR expansion) and reads up to the
log end offset (replica_manager.py).

Incremental fetch sessions (KIP-227) are answered as "no session" (session id 0): every fetch
is a full fetch, which Kafka clients accept.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.replica_manager import HostedPartition, ReplicaManager
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader
from odradek.protocol.hot_encoders import (
    EpochEndOffset,
    FetchPartitionResult,
    FetchResponseData,
    FetchTopicResult,
    LeaderIdAndEpoch,
    encode_fetch_response,
)
from odradek.storage.log import OffsetOutOfRange, PartitionLog

READ_COMMITTED = 1
LEADER_EPOCH = 0


@dataclass(slots=True)
class _Wanted:
    name: str | None
    topic_id: uuid.UUID | None
    partition: int
    fetch_offset: int
    partition_max_bytes: int
    current_leader_epoch: int
    last_fetched_epoch: int = -1
    log_start_offset: int = -1


def _wanted(version: int, request: Any, context: BrokerContext) -> list[_Wanted]:
    wanted = []
    for topic in request.topics:
        if version >= 13:
            metadata = context.logs.topic_by_id(topic.topic_id)
            name = metadata.name if metadata is not None else None
            if name is None and context.cluster is not None:
                # A topic of the cluster with no replica here is named by the image (Kafka's
                # metadataCache.topicIdsToNames), so it is routed to its leader rather than
                # answered UNKNOWN_TOPIC_ID.
                known = context.cluster.image.topics_by_id.get(topic.topic_id)
                name = known.name if known is not None else None
            topic_id = topic.topic_id
        else:
            name = topic.topic
            metadata = context.logs.topics().get(name)
            topic_id = metadata.topic_id if metadata is not None else None
        for partition in topic.partitions:
            wanted.append(
                _Wanted(
                    name,
                    topic_id,
                    partition.partition,
                    partition.fetch_offset,
                    partition.partition_max_bytes,
                    getattr(partition, "current_leader_epoch", -1),
                    getattr(partition, "last_fetched_epoch", -1),
                    getattr(partition, "log_start_offset", -1),
                )
            )
    return wanted


def _read_all(
    context: BrokerContext,
    wanted: list[_Wanted],
    max_bytes: int,
    read_committed: bool,
    replicas: ReplicaManager | None = None,
    leaders: set[int] | None = None,
) -> tuple[list[FetchPartitionResult], int, bool]:
    """Read every wanted partition once; return results, bytes read and whether any error.

    `replicas` (a broker in a cluster): each partition is first routed to its leader —
    NOT_LEADER_OR_FOLLOWER with the current leader when `leaders` is given (v16+; the
    leader is added to it for NodeEndpoints),
    LEADER_NOT_AVAILABLE, or the KIP-320 epoch errors against the partition's leader epoch."""
    results = []
    total = 0
    any_error = False
    for item in wanted:
        if replicas is not None and item.name is not None:
            _hosted, route_error, leader = replicas.route(
                item.name, item.partition, item.current_leader_epoch
            )
            if route_error is not ErrorCode.none:
                any_error = True
                if leader is not None and leaders is not None:
                    leaders.add(leader.leader_id)
                results.append(_empty(item, route_error, leader if leaders is not None else None))
                continue
            if _hosted is not None:
                # The epoch was checked against the partition's own leader epoch.
                result, size = _read_one(
                    context, item, _hosted.log, max_bytes - total, total, read_committed
                )
                total += size
                any_error = any_error or result.error_code != ErrorCode.none
                results.append(result)
                continue
        log = context.logs.log(item.name, item.partition) if item.name is not None else None
        if log is None:
            any_error = True
            results.append(
                _empty(
                    item,
                    ErrorCode.unknown_topic_id
                    if item.topic_id is not None and item.name is None
                    else ErrorCode.unknown_topic_or_partition,
                )
            )
            continue
        if item.current_leader_epoch > LEADER_EPOCH:
            any_error = True
            results.append(_empty(item, ErrorCode.unknown_leader_epoch))
            continue
        result, size = _read_one(context, item, log, max_bytes - total, total, read_committed)
        total += size
        any_error = any_error or result.error_code != ErrorCode.none
        results.append(result)
    return results, total, any_error


def _read_one(
    context: BrokerContext,
    item: _Wanted,
    log: PartitionLog,
    bytes_left: int,
    total: int,
    read_committed: bool,
    max_offset: int | None = None,
) -> tuple[FetchPartitionResult, int]:
    """Read one partition up to the HW (read_committed: the LSO; `max_offset` for a replica:
    the log end offset); return its result and the bytes read."""
    high_watermark = log.high_watermark
    last_stable_offset = log.last_stable_offset
    replica = max_offset is not None
    if max_offset is None:
        max_offset = last_stable_offset if read_committed else high_watermark
    try:
        read = log.read(
            item.fetch_offset,
            max(0, min(item.partition_max_bytes, bytes_left)),
            max_offset,
            min_one_batch=total == 0,
            shared=replica,
        )
    except OffsetOutOfRange:
        return (
            FetchPartitionResult(
                partition_index=item.partition,
                error_code=ErrorCode.offset_out_of_range,
                high_watermark=high_watermark,
                last_stable_offset=last_stable_offset,
                log_start_offset=log.log_start_offset,
                aborted_transactions=[] if read_committed else None,
                records=b"",
            ),
            0,
        )
    aborted: list[tuple[int, int]] | None = None
    if read_committed:
        # Kafka sends a list (maybe empty) to read_committed readers and null otherwise.
        # The upper bound is the LSO rather than the end of the batches returned: a few
        # extra entries beyond the data are harmless and spare parsing the batch headers.
        aborted = (
            log.aborted_transactions(item.fetch_offset, last_stable_offset) if read.records else []
        )
    return (
        FetchPartitionResult(
            partition_index=item.partition,
            error_code=ErrorCode.none,
            high_watermark=high_watermark,
            last_stable_offset=last_stable_offset,
            log_start_offset=log.log_start_offset,
            aborted_transactions=aborted,
            records=read.records,
        ),
        len(read.records),
    )


def _empty(
    item: _Wanted, error_code: ErrorCode, current_leader: LeaderIdAndEpoch | None = None
) -> FetchPartitionResult:
    return FetchPartitionResult(
        partition_index=item.partition,
        error_code=error_code,
        high_watermark=-1,
        last_stable_offset=-1,
        log_start_offset=-1,
        aborted_transactions=None,
        records=b"",
        current_leader=current_leader,
    )


def _replica_fetch_checks(
    replicas: ReplicaManager,
    wanted: list[_Wanted],
    replica_id: int,
    broker_epoch: int,
) -> list[FetchPartitionResult | HostedPartition]:
    """The leader's side of a replica Fetch, before reading: per partition an answer (an
    error, or a diverging epoch without records) or the partition to read up to its log end
    offset. A follower that may read has its position recorded (HW, ISR expansion)."""
    checked: list[FetchPartitionResult | HostedPartition] = []
    for item in wanted:
        hosted = replicas.partition(item.name, item.partition) if item.name is not None else None
        if hosted is None:
            checked.append(
                _empty(
                    item,
                    ErrorCode.unknown_topic_id
                    if item.name is None
                    else ErrorCode.not_leader_or_follower,
                )
            )
            continue
        check = replicas.replica_fetch_check(
            hosted, item.fetch_offset, item.last_fetched_epoch, item.current_leader_epoch
        )
        error = check.error
        if error is None and check.diverging_epoch is None:
            error = replicas.record_follower_fetch(
                hosted, replica_id, broker_epoch, item.fetch_offset, item.log_start_offset
            )
            if error is None:
                checked.append(hosted)
                continue
        log = hosted.log
        diverging = check.diverging_epoch
        checked.append(
            FetchPartitionResult(
                partition_index=item.partition,
                error_code=ErrorCode.none if error is None else error,
                high_watermark=log.high_watermark,
                last_stable_offset=log.last_stable_offset,
                log_start_offset=log.log_start_offset,
                records=b"",
                diverging_epoch=None
                if diverging is None
                else EpochEndOffset(diverging.epoch, diverging.end_offset),
            )
        )
    return checked


def _read_replicas(
    context: BrokerContext,
    replicas: ReplicaManager,
    wanted: list[_Wanted],
    checked: list[FetchPartitionResult | HostedPartition],
    max_bytes: int,
) -> tuple[list[FetchPartitionResult], int, bool]:
    """Read what `_replica_fetch_checks` allowed. A partition no longer hosted as it was
    checked (its topic deleted, or the replica dropped, while the Fetch waited) answers
    UNKNOWN_TOPIC_ID (UNKNOWN_TOPIC_OR_PARTITION by name), as Kafka's leader does for a topic
    it no longer has, instead of reading its closed log."""
    results = []
    total = 0
    any_error = False
    for item, entry in zip(wanted, checked, strict=True):
        if isinstance(entry, FetchPartitionResult):
            any_error = True
            results.append(entry)
            continue
        if item.name is None or replicas.partition(item.name, item.partition) is not entry:
            any_error = True
            results.append(
                _empty(
                    item,
                    ErrorCode.unknown_topic_id
                    if item.topic_id is not None
                    else ErrorCode.unknown_topic_or_partition,
                )
            )
            continue
        log = entry.log
        result, size = _read_one(
            context, item, log, max_bytes - total, total, False, log.log_end_offset
        )
        total += size
        any_error = any_error or result.error_code != ErrorCode.none
        results.append(result)
    return results, total, any_error


# v17 adds only the follower's replica_directory_id (KIP-853, a tagged field); the response is
# v16's. Odradek keeps one log directory, so the field is read and not used.
@dispatcher.register(ApiKey.FETCH, 4, 17)
async def handle(
    context: BrokerContext, header: RequestHeader, request: Any
) -> list[bytes | memoryview]:
    version = header.api_version
    wanted = _wanted(version, request, context)
    # KafkaApis names the current leader (and its endpoint) of a NOT_LEADER_OR_FOLLOWER
    # partition only from v16 (KIP-951); CurrentLeader, in the schema from v12, stays unset.
    leaders: set[int] | None = set() if version >= 16 else None
    max_wait_ms = int(request.max_wait.total_seconds() * 1000)
    min_bytes = request.min_bytes
    max_bytes = request.max_bytes if request.max_bytes > 0 else 2**31 - 1
    read_committed = getattr(request, "isolation_level", 0) == READ_COMMITTED
    error_code = ErrorCode.none
    if getattr(request, "session_id", 0) != 0 or getattr(request, "session_epoch", -1) > 0:
        # We never hand out a session, so an incremental fetch names one we do not have.
        error_code = ErrorCode.fetch_session_id_not_found
        results: list[FetchPartitionResult] = []
    else:
        loop_deadline = context.now_ms() + max_wait_ms
        replicas = context.cluster.replicas if context.cluster is not None else None
        checked: list[FetchPartitionResult | HostedPartition] | None = None
        if replicas is not None:
            if version >= 15:
                replica_id = request.replica_state.replica_id
                broker_epoch = request.replica_state.replica_epoch
            else:
                replica_id, broker_epoch = request.replica_id, -1
            if replica_id >= 0:
                checked = _replica_fetch_checks(replicas, wanted, replica_id, broker_epoch)
        while True:
            if checked is not None:
                assert replicas is not None  # checked only on a cluster member
                results, total, any_error = _read_replicas(
                    context, replicas, wanted, checked, max_bytes
                )
            else:
                results, total, any_error = _read_all(
                    context, wanted, max_bytes, read_committed, replicas, leaders
                )
            remaining_ms = loop_deadline - context.now_ms()
            if total >= min_bytes or any_error or remaining_ms <= 0 or not wanted:
                break
            await context.data_arrived.wait(
                [(item.name, item.partition) for item in wanted if item.name is not None],
                remaining_ms / 1000,
            )
    by_topic: dict[tuple[str | None, uuid.UUID | None], list[FetchPartitionResult]] = {}
    for item, result in zip(wanted, results, strict=False):
        by_topic.setdefault((item.name, item.topic_id), []).append(result)
    topics = [
        FetchTopicResult(name=name or "", topic_id=topic_id, partitions=partitions)
        for (name, topic_id), partitions in by_topic.items()
    ]
    node_endpoints = (
        context.cluster.replicas.node_endpoints(leaders)
        if leaders and context.cluster is not None
        else ()
    )
    response = FetchResponseData(
        throttle_time_ms=0,
        error_code=error_code,
        session_id=0,
        topics=topics,
        node_endpoints=node_endpoints,
    )
    return encode_fetch_response(version, response)
