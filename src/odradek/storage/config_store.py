"""Dynamic configs (broker, cluster-default broker, group) as a log of Kafka `ConfigRecord`s.

Kafka keeps every dynamic config in its KRaft metadata log as a `ConfigRecord` (metadata
record api key 4, version 0: resource type int8, resource name, config name, nullable value —
null deletes the override). Odradek writes the same records, framed the way Kafka frames a
metadata record (unsigned varints frame version 1, api key 4, record version 0, then the
flexible fields), to one append-only file, so the controller's metadata log can take the
records over unchanged when it arrives.

File layout: a sequence of `[u32 payload length][u32 CRC32C of the payload][payload]`. Replay
stops at the first frame that is short or fails its CRC (a torn tail after a crash); that tail
is cut off before the next append. When the log holds many superseded records it is rewritten
atomically as a snapshot of the current image.

`ConfigImage` (the replayed state) is plain deterministic code; `ConfigStore` owns the file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import crc32c

from odradek.protocol.primitives import FieldReader, compact_nullable_string, unsigned_varint
from odradek.storage._files import fsync_directory, write_file_atomically

CONFIG_RECORD_API_KEY = 4
CONFIG_RECORD_VERSION = 0
METADATA_FRAME_VERSION = 1

# Kafka's ConfigResource.Type codes.
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
RESOURCE_GROUP = 32

_FRAME_HEADER = struct.Struct(">II")
# Rewrite the file as a snapshot once it holds this many more records than the image.
_COMPACT_SLACK = 1000


class ConfigRecordError(ValueError):
    """A ConfigRecord payload that cannot be decoded."""


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    """One dynamic config change: `value` None removes the override (Kafka's ConfigRecord)."""

    resource_type: int
    resource_name: str
    name: str
    value: str | None


class _Reader(FieldReader):
    ERROR = ConfigRecordError


def encode_config_record(record: ConfigRecord) -> bytes:
    """The record as Kafka's metadata log serializes a ConfigRecord (frame version 1)."""
    return b"".join(
        (
            unsigned_varint(METADATA_FRAME_VERSION),
            unsigned_varint(CONFIG_RECORD_API_KEY),
            unsigned_varint(CONFIG_RECORD_VERSION),
            struct.pack(">b", record.resource_type),
            compact_nullable_string(record.resource_name),
            compact_nullable_string(record.name),
            compact_nullable_string(record.value),
            b"\x00",  # no tagged fields
        )
    )


def decode_config_record(payload: bytes) -> ConfigRecord:
    """Inverse of `encode_config_record`; raises ConfigRecordError on anything else."""
    reader = _Reader(payload)
    frame_version = reader.unsigned_varint()
    api_key = reader.unsigned_varint()
    version = reader.unsigned_varint()
    if (frame_version, api_key, version) != (
        METADATA_FRAME_VERSION,
        CONFIG_RECORD_API_KEY,
        CONFIG_RECORD_VERSION,
    ):
        raise ConfigRecordError(f"not a ConfigRecord v0 (api key {api_key}, version {version})")
    resource_type = reader.int8()
    resource_name = reader.compact_nullable_string()
    name = reader.compact_nullable_string()
    value = reader.compact_nullable_string()
    if resource_name is None or name is None:
        raise ConfigRecordError("resource name and config name may not be null")
    return ConfigRecord(resource_type, resource_name, name, value)


@dataclass
class ConfigImage:
    """Every dynamic override, by (resource type, resource name); rebuilt by `replay`."""

    resources: dict[tuple[int, str], dict[str, str]] = field(default_factory=dict)

    def replay(self, record: ConfigRecord) -> None:
        key = (record.resource_type, record.resource_name)
        configs = self.resources.setdefault(key, {})
        if record.value is None:
            configs.pop(record.name, None)
        else:
            configs[record.name] = record.value
        if not configs:
            del self.resources[key]

    def configs(self, resource_type: int, resource_name: str) -> Mapping[str, str]:
        """The overrides of one resource (empty when it has none)."""
        return dict(self.resources.get((resource_type, resource_name), {}))

    def records(self) -> list[ConfigRecord]:
        """A snapshot: the records that rebuild this image from nothing."""
        return [
            ConfigRecord(resource_type, resource_name, name, value)
            for (resource_type, resource_name), configs in sorted(self.resources.items())
            for name, value in sorted(configs.items())
        ]


def _frame(record: ConfigRecord) -> bytes:
    payload = encode_config_record(record)
    return _FRAME_HEADER.pack(len(payload), crc32c.crc32c(payload)) + payload


def read_config_log(data: bytes) -> tuple[list[ConfigRecord], int]:
    """Every whole, CRC-valid record from the start of `data`, and where the valid part ends."""
    records: list[ConfigRecord] = []
    position = 0
    while position + _FRAME_HEADER.size <= len(data):
        length, checksum = _FRAME_HEADER.unpack_from(data, position)
        start = position + _FRAME_HEADER.size
        payload = data[start : start + length]
        if len(payload) < length or crc32c.crc32c(payload) != checksum:
            break
        try:
            records.append(decode_config_record(payload))
        except ConfigRecordError:
            break
        position = start + length
    return records, position


class ConfigStore:
    """The dynamic-config log file and its replayed image (one writer: the broker)."""

    def __init__(self, path: Path, image: ConfigImage, valid_bytes: int, records: int) -> None:
        self.path = path
        self.image = image
        self._valid_bytes = valid_bytes
        self._records = records

    @classmethod
    def open(cls, path: Path) -> ConfigStore:
        """Replay the file at `path` (absent means empty); a torn tail is ignored."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes() if path.exists() else b""
        records, valid_bytes = read_config_log(data)
        image = ConfigImage()
        for record in records:
            image.replay(record)
        return cls(path, image, valid_bytes, len(records))

    def append(self, records: Iterable[ConfigRecord]) -> None:
        """Make the records durable (fsync), then apply them to the image."""
        batch = list(records)
        if not batch:
            return
        data = b"".join(_frame(record) for record in batch)
        created = not self.path.exists()
        with open(self.path, "ab") as file:
            if file.tell() != self._valid_bytes:
                file.truncate(self._valid_bytes)  # drop a torn tail before appending
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if created:
            fsync_directory(self.path.parent)
        self._valid_bytes += len(data)
        self._records += len(batch)
        for record in batch:
            self.image.replay(record)
        if self._records > len(self.image.records()) + _COMPACT_SLACK:
            self._snapshot()

    def _snapshot(self) -> None:
        records = self.image.records()
        data = b"".join(_frame(record) for record in records)
        write_file_atomically(self.path, data)
        self._valid_bytes = len(data)
        self._records = len(records)
