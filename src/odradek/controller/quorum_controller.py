"""The controller facade: requests in, (records, response) out; replay rebuilds the same state.

Kafka's QuorumController only sequences; the decisions live in the managers. Like Kafka's active
controller, `QuorumController` replays the records of each write into its own state as it
returns them, at the offsets they will get in the metadata log (`next_write_offset` onward), so
the next request sees them — that is how a broker epoch can be the offset of its
RegisterBrokerRecord. The caller's contract (the runtime, or the simulator):

1. append `result.records` to the metadata log, in order, as one atomic batch, at the offsets
   the controller assumed (`next_write_offset` before the call);
2. send `result.response` only once the batch is durable;
3. if the append fails, throw this controller away and build a new one by replaying the log
   (Kafka reverts to an in-memory snapshot instead; one voter can simply restart).

On start, `replay(record, offset)` every record of the log; with an empty log, append
`bootstrap()`'s records first. `tick(now_ms)` runs the periodic work (session expiry, unclean
elections) and returns records to append the same way. No call reads a clock, draws randomness
other than from the injected RNG, or does I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kio.schema.errors import ErrorCode

from odradek.controller.cluster_control import (
    DEFAULT_SESSION_TIMEOUT_MS,
    BrokerControlState,
    ClusterControlManager,
)
from odradek.controller.configuration_control import ConfigurationControlManager
from odradek.controller.feature_control import FeatureControlManager
from odradek.controller.messages import (
    AllocateProducerIdsRequest,
    AllocateProducerIdsResponse,
    AlterConfigsResource,
    AlterConfigsResourceResponse,
    AlterPartitionRequest,
    AlterPartitionResponse,
    BrokerHeartbeatRequest,
    BrokerHeartbeatResponse,
    BrokerRegistrationRequest,
    BrokerRegistrationResponse,
    ControllerResult,
    CreatableTopic,
    CreatableTopicResult,
    CreatePartitionsTopic,
    ResponseT,
    TopicResult,
)
from odradek.controller.placement import Rng
from odradek.controller.producer_id_control import ProducerIdControlManager
from odradek.controller.records import (
    BrokerRegistrationChangeRecord,
    ConfigRecord,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnregisterBrokerRecord,
)
from odradek.controller.replication_control import ReplicationControlManager


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """The controller's settings, with Kafka's property names in the comments."""

    cluster_id: str
    #: node.id
    node_id: int = 0
    #: broker.session.timeout.ms
    session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS
    #: num.partitions
    default_num_partitions: int = 1
    #: default.replication.factor
    default_replication_factor: int = 1
    #: Static broker-level configs, e.g. {"unclean.leader.election.enable": "false"}.
    static_broker_configs: Mapping[str, str] = field(default_factory=dict)


class QuorumController:
    """One controller voter's state machine (see the module docstring)."""

    def __init__(self, config: ControllerConfig, rng: Rng) -> None:
        self.config = config
        self.cluster = ClusterControlManager(config.cluster_id, config.session_timeout_ms)
        self.configs = ConfigurationControlManager(config.static_broker_configs)
        self.features = FeatureControlManager()
        self.producer_ids = ProducerIdControlManager(self.cluster)
        self.replication = ReplicationControlManager(
            self.cluster,
            self.configs,
            rng,
            config.default_num_partitions,
            config.default_replication_factor,
        )
        #: The offset the next record written will get.
        self.next_write_offset = 0

    # -- replay ----------------------------------------------------------------------------

    def replay(self, record: MetadataRecord, offset: int) -> None:
        """Apply one record of the metadata log at `offset` (MetadataReplayError if the log
        contradicts itself)."""
        if isinstance(
            record, RegisterBrokerRecord | UnregisterBrokerRecord | BrokerRegistrationChangeRecord
        ):
            self.cluster.replay(record, offset)
        elif isinstance(
            record, TopicRecord | PartitionRecord | PartitionChangeRecord | RemoveTopicRecord
        ):
            self.replication.replay(record)
        elif isinstance(record, ConfigRecord):
            self.configs.replay(record)
        elif isinstance(record, ProducerIdsRecord):
            self.producer_ids.replay(record)
        else:
            self.features.replay(record)
        self.next_write_offset = max(self.next_write_offset, offset + 1)

    def _write(self, records: Sequence[MetadataRecord]) -> tuple[MetadataRecord, ...]:
        for record in records:
            self.replay(record, self.next_write_offset)
        return tuple(records)

    def _result(
        self, records: Sequence[MetadataRecord], response: ResponseT
    ) -> ControllerResult[ResponseT]:
        return ControllerResult(self._write(records), response)

    def bootstrap(self) -> tuple[MetadataRecord, ...]:
        """The records that start an empty metadata log (feature levels)."""
        return self._write(self.features.bootstrap_records())

    # -- broker lifecycle ------------------------------------------------------------------

    def handle_broker_registration(
        self, request: BrokerRegistrationRequest, now_ms: int
    ) -> ControllerResult[BrokerRegistrationResponse]:
        """BrokerRegistration (62): a new registration, fenced, whose broker epoch is the offset
        of its RegisterBrokerRecord. A broker id registered before first leaves every ISR and
        its leaderships move (its old epoch ends: KIP-903)."""
        shutdown: list[MetadataRecord] = []
        if self.cluster.registration(request.broker_id) is not None:
            shutdown += self.replication.handle_broker_shutdown(request.broker_id)
        epoch = self.next_write_offset + len(shutdown)
        error, _message, record = self.cluster.register_broker(
            request, epoch, self.features.finalized, now_ms
        )
        if record is None:
            return ControllerResult((), BrokerRegistrationResponse(error))
        result = self._result([*shutdown, record], BrokerRegistrationResponse(error, epoch))
        self.cluster.touch(request.broker_id, now_ms, fenced=True, metadata_offset=-1)
        return result

    def handle_broker_heartbeat(
        self, request: BrokerHeartbeatRequest, now_ms: int
    ) -> ControllerResult[BrokerHeartbeatResponse]:
        """BrokerHeartbeat (63): keeps the session, unfences a caught-up broker, fences one
        that asks, runs controlled shutdown (see ClusterControlManager)."""
        records, response, state = self.replication.process_broker_heartbeat(request, now_ms)
        if response.error_code is not ErrorCode.none:
            return ControllerResult((), response)
        result = self._result(records, response)
        self.cluster.touch(request.broker_id, now_ms, state.fenced, request.current_metadata_offset)
        if state is BrokerControlState.CONTROLLED_SHUTDOWN:
            self.cluster.maybe_update_controlled_shutdown_offset(
                request.broker_id, self.next_write_offset - 1
            )
        return result

    def handle_unregister_broker(self, broker_id: int) -> ControllerResult[ErrorCode]:
        """UnregisterBroker (64): BROKER_ID_NOT_REGISTERED for an unknown id."""
        registration = self.cluster.registration(broker_id)
        if registration is None:
            return ControllerResult((), ErrorCode.broker_id_not_registered)
        records: list[MetadataRecord] = list(self.replication.handle_broker_shutdown(broker_id))
        records.append(UnregisterBrokerRecord(broker_id, registration.epoch))
        return self._result(records, ErrorCode.none)

    def tick(self, now_ms: int) -> tuple[MetadataRecord, ...]:
        """Periodic work: fence brokers whose session expired, one at a time so each fencing
        sees the leaders the previous one moved (Kafka's maybeFenceOneStaleBroker), then
        unclean elections where topics allow them."""
        self.cluster.track_all(now_ms)
        written: list[MetadataRecord] = []
        for broker_id in self.cluster.expired_brokers(now_ms):
            written += self._write(self.replication.handle_broker_fenced(broker_id))
        written += self._write(self.replication.maybe_elect_unclean_leaders())
        return tuple(written)

    # -- partitions and producer ids -------------------------------------------------------

    def handle_alter_partition(
        self, request: AlterPartitionRequest, now_ms: int, version: int = 3
    ) -> ControllerResult[AlterPartitionResponse]:
        """AlterPartition (56), validated per `version` (see ReplicationControlManager)."""
        del now_ms  # AlterPartition decisions depend on epochs only, never on time
        records, response = self.replication.alter_partition(request, version)
        return self._result(records, response)

    def handle_allocate_producer_ids(
        self, request: AllocateProducerIdsRequest, now_ms: int
    ) -> ControllerResult[AllocateProducerIdsResponse]:
        """AllocateProducerIds (67): the next block of 1000 ids (KIP-730)."""
        del now_ms
        result = self.producer_ids.generate_next_block(request)
        return self._result(result.records, result.response)

    # -- administration --------------------------------------------------------------------

    def handle_create_topics(
        self, topics: Sequence[CreatableTopic], now_ms: int
    ) -> ControllerResult[tuple[CreatableTopicResult, ...]]:
        del now_ms
        records, results = self.replication.create_topics(topics)
        return self._result(records, tuple(results))

    def handle_create_partitions(
        self, topics: Sequence[CreatePartitionsTopic], now_ms: int
    ) -> ControllerResult[tuple[TopicResult, ...]]:
        del now_ms
        records, results = self.replication.create_partitions(topics)
        return self._result(records, tuple(results))

    def handle_delete_topics(
        self, names: Sequence[str], topic_ids: Sequence[uuid.UUID], now_ms: int
    ) -> ControllerResult[tuple[TopicResult, ...]]:
        del now_ms
        records, results = self.replication.delete_topics(names, topic_ids)
        return self._result(records, tuple(results))

    def handle_incremental_alter_configs(
        self, resources: Sequence[AlterConfigsResource], now_ms: int
    ) -> ControllerResult[tuple[AlterConfigsResourceResponse, ...]]:
        del now_ms
        records, responses = self.configs.incremental_alter_configs(
            resources, lambda name: name in self.replication.topics_by_name
        )
        return self._result(records, tuple(responses))

    def feature_levels(self) -> Mapping[str, int]:
        return dict(self.features.finalized)
