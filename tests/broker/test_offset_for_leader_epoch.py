"""OffsetForLeaderEpoch answers from the partition's leader-epoch cache (KIP-101/KIP-320)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kio.schema.errors import ErrorCode
from raw_client import RawClient, request_of
from test_protocol_edges import create_topic, produce_request

from odradek.broker.server import Broker
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import nested, request_module
from odradek.protocol.record_batch import Record, encode_batch


@pytest.fixture
def client(odradek_broker: Broker) -> Iterator[RawClient]:
    with RawClient(odradek_broker.bootstrap_servers) as raw:
        yield raw


def _ask(client: RawClient, topic: str, current: int, epoch: int) -> tuple[int, int, int]:
    module = request_module(ApiKey.OFFSET_FOR_LEADER_EPOCH, 4)
    response = client.request(
        request_of(ApiKey.OFFSET_FOR_LEADER_EPOCH, 4)(
            replica_id=-1,
            topics=(
                nested(module, "OffsetForLeaderTopic")(
                    topic=topic,
                    partitions=(
                        nested(module, "OffsetForLeaderPartition")(
                            partition=0, current_leader_epoch=current, leader_epoch=epoch
                        ),
                    ),
                ),
            ),
        )
    )
    answer = response.topics[0].partitions[0]
    return answer.error_code, answer.leader_epoch, answer.end_offset


def test_epoch_zero_ends_at_the_log_end(odradek_broker: Broker, client: RawClient) -> None:
    create_topic(client, "epochs")
    assert _ask(client, "epochs", -1, 0) == (ErrorCode.none, 0, 0)
    batch = encode_batch([Record(key=None, value=b"v", timestamp=1) for _ in range(3)])
    produced = client.request(produce_request(9, "epochs", batch))
    assert produced.responses[0].partition_responses[0].error_code == ErrorCode.none
    assert _ask(client, "epochs", 0, 0) == (ErrorCode.none, 0, 3)
    assert _ask(client, "epochs", -1, 1) == (ErrorCode.none, -1, -1)
    assert _ask(client, "epochs", 1, 0)[0] == ErrorCode.unknown_leader_epoch
    # A later epoch on the leader: the old one ends where the new one starts.
    assert odradek_broker.context is not None
    log = odradek_broker.context.logs.log("epochs", 0)
    assert log is not None
    log.leader_epoch = 2
    client.request(produce_request(9, "epochs", batch))
    assert _ask(client, "epochs", 2, 0) == (ErrorCode.none, 0, 3)
    assert _ask(client, "epochs", 2, 1) == (ErrorCode.none, 0, 3)
    assert _ask(client, "epochs", 2, 2) == (ErrorCode.none, 2, 6)
    assert _ask(client, "epochs", 0, 2)[0] == ErrorCode.fenced_leader_epoch
