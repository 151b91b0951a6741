"""The replication state of one partition on one broker: Kafka's `Partition` and `Replica`.

A plain state machine: every input (a follower's Fetch, a leader append or flush, the
controller's AlterPartition answer, a metadata update, the current time) is a method call with
its values, and every output (a new high watermark, an AlterPartition request to send, an error
for the Fetch) is a returned value. No I/O, no clock, no asyncio: the broker and the simulator
drive it the same way.

On the leader it keeps, per follower, Kafka's `ReplicaState` (log end offset, last fetch time,
last caught-up time, the leader's log end offset at the last fetch, broker epoch) and:

- the **committed ISR** (what the controller last confirmed) and at most **one pending ISR
  change** (`PendingIsrChange`, Kafka's PendingExpandIsr / PendingShrinkIsr). While an
  expansion is in flight the **maximal ISR** is the committed ISR plus the new member, so the
  HW already waits for it; while a shrink is in flight it is the committed ISR (KIP-497);
- the **high watermark**: the minimum log end offset over the maximal ISR and over every
  follower that is caught up and ISR-eligible but not yet in the ISR (Kafka's
  `shouldWaitForReplicaToJoinIsr`, so a returning follower is not left chasing a HW that the
  leader alone keeps moving). It never moves while the committed ISR is below the effective
  `min.insync.replicas` (KAFKA-15583), and never moves backwards while this broker leads.
  With `acks_all_fsync` (Odradek's `odradek.acks.all.fsync`, Redpanda's choice) the leader
  counts its own log only up to its flushed offset; followers then report flushed offsets too
  (the replica fetcher fdatasyncs before its next Fetch), so the HW is durable on every ISR
  member. Without it the page cache counts, as in Kafka;
- **ISR expansion** (Kafka's `isFollowerInSync` and `isReplicaIsrEligible`): a follower joins
  when its log end offset reaches both the HW and the start offset of the leader's current
  epoch, it is neither fenced nor in controlled shutdown, and the broker epoch it fetched with
  is the one of its current registration (KIP-903);
- **ISR shrink**: a follower not caught up to the leader's log end offset within
  `replica.lag.time.max.ms` leaves the ISR.

Broker liveness comes from the metadata image as a plain mapping `broker id -> BrokerMetadata`
(the controller helper's image supplies it); a broker missing from it is not alive.

Time is `now_ms`, passed in. Where Kafka uses 0 for "never" (last caught-up time, last fetch
time) this uses None, so a simulated clock starting at 0 does not make a silent follower look
caught up.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from kio.schema.errors import ErrorCode

from odradek.replication.produce_wait import (
    ProduceWaitStatus,
    check_before_append,
    completion,
    effective_min_insync,
)

__all__ = [
    "DEFAULT_REPLICA_LAG_TIME_MAX_MS",
    "INITIAL_LEADER_EPOCH",
    "INITIAL_PARTITION_EPOCH",
    "LEADER_RECOVERED",
    "LEADER_RECOVERING",
    "NO_BROKER_EPOCH",
    "UNKNOWN_OFFSET",
    "AlterPartitionOutcome",
    "AlterPartitionRequest",
    "BecomeLeaderResult",
    "BrokerMetadata",
    "FollowerFetchResult",
    "IsrChangeKind",
    "IsrMember",
    "LeaderAndIsr",
    "PartitionState",
    "PendingIsrChange",
    "ReplicaState",
    "check_current_leader_epoch",
]

DEFAULT_REPLICA_LAG_TIME_MAX_MS = 30_000  # Kafka's replica.lag.time.max.ms default
INITIAL_LEADER_EPOCH = 0
INITIAL_PARTITION_EPOCH = 0
NO_BROKER_EPOCH = -1  # a Fetch or AlterPartition entry that skips the broker-epoch check
UNKNOWN_OFFSET = -1  # Kafka's UnifiedLog.UnknownOffset / UNKNOWN_OFFSET_METADATA
LEADER_RECOVERED = 0  # KIP-704's LeaderRecoveryState values
LEADER_RECOVERING = 1  # after an unclean election, until the leader says it has recovered

# AlterPartition errors after which the request is not retried (Kafka's
# handleAlterPartitionError); the first two also drop the pending change.
_RESET_TO_COMMITTED = frozenset({ErrorCode.operation_not_attempted, ErrorCode.ineligible_replica})
_GIVE_UP_AND_WAIT_FOR_METADATA = frozenset(
    {
        ErrorCode.unknown_topic_or_partition,
        ErrorCode.unknown_topic_id,
        ErrorCode.fenced_leader_epoch,
        ErrorCode.invalid_update_version,
        ErrorCode.invalid_request,
        ErrorCode.new_leader_elected,
    }
)


@dataclass(frozen=True, slots=True)
class BrokerMetadata:
    """What the metadata image says of one registered broker (KIP-631's registration)."""

    broker_epoch: int
    fenced: bool = False
    in_controlled_shutdown: bool = False


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """The leader's view of one follower (Kafka's `ReplicaState`); offsets, times in ms."""

    log_start_offset: int = UNKNOWN_OFFSET
    log_end_offset: int = UNKNOWN_OFFSET
    # The leader's log end offset when this follower last fetched: a fetch at or past it
    # proves the follower was caught up at that earlier fetch's time.
    last_fetch_leader_log_end_offset: int = 0
    last_fetch_time_ms: int | None = None
    last_caught_up_time_ms: int | None = None
    broker_epoch: int | None = None

    def is_caught_up(self, leader_end_offset: int, now_ms: int, max_lag_ms: int) -> bool:
        """At the leader's end, or caught up to it within the last `max_lag_ms`."""
        if leader_end_offset == self.log_end_offset:
            return True
        return (
            self.last_caught_up_time_ms is not None
            and now_ms - self.last_caught_up_time_ms <= max_lag_ms
        )

    def after_fetch(
        self,
        fetch_offset: int,
        log_start_offset: int,
        fetch_time_ms: int,
        leader_end_offset: int,
        broker_epoch: int,
    ) -> ReplicaState:
        """Kafka's `Replica.updateFetchStateOrThrow` without the epoch check."""
        last_caught_up = self.last_caught_up_time_ms
        if fetch_offset >= leader_end_offset:
            last_caught_up = _latest(last_caught_up, fetch_time_ms)
        elif fetch_offset >= self.last_fetch_leader_log_end_offset:
            last_caught_up = _latest(last_caught_up, self.last_fetch_time_ms)
        return ReplicaState(
            log_start_offset=log_start_offset,
            log_end_offset=fetch_offset,
            last_fetch_leader_log_end_offset=max(
                leader_end_offset, self.last_fetch_leader_log_end_offset
            ),
            last_fetch_time_ms=fetch_time_ms,
            last_caught_up_time_ms=last_caught_up,
            broker_epoch=broker_epoch,
        )

    def after_leader_change(
        self, now_ms: int, leader_end_offset: int, is_new_leader: bool, in_isr: bool
    ) -> ReplicaState:
        """Kafka's `Replica.resetReplicaState` when this broker starts a new leader epoch."""
        last_caught_up = now_ms if in_isr else None
        if is_new_leader:
            return ReplicaState(
                last_fetch_leader_log_end_offset=UNKNOWN_OFFSET,
                last_caught_up_time_ms=last_caught_up,
            )
        return ReplicaState(
            log_start_offset=self.log_start_offset,
            log_end_offset=self.log_end_offset,
            last_fetch_leader_log_end_offset=leader_end_offset,
            last_fetch_time_ms=now_ms if in_isr else None,
            last_caught_up_time_ms=last_caught_up,
            broker_epoch=self.broker_epoch,
        )


def _latest(current: int | None, candidate: int | None) -> int | None:
    if current is None:
        return candidate
    if candidate is None:
        return current
    return max(current, candidate)


@dataclass(frozen=True, slots=True)
class IsrMember:
    """One ISR entry of an AlterPartition request: broker id and its broker epoch (KIP-903)."""

    broker_id: int
    broker_epoch: int


@dataclass(frozen=True, slots=True)
class AlterPartitionRequest:
    """The partition part of an AlterPartition request the leader sends to the controller."""

    leader_id: int
    leader_epoch: int
    partition_epoch: int
    new_isr: tuple[IsrMember, ...]
    leader_recovery_state: int = 0  # RECOVERED

    @property
    def isr(self) -> tuple[int, ...]:
        return tuple(member.broker_id for member in self.new_isr)


@dataclass(frozen=True, slots=True)
class LeaderAndIsr:
    """The controller's accepted partition state in an AlterPartition response."""

    leader_id: int
    leader_epoch: int
    isr: tuple[int, ...]
    partition_epoch: int
    leader_recovery_state: int = 0


class IsrChangeKind(enum.Enum):
    EXPAND = "expand"
    SHRINK = "shrink"


@dataclass(frozen=True, slots=True)
class PendingIsrChange:
    """The one ISR change in flight (Kafka's PendingExpandIsr / PendingShrinkIsr)."""

    kind: IsrChangeKind
    replica_ids: frozenset[int]  # the joining replica, or the replicas leaving
    request: AlterPartitionRequest
    last_committed_isr: frozenset[int]

    @property
    def maximal_isr(self) -> frozenset[int]:
        """An expansion counts its new member already (stricter); a shrink does not yet."""
        if self.kind is IsrChangeKind.EXPAND:
            return self.last_committed_isr | self.replica_ids
        return self.last_committed_isr


@dataclass(frozen=True, slots=True)
class FollowerFetchResult:
    """What a follower's Fetch changed on the leader.

    `error` set: the fetch is refused with it (nothing changed). `alter_partition`: an ISR
    expansion to send to the controller. `high_watermark_changed`: waiting acks=all produces
    and fetches may now complete.
    """

    error: ErrorCode | None = None
    high_watermark: int = UNKNOWN_OFFSET
    high_watermark_changed: bool = False
    alter_partition: AlterPartitionRequest | None = None


@dataclass(frozen=True, slots=True)
class BecomeLeaderResult:
    """Result of `become_leader`.

    `applied` False: the update was older than what this broker knows and was ignored.
    `epoch_start`: `(leader epoch, start offset)` to assign in the leader-epoch cache before any
    append of the new epoch (Kafka's `assignEpochStartOffset`), None if the epoch did not change.
    """

    applied: bool
    is_new_leader: bool = False
    epoch_start: tuple[int, int] | None = None
    high_watermark_changed: bool = False


@dataclass(frozen=True, slots=True)
class AlterPartitionOutcome:
    """Result of `on_alter_partition_response`.

    `committed`: the ISR in the answer is now the committed ISR. `retry`: send this request
    again. `reset`: the pending change was dropped (the controller did not apply it).
    """

    committed: bool = False
    ignored: bool = False
    reset: bool = False
    retry: AlterPartitionRequest | None = None
    high_watermark_changed: bool = False


def check_current_leader_epoch(current_leader_epoch: int | None, leader_epoch: int) -> ErrorCode:
    """KIP-320's check of a request's `current_leader_epoch` against the local leader epoch.

    None or -1 (the request does not say) passes. Older than ours: FENCED_LEADER_EPOCH (the
    client must refresh metadata); newer: UNKNOWN_LEADER_EPOCH (we have not seen it yet).
    """
    if current_leader_epoch is None or current_leader_epoch < 0:
        return ErrorCode.none
    if leader_epoch > current_leader_epoch:
        return ErrorCode.fenced_leader_epoch
    if leader_epoch < current_leader_epoch:
        return ErrorCode.unknown_leader_epoch
    return ErrorCode.none


class PartitionState:
    """Leader/follower replication state of one partition on broker `local_broker_id`.

    Configuration attributes may be changed between calls (dynamic topic configs):
    `replica_lag_time_max_ms`, `min_insync_replicas`, `acks_all_fsync`, `local_broker_epoch`.
    """

    def __init__(
        self,
        local_broker_id: int,
        *,
        replica_lag_time_max_ms: int = DEFAULT_REPLICA_LAG_TIME_MAX_MS,
        min_insync_replicas: int = 1,
        acks_all_fsync: bool = True,
        local_broker_epoch: int = NO_BROKER_EPOCH,
        brokers: Mapping[int, BrokerMetadata] | None = None,
    ) -> None:
        self.local_broker_id = local_broker_id
        self.replica_lag_time_max_ms = replica_lag_time_max_ms
        self.min_insync_replicas = min_insync_replicas
        self.acks_all_fsync = acks_all_fsync
        self.local_broker_epoch = local_broker_epoch
        self._brokers: Mapping[int, BrokerMetadata] = dict(brokers or {})

        self.leader_id: int | None = None
        self.leader_epoch = INITIAL_LEADER_EPOCH - 1
        self.partition_epoch = INITIAL_PARTITION_EPOCH
        self.leader_epoch_start_offset: int | None = None
        self.leader_recovery_state = LEADER_RECOVERED
        self.replicas: tuple[int, ...] = ()
        self._isr: frozenset[int] = frozenset()
        self._pending: PendingIsrChange | None = None
        self._remote: dict[int, ReplicaState] = {}

        self.high_watermark = 0
        self.leader_log_end_offset = 0
        self.leader_flushed_offset = 0

    # ---- views ------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.leader_id == self.local_broker_id

    @property
    def isr(self) -> frozenset[int]:
        """The committed ISR: what the controller last confirmed."""
        return self._isr

    @property
    def maximal_isr(self) -> frozenset[int]:
        """The committed ISR plus a pending addition: what the HW and acks=all wait for."""
        return self._pending.maximal_isr if self._pending is not None else self._isr

    @property
    def pending_isr_change(self) -> PendingIsrChange | None:
        return self._pending

    @property
    def effective_min_insync(self) -> int:
        """min.insync.replicas capped at the replica count (Kafka's `effectiveMinIsr`)."""
        return effective_min_insync(self.min_insync_replicas, len(self._remote) + 1)

    @property
    def is_under_min_isr(self) -> bool:
        return self.is_leader and len(self._isr) < self.effective_min_insync

    @property
    def brokers(self) -> Mapping[int, BrokerMetadata]:
        return self._brokers

    def replica_state(self, replica_id: int) -> ReplicaState | None:
        """The leader's view of follower `replica_id` (None for the leader or a non-replica)."""
        return self._remote.get(replica_id)

    def replica_states(self) -> dict[int, ReplicaState]:
        return dict(self._remote)

    # ---- role changes -----------------------------------------------------------------------

    def become_leader(
        self,
        leader_epoch: int,
        partition_epoch: int,
        isr: Iterable[int],
        replicas: Iterable[int],
        now_ms: int,
        *,
        log_end_offset: int,
        high_watermark: int,
        flushed_offset: int | None = None,
        leader_recovery_state: int = LEADER_RECOVERED,
    ) -> BecomeLeaderResult:
        """Lead the partition (Kafka's `Partition.makeLeader`), from a metadata update.

        `log_end_offset`, `high_watermark` and `flushed_offset` describe the local log now
        (the flushed offset defaults to the log end offset). An update with a partition epoch
        below the current one is ignored. A new leader epoch starts at the log end offset: the
        caller assigns `epoch_start` in the leader-epoch cache; followers' states are reset.
        Any pending ISR change is dropped: the metadata now says what the ISR is.
        `leader_recovery_state` LEADER_RECOVERING (an unclean election, KIP-704): the ISR does
        not grow until `complete_recovery`'s request is committed.
        """
        if partition_epoch < self.partition_epoch:
            return BecomeLeaderResult(applied=False)
        is_new_leader = not self.is_leader
        is_new_leader_epoch = leader_epoch > self.leader_epoch
        isr_set = frozenset(isr)
        self._update_assignment(tuple(replicas), isr_set, is_leader=True)
        self.leader_log_end_offset = log_end_offset
        self.leader_flushed_offset = log_end_offset if flushed_offset is None else flushed_offset
        if is_new_leader:
            self.high_watermark = high_watermark
        epoch_start = None
        if is_new_leader_epoch:
            start = log_end_offset
            epoch_start = (leader_epoch, start)
            for replica_id, state in self._remote.items():
                self._remote[replica_id] = state.after_leader_change(
                    now_ms, start, is_new_leader, replica_id in isr_set
                )
            self.leader_epoch = leader_epoch
            self.leader_epoch_start_offset = start
        self.partition_epoch = partition_epoch
        self.leader_id = self.local_broker_id
        self.leader_recovery_state = leader_recovery_state
        changed = self._maybe_increment_high_watermark(now_ms)
        return BecomeLeaderResult(
            applied=True,
            is_new_leader=is_new_leader,
            epoch_start=epoch_start,
            high_watermark_changed=changed,
        )

    def become_follower(
        self,
        leader_id: int | None,
        leader_epoch: int,
        partition_epoch: int,
        replicas: Iterable[int],
    ) -> bool:
        """Follow `leader_id` (Kafka's `Partition.makeFollower`).

        True when the leader epoch is new, so the replica fetcher must (re)start against the
        leader with this epoch; False when nothing changed for fetching (or the update was
        older than the partition epoch we know).
        """
        if partition_epoch < self.partition_epoch:
            return False
        is_new_leader_epoch = leader_epoch > self.leader_epoch
        self.leader_id = leader_id
        self.leader_epoch = leader_epoch
        self.leader_epoch_start_offset = None
        self.partition_epoch = partition_epoch
        self._update_assignment(tuple(replicas), frozenset(), is_leader=False)
        return is_new_leader_epoch

    def _update_assignment(
        self, replicas: tuple[int, ...], isr: frozenset[int], is_leader: bool
    ) -> None:
        self.replicas = replicas
        if is_leader:
            followers = [replica for replica in replicas if replica != self.local_broker_id]
            self._remote = {
                replica: self._remote.get(replica, ReplicaState()) for replica in followers
            }
        else:
            self._remote = {}
        self._isr = isr
        self._pending = None

    def on_metadata_update(self, brokers: Mapping[int, BrokerMetadata], now_ms: int) -> bool:
        """A new broker image (registrations, fencing, shutdowns); True if the HW advanced.

        A follower that stops being eligible no longer holds the HW back as a replica
        waiting to join; ISR members still do until the controller removes them.
        """
        self._brokers = dict(brokers)
        return self.is_leader and self._maybe_increment_high_watermark(now_ms)

    # ---- leader inputs ----------------------------------------------------------------------

    def on_leader_append(self, log_end_offset: int, now_ms: int) -> bool:
        """The leader appended up to `log_end_offset`; True if the HW advanced.

        With `acks_all_fsync` off the leader's own log counts at once (a one-replica ISR's HW
        follows the log end offset); with it on, only once flushed (`on_leader_flush`).
        """
        self.leader_log_end_offset = log_end_offset
        if not self.acks_all_fsync:
            self.leader_flushed_offset = log_end_offset
        return self.is_leader and self._maybe_increment_high_watermark(now_ms)

    def on_leader_flush(self, flushed_offset: int, now_ms: int) -> bool:
        """The leader's log is durable below `flushed_offset`; True if the HW advanced."""
        self.leader_flushed_offset = max(self.leader_flushed_offset, flushed_offset)
        return self.is_leader and self._maybe_increment_high_watermark(now_ms)

    def update_follower_fetch(
        self,
        replica_id: int,
        broker_epoch: int,
        fetch_offset: int,
        leader_log_end_offset: int,
        now_ms: int,
        *,
        log_start_offset: int = UNKNOWN_OFFSET,
    ) -> FollowerFetchResult:
        """Record a follower's Fetch at `fetch_offset` (Kafka's `updateFollowerFetchState`).

        Call it for a replica Fetch that passed the epoch checks and returned no diverging
        epoch; `leader_log_end_offset` is the leader's log end offset when the read began.
        Errors: NOT_LEADER_OR_FOLLOWER if this broker does not lead, or if `broker_epoch` is
        older than the follower's registration (a zombie from before a restart);
        UNKNOWN_LEADER_EPOCH if `replica_id` is not a replica of the partition.
        """
        if not self.is_leader:
            return FollowerFetchResult(ErrorCode.not_leader_or_follower, self.high_watermark)
        state = self._remote.get(replica_id)
        if state is None:
            return FollowerFetchResult(ErrorCode.unknown_leader_epoch, self.high_watermark)
        registered = self._alive_broker_epoch(replica_id)
        if broker_epoch != NO_BROKER_EPOCH and registered is not None and registered > broker_epoch:
            return FollowerFetchResult(ErrorCode.not_leader_or_follower, self.high_watermark)
        self.leader_log_end_offset = max(self.leader_log_end_offset, leader_log_end_offset)
        if not self.acks_all_fsync:
            self.leader_flushed_offset = self.leader_log_end_offset
        previous_end = state.log_end_offset
        self._remote[replica_id] = state.after_fetch(
            fetch_offset, log_start_offset, now_ms, leader_log_end_offset, broker_epoch
        )
        proposal = self._maybe_expand_isr(replica_id)
        changed = False
        if previous_end != fetch_offset or proposal is not None:
            changed = self._maybe_increment_high_watermark(now_ms)
        return FollowerFetchResult(None, self.high_watermark, changed, proposal)

    # ---- ISR changes --------------------------------------------------------------------------

    @property
    def is_recovering(self) -> bool:
        """This broker leads after an unclean election and has not reported its recovery."""
        return self.is_leader and self.leader_recovery_state == LEADER_RECOVERING

    def complete_recovery(self) -> AlterPartitionRequest | None:
        """The leader finished its recovery after an unclean election (KIP-704): the
        AlterPartition that keeps the ISR and sets RECOVERED, or None when not recovering or
        another change is in flight (call again after it ends)."""
        if not self.is_recovering or self._pending is not None:
            return None
        request = replace(
            self._alter_partition_request(self._isr), leader_recovery_state=LEADER_RECOVERED
        )
        self._pending = PendingIsrChange(IsrChangeKind.SHRINK, frozenset(), request, self._isr)
        return request

    def _maybe_expand_isr(self, replica_id: int) -> AlterPartitionRequest | None:
        if self._pending is not None or replica_id in self._isr or self.is_recovering:
            return None
        if not self._is_replica_isr_eligible(replica_id) or not self._is_follower_in_sync(
            replica_id
        ):
            return None
        new_isr = self._isr | {replica_id}
        request = self._alter_partition_request(new_isr)
        self._pending = PendingIsrChange(
            IsrChangeKind.EXPAND, frozenset({replica_id}), request, self._isr
        )
        return request

    def _is_follower_in_sync(self, replica_id: int) -> bool:
        """Kafka's `isFollowerInSync`: at or past the HW and the current epoch's start."""
        state = self._remote[replica_id]
        return (
            self.leader_epoch_start_offset is not None
            and state.log_end_offset >= self.high_watermark
            and state.log_end_offset >= self.leader_epoch_start_offset
        )

    def _alive_broker_epoch(self, broker_id: int) -> int | None:
        broker = self._brokers.get(broker_id)
        if broker is None or broker.fenced:
            return None
        return broker.broker_epoch

    def _is_replica_isr_eligible(self, replica_id: int) -> bool:
        """Kafka's `isReplicaIsrEligible`: alive, not shutting down, same broker epoch."""
        state = self._remote.get(replica_id)
        broker = self._brokers.get(replica_id)
        if state is None or broker is None or broker.fenced or broker.in_controlled_shutdown:
            return False
        stored = state.broker_epoch
        return stored is not None and stored in (NO_BROKER_EPOCH, broker.broker_epoch)

    def out_of_sync_replicas(self, now_ms: int, lag_time_max_ms: int | None = None) -> set[int]:
        """ISR followers not caught up within the lag time (empty while a change is in flight)."""
        if self._pending is not None or not self.is_leader:
            return set()
        max_lag = self.replica_lag_time_max_ms if lag_time_max_ms is None else lag_time_max_ms
        out = set()
        for replica_id in sorted(self._isr - {self.local_broker_id}):
            state = self._remote.get(replica_id)
            if state is None or not state.is_caught_up(self.leader_log_end_offset, now_ms, max_lag):
                out.add(replica_id)
        return out

    def maybe_shrink_isr(
        self, now_ms: int, lag_time_max_ms: int | None = None
    ) -> AlterPartitionRequest | None:
        """Propose removing lagging followers (Kafka's `maybeShrinkIsr`), or None.

        Kafka runs this every `replica.lag.time.max.ms / 2`. The maximal ISR does not shrink
        until the controller confirms: shrinking early could advance the HW past data a
        still-committed ISR member lacks if the request fails.
        """
        out_of_sync = self.out_of_sync_replicas(now_ms, lag_time_max_ms)
        if not out_of_sync:
            return None
        request = self._alter_partition_request(self._isr - out_of_sync)
        self._pending = PendingIsrChange(
            IsrChangeKind.SHRINK, frozenset(out_of_sync), request, self._isr
        )
        return request

    def _alter_partition_request(self, isr: Iterable[int]) -> AlterPartitionRequest:
        members = []
        for broker_id in sorted(isr):
            if broker_id == self.local_broker_id:
                epoch = self.local_broker_epoch
            else:
                state = self._remote.get(broker_id)
                stored = state.broker_epoch if state is not None else None
                # An ISR member that has not fetched since this broker became leader: -1 is
                # safe, the controller bumps the partition epoch if it restarted meanwhile.
                epoch = NO_BROKER_EPOCH if stored is None else stored
            members.append(IsrMember(broker_id, epoch))
        return AlterPartitionRequest(
            leader_id=self.local_broker_id,
            leader_epoch=self.leader_epoch,
            partition_epoch=self.partition_epoch,
            new_isr=tuple(members),
        )

    def on_alter_partition_response(
        self,
        request: AlterPartitionRequest,
        now_ms: int,
        *,
        result: LeaderAndIsr | None = None,
        error: ErrorCode = ErrorCode.none,
    ) -> AlterPartitionOutcome:
        """Apply the controller's answer to `request` (Kafka's `submitAlterPartition` callback).

        - the pending change is no longer `request` (a metadata update came first): ignored;
        - `result` given: committed unless its leader epoch differs from ours or its
          partition epoch is older than ours (then ignored, the change stays pending until
          metadata arrives);
        - OPERATION_NOT_ATTEMPTED, INELIGIBLE_REPLICA: the controller did not apply it, the
          pending change is dropped (`reset`), a later fetch or shrink may propose again;
        - FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION, UNKNOWN_TOPIC_OR_PARTITION,
          UNKNOWN_TOPIC_ID, INVALID_REQUEST, NEW_LEADER_ELECTED: give up, stay pending until
          the metadata says what happened;
        - any other error: `retry` the same request.
        """
        pending = self._pending
        if pending is None or pending.request != request:
            return AlterPartitionOutcome(ignored=True)
        if result is not None and error is ErrorCode.none:
            if result.leader_epoch != self.leader_epoch or (
                result.partition_epoch < self.partition_epoch
            ):
                return AlterPartitionOutcome(ignored=True)
            self._isr = frozenset(result.isr)
            self.partition_epoch = result.partition_epoch
            self.leader_recovery_state = result.leader_recovery_state
            self._pending = None
            changed = self.is_leader and self._maybe_increment_high_watermark(now_ms)
            return AlterPartitionOutcome(committed=True, high_watermark_changed=changed)
        if error in _RESET_TO_COMMITTED:
            self._pending = None
            return AlterPartitionOutcome(reset=True)
        if error in _GIVE_UP_AND_WAIT_FOR_METADATA:
            return AlterPartitionOutcome()
        return AlterPartitionOutcome(retry=request)

    # ---- high watermark -----------------------------------------------------------------------

    def _maybe_increment_high_watermark(self, now_ms: int) -> bool:
        """Kafka's `maybeIncrementLeaderHW`, with the leader counted to its flushed offset."""
        if self.is_under_min_isr:
            return False
        candidate = self.leader_log_end_offset
        if self.acks_all_fsync:
            candidate = min(candidate, self.leader_flushed_offset)
        maximal_isr = self.maximal_isr
        for replica_id, state in self._remote.items():
            if state.log_end_offset < candidate and (
                replica_id in maximal_isr
                or self._should_wait_for_replica_to_join(replica_id, state, now_ms)
            ):
                candidate = state.log_end_offset
        if candidate > self.high_watermark:
            self.high_watermark = candidate
            return True
        return False

    def _should_wait_for_replica_to_join(
        self, replica_id: int, state: ReplicaState, now_ms: int
    ) -> bool:
        """A follower outside the ISR that is caught up and eligible holds the HW back too."""
        return state.is_caught_up(
            self.leader_log_end_offset, now_ms, self.replica_lag_time_max_ms
        ) and self._is_replica_isr_eligible(replica_id)

    # ---- produce and client checks --------------------------------------------------------------

    def check_before_append(self, acks: int) -> ErrorCode | None:
        """NOT_ENOUGH_REPLICAS before an acks=all append while the ISR is below the minimum.

        NOT_LEADER_OR_FOLLOWER when this broker does not lead. Other acks are not checked.
        """
        if not self.is_leader:
            return ErrorCode.not_leader_or_follower
        if acks != -1:
            return None
        return check_before_append(len(self._isr), self.min_insync_replicas, len(self._remote) + 1)

    def produce_completion(self, batch_last_offset: int) -> ProduceWaitStatus:
        """Whether an acks=all produce ending at `batch_last_offset` may be answered now."""
        return completion(
            batch_last_offset,
            self.high_watermark,
            len(self.maximal_isr),
            self.min_insync_replicas,
            replication_factor=len(self._remote) + 1,
            is_leader=self.is_leader,
        )

    def check_current_leader_epoch(self, current_leader_epoch: int | None) -> ErrorCode:
        """KIP-320 FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH for a request's epoch."""
        return check_current_leader_epoch(current_leader_epoch, self.leader_epoch)

    def list_offsets_error(self, isolation_level_given: bool) -> ErrorCode | None:
        """KIP-207: OFFSET_NOT_AVAILABLE for a client's latest-offset (or timestamp) lookup.

        A new leader's HW may lag the start offset of its epoch until the followers fetch;
        answering "latest" from it would move a consumer backwards. Only client requests
        (ListOffsets v2+, which carry an isolation level) get the error.
        """
        if not self.is_leader:
            return ErrorCode.not_leader_or_follower
        if (
            isolation_level_given
            and self.leader_epoch_start_offset is not None
            and self.leader_epoch_start_offset > self.high_watermark
        ):
            return ErrorCode.offset_not_available
        return None
