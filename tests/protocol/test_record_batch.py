"""Record batch v2: header view, validation, offset assignment, record codec."""

from __future__ import annotations

import struct

import crc32c
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from odradek.protocol.record_batch import (
    BATCH_HEADER_SIZE,
    COMPRESSION_GZIP,
    COMPRESSION_LZ4,
    COMPRESSION_NONE,
    COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD,
    LOG_OVERHEAD,
    TIMESTAMP_LOG_APPEND_TIME,
    BatchHeader,
    InvalidRecords,
    Record,
    assign_offsets,
    crc_is_valid,
    decode_batches,
    decode_records,
    decode_varint,
    encode_batch,
    encode_varint,
    iter_batch_headers,
    read_batch_header,
    recompress_batches,
    record_summaries,
    validate_batches,
    validate_keys_for_compaction,
)

CODECS = [
    COMPRESSION_NONE,
    COMPRESSION_GZIP,
    COMPRESSION_SNAPPY,
    COMPRESSION_LZ4,
    COMPRESSION_ZSTD,
]
MAX = 1_000_000

RECORDS = [
    Record(key=b"k1", value=b"v1", headers=(("h", b"x"), ("null", None)), timestamp=1000),
    Record(key=None, value=b"v2" * 50, timestamp=1005),
    Record(key=b"", value=None, timestamp=999),
]


def _reseal(batch: bytearray) -> bytes:
    """Recompute the CRC after a test edits covered fields on purpose."""
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    return bytes(batch)


def _expect(error_code: ErrorCode, records: bytes, max_message_bytes: int = MAX) -> None:
    with pytest.raises(InvalidRecords) as caught:
        validate_batches(records, max_message_bytes)
    assert caught.value.error_code == error_code


# -- varints ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (-1, b"\x01"),
        (1, b"\x02"),
        (-2, b"\x03"),
        (63, b"\x7e"),
        (-64, b"\x7f"),
        (64, b"\x80\x01"),
        (2**31 - 1, b"\xfe\xff\xff\xff\x0f"),
        (-(2**31), b"\xff\xff\xff\xff\x0f"),
    ],
)
def test_varint_known_encodings(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded
    assert decode_varint(encoded, 0) == (value, len(encoded))


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_varlong_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) <= 10
    assert decode_varint(b"\xaa" + encoded, 1) == (value, 1 + len(encoded))


def test_varint_out_of_range_and_truncated() -> None:
    with pytest.raises(ValueError, match="64 bits"):
        encode_varint(2**63)
    with pytest.raises(InvalidRecords):
        decode_varint(b"\x80\x80", 0)
    with pytest.raises(InvalidRecords):
        decode_varint(b"\xff" * 6, 0, max_bytes=5)


# -- header ----------------------------------------------------------------------------------


def test_header_fields_and_properties() -> None:
    batch = encode_batch(
        RECORDS,
        base_offset=100,
        compression=COMPRESSION_LZ4,
        producer_id=7,
        producer_epoch=3,
        base_sequence=40,
        is_transactional=True,
        partition_leader_epoch=5,
    )
    header = read_batch_header(batch)
    assert header == BatchHeader(
        base_offset=100,
        batch_length=len(batch) - LOG_OVERHEAD,
        partition_leader_epoch=5,
        magic=2,
        crc=header.crc,
        attributes=COMPRESSION_LZ4 | 0x10,
        last_offset_delta=2,
        base_timestamp=1000,
        max_timestamp=1005,
        producer_id=7,
        producer_epoch=3,
        base_sequence=40,
        records_count=3,
    )
    assert header.compression == COMPRESSION_LZ4
    assert header.timestamp_type == 0
    assert header.is_transactional
    assert not header.is_control
    assert header.size == len(batch)
    assert header.last_offset == 102
    assert header.next_offset == 103
    assert header.record_count == 3
    assert header.last_sequence == 42
    assert crc_is_valid(batch, 0, header)


def test_last_sequence_wraps_and_is_minus_one_without_idempotence() -> None:
    header = read_batch_header(encode_batch(RECORDS, base_sequence=2**31 - 1))
    assert header.last_sequence == 1
    assert read_batch_header(encode_batch(RECORDS)).last_sequence == -1


def test_control_and_log_append_time_flags() -> None:
    header = read_batch_header(
        encode_batch(RECORDS, is_control=True, timestamp_type=TIMESTAMP_LOG_APPEND_TIME)
    )
    assert header.is_control
    assert header.timestamp_type == TIMESTAMP_LOG_APPEND_TIME


def test_read_batch_header_at_position_and_short_buffers() -> None:
    batch = encode_batch(RECORDS, base_offset=9)
    assert read_batch_header(b"xyz" + batch, 3).base_offset == 9
    assert read_batch_header(memoryview(batch)).base_offset == 9
    assert read_batch_header(bytearray(batch)).base_offset == 9
    with pytest.raises(InvalidRecords) as caught:
        read_batch_header(batch[:60])
    assert caught.value.error_code == ErrorCode.corrupt_message
    with pytest.raises(InvalidRecords):
        read_batch_header(batch, len(batch) - 10)


# -- validate_batches ------------------------------------------------------------------------


@pytest.mark.parametrize("compression", CODECS)
def test_validate_accepts_valid_batches(compression: int) -> None:
    first = encode_batch(RECORDS, compression=compression)
    second = encode_batch(RECORDS[:1], compression=compression)
    headers = validate_batches(first + second, MAX)
    assert [header.records_count for header in headers] == [3, 1]
    assert validate_batches(memoryview(first), MAX) == headers[:1]


def test_validate_rejects_empty() -> None:
    _expect(ErrorCode.invalid_record, b"")


def test_validate_rejects_truncation() -> None:
    batch = encode_batch(RECORDS)
    _expect(ErrorCode.corrupt_message, batch[:40])
    _expect(ErrorCode.corrupt_message, batch[:-1])
    _expect(ErrorCode.corrupt_message, batch + batch[:70])
    _expect(ErrorCode.corrupt_message, batch[:10])


def test_validate_rejects_old_magic_and_unknown_magic() -> None:
    batch = bytearray(encode_batch(RECORDS))
    for magic in (0, 1):
        batch[16] = magic
        _expect(ErrorCode.unsupported_for_message_format, bytes(batch))
    # A legacy message set is shorter than a v2 header; the magic still identifies it.
    legacy = bytearray(30)
    legacy[16] = 1
    _expect(ErrorCode.unsupported_for_message_format, bytes(legacy))
    batch[16] = 3
    _expect(ErrorCode.corrupt_message, bytes(batch))


@pytest.mark.parametrize("batch_length", [-1, 0, 48, 10_000])
def test_validate_rejects_insane_batch_length(batch_length: int) -> None:
    batch = bytearray(encode_batch(RECORDS))
    struct.pack_into(">i", batch, 8, batch_length)
    _expect(ErrorCode.corrupt_message, bytes(batch))


def test_validate_rejects_too_large() -> None:
    batch = encode_batch(RECORDS)
    assert validate_batches(batch, len(batch))
    _expect(ErrorCode.message_too_large, batch, len(batch) - 1)


def test_validate_rejects_crc_mismatch() -> None:
    batch = bytearray(encode_batch(RECORDS))
    batch[-1] ^= 0x01
    _expect(ErrorCode.corrupt_message, bytes(batch))


@pytest.mark.parametrize("records_count", [0, -5])
def test_validate_rejects_non_positive_records_count(records_count: int) -> None:
    batch = bytearray(encode_batch(RECORDS))
    struct.pack_into(">i", batch, 57, records_count)
    _expect(ErrorCode.invalid_record, _reseal(batch))


def test_validate_rejects_last_offset_delta_mismatch() -> None:
    batch = bytearray(encode_batch(RECORDS))
    struct.pack_into(">i", batch, 23, 5)
    _expect(ErrorCode.invalid_record, _reseal(batch))


def test_validate_rejects_records_count_that_cannot_fit() -> None:
    batch = bytearray(encode_batch(RECORDS))
    payload = len(batch) - BATCH_HEADER_SIZE
    count = payload // 7 + 1
    struct.pack_into(">i", batch, 57, count)
    struct.pack_into(">i", batch, 23, count - 1)
    _expect(ErrorCode.corrupt_message, _reseal(batch))


def test_validate_bounds_records_count_of_compressed_batches() -> None:
    batch = bytearray(encode_batch(RECORDS, compression=COMPRESSION_ZSTD))
    payload = len(batch) - BATCH_HEADER_SIZE
    # Far more than 7-byte records would allow uncompressed, but plausible compressed.
    struct.pack_into(">i", batch, 57, payload)
    struct.pack_into(">i", batch, 23, payload - 1)
    assert validate_batches(_reseal(batch), MAX)
    count = payload * 1024 + 1
    struct.pack_into(">i", batch, 57, count)
    struct.pack_into(">i", batch, 23, count - 1)
    _expect(ErrorCode.corrupt_message, _reseal(batch))


def test_validate_rejects_control_batches() -> None:
    _expect(ErrorCode.invalid_record, encode_batch(RECORDS, is_control=True))


def test_validate_reports_the_first_bad_batch_after_good_ones() -> None:
    good = encode_batch(RECORDS)
    bad = bytearray(good)
    bad[-3] ^= 0xFF
    _expect(ErrorCode.corrupt_message, good + bytes(bad))


# -- assign_offsets --------------------------------------------------------------------------


def test_assign_offsets_patches_each_batch_and_keeps_crcs() -> None:
    batches = [
        encode_batch(RECORDS, base_offset=0),
        encode_batch(RECORDS[:1], compression=COMPRESSION_GZIP),
        encode_batch(RECORDS[:2], base_offset=77, partition_leader_epoch=9),
    ]
    records = b"".join(batches)
    headers = validate_batches(records, MAX)
    patched = assign_offsets(memoryview(records), headers, 1000)
    assert isinstance(patched, bytearray)
    assert len(patched) == len(records)
    positions_and_headers = list(iter_batch_headers(patched))
    assert [(p, h.base_offset) for p, h in positions_and_headers] == [
        (0, 1000),
        (len(batches[0]), 1003),
        (len(batches[0]) + len(batches[1]), 1004),
    ]
    # The leader epoch stays as sent unless the caller overrides it.
    assert [h.partition_leader_epoch for _, h in positions_and_headers] == [-1, -1, 9]
    assert all(crc_is_valid(patched, p, h) for p, h in positions_and_headers)
    assert validate_batches(bytes(patched), MAX)
    assert records == b"".join(batches), "the input is never modified"


def test_assign_offsets_sets_partition_leader_epoch() -> None:
    records = encode_batch(RECORDS) + encode_batch(RECORDS)
    headers = validate_batches(records, MAX)
    patched = assign_offsets(records, headers, 5, partition_leader_epoch=42)
    assert [h.partition_leader_epoch for _, h in iter_batch_headers(patched)] == [42, 42]
    assert [h.base_offset for _, h in iter_batch_headers(patched)] == [5, 8]
    validate_batches(bytes(patched), MAX)


# -- iter_batch_headers / crc_is_valid -------------------------------------------------------


def test_iter_batch_headers_stops_at_a_torn_tail() -> None:
    first = encode_batch(RECORDS)
    second = encode_batch(RECORDS[:1], base_offset=3)
    log = first + second
    assert [p for p, _ in iter_batch_headers(log)] == [0, len(first)]
    for cut in (1, 30, 61, len(second) - 1):
        assert [p for p, _ in iter_batch_headers(log[: len(log) - cut])] == [0]
    assert list(iter_batch_headers(b"")) == []
    assert [p for p, _ in iter_batch_headers(b"\x00" * 5 + log, 5)] == [5, 5 + len(first)]


def test_iter_batch_headers_stops_at_garbage_length_or_magic() -> None:
    first = encode_batch(RECORDS)
    garbled = bytearray(first)
    struct.pack_into(">i", garbled, 8, -100)
    assert [p for p, _ in iter_batch_headers(first + bytes(garbled) + first)] == [0]
    garbled = bytearray(first)
    garbled[16] = 1
    assert [p for p, _ in iter_batch_headers(first + bytes(garbled))] == [0]


def test_crc_is_valid_detects_damage_and_bad_lengths() -> None:
    batch = bytearray(encode_batch(RECORDS))
    header = read_batch_header(batch)
    assert crc_is_valid(batch, 0, header)
    batch[30] ^= 0x40
    assert not crc_is_valid(batch, 0, header)
    assert not crc_is_valid(batch[:-1], 0, header)


# -- records ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", CODECS)
def test_decode_records_round_trip(compression: int) -> None:
    batch = encode_batch(RECORDS, base_offset=50, compression=compression)
    decoded = decode_records(batch)
    assert decoded == [
        Record(key=r.key, value=r.value, headers=r.headers, timestamp=r.timestamp, offset=50 + i)
        for i, r in enumerate(RECORDS)
    ]


def test_decode_records_uses_max_timestamp_for_log_append_time() -> None:
    batch = encode_batch(RECORDS, timestamp_type=TIMESTAMP_LOG_APPEND_TIME)
    assert {record.timestamp for record in decode_records(batch)} == {1005}


def test_encode_batch_defaults() -> None:
    batch = encode_batch([Record(key=None, value=b"x")], base_timestamp=123)
    header = read_batch_header(batch)
    assert (header.base_timestamp, header.max_timestamp) == (123, 123)
    assert decode_records(batch)[0].timestamp == 123
    assert read_batch_header(encode_batch([Record(key=None, value=b"x")])).base_timestamp == 0
    with pytest.raises(ValueError, match="at least one record"):
        encode_batch([])


def test_encode_batch_keeps_explicit_offsets() -> None:
    batch = encode_batch(
        [Record(key=b"a", value=b"1", offset=10), Record(key=b"b", value=b"2", offset=14)],
        base_offset=10,
    )
    header = read_batch_header(batch)
    assert header.last_offset_delta == 4
    assert [record.offset for record in decode_records(batch)] == [10, 14]


def test_decode_snappy_xerial_framing() -> None:
    import cramjam

    body_batch = encode_batch(RECORDS)
    body = body_batch[BATCH_HEADER_SIZE:]
    # The Java client's SnappyOutputStream: magic, version 1, compatible version 1, blocks.
    blocks = [
        bytes(cramjam.snappy.compress_raw(body[:40])),
        bytes(cramjam.snappy.compress_raw(body[40:])),
    ]
    framed = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    framed += b"".join(struct.pack(">i", len(block)) + block for block in blocks)
    batch = bytearray(body_batch[:BATCH_HEADER_SIZE] + framed)
    struct.pack_into(">i", batch, 8, len(batch) - LOG_OVERHEAD)
    struct.pack_into(">h", batch, 21, COMPRESSION_SNAPPY)
    sealed = _reseal(batch)
    assert validate_batches(sealed, MAX)
    assert [r.value for r in decode_records(sealed)] == [r.value for r in RECORDS]


def test_decode_records_rejects_garbage_payloads() -> None:
    batch = bytearray(encode_batch(RECORDS, compression=COMPRESSION_GZIP))
    batch[BATCH_HEADER_SIZE + 5 :] = b"\x00" * (len(batch) - BATCH_HEADER_SIZE - 5)
    with pytest.raises(InvalidRecords):
        decode_records(bytes(batch))
    plain = bytearray(encode_batch(RECORDS))
    plain += b"\x00"
    struct.pack_into(">i", plain, 8, len(plain) - LOG_OVERHEAD)
    with pytest.raises(InvalidRecords, match="left after"):
        decode_records(bytes(plain))


def test_decode_batches_reads_every_batch() -> None:
    log = encode_batch(RECORDS, base_offset=0) + encode_batch(
        RECORDS[:1], base_offset=3, compression=COMPRESSION_SNAPPY
    )
    decoded = decode_batches(log + b"\x00\x01")
    assert [(h.base_offset, len(records)) for h, records in decoded] == [(0, 3), (3, 1)]
    assert decoded[1][1][0].offset == 3


records_strategy = st.lists(
    st.builds(
        Record,
        key=st.none() | st.binary(max_size=40),
        value=st.none() | st.binary(max_size=200),
        headers=st.lists(
            st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=20)), max_size=3
        ).map(tuple),
        timestamp=st.none() | st.integers(min_value=0, max_value=2**41),
    ),
    min_size=1,
    max_size=20,
)


@given(
    records=records_strategy,
    compression=st.sampled_from(CODECS),
    base_offset=st.integers(min_value=0, max_value=2**40),
)
def test_round_trip_property(records: list[Record], compression: int, base_offset: int) -> None:
    batch = encode_batch(records, compression=compression, base_timestamp=1_700_000_000_000)
    headers = validate_batches(batch, MAX)
    patched = assign_offsets(batch, headers, base_offset)
    decoded = decode_records(patched)
    assert [(r.key, r.value, r.headers) for r in decoded] == [
        (r.key, r.value, r.headers) for r in records
    ]
    assert [r.offset for r in decoded] == list(range(base_offset, base_offset + len(records)))
    assert [r.timestamp for r in decoded] == [
        1_700_000_000_000 if r.timestamp is None else r.timestamp for r in records
    ]


# -- recompression (topic compression.type) -------------------------------------------------


@pytest.mark.parametrize("source", CODECS)
@pytest.mark.parametrize("target", CODECS)
def test_recompress_keeps_records_and_producer_fields(source: int, target: int) -> None:
    records = [
        Record(key=b"k%d" % i, value=b"v" * i, headers=(("h", b"%d" % i),), timestamp=1000 + i)
        for i in range(20)
    ]
    batch = encode_batch(
        records,
        compression=source,
        producer_id=7,
        producer_epoch=3,
        base_sequence=40,
        is_transactional=True,
    )
    headers = validate_batches(batch, 1 << 20)
    rewritten, new_headers = recompress_batches(batch, headers, target, None, 1 << 20)
    (header,) = validate_batches(rewritten, 1 << 20)  # a valid batch, CRC included
    assert new_headers == [header]
    assert header.compression == target
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (7, 3, 40)
    assert header.is_transactional
    assert header.records_count == 20
    assert header.last_offset_delta == 19
    assert (header.base_timestamp, header.max_timestamp) == (1000, 1019)
    assert decode_records(rewritten) == decode_records(batch)
    if source == target:
        assert rewritten == batch


def test_recompress_honours_the_level() -> None:
    records = [Record(key=None, value=(b"abcdefgh%d" % i) * 50) for i in range(50)]
    batch = encode_batch(records)
    headers = validate_batches(batch, 1 << 20)
    fast, _ = recompress_batches(batch, headers, COMPRESSION_GZIP, 1, 1 << 20)
    best, _ = recompress_batches(batch, headers, COMPRESSION_GZIP, 9, 1 << 20)
    assert len(best) < len(fast)
    assert decode_records(fast) == decode_records(best) == decode_records(batch)


def test_recompress_checks_the_size_after_recompression() -> None:
    batch = encode_batch([Record(key=None, value=bytes(5000))], compression=COMPRESSION_ZSTD)
    headers = validate_batches(batch, 1000)
    with pytest.raises(InvalidRecords) as raised:
        recompress_batches(batch, headers, COMPRESSION_NONE, None, 1000)
    assert raised.value.error_code == ErrorCode.message_too_large


def test_recompress_refuses_inner_offsets_out_of_order() -> None:
    records = [Record(key=None, value=b"a", offset=0), Record(key=None, value=b"b", offset=2)]
    batch = encode_batch(records, compression=COMPRESSION_GZIP)
    # Inner offset deltas 0 and 2; the header is patched to say 0..1 so it passes validation.
    patched = bytearray(batch)
    struct.pack_into(">i", patched, 23, 1)
    struct.pack_into(">I", patched, 17, crc32c.crc32c(bytes(patched[21:])))
    headers = validate_batches(bytes(patched), 1 << 20)
    with pytest.raises(InvalidRecords) as raised:
        recompress_batches(bytes(patched), headers, COMPRESSION_ZSTD, None, 1 << 20)
    assert raised.value.error_code == ErrorCode.invalid_record


def test_recompress_refuses_garbage_that_does_not_decompress() -> None:
    batch = bytearray(
        encode_batch([Record(key=None, value=b"x" * 100)], compression=COMPRESSION_LZ4)
    )
    batch[BATCH_HEADER_SIZE:] = b"\x00" * (len(batch) - BATCH_HEADER_SIZE)
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    headers = validate_batches(bytes(batch), 1 << 20)
    with pytest.raises(InvalidRecords) as raised:
        recompress_batches(bytes(batch), headers, COMPRESSION_ZSTD, None, 1 << 20)
    assert raised.value.error_code == ErrorCode.corrupt_message


# -- record summaries and compacted-topic key checks -----------------------------------------


@given(
    compression=st.sampled_from(CODECS),
    items=st.lists(
        st.tuples(
            st.none() | st.binary(max_size=20),
            st.none() | st.binary(max_size=40),
            st.integers(min_value=0, max_value=10_000),
        ),
        min_size=1,
        max_size=20,
    ),
)
def test_record_summaries_agree_with_decode_records(
    compression: int, items: list[tuple[bytes | None, bytes | None, int]]
) -> None:
    records = [Record(key=key, value=value, timestamp=ts) for key, value, ts in items]
    batch = encode_batch(records, base_offset=7, compression=compression)
    summaries = record_summaries(batch)
    decoded = decode_records(batch)
    assert [(s.offset, s.timestamp, s.has_key) for s in summaries] == [
        (r.offset, r.timestamp, r.key is not None) for r in decoded
    ]


def test_record_summaries_reject_garbage_and_use_log_append_time() -> None:
    batch = bytearray(encode_batch(RECORDS, compression=COMPRESSION_GZIP))
    batch[BATCH_HEADER_SIZE + 5 :] = b"\x00" * (len(batch) - BATCH_HEADER_SIZE - 5)
    with pytest.raises(InvalidRecords) as raised:
        record_summaries(bytes(batch))
    assert raised.value.error_code == ErrorCode.corrupt_message
    appended = encode_batch(RECORDS, timestamp_type=TIMESTAMP_LOG_APPEND_TIME)
    assert {summary.timestamp for summary in record_summaries(appended)} == {1005}


def test_validate_keys_for_compaction_lists_every_keyless_record() -> None:
    keyed = encode_batch([Record(key=b"", value=b"empty key is a key"), Record(b"k", None)])
    validate_keys_for_compaction(keyed, [read_batch_header(keyed)], "t-0")
    mixed = encode_batch(
        [Record(key=None if i in (1, 4, 5, 9) else b"k", value=b"v") for i in range(10)],
        compression=COMPRESSION_ZSTD,
    )
    with pytest.raises(InvalidRecords) as raised:
        validate_keys_for_compaction(mixed, [read_batch_header(mixed)], "t-0")
    assert raised.value.error_code == ErrorCode.invalid_record
    assert [index for index, _ in raised.value.record_errors] == [1, 4, 5, 9]
    message = "Compacted topic cannot accept message without key in topic partition t-0."
    assert {text for _, text in raised.value.record_errors} == {message}
    assert str(raised.value) == (
        "One or more records have been rejected due to 4 record errors in total, and only "
        "showing the first three errors at most: ["
        + ", ".join(f"RecordError(batchIndex={i}, message='{message}')" for i in (1, 4, 5))
        + "]"
    )
