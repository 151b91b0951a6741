"""LogManager: topics, partitions, configs and ids across reopen; Kafka's name rules."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from storage_helpers import append, make_batch, read_everything

from odradek.storage import (
    InvalidConfig,
    InvalidPartitions,
    InvalidTopicName,
    LogConfig,
    LogManager,
    TopicAlreadyExists,
    UnknownTopicOrPartition,
    log_config_from_overrides,
    validate_topic_name,
)
from odradek.storage.log_manager import kafka_uuid_string

DEFAULT = LogConfig(segment_bytes=4096)


def test_create_append_reopen(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path, DEFAULT, now_ms=0)
    topic_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    topic = manager.create_topic("orders", 3, {"retention.ms": "1000", "x.unknown": "y"}, topic_id)
    assert topic.topic_id == topic_id
    assert topic.partitions == 3
    assert manager.topic_by_id(topic_id) == topic
    log = manager.log("orders", 2)
    assert log is not None
    assert log.config.retention_ms == 1000
    append(log, make_batch(5))
    assert manager.log("orders", 3) is None
    manager.close()

    reopened = LogManager.open(tmp_path, DEFAULT, now_ms=0)
    topic = reopened.topics()["orders"]
    assert topic.topic_id == topic_id
    assert dict(topic.config) == {"retention.ms": "1000", "x.unknown": "y"}
    log = reopened.log("orders", 2)
    assert log is not None
    assert log.log_end_offset == 5
    assert log.config.retention_ms == 1000
    assert len(reopened.all_logs()) == 3
    metadata = (tmp_path / "orders-2" / "partition.metadata").read_text()
    assert metadata == f"version: 0\ntopic_id: {kafka_uuid_string(topic_id)}\n"
    reopened.close()


def test_kafka_uuid_string_matches_kafka() -> None:
    # Kafka prints Uuid as URL-safe base64 without padding: 22 characters.
    value = uuid.UUID(bytes=bytes(range(16)))
    assert kafka_uuid_string(value) == "AAECAwQFBgcICQoLDA0ODw"


def test_delete_topic_removes_everything(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path, DEFAULT, now_ms=0)
    topic = manager.create_topic("gone", 2, {})
    log = manager.log("gone", 0)
    assert log is not None
    append(log, make_batch(1))
    manager.delete_topic("gone")
    assert "gone" not in manager.topics()
    assert manager.topic_by_id(topic.topic_id) is None
    assert manager.log("gone", 0) is None
    assert not (tmp_path / "gone-0").exists()
    with pytest.raises(UnknownTopicOrPartition):
        manager.delete_topic("gone")
    # The name is free again, with a new id and empty logs.
    again = manager.create_topic("gone", 1, {})
    assert again.topic_id != topic.topic_id
    log = manager.log("gone", 0)
    assert log is not None
    assert log.log_end_offset == 0
    manager.close()
    reopened = LogManager.open(tmp_path, DEFAULT, now_ms=0)
    assert reopened.topics()["gone"].topic_id == again.topic_id
    reopened.close()


def test_interrupted_delete_is_finished_on_open(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path, DEFAULT, now_ms=0)
    manager.create_topic("half", 2, {})
    manager.close()
    path = tmp_path / "__odradek_meta" / "topics" / "half.json"
    document = json.loads(path.read_text())
    document["deleted"] = True
    path.write_text(json.dumps(document))
    reopened = LogManager.open(tmp_path, DEFAULT, now_ms=0)
    assert "half" not in reopened.topics()
    assert not (tmp_path / "half-0").exists()
    assert not path.exists()
    reopened.close()


def test_create_partitions(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path, DEFAULT, now_ms=0)
    manager.create_topic("grow", 1, {})
    with pytest.raises(InvalidPartitions):
        manager.create_partitions("grow", 1)
    grown = manager.create_partitions("grow", 4)
    assert grown.partitions == 4
    assert manager.log("grow", 3) is not None
    manager.close()
    reopened = LogManager.open(tmp_path, DEFAULT, now_ms=0)
    assert reopened.topics()["grow"].partitions == 4
    assert reopened.log("grow", 3) is not None
    reopened.close()


def test_alter_topic_config(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path, DEFAULT, now_ms=0)
    manager.create_topic("conf", 2, {"retention.ms": "5"})
    with pytest.raises(InvalidConfig):
        manager.alter_topic_config("conf", {"retention.bytes": "lots"})
    manager.alter_topic_config("conf", {"message.timestamp.type": "LogAppendTime"})
    log = manager.log("conf", 1)
    assert log is not None
    assert log.config.message_timestamp_type == "LogAppendTime"
    assert log.config.retention_ms == DEFAULT.retention_ms  # overrides are replaced as a whole
    info = append(log, make_batch(1), now_ms=42)
    assert info.log_append_time_ms == 42
    manager.close()
    reopened = LogManager.open(tmp_path, DEFAULT, now_ms=0)
    assert dict(reopened.topics()["conf"].config) == {"message.timestamp.type": "LogAppendTime"}
    assert reopened.topic_config("conf").message_timestamp_type == "LogAppendTime"
    reopened.close()


def test_create_errors(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path, DEFAULT, now_ms=0)
    manager.create_topic("a.b", 1, {})
    with pytest.raises(TopicAlreadyExists):
        manager.create_topic("a.b", 1, {})
    with pytest.raises(InvalidTopicName):
        manager.create_topic("a_b", 1, {})  # collides with a.b in metric names
    with pytest.raises(InvalidPartitions):
        manager.create_topic("none", 0, {})
    with pytest.raises(InvalidConfig):
        manager.create_topic("bad", 1, {"segment.bytes": "1"})
    assert set(manager.topics()) == {"a.b"}
    manager.close()


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 250, "has space", "slash/y", "ünï", "a:b"])
def test_invalid_topic_names(name: str) -> None:
    with pytest.raises(InvalidTopicName):
        validate_topic_name(name)


@pytest.mark.parametrize("name", ["a", "A-z_0.9", "a" * 249, "__consumer_offsets", "..."])
def test_valid_topic_names(name: str) -> None:
    validate_topic_name(name)


def test_log_config_from_overrides() -> None:
    config = log_config_from_overrides(
        DEFAULT,
        {
            "segment.bytes": "1048576",
            "segment.ms": "60000",
            "retention.ms": "-1",
            "retention.bytes": "1000000",
            "max.message.bytes": "2000000",
            "flush.messages": "1",
            "flush.ms": "0",
            "index.interval.bytes": "100",
            "segment.index.bytes": "1024",
            "cleanup.policy": "compact, delete",
            "min.insync.replicas": "2",
            "unclean.leader.election.enable": "true",
        },
    )
    assert config.segment_bytes == 1048576
    assert config.segment_ms == 60000
    assert config.retention_ms == -1
    assert config.retention_bytes == 1000000
    assert config.max_message_bytes == 2000000
    assert (config.flush_messages, config.flush_ms) == (1, 0)
    assert config.index_interval_bytes == 100
    assert config.segment_index_bytes == 1024
    assert config.cleanup_policy == "compact,delete"
    assert config.min_insync_replicas == 2
    assert log_config_from_overrides(DEFAULT, {}) is DEFAULT


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("segment.bytes", "abc"),
        ("segment.bytes", "13"),
        ("segment.ms", "0"),
        ("retention.ms", "-2"),
        ("flush.messages", "0"),
        ("message.timestamp.type", "WallClock"),
        ("cleanup.policy", "shred"),
        ("min.insync.replicas", "0"),
        ("max.message.bytes", str(2**31)),
        ("retention.bytes", str(2**63)),
    ],
)
def test_bad_config_values(key: str, value: str) -> None:
    with pytest.raises(InvalidConfig):
        log_config_from_overrides(DEFAULT, {key: value})


def test_retention_and_flush_across_topics(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path, LogConfig(segment_bytes=1500), now_ms=0)
    manager.create_topic("old", 1, {"retention.ms": "10"})
    manager.create_topic("kept", 1, {"retention.ms": "-1", "flush.ms": "100"})
    for name in ("old", "kept"):
        log = manager.log(name, 0)
        assert log is not None
        for i in range(30):
            append(log, make_batch(2, value_size=60, tag=i, timestamp=i))
        log.high_watermark = log.log_end_offset
    assert manager.logs_due_for_flush(now_ms=1_050) == []
    assert manager.logs_due_for_flush(now_ms=2_000) == [manager.log("kept", 0)]
    assert manager.enforce_retention(now_ms=1_000) > 0
    old, kept = manager.log("old", 0), manager.log("kept", 0)
    assert old is not None
    assert kept is not None
    assert old.log_start_offset > 0
    assert kept.log_start_offset == 0
    manager.flush_all()
    assert kept.recovery_point == kept.log_end_offset
    assert len(read_everything(kept)) == 30
    manager.close()
