"""A tiny blocking Kafka client on odradek.protocol (kio's schemas), for the admin calls
confluent-kafka's AdminClient lacks: ListTransactions, DescribeTransactions, DescribeProducers
and WriteTxnMarkers (KIP-664's abort). It talks to the one bootstrap broker it is given, which
on a single Odradek node is every coordinator and every partition leader.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

import click
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader

from odradek.protocol.codec import (
    encode_entity,
    is_flexible,
    make,
    nested,
    read_unsigned_varint,
    request_module,
    request_type,
    response_type,
    skip_tagged_fields,
)

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_API_VERSIONS = 18


class WireClient:
    """One connection; `request(api_key, version, **fields)` returns the decoded response."""

    def __init__(self, bootstrap_server: str, timeout: float) -> None:
        self.bootstrap_server = bootstrap_server.split(",", maxsplit=1)[0].strip()
        host, _, port = self.bootstrap_server.rpartition(":")
        try:
            self._socket = socket.create_connection((host, int(port)), timeout=timeout)
        except (OSError, ValueError) as error:
            raise click.ClickException(
                f"cannot connect to {self.bootstrap_server}: {error}"
            ) from None
        self._correlation_id = 0

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self, api_key: int, version: int, type_name: str, **fields: Any) -> Any:
        """A nested request entity (e.g. a topic of a request) by its Kafka name."""
        return make(nested(request_module(api_key, version), type_name), **fields)

    def request_body(self, api_key: int, version: int, **fields: Any) -> bytes:
        """Send a request; return the response body (after the response header)."""
        self._correlation_id += 1
        body = encode_entity(make(request_type(api_key, version), **fields))
        header = _INT16.pack(api_key) + _INT16.pack(version) + _INT32.pack(self._correlation_id)
        header += _INT16.pack(len(b"odradek-cli")) + b"odradek-cli"
        flexible = is_flexible(api_key, version)
        if flexible:
            header += b"\x00"
        frame = header + body
        try:
            self._socket.sendall(_INT32.pack(len(frame)) + frame)
            (size,) = _INT32.unpack(self._read_exactly(4))
            response = self._read_exactly(size)
        except (OSError, struct.error) as error:
            raise click.ClickException(
                f"no answer from {self.bootstrap_server}: {error or 'connection closed'}"
            ) from None
        position = 4 + (1 if flexible and api_key != _API_VERSIONS else 0)
        return response[position:]

    def request(self, api_key: int, version: int, **fields: Any) -> Any:
        body = self.request_body(api_key, version, **fields)
        response, _ = entity_reader(response_type(api_key, version))(body, 0)
        return response

    def _read_exactly(self, count: int) -> bytes:
        chunks = []
        while count:
            chunk = self._socket.recv(count)
            if not chunk:
                raise OSError("connection closed")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class DescribedTransaction:
    error: ErrorCode
    transactional_id: str
    state: str
    timeout_ms: int
    start_time_ms: int
    producer_id: int
    producer_epoch: int
    partitions: tuple[tuple[str, int], ...]


def decode_describe_transactions(body: bytes) -> list[DescribedTransaction]:
    """DescribeTransactions v0's response, read by hand: kio cannot read the start time -1 that
    a transaction id without an open transaction has."""
    position = 4  # throttle time
    count, position = read_unsigned_varint(body, position)
    described = []
    for _ in range(count - 1):
        (error,) = _INT16.unpack_from(body, position)
        transactional_id, position = _compact_string(body, position + 2)
        state, position = _compact_string(body, position)
        (timeout_ms,) = _INT32.unpack_from(body, position)
        (start_ms,) = _INT64.unpack_from(body, position + 4)
        (producer_id,) = _INT64.unpack_from(body, position + 12)
        (producer_epoch,) = _INT16.unpack_from(body, position + 20)
        position += 22
        partitions = []
        topics, position = read_unsigned_varint(body, position)
        for _ in range(topics - 1):
            topic, position = _compact_string(body, position)
            indexes, position = read_unsigned_varint(body, position)
            for _ in range(indexes - 1):
                partitions.append((topic, _INT32.unpack_from(body, position)[0]))
                position += 4
            position = skip_tagged_fields(body, position)
        position = skip_tagged_fields(body, position)
        described.append(
            DescribedTransaction(
                ErrorCode(error),
                transactional_id,
                state,
                timeout_ms,
                start_ms,
                producer_id,
                producer_epoch,
                tuple(partitions),
            )
        )
    return described


def _compact_string(body: bytes, position: int) -> tuple[str, int]:
    length, position = read_unsigned_varint(body, position)
    end = position + max(length - 1, 0)
    return body[position:end].decode(), end
