"""What a Kafka user still finds wrong after issue 9's fixes, one test per finding.

Each test uses real clients against a real broker and states what Apache Kafka answers instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import IsolationLevel, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from odradek.broker.server import Broker

pytestmark = pytest.mark.timeout(60)

T = 1_700_000_000_000


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    config = {"transaction.state.log.replication.factor": "1"}
    with Broker(data_dir=tmp_path_factory.mktemp("issue9-user"), config=config) as running:
        yield running


def _admin_offset(
    broker: Broker, topic: str, spec: OffsetSpec, isolation: IsolationLevel
) -> tuple[int, int]:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    partition = TopicPartition(topic, 0)
    result = admin.list_offsets({partition: spec}, isolation_level=isolation)[partition].result(10)
    return int(result.offset), int(result.timestamp)


def test_max_timestamp_read_committed_does_not_answer_past_the_last_stable_offset(
    broker: Broker,
) -> None:
    # Kafka's Partition.fetchOffsetForTimestamp bounds every lookup but LATEST and EARLIEST by
    # the last fetchable offset (the LSO under read_committed): MAX_TIMESTAMP whose record is
    # in an open transaction answers no offset (-1), as a timestamp lookup does.
    topic = "max-ts-open-txn"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
    plain = Producer({"bootstrap.servers": broker.bootstrap_servers})
    plain.produce(topic, value=b"committed", timestamp=T + 1)
    assert plain.flush(10) == 0
    transactional = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "transactional.id": "max-ts-open"}
    )
    transactional.init_transactions(10)
    transactional.begin_transaction()
    for delta in (2, 4, 6, 8):
        transactional.produce(topic, value=b"open", timestamp=T + delta)
    assert transactional.flush(10) == 0
    try:
        committed = IsolationLevel.READ_COMMITTED
        assert _admin_offset(broker, topic, OffsetSpec.latest(), committed)[0] == 1
        # A timestamp lookup is already bounded by the LSO ...
        assert _admin_offset(broker, topic, OffsetSpec.for_timestamp(T + 3), committed) == (
            -1,
            -1,
        )
        # ... MAX_TIMESTAMP must be too: its record (offset 4) is not readable yet.
        assert _admin_offset(broker, topic, OffsetSpec.max_timestamp(), committed) == (-1, -1)
        uncommitted = IsolationLevel.READ_UNCOMMITTED
        assert _admin_offset(broker, topic, OffsetSpec.max_timestamp(), uncommitted) == (
            4,
            T + 8,
        )
    finally:
        transactional.abort_transaction(10)
