"""Record batch v2 (magic 2): a view over the 61-byte header, validation, offset patching.

The broker's hot path never decodes individual records: `validate_batches` checks a produce
request's batches (header, sizes, CRC32C), `assign_offsets` patches base offsets in one copy,
and storage appends the raw bytes. `encode_batch` / `decode_records` are tools for tests,
benchmarks, coordinators and the checker.

Layout (big-endian), offsets into a batch:
  0 base_offset i64 | 8 batch_length i32 | 12 partition_leader_epoch i32 | 16 magic i8
  17 crc u32 (CRC32C of bytes 21..end) | 21 attributes i16 | 23 last_offset_delta i32
  27 base_timestamp i64 | 35 max_timestamp i64 | 43 producer_id i64 | 51 producer_epoch i16
  55 base_sequence i32 | 57 records_count i32 | 61 records...

A record inside the (possibly compressed) records section:
  length varint | attributes i8 | timestamp_delta varlong | offset_delta varint
  key_length varint | key | value_length varint | value
  headers_count varint | (header_key_length varint | header_key | header_value_length varint
  | header_value) * headers_count            -- a length of -1 means null
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import cramjam
import crc32c
from kio.schema.errors import ErrorCode

__all__ = [
    "BATCH_HEADER_SIZE",
    "COMPRESSION_GZIP",
    "COMPRESSION_LZ4",
    "COMPRESSION_NONE",
    "COMPRESSION_SNAPPY",
    "COMPRESSION_ZSTD",
    "LOG_OVERHEAD",
    "MAGIC",
    "TIMESTAMP_CREATE_TIME",
    "TIMESTAMP_LOG_APPEND_TIME",
    "BatchHeader",
    "InvalidRecords",
    "Record",
    "RecordSummary",
    "assign_offsets",
    "check_produce_records",
    "crc_is_valid",
    "decode_batches",
    "decode_records",
    "decode_varint",
    "encode_batch",
    "encode_varint",
    "iter_batch_headers",
    "read_batch_header",
    "recompress_batches",
    "record_summaries",
    "validate_batches",
    "validate_keys_for_compaction",
]

BATCH_HEADER_SIZE: Final = 61
LOG_OVERHEAD: Final = 12
MAGIC: Final = 2

COMPRESSION_NONE: Final = 0
COMPRESSION_GZIP: Final = 1
COMPRESSION_SNAPPY: Final = 2
COMPRESSION_LZ4: Final = 3
COMPRESSION_ZSTD: Final = 4

TIMESTAMP_CREATE_TIME: Final = 0
TIMESTAMP_LOG_APPEND_TIME: Final = 1

_COMPRESSION_MASK: Final = 0x07
_TIMESTAMP_TYPE_FLAG: Final = 0x08
_LONG_MAX: Final = 2**63 - 1
_TRANSACTIONAL_FLAG: Final = 0x10
_CONTROL_FLAG: Final = 0x20

_BASE_OFFSET_POSITION: Final = 0
_PARTITION_LEADER_EPOCH_POSITION: Final = 12
_MAGIC_POSITION: Final = 16
_CRC_POSITION: Final = 17
# The CRC covers everything from the attributes to the end of the batch, so the broker can
# patch base_offset and partition_leader_epoch without recomputing it.
_CRC_START: Final = 21
# batch_length counts the bytes after the batch_length field: a batch without records is
# 61 - 12 = 49 bytes long.
_MIN_BATCH_LENGTH: Final = BATCH_HEADER_SIZE - LOG_OVERHEAD
# length, attributes, timestamp_delta, offset_delta, key_length, value_length and
# headers_count each take at least one byte.
_MIN_RECORD_SIZE: Final = 7
# A compressed batch can hold more records than its size suggests, but not without bound:
# every record is at least 7 bytes uncompressed, and deflate's ratio is capped near 1032:1,
# LZ4's near 255:1 and snappy's near 32:1. 1024 records per compressed byte is a ratio of
# 7168:1 — far above anything those codecs produce, and above what zstd reaches on real
# records (offset deltas differ, so records never repeat byte for byte) — while still
# rejecting a records_count that would let one small batch claim billions of offsets.
_MAX_RECORDS_PER_COMPRESSED_BYTE: Final = 1024

_HEADER: Final = struct.Struct(">qiibIhiqqqhii")
_INT64: Final = struct.Struct(">q")
_INT32: Final = struct.Struct(">i")
_UINT32: Final = struct.Struct(">I")
_MAGIC_BYTE: Final = struct.Struct(">b")

_XERIAL_SNAPPY_MAGIC: Final = b"\x82SNAPPY\x00"
# magic (8 bytes) + version (4 bytes) + minimum compatible version (4 bytes)
_XERIAL_SNAPPY_HEADER_SIZE: Final = 16

assert _HEADER.size == BATCH_HEADER_SIZE

Buffer = bytes | bytearray | memoryview


class InvalidRecords(Exception):  # noqa: N818 -- the name the broker and storage import
    """A batch failed validation; `error_code` is what the produce response carries.

    `record_errors` lists (index of the record in its batch, message) for the records at
    fault, as Produce v8+ reports them (KIP-467); empty when the batch as a whole is bad.
    """

    def __init__(
        self,
        error_code: ErrorCode,
        message: str,
        record_errors: Sequence[tuple[int, str | None]] = (),
    ) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.record_errors = tuple(record_errors)


@dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def compression(self) -> int:
        return self.attributes & _COMPRESSION_MASK

    @property
    def timestamp_type(self) -> int:
        return TIMESTAMP_LOG_APPEND_TIME if self.attributes & _TIMESTAMP_TYPE_FLAG else 0

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL_FLAG)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL_FLAG)

    @property
    def size(self) -> int:
        """Bytes the whole batch takes, including base_offset and batch_length."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def record_count(self) -> int:
        return self.records_count

    @property
    def last_sequence(self) -> int:
        """Sequence of the last record; -1 when the producer is not idempotent."""
        if self.base_sequence < 0:
            return -1
        # Sequences wrap at 2**31 in Kafka (DefaultRecordBatch.incrementSequence).
        return (self.base_sequence + self.last_offset_delta) % 2**31


def read_batch_header(buffer: Buffer, position: int = 0) -> BatchHeader:
    if position < 0 or len(buffer) - position < BATCH_HEADER_SIZE:
        raise InvalidRecords(
            ErrorCode.corrupt_message,
            f"need {BATCH_HEADER_SIZE} bytes for a batch header at {position}, "
            f"have {max(0, len(buffer) - position)}",
        )
    return BatchHeader(*_HEADER.unpack_from(buffer, position))


def crc_is_valid(buffer: Buffer, position: int, header: BatchHeader) -> bool:
    end = position + header.size
    if header.batch_length < _MIN_BATCH_LENGTH or end > len(buffer):
        return False
    view = memoryview(buffer)
    return bool(crc32c.crc32c(view[position + _CRC_START : end]) == header.crc)


# The smallest message of any format (a v0 message: crc, magic, attributes, key and value
# lengths); Kafka's ByteBufferLogInputStream refuses a shorter length before looking further.
_LEGACY_RECORD_OVERHEAD_V0: Final = 14
#: Produce v7 is the first that may carry zstd batches (KIP-110).
_FIRST_ZSTD_PRODUCE_VERSION: Final = 7


def _complete_batch_size(view: memoryview, position: int) -> int | None:
    """The size of the complete batch at `position`, or None when the bytes there do not hold
    one: Kafka's ByteBufferLogInputStream.nextBatch, whose batch iterator simply ends at a
    partial batch. Raises InvalidRecords (CORRUPT_MESSAGE) for a length below any message
    format's minimum or a magic no format has (its CorruptRecordException)."""
    remaining = len(view) - position
    if remaining < LOG_OVERHEAD:
        return None
    (batch_length,) = _INT32.unpack_from(view, position + 8)
    if batch_length < _LEGACY_RECORD_OVERHEAD_V0:
        raise InvalidRecords(
            ErrorCode.corrupt_message,
            f"Record size {batch_length} is less than the minimum record overhead "
            f"({_LEGACY_RECORD_OVERHEAD_V0})",
        )
    if remaining < _MAGIC_POSITION + 1:
        return None
    (magic,) = _MAGIC_BYTE.unpack_from(view, position + _MAGIC_POSITION)
    if not 0 <= magic <= MAGIC:
        raise InvalidRecords(ErrorCode.corrupt_message, f"Invalid magic found in record: {magic}")
    size: int = batch_length + LOG_OVERHEAD
    return size if remaining >= size else None


def check_produce_records(records: bytes | memoryview, api_version: int) -> int:
    """The shape a Produce v3+ request's records must have, as Kafka's
    ProduceRequest.validateRecords checks it: one complete batch, of magic 2, and no second
    complete batch after it. Returns the size of that batch in bytes; bytes after it that do
    not make a complete batch are not an error (Kafka's UnifiedLog trims them, trimInvalidBytes).

    Raises InvalidRecords: INVALID_RECORD for no complete batch (empty or truncated records),
    a batch of magic 0 or 1, or two batches; UNSUPPORTED_COMPRESSION_TYPE for zstd before
    Produce v7; CORRUPT_MESSAGE for a length or magic no message format has.
    """
    view = memoryview(records)
    size = _complete_batch_size(view, 0)
    if size is None:
        raise InvalidRecords(
            ErrorCode.invalid_record,
            f"Produce requests with version {api_version} must have at least one record batch "
            "per partition",
        )
    if view[_MAGIC_POSITION] != MAGIC:
        raise InvalidRecords(
            ErrorCode.invalid_record,
            f"Produce requests with version {api_version} are only allowed to contain record "
            "batches with magic version 2",
        )
    # The codec is in the low byte of the attributes (bytes 21-22); a complete batch is at least
    # 26 bytes long, so the byte is there.
    if (
        api_version < _FIRST_ZSTD_PRODUCE_VERSION
        and view[_CRC_START + 1] & _COMPRESSION_MASK == COMPRESSION_ZSTD
    ):
        raise InvalidRecords(
            ErrorCode.unsupported_compression_type,
            f"Produce requests with version {api_version} are not allowed to use ZStandard "
            "compression",
        )
    if _complete_batch_size(view, size) is not None:
        raise InvalidRecords(
            ErrorCode.invalid_record,
            f"Produce requests with version {api_version} are only allowed to contain exactly "
            "one record batch per partition",
        )
    return size


def validate_batches(records: bytes | memoryview, max_message_bytes: int) -> list[BatchHeader]:
    """Check a produce request's records field: complete v2 batches, sane sizes, valid CRCs.

    Raises InvalidRecords with the error code Kafka would answer for the first bad batch.
    """
    view = memoryview(records)
    end = len(view)
    if end == 0:
        # Kafka's ProduceRequest.validateRecords: INVALID_RECORD, which clients do not retry
        # (CORRUPT_MESSAGE is retriable: an empty produce would be resent forever).
        raise InvalidRecords(
            ErrorCode.invalid_record,
            "Produce requests must have at least one record batch per partition",
        )
    unpack_header = _HEADER.unpack_from
    headers: list[BatchHeader] = []
    position = 0
    while position < end:
        remaining = end - position
        # magic sits at byte 16 in every message format (v0/v1 too), so an old client is told
        # its format is unsupported rather than that its bytes are corrupt.
        if remaining > _MAGIC_POSITION:
            magic = view[position + _MAGIC_POSITION]
            if magic in (0, 1):
                raise InvalidRecords(
                    ErrorCode.unsupported_for_message_format,
                    f"message format v{magic} is not supported, only record batch v2",
                )
            if magic != MAGIC:
                raise InvalidRecords(ErrorCode.corrupt_message, f"unknown magic {magic}")
        if remaining < BATCH_HEADER_SIZE:
            raise InvalidRecords(
                ErrorCode.corrupt_message,
                f"truncated batch at {position}: {remaining} bytes, header needs 61",
            )
        header = BatchHeader(*unpack_header(view, position))
        batch_length = header.batch_length
        size = batch_length + LOG_OVERHEAD
        if batch_length < _MIN_BATCH_LENGTH or size > remaining:
            raise InvalidRecords(
                ErrorCode.corrupt_message,
                f"batch at {position} has length {batch_length}, {remaining} bytes remain",
            )
        if size > max_message_bytes:
            raise InvalidRecords(
                ErrorCode.message_too_large,
                f"batch of {size} bytes exceeds max.message.bytes {max_message_bytes}",
            )
        if crc32c.crc32c(view[position + _CRC_START : position + size]) != header.crc:
            raise InvalidRecords(ErrorCode.corrupt_message, f"CRC mismatch in batch at {position}")
        records_count = header.records_count
        if records_count <= 0:
            raise InvalidRecords(ErrorCode.invalid_record, f"batch has {records_count} records")
        if header.last_offset_delta != records_count - 1:
            raise InvalidRecords(
                ErrorCode.invalid_record,
                f"last_offset_delta {header.last_offset_delta} does not match "
                f"{records_count} records",
            )
        payload_size = batch_length - _MIN_BATCH_LENGTH
        if header.attributes & _COMPRESSION_MASK == COMPRESSION_NONE:
            if records_count * _MIN_RECORD_SIZE > payload_size:
                raise InvalidRecords(
                    ErrorCode.corrupt_message,
                    f"{records_count} records cannot fit in {payload_size} bytes",
                )
        elif records_count > payload_size * _MAX_RECORDS_PER_COMPRESSED_BYTE:
            raise InvalidRecords(
                ErrorCode.corrupt_message,
                f"{records_count} records cannot fit in {payload_size} compressed bytes",
            )
        if header.attributes & _CONTROL_FLAG:
            # Only the transaction coordinator writes control batches (commit/abort markers).
            raise InvalidRecords(ErrorCode.invalid_record, "producers may not send control batches")
        headers.append(header)
        position += size
    return headers


def assign_offsets(
    records: bytes | memoryview,
    headers: list[BatchHeader],
    base_offset: int,
    partition_leader_epoch: int | None = None,
) -> bytearray:
    """Copy validated batches once and give them consecutive offsets from `base_offset`.

    base_offset and partition_leader_epoch sit before the CRC'd range, so the CRC stays valid.
    """
    patched = bytearray(records)
    pack_int64 = _INT64.pack_into
    pack_int32 = _INT32.pack_into
    position = 0
    next_offset = base_offset
    for header in headers:
        pack_int64(patched, position + _BASE_OFFSET_POSITION, next_offset)
        if partition_leader_epoch is not None:
            pack_int32(patched, position + _PARTITION_LEADER_EPOCH_POSITION, partition_leader_epoch)
        next_offset += header.last_offset_delta + 1
        position += header.batch_length + LOG_OVERHEAD
    return patched


def offset_patched_parts(
    records: bytes | memoryview,
    headers: list[BatchHeader],
    base_offset: int,
    partition_leader_epoch: int | None = None,
) -> list[bytes | memoryview]:
    """`assign_offsets` without the copy: the batches as buffers for one `os.writev`.

    Each batch becomes its new base offset, then (with an epoch) the length field and the new
    partition leader epoch, then the rest of the batch as a view into `records`.
    """
    view = memoryview(records)
    parts: list[bytes | memoryview] = []
    position = 0
    next_offset = base_offset
    for header in headers:
        end = position + header.batch_length + LOG_OVERHEAD
        parts.append(_INT64.pack(next_offset))
        if partition_leader_epoch is None:
            parts.append(view[position + _BASE_OFFSET_POSITION + 8 : end])
        else:
            parts.append(view[position + 8 : position + _PARTITION_LEADER_EPOCH_POSITION])
            parts.append(_INT32.pack(partition_leader_epoch))
            parts.append(view[position + _PARTITION_LEADER_EPOCH_POSITION + 4 : end])
        next_offset += header.last_offset_delta + 1
        position = end
    return parts


def iter_batch_headers(buffer: Buffer, position: int = 0) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) for each complete batch; stop at a truncated or garbled tail.

    CRCs are not checked here: callers that must not trust the bytes use `crc_is_valid`.
    """
    end = len(buffer)
    unpack_header = _HEADER.unpack_from
    while end - position >= BATCH_HEADER_SIZE:
        header = BatchHeader(*unpack_header(buffer, position))
        if (
            header.magic != MAGIC
            or header.batch_length < _MIN_BATCH_LENGTH
            or position + header.batch_length + LOG_OVERHEAD > end
        ):
            return
        yield position, header
        position += header.batch_length + LOG_OVERHEAD


# -- varints (zigzag, as in protobuf and Kafka's ByteUtils) ---------------------------------


def encode_varint(value: int) -> bytes:
    """Zigzag-encode a signed 64-bit integer (Kafka's varint and varlong)."""
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{value} does not fit in 64 bits")
    unsigned = ((value << 1) ^ (value >> 63)) & 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while unsigned >= 0x80:
        out.append((unsigned & 0x7F) | 0x80)
        unsigned >>= 7
    out.append(unsigned)
    return bytes(out)


def decode_varint(buffer: Buffer, position: int, max_bytes: int = 10) -> tuple[int, int]:
    """Read a zigzag varint; return (value, position after it).

    `max_bytes` is 5 for Kafka's varint (int32) and 10 for varlong (int64).
    """
    unsigned = 0
    shift = 0
    for index in range(max_bytes):
        try:
            byte = buffer[position + index]
        except IndexError:
            raise InvalidRecords(ErrorCode.corrupt_message, "truncated varint") from None
        unsigned |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (unsigned >> 1) ^ -(unsigned & 1), position + index + 1
        shift += 7
    raise InvalidRecords(ErrorCode.corrupt_message, f"varint longer than {max_bytes} bytes")


# -- records: tools, tests and benchmarks, not the hot path ---------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: int | None = None
    offset: int = -1


def _encode_bytes(out: bytearray, value: bytes | None) -> None:
    if value is None:
        out += encode_varint(-1)
    else:
        out += encode_varint(len(value))
        out += value


def _encode_record(record: Record, timestamp_delta: int, offset_delta: int) -> bytes:
    body = bytearray(b"\x00")  # attributes: unused by Kafka, always 0
    body += encode_varint(timestamp_delta)
    body += encode_varint(offset_delta)
    _encode_bytes(body, record.key)
    _encode_bytes(body, record.value)
    body += encode_varint(len(record.headers))
    for header_key, header_value in record.headers:
        _encode_bytes(body, header_key.encode())
        _encode_bytes(body, header_value)
    return encode_varint(len(body)) + bytes(body)


def _compress(data: bytes | memoryview, compression: int, level: int | None = None) -> bytes:
    """Compress a records section; `level` None is the codec's default (snappy has none)."""
    if compression == COMPRESSION_NONE:
        return bytes(data)
    if compression == COMPRESSION_GZIP:
        return bytes(cramjam.gzip.compress(data, level=level))
    if compression == COMPRESSION_SNAPPY:
        # Raw snappy: every client accepts it, and it is smaller than xerial framing.
        return bytes(cramjam.snappy.compress_raw(data))
    if compression == COMPRESSION_LZ4:
        # The LZ4 frame format, as Kafka's KafkaLZ4BlockOutputStream writes it.
        return bytes(cramjam.lz4.compress(data, level=level))
    if compression == COMPRESSION_ZSTD:
        return bytes(cramjam.zstd.compress(data, level=level))
    raise ValueError(f"unknown compression type {compression}")


def _decompress_snappy(data: bytes | memoryview) -> bytes:
    # The Java client frames snappy the xerial way (SnappyOutputStream): a 16-byte header,
    # then blocks of (int32 compressed length, raw snappy block). Others send raw snappy.
    if bytes(data[: len(_XERIAL_SNAPPY_MAGIC)]) != _XERIAL_SNAPPY_MAGIC:
        return bytes(cramjam.snappy.decompress_raw(data))
    out = bytearray()
    position = _XERIAL_SNAPPY_HEADER_SIZE
    end = len(data)
    while position < end:
        if end - position < 4:
            raise InvalidRecords(ErrorCode.corrupt_message, "truncated xerial snappy block")
        (block_size,) = _INT32.unpack_from(data, position)
        position += 4
        if block_size < 0 or position + block_size > end:
            raise InvalidRecords(ErrorCode.corrupt_message, "bad xerial snappy block length")
        out += bytes(cramjam.snappy.decompress_raw(data[position : position + block_size]))
        position += block_size
    return bytes(out)


def _decompress(data: memoryview, compression: int) -> bytes | memoryview:
    if compression == COMPRESSION_NONE:
        return data
    try:
        if compression == COMPRESSION_GZIP:
            return bytes(cramjam.gzip.decompress(data))
        if compression == COMPRESSION_SNAPPY:
            return _decompress_snappy(data)
        if compression == COMPRESSION_LZ4:
            return bytes(cramjam.lz4.decompress(data))
        if compression == COMPRESSION_ZSTD:
            return bytes(cramjam.zstd.decompress(data))
    except cramjam.DecompressionError as error:
        raise InvalidRecords(ErrorCode.corrupt_message, f"cannot decompress: {error}") from None
    raise InvalidRecords(ErrorCode.corrupt_message, f"unknown compression type {compression}")


def _check_record_framing(data: bytes | memoryview, header: BatchHeader) -> None:
    """Walk the (uncompressed) records section without building records: every record's
    length must fit, and its offset delta must be its index (Kafka's LogValidator checks the
    inner offsets of a batch it recompresses). Raises InvalidRecords."""
    end = len(data)
    position = 0
    for index in range(header.records_count):
        length, position = decode_varint(data, position, 5)
        record_end = position + length
        if length < _MIN_RECORD_SIZE - 1 or record_end > end:
            raise InvalidRecords(ErrorCode.corrupt_message, f"bad record length {length}")
        _timestamp_delta, after = decode_varint(data, position + 1, 10)
        offset_delta, _after = decode_varint(data, after, 5)
        if offset_delta != index:
            raise InvalidRecords(
                ErrorCode.invalid_record,
                f"record {index} has offset delta {offset_delta}: inner offsets must be "
                "consecutive",
            )
        position = record_end
    if position != end:
        raise InvalidRecords(
            ErrorCode.corrupt_message,
            f"bytes left after the {header.records_count} records the batch header counts",
        )


def recompress_batches(
    records: bytes | memoryview,
    headers: Sequence[BatchHeader],
    compression: int,
    level: int | None,
    max_message_bytes: int,
) -> tuple[bytes, list[BatchHeader]]:
    """Rewrite validated batches whose codec is not `compression` (Kafka's LogValidator for a
    topic whose `compression.type` is not `producer`).

    Each such batch is decompressed, its record framing and inner offsets checked, and its
    records section compressed with `compression` at `level` (KIP-390; None is the codec's
    default). Everything else of the header is kept: producer id, epoch, base sequence, the
    transactional flag, timestamps and the record count, so idempotent dedup and transactions
    work as before. Batches already in `compression` are copied unchanged (Kafka's in-place
    path: the level is not enforced on them). Returns the new records field and its headers.

    Raises InvalidRecords: CORRUPT_MESSAGE for bytes that do not decompress or frame,
    INVALID_RECORD for inner offsets out of order, MESSAGE_TOO_LARGE when a rewritten batch
    exceeds `max_message_bytes` (Kafka checks the size again after recompression).
    """
    view = memoryview(records)
    parts: list[bytes | memoryview] = []
    new_headers: list[BatchHeader] = []
    position = 0
    for header in headers:
        end = position + header.size
        if header.compression == compression:
            parts.append(view[position:end])
            new_headers.append(header)
            position = end
            continue
        data = _decompress(view[position + BATCH_HEADER_SIZE : end], header.compression)
        _check_record_framing(data, header)
        payload = _compress(data, compression, level)
        attributes = (header.attributes & ~_COMPRESSION_MASK) | compression
        batch = bytearray(BATCH_HEADER_SIZE)
        batch += payload
        if len(batch) > max_message_bytes:
            raise InvalidRecords(
                ErrorCode.message_too_large,
                f"batch of {len(batch)} bytes after recompression exceeds max.message.bytes "
                f"{max_message_bytes}",
            )
        _HEADER.pack_into(
            batch,
            0,
            header.base_offset,
            len(batch) - LOG_OVERHEAD,
            header.partition_leader_epoch,
            MAGIC,
            0,
            attributes,
            header.last_offset_delta,
            header.base_timestamp,
            header.max_timestamp,
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            header.records_count,
        )
        crc = crc32c.crc32c(memoryview(batch)[_CRC_START:])
        _UINT32.pack_into(batch, _CRC_POSITION, crc)
        parts.append(bytes(batch))
        new_headers.append(BatchHeader(*_HEADER.unpack_from(batch, 0)))
        position = end
    return b"".join(parts), new_headers


def encode_batch(
    records: Sequence[Record],
    *,
    base_offset: int = 0,
    compression: int = COMPRESSION_NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    is_transactional: bool = False,
    is_control: bool = False,
    partition_leader_epoch: int = -1,
    base_timestamp: int | None = None,
    timestamp_type: int = TIMESTAMP_CREATE_TIME,
) -> bytes:
    """Build one v2 batch. Records without a timestamp get `base_timestamp`.

    `base_timestamp` defaults to the first record's timestamp, else 0: protocol code never
    reads the clock, so callers pass `now` in. A record whose `offset` is set (>= 0) keeps it
    as base_offset + offset_delta, as in a compacted log; otherwise offsets are consecutive.
    """
    if not records:
        raise ValueError("a batch holds at least one record")
    if base_timestamp is None:
        first = records[0].timestamp
        base_timestamp = first if first is not None else 0
    timestamps = [base_timestamp if r.timestamp is None else r.timestamp for r in records]
    offset_deltas = [
        index if record.offset < 0 else record.offset - base_offset
        for index, record in enumerate(records)
    ]
    body = b"".join(
        _encode_record(record, timestamp - base_timestamp, offset_delta)
        for record, timestamp, offset_delta in zip(records, timestamps, offset_deltas, strict=True)
    )
    payload = _compress(body, compression)
    attributes = compression & _COMPRESSION_MASK
    if timestamp_type == TIMESTAMP_LOG_APPEND_TIME:
        attributes |= _TIMESTAMP_TYPE_FLAG
    if is_transactional:
        attributes |= _TRANSACTIONAL_FLAG
    if is_control:
        attributes |= _CONTROL_FLAG
    batch = bytearray(BATCH_HEADER_SIZE)
    batch += payload
    _HEADER.pack_into(
        batch,
        0,
        base_offset,
        len(batch) - LOG_OVERHEAD,
        partition_leader_epoch,
        MAGIC,
        0,
        attributes,
        offset_deltas[-1],
        base_timestamp,
        max(timestamps),
        producer_id,
        producer_epoch,
        base_sequence,
        len(records),
    )
    _UINT32.pack_into(batch, _CRC_POSITION, crc32c.crc32c(memoryview(batch)[_CRC_START:]))
    return bytes(batch)


def _read_bytes(data: bytes | memoryview, position: int) -> tuple[bytes | None, int]:
    length, position = decode_varint(data, position, 5)
    if length < 0:
        if length != -1:
            raise InvalidRecords(ErrorCode.corrupt_message, f"negative length {length}")
        return None, position
    end = position + length
    if end > len(data):
        raise InvalidRecords(ErrorCode.corrupt_message, "field runs past the record")
    return bytes(data[position:end]), end


def _records_payload(batch: bytes | memoryview) -> tuple[BatchHeader, bytes | memoryview]:
    """One batch's header and its records section, decompressed; its magic, length and
    records_count checked against the bytes. Raises InvalidRecords (CORRUPT_MESSAGE)."""
    header = read_batch_header(batch)
    if header.magic != MAGIC:
        raise InvalidRecords(ErrorCode.corrupt_message, f"unknown magic {header.magic}")
    view = memoryview(batch)
    if header.batch_length < _MIN_BATCH_LENGTH or header.size > len(view):
        raise InvalidRecords(ErrorCode.corrupt_message, "batch length exceeds the buffer")
    data = _decompress(view[BATCH_HEADER_SIZE : header.size], header.compression)
    if header.records_count < 0 or header.records_count * _MIN_RECORD_SIZE > len(data):
        raise InvalidRecords(ErrorCode.corrupt_message, "records_count exceeds the payload")
    return header, data


def decode_records(batch: bytes | memoryview) -> list[Record]:
    """Decode every record of one batch (decompressing it). Raises InvalidRecords."""
    header, data = _records_payload(batch)
    log_append_time = header.timestamp_type == TIMESTAMP_LOG_APPEND_TIME
    records: list[Record] = []
    position = 0
    end = len(data)
    for _ in range(header.records_count):
        length, position = decode_varint(data, position, 5)
        record_end = position + length
        if length < _MIN_RECORD_SIZE - 1 or record_end > end:
            raise InvalidRecords(ErrorCode.corrupt_message, f"bad record length {length}")
        position += 1  # attributes
        timestamp_delta, position = decode_varint(data, position, 10)
        offset_delta, position = decode_varint(data, position, 5)
        key, position = _read_bytes(data, position)
        value, position = _read_bytes(data, position)
        headers_count, position = decode_varint(data, position, 5)
        if headers_count < 0 or headers_count * 2 > record_end - position:
            raise InvalidRecords(ErrorCode.corrupt_message, f"bad headers count {headers_count}")
        record_headers: list[tuple[str, bytes | None]] = []
        for _ in range(headers_count):
            header_key, position = _read_bytes(data, position)
            if header_key is None:
                raise InvalidRecords(ErrorCode.corrupt_message, "null header key")
            header_value, position = _read_bytes(data, position)
            try:
                record_headers.append((header_key.decode(), header_value))
            except UnicodeDecodeError:
                raise InvalidRecords(ErrorCode.corrupt_message, "header key is not UTF-8") from None
        if position != record_end:
            raise InvalidRecords(ErrorCode.corrupt_message, "record length does not match fields")
        records.append(
            Record(
                key=key,
                value=value,
                headers=tuple(record_headers),
                # With LogAppendTime the broker's time is max_timestamp, for every record.
                timestamp=header.max_timestamp
                if log_append_time
                else header.base_timestamp + timestamp_delta,
                offset=header.base_offset + offset_delta,
            )
        )
    if position != end:
        raise InvalidRecords(ErrorCode.corrupt_message, "bytes left after the last record")
    return records


def decode_batches(buffer: Buffer) -> list[tuple[BatchHeader, list[Record]]]:
    """Decode every complete batch in `buffer` (a log segment or a fetch response's records)."""
    view = memoryview(buffer)
    return [
        (header, decode_records(view[position : position + header.size]))
        for position, header in iter_batch_headers(view)
    ]


# -- record summaries: ListOffsets and compacted-topic key checks, not the hot path ----------


@dataclass(frozen=True, slots=True)
class RecordSummary:
    """A record's offset, timestamp and whether it has a key; key and value are not copied."""

    offset: int
    timestamp: int
    has_key: bool


def record_summaries(batch: bytes | memoryview) -> list[RecordSummary]:
    """Offset, timestamp and key presence of every record in one batch (decompressing it).

    Lighter than `decode_records`: no key, value or header is copied. With LogAppendTime every
    record's timestamp is the batch's max timestamp, as Kafka's DefaultRecordBatch reports it.
    Raises InvalidRecords (CORRUPT_MESSAGE) when the records do not parse.
    """
    header, data = _records_payload(batch)
    end = len(data)
    log_append_time = header.timestamp_type == TIMESTAMP_LOG_APPEND_TIME
    summaries: list[RecordSummary] = []
    position = 0
    for _ in range(header.records_count):
        length, position = decode_varint(data, position, 5)
        record_end = position + length
        if length < _MIN_RECORD_SIZE - 1 or record_end > end:
            raise InvalidRecords(ErrorCode.corrupt_message, f"bad record length {length}")
        timestamp_delta, field = decode_varint(data, position + 1, 10)  # after attributes
        offset_delta, field = decode_varint(data, field, 5)
        key_length, field = decode_varint(data, field, 5)
        if key_length < -1 or field + max(key_length, 0) > record_end:
            raise InvalidRecords(ErrorCode.corrupt_message, f"bad key length {key_length}")
        summaries.append(
            RecordSummary(
                offset=header.base_offset + offset_delta,
                timestamp=header.max_timestamp
                if log_append_time
                else header.base_timestamp + timestamp_delta,
                has_key=key_length >= 0,
            )
        )
        position = record_end
    if position != end:
        raise InvalidRecords(ErrorCode.corrupt_message, "bytes left after the last record")
    return summaries


def validate_keys_for_compaction(
    records: bytes | memoryview, headers: Sequence[BatchHeader], topic_partition: str
) -> None:
    """Kafka's LogValidator.validateKey for a compacted topic: every record needs a key.

    `records` holds the batches `headers` describe (already through `validate_batches`);
    compressed batches are decompressed to look. Raises InvalidRecords with INVALID_RECORD
    and one record error (index of the record in its batch, message) per keyless record,
    so that nothing of the request is appended (Kafka rejects the whole batch, listing the
    records at fault in Produce v8+ `record_errors`); CORRUPT_MESSAGE when records do not
    parse. `topic_partition` ("topic-0") goes into the messages, as in Kafka's.
    """
    view = memoryview(records)
    message = (
        f"Compacted topic cannot accept message without key in topic partition {topic_partition}."
    )
    record_errors: list[tuple[int, str | None]] = []
    position = 0
    for header in headers:
        batch = view[position : position + header.size]
        position += header.size
        for index, summary in enumerate(record_summaries(batch)):
            if not summary.has_key:
                record_errors.append((index, message))
    if record_errors:
        raise _records_rejected(ErrorCode.invalid_record, record_errors)


def _records_rejected(
    error_code: ErrorCode, record_errors: list[tuple[int, str | None]]
) -> InvalidRecords:
    """Kafka's RecordValidationException for records at fault: its summary message (the
    first three record errors) and every record error for Produce v8+ `record_errors`."""
    shown = ", ".join(
        f"RecordError(batchIndex={index}, message='{text}')" for index, text in record_errors[:3]
    )
    return InvalidRecords(
        error_code,
        f"One or more records have been rejected due to {len(record_errors)} record errors "
        f"in total, and only showing the first three errors at most: [{shown}]",
        record_errors,
    )


#: No timestamp: a record or batch with this timestamp is never out of range (Kafka's
#: RecordBatch.NO_TIMESTAMP).
NO_TIMESTAMP: Final = -1


def validate_timestamps(
    records: bytes | memoryview,
    headers: Sequence[BatchHeader],
    now_ms: int,
    before_max_ms: int,
    after_max_ms: int,
) -> None:
    """Kafka's LogValidator.validateTimestamp for a CreateTime topic (KIP-937's bounds).

    Every record's timestamp must lie within [now_ms - before_max_ms, now_ms + after_max_ms]
    (`message.timestamp.before.max.ms`, `message.timestamp.after.max.ms`; Kafka 4's default for
    the latter is one hour); NO_TIMESTAMP (-1) is always accepted; a producer may not mark its
    batch LogAppendTime. The common case reads only batch headers: the base timestamp and the
    max timestamp bound the records when before_max_ms does not restrict (its default is
    Long.MAX); records are decoded only when a header is outside the range, to name every record
    at fault, or when a finite before_max_ms must be checked record by record.

    Raises InvalidRecords with INVALID_TIMESTAMP and one record error (index of the record in its
    batch, Kafka's message) per record at fault; CORRUPT_MESSAGE when records do not parse.
    """
    lower = now_ms - before_max_ms
    upper = now_ms + after_max_ms
    view = memoryview(records)
    record_errors: list[tuple[int, str | None]] = []
    position = 0
    for header in headers:
        batch = view[position : position + header.size]
        position += header.size
        if header.attributes & _TIMESTAMP_TYPE_FLAG:
            record_errors.extend(
                (
                    index,
                    f"Invalid timestamp type in message with offset {summary.offset}. "
                    "Producer should not set timestamp type to LogAppendTime.",
                )
                for index, summary in enumerate(record_summaries(batch))
            )
            continue
        if (
            before_max_ms >= _LONG_MAX
            and header.max_timestamp <= upper
            and (header.base_timestamp == NO_TIMESTAMP or header.base_timestamp >= lower)
        ):
            continue
        for index, summary in enumerate(record_summaries(batch)):
            timestamp = summary.timestamp
            if timestamp != NO_TIMESTAMP and not lower <= timestamp <= upper:
                record_errors.append(
                    (
                        index,
                        f"Timestamp {timestamp} of message with offset {summary.offset} is out "
                        f"of range. The timestamp should be within [{lower}, {upper}]",
                    )
                )
    if record_errors:
        raise _records_rejected(ErrorCode.invalid_timestamp, record_errors)
