"""Just enough of the record batch v2 header for the storage layer's own loops.

The log walks batch headers in memory on every read and validates every batch on recovery;
those loops unpack the few fields they need with one precompiled `struct` call and never build
a header object (`odradek.protocol.record_batch.BatchHeader` is for batches arriving through
`PartitionLog.append`, already parsed by the protocol layer).
"""

from __future__ import annotations

import struct

import crc32c

from odradek.protocol.record_batch import BATCH_HEADER_SIZE, LOG_OVERHEAD, MAGIC, BatchHeader

__all__ = ["BATCH_HEADER_SIZE", "LOG_OVERHEAD", "MAGIC", "BatchHeader"]

TIMESTAMP_TYPE_MASK = 0x08  # attributes bit 3: 0 = CreateTime, 1 = LogAppendTime

# base offset, batch length, partition leader epoch, magic, crc, attributes, last offset delta
BATCH_PREFIX = struct.Struct(">qiibIhi")
BATCH_PREFIX_SIZE = BATCH_PREFIX.size  # 27
BASE_OFFSET_AND_LENGTH = struct.Struct(">qi")
INT64 = struct.Struct(">q")
INT16 = struct.Struct(">h")
UINT32 = struct.Struct(">I")

CRC_POSITION = 17
ATTRIBUTES_POSITION = 21
MAX_TIMESTAMP_POSITION = 35


def batch_crc(buffer: bytes | bytearray | memoryview, position: int, size: int) -> int:
    """CRC32C over attributes..end of the batch at `position`, as stored in the header."""
    with memoryview(buffer) as view:
        return int(crc32c.crc32c(view[position + ATTRIBUTES_POSITION : position + size]))


def set_log_append_time(
    buffer: bytearray, headers: list[BatchHeader], log_append_time_ms: int
) -> None:
    """Stamp every batch with LogAppendTime, as Kafka's LogValidator does.

    Sets the timestamp-type attribute bit and the max timestamp (the time consumers report for
    every record of such a batch), both covered by the CRC, which is recomputed.
    """
    position = 0
    for header in headers:
        size = header.batch_length + LOG_OVERHEAD
        (attributes,) = INT16.unpack_from(buffer, position + ATTRIBUTES_POSITION)
        INT16.pack_into(buffer, position + ATTRIBUTES_POSITION, attributes | TIMESTAMP_TYPE_MASK)
        INT64.pack_into(buffer, position + MAX_TIMESTAMP_POSITION, log_append_time_ms)
        UINT32.pack_into(buffer, position + CRC_POSITION, batch_crc(buffer, position, size))
        position += size
