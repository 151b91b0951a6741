"""Metadata records: every record type survives encode -> decode; bad bytes are refused."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.controller import (
    BrokerEndpoint,
    BrokerFeature,
    BrokerRegistrationChangeRecord,
    ConfigRecord,
    FeatureLevelRecord,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    RecordFormatError,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnregisterBrokerRecord,
    decode_record,
    encode_record,
)
from odradek.protocol.primitives import unsigned_varint

int8 = st.integers(-(2**7), 2**7 - 1)
int16 = st.integers(-(2**15), 2**15 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
uuids = st.uuids()
text = st.text(max_size=20)
replica_lists = st.lists(int32, max_size=6).map(tuple)

records: st.SearchStrategy[MetadataRecord] = st.one_of(
    st.builds(
        RegisterBrokerRecord,
        broker_id=int32,
        broker_epoch=int64,
        incarnation_id=uuids,
        end_points=st.lists(
            st.builds(BrokerEndpoint, text, text, st.integers(0, 65535), int16), max_size=3
        ).map(tuple),
        features=st.lists(st.builds(BrokerFeature, text, int16, int16), max_size=3).map(tuple),
        rack=st.none() | text,
        fenced=st.booleans(),
        in_controlled_shutdown=st.booleans(),
    ),
    st.builds(UnregisterBrokerRecord, int32, int64),
    st.builds(TopicRecord, text, uuids),
    st.builds(
        PartitionRecord, uuids, int32, replica_lists, replica_lists, int32, int8, int32, int32
    ),
    st.builds(ConfigRecord, int8, text, text, st.none() | text),
    st.builds(
        PartitionChangeRecord,
        uuids,
        int32,
        st.none() | replica_lists,
        int32,
        st.none() | replica_lists,
        int8,
    ),
    st.builds(RemoveTopicRecord, uuids),
    st.builds(FeatureLevelRecord, text, int16),
    st.builds(ProducerIdsRecord, int32, int64, int64),
    st.builds(BrokerRegistrationChangeRecord, int32, int64, int8, int8),
)


@given(records)
def test_every_record_round_trips(record: MetadataRecord) -> None:
    assert decode_record(encode_record(record)) == record


@given(records)
def test_truncated_records_are_refused(record: MetadataRecord) -> None:
    data = encode_record(record)
    for cut in range(len(data)):
        with pytest.raises(RecordFormatError):
            decode_record(data[:cut])


def test_unknown_type_version_and_frame_are_refused() -> None:
    data = encode_record(RemoveTopicRecord(uuid.UUID(int=7)))
    with pytest.raises(RecordFormatError, match="frame version"):
        decode_record(b"\x02" + data[1:])
    with pytest.raises(RecordFormatError, match="type 99"):
        decode_record(data[:1] + unsigned_varint(99) + data[2:])
    with pytest.raises(RecordFormatError, match="version 5"):
        decode_record(data[:2] + b"\x05" + data[3:])
    with pytest.raises(RecordFormatError, match="after the record"):
        decode_record(data + b"\x00")


def test_unknown_tagged_fields_are_skipped() -> None:
    record = TopicRecord("orders", uuid.UUID(int=1))
    data = encode_record(record)
    # Replace the empty tagged-field section with one unknown tag (tag 7, 3 bytes).
    with_tag = data[:-1] + b"\x01" + b"\x07" + b"\x03" + b"abc"
    assert decode_record(with_tag) == record


def test_framing_is_kafkas_frame_type_version() -> None:
    data = encode_record(BrokerRegistrationChangeRecord(1, 5, fenced=1))
    assert data[:3] == bytes((1, 17, 1))  # frame version 1, apiKey 17, version 1
