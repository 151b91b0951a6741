"""`odradek group ...` against a real broker, with real confluent-kafka group consumers."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cli_helpers import Run, json_lines, one_line_error
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.timeout(90)
_names = itertools.count()


def new_topic(bootstrap: str, partitions: int) -> str:
    name = f"cli-groups-{next(_names)}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)
    return name


def produce(bootstrap: str, topic: str, per_partition: dict[int, int]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
    for partition, count in per_partition.items():
        for index in range(count):
            producer.produce(topic, b"%d-%d" % (partition, index), partition=partition)
    assert producer.flush(10) == 0


def group_consumer(bootstrap: str, group: str, topic: str, **extra: object) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            **extra,
        }
    )
    consumer.subscribe([topic])
    return consumer


def consume(consumer: Consumer, count: int, timeout: float = 20) -> list[tuple[int, int]]:
    """(partition, offset) of the next `count` records."""
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            seen.append((message.partition(), message.offset()))
    assert len(seen) == count, seen
    return seen


def wait_assigned(consumer: Consumer, partitions: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(consumer.assignment()) < partitions and time.monotonic() < deadline:
        consumer.poll(0.1)
    assert len(consumer.assignment()) == partitions


def describe(run: Run, group: str) -> dict:
    result = run("group", "describe", group, "--json")
    assert result.exit_code == 0, result.output
    [description] = json_lines(result.stdout)
    return description


def lags(description: dict) -> dict[int, tuple[int | None, int | None, int | None]]:
    return {
        row["partition"]: (row["committed_offset"], row["log_end_offset"], row["lag"])
        for row in description["partitions"]
    }


@pytest.fixture
def consumed(bootstrap: str) -> Iterator[tuple[str, Consumer]]:
    """Topic with 2 partitions (5 and 3 records); group `readers` read 4 records of partition 0
    and all of partition 1 and committed them, and is still running."""
    topic = new_topic(bootstrap, 2)
    produce(bootstrap, topic, {0: 5, 1: 3})
    consumer = group_consumer(bootstrap, "readers", topic, **{"client.id": "reader-one"})
    seen = consume(consumer, 8)
    last = {0: 3, 1: 2}
    for partition, offset in sorted(seen):
        if offset == last[partition]:
            consumer.commit(
                offsets=[TopicPartition(topic, partition, offset + 1)], asynchronous=False
            )
    yield topic, consumer
    consumer.close()


def test_list_and_describe_show_members_and_lag(run: Run, consumed: tuple[str, Consumer]) -> None:
    topic, consumer = consumed
    listed = run("group", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert {"group": "readers", "state": "Stable", "type": "classic"} in json_lines(listed.stdout)
    assert "readers" in run("group", "list").stdout

    description = describe(run, "readers")
    assert description["group"] == "readers"
    assert description["state"] == "Stable"
    assert description["type"] == "classic"
    assert description["protocol"] == "range"
    [member] = description["members"]
    assert member["client_id"] == "reader-one"
    assert member["member_id"] == consumer.memberid()
    # Kafka reports the member's address the way Java prints an InetAddress.
    assert member["host"] == "/127.0.0.1"
    assert member["assignment"] == [
        {"topic": topic, "partition": 0},
        {"topic": topic, "partition": 1},
    ]
    assert lags(description) == {0: (4, 5, 1), 1: (3, 3, 0)}
    assert {row["member_id"] for row in description["partitions"]} == {consumer.memberid()}

    table = run("group", "describe", "readers")
    assert table.exit_code == 0, table.output
    assert "Group readers: Stable, classic, protocol range" in table.stdout
    assert "reader-one" in table.stdout
    row = next(
        line for line in table.stdout.splitlines() if f"│ {topic} " in line and "│ 0 " in line
    )
    assert [cell.strip() for cell in row.split("│")[1:6]] == [topic, "0", "4", "5", "1"]


def test_describe_after_members_leave_keeps_offsets(
    run: Run, bootstrap: str, consumed: tuple[str, Consumer]
) -> None:
    topic, consumer = consumed
    consumer.close()
    produce(bootstrap, topic, {1: 2})
    description = describe(run, "readers")
    assert description["state"] == "Empty"
    assert description["members"] == []
    assert lags(description) == {0: (4, 5, 1), 1: (3, 5, 2)}


def test_kip848_group_is_described(run: Run, bootstrap: str) -> None:
    topic = new_topic(bootstrap, 2)
    produce(bootstrap, topic, {0: 2, 1: 2})
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "new-protocol",
            "group.protocol": "consumer",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    try:
        consume(consumer, 4)
        consumer.commit(asynchronous=False)
        listed = json_lines(run("group", "list", "--json").stdout)
        assert {"group": "new-protocol", "state": "Stable", "type": "consumer"} in listed
        description = describe(run, "new-protocol")
        assert description["type"] == "consumer"
        [member] = description["members"]
        assert len(member["assignment"]) == 2
        assert lags(description) == {0: (2, 2, 0), 1: (2, 2, 0)}
        refused = run(
            "group", "reset-offsets", "new-protocol", "--topic", topic, "--to-earliest",
            "--execute",
        )  # fmt: skip
        assert "has active members" in one_line_error(refused)
        assert lags(describe(run, "new-protocol")) == {0: (2, 2, 0), 1: (2, 2, 0)}
    finally:
        consumer.close()


def test_reset_offsets_dry_run_then_execute(
    run: Run, bootstrap: str, consumed: tuple[str, Consumer]
) -> None:
    topic, consumer = consumed
    consumer.close()

    dry = run("group", "reset-offsets", "readers", "--topic", topic, "--to-earliest", "--json")
    assert dry.exit_code == 0, dry.output
    assert "Dry run" in dry.stderr
    assert json_lines(dry.stdout) == [
        {"topic": topic, "partition": 0, "current_offset": 4, "new_offset": 0},
        {"topic": topic, "partition": 1, "current_offset": 3, "new_offset": 0},
    ]
    assert lags(describe(run, "readers")) == {0: (4, 5, 1), 1: (3, 3, 0)}  # unchanged

    shifted = run(
        "group", "reset-offsets", "readers", "--topic", topic, "--partition", "0",
        "--shift-by", "-2", "--execute",
    )  # fmt: skip
    assert shifted.exit_code == 0, shifted.output
    assert "Reset 1 partition of group readers" in shifted.stderr
    assert lags(describe(run, "readers")) == {0: (2, 5, 3), 1: (3, 3, 0)}

    # A new member of the group starts where the reset put it.
    restarted = group_consumer(bootstrap, "readers", topic)
    try:
        assert sorted(consume(restarted, 3)) == [(0, 2), (0, 3), (0, 4)]
        assert restarted.poll(1.0) is None
    finally:
        restarted.close()


def test_reset_offsets_to_offset_latest_and_datetime(
    run: Run, bootstrap: str, consumed: tuple[str, Consumer]
) -> None:
    topic, consumer = consumed
    consumer.close()

    def reset(*how: str) -> list[int]:
        result = run("group", "reset-offsets", "readers", "--topic", topic, *how, "--json")
        assert result.exit_code == 0, result.output
        return [row["new_offset"] for row in json_lines(result.stdout)]

    # Beyond the log end is clamped to it, as Kafka does.
    assert reset("--to-offset", "4") == [4, 3]
    assert reset("--to-latest") == [5, 3]
    assert reset("--to-datetime", "2000-01-01T00:00:00+00:00") == [0, 0]
    future = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1).isoformat()
    assert reset("--to-datetime", future) == [5, 3]
    assert reset("--to-latest", "--execute") == [5, 3]
    assert lags(describe(run, "readers")) == {0: (5, 5, 0), 1: (3, 3, 0)}


def test_reset_offsets_refused_on_active_group(run: Run, consumed: tuple[str, Consumer]) -> None:
    topic, _consumer = consumed
    dry = run("group", "reset-offsets", "readers", "--topic", topic, "--to-earliest", "--dry-run")
    assert "Stable with 1 member" in one_line_error(dry)

    # --execute leaves the check to the broker, which refuses a commit from outside the group.
    executed = run(
        "group", "reset-offsets", "readers", "--topic", topic, "--to-earliest", "--execute"
    )
    error = one_line_error(executed)
    assert "cannot reset offsets of group 'readers'" in error
    assert "UNKNOWN_MEMBER_ID" in error
    assert "has active members" in error
    assert lags(describe(run, "readers")) == {0: (4, 5, 1), 1: (3, 3, 0)}


def test_reset_offsets_of_a_new_group(run: Run, bootstrap: str) -> None:
    topic = new_topic(bootstrap, 1)
    produce(bootstrap, topic, {0: 4})
    dry = run("group", "reset-offsets", "fresh", "--topic", topic, "--to-offset", "1", "--json")
    assert json_lines(dry.stdout) == [
        {"topic": topic, "partition": 0, "current_offset": None, "new_offset": 1}
    ]
    result = run(
        "group", "reset-offsets", "fresh", "--topic", topic, "--to-offset", "1", "--execute"
    )
    assert result.exit_code == 0, result.output
    description = describe(run, "fresh")
    assert description["state"] == "Empty"
    assert lags(description) == {0: (1, 4, 3)}
    shift = run("group", "reset-offsets", "fresh", "--topic", topic, "--shift-by", "1")
    assert shift.exit_code == 0, shift.output
    no_commit = run("group", "reset-offsets", "other", "--topic", topic, "--shift-by", "1")
    assert "no committed offset" in one_line_error(no_commit)


def test_reset_offsets_usage_errors(run: Run, consumed: tuple[str, Consumer]) -> None:
    topic, _consumer = consumed
    neither = run("group", "reset-offsets", "readers", "--topic", topic)
    assert neither.exit_code == 2
    assert "exactly one of" in neither.stderr
    both = run(
        "group", "reset-offsets", "readers", "--topic", topic, "--to-earliest", "--to-latest"
    )
    assert both.exit_code == 2
    bad_partition = run(
        "group", "reset-offsets", "readers", "--topic", topic, "--partition", "7", "--to-latest"
    )
    assert "has no partition 7" in one_line_error(bad_partition)
    bad_time = run("group", "reset-offsets", "readers", "--topic", topic, "--to-datetime", "soon")
    assert bad_time.exit_code == 2
    unknown_topic = run("group", "reset-offsets", "readers", "--topic", "nope", "--to-latest")
    assert "UNKNOWN_TOPIC_OR_PART" in one_line_error(unknown_topic)


def test_delete_empty_group(run: Run, consumed: tuple[str, Consumer]) -> None:
    _topic, consumer = consumed
    consumer.close()
    result = run("group", "delete", "readers")
    assert result.exit_code == 0, result.output
    assert "Deleted group readers." in result.stderr
    assert "readers" not in [
        row["group"] for row in json_lines(run("group", "list", "--json").stdout)
    ]
    assert "does not exist" in one_line_error(run("group", "describe", "readers"))


def test_delete_group_with_members_is_refused(run: Run, consumed: tuple[str, Consumer]) -> None:
    error = one_line_error(run("group", "delete", "readers"))
    assert error.startswith("Error: cannot delete group 'readers': ")
    assert "NON_EMPTY_GROUP" in error
    assert describe(run, "readers")["state"] == "Stable"


def test_unknown_group(run: Run) -> None:
    describe_error = one_line_error(run("group", "describe", "ghosts"))
    assert describe_error == "Error: cannot describe group 'ghosts': group 'ghosts' does not exist"
    delete_error = one_line_error(run("group", "delete", "ghosts"))
    assert "GROUP_ID_NOT_FOUND" in delete_error


def test_unreachable_broker(closed_port: int) -> None:
    from click.testing import CliRunner

    from odradek.cli.main import cli

    result = CliRunner().invoke(
        cli, ["group", "list", "-b", f"127.0.0.1:{closed_port}", "--timeout", "1"]
    )
    error = one_line_error(result)
    assert f"no answer from 127.0.0.1:{closed_port}" in error
