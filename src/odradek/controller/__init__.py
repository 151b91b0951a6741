"""The cluster controller's deterministic core: Kafka 4's KRaft controller, one voter.

Design note (issue 12). What is built here:

- `records`: the metadata records (RegisterBrokerRecord, UnregisterBrokerRecord,
  BrokerRegistrationChangeRecord, TopicRecord, PartitionRecord, PartitionChangeRecord,
  RemoveTopicRecord, ConfigRecord, ProducerIdsRecord, FeatureLevelRecord) and their compact,
  versioned binary encoding for the controller's metadata log.
- The managers, shaped as Kafka's QuorumController's: `ClusterControlManager` (registrations,
  broker epochs = offset of the RegisterBrokerRecord, heartbeats, session expiry after
  `broker.session.timeout.ms`, fencing, controlled shutdown), `ReplicationControlManager`
  (topics, partitions, replica placement, elections and ISR changes through one
  `PartitionChangeBuilder`, AlterPartition validation with Kafka's error codes per version),
  `ProducerIdControlManager` (blocks of 1000, KIP-730), `ConfigurationControlManager`
  (topic / broker / group configs), `FeatureControlManager` (finalized levels).
- `QuorumController`: `handle_*(request, now_ms) -> ControllerResult(records, response)`,
  `replay(record, offset)`, `tick(now_ms)`; see its module for the append-then-respond contract.
- `MetadataImage` / `MetadataDelta`: what a broker builds by replaying the same records, and what
  it answers Metadata from (leader, leader epoch, replicas, ISR, offline replicas).
- `kio_adapter`: kio request -> controller request and controller response -> kio response for
  BrokerRegistration (62), BrokerHeartbeat (63), AlterPartition (56), AllocateProducerIds (67).

Not built, on purpose: eligible leader replicas (KIP-966 ELR: the ISR keeps its last member
instead, as Kafka without ELR), partition reassignment, UpdateFeatures, more than one voter.

Wiring that remains (none of it touches the single-broker path):
- the controller's metadata log on disk (a storage segment log of `encode_record` bytes, a write
  committed when fsynced) and a controller process (`process.roles=controller`) that appends
  each `ControllerResult`'s records, then answers;
- RPC handlers for api keys 56, 62, 63, 64, 67 on the controller listener (thin, via
  `kio_adapter`), and forwarding of CreateTopics / DeleteTopics / CreatePartitions /
  IncrementalAlterConfigs from brokers;
- on brokers: a registration + heartbeat loop (every `broker.heartbeat.interval.ms`), a metadata
  fetcher that replays records into `MetadataImage`, the replica manager acting on
  `MetadataDelta.local_changes`, the transaction coordinator drawing blocks with
  AllocateProducerIds, Metadata answered from the image;
- a timer calling `QuorumController.tick(now_ms)`.
Everything here is deterministic: time comes in as `now_ms`, randomness from the injected RNG
(`random.Random(seed)` in tests and the simulator), no I/O, no asyncio.
"""

from odradek.controller.cluster_control import (
    DEFAULT_SESSION_TIMEOUT_MS,
    BrokerControlState,
    BrokerRegistration,
    ClusterControlManager,
    MetadataReplayError,
)
from odradek.controller.configuration_control import (
    UNCLEAN_LEADER_ELECTION_ENABLE,
    ConfigurationControlManager,
)
from odradek.controller.feature_control import FeatureControlManager
from odradek.controller.image import (
    LocalReplicaChanges,
    MetadataDelta,
    MetadataImage,
    PartitionMetadata,
    TopicImage,
)
from odradek.controller.messages import (
    AllocateProducerIdsRequest,
    AllocateProducerIdsResponse,
    AlterableConfig,
    AlterConfigOp,
    AlterConfigsResource,
    AlterConfigsResourceResponse,
    AlterPartitionPartition,
    AlterPartitionPartitionResponse,
    AlterPartitionRequest,
    AlterPartitionResponse,
    AlterPartitionTopic,
    AlterPartitionTopicResponse,
    BrokerHeartbeatRequest,
    BrokerHeartbeatResponse,
    BrokerRegistrationRequest,
    BrokerRegistrationResponse,
    BrokerState,
    ControllerResult,
    CreatableTopic,
    CreatableTopicResult,
    CreatePartitionsTopic,
    Feature,
    Listener,
    TopicResult,
)
from odradek.controller.partition_change import (
    Election,
    LeaderRecoveryState,
    PartitionChangeBuilder,
    PartitionRegistration,
)
from odradek.controller.placement import InvalidReplicationFactor, Rng, place_replicas
from odradek.controller.producer_id_control import (
    PRODUCER_ID_BLOCK_SIZE,
    ProducerIdControlManager,
)
from odradek.controller.quorum_controller import ControllerConfig, QuorumController
from odradek.controller.records import (
    NO_LEADER,
    NO_LEADER_CHANGE,
    BrokerEndpoint,
    BrokerFeature,
    BrokerRegistrationChangeRecord,
    ConfigRecord,
    ConfigResourceType,
    FeatureLevelRecord,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    RecordFormatError,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnregisterBrokerRecord,
    decode_record,
    encode_record,
)
from odradek.controller.replication_control import ReplicationControlManager

__all__ = [
    "DEFAULT_SESSION_TIMEOUT_MS",
    "NO_LEADER",
    "NO_LEADER_CHANGE",
    "PRODUCER_ID_BLOCK_SIZE",
    "UNCLEAN_LEADER_ELECTION_ENABLE",
    "AllocateProducerIdsRequest",
    "AllocateProducerIdsResponse",
    "AlterConfigOp",
    "AlterConfigsResource",
    "AlterConfigsResourceResponse",
    "AlterPartitionPartition",
    "AlterPartitionPartitionResponse",
    "AlterPartitionRequest",
    "AlterPartitionResponse",
    "AlterPartitionTopic",
    "AlterPartitionTopicResponse",
    "AlterableConfig",
    "BrokerControlState",
    "BrokerEndpoint",
    "BrokerFeature",
    "BrokerHeartbeatRequest",
    "BrokerHeartbeatResponse",
    "BrokerRegistration",
    "BrokerRegistrationChangeRecord",
    "BrokerRegistrationRequest",
    "BrokerRegistrationResponse",
    "BrokerState",
    "ClusterControlManager",
    "ConfigRecord",
    "ConfigResourceType",
    "ConfigurationControlManager",
    "ControllerConfig",
    "ControllerResult",
    "CreatableTopic",
    "CreatableTopicResult",
    "CreatePartitionsTopic",
    "Election",
    "Feature",
    "FeatureControlManager",
    "FeatureLevelRecord",
    "InvalidReplicationFactor",
    "LeaderRecoveryState",
    "Listener",
    "LocalReplicaChanges",
    "MetadataDelta",
    "MetadataImage",
    "MetadataRecord",
    "MetadataReplayError",
    "PartitionChangeBuilder",
    "PartitionChangeRecord",
    "PartitionMetadata",
    "PartitionRecord",
    "PartitionRegistration",
    "ProducerIdControlManager",
    "ProducerIdsRecord",
    "QuorumController",
    "RecordFormatError",
    "RegisterBrokerRecord",
    "RemoveTopicRecord",
    "ReplicationControlManager",
    "Rng",
    "TopicImage",
    "TopicRecord",
    "TopicResult",
    "UnregisterBrokerRecord",
    "decode_record",
    "encode_record",
    "place_replicas",
]
