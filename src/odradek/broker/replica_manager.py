"""The data plane of a broker in a cluster (Kafka's ReplicaManager, ReplicaFetcherManager and
AlterPartitionManager), driving `odradek.replication`'s deterministic state machines.

Built only when `process.roles` is set (`ClusterMember` owns it); a single broker never has one,
so none of this is on its produce or fetch path. It:

- keeps one `HostedPartition` per replicated partition this broker hosts: its `PartitionLog`
  and its `PartitionState` (leader/follower state, ISR, high watermark), created and changed
  from the metadata image (`apply_local_changes`: become leader / become follower / delete,
  Kafka's `ReplicaManager.applyDelta`), and tells the coordinators when it gains or loses the
  leadership of a `__consumer_offsets` or `__transaction_state` partition (`on_election` /
  `on_resignation`: they load or unload it, Kafka's onLeadershipChange);
- answers client requests' leadership questions (`client_error`: NOT_LEADER_OR_FOLLOWER with
  the current leader, LEADER_NOT_AVAILABLE, KIP-320 epoch checks) and the node endpoints that
  accompany NOT_LEADER_OR_FOLLOWER (KIP-951);
- on the leader: applies replica Fetches (`replica_fetch_check`, `record_follower_fetch`:
  diverging epochs, follower state, high watermark), proposes ISR changes to the controller
  with AlterPartition (one in flight per partition, `PartitionState` guarantees it), shrinks
  the ISR every `replica.lag.time.max.ms / 2`, and keeps acks=all produces waiting until the
  high watermark passes their batch (`wait_for_acks_all`, Kafka's DelayedProduce). With
  `odradek.acks.all.fsync` the leader's own log counts for the high watermark only up to its
  flushed offset: every leader append schedules a group-commit fdatasync (`purgatory.GroupCommit`)
  whose completion feeds `PartitionState.on_leader_flush`;
- on a follower: starts and stops the `ReplicaFetcher` tasks (one per leader broker,
  `replica_fetcher.py`: Fetch, truncation, follower appends, fsync before the next Fetch) as
  leadership moves, each partition from the position `initial_fetch_position` gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from odradek.broker.group_runtime import OFFSETS_TOPIC
from odradek.broker.hosted_partition import HostedPartition, TopicPartition
from odradek.broker.kafka_channel import ChannelError, KafkaChannel
from odradek.broker.replica_fetcher import FollowerPosition, ReplicaFetcher
from odradek.broker.shutdown import cancel_and_wait
from odradek.broker.txn_runtime import TRANSACTION_STATE_TOPIC
from odradek.controller import LocalReplicaChanges, MetadataImage, kio_adapter
from odradek.protocol.codec import make, nested, request_module
from odradek.protocol.hot_encoders import LeaderIdAndEpoch, NodeEndpoint
from odradek.replication.low_watermark import low_watermark
from odradek.replication.partition_state import (
    AlterPartitionRequest,
    BrokerMetadata,
    LeaderAndIsr,
    PartitionState,
)
from odradek.replication.produce_wait import expired
from odradek.replication.truncation import (
    FetchPositionCheck,
    check_fetch_position,
    initial_fetch_position,
)
from odradek.storage.errors import StorageError

if TYPE_CHECKING:
    from odradek.broker.cluster_member import ClusterMember
    from odradek.broker.context import BrokerContext

# HostedPartition lives in hosted_partition.py; the handlers import it from here.
__all__ = ["HostedPartition", "ReplicaManager"]

logger = logging.getLogger(__name__)

_ALTER_PARTITION_VERSION = 3
_RETRY_BACKOFF_S = 0.2


class ReplicaManager:
    """This broker's replicated partitions (see the module docstring)."""

    def __init__(self, context: BrokerContext, member: ClusterMember) -> None:
        self.context = context
        self.member = member
        self.node_id = context.node_id
        self.partitions: dict[TopicPartition, HostedPartition] = {}
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self._image = MetadataImage()
        self._alter_channel = KafkaChannel(
            member.controller_address[0],
            member.controller_address[1],
            f"odradek-alter-partition-{self.node_id}",
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        context.groups.replicas = self
        context.transactions.replicas = self
        #: Set (and replaced) when a follower reports a fetch while DeleteRecords waits.
        self._low_watermark_moved = asyncio.Event()
        self._low_watermark_waiters = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._shrink_isr_loop()))

    async def stop(self) -> None:
        """Stop the replica fetchers and background work, each bounded (shutdown.py)."""
        for fetcher in list(self.fetchers.values()):
            await fetcher.stop()
        self.fetchers.clear()
        await cancel_and_wait(
            [*self._tasks, *self._background], "ISR shrink loop and AlterPartition requests"
        )
        self._tasks = []
        await self._alter_channel.close()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- metadata ----------------------------------------------------------------------------

    def _brokers(self, image: MetadataImage) -> dict[int, BrokerMetadata]:
        return {
            broker_id: BrokerMetadata(
                registration.epoch, registration.fenced, registration.in_controlled_shutdown
            )
            for broker_id, registration in image.brokers.items()
        }

    def _min_insync(self, topic: str) -> int:
        metadata = self.context.logs.topics().get(topic)
        override = metadata.config.get("min.insync.replicas") if metadata is not None else None
        return int(override) if override else self.context.config.min_insync_replicas

    def refresh_min_insync(self) -> None:
        """Topic or broker `min.insync.replicas` changed (a ConfigRecord): every hosted
        partition takes the new value."""
        for hosted in self.partitions.values():
            hosted.state.min_insync_replicas = self._min_insync(hosted.topic)

    def apply_local_changes(
        self, changes: LocalReplicaChanges, image: MetadataImage, previous: MetadataImage
    ) -> None:
        """Become leader / follower of what the metadata batch changed, drop deleted replicas
        (Kafka's ReplicaManager.applyDelta); call after the local logs match the image."""
        self._image = image
        now = self.context.now_ms()
        brokers = self._brokers(image)
        for key in changes.deletes:
            self._remove(key, previous)
        for (topic_id, index), registration in self._leaderships(changes, image, previous):
            hosted = self._hosted(topic_id, index, image, brokers)
            if hosted is None:
                continue
            self._become_leader(hosted, registration, now)
        for (topic_id, index), registration in changes.followers.items():
            hosted = self._hosted(topic_id, index, image, brokers)
            if hosted is None:
                continue
            self._become_follower(hosted, registration, image)
        if previous.brokers is not image.brokers:
            for hosted in self.partitions.values():
                hosted.state.local_broker_epoch = self.member.broker_epoch
                if hosted.state.on_metadata_update(brokers, now):
                    self._high_watermark_changed(hosted)

    def _leaderships(
        self, changes: LocalReplicaChanges, image: MetadataImage, previous: MetadataImage
    ) -> list[tuple[tuple[uuid.UUID, int], Any]]:
        """The leaderships to take up: none before `image` holds this process's registration.

        A restarted broker replays a metadata log that may still name it leader in the epoch
        its previous incarnation led (its session has not expired yet); the log it recovered
        may have lost records that incarnation wrote in that epoch (a power loss), and
        leading again in the same epoch would give those offsets new batches the followers
        do not truncate (one epoch, two histories). Kafka's broker serves nothing before the
        controller has its new registration (BrokerServer enables request processing once
        unfenced), and the registration moves the old incarnation's leaderships (new epochs).
        Once the registration is in, every partition the image says this broker leads is
        taken up.
        """

        def registered(view: MetadataImage) -> bool:
            own = view.brokers.get(self.node_id)
            return own is not None and own.incarnation_id == self.member.incarnation_id

        if not registered(image):
            return []
        leaders = dict(changes.leaders)
        if not registered(previous):
            for topic_id, topic in image.topics_by_id.items():
                for index, registration in topic.partitions.items():
                    if registration.leader == self.node_id:
                        leaders.setdefault((topic_id, index), registration)
        return list(leaders.items())

    def _hosted(
        self,
        topic_id: uuid.UUID,
        index: int,
        image: MetadataImage,
        brokers: Mapping[int, BrokerMetadata],
    ) -> HostedPartition | None:
        topic = image.topics_by_id.get(topic_id)
        if topic is None:
            return None
        key = (topic.name, index)
        hosted = self.partitions.get(key)
        if hosted is not None and hosted.topic_id != topic_id:
            # A stray replica of an earlier topic with the same name.
            self._drop(hosted)
            hosted = None
        log = self.context.logs.log(topic.name, index)
        if log is None:
            logger.warning("no local log for %s-%d; not replicating it", topic.name, index)
            return None
        if hosted is not None and hosted.log is not log:
            self._drop(hosted)
            hosted = None
        if hosted is None:
            state = PartitionState(
                self.node_id,
                replica_lag_time_max_ms=self.member.kraft.replica_lag_time_max_ms,
                min_insync_replicas=self._min_insync(topic.name),
                acks_all_fsync=self.context.config.acks_all_fsync,
                local_broker_epoch=self.member.broker_epoch,
                brokers=brokers,
            )
            hosted = HostedPartition(topic.name, topic_id, index, log, state)
            self.partitions[key] = hosted
        else:
            hosted.state.min_insync_replicas = self._min_insync(topic.name)
            hosted.state.local_broker_epoch = self.member.broker_epoch
            hosted.state.on_metadata_update(brokers, self.context.now_ms())
        return hosted

    def _become_leader(self, hosted: HostedPartition, registration: Any, now: int) -> None:
        self._stop_fetching(hosted)
        log = hosted.log
        result = hosted.state.become_leader(
            registration.leader_epoch,
            registration.partition_epoch,
            registration.isr,
            registration.replicas,
            now,
            log_end_offset=log.log_end_offset,
            high_watermark=log.high_watermark,
            flushed_offset=log.flushed_offset,
            leader_recovery_state=int(registration.leader_recovery_state),
        )
        if not result.applied:
            return
        log.leader_epoch = registration.leader_epoch
        if result.epoch_start is not None:
            log.maybe_assign_epoch_start_offset(*result.epoch_start)
        if result.is_new_leader:
            logger.info(
                "broker %d leads %s-%d in epoch %d from offset %d (ISR %s)",
                self.node_id,
                hosted.topic,
                hosted.index,
                registration.leader_epoch,
                log.log_end_offset,
                sorted(registration.isr),
            )
            self._schedule_flush(hosted)
        if hosted.state.is_recovering and result.epoch_start is not None:
            self._recover_after_unclean_election(hosted, registration.leader_epoch, now)
        self._high_watermark_changed(hosted)
        if result.epoch_start is not None:
            self._coordinator_elected(hosted, registration.leader_epoch)

    def _coordinator_elected(self, hosted: HostedPartition, leader_epoch: int) -> None:
        if hosted.topic == OFFSETS_TOPIC:
            self.context.groups.on_election(hosted.index, leader_epoch)
        elif hosted.topic == TRANSACTION_STATE_TOPIC:
            self.context.transactions.on_election(hosted.index, leader_epoch)

    def _coordinator_resigned(self, hosted: HostedPartition) -> None:
        if hosted.topic == OFFSETS_TOPIC:
            self.context.groups.on_resignation(hosted.index)
        elif hosted.topic == TRANSACTION_STATE_TOPIC:
            self.context.transactions.on_resignation(hosted.index)

    def _recover_after_unclean_election(
        self, hosted: HostedPartition, leader_epoch: int, now: int
    ) -> None:
        """Odradek's recovery step for a leader elected uncleanly (KIP-704's RECOVERING).

        Records earlier leaders had past this log's end are gone: that is logged here, and
        again, with the exact offsets, when a returning replica fetches with the old epoch.
        Every transaction open in this log whose transaction coordinator does not know it as
        committing gets an ABORT marker now, before anything is served, so the last stable
        offset moves and read_committed consumers never wait on a transaction whose marker
        went with the lost records. Then AlterPartition reports RECOVERED (the ISR may grow
        again). Runs synchronously inside the metadata update: no client request sees the
        partition half recovered.
        """
        log = hosted.log
        logger.warning(
            "unclean leader election: broker %d leads %s-%d in epoch %d from offset %d "
            "(high watermark it knew: %d); records earlier leaders had at or past offset %d "
            "are lost",
            self.node_id,
            hosted.topic,
            hosted.index,
            leader_epoch,
            log.log_end_offset,
            log.high_watermark,
            log.log_end_offset,
        )
        for transaction in log.ongoing_transactions():
            listed = self.context.transactions.list_transactions(
                state_filters=("PrepareCommit", "CompleteCommit"),
                producer_id_filters=(transaction.producer_id,),
            )
            states = {t.transaction_state for t in listed.transaction_states}
            if listed.error is ErrorCode.none and "PrepareCommit" in states:
                continue  # committing: the coordinator writes its COMMIT marker here
            # Committed by the coordinator's account but the marker went with the lost
            # records: COMMIT it, as the coordinator already told the producer.
            commit = listed.error is ErrorCode.none and "CompleteCommit" in states
            coordinator_epoch = next(
                (
                    view.coordinator_epoch
                    for view in log.producer_states()
                    if view.producer_id == transaction.producer_id
                ),
                0,
            )
            try:
                log.append_control(
                    transaction.producer_id,
                    transaction.producer_epoch,
                    commit,
                    max(coordinator_epoch, 0),
                    now,
                )
            except (StorageError, OSError) as error:
                logger.error(
                    "%s-%d: cannot abort the open transaction of producer %d: %s",
                    hosted.topic,
                    hosted.index,
                    transaction.producer_id,
                    error,
                )
                continue
            logger.warning(
                "%s-%d: %s the transaction of producer %d (epoch %d) open since offset %d "
                "(its coordinator knows it %s)",
                hosted.topic,
                hosted.index,
                "committed" if commit else "aborted",
                transaction.producer_id,
                transaction.producer_epoch,
                transaction.first_offset,
                "committed" if commit else "not as committing",
            )
        hosted.state.on_leader_append(log.log_end_offset, now)
        request = hosted.state.complete_recovery()
        if request is not None:
            self._send_alter_partition(hosted, request)

    def _become_follower(
        self, hosted: HostedPartition, registration: Any, image: MetadataImage
    ) -> None:
        was_leader = hosted.state.is_leader
        leader = registration.leader if registration.leader >= 0 else None
        new_epoch = hosted.state.become_follower(
            leader, registration.leader_epoch, registration.partition_epoch, registration.replicas
        )
        hosted.log.leader_epoch = registration.leader_epoch
        if was_leader:
            self._fail_waits(hosted, ErrorCode.not_leader_or_follower)
        self._coordinator_resigned(hosted)
        if not new_epoch and not was_leader:
            return
        self._stop_fetching(hosted)
        if leader is None:
            return
        registration_of_leader = image.brokers.get(leader)
        if registration_of_leader is None:
            return
        listener = next(
            (
                endpoint
                for endpoint in registration_of_leader.listeners
                if endpoint.name == self.member.listener_name
            ),
            None,
        )
        if listener is None:
            logger.warning("leader %d has no %s listener", leader, self.member.listener_name)
            return
        fetcher = self.fetchers.get(leader)
        if fetcher is None or (fetcher.host, fetcher.port) != (listener.host, listener.port):
            if fetcher is not None:
                self._spawn(fetcher.stop())
            fetcher = ReplicaFetcher(self, leader, listener.host, listener.port)
            self.fetchers[leader] = fetcher
            fetcher.start()
        log = hosted.log
        position = initial_fetch_position(
            log.leader_epoch_cache, log.log_end_offset, log.high_watermark
        )
        if position.truncate_to is not None:
            log.truncate_to(position.truncate_to)
        fetcher.add(
            FollowerPosition(
                hosted,
                registration.leader_epoch,
                position.fetch_offset,
                position.last_fetched_epoch,
            )
        )
        logger.info(
            "broker %d follows %d for %s-%d in epoch %d from offset %d",
            self.node_id,
            leader,
            hosted.topic,
            hosted.index,
            registration.leader_epoch,
            position.fetch_offset,
        )

    def _stop_fetching(self, hosted: HostedPartition) -> None:
        for fetcher in self.fetchers.values():
            fetcher.remove(hosted)

    def _remove(self, key: tuple[uuid.UUID, int], previous: MetadataImage) -> None:
        topic = previous.topics_by_id.get(key[0])
        if topic is None:
            return
        hosted = self.partitions.get((topic.name, key[1]))
        if hosted is not None and hosted.topic_id == key[0]:
            self._drop(hosted)

    def _drop(self, hosted: HostedPartition) -> None:
        self._stop_fetching(hosted)
        self._fail_waits(hosted, ErrorCode.not_leader_or_follower)
        self._coordinator_resigned(hosted)
        if self.partitions.get((hosted.topic, hosted.index)) is hosted:
            del self.partitions[(hosted.topic, hosted.index)]

    def forget_topic(self, name: str) -> None:
        """The topic's local logs were deleted: drop its partitions."""
        for hosted in [h for h in self.partitions.values() if h.topic == name]:
            self._drop(hosted)

    # -- client answers ----------------------------------------------------------------------

    def partition(self, topic: str, index: int) -> HostedPartition | None:
        return self.partitions.get((topic, index))

    def route(
        self, topic: str, index: int, current_leader_epoch: int | None = None
    ) -> tuple[HostedPartition | None, ErrorCode, LeaderIdAndEpoch | None]:
        """Where a client request for `topic`-`index` goes: the hosted partition (with NONE or
        the error `client_error` gives), or, for a replicated partition not hosted here, its
        error from the image (NOT_LEADER_OR_FOLLOWER with the leader, LEADER_NOT_AVAILABLE,
        UNKNOWN_TOPIC_OR_PARTITION).

        Every topic of a cluster is the controller's, so a local log the image does not name
        is never served, UNKNOWN_TOPIC_OR_PARTITION (Kafka's answer for a partition missing
        from its metadata cache). Before the first metadata catch-up (a restart) the logs on
        disk are replicas whose role is not known yet: serving them alone would acknowledge
        writes no follower has and move the high watermark past them (found by the simulator,
        isolate-leader seed 2). A cluster broker reads no request before it is unfenced
        anyway (KafkaConnection); this holds should one reach here."""
        hosted = self.partitions.get((topic, index))
        if hosted is not None:
            error, leader = self.client_error(hosted, current_leader_epoch)
            return hosted, error, leader
        topic_id = self._image.topics_by_name.get(topic)
        if topic_id is None:
            return None, ErrorCode.unknown_topic_or_partition, None
        registration = self._image.topics_by_id[topic_id].partitions.get(index)
        if registration is None:
            return None, ErrorCode.unknown_topic_or_partition, None
        if registration.leader < 0:
            return None, ErrorCode.leader_not_available, None
        return (
            None,
            ErrorCode.not_leader_or_follower,
            LeaderIdAndEpoch(registration.leader, registration.leader_epoch),
        )

    def client_error(
        self, hosted: HostedPartition, current_leader_epoch: int | None = None
    ) -> tuple[ErrorCode, LeaderIdAndEpoch | None]:
        """What a client request to `hosted` gets before any read or append: NONE, the KIP-320
        epoch errors, LEADER_NOT_AVAILABLE (no leader), or NOT_LEADER_OR_FOLLOWER with the
        leader and epoch the image names (KIP-951's CurrentLeader)."""
        state = hosted.state
        error = state.check_current_leader_epoch(current_leader_epoch)
        if error is not ErrorCode.none:
            return error, None
        if state.is_leader:
            return ErrorCode.none, None
        if state.leader_id is None:
            return ErrorCode.leader_not_available, None
        return ErrorCode.not_leader_or_follower, LeaderIdAndEpoch(
            state.leader_id, state.leader_epoch
        )

    def node_endpoints(self, broker_ids: set[int]) -> list[NodeEndpoint]:
        """KIP-951's NodeEndpoints of the leaders named in NOT_LEADER_OR_FOLLOWER answers."""
        endpoints = []
        for broker_id in sorted(broker_ids):
            registration = self._image.brokers.get(broker_id)
            if registration is None:
                continue
            client_listener = self.member.client_listener_name()
            for listener in registration.listeners:
                if listener.name == client_listener:
                    endpoints.append(
                        NodeEndpoint(broker_id, listener.host, listener.port, registration.rack)
                    )
                    break
        return endpoints

    # -- leader: produce ---------------------------------------------------------------------

    def after_leader_append(self, hosted: HostedPartition) -> None:
        """A produce appended to the leader's log: advance the HW if it may, wake the
        followers' fetches, and start a group-commit flush when the HW waits for one."""
        state = hosted.state
        if state.on_leader_append(hosted.log.log_end_offset, self.context.now_ms()):
            self._high_watermark_changed(hosted)
        self.context.data_arrived.notify((hosted.topic, hosted.index))
        if state.acks_all_fsync:
            self._schedule_flush(hosted)

    def _schedule_flush(self, hosted: HostedPartition) -> None:
        if hosted.flush_scheduled or not hosted.state.acks_all_fsync:
            return
        hosted.flush_scheduled = True
        self._spawn(self._flush(hosted))

    async def _flush(self, hosted: HostedPartition) -> None:
        try:
            commit = self.context.group_commit(hosted.topic, hosted.index)
            while commit is not None and commit.log is hosted.log:
                target = hosted.log.log_end_offset
                try:
                    await commit.wait_flushed(target)
                except OSError:
                    return
                if hosted.state.on_leader_flush(hosted.log.flushed_offset, self.context.now_ms()):
                    self._high_watermark_changed(hosted)
                if hosted.log.log_end_offset <= target:
                    return
        finally:
            hosted.flush_scheduled = False

    async def wait_for_acks_all(
        self, hosted: HostedPartition, last_offset: int, timeout_ms: int
    ) -> ErrorCode:
        """Until the HW passes `last_offset` (NONE or NOT_ENOUGH_REPLICAS_AFTER_APPEND),
        leadership is lost (NOT_LEADER_OR_FOLLOWER) or `timeout_ms` passes
        (REQUEST_TIMED_OUT): Kafka's DelayedProduce for one partition."""
        status = hosted.state.produce_completion(last_offset)
        if status.is_done:
            return status.error
        waiter: asyncio.Future[ErrorCode] = asyncio.get_running_loop().create_future()
        entry = (last_offset, waiter)
        hosted.waits.append(entry)
        try:
            async with asyncio.timeout(max(timeout_ms, 0) / 1000):
                return await asyncio.shield(waiter)
        except TimeoutError:
            return expired(hosted.state.produce_completion(last_offset)).error
        finally:
            with contextlib.suppress(ValueError):
                hosted.waits.remove(entry)

    def _high_watermark_changed(self, hosted: HostedPartition) -> None:
        state = hosted.state
        hosted.log.high_watermark = state.high_watermark
        if hosted.waits:
            remaining = []
            for last_offset, waiter in hosted.waits:
                status = state.produce_completion(last_offset)
                if status.is_done:
                    if not waiter.done():
                        waiter.set_result(status.error)
                else:
                    remaining.append((last_offset, waiter))
            hosted.waits = remaining
        self.context.data_arrived.notify((hosted.topic, hosted.index))

    def _fail_waits(self, hosted: HostedPartition, error: ErrorCode) -> None:
        for _offset, waiter in hosted.waits:
            if not waiter.done():
                waiter.set_result(error)
        hosted.waits = []

    # -- leader: DeleteRecords -------------------------------------------------------------

    def low_watermark(self, hosted: HostedPartition) -> int:
        """The smallest log start offset over the leader and its live followers."""
        return low_watermark(
            hosted.log.log_start_offset, hosted.state.replica_states(), hosted.state.brokers
        )

    async def wait_for_low_watermark(
        self, hosted: HostedPartition, offset: int, timeout_ms: int
    ) -> tuple[ErrorCode, int]:
        """Until the low watermark reaches `offset` on every live replica (NONE), leadership
        is lost (NOT_LEADER_OR_FOLLOWER) or `timeout_ms` passes (REQUEST_TIMED_OUT): Kafka's
        DelayedDeleteRecords. Returns the error and the low watermark then."""
        self.context.data_arrived.notify((hosted.topic, hosted.index))  # answer waiting fetches
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_ms, 0) / 1000
        self._low_watermark_waiters += 1
        try:
            while True:
                if (
                    not hosted.state.is_leader
                    or self.partitions.get((hosted.topic, hosted.index)) is not hosted
                ):
                    return ErrorCode.not_leader_or_follower, -1
                current = self.low_watermark(hosted)
                if current >= offset:
                    return ErrorCode.none, current
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return ErrorCode.request_timed_out, current
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._low_watermark_moved.wait(), remaining)
        finally:
            self._low_watermark_waiters -= 1

    # -- leader: replica fetches -------------------------------------------------------------

    def replica_fetch_check(
        self,
        hosted: HostedPartition,
        fetch_offset: int,
        last_fetched_epoch: int,
        current_leader_epoch: int,
    ) -> FetchPositionCheck:
        """KIP-320 epoch check, leadership, diverging epoch and range of a replica Fetch."""
        log = hosted.log
        state = hosted.state
        check = check_fetch_position(
            log.leader_epoch_cache,
            fetch_offset,
            last_fetched_epoch,
            current_leader_epoch=current_leader_epoch,
            leader_epoch=state.leader_epoch,
            is_leader=state.is_leader,
            log_start_offset=log.log_start_offset,
            log_end_offset=log.log_end_offset,
        )
        diverging = check.diverging_epoch
        if diverging is not None and fetch_offset > diverging.end_offset:
            # What a returning replica holds beyond this log: lost from the partition (an
            # unclean election, or acks=1 / zombie-leader writes no ISR member had).
            logger.warning(
                "%s-%d: a replica fetching at offset %d in epoch %d diverges from this log "
                "at offset %d; its records in [%d, %d) are not in this log",
                hosted.topic,
                hosted.index,
                fetch_offset,
                last_fetched_epoch,
                diverging.end_offset,
                diverging.end_offset,
                fetch_offset,
            )
        return check

    def record_follower_fetch(
        self,
        hosted: HostedPartition,
        replica_id: int,
        broker_epoch: int,
        fetch_offset: int,
        follower_log_start_offset: int,
    ) -> ErrorCode | None:
        """A follower fetched from `fetch_offset`: update its state, the HW, and propose an
        ISR expansion when it caught up (Kafka's Partition.updateFollowerFetchState)."""
        result = hosted.state.update_follower_fetch(
            replica_id,
            broker_epoch,
            fetch_offset,
            hosted.log.log_end_offset,
            self.context.now_ms(),
            log_start_offset=follower_log_start_offset,
        )
        if result.error is not None:
            return result.error
        if self._low_watermark_waiters:
            self._low_watermark_moved.set()
            self._low_watermark_moved = asyncio.Event()
        if result.high_watermark_changed:
            self._high_watermark_changed(hosted)
        if result.alter_partition is not None:
            self._send_alter_partition(hosted, result.alter_partition)
        return None

    # -- leader: ISR changes -----------------------------------------------------------------

    async def _shrink_isr_loop(self) -> None:
        interval_s = max(self.member.kraft.replica_lag_time_max_ms / 2000, 0.1)
        while True:
            await asyncio.sleep(interval_s)
            now = self.context.now_ms()
            for hosted in list(self.partitions.values()):
                request = hosted.state.maybe_shrink_isr(now)
                if request is not None:
                    logger.info(
                        "broker %d: shrinking the ISR of %s-%d to %s",
                        self.node_id,
                        hosted.topic,
                        hosted.index,
                        list(request.isr),
                    )
                    self._send_alter_partition(hosted, request)

    def _send_alter_partition(
        self, hosted: HostedPartition, request: AlterPartitionRequest
    ) -> None:
        self._spawn(self._alter_partition(hosted, request))

    async def _alter_partition(
        self, hosted: HostedPartition, request: AlterPartitionRequest
    ) -> None:
        """AlterPartition v3 to the controller, then the answer applied to the partition state
        (Kafka's AlterPartitionManager; the PartitionChangeRecord follows through metadata)."""
        module = request_module(kio_adapter.ALTER_PARTITION, _ALTER_PARTITION_VERSION)
        while True:
            partition = make(
                nested(module, "PartitionData"),
                partition_index=hosted.index,
                leader_epoch=request.leader_epoch,
                new_isr_with_epochs=tuple(
                    make(
                        nested(module, "BrokerState"),
                        broker_id=member.broker_id,
                        broker_epoch=member.broker_epoch,
                    )
                    for member in request.new_isr
                ),
                leader_recovery_state=request.leader_recovery_state,
                partition_epoch=request.partition_epoch,
            )
            try:
                response = await self._alter_channel.request(
                    kio_adapter.ALTER_PARTITION,
                    _ALTER_PARTITION_VERSION,
                    broker_id=self.node_id,
                    broker_epoch=self.member.broker_epoch,
                    topics=(
                        make(
                            nested(module, "TopicData"),
                            topic_id=hosted.topic_id,
                            partitions=(partition,),
                        ),
                    ),
                )
            except ChannelError as error:
                logger.warning("AlterPartition: controller unreachable: %s", error)
                await asyncio.sleep(_RETRY_BACKOFF_S)
                continue
            now = self.context.now_ms()
            error_code = ErrorCode(response.error_code)
            result = None
            if error_code is ErrorCode.none and response.topics:
                answer = response.topics[0].partitions[0]
                error_code = ErrorCode(answer.error_code)
                if error_code is ErrorCode.none:
                    result = LeaderAndIsr(
                        int(answer.leader_id),
                        int(answer.leader_epoch),
                        tuple(int(b) for b in answer.isr),
                        int(answer.partition_epoch),
                        int(answer.leader_recovery_state),
                    )
            outcome = hosted.state.on_alter_partition_response(
                request, now, result=result, error=error_code
            )
            if error_code is not ErrorCode.none:
                logger.info(
                    "AlterPartition of %s-%d to %s: %s",
                    hosted.topic,
                    hosted.index,
                    list(request.isr),
                    error_code.name,
                )
            if outcome.high_watermark_changed:
                self._high_watermark_changed(hosted)
            if outcome.retry is None:
                return
            request = outcome.retry
            await asyncio.sleep(_RETRY_BACKOFF_S)
