"""Producer-id blocks (KIP-730) across restarts, and the broker's MetadataImage from replay."""

from __future__ import annotations

import itertools
import uuid

from controller_harness import Harness
from kio.schema.errors import ErrorCode

from odradek.controller import PRODUCER_ID_BLOCK_SIZE, MetadataDelta, MetadataImage


def test_producer_id_blocks_are_unique_and_increasing_across_restarts() -> None:
    h = Harness()
    h.start_brokers(1, 2)
    blocks: list[tuple[int, int]] = []
    for round_ in range(3):
        for broker_id in (1, 2, 1):
            error, start, length = h.allocate_producer_ids(broker_id)
            assert error is ErrorCode.none
            assert length == PRODUCER_ID_BLOCK_SIZE
            blocks.append((start, start + length))
        h.restart()  # a controller restart: state rebuilt from the log alone
        assert h.controller.producer_ids.next_producer_id == blocks[-1][1], round_
    starts = [start for start, _ in blocks]
    assert starts == sorted(starts)
    for (_, end), (next_start, _) in itertools.pairwise(blocks):
        assert end <= next_start
    assert starts[0] == 0


def test_producer_ids_refused_for_a_stale_broker_epoch() -> None:
    h = Harness()
    h.start_brokers(1)
    h.epochs[1] -= 1
    assert h.allocate_producer_ids(1)[0] is ErrorCode.stale_broker_epoch
    assert h.controller.producer_ids.next_producer_id == 0


def test_the_image_replayed_from_the_log_matches_the_controller() -> None:
    h = Harness()
    h.start_brokers(1, 2, 3)
    h.create_topic("a", partitions=3, replication_factor=2, configs=[("retention.ms", "7")])
    h.create_topic("b", partitions=1, replication_factor=3)
    h.heartbeat(2, want_fence=True)
    h.allocate_producer_ids(1)
    image = h.image()
    assert image.offset == h.offset
    assert set(image.topics_by_name) == {"a", "b"}
    for topic in ("a", "b"):
        topic_image = image.topic(topic)
        assert topic_image is not None
        controller_topic = h.controller.replication.topics[h.topic_id(topic)]
        assert dict(topic_image.partitions) == controller_topic.parts
    assert image.configs[(2, "a")] == {"retention.ms": "7"}
    assert image.next_producer_id == PRODUCER_ID_BLOCK_SIZE
    assert dict(image.brokers) == h.controller.cluster.registrations
    assert [b.broker_id for b in image.alive_brokers()] == [1, 3]
    assert image.features == h.controller.features.finalized


def test_metadata_answers_offline_replicas() -> None:
    h = Harness()
    h.start_brokers(1, 2, 3)
    h.create_topic("t", assignments=[(0, (1, 2, 3))])
    h.heartbeat(3, want_fence=True)
    metadata = h.image().partition_metadata("t", 0)
    assert metadata is not None
    assert (metadata.leader_id, metadata.leader_epoch) == (1, 0)
    assert metadata.replica_nodes == (1, 2, 3)
    assert metadata.isr_nodes == (1, 2)
    assert metadata.offline_replicas == (3,)
    # A client on a listener broker 2 does not have sees broker 2's replica as offline too.
    other = h.image().partition_metadata("t", 0, listener="SSL")
    assert other is not None
    assert other.offline_replicas == (1, 2, 3)
    assert h.image().partition_metadata("t", 1) is None
    assert h.image().partition_metadata("nope", 0) is None


def test_delta_local_changes_tell_a_broker_what_to_lead_follow_and_delete() -> None:
    h = Harness()
    h.start_brokers(1, 2)
    before = h.image()
    start = len(h.log)
    h.create_topic("t", assignments=[(0, (1, 2)), (1, (2, 1))])
    delta = MetadataDelta(before)
    for offset in range(start, len(h.log)):
        delta.replay(h.log[offset], offset)
    changes = delta.local_changes(1)
    topic_id = h.topic_id("t")
    assert set(changes.leaders) == {(topic_id, 0)}
    assert set(changes.followers) == {(topic_id, 1)}
    assert changes.deletes == frozenset()
    image = delta.apply()
    start = len(h.log)
    h.run(h.controller.handle_delete_topics(["t"], [], h.now_ms))
    delta = MetadataDelta(image)
    for offset in range(start, len(h.log)):
        delta.replay(h.log[offset], offset)
    assert delta.local_changes(2).deletes == {(topic_id, 0), (topic_id, 1)}
    assert delta.apply().topic("t") is None
    assert image.topic("t") is not None  # images are immutable snapshots


def test_a_topic_created_and_deleted_in_one_delta_leaves_no_trace() -> None:
    h = Harness()
    h.start_brokers(1)
    h.create_topic("t")
    h.run(h.controller.handle_delete_topics(["t"], [], h.now_ms))
    image = MetadataImage().replay((r, o) for o, r in enumerate(h.log))
    assert image.topics_by_id == {}
    assert image.topics_by_name == {}
    assert image.configs == {}
    assert uuid.UUID(int=0) not in image.topics_by_id
