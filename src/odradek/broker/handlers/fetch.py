"""Fetch: raw batch bytes from the log, long-polled on MinBytes / MaxWaitMs.

The response is a list of buffers (headers + the log's bytes), never joined into one copy.
read_uncommitted reads to the high watermark (aborted data included, as in Kafka);
read_committed stops at the last stable offset and carries the aborted transactions that
overlap what it may read, which the client uses to drop aborted batches.

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
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader
from odradek.protocol.hot_encoders import (
    FetchPartitionResult,
    FetchResponseData,
    FetchTopicResult,
    encode_fetch_response,
)
from odradek.storage.log import OffsetOutOfRange

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


def _wanted(version: int, request: Any, context: BrokerContext) -> list[_Wanted]:
    wanted = []
    for topic in request.topics:
        if version >= 13:
            metadata = context.logs.topic_by_id(topic.topic_id)
            name = metadata.name if metadata is not None else None
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
                )
            )
    return wanted


def _read_all(
    context: BrokerContext, wanted: list[_Wanted], max_bytes: int, read_committed: bool
) -> tuple[list[FetchPartitionResult], int, bool]:
    """Read every wanted partition once; return results, bytes read and whether any error."""
    results = []
    total = 0
    any_error = False
    for item in wanted:
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
        high_watermark = log.high_watermark
        last_stable_offset = log.last_stable_offset
        try:
            read = log.read(
                item.fetch_offset,
                max(0, min(item.partition_max_bytes, max_bytes - total)),
                last_stable_offset if read_committed else high_watermark,
                min_one_batch=total == 0,
            )
        except OffsetOutOfRange:
            any_error = True
            results.append(
                FetchPartitionResult(
                    partition_index=item.partition,
                    error_code=ErrorCode.offset_out_of_range,
                    high_watermark=high_watermark,
                    last_stable_offset=last_stable_offset,
                    log_start_offset=log.log_start_offset,
                    aborted_transactions=[] if read_committed else None,
                    records=b"",
                )
            )
            continue
        total += len(read.records)
        aborted: list[tuple[int, int]] | None = None
        if read_committed:
            # Kafka sends a list (maybe empty) to read_committed readers and null otherwise.
            # The upper bound is the LSO rather than the end of the batches returned: a few
            # extra entries beyond the data are harmless and spare parsing the batch headers.
            aborted = (
                log.aborted_transactions(item.fetch_offset, last_stable_offset)
                if read.records
                else []
            )
        results.append(
            FetchPartitionResult(
                partition_index=item.partition,
                error_code=ErrorCode.none,
                high_watermark=high_watermark,
                last_stable_offset=last_stable_offset,
                log_start_offset=log.log_start_offset,
                aborted_transactions=aborted,
                records=read.records,
            )
        )
    return results, total, any_error


def _empty(item: _Wanted, error_code: ErrorCode) -> FetchPartitionResult:
    return FetchPartitionResult(
        partition_index=item.partition,
        error_code=error_code,
        high_watermark=-1,
        last_stable_offset=-1,
        log_start_offset=-1,
        aborted_transactions=None,
        records=b"",
    )


# v17 adds only the follower's replica_directory_id (KIP-853, a tagged field); the response is
# v16's. Odradek has no followers yet, so the field is read and not used.
@dispatcher.register(ApiKey.FETCH, 4, 17)
async def handle(
    context: BrokerContext, header: RequestHeader, request: Any
) -> list[bytes | memoryview]:
    version = header.api_version
    wanted = _wanted(version, request, context)
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
        while True:
            results, total, any_error = _read_all(context, wanted, max_bytes, read_committed)
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
    response = FetchResponseData(
        throttle_time_ms=0, error_code=error_code, session_id=0, topics=topics
    )
    return encode_fetch_response(version, response)
