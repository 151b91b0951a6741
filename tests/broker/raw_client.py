"""A minimal blocking Kafka client over a raw socket, for protocol-level broker tests."""

from __future__ import annotations

import io
import socket
import struct
from typing import Any

from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer

from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import (
    is_flexible,
    make,
    nested,
    request_module,
    request_type,
    response_type,
)


def encode_request(
    api_key: int,
    api_version: int,
    body: bytes,
    correlation_id: int,
    client_id: str | None = "raw-test",
    header_tags: bytes = b"\x00",
    flexible: bool | None = None,
) -> bytes:
    header = struct.pack(">hhi", api_key, api_version, correlation_id)
    if client_id is None:
        header += struct.pack(">h", -1)
    else:
        encoded = client_id.encode()
        header += struct.pack(">h", len(encoded)) + encoded
    if flexible is None:
        flexible = is_flexible(api_key, api_version)
    if flexible:
        header += header_tags
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


def encode_body(entity: Any) -> bytes:
    buffer = io.BytesIO()
    entity_writer(type(entity))(buffer, entity)
    return buffer.getvalue()


class RawClient:
    def __init__(self, bootstrap: str, timeout: float = 10) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.correlation_id = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, entity: Any, api_version: int | None = None) -> int:
        version = api_version if api_version is not None else int(entity.__version__)
        self.correlation_id += 1
        self.send_raw(
            encode_request(
                int(entity.__api_key__), version, encode_body(entity), self.correlation_id
            )
        )
        return self.correlation_id

    def read_frame(self) -> bytes:
        """One response frame, or b"" when the broker closed the connection."""
        size_bytes = self._read_exactly(4)
        if len(size_bytes) < 4:
            return b""
        (size,) = struct.unpack(">i", size_bytes)
        return self._read_exactly(size)

    def _read_exactly(self, count: int) -> bytes:
        chunks = []
        remaining = count
        while remaining:
            chunk = self.sock.recv(remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def read_response(self, api_key: int, api_version: int) -> tuple[int, Any]:
        frame = self.read_frame()
        assert frame, "the broker closed the connection"
        (correlation_id,) = struct.unpack_from(">i", frame, 0)
        position = 4
        if is_flexible(api_key, api_version) and api_key != 18:
            position += 1  # empty tagged fields of response header v1
        response, _ = entity_reader(response_type(api_key, api_version))(frame[position:], 0)
        return correlation_id, response

    def request(self, entity: Any, api_version: int | None = None) -> Any:
        version = api_version if api_version is not None else int(entity.__version__)
        correlation_id = self.send(entity, version)
        got, response = self.read_response(int(entity.__api_key__), version)
        assert got == correlation_id
        return response

    def is_closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def request_of(api_key: int, api_version: int) -> type[Any]:
    return request_type(api_key, api_version)


def request(api_key: ApiKey, version: int, **fields: Any) -> Any:
    """A request entity of `api_key` at `version` (kio's schema), built from its fields."""
    return make(request_type(api_key, version), **fields)


def child(api_key: ApiKey, version: int, type_name: str, **fields: Any) -> Any:
    """A nested entity (`type_name`, as kio names it) of a request of `api_key` at `version`."""
    return make(nested(request_module(api_key, version), type_name), **fields)


def commit(
    client: RawClient,
    group: str,
    topic: str,
    partition: int,
    offset: int,
    generation: int = -1,
    member_id: str = "",
    metadata: str | None = "",
) -> ErrorCode:
    """OffsetCommit v8 of one partition; the partition's error code."""
    version = 8
    part = child(
        ApiKey.OFFSET_COMMIT,
        version,
        "OffsetCommitRequestPartition",
        partition_index=partition,
        committed_offset=offset,
        committed_leader_epoch=-1,
        committed_metadata=metadata,
    )
    topic_entry = child(
        ApiKey.OFFSET_COMMIT, version, "OffsetCommitRequestTopic", name=topic, partitions=(part,)
    )
    response = client.request(
        request(
            ApiKey.OFFSET_COMMIT,
            version,
            group_id=group,
            generation_id_or_member_epoch=generation,
            member_id=member_id,
            group_instance_id=None,
            topics=(topic_entry,),
        )
    )
    return ErrorCode(response.topics[0].partitions[0].error_code)


def committed(client: RawClient, group: str, topic: str, partition: int) -> int:
    """The committed offset of one partition (OffsetFetch v7, require_stable), -1 for none."""
    topic_entry = child(
        ApiKey.OFFSET_FETCH,
        7,
        "OffsetFetchRequestTopic",
        name=topic,
        partition_indexes=(partition,),
    )
    response = client.request(
        request(ApiKey.OFFSET_FETCH, 7, group_id=group, topics=(topic_entry,), require_stable=True)
    )
    assert response.error_code == ErrorCode.none
    return int(response.topics[0].partitions[0].committed_offset)
