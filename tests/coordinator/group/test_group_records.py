"""__consumer_offsets keys and values in Kafka's formats, and Kafka's group partitioning."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from odradek.coordinator.group.records import (
    GroupKey,
    GroupValue,
    MemberValue,
    OffsetKey,
    OffsetValue,
    decode_group_value,
    decode_key,
    decode_offset_value,
    encode_group_value,
    encode_key,
    encode_offset_value,
    partition_for,
)


def test_partition_is_java_hash_code_modulo_partitions() -> None:
    assert partition_for("hello", 50) == 99162322 % 50  # "hello".hashCode()
    # "polygenelubricants".hashCode() == Integer.MIN_VALUE; Kafka's Utils.abs maps it to 0.
    assert partition_for("polygenelubricants", 50) == 0
    assert partition_for("", 50) == 0


def test_offset_commit_key_and_value_bytes() -> None:
    key = encode_key(OffsetKey("g", "t", 3))
    assert key == b"\x00\x01" + b"\x00\x01g" + b"\x00\x01t" + b"\x00\x00\x00\x03"
    value = encode_offset_value(OffsetValue(42, 7, "m", 1000))
    assert value[:2] == b"\x00\x03"
    assert decode_offset_value(value) == OffsetValue(42, 7, "m", 1000)
    assert decode_key(encode_key(GroupKey("g"))) == GroupKey("g")


@given(
    st.text(max_size=20),
    st.integers(-1, 2**31 - 1),
    st.lists(
        st.tuples(st.text(max_size=10), st.none() | st.text(max_size=5), st.binary(max_size=20)),
        max_size=4,
    ),
)
def test_group_value_round_trip(protocol: str, generation: int, members: list) -> None:  # type: ignore[type-arg]
    value = GroupValue(
        "consumer",
        generation,
        protocol,
        members[0][0] if members else None,
        123,
        tuple(
            MemberValue(member_id, instance, "client", "/host", 300, 10, metadata, b"a")
            for member_id, instance, metadata in members
        ),
    )
    assert decode_group_value(encode_group_value(value)) == value
