"""Fuzz the decoders: garbage and mutated valid inputs raise only the documented errors.

Batch code may raise only InvalidRecords; read_entity only RemoteProtocolError. Anything else
escaping (IndexError, struct.error, a cramjam error...) would crash a connection handler.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import struct
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.fetch.v16.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.produce.v10.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.schema.request_header.v2.header import RequestHeader
from kio.serial import entity_writer
from kio.static.primitive import Records, i8, i16, i32, i32Timedelta, i64

from odradek.protocol.record_batch import (
    COMPRESSION_GZIP,
    COMPRESSION_LZ4,
    COMPRESSION_NONE,
    COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD,
    InvalidRecords,
    Record,
    assign_offsets,
    crc_is_valid,
    decode_batches,
    decode_records,
    encode_batch,
    iter_batch_headers,
    read_batch_header,
    validate_batches,
)
from odradek.protocol.tolerant_reader import RemoteProtocolError, read_entity

CODECS = [
    COMPRESSION_NONE,
    COMPRESSION_GZIP,
    COMPRESSION_SNAPPY,
    COMPRESSION_LZ4,
    COMPRESSION_ZSTD,
]
MAX = 1_000_000

SAMPLE_RECORDS = [
    Record(key=b"key-1", value=b"value-1" * 5, headers=(("trace", b"abc"),), timestamp=10),
    Record(key=None, value=b"", timestamp=12),
    Record(key=b"key-3", value=None, headers=(("n", None),), timestamp=11),
]
VALID_BATCHES = [
    encode_batch(SAMPLE_RECORDS, compression=codec, producer_id=1, base_sequence=0)
    for codec in CODECS
]


def _kio_bytes(entity: Any) -> bytes:
    buffer = io.BytesIO()
    entity_writer(type(entity))(buffer, entity)
    return buffer.getvalue()


VALID_REQUESTS: list[tuple[type[Any], bytes]] = [
    (type(entity), _kio_bytes(entity))
    for entity in [
        RequestHeader(
            request_api_key=i16(0),
            request_api_version=i16(10),
            correlation_id=i32(1),
            client_id="client",
        ),
        ApiVersionsRequest(client_software_name="kcat", client_software_version="1.7"),
        MetadataRequest(
            topics=(MetadataRequestTopic(topic_id=uuid.UUID(int=1), name="t"),),  # type: ignore[arg-type]
            allow_auto_topic_creation=True,
            include_topic_authorized_operations=False,
        ),
        ProduceRequest(
            transactional_id="tx",
            acks=i16(-1),
            timeout=i32Timedelta.parse(datetime.timedelta(seconds=1)),
            topic_data=(
                TopicProduceData(
                    name="orders",  # type: ignore[arg-type]
                    partition_data=(
                        PartitionProduceData(index=i32(0), records=Records(VALID_BATCHES[0])),
                    ),
                ),
            ),
        ),
        FetchRequest(
            max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=100)),
            min_bytes=i32(1),
            max_bytes=i32(1000),
            isolation_level=i8(0),
            session_id=i32(0),
            session_epoch=i32(-1),
            topics=(
                FetchTopic(
                    topic_id=uuid.UUID(int=2),
                    partitions=(
                        FetchPartition(
                            partition=i32(0),
                            current_leader_epoch=i32(-1),
                            fetch_offset=i64(0),
                            last_fetched_epoch=i32(-1),
                            log_start_offset=i64(-1),
                            partition_max_bytes=i32(1000),
                        ),
                    ),
                ),
            ),
            forgotten_topics_data=(),
            rack_id="",
        ),
    ]
]


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """Flip, overwrite, insert or delete a few bytes of a valid input."""
    data = bytearray(original)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        operation = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        position = draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))
        if operation == "flip" and data:
            data[position] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif operation == "set" and data:
            data[position] = draw(st.integers(min_value=0, max_value=255))
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif operation == "delete" and data:
            del data[position : position + draw(st.integers(min_value=1, max_value=8))]
        elif operation == "truncate":
            del data[position:]
    return bytes(data)


def _exercise_batch_code(data: bytes) -> None:
    try:
        headers = validate_batches(data, MAX)
    except InvalidRecords:
        pass
    else:
        assert crc_is_valid(assign_offsets(data, headers, 0), 0, headers[0])
    with contextlib.suppress(InvalidRecords):
        read_batch_header(data)
    positions = [position for position, _ in iter_batch_headers(data)]
    assert positions == sorted(set(positions))
    with contextlib.suppress(InvalidRecords):
        decode_records(data)
    with contextlib.suppress(InvalidRecords):
        decode_batches(data)


def _uncheck_crc(data: bytes) -> bytes:
    """Recompute the CRC so a mutation reaches the record decoder instead of the CRC check."""
    import crc32c

    if len(data) < 21:
        return data
    fixed = bytearray(data)
    struct.pack_into(">I", fixed, 17, crc32c.crc32c(bytes(fixed[21:])))
    return bytes(fixed)


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_batch_code_on_random_bytes(data: bytes) -> None:
    _exercise_batch_code(data)


@settings(deadline=None)
@given(st.sampled_from(VALID_BATCHES).flatmap(mutated))
def test_batch_code_on_mutated_batches(data: bytes) -> None:
    _exercise_batch_code(data)
    _exercise_batch_code(_uncheck_crc(data))


@settings(deadline=None)
@given(st.sampled_from(VALID_BATCHES), st.binary(min_size=61, max_size=61))
def test_batch_code_on_random_headers_over_valid_payloads(batch: bytes, header: bytes) -> None:
    _exercise_batch_code(header + batch[61:])
    _exercise_batch_code(_uncheck_crc(header + batch[61:]))


@settings(deadline=None)
@given(st.sampled_from(VALID_REQUESTS), st.data())
def test_read_entity_on_mutated_requests(request_: tuple[type[Any], bytes], data: Any) -> None:
    entity_type, encoded = request_
    mutation = data.draw(mutated(encoded))
    with contextlib.suppress(RemoteProtocolError):
        read_entity(entity_type, mutation)


@settings(deadline=None)
@given(st.sampled_from([entity_type for entity_type, _ in VALID_REQUESTS]), st.binary(max_size=200))
def test_read_entity_on_random_bytes(entity_type: type[Any], data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        read_entity(entity_type, data)


@pytest.mark.parametrize(("entity_type", "encoded"), VALID_REQUESTS)
def test_valid_requests_decode(entity_type: type[Any], encoded: bytes) -> None:
    entity, size = read_entity(entity_type, encoded)
    assert size == len(encoded)
    assert _kio_bytes(entity) == encoded


# -- properties of valid batches -------------------------------------------------------------


@pytest.mark.parametrize("compression", CODECS)
def test_round_trip_through_the_produce_path(compression: int) -> None:
    batch = encode_batch(SAMPLE_RECORDS, compression=compression, producer_id=4, base_sequence=9)
    headers = validate_batches(batch, MAX)
    patched = assign_offsets(batch, headers, 1234, partition_leader_epoch=3)
    (header,) = validate_batches(bytes(patched), MAX)
    assert (header.base_offset, header.partition_leader_epoch) == (1234, 3)
    assert crc_is_valid(patched, 0, header)
    records = decode_records(patched)
    assert [r.offset for r in records] == [1234, 1235, 1236]
    assert [(r.key, r.value, r.headers, r.timestamp) for r in records] == [
        (r.key, r.value, r.headers, r.timestamp) for r in SAMPLE_RECORDS
    ]


@settings(deadline=None)
@given(batch=st.sampled_from(VALID_BATCHES), data=st.data())
def test_any_flipped_bit_after_the_crc_is_caught(batch: bytes, data: Any) -> None:
    position = data.draw(st.integers(min_value=21, max_value=len(batch) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    damaged = bytearray(batch)
    damaged[position] ^= 1 << bit
    with pytest.raises(InvalidRecords):
        validate_batches(bytes(damaged), MAX)
    assert not crc_is_valid(damaged, 0, read_batch_header(damaged))


@pytest.mark.parametrize("batch", VALID_BATCHES)
def test_every_single_bit_flip_after_the_crc_is_caught(batch: bytes) -> None:
    """Exhaustive for one batch per codec: CRC32C catches every 1-bit error."""
    header = read_batch_header(batch)
    damaged = bytearray(batch)
    for position in range(21, len(batch)):
        for bit in range(8):
            damaged[position] ^= 1 << bit
            assert not crc_is_valid(damaged, 0, header)
            damaged[position] ^= 1 << bit


@settings(deadline=None)
@given(
    batch=st.sampled_from(VALID_BATCHES),
    base_offset=st.integers(min_value=0, max_value=2**62),
    partition_leader_epoch=st.none() | st.integers(min_value=-1, max_value=2**31 - 1),
)
def test_assign_offsets_keeps_the_crc_valid(
    batch: bytes, base_offset: int, partition_leader_epoch: int | None
) -> None:
    records = batch + batch
    headers = validate_batches(records, MAX)
    patched = assign_offsets(records, headers, base_offset, partition_leader_epoch)
    patched_headers = validate_batches(bytes(patched), MAX)
    assert [h.base_offset for h in patched_headers] == [base_offset, base_offset + 3]
    assert all(
        crc_is_valid(patched, position, header) for position, header in iter_batch_headers(patched)
    )
