"""A follower's replica fetchers (Kafka's ReplicaFetcherThread over AbstractFetcherThread).

One `ReplicaFetcher` task per leader broker sends Fetch v16 with ReplicaState (replica id and
broker epoch) and LastFetchedEpoch for every partition it follows from that leader, over a
`FrameChannel`: the response is read into one reused buffer and decoded by
`protocol.fetch_response_reader`, whose records are views, so batches reach
`append_as_follower` without a copy or a record decode. Per partition it truncates on a
diverging epoch (KIP-595's DivergingEpoch, the KIP-101/279 rules in
`replication.truncation`), starts over at the leader's log start on OFFSET_OUT_OF_RANGE below
it, appends, and takes the leader's high watermark clamped to its log. With
`odradek.acks.all.fsync` it fdatasyncs what it appended (every partition at once) before its
next Fetch, so the offset that Fetch reports to the leader is durable. The sizes and waits are
the broker's replica.fetch.* settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from odradek.broker.frame_channel import FrameChannel
from odradek.broker.hosted_partition import HostedPartition, TopicPartition
from odradek.broker.kafka_channel import ChannelError
from odradek.broker.shutdown import cancel_and_wait
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import make, nested, request_module
from odradek.protocol.fetch_response_reader import decode_fetch_response
from odradek.protocol.hot_encoders import FetchPartitionResult
from odradek.protocol.record_batch import BATCH_HEADER_SIZE, read_batch_header
from odradek.protocol.tolerant_reader import RemoteProtocolError
from odradek.replication.truncation import (
    BatchPosition,
    DivergingEpoch,
    initial_fetch_position,
    plan_follower_append,
    position_after_truncation,
    truncate_on_diverging_epoch,
)
from odradek.storage.errors import StorageError

if TYPE_CHECKING:
    from odradek.broker.replica_manager import ReplicaManager

logger = logging.getLogger(__name__)

_FETCH_VERSION = 16
_RETRY_BACKOFF_S = 0.2
#: Errors after which a follower waits for the metadata to say who leads now.
_WAIT_FOR_METADATA = frozenset(
    {
        ErrorCode.not_leader_or_follower,
        ErrorCode.fenced_leader_epoch,
        ErrorCode.unknown_leader_epoch,
        ErrorCode.unknown_topic_or_partition,
        ErrorCode.unknown_topic_id,
        ErrorCode.leader_not_available,
    }
)


@dataclass(slots=True)
class FollowerPosition:
    """Where a follower fetches one partition from its leader next."""

    hosted: HostedPartition
    leader_epoch: int
    fetch_offset: int
    last_fetched_epoch: int | None
    delayed_until: float = 0.0


class ReplicaFetcher:
    """Fetches every partition this broker follows from one leader broker (Kafka's
    ReplicaFetcherThread), one Fetch v16 at a time over a `FrameChannel` (records never copied)."""

    def __init__(self, manager: ReplicaManager, leader_id: int, host: str, port: int) -> None:
        self.manager = manager
        self.leader_id = leader_id
        self.host = host
        self.port = port
        self.positions: dict[TopicPartition, FollowerPosition] = {}
        self._channel = FrameChannel(host, port, f"odradek-replica-fetcher-{manager.node_id}")
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task], f"the replica fetcher from broker {self.leader_id}")
            self._task = None
        await self._channel.close()

    def add(self, position: FollowerPosition) -> None:
        hosted = position.hosted
        self.positions[(hosted.topic, hosted.index)] = position
        self._wakeup.set()

    def remove(self, hosted: HostedPartition) -> None:
        position = self.positions.get((hosted.topic, hosted.index))
        if position is not None and position.hosted is hosted:
            del self.positions[(hosted.topic, hosted.index)]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            ready = [p for p in self.positions.values() if p.delayed_until <= now]
            if not ready:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_RETRY_BACKOFF_S):
                        await self._wakeup.wait()
                continue
            try:
                await self._fetch_once(ready)
            except (ChannelError, RemoteProtocolError) as error:
                logger.info("replica fetch from broker %d failed: %s", self.leader_id, error)
                await self._channel.close()
                await asyncio.sleep(_RETRY_BACKOFF_S)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("replica fetcher for broker %d", self.leader_id)
                await asyncio.sleep(_RETRY_BACKOFF_S)

    async def _fetch_once(self, ready: list[FollowerPosition]) -> None:
        manager = self.manager
        context = manager.context
        if context.config.acks_all_fsync:
            # The offset this Fetch reports is durable here (Odradek's odradek.acks.all.fsync):
            # every partition's fdatasync at once (each log has its own group commit).
            flushes = []
            for position in ready:
                log = position.hosted.log
                if log.flushed_offset < log.log_end_offset:
                    commit = context.group_commit(position.hosted.topic, position.hosted.index)
                    if commit is not None:
                        flushes.append(commit.wait_flushed(log.log_end_offset))
            if flushes:
                await asyncio.gather(*flushes)
        module = request_module(ApiKey.FETCH, _FETCH_VERSION)
        settings = manager.member.kraft
        by_topic: dict[uuid.UUID, list[Any]] = {}
        sent: dict[tuple[uuid.UUID | None, int], tuple[FollowerPosition, int, int | None]] = {}
        for position in ready:
            hosted = position.hosted
            by_topic.setdefault(hosted.topic_id, []).append(
                make(
                    nested(module, "FetchPartition"),
                    partition=hosted.index,
                    current_leader_epoch=position.leader_epoch,
                    fetch_offset=position.fetch_offset,
                    last_fetched_epoch=-1
                    if position.last_fetched_epoch is None
                    else position.last_fetched_epoch,
                    log_start_offset=hosted.log.log_start_offset,
                    partition_max_bytes=settings.replica_fetch_max_bytes,
                )
            )
            sent[(hosted.topic_id, hosted.index)] = (
                position,
                position.fetch_offset,
                position.last_fetched_epoch,
            )
        body = await self._channel.request(
            ApiKey.FETCH,
            _FETCH_VERSION,
            timeout_s=settings.replica_fetch_wait_max_ms / 1000 + 10,
            cluster_id=None,
            replica_state=make(
                nested(module, "ReplicaState"),
                replica_id=manager.node_id,
                replica_epoch=manager.member.broker_epoch,
            ),
            max_wait=settings.replica_fetch_wait_max_ms,
            min_bytes=settings.replica_fetch_min_bytes,
            max_bytes=settings.replica_fetch_response_max_bytes,
            isolation_level=0,
            session_id=0,
            session_epoch=-1,
            topics=tuple(
                make(nested(module, "FetchTopic"), topic_id=topic_id, partitions=tuple(parts))
                for topic_id, parts in by_topic.items()
            ),
            forgotten_topics_data=(),
            rack_id="",
        )
        response = decode_fetch_response(_FETCH_VERSION, body)
        if response.error_code != ErrorCode.none:
            logger.warning("replica fetch from %d: %s", self.leader_id, response.error_code)
            for position, _offset, _epoch in sent.values():
                position.delayed_until = asyncio.get_running_loop().time() + _RETRY_BACKOFF_S
            return
        for topic in response.topics:
            for data in topic.partitions:
                entry = sent.get((topic.topic_id, data.partition_index))
                if entry is None:
                    continue
                position, fetch_offset, last_fetched_epoch = entry
                hosted = position.hosted
                current = self.positions.get((hosted.topic, hosted.index))
                if current is not position or position.fetch_offset != fetch_offset:
                    continue  # reassigned meanwhile
                try:
                    self._apply(position, data, fetch_offset, last_fetched_epoch)
                except StorageError as error:
                    logger.error("follower append to %s-%d: %s", hosted.topic, hosted.index, error)
                    position.delayed_until = asyncio.get_running_loop().time() + _RETRY_BACKOFF_S

    def _apply(
        self,
        position: FollowerPosition,
        data: FetchPartitionResult,
        fetch_offset: int,
        last_fetched_epoch: int | None,
    ) -> None:
        hosted = position.hosted
        log = hosted.log
        error = ErrorCode(data.error_code)
        now_ms = self.manager.context.now_ms()
        if error is ErrorCode.offset_out_of_range:
            leader_start = int(data.log_start_offset)
            if fetch_offset < leader_start:
                log.truncate_fully_and_start_at(leader_start)
            else:
                log.truncate_to(max(int(data.high_watermark), log.log_start_offset))
            restart = initial_fetch_position(
                log.leader_epoch_cache, log.log_end_offset, log.high_watermark
            )
            if restart.truncate_to is not None:
                log.truncate_to(restart.truncate_to)
            position.fetch_offset = log.log_end_offset
            position.last_fetched_epoch = restart.last_fetched_epoch
            logger.info(
                "%s-%d out of range at %d: restarting at %d",
                hosted.topic,
                hosted.index,
                fetch_offset,
                position.fetch_offset,
            )
            return
        if error is not ErrorCode.none:
            if error not in _WAIT_FOR_METADATA:
                logger.warning("replica fetch of %s-%d: %s", hosted.topic, hosted.index, error.name)
            position.delayed_until = asyncio.get_running_loop().time() + _RETRY_BACKOFF_S
            return
        diverging = data.diverging_epoch
        if diverging is not None and (diverging.epoch >= 0 or diverging.end_offset >= 0):
            truncation = truncate_on_diverging_epoch(
                DivergingEpoch(int(diverging.epoch), int(diverging.end_offset)),
                log.leader_epoch_cache,
                log.log_end_offset,
                fetch_offset,
            )
            log.truncate_to(truncation.offset)
            after = position_after_truncation(log.leader_epoch_cache, truncation)
            position.fetch_offset = log.log_end_offset
            position.last_fetched_epoch = after.last_fetched_epoch
            logger.info(
                "%s-%d diverged at epoch %d: truncated to %d",
                hosted.topic,
                hosted.index,
                diverging.epoch,
                log.log_end_offset,
            )
            return
        records = data.records
        if records:
            batches, size = _batch_positions(records)
            plan = plan_follower_append(
                log.log_end_offset, batches, position.leader_epoch, last_fetched_epoch
            )
            if plan.error is not None:
                position.fetch_offset = log.log_end_offset
                position.last_fetched_epoch = log.latest_epoch
                return
            if plan.batch_count:
                end = size if plan.batch_count == len(batches) else _prefix_size(records, plan)
                log.append_as_follower(memoryview(records)[:end], now_ms)
            position.fetch_offset = log.log_end_offset
            position.last_fetched_epoch = plan.last_fetched_epoch
        leader_start = int(data.log_start_offset)
        if leader_start > log.log_start_offset:
            log.delete_records_before(min(leader_start, log.log_end_offset))
        log.high_watermark = int(data.high_watermark)


def _batch_positions(records: bytes | memoryview) -> tuple[list[BatchPosition], int]:
    """The complete batches' positions in a fetched record set, and their total size."""
    batches = []
    position = 0
    total = len(records)
    while total - position >= BATCH_HEADER_SIZE:
        header = read_batch_header(records, position)
        if position + header.size > total:
            break
        batches.append(
            BatchPosition(header.base_offset, header.last_offset, header.partition_leader_epoch)
        )
        position += header.size
    return batches, position


def _prefix_size(records: bytes | memoryview, plan: Any) -> int:
    position = 0
    for _ in range(plan.batch_count):
        position += read_batch_header(records, position).size
    return position
