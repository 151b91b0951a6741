"""A hand-written FetchResponse decoder (v13-v17) for the replica fetcher's hot path.

kio decodes a response field by field and copies every partition's records into new `bytes`.
A follower receives megabytes of batches per Fetch, so this reader walks the response once and
returns each partition's records as a `memoryview` into the caller's buffer: no record is
copied or decoded here (the follower validates batch headers when it appends them).

The result reuses `hot_encoders`' dataclasses, so `decode_fetch_response(version,
b"".join(encode_fetch_response(version, data)))` gives `data` back (tests check both ways, and
against kio's own decoder). Unknown tagged fields are skipped, as the protocol requires.
Malformed input raises `RemoteProtocolError` (the peer sent garbage: the caller drops the
connection).
"""

from __future__ import annotations

import struct
import uuid
from typing import Final

from odradek.protocol.codec import read_unsigned_varint
from odradek.protocol.hot_encoders import (
    EpochEndOffset,
    FetchPartitionResult,
    FetchResponseData,
    FetchTopicResult,
    LeaderIdAndEpoch,
    NodeEndpoint,
    SnapshotId,
)
from odradek.protocol.tolerant_reader import RemoteProtocolError

__all__ = ["FETCH_READER_VERSIONS", "decode_fetch_response"]

#: Flexible versions with topic ids (KIP-516); Odradek's replica fetcher sends v16.
FETCH_READER_VERSIONS: Final = range(13, 18)

_HEADER: Final = struct.Struct(">ihi")  # throttle_time_ms, error_code, session_id
_PARTITION: Final = struct.Struct(">ihqqq")  # index, error, HW, LSO, log start offset
_INT16: Final = struct.Struct(">h")
_INT32: Final = struct.Struct(">i")
_INT64_INT64: Final = struct.Struct(">qq")
_INT32_INT64: Final = struct.Struct(">iq")
_INT32_INT32: Final = struct.Struct(">ii")
_INT64_INT32: Final = struct.Struct(">qi")


def decode_fetch_response(version: int, body: bytes | bytearray | memoryview) -> FetchResponseData:
    """Decode a FetchResponse body (after the response header) of `version` (13-17).

    Each partition's `records` is a memoryview of `body` (None when the field is null): keep
    `body` alive, and unchanged, while the views are used. Raises `RemoteProtocolError` on a
    truncated or malformed body, `ValueError` on an unsupported version.
    """
    if version not in FETCH_READER_VERSIONS:
        raise ValueError(f"FetchResponse v{version} is not decoded here")
    view = memoryview(body).cast("B") if not isinstance(body, memoryview) else body
    try:
        return _decode(view)
    except (struct.error, IndexError, ValueError) as error:
        raise RemoteProtocolError(f"truncated FetchResponse: {error}") from None


def _decode(view: memoryview) -> FetchResponseData:
    end = len(view)
    throttle_time_ms, error_code, session_id = _HEADER.unpack_from(view, 0)
    position = _HEADER.size
    topic_count, position = read_unsigned_varint(view, position)
    topics = []
    for _ in range(topic_count - 1):
        topic_id = uuid.UUID(bytes=bytes(view[position : position + 16]))
        position += 16
        partition_count, position = read_unsigned_varint(view, position)
        partitions = []
        for _ in range(partition_count - 1):
            index, partition_error, high_watermark, last_stable_offset, log_start_offset = (
                _PARTITION.unpack_from(view, position)
            )
            position += _PARTITION.size
            aborted_count, position = read_unsigned_varint(view, position)
            aborted: list[tuple[int, int]] | None = None
            if aborted_count:
                aborted = []
                for _ in range(aborted_count - 1):
                    aborted.append(_INT64_INT64.unpack_from(view, position))
                    position = _skip_tagged_fields(view, position + _INT64_INT64.size)
            (preferred_read_replica,) = _INT32.unpack_from(view, position)
            position += 4
            size_plus_one, position = read_unsigned_varint(view, position)
            records: memoryview | None = None
            if size_plus_one:
                records_end = position + size_plus_one - 1
                if records_end > end:
                    raise RemoteProtocolError("FetchResponse records run past the end")
                records = view[position:records_end]
                position = records_end
            diverging_epoch = current_leader = snapshot_id = None
            tag_count, position = read_unsigned_varint(view, position)
            for _ in range(tag_count):
                tag, position = read_unsigned_varint(view, position)
                tag_size, position = read_unsigned_varint(view, position)
                if tag == 0:
                    diverging_epoch = EpochEndOffset(*_INT32_INT64.unpack_from(view, position))
                elif tag == 1:
                    current_leader = LeaderIdAndEpoch(*_INT32_INT32.unpack_from(view, position))
                elif tag == 2:
                    snapshot_id = SnapshotId(*_INT64_INT32.unpack_from(view, position))
                position += tag_size
            partitions.append(
                FetchPartitionResult(
                    partition_index=index,
                    error_code=partition_error,
                    high_watermark=high_watermark,
                    last_stable_offset=last_stable_offset,
                    log_start_offset=log_start_offset,
                    aborted_transactions=aborted,
                    preferred_read_replica=preferred_read_replica,
                    records=records,
                    diverging_epoch=diverging_epoch,
                    current_leader=current_leader,
                    snapshot_id=snapshot_id,
                )
            )
        position = _skip_tagged_fields(view, position)
        topics.append(FetchTopicResult(name="", topic_id=topic_id, partitions=partitions))
    node_endpoints: list[NodeEndpoint] = []
    tag_count, position = read_unsigned_varint(view, position)
    for _ in range(tag_count):
        tag, position = read_unsigned_varint(view, position)
        tag_size, position = read_unsigned_varint(view, position)
        if tag == 0:
            node_endpoints = _node_endpoints(view, position)
        position += tag_size
    if position > end:
        raise RemoteProtocolError("FetchResponse runs past its frame")
    return FetchResponseData(
        throttle_time_ms=throttle_time_ms,
        error_code=error_code,
        session_id=session_id,
        topics=topics,
        node_endpoints=node_endpoints,
    )


def _node_endpoints(view: memoryview, position: int) -> list[NodeEndpoint]:
    count, position = read_unsigned_varint(view, position)
    endpoints = []
    for _ in range(count - 1):
        (node_id,) = _INT32.unpack_from(view, position)
        host, position = _compact_string(view, position + 4)
        (port,) = _INT32.unpack_from(view, position)
        rack, position = _compact_string(view, position + 4)
        position = _skip_tagged_fields(view, position)
        endpoints.append(NodeEndpoint(node_id, host or "", port, rack))
    return endpoints


def _compact_string(view: memoryview, position: int) -> tuple[str | None, int]:
    size_plus_one, position = read_unsigned_varint(view, position)
    if not size_plus_one:
        return None, position
    end = position + size_plus_one - 1
    if end > len(view):
        raise RemoteProtocolError("FetchResponse string runs past the end")
    return bytes(view[position:end]).decode(), end


def _skip_tagged_fields(view: memoryview, position: int) -> int:
    count, position = read_unsigned_varint(view, position)
    for _ in range(count):
        _tag, position = read_unsigned_varint(view, position)
        size, position = read_unsigned_varint(view, position)
        position += size
    return position
