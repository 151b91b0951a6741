"""The ``__transaction_state`` record formats, encoded by hand (big-endian, Kafka's layouts).

Every record's key starts with an int16 *key version* that says what the record is:

* ``0`` — Kafka's ``TransactionLogKey`` v0: ``transactional_id: string`` (int16 length + UTF-8).
  Its value is Kafka's ``TransactionLogValue``, an int16 value version then the fields:

  ====================================  ==========  ==========================================
  field                                  v0          v1 (flexible)
  ====================================  ==========  ==========================================
  producer_id                            int64       int64
  producer_epoch                         int16       int16
  transaction_timeout_ms                 int32       int32
  transaction_status                     int8        int8 (Kafka's status ids, Empty 0 …)
  transaction_partitions                 nullable    compact nullable array of
                                         array of    {compact string, compact int32 array,
                                         {string,    tagged fields}; null when Empty
                                         [int32]}
  transaction_last_update_timestamp_ms   int64       int64
  transaction_start_timestamp_ms         int64       int64
  tagged fields                          —           tag 0 previous_producer_id (int64, default -1)
                                                     tag 1 next_producer_id (int64, default -1)
                                                     tag 2 client_transaction_version (int16,
                                                     default 0; 2 is KIP-890 part 2)
                                                     tag 1000 *Odradek*: last_producer_epoch
                                                     (int16, default -1; Kafka skips unknown tags)
  ====================================  ==========  ==========================================

  Odradek writes v1 (previous_producer_id and last_producer_epoch make a replayed coordinator
  answer KIP-360 retries exactly like the live one) and reads v0 and v1. A ``None`` value is a
  tombstone: the transactional id expired.
* ``1000`` — Odradek's *producer id block* (Kafka keeps this in the controller's
  ``ProducerIdsRecord``). Empty key body, so compaction keeps only the newest. Value: int16
  version 0, ``broker_id: int32``, ``broker_epoch: int64`` (-1), ``next_producer_id: int64`` — the
  exclusive end of the newest reserved block: no id at or above it was ever handed out.
* ``1001`` — Odradek's *coordinator epoch*. Empty key body. Value: int16 version 0,
  ``coordinator_epoch: int32``; written once per coordinator load, carried in every marker.

Kafka's own loader ignores keys with an unknown version, so a ``__transaction_state`` written by
Odradek stays readable by Kafka tools.
"""

from __future__ import annotations

import dataclasses
import struct

from odradek.coordinator.txn.state import (
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    TopicPartition,
    TransactionState,
    TxnTransitMetadata,
)
from odradek.protocol.primitives import compact_string, string, unsigned_varint

TRANSACTION_LOG_KEY_VERSION = 0
PRODUCER_ID_BLOCK_KEY_VERSION = 1000
COORDINATOR_EPOCH_KEY_VERSION = 1001
#: The value version Odradek writes (Kafka's TransactionLogValue reads 0 and 1).
TRANSACTION_LOG_VALUE_VERSION = 1

TAG_PREVIOUS_PRODUCER_ID = 0
TAG_NEXT_PRODUCER_ID = 1
TAG_CLIENT_TRANSACTION_VERSION = 2
TAG_ODRADEK_LAST_PRODUCER_EPOCH = 1000

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class RecordDecodeError(ValueError):
    """A ``__transaction_state`` record that does not parse."""


@dataclasses.dataclass(frozen=True, slots=True)
class TransactionRecord:
    """One record for ``__transaction_state``: the broker puts ``key``/``value`` into a batch."""

    key: bytes
    value: bytes | None


@dataclasses.dataclass(frozen=True, slots=True)
class TransactionLogEntry:
    transactional_id: str
    #: None for a tombstone.
    metadata: TxnTransitMetadata | None


@dataclasses.dataclass(frozen=True, slots=True)
class ProducerIdBlockEntry:
    broker_id: int
    broker_epoch: int
    next_producer_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class CoordinatorEpochEntry:
    coordinator_epoch: int


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownEntry:
    key_version: int


DecodedRecord = TransactionLogEntry | ProducerIdBlockEntry | CoordinatorEpochEntry | UnknownEntry


# -- primitives ---------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("buffer", "position")

    def __init__(self, buffer: bytes) -> None:
        self.buffer = buffer
        self.position = 0

    def _take(self, size: int) -> bytes:
        end = self.position + size
        if size < 0 or end > len(self.buffer):
            raise RecordDecodeError("record is truncated")
        chunk = self.buffer[self.position : end]
        self.position = end
        return chunk

    def i8(self) -> int:
        value: int = _I8.unpack(self._take(1))[0]
        return value

    def i16(self) -> int:
        value: int = _I16.unpack(self._take(2))[0]
        return value

    def i32(self) -> int:
        value: int = _I32.unpack(self._take(4))[0]
        return value

    def i64(self) -> int:
        value: int = _I64.unpack(self._take(8))[0]
        return value

    def uvarint(self) -> int:
        result = shift = 0
        while True:
            byte = self._take(1)[0]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise RecordDecodeError("varint too long")

    def string(self) -> str:
        return self._decode(self._take(self.i16()))

    def compact_string(self) -> str:
        length = self.uvarint() - 1
        if length < 0:
            raise RecordDecodeError("null where a string is required")
        return self._decode(self._take(length))

    def raw(self, size: int) -> bytes:
        return self._take(size)

    def done(self) -> None:
        if self.position != len(self.buffer):
            raise RecordDecodeError(f"{len(self.buffer) - self.position} trailing bytes")

    @staticmethod
    def _decode(data: bytes) -> str:
        try:
            return data.decode()
        except UnicodeDecodeError as error:
            raise RecordDecodeError(str(error)) from None


def _partitions_by_topic(partitions: frozenset[TopicPartition]) -> list[tuple[str, list[int]]]:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(partitions):
        by_topic.setdefault(topic, []).append(partition)
    return list(by_topic.items())


# -- TransactionLogKey / TransactionLogValue ----------------------------------------------------


def encode_transaction_log_key(transactional_id: str) -> bytes:
    return _I16.pack(TRANSACTION_LOG_KEY_VERSION) + string(transactional_id)


def encode_transaction_log_value(
    metadata: TxnTransitMetadata, version: int = TRANSACTION_LOG_VALUE_VERSION
) -> bytes:
    """Encode ``metadata`` as TransactionLogValue ``version`` (0 drops the tagged fields)."""
    if metadata.state is TransactionState.EMPTY and metadata.topic_partitions:
        raise ValueError("an Empty transaction has no partitions")
    if version not in (0, 1):
        raise ValueError(f"unknown TransactionLogValue version {version}")
    flexible = version >= 1
    out = bytearray(_I16.pack(version))
    out += _I64.pack(metadata.producer_id)
    out += _I16.pack(metadata.producer_epoch)
    out += _I32.pack(metadata.txn_timeout_ms)
    out += _I8.pack(metadata.state.value)
    # Kafka writes a null partition list for Empty.
    topics = (
        None
        if metadata.state is TransactionState.EMPTY
        else _partitions_by_topic(metadata.topic_partitions)
    )
    if topics is None:
        out += unsigned_varint(0) if flexible else _I32.pack(-1)
    else:
        out += unsigned_varint(len(topics) + 1) if flexible else _I32.pack(len(topics))
        for topic, partition_ids in topics:
            out += compact_string(topic) if flexible else string(topic)
            out += (
                unsigned_varint(len(partition_ids) + 1)
                if flexible
                else _I32.pack(len(partition_ids))
            )
            for partition_id in partition_ids:
                out += _I32.pack(partition_id)
            if flexible:
                out += unsigned_varint(0)
    out += _I64.pack(metadata.txn_last_update_timestamp)
    out += _I64.pack(metadata.txn_start_timestamp)
    if flexible:
        tags: list[tuple[int, bytes]] = []
        if metadata.last_producer_id != NO_PRODUCER_ID:
            tags.append((TAG_PREVIOUS_PRODUCER_ID, _I64.pack(metadata.last_producer_id)))
        if metadata.next_producer_id != NO_PRODUCER_ID:
            tags.append((TAG_NEXT_PRODUCER_ID, _I64.pack(metadata.next_producer_id)))
        if metadata.client_transaction_version:
            tags.append(
                (TAG_CLIENT_TRANSACTION_VERSION, _I16.pack(metadata.client_transaction_version))
            )
        if metadata.last_producer_epoch != NO_PRODUCER_EPOCH:
            tags.append((TAG_ODRADEK_LAST_PRODUCER_EPOCH, _I16.pack(metadata.last_producer_epoch)))
        out += unsigned_varint(len(tags))
        for tag, data in tags:
            out += unsigned_varint(tag) + unsigned_varint(len(data)) + data
    return bytes(out)


def _skip_tagged_fields(reader: _Reader) -> None:
    for _ in range(reader.uvarint()):
        reader.uvarint()
        reader.raw(reader.uvarint())


def decode_transaction_log_value(value: bytes) -> TxnTransitMetadata:
    reader = _Reader(value)
    version = reader.i16()
    if version not in (0, 1):
        raise RecordDecodeError(f"unknown TransactionLogValue version {version}")
    flexible = version >= 1
    producer_id = reader.i64()
    producer_epoch = reader.i16()
    txn_timeout_ms = reader.i32()
    status = reader.i8()
    try:
        state = TransactionState(status)
    except ValueError:
        raise RecordDecodeError(f"unknown transaction status {status}") from None
    partitions: set[TopicPartition] = set()
    topic_count = reader.uvarint() - 1 if flexible else reader.i32()
    for _ in range(max(topic_count, 0)):
        topic = reader.compact_string() if flexible else reader.string()
        partition_count = reader.uvarint() - 1 if flexible else reader.i32()
        for _ in range(max(partition_count, 0)):
            partitions.add(TopicPartition(topic, reader.i32()))
        if flexible:
            _skip_tagged_fields(reader)
    last_update = reader.i64()
    start = reader.i64()
    last_producer_id = NO_PRODUCER_ID
    last_producer_epoch = NO_PRODUCER_EPOCH
    next_producer_id = NO_PRODUCER_ID
    client_transaction_version = 0
    if flexible:
        for _ in range(reader.uvarint()):
            tag = reader.uvarint()
            data = _Reader(reader.raw(reader.uvarint()))
            if tag == TAG_PREVIOUS_PRODUCER_ID:
                last_producer_id = data.i64()
                data.done()
            elif tag == TAG_NEXT_PRODUCER_ID:
                next_producer_id = data.i64()
                data.done()
            elif tag == TAG_CLIENT_TRANSACTION_VERSION:
                client_transaction_version = data.i16()
                data.done()
            elif tag == TAG_ODRADEK_LAST_PRODUCER_EPOCH:
                last_producer_epoch = data.i16()
                data.done()
            # Other tags (future ones) are skipped.
    reader.done()
    return TxnTransitMetadata(
        producer_id=producer_id,
        last_producer_id=last_producer_id,
        producer_epoch=producer_epoch,
        last_producer_epoch=last_producer_epoch,
        txn_timeout_ms=txn_timeout_ms,
        state=state,
        # Kafka ignores partitions stored with an Empty status.
        topic_partitions=(
            frozenset() if state is TransactionState.EMPTY else frozenset(partitions)
        ),
        txn_start_timestamp=start,
        txn_last_update_timestamp=last_update,
        next_producer_id=next_producer_id,
        client_transaction_version=client_transaction_version,
    )


def transaction_log_record(
    transactional_id: str, metadata: TxnTransitMetadata | None
) -> TransactionRecord:
    """The record for one transition of ``transactional_id`` (None: the expiry tombstone)."""
    return TransactionRecord(
        key=encode_transaction_log_key(transactional_id),
        value=None if metadata is None else encode_transaction_log_value(metadata),
    )


# -- Odradek's own records ----------------------------------------------------------------------


def encode_producer_id_block(
    next_producer_id: int, broker_id: int = 0, broker_epoch: int = -1
) -> TransactionRecord:
    return TransactionRecord(
        key=_I16.pack(PRODUCER_ID_BLOCK_KEY_VERSION),
        value=_I16.pack(0)
        + _I32.pack(broker_id)
        + _I64.pack(broker_epoch)
        + _I64.pack(next_producer_id),
    )


def encode_coordinator_epoch(coordinator_epoch: int) -> TransactionRecord:
    return TransactionRecord(
        key=_I16.pack(COORDINATOR_EPOCH_KEY_VERSION),
        value=_I16.pack(0) + _I32.pack(coordinator_epoch),
    )


def decode_record(record: TransactionRecord) -> DecodedRecord:
    """Decode any ``__transaction_state`` record; unknown key versions decode to UnknownEntry."""
    key = _Reader(record.key)
    key_version = key.i16()
    if key_version == TRANSACTION_LOG_KEY_VERSION:
        transactional_id = key.string()
        key.done()
        if record.value is None:
            return TransactionLogEntry(transactional_id, None)
        return TransactionLogEntry(transactional_id, decode_transaction_log_value(record.value))
    if key_version in (PRODUCER_ID_BLOCK_KEY_VERSION, COORDINATOR_EPOCH_KEY_VERSION):
        key.done()
        if record.value is None:
            raise RecordDecodeError(f"key version {key_version} has no tombstones")
        value = _Reader(record.value)
        value_version = value.i16()
        if value_version != 0:
            raise RecordDecodeError(f"unknown value version {value_version}")
        entry: DecodedRecord
        if key_version == PRODUCER_ID_BLOCK_KEY_VERSION:
            entry = ProducerIdBlockEntry(value.i32(), value.i64(), value.i64())
        else:
            entry = CoordinatorEpochEntry(value.i32())
        value.done()
        return entry
    return UnknownEntry(key_version)
