"""kio's request and response classes <-> the controller's messages, for every version kio ships.

So that an RPC handler for a controller API is three lines: decode with kio, call the
controller, encode with kio. Versions: BrokerRegistration (62) v0-4, BrokerHeartbeat (63) v0-2,
AlterPartition (56) v2-3 (kio, like Kafka 4, has no v0-1), AllocateProducerIds (67) v0.
AlterPartition v2 carries a bare ISR; its members get broker epoch -1 (no KIP-903 check), as
Kafka's AlterPartitionRequest.newIsrToSimpleNewIsrWithBrokerEpochs does.
"""

from __future__ import annotations

import uuid
from typing import Any

from odradek.controller.messages import (
    AllocateProducerIdsRequest,
    AllocateProducerIdsResponse,
    AlterPartitionPartition,
    AlterPartitionRequest,
    AlterPartitionResponse,
    AlterPartitionTopic,
    BrokerHeartbeatRequest,
    BrokerHeartbeatResponse,
    BrokerRegistrationRequest,
    BrokerRegistrationResponse,
    BrokerState,
    Feature,
    Listener,
)
from odradek.protocol.codec import make, nested, response_module, response_type

BROKER_REGISTRATION = 62
BROKER_HEARTBEAT = 63
ALTER_PARTITION = 56
ALLOCATE_PRODUCER_IDS = 67

_ZERO_UUID = uuid.UUID(int=0)


def broker_registration_request(request: Any) -> BrokerRegistrationRequest:
    return BrokerRegistrationRequest(
        broker_id=int(request.broker_id),
        cluster_id=request.cluster_id,
        incarnation_id=request.incarnation_id or _ZERO_UUID,
        listeners=tuple(
            Listener(lst.name, lst.host, int(lst.port), int(lst.security_protocol))
            for lst in request.listeners
        ),
        features=tuple(
            Feature(f.name, int(f.min_supported_version), int(f.max_supported_version))
            for f in request.features
        ),
        rack=request.rack,
        previous_broker_epoch=int(getattr(request, "previous_broker_epoch", -1)),
    )


def broker_registration_response(response: BrokerRegistrationResponse, version: int) -> Any:
    return make(
        response_type(BROKER_REGISTRATION, version),
        throttle_time=0,
        error_code=response.error_code,
        broker_epoch=response.broker_epoch,
    )


def broker_heartbeat_request(request: Any) -> BrokerHeartbeatRequest:
    return BrokerHeartbeatRequest(
        broker_id=int(request.broker_id),
        broker_epoch=int(request.broker_epoch),
        current_metadata_offset=int(request.current_metadata_offset),
        want_fence=bool(request.want_fence),
        want_shut_down=bool(request.want_shut_down),
    )


def broker_heartbeat_response(response: BrokerHeartbeatResponse, version: int) -> Any:
    return make(
        response_type(BROKER_HEARTBEAT, version),
        throttle_time=0,
        error_code=response.error_code,
        is_caught_up=response.is_caught_up,
        is_fenced=response.is_fenced,
        should_shut_down=response.should_shut_down,
    )


def _new_isr(partition: Any) -> tuple[BrokerState, ...]:
    with_epochs = getattr(partition, "new_isr_with_epochs", None)
    if with_epochs is not None:
        return tuple(BrokerState(int(s.broker_id), int(s.broker_epoch)) for s in with_epochs)
    return tuple(BrokerState(int(broker_id), -1) for broker_id in partition.new_isr)


def alter_partition_request(request: Any) -> AlterPartitionRequest:
    return AlterPartitionRequest(
        broker_id=int(request.broker_id),
        broker_epoch=int(request.broker_epoch),
        topics=tuple(
            AlterPartitionTopic(
                topic_id=topic.topic_id,
                partitions=tuple(
                    AlterPartitionPartition(
                        partition_index=int(p.partition_index),
                        leader_epoch=int(p.leader_epoch),
                        new_isr_with_epochs=_new_isr(p),
                        partition_epoch=int(p.partition_epoch),
                        leader_recovery_state=int(p.leader_recovery_state),
                    )
                    for p in topic.partitions
                ),
            )
            for topic in request.topics
        ),
    )


def alter_partition_response(response: AlterPartitionResponse, version: int) -> Any:
    module = response_module(ALTER_PARTITION, version)
    topic_type = nested(module, "TopicData")
    partition_type = nested(module, "PartitionData")
    return make(
        response_type(ALTER_PARTITION, version),
        throttle_time=0,
        error_code=response.error_code,
        topics=tuple(
            make(
                topic_type,
                topic_id=topic.topic_id,
                partitions=tuple(
                    make(
                        partition_type,
                        partition_index=p.partition_index,
                        error_code=p.error_code,
                        leader_id=p.leader_id,
                        leader_epoch=p.leader_epoch,
                        isr=p.isr,
                        leader_recovery_state=p.leader_recovery_state,
                        partition_epoch=p.partition_epoch,
                    )
                    for p in topic.partitions
                ),
            )
            for topic in response.topics
        ),
    )


def allocate_producer_ids_request(request: Any) -> AllocateProducerIdsRequest:
    return AllocateProducerIdsRequest(int(request.broker_id), int(request.broker_epoch))


def allocate_producer_ids_response(response: AllocateProducerIdsResponse, version: int) -> Any:
    return make(
        response_type(ALLOCATE_PRODUCER_IDS, version),
        throttle_time=0,
        error_code=response.error_code,
        producer_id_start=response.producer_id_start,
        producer_id_len=response.producer_id_len,
    )
