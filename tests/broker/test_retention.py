"""The broker's retention task deletes old segments (the active one too) and advances the log
start offset; an empty cleanup.policy keeps everything but what DeleteRecords removes."""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from odradek.broker.server import Broker
from odradek.protocol.record_batch import iter_batch_headers


def test_retention_by_size_and_time_advances_the_log_start(tmp_path: Path) -> None:
    config = {"log.retention.check.interval.ms": "100"}
    with Broker(data_dir=tmp_path, config=config) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        topics = {
            "by-size": {"segment.bytes": "2000", "retention.bytes": "4000"},
            "by-time": {"segment.bytes": "2000", "retention.ms": "1000"},
            "kept": {"segment.bytes": "2000"},
        }
        for name, topic_config in topics.items():
            admin.create_topics([NewTopic(name, 1, 1, config=topic_config)])[name].result(10)
        producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "enable.idempotence": False,
                "linger.ms": 0,
            }
        )
        now = int(time.time() * 1000)
        for _ in range(100):
            for name in topics:
                # by-time's records carry old timestamps: retention.ms measures record time.
                stamp = now - 60_000 if name == "by-time" else now
                producer.produce(name, value=b"x" * 100, timestamp=stamp)
            producer.flush(10)

        def earliest(name: str) -> int:
            partition = TopicPartition(name, 0)
            spec = {partition: OffsetSpec.earliest()}
            return int(admin.list_offsets(spec)[partition].result(10).offset)

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (
            earliest("by-size") == 0 or earliest("by-time") == 0
        ):
            time.sleep(0.2)
        assert earliest("by-size") > 0
        assert earliest("by-time") > 0
        assert earliest("kept") == 0
        assert broker.context is not None
        by_size = broker.context.logs.log("by-size", 0)
        assert by_size is not None
        deadline = time.monotonic() + 10
        while by_size.size_in_bytes > 4000 + 2000 and time.monotonic() < deadline:
            time.sleep(0.1)
        # What is left: at most retention.bytes plus the segment that crosses it.
        assert by_size.size_in_bytes <= 4000 + 2000


def _offsets(admin: AdminClient, topic: str) -> tuple[int, int]:
    partition = TopicPartition(topic, 0)
    earliest = admin.list_offsets({partition: OffsetSpec.earliest()})[partition].result(10)
    latest = admin.list_offsets({partition: OffsetSpec.latest()})[partition].result(10)
    return int(earliest.offset), int(latest.offset)


def test_retention_deletes_an_expired_active_segment(tmp_path: Path) -> None:
    # retention.ms=1500, log.retention.check.interval.ms=300, ten records, then wait (issue 9,
    # item 3): Kafka rolls an empty segment and deletes the expired one, earliest = latest = 10.
    config = {"log.retention.check.interval.ms": "300"}
    with Broker(data_dir=tmp_path, config=config) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        topics = {
            "by-time": {"retention.ms": "1500"},
            "by-size": {"retention.bytes": "0"},
            # A record stamped a day ahead never expires: its segment stays. (Kafka 4 refuses
            # timestamps over an hour ahead by default: this topic allows two days.)
            "future": {"retention.ms": "1500", "message.timestamp.after.max.ms": "172800000"},
        }
        for name, topic_config in topics.items():
            admin.create_topics([NewTopic(name, 1, 1, config=topic_config)])[name].result(10)
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})
        now = int(time.time() * 1000)
        for i in range(10):
            producer.produce("by-time", value=b"%d" % i)
            producer.produce("by-size", value=b"%d" % i)
            stamp = now + 86_400_000 if i == 5 else now
            producer.produce("future", value=b"%d" % i, timestamp=stamp)
        assert producer.flush(10) == 0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (
            _offsets(admin, "by-time") != (10, 10) or _offsets(admin, "by-size") != (10, 10)
        ):
            time.sleep(0.1)
        assert _offsets(admin, "by-time") == (10, 10)
        assert _offsets(admin, "by-size") == (10, 10)
        assert _offsets(admin, "future") == (0, 10)

        # A new reader from earliest gets no expired record, and the log goes on at 10.
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "group.id": "late-reader",
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
            }
        )
        consumer.assign([TopicPartition("by-time", 0, OFFSET_BEGINNING)])
        message = consumer.poll(10)
        consumer.close()
        assert message is not None
        assert message.error() is not None
        assert message.error().code() == KafkaError._PARTITION_EOF
        assert message.offset() == 10
        delivered: list[int] = []
        producer.produce(
            "by-time", value=b"new", on_delivery=lambda _e, m: delivered.append(m.offset())
        )
        assert producer.flush(10) == 0
        assert delivered == [10]


def test_empty_cleanup_policy_is_accepted_and_deletes_only_below_the_log_start(
    tmp_path: Path,
) -> None:
    # IncrementalAlterConfigs SUBTRACT delete from cleanup.policy=delete (issue 9, item 7):
    # Kafka accepts cleanup.policy="" and keeps everything -- no time or size retention, no
    # compaction -- while DeleteRecords still removes the segments below the log start.
    config = {"log.retention.check.interval.ms": "50", "log.cleaner.backoff.ms": "50"}
    with Broker(data_dir=tmp_path, config=config) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        small = {"segment.bytes": "200", "min.cleanable.dirty.ratio": "0.01"}
        topics = {
            "no-policy": {"cleanup.policy": "delete", "retention.ms": "1", **small},
            "witness-delete": {"retention.ms": "1", **small},
            "witness-compact": {"cleanup.policy": "compact", **small},
            "created-empty": {"cleanup.policy": "", "retention.bytes": "0", **small},
        }
        for name, topic_config in topics.items():
            admin.create_topics([NewTopic(name, 1, 1, config=topic_config)])[name].result(10)
        subtract = ConfigResource(
            ResourceType.TOPIC,
            "no-policy",
            incremental_configs=[
                ConfigEntry(
                    "cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT
                )
            ],
        )
        admin.incremental_alter_configs([subtract])[subtract].result(10)
        for name in ("no-policy", "created-empty"):
            resource = ConfigResource(ResourceType.TOPIC, name)
            described = admin.describe_configs([resource])[resource].result(10)
            assert described["cleanup.policy"].value == ""

        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 0})
        old = int(time.time() * 1000) - 60_000
        for i in range(10):
            for name in topics:
                producer.produce(name, key=b"same", value=b"%d" % i, timestamp=old)
            producer.flush(10)  # one batch each: several segments
        assert broker.context is not None
        logs = {name: broker.context.logs.log(name, 0) for name in topics}

        def records_in(name: str) -> int:
            """Records from the log start to the end, segment by segment (a read stops at
            a segment's end)."""
            log = logs[name]
            assert log is not None
            count, offset = 0, log.log_start_offset
            while offset < log.log_end_offset:
                data = log.read(offset, 1 << 20, log.log_end_offset, True).records
                for _, header in iter_batch_headers(data):
                    count += header.records_count
                    offset = header.next_offset
            return count

        # Wait until retention and the cleaner have visibly run on the witnesses.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            _offsets(admin, "witness-delete")[0] < 10 or records_in("witness-compact") >= 10
        ):
            time.sleep(0.05)
        assert _offsets(admin, "witness-delete") == (10, 10)
        assert records_in("witness-compact") < 10
        for name in ("no-policy", "created-empty"):
            assert _offsets(admin, name) == (0, 10)
            assert records_in(name) == 10  # nothing deleted, nothing compacted

        # DeleteRecords still moves the log start and drops the segments below it.
        futures = admin.delete_records([TopicPartition("no-policy", 0, 6)])
        (future,) = futures.values()
        assert future.result(10).low_watermark == 6
        log = logs["no-policy"]
        assert log is not None
        assert _offsets(admin, "no-policy") == (6, 10)
        assert 0 < log.segment_base_offsets()[0] <= 6
        assert records_in("no-policy") < 10
