"""Log divergence between leader and follower: the leader's check and the follower's cut.

The epoch rules of KIP-101 and KIP-279, applied the way Kafka >= 2.7 followers use them with
KIP-595's truncation on fetch: a follower sends, with each Fetch, its fetch offset (its log end
offset) and `LastFetchedEpoch` (the newest epoch in its log). The leader looks that epoch up in
its own leader-epoch cache; if its log holds the epoch only up to an earlier offset, or only an
older epoch, it answers with a `DivergingEpoch` instead of records, and the follower cuts its
log there — a diverging suffix is cut, never merged — and fetches again. Older followers ask
OffsetForLeaderEpoch first; the follower's arithmetic is the same (`truncation_offset`).

Leader side (what the Fetch / OffsetForLeaderEpoch handlers call):
- `last_offset_for_leader_epoch`: Kafka's `Partition.lastOffsetForLeaderEpoch` (also the
  KIP-320 answer to clients), with the current-leader-epoch check;
- `check_fetch_position`: Kafka's `Partition.fetchRecords` / `readRecords` validation of a
  Fetch partition: epoch errors, OFFSET_OUT_OF_RANGE, or the diverging epoch to return.

Follower side (what a replica fetcher calls):
- `initial_fetch_position`: where a new follower starts (its log end offset and latest epoch,
  or its HW when its log carries no epoch);
- `truncation_offset` / `truncate_on_diverging_epoch`: Kafka's `getOffsetTruncationState` /
  `truncateOnFetchResponse`, including the cases where the follower's cache lacks the epoch;
- `plan_follower_append`: which fetched batches to append and the leader-epoch-cache entries
  they carry (followers rebuild the cache from what they replicate);
- `follower_high_watermark`: the leader's HW clamped to the local log.

Pure functions over a `LeaderEpochFileCache` and offsets: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kio.schema.errors import ErrorCode

from odradek.replication.partition_state import check_current_leader_epoch
from odradek.storage.leader_epoch import (
    UNDEFINED_EPOCH,
    UNDEFINED_EPOCH_OFFSET,
    EpochEntry,
    LeaderEpochFileCache,
)

__all__ = [
    "BatchPosition",
    "DivergingEpoch",
    "EpochEndOffset",
    "FetchPosition",
    "FetchPositionCheck",
    "FollowerAppendPlan",
    "OffsetTruncationState",
    "check_fetch_position",
    "follower_high_watermark",
    "initial_fetch_position",
    "last_offset_for_leader_epoch",
    "plan_follower_append",
    "position_after_truncation",
    "truncate_on_diverging_epoch",
    "truncation_offset",
]


@dataclass(frozen=True, slots=True)
class EpochEndOffset:
    """One partition of an OffsetForLeaderEpoch answer: error, epoch and its end offset."""

    error: ErrorCode = ErrorCode.none
    leader_epoch: int = UNDEFINED_EPOCH
    end_offset: int = UNDEFINED_EPOCH_OFFSET


@dataclass(frozen=True, slots=True)
class DivergingEpoch:
    """Fetch v12+'s DivergingEpoch: the largest leader epoch <= the follower's last fetched
    epoch that the leader has, and the offset where it ends in the leader's log."""

    epoch: int
    end_offset: int


@dataclass(frozen=True, slots=True)
class FetchPositionCheck:
    """The leader's verdict on a Fetch partition before it reads.

    `error` set: answer with it. `diverging_epoch` set: answer with it and no records (and do
    not record the follower's position). Neither: read from `fetch_offset` as usual.
    """

    error: ErrorCode | None = None
    diverging_epoch: DivergingEpoch | None = None

    @property
    def may_read(self) -> bool:
        return self.error is None and self.diverging_epoch is None


@dataclass(frozen=True, slots=True)
class OffsetTruncationState:
    """Where the follower truncates, and whether that is final (Kafka's OffsetTruncationState).

    `truncation_completed` False: the follower did not know the leader's epoch and cut to the
    end of its own older epoch; the next Fetch (or OffsetForLeaderEpoch) checks again.
    """

    offset: int
    truncation_completed: bool


@dataclass(frozen=True, slots=True)
class FetchPosition:
    """A follower's next Fetch: offset, LastFetchedEpoch (None: send -1), and a truncation to
    make first (`truncate_to`, None for none)."""

    fetch_offset: int
    last_fetched_epoch: int | None
    truncate_to: int | None = None


@dataclass(frozen=True, slots=True)
class BatchPosition:
    """What a follower needs of a fetched batch's header: offsets and partition leader epoch."""

    base_offset: int
    last_offset: int
    partition_leader_epoch: int


@dataclass(frozen=True, slots=True)
class FollowerAppendPlan:
    """What to do with the batches of one Fetch response on a follower.

    Append the first `batch_count` batches; assign `epoch_entries` in the leader-epoch cache
    (each epoch change seen in them, at its first batch's base offset); then fetch from
    `next_fetch_offset` with `last_fetched_epoch`. `error`: the response cannot be appended
    (UNEXPECTED offsets: the follower's log moved since the request), nothing is appended.
    """

    batch_count: int
    epoch_entries: tuple[EpochEntry, ...]
    next_fetch_offset: int
    last_fetched_epoch: int | None
    error: ErrorCode | None = None


# ---- leader side ---------------------------------------------------------------------------


def last_offset_for_leader_epoch(
    cache: LeaderEpochFileCache,
    log_end_offset: int,
    requested_epoch: int,
    *,
    current_leader_epoch: int | None,
    leader_epoch: int,
    is_leader: bool,
    fetch_only_from_leader: bool = True,
) -> EpochEndOffset:
    """Kafka's `Partition.lastOffsetForLeaderEpoch`: the end of `requested_epoch` in this log.

    Errors: FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH from the KIP-320 check of
    `current_leader_epoch`; NOT_LEADER_OR_FOLLOWER when `fetch_only_from_leader` and this
    broker does not lead. When the cache cannot place the epoch (empty cache, an epoch newer
    than every cached one), NONE with epoch and offset -1, as Kafka answers.
    """
    error = check_current_leader_epoch(current_leader_epoch, leader_epoch)
    if error is not ErrorCode.none:
        return EpochEndOffset(error)
    if fetch_only_from_leader and not is_leader:
        return EpochEndOffset(ErrorCode.not_leader_or_follower)
    epoch, end_offset = cache.end_offset_for(requested_epoch, log_end_offset)
    if end_offset == UNDEFINED_EPOCH_OFFSET:
        return EpochEndOffset()
    return EpochEndOffset(ErrorCode.none, epoch, end_offset)


def check_fetch_position(
    cache: LeaderEpochFileCache,
    fetch_offset: int,
    last_fetched_epoch: int | None,
    *,
    current_leader_epoch: int | None,
    leader_epoch: int,
    is_leader: bool,
    log_start_offset: int,
    log_end_offset: int,
    require_leader: bool = True,
) -> FetchPositionCheck:
    """Kafka's validation in `Partition.fetchRecords` / `readRecords`, before any read.

    In order: the KIP-320 epoch check (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH);
    NOT_LEADER_OR_FOLLOWER when `require_leader` (every replica fetch) and not leading; then,
    when `last_fetched_epoch` is given (>= 0): OFFSET_OUT_OF_RANGE if this log cannot place
    that epoch or `fetch_offset` is below the log start; a diverging epoch if this log holds
    only an older epoch or the epoch ends before `fetch_offset`; finally OFFSET_OUT_OF_RANGE
    for an offset outside `[log_start_offset, log_end_offset]`.
    """
    error = check_current_leader_epoch(current_leader_epoch, leader_epoch)
    if error is not ErrorCode.none:
        return FetchPositionCheck(error=error)
    if require_leader and not is_leader:
        return FetchPositionCheck(error=ErrorCode.not_leader_or_follower)
    if last_fetched_epoch is not None and last_fetched_epoch >= 0:
        epoch_end = last_offset_for_leader_epoch(
            cache,
            log_end_offset,
            last_fetched_epoch,
            current_leader_epoch=current_leader_epoch,
            leader_epoch=leader_epoch,
            is_leader=is_leader,
            fetch_only_from_leader=False,
        )
        if epoch_end.error is not ErrorCode.none:
            return FetchPositionCheck(error=epoch_end.error)
        if (
            epoch_end.end_offset == UNDEFINED_EPOCH_OFFSET
            or epoch_end.leader_epoch == UNDEFINED_EPOCH
        ):
            return FetchPositionCheck(error=ErrorCode.offset_out_of_range)
        if fetch_offset < log_start_offset:
            return FetchPositionCheck(error=ErrorCode.offset_out_of_range)
        if epoch_end.leader_epoch < last_fetched_epoch or epoch_end.end_offset < fetch_offset:
            return FetchPositionCheck(
                diverging_epoch=DivergingEpoch(epoch_end.leader_epoch, epoch_end.end_offset)
            )
    if fetch_offset < log_start_offset or fetch_offset > log_end_offset:
        return FetchPositionCheck(error=ErrorCode.offset_out_of_range)
    return FetchPositionCheck()


# ---- follower side -------------------------------------------------------------------------


def initial_fetch_position(
    cache: LeaderEpochFileCache, log_end_offset: int, high_watermark: int
) -> FetchPosition:
    """Where a follower starts fetching from a new leader (Kafka's `initialFetchOffset`).

    With epochs in its log: at its log end offset, sending its latest epoch, so the leader's
    diverging-epoch check finds any divergence. Without: truncate to its HW first (the only
    offset it knows is committed) and fetch from there without an epoch.
    """
    latest = cache.latest_epoch
    if latest is not None:
        return FetchPosition(log_end_offset, latest)
    return FetchPosition(high_watermark, None, truncate_to=high_watermark)


def truncation_offset(
    leader_epoch: int,
    leader_end_offset: int,
    cache: LeaderEpochFileCache,
    log_end_offset: int,
    fetch_offset: int,
) -> OffsetTruncationState:
    """Kafka's `AbstractFetcherThread.getOffsetTruncationState` for the leader's answer.

    - the leader could not place the epoch (end offset -1): truncate to `fetch_offset` (the
      follower's HW when it started fetching), final;
    - an offset without an epoch (a leader on the v0 OffsetForLeaderEpoch): truncate to
      min(leader's offset, log end offset), final;
    - the follower's own largest epoch <= the leader's differs from it (the follower never
      saw the leader's epoch): truncate to min(end of that own epoch, log end offset) and
      ask again (not final);
    - the same epoch, or one older than every epoch the follower has (its cache says that
      epoch ends where its first entry starts): min(leader's end offset, own end of that
      epoch, log end offset), final;
    - the follower's cache cannot place the epoch at all (empty): min(leader's end offset,
      log end offset), final.
    """
    if leader_end_offset == UNDEFINED_EPOCH_OFFSET:
        return OffsetTruncationState(fetch_offset, truncation_completed=True)
    if leader_epoch == UNDEFINED_EPOCH:
        return OffsetTruncationState(min(leader_end_offset, log_end_offset), True)
    follower_epoch, follower_end_offset = cache.end_offset_for(leader_epoch, log_end_offset)
    if follower_end_offset == UNDEFINED_EPOCH_OFFSET:
        return OffsetTruncationState(min(leader_end_offset, log_end_offset), True)
    if follower_epoch != leader_epoch:
        return OffsetTruncationState(min(follower_end_offset, log_end_offset), False)
    return OffsetTruncationState(min(leader_end_offset, follower_end_offset, log_end_offset), True)


def truncate_on_diverging_epoch(
    diverging_epoch: DivergingEpoch,
    cache: LeaderEpochFileCache,
    log_end_offset: int,
    fetch_offset: int,
) -> OffsetTruncationState:
    """Kafka's `truncateOnFetchResponse`: the cut for a Fetch answer's DivergingEpoch."""
    return truncation_offset(
        diverging_epoch.epoch, diverging_epoch.end_offset, cache, log_end_offset, fetch_offset
    )


def position_after_truncation(
    cache: LeaderEpochFileCache, state: OffsetTruncationState
) -> FetchPosition:
    """The next Fetch after truncating the log (and `cache.truncate_from_end`) to `state`.

    Kafka fetches from the truncation offset with the latest epoch left in the cache; when the
    truncation was not final the leader's next answer checks the older epoch.
    """
    return FetchPosition(state.offset, cache.latest_epoch)


def plan_follower_append(
    log_end_offset: int,
    batches: Sequence[BatchPosition],
    current_leader_epoch: int,
    last_fetched_epoch: int | None,
) -> FollowerAppendPlan:
    """Check fetched batches against the follower's log and list the epoch entries they carry.

    A batch must start at or after the follower's log end offset (compaction leaves gaps) and
    offsets must increase; otherwise nothing is appended and the answer is
    OFFSET_OUT_OF_RANGE (Kafka's UnexpectedAppendOffsetException / OffsetsOutOfOrder, after
    which the fetcher retries from its current position). Batches written in a leader epoch
    above `current_leader_epoch` (the epoch this Fetch was sent in) are not appended: the
    leader changed after answering (KAFKA-18723). Each epoch change becomes an entry for the
    follower's leader-epoch cache at the batch's base offset — the cache is rebuilt from what
    is replicated, exactly as the leader built it.
    """
    next_offset = log_end_offset
    latest_epoch = last_fetched_epoch
    entries: list[EpochEntry] = []
    count = 0
    for batch in batches:
        if batch.base_offset < next_offset or batch.last_offset < batch.base_offset:
            return FollowerAppendPlan(
                0, (), log_end_offset, last_fetched_epoch, ErrorCode.offset_out_of_range
            )
        if batch.partition_leader_epoch > current_leader_epoch:
            break
        if batch.partition_leader_epoch >= 0 and batch.partition_leader_epoch != latest_epoch:
            entries.append(EpochEntry(batch.partition_leader_epoch, batch.base_offset))
            latest_epoch = batch.partition_leader_epoch
        next_offset = batch.last_offset + 1
        count += 1
    return FollowerAppendPlan(count, tuple(entries), next_offset, latest_epoch)


def follower_high_watermark(
    leader_high_watermark: int, log_start_offset: int, log_end_offset: int
) -> int:
    """A follower's HW after a Fetch answer: the leader's, clamped to the local log.

    Kafka's `UnifiedLog.updateHighWatermark`: it may move backwards on a follower (a new
    leader's HW may lag the old one's, KIP-207); consumers of a follower read up to it only.
    """
    return max(log_start_offset, min(leader_high_watermark, log_end_offset))
