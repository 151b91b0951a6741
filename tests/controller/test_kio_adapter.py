"""The controller's messages convert to and from kio's classes for every version kio ships,
and the responses encode on the wire."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from controller_harness import Harness
from kio.schema.errors import ErrorCode

from odradek.controller import kio_adapter
from odradek.protocol.codec import encode_entity, make, nested, request_module, request_type
from odradek.protocol.tolerant_reader import read_entity


def wire_round_trip(entity: Any) -> Any:
    decoded, _ = read_entity(type(entity), encode_entity(entity))
    return decoded


@pytest.mark.parametrize("version", range(5))
def test_broker_registration(version: int) -> None:
    module = request_module(62, version)
    request = make(
        request_type(62, version),
        broker_id=3,
        cluster_id="c",
        incarnation_id=uuid.UUID(int=9),
        listeners=(
            make(nested(module, "Listener"), name="P", host="h", port=9, security_protocol=0),
        ),
        features=(
            make(
                nested(module, "Feature"),
                name="metadata.version",
                min_supported_version=1,
                max_supported_version=1,
            ),
        ),
        rack=None,
        previous_broker_epoch=17,
    )
    converted = kio_adapter.broker_registration_request(wire_round_trip(request))
    assert (converted.broker_id, converted.cluster_id, converted.incarnation_id) == (
        3,
        "c",
        uuid.UUID(int=9),
    )
    assert converted.listeners[0].port == 9
    assert converted.previous_broker_epoch == (17 if version >= 3 else -1)
    h = Harness()
    response = h.controller.handle_broker_registration(converted, 0).response
    assert response.error_code is ErrorCode.inconsistent_cluster_id
    encoded = kio_adapter.broker_registration_response(response, version)
    assert wire_round_trip(encoded) == encoded


@pytest.mark.parametrize("version", range(3))
def test_broker_heartbeat(version: int) -> None:
    h = Harness()
    epoch = h.register(1)
    request = make(
        request_type(63, version),
        broker_id=1,
        broker_epoch=epoch,
        current_metadata_offset=epoch,
        want_fence=False,
        want_shut_down=False,
    )
    converted = kio_adapter.broker_heartbeat_request(wire_round_trip(request))
    response = h.run(h.controller.handle_broker_heartbeat(converted, 0))
    assert not response.is_fenced
    encoded = kio_adapter.broker_heartbeat_response(response, version)
    decoded = wire_round_trip(encoded)
    assert decoded.is_fenced is False


@pytest.mark.parametrize("version", [2, 3])
def test_alter_partition(version: int) -> None:
    h = Harness()
    h.start_brokers(1, 2)
    h.create_topic("t", assignments=[(0, (1, 2))])
    h.alter_partition("t", 0, [1])
    module = request_module(56, version)
    partition = h.partition("t")
    isr_fields: dict[str, object] = (
        {
            "new_isr_with_epochs": tuple(
                make(nested(module, "BrokerState"), broker_id=b, broker_epoch=h.epochs[b])
                for b in (1, 2)
            )
        }
        if version >= 3
        else {"new_isr": (1, 2)}
    )
    request = make(
        request_type(56, version),
        broker_id=1,
        broker_epoch=h.epochs[1],
        topics=(
            make(
                nested(module, "TopicData"),
                topic_id=h.topic_id("t"),
                partitions=(
                    make(
                        nested(module, "PartitionData"),
                        partition_index=0,
                        leader_epoch=partition.leader_epoch,
                        leader_recovery_state=0,
                        partition_epoch=partition.partition_epoch,
                        **isr_fields,
                    ),
                ),
            ),
        ),
    )
    converted = kio_adapter.alter_partition_request(wire_round_trip(request))
    expected_epochs = (h.epochs[1], h.epochs[2]) if version >= 3 else (-1, -1)
    assert (
        tuple(s.broker_epoch for s in converted.topics[0].partitions[0].new_isr_with_epochs)
        == expected_epochs
    )
    response = h.run(h.controller.handle_alter_partition(converted, 0, version))
    encoded = kio_adapter.alter_partition_response(response, version)
    decoded = wire_round_trip(encoded)
    answer = decoded.topics[0].partitions[0]
    assert (answer.error_code, answer.isr) == (ErrorCode.none, (1, 2))


def test_allocate_producer_ids() -> None:
    h = Harness()
    h.start_brokers(1)
    request = make(request_type(67, 0), broker_id=1, broker_epoch=h.epochs[1])
    converted = kio_adapter.allocate_producer_ids_request(wire_round_trip(request))
    response = h.run(h.controller.handle_allocate_producer_ids(converted, 0))
    decoded = wire_round_trip(kio_adapter.allocate_producer_ids_response(response, 0))
    assert (decoded.producer_id_start, decoded.producer_id_len) == (0, 1000)
