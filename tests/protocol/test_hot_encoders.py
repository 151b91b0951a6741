"""The hand-written Produce and Fetch encoders are byte-identical to kio's for every version."""

from __future__ import annotations

import datetime
import importlib
import io
import uuid
from dataclasses import fields
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer
from kio.serial.readers import tz_aware_from_i64
from kio.static.primitive import Records, i32Timedelta

from odradek.protocol.hot_encoders import (
    FETCH_VERSIONS,
    PRODUCE_VERSIONS,
    EpochEndOffset,
    FetchPartitionResult,
    FetchResponseData,
    FetchTopicResult,
    LeaderIdAndEpoch,
    NodeEndpoint,
    ProducePartitionResult,
    ProduceResponseData,
    ProduceTopicResult,
    SnapshotId,
    encode_fetch_response,
    encode_produce_response,
)
from odradek.protocol.record_batch import Record, encode_batch

BATCH = encode_batch([Record(key=b"k", value=b"v" * 100, timestamp=5)], base_offset=10)


def _schema(api: str, version: int) -> ModuleType:
    return importlib.import_module(f"kio.schema.{api}.v{version}.response")


def _build(entity_type: type[Any], **values: Any) -> Any:
    """Construct a kio entity from the values its version has; drop the others."""
    names = {field.name for field in fields(entity_type)}
    return entity_type(**{name: value for name, value in values.items() if name in names})


def _kio_bytes(entity: Any) -> bytes:
    buffer = io.BytesIO()
    entity_writer(type(entity))(buffer, entity)
    return buffer.getvalue()


def _throttle(milliseconds: int) -> i32Timedelta:
    return i32Timedelta.parse(datetime.timedelta(milliseconds=milliseconds))


def kio_produce(version: int, data: ProduceResponseData) -> Any:
    schema = _schema("produce", version)
    return schema.ProduceResponse(
        responses=tuple(
            schema.TopicProduceResponse(
                name=topic.name,
                partition_responses=tuple(
                    _build(
                        schema.PartitionProduceResponse,
                        index=partition.index,
                        error_code=ErrorCode(partition.error_code),
                        base_offset=partition.base_offset,
                        log_append_time=None
                        if partition.log_append_time_ms == -1
                        else tz_aware_from_i64(partition.log_append_time_ms),
                        log_start_offset=partition.log_start_offset,
                        record_errors=tuple(
                            schema.BatchIndexAndErrorMessage(
                                batch_index=index, batch_index_error_message=message
                            )
                            for index, message in partition.record_errors
                        )
                        if version >= 8
                        else (),
                        error_message=partition.error_message,
                    )
                    for partition in topic.partitions
                ),
            )
            for topic in data.topics
        ),
        throttle_time=_throttle(data.throttle_time_ms),
    )


def kio_fetch(version: int, data: FetchResponseData) -> Any:
    schema = _schema("fetch", version)

    def tagged(name: str, value: Any) -> dict[str, Any]:
        if value is None or version < 12:
            return {}
        return {
            name: getattr(schema, type(value).__name__)(
                **{field.name: getattr(value, field.name) for field in fields(value)}
            )
        }

    return _build(
        schema.FetchResponse,
        throttle_time=_throttle(data.throttle_time_ms),
        error_code=ErrorCode(data.error_code),
        session_id=data.session_id,
        responses=tuple(
            _build(
                schema.FetchableTopicResponse,
                topic=topic.name,
                topic_id=topic.topic_id,
                partitions=tuple(
                    _build(
                        schema.PartitionData,
                        partition_index=partition.partition_index,
                        error_code=ErrorCode(partition.error_code),
                        high_watermark=partition.high_watermark,
                        last_stable_offset=partition.last_stable_offset,
                        log_start_offset=partition.log_start_offset,
                        aborted_transactions=None
                        if partition.aborted_transactions is None
                        else tuple(
                            schema.AbortedTransaction(
                                producer_id=producer_id, first_offset=first_offset
                            )
                            for producer_id, first_offset in partition.aborted_transactions
                        ),
                        preferred_read_replica=partition.preferred_read_replica,
                        records=None
                        if partition.records is None
                        else Records(bytes(partition.records)),
                        **tagged("diverging_epoch", partition.diverging_epoch),
                        **tagged("current_leader", partition.current_leader),
                        **tagged("snapshot_id", partition.snapshot_id),
                    )
                    for partition in topic.partitions
                ),
            )
            for topic in data.topics
        ),
    )


def _produce_example() -> ProduceResponseData:
    return ProduceResponseData(
        topics=(
            ProduceTopicResult(
                "orders",
                (
                    ProducePartitionResult(0, 0, 100, -1, 0),
                    ProducePartitionResult(1, int(ErrorCode.not_leader_or_follower), -1),
                    ProducePartitionResult(
                        2,
                        int(ErrorCode.invalid_record),
                        -1,
                        log_append_time_ms=1_700_000_000_123,
                        log_start_offset=5,
                        record_errors=((0, "bad key"), (3, None)),
                        error_message="records rejected",
                    ),
                ),
            ),
            ProduceTopicResult("zamówienia-日本", (ProducePartitionResult(7, 0, 2**40),)),
            ProduceTopicResult("empty", ()),
        ),
        throttle_time_ms=25,
    )


def _fetch_example() -> FetchResponseData:
    return FetchResponseData(
        throttle_time_ms=3,
        error_code=0,
        session_id=1234,
        topics=(
            FetchTopicResult(
                "orders",
                uuid.UUID("12345678-1234-5678-1234-567812345678"),
                (
                    FetchPartitionResult(0, 0, 11, 11, 0, None, records=BATCH),
                    FetchPartitionResult(1, 0, 0, 0, 0, (), records=memoryview(BATCH)[:0]),
                    FetchPartitionResult(
                        2,
                        int(ErrorCode.offset_out_of_range),
                        50,
                        40,
                        10,
                        ((7, 12), (8, 30)),
                        preferred_read_replica=2,
                        records=None,
                    ),
                    FetchPartitionResult(3, 0, 99, 99, 0, (), records=memoryview(BATCH + BATCH)),
                ),
            ),
            FetchTopicResult("zamówienia-日本", None, ()),
            FetchTopicResult(
                "tagged",
                uuid.uuid4(),
                (
                    FetchPartitionResult(
                        0,
                        0,
                        1,
                        diverging_epoch=EpochEndOffset(3, 77),
                        current_leader=LeaderIdAndEpoch(1, 4),
                        snapshot_id=SnapshotId(50, 2),
                    ),
                    FetchPartitionResult(
                        1,
                        0,
                        1,
                        # Equal to Kafka's defaults, so not sent.
                        diverging_epoch=EpochEndOffset(),
                        current_leader=LeaderIdAndEpoch(leader_id=2),
                    ),
                ),
            ),
        ),
    )


@pytest.mark.parametrize("version", PRODUCE_VERSIONS)
def test_produce_matches_kio(version: int) -> None:
    data = _produce_example()
    encoded = encode_produce_response(version, data)
    assert encoded == _kio_bytes(kio_produce(version, data))
    decoded, size = entity_reader(_schema("produce", version).ProduceResponse)(encoded, 0)
    assert size == len(encoded)
    assert decoded.responses[1].name == "zamówienia-日本"


@pytest.mark.parametrize("version", PRODUCE_VERSIONS)
def test_produce_empty_matches_kio(version: int) -> None:
    data = ProduceResponseData(topics=())
    assert encode_produce_response(version, data) == _kio_bytes(kio_produce(version, data))


@pytest.mark.parametrize("version", FETCH_VERSIONS)
def test_fetch_matches_kio(version: int) -> None:
    data = _fetch_example()
    buffers = encode_fetch_response(version, data)
    assert b"".join(buffers) == _kio_bytes(kio_fetch(version, data))


@pytest.mark.parametrize("version", FETCH_VERSIONS)
def test_fetch_empty_matches_kio(version: int) -> None:
    data = FetchResponseData(throttle_time_ms=0, error_code=0, session_id=0, topics=())
    buffers = encode_fetch_response(version, data)
    assert buffers == [_kio_bytes(kio_fetch(version, data))]


@pytest.mark.parametrize("version", [4, 11, 12, 16])
def test_fetch_error_response_matches_kio(version: int) -> None:
    data = FetchResponseData(
        throttle_time_ms=0,
        error_code=int(ErrorCode.fetch_session_id_not_found),
        session_id=0,
        topics=(),
    )
    assert b"".join(encode_fetch_response(version, data)) == _kio_bytes(kio_fetch(version, data))


@pytest.mark.parametrize("version", FETCH_VERSIONS)
def test_fetch_records_are_separate_buffers_not_copies(version: int) -> None:
    view = memoryview(BATCH)
    data = FetchResponseData(
        throttle_time_ms=0,
        error_code=0,
        session_id=0,
        topics=(
            FetchTopicResult(
                "t",
                None,
                (
                    FetchPartitionResult(0, 0, 1, 1, 0, None, records=view),
                    FetchPartitionResult(1, 0, 1, 1, 0, None, records=BATCH),
                ),
            ),
        ),
    )
    buffers = encode_fetch_response(version, data)
    assert len(buffers) == 5
    assert buffers[1] is view
    assert buffers[3] is BATCH


def test_unsupported_versions_raise() -> None:
    with pytest.raises(ValueError, match="v2"):
        encode_produce_response(2, ProduceResponseData(()))
    with pytest.raises(ValueError, match="v13"):
        encode_produce_response(13, ProduceResponseData(()))
    empty = FetchResponseData(0, 0, 0, ())
    with pytest.raises(ValueError, match="v3"):
        encode_fetch_response(3, empty)
    with pytest.raises(ValueError, match="v18"):
        encode_fetch_response(18, empty)


# -- generated shapes ------------------------------------------------------------------------

int32s = st.integers(min_value=-(2**31), max_value=2**31 - 1)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
error_codes = st.sampled_from([int(code) for code in ErrorCode])
topic_names = st.text(min_size=0, max_size=30)
# kio turns log_append_time into a datetime, so keep it in the range datetimes can hold.
log_append_times = st.just(-1) | st.integers(min_value=0, max_value=2**45)

produce_partitions = st.builds(
    ProducePartitionResult,
    index=int32s,
    error_code=error_codes,
    base_offset=int64s,
    log_append_time_ms=log_append_times,
    log_start_offset=int64s,
    record_errors=st.lists(st.tuples(int32s, st.none() | st.text(max_size=20)), max_size=3).map(
        tuple
    ),
    error_message=st.none() | st.text(max_size=30),
)
produce_responses = st.builds(
    ProduceResponseData,
    topics=st.lists(
        st.builds(
            ProduceTopicResult,
            name=topic_names,
            partitions=st.lists(produce_partitions, max_size=4).map(tuple),
        ),
        max_size=4,
    ).map(tuple),
    throttle_time_ms=st.integers(min_value=0, max_value=2**31 - 1),
)

fetch_partitions = st.builds(
    FetchPartitionResult,
    partition_index=int32s,
    error_code=error_codes,
    high_watermark=int64s,
    last_stable_offset=int64s,
    log_start_offset=int64s,
    aborted_transactions=st.none() | st.lists(st.tuples(int64s, int64s), max_size=3).map(tuple),
    preferred_read_replica=int32s,
    records=st.none()
    | st.binary(max_size=300)
    | st.binary(max_size=300).map(memoryview)
    | st.just(BATCH),
    diverging_epoch=st.none() | st.builds(EpochEndOffset, int32s, int64s),
    current_leader=st.none() | st.builds(LeaderIdAndEpoch, int32s, int32s),
    snapshot_id=st.none() | st.builds(SnapshotId, int64s, int32s),
)
fetch_responses = st.builds(
    FetchResponseData,
    throttle_time_ms=st.integers(min_value=0, max_value=2**31 - 1),
    error_code=error_codes,
    session_id=int32s,
    topics=st.lists(
        st.builds(
            FetchTopicResult,
            name=topic_names,
            topic_id=st.none() | st.uuids(),
            partitions=st.lists(fetch_partitions, max_size=4).map(tuple),
        ),
        max_size=3,
    ).map(tuple),
)


@settings(deadline=None)
@given(version=st.sampled_from(PRODUCE_VERSIONS), data=produce_responses)
def test_produce_matches_kio_property(version: int, data: ProduceResponseData) -> None:
    assert encode_produce_response(version, data) == _kio_bytes(kio_produce(version, data))


@settings(deadline=None)
@given(version=st.sampled_from(FETCH_VERSIONS), data=fetch_responses)
def test_fetch_matches_kio_property(version: int, data: FetchResponseData) -> None:
    assert b"".join(encode_fetch_response(version, data)) == _kio_bytes(kio_fetch(version, data))


def test_error_codes_newer_than_kio_are_written_as_is() -> None:
    # kio's ErrorCode enum cannot hold them, so this one is checked by hand: topics count (4),
    # name (2 + 1), partitions count (4), index (4), then the error code.
    data = ProduceResponseData((ProduceTopicResult("t", (ProducePartitionResult(0, 32000, 0),)),))
    assert encode_produce_response(3, data)[15:17] == (32000).to_bytes(2, "big")


@pytest.mark.parametrize("version", [9, 10, 11, 12])
def test_produce_not_leader_with_current_leader_matches_kio(version: int) -> None:
    """KIP-951: CurrentLeader (partition tag 0) and NodeEndpoints (response tag 0), v10+."""
    data = ProduceResponseData(
        topics=[
            ProduceTopicResult(
                "t",
                [ProducePartitionResult(0, 6, -1, current_leader=LeaderIdAndEpoch(2, 7))],
            )
        ],
        node_endpoints=[NodeEndpoint(2, "127.0.0.1", 9092, None), NodeEndpoint(3, "h", 1, "r")],
    )
    schema = _schema("produce", version)
    extra: dict[str, Any] = {}
    partition_extra: dict[str, Any] = {}
    if version >= 10:
        partition_extra["current_leader"] = schema.LeaderIdAndEpoch(leader_id=2, leader_epoch=7)
        extra["node_endpoints"] = (
            schema.NodeEndpoint(node_id=2, host="127.0.0.1", port=9092, rack=None),
            schema.NodeEndpoint(node_id=3, host="h", port=1, rack="r"),
        )
    expected = schema.ProduceResponse(
        responses=(
            schema.TopicProduceResponse(
                name="t",
                partition_responses=(
                    schema.PartitionProduceResponse(
                        index=0,
                        error_code=ErrorCode.not_leader_or_follower,
                        base_offset=-1,
                        log_append_time=None,
                        log_start_offset=-1,
                        record_errors=(),
                        error_message=None,
                        **partition_extra,
                    ),
                ),
            ),
        ),
        throttle_time=_throttle(0),
        **extra,
    )
    assert encode_produce_response(version, data) == _kio_bytes(expected)


@pytest.mark.parametrize("version", [15, 16, 17])
def test_fetch_node_endpoints_match_kio(version: int) -> None:
    data = FetchResponseData(
        throttle_time_ms=0,
        error_code=0,
        session_id=0,
        topics=(),
        node_endpoints=[NodeEndpoint(2, "127.0.0.1", 9092, None)],
    )
    schema = _schema("fetch", min(version, 16))
    extra: dict[str, Any] = {}
    if version >= 16:
        extra["node_endpoints"] = (
            schema.NodeEndpoint(node_id=2, host="127.0.0.1", port=9092, rack=None),
        )
    expected = _build(
        schema.FetchResponse,
        throttle_time=_throttle(0),
        error_code=ErrorCode.none,
        session_id=0,
        responses=(),
        **extra,
    )
    assert b"".join(encode_fetch_response(version, data)) == _kio_bytes(expected)
