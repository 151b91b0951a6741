"""read_entity skips unknown tagged fields (KIP-482) at every nesting level, as kio does not."""

from __future__ import annotations

import datetime
import io
from dataclasses import MISSING, fields
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.fetch.v12.request import FetchRequest as FetchRequestV12
from kio.schema.fetch.v16.request import FetchPartition, FetchTopic, ReplicaState
from kio.schema.fetch.v16.request import FetchRequest as FetchRequestV16
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.produce.v9.request import ProduceRequest as ProduceRequestV9
from kio.schema.produce.v10.request import PartitionProduceData, TopicProduceData
from kio.schema.produce.v10.request import ProduceRequest as ProduceRequestV10
from kio.schema.request_header.v2.header import RequestHeader
from kio.serial import entity_reader, entity_writer
from kio.serial._implicit_defaults import get_tagged_field_default
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    classify_field,
    get_field_tag,
    is_optional,
)
from kio.serial._serialize import get_field_writer
from kio.serial.writers import write_unsigned_varint
from kio.static.primitive import Records, i8, i16, i32, i32Timedelta, i64

from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import nested, request_module, request_type
from odradek.protocol.record_batch import Record, encode_batch
from odradek.protocol.tolerant_reader import RemoteProtocolError, read_entity

st.register_type_strategy(Records, st.binary(max_size=80).map(Records))

ENTITY_TYPES: list[type[Any]] = [
    ProduceRequestV9,
    ProduceRequestV10,
    FetchRequestV12,
    FetchRequestV16,
    MetadataRequest,
    ApiVersionsRequest,
    RequestHeader,
]

# Unknown tags a newer client might send: a one-byte tag, and one whose uvarint takes 2 bytes.
UNKNOWN_TAGS: tuple[tuple[int, bytes], ...] = ((90, b"\x01\x02\x03"), (300, b""))


def _uvarint(value: int) -> bytes:
    buffer = io.BytesIO()
    write_unsigned_varint(buffer, value)  # type: ignore[arg-type]
    return buffer.getvalue()


def encode_with_unknown_tags(entity: Any, unknown: tuple[tuple[int, bytes], ...]) -> bytes:
    """Encode like kio, but add `unknown` tagged fields to every flexible struct."""
    entity_type = type(entity)
    flexible = entity_type.__flexible__
    is_request_header = entity_type.__name__ == "RequestHeader"
    out = bytearray()
    tagged: list[tuple[int, bytes]] = []
    for field in fields(entity_type):
        value = getattr(entity, field.name)
        tag = get_field_tag(field)
        if tag is not None:
            default = (
                field.default if field.default is not MISSING else get_tagged_field_default(field)
            )
            if value != default:
                buffer = io.BytesIO()
                get_field_writer(field, flexible, is_request_header, True)(buffer, value)
                tagged.append((int(tag), buffer.getvalue()))
            continue
        field_class = classify_field(field)
        if isinstance(field_class, EntityField):
            if is_optional(field):
                out += b"\xff" if value is None else b"\x01"
            if value is not None:
                out += encode_with_unknown_tags(value, unknown)
        elif isinstance(field_class, EntityTupleField):
            if value is None:
                out += b"\x00" if flexible else b"\xff\xff\xff\xff"
            else:
                out += _uvarint(len(value) + 1) if flexible else len(value).to_bytes(4, "big")
                for item in value:
                    out += encode_with_unknown_tags(item, unknown)
        else:
            buffer = io.BytesIO()
            get_field_writer(field, flexible, is_request_header, False)(buffer, value)
            out += buffer.getvalue()
    if flexible:
        tagged.extend(unknown)
        tagged.sort()
        out += _uvarint(len(tagged))
        for tag, payload in tagged:
            out += _uvarint(tag) + _uvarint(len(payload)) + payload
    return bytes(out)


def kio_bytes(entity: Any) -> bytes:
    buffer = io.BytesIO()
    entity_writer(type(entity))(buffer, entity)
    return buffer.getvalue()


BATCH = Records(encode_batch([Record(key=b"k", value=b"v")]))

EXAMPLES: list[Any] = [
    ProduceRequestV10(
        transactional_id=None,
        acks=i16(-1),
        timeout=i32Timedelta.parse(__import__("datetime").timedelta(seconds=30)),
        topic_data=(
            TopicProduceData(
                name="orders",  # type: ignore[arg-type]
                partition_data=(
                    PartitionProduceData(index=i32(0), records=BATCH),
                    PartitionProduceData(index=i32(1), records=None),
                ),
            ),
        ),
    ),
    FetchRequestV16(
        cluster_id="cluster",
        replica_state=ReplicaState(replica_id=i32(3), replica_epoch=i64(7)),  # type: ignore[arg-type]
        max_wait=i32Timedelta.parse(__import__("datetime").timedelta(milliseconds=500)),
        min_bytes=i32(1),
        max_bytes=i32(1 << 20),
        isolation_level=i8(1),
        session_id=i32(0),
        session_epoch=i32(-1),
        topics=(
            FetchTopic(
                topic_id=__import__("uuid").UUID(int=5),
                partitions=(
                    FetchPartition(
                        partition=i32(0),
                        current_leader_epoch=i32(-1),
                        fetch_offset=i64(10),
                        last_fetched_epoch=i32(-1),
                        log_start_offset=i64(-1),
                        partition_max_bytes=i32(1 << 20),
                    ),
                ),
            ),
        ),
        forgotten_topics_data=(),
        rack_id="",
    ),
    MetadataRequest(
        topics=(MetadataRequestTopic(topic_id=None, name="orders"),),  # type: ignore[arg-type]
        allow_auto_topic_creation=True,
        include_topic_authorized_operations=False,
    ),
    MetadataRequest(
        topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=True
    ),
    ApiVersionsRequest(client_software_name="librdkafka", client_software_version="2.6.0"),
    RequestHeader(
        request_api_key=i16(0),
        request_api_version=i16(10),
        correlation_id=i32(42),
        client_id=None,
    ),
    RequestHeader(
        request_api_key=i16(1),
        request_api_version=i16(16),
        correlation_id=i32(-7),
        client_id="rdkafka",
    ),
]


def test_kio_refuses_unknown_tagged_fields() -> None:
    """The gap this module exists for; if kio fixes it, the fallback becomes dead code."""
    entity = EXAMPLES[4]
    with pytest.raises(KeyError, match="Unknown tagged field"):
        entity_reader(type(entity))(encode_with_unknown_tags(entity, UNKNOWN_TAGS), 0)


@pytest.mark.parametrize("entity", EXAMPLES, ids=lambda entity: type(entity).__qualname__)
def test_examples(entity: Any) -> None:
    plain = encode_with_unknown_tags(entity, ())
    assert plain == kio_bytes(entity), "the test encoder must agree with kio"
    assert read_entity(type(entity), plain) == (entity, len(plain))
    injected = encode_with_unknown_tags(entity, UNKNOWN_TAGS)
    assert len(injected) > len(plain)
    assert read_entity(type(entity), injected) == (entity, len(injected))
    # At an offset, from a bytearray, and with trailing bytes that belong to someone else.
    framed = b"\x00\x01\x02" + injected + b"trailing"
    assert read_entity(type(entity), framed, 3) == (entity, len(injected))
    assert read_entity(type(entity), bytearray(injected)) == (entity, len(injected))  # type: ignore[arg-type]


def test_unknown_tags_next_to_known_tags() -> None:
    entity = EXAMPLES[1]  # FetchRequest v16 sends known tags 0 (cluster_id) and 1
    injected = encode_with_unknown_tags(entity, ((2, b"\xaa"), (5, b"\xbb\xcc")))
    assert read_entity(FetchRequestV16, injected) == (entity, len(injected))


@pytest.mark.parametrize("entity", EXAMPLES, ids=lambda entity: type(entity).__qualname__)
def test_truncated_input_raises_remote_protocol_error(entity: Any) -> None:
    injected = encode_with_unknown_tags(entity, UNKNOWN_TAGS)
    for cut in range(len(injected)):
        with pytest.raises(RemoteProtocolError):
            read_entity(type(entity), injected[:cut])


def test_tagged_field_size_past_the_buffer() -> None:
    entity = EXAMPLES[4]
    encoded = kio_bytes(entity)
    # Replace the empty tag section with one tag that claims 50 bytes but carries 1.
    broken = encoded[:-1] + b"\x01\x63\x32\x00"
    with pytest.raises(RemoteProtocolError):
        read_entity(ApiVersionsRequest, broken)


def test_known_tagged_field_with_wrong_declared_size() -> None:
    entity = EXAMPLES[1]
    injected = encode_with_unknown_tags(entity, UNKNOWN_TAGS)
    # The top-level section: 4 tags, then cluster_id (tag 0, 8 bytes: length + "cluster").
    tags_start = injected.index(b"\x04\x00\x08\x08cluster")
    corrupt = bytearray(injected)
    corrupt[tags_start + 2] = 0x09  # claims one byte more than the string uses
    with pytest.raises(RemoteProtocolError):
        read_entity(FetchRequestV16, bytes(corrupt))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), entity_type=st.sampled_from(ENTITY_TYPES))
def test_generated_entities_with_unknown_tags(data: st.DataObject, entity_type: type[Any]) -> None:
    entity = data.draw(st.from_type(entity_type))
    unknown = tuple(
        sorted(
            data.draw(
                st.dictionaries(
                    st.integers(min_value=10, max_value=2**20),
                    st.binary(max_size=20),
                    max_size=3,
                )
            ).items()
        )
    )
    plain = kio_bytes(entity)
    assert read_entity(entity_type, plain) == (entity, len(plain))
    injected = encode_with_unknown_tags(entity, unknown)
    assert read_entity(entity_type, injected) == (entity, len(injected))


def _produce_request(version: int, records: bytes | None) -> Any:
    module = request_module(ApiKey.PRODUCE, version)
    return request_type(ApiKey.PRODUCE, version)(
        transactional_id=None,
        acks=i16(1),
        timeout=i32Timedelta.parse(datetime.timedelta(seconds=5)),
        topic_data=(
            nested(module, "TopicProduceData")(
                name="t",
                partition_data=(
                    nested(module, "PartitionProduceData")(index=i32(0), records=records),
                ),
            ),
        ),
    )


@pytest.mark.parametrize("version", [3, 8, 9, 12])
def test_produce_records_are_a_view_into_the_frame_not_a_copy(version: int) -> None:
    """A produced batch is read as a read-only view of the request frame: kio's native reader
    would copy every produced byte into a new bytes object."""
    records = encode_batch([Record(key=None, value=b"x" * 1000)])
    frame = bytearray(b"head" + kio_bytes(_produce_request(version, records)) + b"tail")
    request, _size = read_entity(request_type(ApiKey.PRODUCE, version), frame, 4)
    decoded = request.topic_data[0].partition_data[0].records
    assert isinstance(decoded, memoryview)
    assert decoded.readonly
    assert decoded.obj is frame
    assert decoded == records


@pytest.mark.parametrize("version", [3, 9])
def test_null_produce_records_read_as_none(version: int) -> None:
    encoded = kio_bytes(_produce_request(version, None))
    request, size = read_entity(request_type(ApiKey.PRODUCE, version), encoded)
    assert size == len(encoded)
    assert request.topic_data[0].partition_data[0].records is None


@pytest.mark.parametrize("version", [3, 9])
def test_produce_records_longer_than_the_frame_are_refused(version: int) -> None:
    encoded = kio_bytes(_produce_request(version, b"\x01" * 100))
    with pytest.raises(RemoteProtocolError):
        read_entity(request_type(ApiKey.PRODUCE, version), encoded[:-40])
