"""Requests and responses of the controller's APIs, and `ControllerResult`.

The shapes and field names are kio's (Kafka's JSON schemas) for BrokerRegistration (api key 62,
v0-4), BrokerHeartbeat (63, v0-2), AlterPartition (56, v2-3) and AllocateProducerIds (67, v0),
flattened across versions: a field a version lacks has Kafka's default. The administrative
operations the controller owns in KRaft (CreateTopics, DeleteTopics, CreatePartitions,
IncrementalAlterConfigs, which brokers forward to it) carry only the fields the controller uses.
`odradek.controller.kio_adapter` converts to and from kio's classes, so an RPC handler is a thin
wrapper. These are plain values: no I/O, no kio import at module load.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Generic, TypeVar

from kio.schema.errors import ErrorCode

from odradek.controller.records import MetadataRecord

ResponseT = TypeVar("ResponseT")


@dataclass(frozen=True, slots=True)
class ControllerResult(Generic[ResponseT]):
    """What a controller write returns (Kafka's ControllerResult): the records to append to the
    metadata log, in order and atomically, and the response to send once they are durable."""

    records: tuple[MetadataRecord, ...]
    response: ResponseT


# -- BrokerRegistration (62) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    host: str
    port: int
    security_protocol: int = 0


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    min_supported_version: int
    max_supported_version: int


@dataclass(frozen=True, slots=True)
class BrokerRegistrationRequest:
    broker_id: int
    cluster_id: str
    incarnation_id: uuid.UUID
    listeners: tuple[Listener, ...] = ()
    features: tuple[Feature, ...] = ()
    rack: str | None = None
    #: v3+: the epoch before a clean shutdown, -1 otherwise.
    previous_broker_epoch: int = -1


@dataclass(frozen=True, slots=True)
class BrokerRegistrationResponse:
    error_code: ErrorCode
    broker_epoch: int = -1


# -- BrokerHeartbeat (63) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerHeartbeatRequest:
    broker_id: int
    broker_epoch: int
    #: The offset of the last metadata record the broker has replayed (inclusive).
    current_metadata_offset: int
    want_fence: bool = False
    want_shut_down: bool = False


@dataclass(frozen=True, slots=True)
class BrokerHeartbeatResponse:
    error_code: ErrorCode
    is_caught_up: bool = False
    is_fenced: bool = True
    should_shut_down: bool = False


# -- AlterPartition (56) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerState:
    """A proposed ISR member with its broker epoch (v3; -1 skips the KIP-903 check)."""

    broker_id: int
    broker_epoch: int = -1


@dataclass(frozen=True, slots=True)
class AlterPartitionPartition:
    partition_index: int
    leader_epoch: int
    new_isr_with_epochs: tuple[BrokerState, ...]
    partition_epoch: int
    leader_recovery_state: int = 0


@dataclass(frozen=True, slots=True)
class AlterPartitionTopic:
    topic_id: uuid.UUID | None
    partitions: tuple[AlterPartitionPartition, ...]
    #: v0-1 named topics; kept so the per-version rules can be stated, kio ships v2+ only.
    topic_name: str = ""


@dataclass(frozen=True, slots=True)
class AlterPartitionRequest:
    broker_id: int
    broker_epoch: int
    topics: tuple[AlterPartitionTopic, ...]


@dataclass(frozen=True, slots=True)
class AlterPartitionPartitionResponse:
    partition_index: int
    error_code: ErrorCode
    leader_id: int = 0
    leader_epoch: int = 0
    isr: tuple[int, ...] = ()
    leader_recovery_state: int = 0
    partition_epoch: int = 0


@dataclass(frozen=True, slots=True)
class AlterPartitionTopicResponse:
    topic_id: uuid.UUID | None
    partitions: tuple[AlterPartitionPartitionResponse, ...]
    topic_name: str = ""


@dataclass(frozen=True, slots=True)
class AlterPartitionResponse:
    error_code: ErrorCode
    topics: tuple[AlterPartitionTopicResponse, ...] = ()


# -- AllocateProducerIds (67) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllocateProducerIdsRequest:
    broker_id: int
    broker_epoch: int


@dataclass(frozen=True, slots=True)
class AllocateProducerIdsResponse:
    error_code: ErrorCode
    producer_id_start: int = 0
    producer_id_len: int = 0


# -- topics, partitions, configs -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreatableTopic:
    """One topic of a CreateTopics request; -1 means "the controller's default"."""

    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    #: Explicit replica lists, (partition index, broker ids); then both counts must be -1.
    assignments: tuple[tuple[int, tuple[int, ...]], ...] = ()
    configs: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True, slots=True)
class CreatableTopicResult:
    name: str
    error_code: ErrorCode
    error_message: str | None = None
    topic_id: uuid.UUID | None = None
    num_partitions: int = -1
    replication_factor: int = -1


@dataclass(frozen=True, slots=True)
class CreatePartitionsTopic:
    name: str
    count: int
    assignments: tuple[tuple[int, ...], ...] | None = None


@dataclass(frozen=True, slots=True)
class TopicResult:
    """Outcome for one topic of DeleteTopics or CreatePartitions."""

    name: str | None
    error_code: ErrorCode
    error_message: str | None = None
    topic_id: uuid.UUID | None = None


class AlterConfigOp:
    """IncrementalAlterConfigs operation types (Kafka's AlterConfigOp.OpType ids)."""

    SET = 0
    DELETE = 1
    APPEND = 2
    SUBTRACT = 3


@dataclass(frozen=True, slots=True)
class AlterableConfig:
    name: str
    config_operation: int
    value: str | None


@dataclass(frozen=True, slots=True)
class AlterConfigsResource:
    resource_type: int
    resource_name: str
    configs: tuple[AlterableConfig, ...]


@dataclass(frozen=True, slots=True)
class AlterConfigsResourceResponse:
    resource_type: int
    resource_name: str
    error_code: ErrorCode
    error_message: str | None = None
