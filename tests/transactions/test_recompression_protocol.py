"""Topic `compression.type` over the raw protocol: an idempotent batch recompressed by the
broker is still deduplicated by its sequence, and a batch that only exceeds max.message.bytes
once recompressed is refused with MESSAGE_TOO_LARGE, appending nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kio.schema.errors import ErrorCode
from raw_client import RawClient
from test_txn_protocol import child, fetch, init_producer_id, produce, request

from odradek.broker.server import Broker
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.record_batch import (
    COMPRESSION_GZIP,
    COMPRESSION_NONE,
    COMPRESSION_ZSTD,
    Record,
    decode_batches,
    encode_batch,
)


@pytest.fixture
def client(broker: Broker) -> Iterator[RawClient]:
    with RawClient(broker.bootstrap_servers) as raw:
        yield raw


def create_topic(client: RawClient, name: str, **configs: str) -> ErrorCode:
    topic = child(
        ApiKey.CREATE_TOPICS,
        5,
        "CreatableTopic",
        name=name,
        num_partitions=1,
        replication_factor=1,
        assignments=(),
        configs=tuple(
            child(ApiKey.CREATE_TOPICS, 5, "CreatableTopicConfig", name=key, value=value)
            for key, value in configs.items()
        ),
    )
    response = client.request(
        request(ApiKey.CREATE_TOPICS, 5, topics=(topic,), timeout=5000, validate_only=False)
    )
    return ErrorCode(response.topics[0].error_code)


def test_recompressed_idempotent_batch_is_deduplicated(client: RawClient) -> None:
    assert create_topic(client, "to-zstd", **{"compression.type": "zstd"}) == ErrorCode.none
    producer_id, producer_epoch = init_producer_id(client)
    records = [Record(key=b"k%d" % i, value=b"value-%d" % i) for i in range(10)]
    batch = encode_batch(
        records,
        compression=COMPRESSION_GZIP,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=0,
        base_timestamp=1_700_000_000_000,
    )
    first = produce(client, "to-zstd", batch)
    retry = produce(client, "to-zstd", batch)
    assert first.error_code == retry.error_code == ErrorCode.none
    assert retry.base_offset == first.base_offset == 0

    stored = decode_batches(fetch(client, "to-zstd", 0).records)
    assert len(stored) == 1
    header, decoded = stored[0]
    assert header.compression == COMPRESSION_ZSTD
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (
        producer_id,
        producer_epoch,
        0,
    )
    assert [(r.key, r.value) for r in decoded] == [(r.key, r.value) for r in records]


def test_batch_too_large_only_after_recompression(client: RawClient) -> None:
    assert (
        create_topic(
            client,
            "to-plain",
            **{"compression.type": "uncompressed", "max.message.bytes": "4000"},
        )
        == ErrorCode.none
    )
    # 10 kB of zeros compress to a few dozen bytes, far under the limit; uncompressed they
    # are over it.
    big = encode_batch([Record(key=None, value=bytes(10_000))], compression=COMPRESSION_ZSTD)
    assert len(big) < 4000
    refused = produce(client, "to-plain", big)
    assert refused.error_code == ErrorCode.message_too_large
    small = encode_batch([Record(key=None, value=b"fits")], compression=COMPRESSION_ZSTD)
    accepted = produce(client, "to-plain", small)
    assert accepted.error_code == ErrorCode.none
    assert accepted.base_offset == 0
    ((header, decoded),) = decode_batches(fetch(client, "to-plain", 0).records)
    assert header.compression == COMPRESSION_NONE
    assert [r.value for r in decoded] == [b"fits"]


def test_invalid_compression_configs_are_refused(client: RawClient) -> None:
    for configs in (
        {"compression.type": "brotli"},
        {"compression.gzip.level": "10"},
        {"compression.lz4.level": "0"},
        {"compression.zstd.level": "23"},
    ):
        assert create_topic(client, "bad-compression", **configs) == ErrorCode.invalid_config
    assert (
        create_topic(
            client,
            "levels",
            **{
                "compression.type": "gzip",
                "compression.gzip.level": "1",
                "compression.lz4.level": "17",
                "compression.zstd.level": "-5",
            },
        )
        == ErrorCode.none
    )
