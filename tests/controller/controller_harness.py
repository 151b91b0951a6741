"""A controller with its metadata log kept in a list, driven with plain calls and virtual time.

Every record a call returns is appended to `log` (after an encode/decode round trip, as the
real log would store it), so `log[offset]` is the record at that offset and `rebuilt()` is what
a restarted controller would hold.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Sequence
from typing import TypeVar

from kio.schema.errors import ErrorCode

from odradek.controller import (
    AllocateProducerIdsRequest,
    AlterPartitionPartition,
    AlterPartitionRequest,
    AlterPartitionResponse,
    AlterPartitionTopic,
    BrokerHeartbeatRequest,
    BrokerHeartbeatResponse,
    BrokerState,
    ControllerConfig,
    ControllerResult,
    CreatableTopic,
    CreatableTopicResult,
    Feature,
    Listener,
    MetadataImage,
    MetadataRecord,
    PartitionRegistration,
    QuorumController,
    decode_record,
    encode_record,
)
from odradek.controller.feature_control import METADATA_VERSION_FEATURE, ODRADEK_METADATA_VERSION
from odradek.controller.messages import BrokerRegistrationRequest

CLUSTER_ID = "odradek-test-cluster"
T = TypeVar("T")


class Harness:
    def __init__(self, seed: int = 0, **config: object) -> None:
        self.seed = seed
        self.config = ControllerConfig(cluster_id=CLUSTER_ID, **config)  # type: ignore[arg-type]
        self.controller = QuorumController(self.config, random.Random(seed))
        self.log: list[MetadataRecord] = []
        self.now_ms = 0
        self.incarnations: dict[int, uuid.UUID] = {}
        self.epochs: dict[int, int] = {}
        self.append(self.controller.bootstrap())

    # -- the log ---------------------------------------------------------------------------

    def append(self, records: Iterable[MetadataRecord]) -> None:
        for record in records:
            stored = decode_record(encode_record(record))
            assert stored == record
            self.log.append(stored)
        assert len(self.log) == self.controller.next_write_offset

    def run(self, result: ControllerResult[T]) -> T:
        self.append(result.records)
        return result.response

    def rebuilt(self) -> QuorumController:
        """A controller restarted on the log. Its RNG repeats the draws of every earlier restart
        on purpose: the controller must not reuse a topic id even then."""
        controller = QuorumController(self.config, random.Random(self.seed + 1))
        for offset, record in enumerate(self.log):
            controller.replay(record, offset)
        return controller

    def restart(self) -> None:
        self.controller = self.rebuilt()

    def image(self) -> MetadataImage:
        return MetadataImage().replay((r, o) for o, r in enumerate(self.log))

    @property
    def offset(self) -> int:
        """The offset of the last record in the log (what a caught-up broker reports)."""
        return len(self.log) - 1

    # -- time ------------------------------------------------------------------------------

    def advance(self, ms: int) -> tuple[MetadataRecord, ...]:
        self.now_ms += ms
        records = self.controller.tick(self.now_ms)
        self.append(records)
        return records

    # -- brokers ---------------------------------------------------------------------------

    def register(self, broker_id: int, incarnation: uuid.UUID | None = None) -> int:
        incarnation = incarnation or uuid.UUID(int=(broker_id + 1) * 1000 + len(self.log))
        response = self.run(
            self.controller.handle_broker_registration(
                BrokerRegistrationRequest(
                    broker_id=broker_id,
                    cluster_id=CLUSTER_ID,
                    incarnation_id=incarnation,
                    listeners=(Listener("PLAINTEXT", "127.0.0.1", 9092 + broker_id),),
                    features=(
                        Feature(
                            METADATA_VERSION_FEATURE,
                            ODRADEK_METADATA_VERSION,
                            ODRADEK_METADATA_VERSION,
                        ),
                    ),
                ),
                self.now_ms,
            )
        )
        assert response.error_code is ErrorCode.none, response
        self.incarnations[broker_id] = incarnation
        self.epochs[broker_id] = response.broker_epoch
        return response.broker_epoch

    def heartbeat(
        self,
        broker_id: int,
        *,
        want_fence: bool = False,
        want_shut_down: bool = False,
        metadata_offset: int | None = None,
        broker_epoch: int | None = None,
    ) -> BrokerHeartbeatResponse:
        return self.run(
            self.controller.handle_broker_heartbeat(
                BrokerHeartbeatRequest(
                    broker_id=broker_id,
                    broker_epoch=self.epochs[broker_id] if broker_epoch is None else broker_epoch,
                    current_metadata_offset=self.offset
                    if metadata_offset is None
                    else metadata_offset,
                    want_fence=want_fence,
                    want_shut_down=want_shut_down,
                ),
                self.now_ms,
            )
        )

    def start_brokers(self, *broker_ids: int) -> None:
        """Register and unfence each broker."""
        for broker_id in broker_ids:
            self.register(broker_id)
            response = self.heartbeat(broker_id)
            assert not response.is_fenced, response

    def heartbeat_all(self) -> None:
        for broker_id, registration in sorted(self.controller.cluster.registrations.items()):
            if not registration.fenced:
                self.heartbeat(broker_id)

    # -- topics ----------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: int = 1,
        configs: Sequence[tuple[str, str | None]] = (),
        assignments: Sequence[tuple[int, tuple[int, ...]]] = (),
    ) -> CreatableTopicResult:
        (result,) = self.run(
            self.controller.handle_create_topics(
                [
                    CreatableTopic(
                        name,
                        -1 if assignments else partitions,
                        -1 if assignments else replication_factor,
                        tuple(assignments),
                        tuple(configs),
                    )
                ],
                self.now_ms,
            )
        )
        return result

    def topic_id(self, name: str) -> uuid.UUID:
        return self.controller.replication.topics_by_name[name]

    def partition(self, name: str, partition: int = 0) -> PartitionRegistration:
        registration = self.controller.replication.partition(self.topic_id(name), partition)
        assert registration is not None
        return registration

    def alter_partition(
        self,
        name: str,
        partition: int,
        isr: Sequence[int],
        *,
        broker_id: int | None = None,
        leader_epoch: int | None = None,
        partition_epoch: int | None = None,
        isr_epochs: dict[int, int] | None = None,
        leader_recovery_state: int = 0,
        version: int = 3,
    ) -> AlterPartitionResponse:
        current = self.partition(name, partition)
        broker_id = current.leader if broker_id is None else broker_id
        epochs = self.epochs if isr_epochs is None else {**self.epochs, **isr_epochs}
        request = AlterPartitionRequest(
            broker_id=broker_id,
            broker_epoch=self.epochs[broker_id],
            topics=(
                AlterPartitionTopic(
                    topic_id=self.topic_id(name),
                    topic_name=name,
                    partitions=(
                        AlterPartitionPartition(
                            partition_index=partition,
                            leader_epoch=current.leader_epoch
                            if leader_epoch is None
                            else leader_epoch,
                            new_isr_with_epochs=tuple(
                                BrokerState(b, epochs.get(b, -1) if version > 2 else -1)
                                for b in isr
                            ),
                            partition_epoch=current.partition_epoch
                            if partition_epoch is None
                            else partition_epoch,
                            leader_recovery_state=leader_recovery_state,
                        ),
                    ),
                ),
            ),
        )
        return self.run(self.controller.handle_alter_partition(request, self.now_ms, version))

    def allocate_producer_ids(self, broker_id: int) -> tuple[ErrorCode, int, int]:
        response = self.run(
            self.controller.handle_allocate_producer_ids(
                AllocateProducerIdsRequest(broker_id, self.epochs[broker_id]), self.now_ms
            )
        )
        return response.error_code, response.producer_id_start, response.producer_id_len
