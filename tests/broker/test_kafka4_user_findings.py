"""Differences from Kafka 4.1 found by trying the Kafka 4 admin and compression features as a
user, with real clients against a real broker. Each test states what Kafka does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from kio.schema.errors import ErrorCode
from raw_client import RawClient, request_of

from odradek.broker.server import Broker
from odradek.protocol.api_keys import ApiKey

# WriteTxnMarkers v2 (the TransactionVersion field, KIP-1228 / KAFKA-19446) came after Kafka
# 4.1, whose WriteTxnMarkersRequest.json has "validVersions": "1".
KAFKA_4_1_WRITE_TXN_MARKERS_MAX = 1


def error_code_of(call: Callable[[], Any]) -> int:
    with pytest.raises(KafkaException) as caught:
        call()
    code: int = caught.value.args[0].code()
    return code


def test_compression_type_values_are_case_sensitive(odradek_broker: Broker) -> None:
    """Kafka's LogConfig checks compression.type with ConfigDef.ValidString.in(...), which is
    case-sensitive: "GZIP" is INVALID_CONFIG ("String must be one of: uncompressed, zstd, lz4,
    snappy, gzip, producer"), on create and on alter."""
    admin = AdminClient({"bootstrap.servers": odradek_broker.bootstrap_servers})
    futures = admin.create_topics([NewTopic("upper", 1, 1, config={"compression.type": "GZIP"})])
    assert error_code_of(lambda: futures["upper"].result(10)) == int(ErrorCode.invalid_config)
    admin.create_topics([NewTopic("lower", 1, 1)])["lower"].result(10)
    resource = ConfigResource(
        ResourceType.TOPIC,
        "lower",
        incremental_configs=[
            ConfigEntry("compression.type", "Zstd", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    altered = admin.incremental_alter_configs([resource])
    assert error_code_of(lambda: altered[resource].result(10)) == int(ErrorCode.invalid_config)


def test_write_txn_markers_is_not_advertised_above_kafka_4_1(odradek_broker: Broker) -> None:
    with RawClient(odradek_broker.bootstrap_servers) as client:
        response = client.request(
            request_of(ApiKey.API_VERSIONS, 4)(
                client_software_name="raw", client_software_version="1"
            )
        )
    assert response.error_code == ErrorCode.none
    advertised = {entry.api_key: entry.max_version for entry in response.api_keys}
    assert advertised[ApiKey.WRITE_TXN_MARKERS] <= KAFKA_4_1_WRITE_TXN_MARKERS_MAX
