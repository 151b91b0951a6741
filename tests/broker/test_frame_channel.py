"""The replica fetcher's FrameChannel against a real broker: a Fetch v16 body comes back as a
view that the hand-written reader decodes, records included, and a broker that goes away is a
ChannelError, after which the next request connects again."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader

from odradek.broker.frame_channel import FrameChannel
from odradek.broker.kafka_channel import ChannelError
from odradek.broker.server import Broker
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import make, nested, request_module, response_type
from odradek.protocol.fetch_response_reader import decode_fetch_response
from odradek.protocol.record_batch import decode_batches


async def _fetch(channel: FrameChannel, topic_id: uuid.UUID, offset: int = 0) -> memoryview:
    module = request_module(ApiKey.FETCH, 16)
    return await channel.request(
        ApiKey.FETCH,
        16,
        cluster_id=None,
        replica_state=make(nested(module, "ReplicaState"), replica_id=-1, replica_epoch=-1),
        max_wait=0,
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=(
            make(
                nested(module, "FetchTopic"),
                topic_id=topic_id,
                partitions=(
                    make(
                        nested(module, "FetchPartition"),
                        partition=0,
                        current_leader_epoch=-1,
                        fetch_offset=offset,
                        last_fetched_epoch=-1,
                        log_start_offset=-1,
                        partition_max_bytes=1 << 20,
                    ),
                ),
            ),
        ),
        forgotten_topics_data=(),
        rack_id="",
    )


@pytest.mark.asyncio
async def test_fetch_through_a_frame_channel(tmp_path: Path) -> None:
    async with Broker(data_dir=tmp_path) as broker:
        assert broker.context is not None
        metadata = broker.context.logs.create_topic("frames", 1, {})
        assert metadata.topic_id is not None
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=50)
        await producer.start()
        try:
            for number in range(3):
                await producer.send("frames", value=b"v%d" % number, partition=0)
            await producer.flush()
        finally:
            await producer.stop()
        channel = FrameChannel(broker.host, broker.port, "test-frame-channel")
        try:
            response = decode_fetch_response(16, await _fetch(channel, metadata.topic_id))
            partition = response.topics[0].partitions[0]
            assert partition.error_code == ErrorCode.none
            assert isinstance(partition.records, memoryview)
            values = [
                r.value for _h, batch in decode_batches(bytes(partition.records)) for r in batch
            ]
            assert values == [b"v0", b"v1", b"v2"]
            unknown = decode_fetch_response(16, await _fetch(channel, uuid.uuid4()))
            assert unknown.topics[0].partitions[0].error_code == ErrorCode.unknown_topic_id
        finally:
            await channel.close()


@pytest.mark.asyncio
async def test_a_broker_that_goes_away_is_a_channel_error_then_a_reconnect(
    tmp_path: Path,
) -> None:
    broker = Broker(data_dir=tmp_path)
    await broker.start()
    port = broker.port
    channel = FrameChannel(broker.host, port, "test-frame-channel")
    try:
        await _fetch(channel, uuid.uuid4())
        await broker.stop()
        with pytest.raises(ChannelError):
            await _fetch(channel, uuid.uuid4())
        again = Broker(data_dir=tmp_path, port=port)
        await again.start()
        try:
            body = await _fetch(channel, uuid.uuid4())
            assert decode_fetch_response(16, body).error_code == ErrorCode.none
        finally:
            await again.stop()
    finally:
        await channel.close()


@pytest.mark.asyncio
async def test_api_versions_body_starts_after_its_version_0_response_header(
    tmp_path: Path,
) -> None:
    """ApiVersions v3 is flexible, yet its response header is v0 (no tagged fields)."""
    async with Broker(data_dir=tmp_path) as broker:
        channel = FrameChannel(broker.host, broker.port, "test-frame-channel")
        try:
            body = await channel.request(
                ApiKey.API_VERSIONS,
                3,
                client_software_name="odradek-test",
                client_software_version="1",
            )
        finally:
            await channel.close()
    decoded, size = entity_reader(response_type(ApiKey.API_VERSIONS, 3))(bytes(body), 0)
    assert size == len(body)
    assert decoded.error_code == ErrorCode.none
    assert any(int(key.api_key) == ApiKey.FETCH for key in decoded.api_keys)
