"""Topics and partitions: creation, deletion, leaders, ISRs and AlterPartition.

Kafka's ReplicationControlManager, without reassignment and without eligible leader replicas
(KIP-966 ELR: Odradek does not build it; the ISR keeps its last member instead, as Kafka without
ELR does). Every leader/ISR change is computed by `PartitionChangeBuilder`.

- CreateTopics places replicas over active brokers (unfenced, not shutting down) with Kafka's
  round robin and a random start (`placement`); explicit assignments are honoured; the ISR is
  the replicas that are active, the leader the first of them.
- A fenced or shutting-down broker leaves every ISR and its leaderships move to another ISR
  member (`handle_broker_fenced`, `handle_broker_in_controlled_shutdown`); a partition whose only
  ISR member goes keeps that member in its ISR and has no leader (-1) until the member returns —
  or, with `unclean.leader.election.enable`, until any other replica is elected uncleanly
  (ISR = that leader, LeaderRecoveryState RECOVERING).
- An unfenced broker leads the leaderless partitions it is an ISR member of
  (`handle_broker_unfenced`).
- AlterPartition is validated as Kafka 4's ReplicationControlManager does (see `alter_partition`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field

from kio.schema.errors import ErrorCode

from odradek.controller.cluster_control import (
    BrokerControlState,
    ClusterControlManager,
    MetadataReplayError,
    next_broker_state,
)
from odradek.controller.configuration_control import (
    ConfigurationControlManager,
    validate_configs,
)
from odradek.controller.messages import (
    AlterPartitionPartition,
    AlterPartitionPartitionResponse,
    AlterPartitionRequest,
    AlterPartitionResponse,
    AlterPartitionTopicResponse,
    BrokerHeartbeatRequest,
    BrokerHeartbeatResponse,
    CreatableTopic,
    CreatableTopicResult,
    CreatePartitionsTopic,
    TopicResult,
)
from odradek.controller.partition_change import (
    Election,
    LeaderRecoveryState,
    PartitionChangeBuilder,
    PartitionRegistration,
    copy_without,
    is_valid_isr,
)
from odradek.controller.placement import InvalidReplicationFactor, Rng, place_replicas
from odradek.controller.records import (
    NO_LEADER,
    NO_LEADER_CHANGE,
    ConfigResourceType,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RemoveTopicRecord,
    TopicRecord,
)
from odradek.storage.errors import InvalidTopicName
from odradek.storage.log_manager import validate_topic_name

TopicIdPartition = tuple[uuid.UUID, int]

#: Kafka rejects a CreateTopics / CreatePartitions batch larger than this.
MAX_PARTITIONS_PER_BATCH = 10_000


@dataclass(slots=True)
class TopicControlInfo:
    name: str
    topic_id: uuid.UUID
    parts: dict[int, PartitionRegistration] = field(default_factory=dict)


class _TopicError(Exception):
    def __init__(self, error_code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


def new_topic_id(rng: Rng, used: Container[uuid.UUID]) -> uuid.UUID:
    """A random (version 4) topic id from the injected RNG that no topic of this log has ever
    had: a seeded RNG restarted with the controller may repeat its draws, and a reused id would
    let a stale replica of a deleted topic pass for the new one."""
    while True:
        value = uuid.UUID(int=rng.getrandbits(128), version=4)
        if value.int != 0 and value not in used:
            return value


class ReplicationControlManager:
    """Topics and partitions of the cluster (see the module docstring)."""

    def __init__(
        self,
        cluster: ClusterControlManager,
        configs: ConfigurationControlManager,
        rng: Rng,
        default_num_partitions: int = 1,
        default_replication_factor: int = 1,
    ) -> None:
        self.cluster = cluster
        self.configs = configs
        self.rng = rng
        self.default_num_partitions = default_num_partitions
        self.default_replication_factor = default_replication_factor
        self.topics_by_name: dict[str, uuid.UUID] = {}
        self.topics: dict[uuid.UUID, TopicControlInfo] = {}
        #: Every topic id a TopicRecord ever carried, deleted topics included.
        self.used_topic_ids: set[uuid.UUID] = set()

    # -- queries ---------------------------------------------------------------------------

    def partition(self, topic_id: uuid.UUID, partition_id: int) -> PartitionRegistration | None:
        topic = self.topics.get(topic_id)
        return None if topic is None else topic.parts.get(partition_id)

    def all_partitions(self) -> Iterator[tuple[TopicControlInfo, int, PartitionRegistration]]:
        for topic in self.topics.values():
            for partition_id, partition in topic.parts.items():
                yield topic, partition_id, partition

    def partitions_with_broker_in_isr(self, broker_id: int) -> list[TopicIdPartition]:
        return [
            (topic.topic_id, partition_id)
            for topic, partition_id, partition in self.all_partitions()
            if broker_id in partition.isr
        ]

    def partitions_with_no_leader(self) -> list[TopicIdPartition]:
        return [
            (topic.topic_id, partition_id)
            for topic, partition_id, partition in self.all_partitions()
            if partition.leader == NO_LEADER
        ]

    def has_leaderships(self, broker_id: int) -> bool:
        return any(p.leader == broker_id for _, _, p in self.all_partitions())

    # -- leader and ISR changes ------------------------------------------------------------

    def _builder(
        self,
        topic: TopicControlInfo,
        partition_id: int,
        is_acceptable_leader: Callable[[int], bool] | None = None,
    ) -> PartitionChangeBuilder:
        builder = PartitionChangeBuilder(
            topic.parts[partition_id],
            topic.topic_id,
            partition_id,
            is_acceptable_leader or self.cluster.is_active,
        )
        if self.configs.unclean_leader_election_enabled_for_topic(topic.name):
            builder.set_election(Election.UNCLEAN)
        return builder

    def generate_leader_and_isr_updates(
        self,
        partitions: Sequence[TopicIdPartition],
        broker_to_remove: int = NO_LEADER,
        broker_to_add: int = NO_LEADER,
    ) -> list[PartitionChangeRecord]:
        """Kafka's generateLeaderAndIsrUpdates: drop `broker_to_remove` from the ISR and
        leadership of each partition, treating `broker_to_add` as able to lead even while the
        registration still says fenced (the unfence record is in the same batch)."""

        def acceptable(replica: int) -> bool:
            return replica != broker_to_remove and (
                replica == broker_to_add or self.cluster.is_active(replica)
            )

        records: list[PartitionChangeRecord] = []
        for topic_id, partition_id in partitions:
            topic = self.topics[topic_id]
            builder = self._builder(topic, partition_id, acceptable)
            builder.set_target_isr(copy_without(topic.parts[partition_id].isr, broker_to_remove))
            record = builder.build()
            if record is not None:
                records.append(record)
        return records

    def handle_broker_fenced(self, broker_id: int) -> list[MetadataRecord]:
        """Move the broker's leaderships, drop it from ISRs, then fence it."""
        records: list[MetadataRecord] = []
        records += self.generate_leader_and_isr_updates(
            self.partitions_with_broker_in_isr(broker_id), broker_to_remove=broker_id
        )
        registration = self.cluster.registration(broker_id)
        if registration is not None and not registration.fenced:
            records.append(self.cluster.fence_record(broker_id))
        return records

    def handle_broker_unfenced(self, broker_id: int) -> list[MetadataRecord]:
        """Unfence the broker, then let it lead leaderless partitions it may lead."""
        records: list[MetadataRecord] = [self.cluster.unfence_record(broker_id)]
        records += self.generate_leader_and_isr_updates(
            self.partitions_with_no_leader(), broker_to_add=broker_id
        )
        return records

    def handle_broker_in_controlled_shutdown(self, broker_id: int) -> list[MetadataRecord]:
        records: list[MetadataRecord] = []
        registration = self.cluster.registration(broker_id)
        if registration is not None and not registration.in_controlled_shutdown:
            records.append(self.cluster.controlled_shutdown_record(broker_id))
        records += self.generate_leader_and_isr_updates(
            self.partitions_with_broker_in_isr(broker_id), broker_to_remove=broker_id
        )
        return records

    def handle_broker_shutdown(self, broker_id: int) -> list[PartitionChangeRecord]:
        """A broker registers again: the old registration's ISR memberships and leaderships
        end with it (Kafka's handleBrokerShutdown without ELR; KIP-903's point)."""
        return self.generate_leader_and_isr_updates(
            self.partitions_with_broker_in_isr(broker_id), broker_to_remove=broker_id
        )

    def maybe_elect_unclean_leaders(self) -> list[PartitionChangeRecord]:
        """Unclean elections for leaderless partitions of topics that allow them (Kafka's
        periodic maybeElectUncleanLeaders)."""
        records: list[PartitionChangeRecord] = []
        for topic_id, partition_id in self.partitions_with_no_leader():
            topic = self.topics[topic_id]
            if not self.configs.unclean_leader_election_enabled_for_topic(topic.name):
                continue
            record = self._builder(topic, partition_id).build()
            if record is not None:
                records.append(record)
        return records

    def process_broker_heartbeat(
        self, request: BrokerHeartbeatRequest, now_ms: int
    ) -> tuple[list[MetadataRecord], BrokerHeartbeatResponse, BrokerControlState]:
        """Kafka's processBrokerHeartbeat: the records of the broker's state transition, the
        response, and the next state (the caller touches the session after the write)."""
        error = self.cluster.check_broker_epoch(request.broker_id, request.broker_epoch)
        if error is not ErrorCode.none:
            return [], BrokerHeartbeatResponse(error), BrokerControlState.FENCED
        broker_id = request.broker_id
        heartbeat = self.cluster.heartbeats.get(broker_id)
        register_offset = self.cluster.register_record_offsets[broker_id]
        current = self.cluster.current_state(broker_id)
        following = next_broker_state(
            current,
            request,
            register_offset,
            self.has_leaderships(broker_id),
            -1 if heartbeat is None else heartbeat.controlled_shutdown_offset,
            self.cluster.lowest_active_offset(),
        )
        registration = self.cluster.registrations[broker_id]
        if following is BrokerControlState.UNFENCED and registration.in_controlled_shutdown:
            # This registration ended in a controlled shutdown: the broker must register again
            # rather than come back as a leader the cluster believes is shutting down.
            following = BrokerControlState.SHUTDOWN_NOW
        records: list[MetadataRecord] = []
        if following is not current:
            if following in (BrokerControlState.FENCED, BrokerControlState.SHUTDOWN_NOW):
                records = self.handle_broker_fenced(broker_id)
            elif following is BrokerControlState.UNFENCED:
                records = self.handle_broker_unfenced(broker_id)
            elif following is BrokerControlState.CONTROLLED_SHUTDOWN:
                records = self.handle_broker_in_controlled_shutdown(broker_id)
        response = BrokerHeartbeatResponse(
            ErrorCode.none,
            is_caught_up=request.current_metadata_offset >= register_offset,
            is_fenced=following.fenced,
            should_shut_down=following.should_shut_down,
        )
        return records, response, following

    # -- AlterPartition --------------------------------------------------------------------

    def _validate_alter_partition(
        self,
        broker_id: int,
        partition: PartitionRegistration | None,
        data: AlterPartitionPartition,
        version: int,
    ) -> ErrorCode:
        """Kafka 4's validateAlterPartitionData, check for check."""
        if partition is None:
            return ErrorCode.unknown_topic_or_partition
        # A leader that knows a newer epoch than ours talks to a stale controller.
        if data.leader_epoch > partition.leader_epoch:
            return ErrorCode.not_controller
        if data.partition_epoch > partition.partition_epoch:
            return ErrorCode.not_controller
        if data.leader_epoch < partition.leader_epoch:
            return ErrorCode.fenced_leader_epoch
        if broker_id != partition.leader:
            return ErrorCode.invalid_request
        if data.partition_epoch < partition.partition_epoch:
            return ErrorCode.invalid_update_version
        new_isr = [state.broker_id for state in data.new_isr_with_epochs]
        if not is_valid_isr(partition.replicas, new_isr):
            return ErrorCode.invalid_request
        if partition.leader not in new_isr:
            return ErrorCode.invalid_request
        recovering = data.leader_recovery_state == LeaderRecoveryState.RECOVERING
        if recovering and len(new_isr) > 1:
            return ErrorCode.invalid_request
        if recovering and partition.leader_recovery_state is LeaderRecoveryState.RECOVERED:
            return ErrorCode.invalid_request
        for state in data.new_isr_with_epochs:
            registration = self.cluster.registration(state.broker_id)
            if (
                registration is None
                or registration.in_controlled_shutdown
                or registration.fenced
                or state.broker_epoch not in (-1, registration.epoch)
            ):
                # KIP-903: only the current registration of a live broker may join the ISR.
                return (
                    ErrorCode.ineligible_replica
                    if version > 1
                    else ErrorCode.operation_not_attempted
                )
        return ErrorCode.none

    def alter_partition(
        self, request: AlterPartitionRequest, version: int
    ) -> tuple[list[PartitionChangeRecord], AlterPartitionResponse]:
        """Kafka's ReplicationControlManager.alterPartition for AlterPartition `version`.

        Top level: STALE_BROKER_EPOCH when the requester's broker epoch is not current.
        Per topic: UNKNOWN_TOPIC_ID (v2+, by id) / UNKNOWN_TOPIC_OR_PARTITION (v0-1, by name).
        Per partition, in Kafka's order: UNKNOWN_TOPIC_OR_PARTITION; NOT_CONTROLLER when the
        request's leader or partition epoch is ahead of ours; FENCED_LEADER_EPOCH when its
        leader epoch is behind; INVALID_REQUEST when the requester is not the leader;
        INVALID_UPDATE_VERSION when its partition epoch is behind; INVALID_REQUEST for an ISR
        that is not a subset of the replicas, lacks the leader, has more than the leader while
        RECOVERING, or goes RECOVERED -> RECOVERING; INELIGIBLE_REPLICA (v2+;
        OPERATION_NOT_ATTEMPTED before) when a proposed member is unregistered, fenced, shutting
        down or of another broker epoch.
        A change that also moved the leader answers NEW_LEADER_ELECTED (v2+;
        NOT_LEADER_OR_FOLLOWER before), otherwise the new partition state.
        """
        error = self.cluster.check_broker_epoch(request.broker_id, request.broker_epoch)
        if error is not ErrorCode.none:
            return [], AlterPartitionResponse(error)
        records: list[PartitionChangeRecord] = []
        topics: list[AlterPartitionTopicResponse] = []
        for topic_data in request.topics:
            if version > 1:
                topic_id = topic_data.topic_id
                unknown = ErrorCode.unknown_topic_id
            else:
                topic_id = self.topics_by_name.get(topic_data.topic_name)
                unknown = ErrorCode.unknown_topic_or_partition
            topic = None if topic_id is None else self.topics.get(topic_id)
            results: list[AlterPartitionPartitionResponse] = []
            for data in topic_data.partitions:
                if topic is None:
                    results.append(AlterPartitionPartitionResponse(data.partition_index, unknown))
                    continue
                results.append(self._alter_one(request.broker_id, topic, data, version, records))
            topics.append(
                AlterPartitionTopicResponse(
                    topic_data.topic_id, tuple(results), topic_data.topic_name
                )
            )
        return records, AlterPartitionResponse(ErrorCode.none, tuple(topics))

    def _alter_one(
        self,
        broker_id: int,
        topic: TopicControlInfo,
        data: AlterPartitionPartition,
        version: int,
        records: list[PartitionChangeRecord],
    ) -> AlterPartitionPartitionResponse:
        partition_id = data.partition_index
        partition = topic.parts.get(partition_id)
        error = self._validate_alter_partition(broker_id, partition, data, version)
        if error is not ErrorCode.none or partition is None:
            return AlterPartitionPartitionResponse(partition_id, error)
        builder = self._builder(topic, partition_id)
        builder.set_target_isr(state.broker_id for state in data.new_isr_with_epochs)
        builder.set_target_leader_recovery_state(LeaderRecoveryState(data.leader_recovery_state))
        record = builder.build()
        if record is not None:
            records.append(record)
            partition = partition.merge(record)
            if record.leader not in (NO_LEADER_CHANGE, broker_id):
                moved = (
                    ErrorCode.new_leader_elected
                    if version > 1
                    else ErrorCode.not_leader_or_follower
                )
                return AlterPartitionPartitionResponse(partition_id, moved)
        return AlterPartitionPartitionResponse(
            partition_id,
            ErrorCode.none,
            leader_id=partition.leader,
            leader_epoch=partition.leader_epoch,
            isr=partition.isr,
            leader_recovery_state=int(partition.leader_recovery_state),
            partition_epoch=partition.partition_epoch,
        )

    # -- topics and partitions -------------------------------------------------------------

    def create_topics(
        self, topics: Sequence[CreatableTopic]
    ) -> tuple[list[MetadataRecord], list[CreatableTopicResult]]:
        """Kafka's createTopics: records for every topic that can be created, and a result per
        topic (INVALID_REQUEST for a name given twice, INVALID_TOPIC_EXCEPTION,
        TOPIC_ALREADY_EXISTS, INVALID_CONFIG, INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR,
        INVALID_REPLICA_ASSIGNMENT, POLICY_VIOLATION for an oversized batch)."""
        records: list[MetadataRecord] = []
        results: list[CreatableTopicResult] = []
        counts: dict[str, int] = {}
        for topic in topics:
            counts[topic.name] = counts.get(topic.name, 0) + 1
        total = sum(
            len(t.assignments)
            or (self.default_num_partitions if t.num_partitions == -1 else max(t.num_partitions, 0))
            for t in topics
        )
        for topic in topics:
            try:
                if total > MAX_PARTITIONS_PER_BATCH:
                    raise _TopicError(
                        ErrorCode.policy_violation,
                        "Excessively large number of partitions per request.",
                    )
                if counts[topic.name] > 1:
                    raise _TopicError(
                        ErrorCode.invalid_request, f"Duplicate topic name {topic.name}."
                    )
                topic_records, result = self._create_topic(topic)
            except _TopicError as error:
                results.append(CreatableTopicResult(topic.name, error.error_code, error.message))
                continue
            records += topic_records
            results.append(result)
        return records, results

    def _create_topic(
        self, topic: CreatableTopic
    ) -> tuple[list[MetadataRecord], CreatableTopicResult]:
        try:
            validate_topic_name(topic.name)
        except InvalidTopicName as error:
            raise _TopicError(ErrorCode.invalid_topic_exception, str(error)) from None
        if topic.name in self.topics_by_name:
            raise _TopicError(
                ErrorCode.topic_already_exists, f"Topic '{topic.name}' already exists."
            )
        collision = self._colliding_topic(topic.name)
        if collision is not None:
            raise _TopicError(
                ErrorCode.invalid_topic_exception,
                f"Topic '{topic.name}' collides with existing topic: {collision}",
            )
        problem = validate_configs(ConfigResourceType.TOPIC, dict(topic.configs))
        if problem is not None:
            raise _TopicError(ErrorCode.invalid_config, problem)
        if topic.assignments:
            partitions = self._assigned_partitions(topic)
        else:
            partitions = self._placed_partitions(topic)
        topic_id = new_topic_id(self.rng, self.used_topic_ids)
        records: list[MetadataRecord] = list(
            self.configs.topic_config_records(
                topic.name, ((k, v) for k, v in topic.configs if v is not None)
            )
        )
        records.append(TopicRecord(topic.name, topic_id))
        records += [p.to_record(topic_id, i) for i, p in enumerate(partitions)]
        result = CreatableTopicResult(
            topic.name,
            ErrorCode.none,
            topic_id=topic_id,
            num_partitions=len(partitions),
            replication_factor=len(partitions[0].replicas),
        )
        return records, result

    def _colliding_topic(self, name: str) -> str | None:
        """Kafka refuses names that differ only in '.' versus '_' from an existing topic."""
        if "." not in name and "_" not in name:
            return None
        unified = name.replace(".", "_")
        for existing in self.topics_by_name:
            if existing.replace(".", "_") == unified:
                return existing
        return None

    def _new_partition(
        self, replicas: tuple[int, ...], partition_index: int
    ) -> PartitionRegistration:
        isr = tuple(replica for replica in replicas if self.cluster.is_active(replica))
        if not isr:
            raise _TopicError(
                ErrorCode.invalid_replication_factor,
                f"Unable to replicate the partition {len(replicas)} time(s): All brokers "
                f"are currently fenced or in controlled shutdown (partition {partition_index}).",
            )
        return PartitionRegistration(replicas=replicas, isr=isr, leader=isr[0])

    def _validate_assignment(
        self, replicas: tuple[int, ...], replication_factor: int | None
    ) -> None:
        if not replicas:
            raise _TopicError(
                ErrorCode.invalid_replica_assignment,
                "The manual partition assignment includes an empty replica list.",
            )
        for broker_id in replicas:
            if self.cluster.registration(broker_id) is None:
                raise _TopicError(
                    ErrorCode.invalid_replica_assignment,
                    f"The manual partition assignment includes broker {broker_id}, but no such "
                    "broker is registered.",
                )
        if len(set(replicas)) != len(replicas):
            raise _TopicError(
                ErrorCode.invalid_replica_assignment,
                "The manual partition assignment includes a broker more than once.",
            )
        if replication_factor is not None and len(replicas) != replication_factor:
            raise _TopicError(
                ErrorCode.invalid_replica_assignment,
                f"The manual partition assignment includes a partition with {len(replicas)} "
                f"replica(s), but this is not consistent with previous partitions, which have "
                f"{replication_factor} replica(s).",
            )

    def _assigned_partitions(self, topic: CreatableTopic) -> list[PartitionRegistration]:
        if topic.replication_factor != -1:
            raise _TopicError(
                ErrorCode.invalid_request,
                "A manual partition assignment was specified, but replication factor was not "
                "set to -1.",
            )
        if topic.num_partitions != -1:
            raise _TopicError(
                ErrorCode.invalid_request,
                "A manual partition assignment was specified, but numPartitions was not set to -1.",
            )
        by_index: dict[int, PartitionRegistration] = {}
        replication_factor: int | None = None
        for index, replicas in topic.assignments:
            if index in by_index:
                raise _TopicError(
                    ErrorCode.invalid_replica_assignment,
                    f"Found multiple manual partition assignments for partition {index}",
                )
            self._validate_assignment(replicas, replication_factor)
            replication_factor = len(replicas)
            isr = tuple(r for r in replicas if self.cluster.is_active(r))
            if not isr:
                raise _TopicError(
                    ErrorCode.invalid_replica_assignment,
                    f"All brokers specified in the manual partition assignment for partition "
                    f"{index} are fenced or in controlled shutdown.",
                )
            by_index[index] = PartitionRegistration(replicas=replicas, isr=isr, leader=isr[0])
        if sorted(by_index) != list(range(len(by_index))):
            raise _TopicError(
                ErrorCode.invalid_replica_assignment,
                "partitions should be a consecutive 0-based integer sequence",
            )
        return [by_index[index] for index in range(len(by_index))]

    def _placed_partitions(self, topic: CreatableTopic) -> list[PartitionRegistration]:
        if topic.replication_factor < -1 or topic.replication_factor == 0:
            raise _TopicError(
                ErrorCode.invalid_replication_factor,
                "Replication factor must be larger than 0, or -1 to use the default value.",
            )
        if topic.num_partitions < -1 or topic.num_partitions == 0:
            raise _TopicError(
                ErrorCode.invalid_partitions,
                "Number of partitions was set to an invalid non-positive value.",
            )
        num_partitions = (
            self.default_num_partitions if topic.num_partitions == -1 else topic.num_partitions
        )
        replication_factor = (
            self.default_replication_factor
            if topic.replication_factor == -1
            else topic.replication_factor
        )
        try:
            assignments = place_replicas(
                self.cluster.active_brokers(), num_partitions, replication_factor, self.rng
            )
        except InvalidReplicationFactor as error:
            raise _TopicError(
                ErrorCode.invalid_replication_factor,
                f"Unable to replicate the partition {replication_factor} time(s): {error}",
            ) from None
        return [self._new_partition(replicas, i) for i, replicas in enumerate(assignments)]

    def create_partitions(
        self, topics: Sequence[CreatePartitionsTopic]
    ) -> tuple[list[MetadataRecord], list[TopicResult]]:
        """Kafka's createPartitions: UNKNOWN_TOPIC_OR_PARTITION, INVALID_PARTITIONS (not an
        increase), INVALID_REPLICA_ASSIGNMENT, INVALID_REPLICATION_FACTOR."""
        records: list[MetadataRecord] = []
        results: list[TopicResult] = []
        for request in topics:
            try:
                records += self._create_partitions(request)
            except _TopicError as error:
                results.append(TopicResult(request.name, error.error_code, error.message))
                continue
            results.append(TopicResult(request.name, ErrorCode.none))
        return records, results

    def _create_partitions(self, request: CreatePartitionsTopic) -> list[PartitionRecord]:
        topic_id = self.topics_by_name.get(request.name)
        if topic_id is None:
            raise _TopicError(
                ErrorCode.unknown_topic_or_partition,
                "This server does not host this topic-partition.",
            )
        topic = self.topics[topic_id]
        existing = len(topic.parts)
        if request.count == existing:
            raise _TopicError(
                ErrorCode.invalid_partitions, f"Topic already has {existing} partition(s)."
            )
        if request.count < existing:
            raise _TopicError(
                ErrorCode.invalid_partitions,
                f"The topic {request.name} currently has {existing} partition(s); "
                f"{request.count} would not be an increase.",
            )
        additional = request.count - existing
        replication_factor = len(topic.parts[0].replicas)
        if request.assignments is not None:
            if len(request.assignments) != additional:
                raise _TopicError(
                    ErrorCode.invalid_replica_assignment,
                    f"Attempted to add {additional} additional partition(s), but only "
                    f"{len(request.assignments)} assignment(s) were specified.",
                )
            partitions = []
            for offset, replicas in enumerate(request.assignments):
                self._validate_assignment(replicas, replication_factor)
                isr = tuple(r for r in replicas if self.cluster.is_active(r))
                if not isr:
                    raise _TopicError(
                        ErrorCode.invalid_replica_assignment,
                        f"All brokers specified in the manual partition assignment for "
                        f"partition {existing + offset} are fenced or in controlled shutdown.",
                    )
                partitions.append(PartitionRegistration(replicas=replicas, isr=isr, leader=isr[0]))
        else:
            try:
                assignments = place_replicas(
                    self.cluster.active_brokers(),
                    additional,
                    replication_factor,
                    self.rng,
                    start_partition_id=existing,
                )
            except InvalidReplicationFactor as error:
                raise _TopicError(ErrorCode.invalid_replication_factor, str(error)) from None
            partitions = [
                self._new_partition(replicas, existing + i)
                for i, replicas in enumerate(assignments)
            ]
        return [p.to_record(topic_id, existing + i) for i, p in enumerate(partitions)]

    def delete_topics(
        self, names: Sequence[str] = (), topic_ids: Sequence[uuid.UUID] = ()
    ) -> tuple[list[RemoveTopicRecord], list[TopicResult]]:
        """RemoveTopicRecords; UNKNOWN_TOPIC_OR_PARTITION for an unknown name,
        UNKNOWN_TOPIC_ID for an unknown id."""
        records: list[RemoveTopicRecord] = []
        results: list[TopicResult] = []
        removed: set[uuid.UUID] = set()
        for name in names:
            topic_id = self.topics_by_name.get(name)
            if topic_id is None:
                results.append(TopicResult(name, ErrorCode.unknown_topic_or_partition))
                continue
            if topic_id not in removed:
                removed.add(topic_id)
                records.append(RemoveTopicRecord(topic_id))
            results.append(TopicResult(name, ErrorCode.none, topic_id=topic_id))
        for topic_id in topic_ids:
            topic = self.topics.get(topic_id)
            if topic is None:
                results.append(TopicResult(None, ErrorCode.unknown_topic_id, topic_id=topic_id))
                continue
            if topic_id not in removed:
                removed.add(topic_id)
                records.append(RemoveTopicRecord(topic_id))
            results.append(TopicResult(topic.name, ErrorCode.none, topic_id=topic_id))
        return records, results

    # -- replay ----------------------------------------------------------------------------

    def replay(
        self, record: TopicRecord | PartitionRecord | PartitionChangeRecord | RemoveTopicRecord
    ) -> None:
        """Apply a record; MetadataReplayError when it names a topic or partition that does not
        exist (or a topic that already does)."""
        if isinstance(record, TopicRecord):
            if record.name in self.topics_by_name or record.topic_id in self.used_topic_ids:
                raise MetadataReplayError(
                    f"topic {record.name} {record.topic_id} exists or existed"
                )
            self.used_topic_ids.add(record.topic_id)
            self.topics_by_name[record.name] = record.topic_id
            self.topics[record.topic_id] = TopicControlInfo(record.name, record.topic_id)
            return
        topic = self.topics.get(record.topic_id)
        if topic is None:
            raise MetadataReplayError(f"{type(record).__name__} for unknown {record.topic_id}")
        if isinstance(record, RemoveTopicRecord):
            del self.topics[record.topic_id]
            del self.topics_by_name[topic.name]
            self.configs.delete_topic_configs(topic.name)
        elif isinstance(record, PartitionRecord):
            topic.parts[record.partition_id] = PartitionRegistration.from_record(record)
        else:
            partition = topic.parts.get(record.partition_id)
            if partition is None:
                raise MetadataReplayError(
                    f"change for unknown partition {topic.name}-{record.partition_id}"
                )
            topic.parts[record.partition_id] = partition.merge(record)
