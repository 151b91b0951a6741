"""The replica fetcher's FetchResponse reader gives back what the hot encoder (and kio) wrote,
with every partition's records as a view into the response, never a copy."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from odradek.protocol.fetch_response_reader import FETCH_READER_VERSIONS, decode_fetch_response
from odradek.protocol.hot_encoders import (
    EpochEndOffset,
    FetchPartitionResult,
    FetchResponseData,
    FetchTopicResult,
    LeaderIdAndEpoch,
    NodeEndpoint,
    SnapshotId,
    encode_fetch_response,
)
from odradek.protocol.record_batch import Record, encode_batch
from odradek.protocol.tolerant_reader import RemoteProtocolError

BATCH = encode_batch([Record(key=b"k", value=b"v" * 100, timestamp=5)], base_offset=10)
TOPIC_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")

int32s = st.integers(min_value=-(2**31), max_value=2**31 - 1)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def _expected(data: FetchResponseData, version: int) -> FetchResponseData:
    """What a decoder can know of `data` once encoded: topic ids only (v13+), fields equal to
    Kafka's defaults are not sent, records as bytes."""

    def tagged(value: object, default: object) -> object:
        return None if value is None or value == default else value

    return FetchResponseData(
        throttle_time_ms=data.throttle_time_ms,
        error_code=data.error_code,
        session_id=data.session_id,
        topics=[
            FetchTopicResult(
                name="",
                topic_id=topic.topic_id or uuid.UUID(int=0),
                partitions=[
                    FetchPartitionResult(
                        partition_index=p.partition_index,
                        error_code=p.error_code,
                        high_watermark=p.high_watermark,
                        last_stable_offset=p.last_stable_offset,
                        log_start_offset=p.log_start_offset,
                        aborted_transactions=None
                        if p.aborted_transactions is None
                        else [(first, second) for first, second in p.aborted_transactions],
                        preferred_read_replica=p.preferred_read_replica,
                        records=None if p.records is None else bytes(p.records),
                        diverging_epoch=tagged(p.diverging_epoch, EpochEndOffset()),  # type: ignore[arg-type]
                        current_leader=tagged(p.current_leader, LeaderIdAndEpoch()),  # type: ignore[arg-type]
                        snapshot_id=tagged(p.snapshot_id, SnapshotId()),  # type: ignore[arg-type]
                    )
                    for p in topic.partitions
                ],
            )
            for topic in data.topics
        ],
        node_endpoints=list(data.node_endpoints) if version >= 16 else [],
    )


def _as_bytes(data: FetchResponseData) -> FetchResponseData:
    """`data` with memoryview records turned into bytes, for comparison."""
    return FetchResponseData(
        data.throttle_time_ms,
        data.error_code,
        data.session_id,
        [
            FetchTopicResult(
                t.name,
                t.topic_id,
                [
                    FetchPartitionResult(
                        p.partition_index,
                        p.error_code,
                        p.high_watermark,
                        p.last_stable_offset,
                        p.log_start_offset,
                        p.aborted_transactions,
                        p.preferred_read_replica,
                        None if p.records is None else bytes(p.records),
                        p.diverging_epoch,
                        p.current_leader,
                        p.snapshot_id,
                    )
                    for p in t.partitions
                ],
            )
            for t in data.topics
        ],
        list(data.node_endpoints),
    )


def _example() -> FetchResponseData:
    return FetchResponseData(
        throttle_time_ms=3,
        error_code=0,
        session_id=1234,
        topics=[
            FetchTopicResult(
                "",
                TOPIC_ID,
                [
                    FetchPartitionResult(0, 0, 11, 11, 0, None, records=BATCH),
                    FetchPartitionResult(1, 0, 0, 0, 0, [], records=b""),
                    FetchPartitionResult(
                        2, int(ErrorCode.offset_out_of_range), 50, 40, 10, [(7, 12), (8, 30)]
                    ),
                    FetchPartitionResult(
                        3,
                        0,
                        1,
                        diverging_epoch=EpochEndOffset(3, 77),
                        current_leader=LeaderIdAndEpoch(1, 4),
                        snapshot_id=SnapshotId(50, 2),
                    ),
                ],
            )
        ],
        node_endpoints=[NodeEndpoint(2, "127.0.0.1", 9092, None), NodeEndpoint(3, "h", 1, "r")],
    )


@pytest.mark.parametrize("version", FETCH_READER_VERSIONS)
def test_reads_what_the_encoder_wrote(version: int) -> None:
    data = _example()
    decoded = decode_fetch_response(version, b"".join(encode_fetch_response(version, data)))
    assert _as_bytes(decoded) == _expected(data, version)


def test_records_are_views_into_the_response_not_copies() -> None:
    body = bytearray(b"".join(encode_fetch_response(16, _example())))
    decoded = decode_fetch_response(16, body)
    records = decoded.topics[0].partitions[0].records
    assert isinstance(records, memoryview)
    assert records.obj is body
    assert bytes(records) == BATCH


def test_unknown_tagged_fields_are_skipped() -> None:
    data = FetchResponseData(
        0,
        0,
        0,
        [
            FetchTopicResult(
                "", TOPIC_ID, [FetchPartitionResult(0, 0, 5, 5, 0, None, records=BATCH)]
            )
        ],
    )
    body = b"".join(encode_fetch_response(16, data))
    # The partition's tagged-field section is its last byte before the topic's (0x00 0x00) and
    # the response's (0x00): replace "no tags" with one unknown tag 9 of 3 bytes.
    assert body.endswith(b"\x00\x00\x00")
    patched = body[:-3] + b"\x01\x09\x03abc" + b"\x00\x00"
    decoded = decode_fetch_response(16, patched)
    assert bytes(decoded.topics[0].partitions[0].records or b"") == BATCH
    assert decoded.topics[0].partitions[0].high_watermark == 5


def test_truncated_response_raises_remote_protocol_error() -> None:
    body = b"".join(encode_fetch_response(16, _example()))
    for cut in (3, 20, 60, len(body) - len(BATCH) - 3, len(body) - 1):
        with pytest.raises(RemoteProtocolError):
            decode_fetch_response(16, body[:cut])


def test_unsupported_version_raises() -> None:
    with pytest.raises(ValueError, match="v12"):
        decode_fetch_response(12, b"")


fetch_partitions = st.builds(
    FetchPartitionResult,
    partition_index=int32s,
    error_code=st.sampled_from([int(code) for code in ErrorCode]),
    high_watermark=int64s,
    last_stable_offset=int64s,
    log_start_offset=int64s,
    aborted_transactions=st.none() | st.lists(st.tuples(int64s, int64s), max_size=3),
    preferred_read_replica=int32s,
    records=st.none() | st.binary(max_size=300) | st.just(BATCH),
    diverging_epoch=st.none() | st.builds(EpochEndOffset, int32s, int64s),
    current_leader=st.none() | st.builds(LeaderIdAndEpoch, int32s, int32s),
    snapshot_id=st.none() | st.builds(SnapshotId, int64s, int32s),
)
fetch_responses = st.builds(
    FetchResponseData,
    throttle_time_ms=st.integers(min_value=0, max_value=2**31 - 1),
    error_code=st.sampled_from([int(code) for code in ErrorCode]),
    session_id=int32s,
    topics=st.lists(
        st.builds(
            FetchTopicResult,
            name=st.just(""),
            topic_id=st.uuids(),
            partitions=st.lists(fetch_partitions, max_size=4),
        ),
        max_size=3,
    ),
    node_endpoints=st.lists(
        st.builds(
            NodeEndpoint,
            node_id=int32s,
            host=st.text(max_size=20),
            port=int32s,
            rack=st.none() | st.text(max_size=10),
        ),
        max_size=2,
    ),
)


@settings(deadline=None)
@given(version=st.sampled_from(FETCH_READER_VERSIONS), data=fetch_responses)
def test_round_trip_property(version: int, data: FetchResponseData) -> None:
    decoded = decode_fetch_response(version, b"".join(encode_fetch_response(version, data)))
    assert _as_bytes(decoded) == _expected(data, version)
