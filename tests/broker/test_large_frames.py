"""Large produce frames: the broker reads them into pooled buffers, reused only once nothing
views them, and every byte lands in the log as sent."""

from __future__ import annotations

from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from raw_client import RawClient, encode_body, encode_request
from test_protocol_edges import create_topic, fetch_request, produce_request

from odradek.broker.connection import (
    LARGE_FRAME_BYTES,
    MAX_LARGE_FRAMES_IN_FLIGHT,
    POOLED_FRAMES,
    KafkaConnection,
    _is_unexported,
)
from odradek.broker.server import Broker
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.record_batch import Record, decode_batches, encode_batch

pytestmark = pytest.mark.timeout(60)

RECORDS_PER_BATCH = 500
VALUE_BYTES = 1000  # ~500 KB batches: larger than what is left of the read scratch buffer


def _values(request_number: int, records: int = RECORDS_PER_BATCH) -> list[bytes]:
    return [
        request_number.to_bytes(2, "big")
        + index.to_bytes(4, "big")
        + bytes([request_number]) * (VALUE_BYTES - 6)
        for index in range(records)
    ]


def _produce_frame(topic: str, number: int, records: int = RECORDS_PER_BATCH) -> bytes:
    batch = encode_batch([Record(key=None, value=value) for value in _values(number, records)])
    return encode_request(
        ApiKey.PRODUCE, 10, encode_body(produce_request(10, topic, batch, acks=1)), number
    )


def _read_produce_responses(client: RawClient, count: int, first: int = 0) -> None:
    for number in range(first, first + count):
        correlation_id, response = client.read_response(ApiKey.PRODUCE, 10)
        assert correlation_id == number
        assert response.responses[0].partition_responses[0].error_code == ErrorCode.none


def _fetch_values(client: RawClient, broker: Broker, topic: str, count: int) -> list[bytes]:
    assert broker.context is not None
    topic_id = broker.context.logs.topics()[topic].topic_id
    values: list[bytes] = []
    while len(values) < count:
        response = client.request(
            fetch_request(12, topic, topic_id, len(values), partition_max_bytes=8 << 20), 12
        )
        partition = response.responses[0].partitions[0]
        assert partition.error_code == ErrorCode.none
        for _header, records in decode_batches(partition.records):
            values.extend(record.value for record in records)
    return values


def test_is_unexported_tells_a_viewed_buffer_and_keeps_its_size() -> None:
    buffer = bytearray(b"0123456789")
    view = memoryview(buffer)[2:5]
    assert not _is_unexported(buffer)
    view.release()
    assert _is_unexported(buffer)
    assert buffer == b"0123456789"


def test_pipelined_large_produce_requests_reuse_frame_buffers_and_keep_every_byte(
    odradek_broker: Broker,
) -> None:
    with RawClient(odradek_broker.bootstrap_servers) as client:
        create_topic(client, "large-frames", max_message_bytes=str(4 << 20))
        requests = 12
        frames = b"".join(
            encode_request(
                ApiKey.PRODUCE,
                10,
                encode_body(
                    produce_request(
                        10,
                        "large-frames",
                        encode_batch([Record(key=None, value=value) for value in _values(number)]),
                        # acks=all answers wait for an fsync: their buffers stay in use meanwhile.
                        acks=-1 if number % 3 == 0 else 1,
                    )
                ),
                number,
            )
            for number in range(requests)
        )
        for start in range(0, len(frames), 100_003):
            client.send_raw(frames[start : start + 100_003])
        for number in range(requests):
            correlation_id, response = client.read_response(ApiKey.PRODUCE, 10)
            assert correlation_id == number
            partition = response.responses[0].partition_responses[0]
            assert partition.error_code == ErrorCode.none
            assert partition.base_offset == number * RECORDS_PER_BATCH
        connections: list[KafkaConnection] = list(odradek_broker._connections)
        pooled = [buffer for connection in connections for buffer in connection.free_buffers]
        assert 1 <= len(pooled) <= POOLED_FRAMES * len(connections)
        expected: list[Any] = [value for number in range(requests) for value in _values(number)]
        assert _fetch_values(client, odradek_broker, "large-frames", len(expected)) == expected


def test_a_burst_of_large_requests_is_read_into_a_bounded_set_of_pooled_buffers(
    odradek_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvloop reads a readable socket many times per loop iteration: without a bound, a client
    with megabytes queued had a dozen frames read (each in a fresh buffer) before any ran."""
    allocated: list[int] = []
    in_flight: list[int] = []
    frame_buffer = KafkaConnection._frame_buffer

    def counting_frame_buffer(connection: KafkaConnection, size: int) -> bytearray:
        in_flight.append(connection.large_frames_in_flight)
        free = len(connection.free_buffers)
        buffer = frame_buffer(connection, size)
        if len(connection.free_buffers) >= free:
            allocated.append(size)
        return buffer

    monkeypatch.setattr(KafkaConnection, "_frame_buffer", counting_frame_buffer)
    with RawClient(odradek_broker.bootstrap_servers) as client:
        create_topic(client, "frame-burst", max_message_bytes=str(4 << 20))
        requests = 3 * POOLED_FRAMES
        frames = b"".join(
            encode_request(
                ApiKey.PRODUCE,
                10,
                encode_body(
                    produce_request(
                        10,
                        "frame-burst",
                        encode_batch([Record(key=None, value=v) for v in _values(number)]),
                        acks=1,
                    )
                ),
                number,
            )
            for number in range(requests)
        )
        client.send_raw(frames)  # all at once: the socket holds megabytes when it is read
        for number in range(requests):
            correlation_id, response = client.read_response(ApiKey.PRODUCE, 10)
            assert correlation_id == number
            assert response.responses[0].partition_responses[0].error_code == ErrorCode.none
        assert len(in_flight) == requests
        assert max(in_flight) <= MAX_LARGE_FRAMES_IN_FLIGHT, "reading paused at the bound"
        assert len(allocated) <= POOLED_FRAMES, "every later frame reused a pooled buffer"
        expected: list[Any] = [value for number in range(requests) for value in _values(number)]
        assert _fetch_values(client, odradek_broker, "frame-burst", len(expected)) == expected


def test_a_large_frame_after_a_large_frame_is_read_straight_into_its_own_buffer(
    odradek_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a large frame the broker reads only the next size prefix (as Kafka's
    NetworkReceive does), so a large frame that follows lands in its own buffer with none of
    its bytes read into, and copied out of, the scratch buffer; frames from LARGE_FRAME_BYTES
    up (a producer's 100 KB batch) count as large even where they would fit the scratch."""
    in_scratch: list[int] = []  # per large frame: its bytes already read into scratch
    frame_buffer = KafkaConnection._frame_buffer

    def recording_frame_buffer(connection: KafkaConnection, size: int) -> bytearray:
        in_scratch.append(connection.scratch_end - connection.scratch_start - 4)
        return frame_buffer(connection, size)

    monkeypatch.setattr(KafkaConnection, "_frame_buffer", recording_frame_buffer)
    # ~100 KB and ~500 KB batches alternating: each is large, the 100 KB ones fit the scratch.
    sizes = [RECORDS_PER_BATCH if number % 2 == 0 else 100 for number in range(6)]
    assert 100 * VALUE_BYTES > LARGE_FRAME_BYTES
    with RawClient(odradek_broker.bootstrap_servers) as client:
        create_topic(client, "prefix-reads", max_message_bytes=str(4 << 20))
        frames = [
            _produce_frame("prefix-reads", number, records) for number, records in enumerate(sizes)
        ]
        client.send_raw(b"".join(frames))  # all at once: the socket holds them back to back
        _read_produce_responses(client, len(frames))
        assert len(in_scratch) == len(frames), "every frame had a buffer of its own"
        assert in_scratch[1:] == [0] * (len(frames) - 1), "no byte of them went through scratch"
        expected = [
            value for number, records in enumerate(sizes) for value in _values(number, records)
        ]
        assert _fetch_values(client, odradek_broker, "prefix-reads", len(expected)) == expected


def test_a_new_connection_reads_into_the_buffers_an_earlier_one_freed(
    odradek_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large-frame buffers are pooled per broker, not per connection: a producer that
    reconnects (or a new one) starts with warm buffers instead of allocating its own."""
    allocated: list[str] = []
    frame_buffer = KafkaConnection._frame_buffer

    def counting_frame_buffer(connection: KafkaConnection, size: int) -> bytearray:
        free = len(connection.free_buffers)
        buffer = frame_buffer(connection, size)
        if len(connection.free_buffers) >= free:
            allocated.append(connection.peer)
        return buffer

    monkeypatch.setattr(KafkaConnection, "_frame_buffer", counting_frame_buffer)
    with RawClient(odradek_broker.bootstrap_servers) as client:
        create_topic(client, "pooled-across", max_message_bytes=str(4 << 20))
    counts = []
    for _connection in range(2):
        allocated.clear()
        with RawClient(odradek_broker.bootstrap_servers) as client:
            for number in range(3):  # one at a time: each answered before the next is read
                client.send_raw(_produce_frame("pooled-across", number))
                _read_produce_responses(client, 1, first=number)
        counts.append(len(allocated))
    assert counts[0] >= 1
    assert counts[1] == 0, "the second connection allocated no frame buffer"
