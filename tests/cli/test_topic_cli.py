"""`odradek topic ...` against a real broker."""

from __future__ import annotations

import pytest
from cli_helpers import Run, json_lines, one_line_error


def describe(run: Run, name: str) -> dict:
    result = run("topic", "describe", name, "--json")
    assert result.exit_code == 0, result.output
    [description] = json_lines(result.stdout)
    return description


def configs(description: dict) -> dict[str, tuple[str, str]]:
    return {entry["name"]: (entry["value"], entry["source"]) for entry in description["configs"]}


def test_create_list_describe(run: Run) -> None:
    result = run("topic", "create", "orders", "--partitions", "3", "--config", "retention.ms=60000")
    assert result.exit_code == 0, result.output
    assert "Created topic orders" in result.stderr

    listed = run("topic", "list", "--json")
    assert {"topic": "orders", "partitions": 3} in json_lines(listed.stdout)
    table = run("topic", "list")
    assert "orders" in table.stdout

    description = describe(run, "orders")
    assert description["topic"] == "orders"
    assert description["internal"] is False
    assert description["partitions"] == [
        {
            "partition": partition,
            "leader": 1,
            "replicas": [1],
            "isr": [1],
            "offline_replicas": [],
            "earliest_offset": 0,
            "latest_offset": 0,
        }
        for partition in range(3)
    ]
    assert configs(description)["retention.ms"] == ("60000", "DYNAMIC_TOPIC_CONFIG")
    assert configs(description)["cleanup.policy"] == ("delete", "DEFAULT_CONFIG")


def test_describe_table(run: Run) -> None:
    run("topic", "create", "orders", "--partitions", "2", "--config", "retention.ms=60000")
    result = run("topic", "describe", "orders")
    assert result.exit_code == 0, result.output
    assert "Topic orders: 2 partition(s)" in result.stdout
    assert "offline replicas" in result.stdout
    retention = next(line for line in result.stdout.splitlines() if "│ retention.ms " in line)
    assert "60000" in retention
    assert "DYNAMIC_TOPIC_CONFIG" in retention


def test_create_uses_broker_defaults(run: Run) -> None:
    assert run("topic", "create", "plain").exit_code == 0
    description = describe(run, "plain")
    assert len(description["partitions"]) == 1
    assert description["partitions"][0]["replicas"] == [1]


def test_bootstrap_server_option(bootstrap: str) -> None:
    from click.testing import CliRunner

    from odradek.cli.main import cli

    result = CliRunner().invoke(cli, ["topic", "create", "explicit", "-b", bootstrap])
    assert result.exit_code == 0, result.output
    listed = CliRunner().invoke(cli, ["topic", "list", "--json", "--bootstrap-server", bootstrap])
    assert {"topic": "explicit", "partitions": 1} in json_lines(listed.stdout)


def test_describe_shows_offsets(run: Run) -> None:
    run("topic", "create", "events", "--partitions", "2")
    result = run("produce", "events", "--partition", "1", input="a\nb\nc\n")
    assert result.exit_code == 0, result.output
    partitions = describe(run, "events")["partitions"]
    assert [(p["earliest_offset"], p["latest_offset"]) for p in partitions] == [(0, 0), (0, 3)]


def test_alter_configs_and_partitions(run: Run) -> None:
    run("topic", "create", "orders", "--config", "retention.ms=60000")
    result = run(
        "topic",
        "alter",
        "orders",
        "--partitions",
        "4",
        "--config",
        "cleanup.policy=compact",
        "--delete-config",
        "retention.ms",
    )
    assert result.exit_code == 0, result.output
    description = describe(run, "orders")
    assert len(description["partitions"]) == 4
    assert configs(description)["cleanup.policy"] == ("compact", "DYNAMIC_TOPIC_CONFIG")
    assert configs(description)["retention.ms"][1] == "DEFAULT_CONFIG"


def test_alter_leaves_other_configs_alone(run: Run) -> None:
    run("topic", "create", "orders", "--config", "retention.ms=60000")
    assert run("topic", "alter", "orders", "--config", "segment.ms=120000").exit_code == 0
    current = configs(describe(run, "orders"))
    assert current["retention.ms"] == ("60000", "DYNAMIC_TOPIC_CONFIG")
    assert current["segment.ms"] == ("120000", "DYNAMIC_TOPIC_CONFIG")


def test_alter_needs_a_change(run: Run) -> None:
    run("topic", "create", "orders")
    result = run("topic", "alter", "orders")
    assert result.exit_code == 2
    assert "nothing to change" in result.stderr


def test_delete(run: Run) -> None:
    for name in ("a", "b", "c"):
        run("topic", "create", name)
    result = run("topic", "delete", "a", "b")
    assert result.exit_code == 0, result.output
    assert "Deleted topic a." in result.stderr
    assert "Deleted topic b." in result.stderr
    names = [item["topic"] for item in json_lines(run("topic", "list", "--json").stdout)]
    assert names == ["c"]


def test_delete_reports_each_failure_and_still_deletes_the_rest(run: Run) -> None:
    run("topic", "create", "a")
    result = run("topic", "delete", "missing", "a")
    assert "UNKNOWN_TOPIC_OR_PART" in one_line_error(result)
    assert "Deleted topic a." in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["topic", "create", "existing"], "TOPIC_ALREADY_EXISTS"),
        (["topic", "create", "t", "--replication-factor", "3"], "INVALID_REPLICATION_FACTOR"),
        (["topic", "create", "t", "--config", "retention.ms=abc"], "INVALID_CONFIG"),
        (["topic", "create", "t", "--config", "no.such.config=1"], "INVALID_CONFIG"),
        (["topic", "describe", "missing"], "UNKNOWN_TOPIC_OR_PART"),
        (["topic", "alter", "missing", "--config", "retention.ms=1"], "UNKNOWN_TOPIC_OR_PART"),
        (["topic", "alter", "existing", "--config", "retention.ms=abc"], "INVALID_CONFIG"),
        (["topic", "alter", "existing", "--partitions", "1"], "INVALID_PARTITIONS"),
        (["topic", "delete", "missing"], "UNKNOWN_TOPIC_OR_PART"),
    ],
)
def test_broker_errors_are_one_line(run: Run, args: list[str], expected: str) -> None:
    run("topic", "create", "existing", "--partitions", "2")
    message = one_line_error(run(*args))
    assert expected in message
    assert message.startswith("Error: cannot ")


def test_broken_key_value_option(run: Run) -> None:
    result = run("topic", "create", "t", "--config", "retention.ms")
    assert result.exit_code == 2
    assert "is not key=value" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["topic", "list"],
        ["topic", "create", "t"],
        ["topic", "describe", "t"],
        ["topic", "alter", "t", "--config", "retention.ms=1"],
        ["topic", "delete", "t"],
        ["produce", "t"],
        ["consume", "t", "-e"],
    ],
)
def test_unreachable_broker(run: Run, closed_port: int, args: list[str]) -> None:
    result = run(
        *args, "--bootstrap-server", f"127.0.0.1:{closed_port}", "--timeout", "1", input="x\n"
    )
    message = one_line_error(result)
    assert f"no answer from 127.0.0.1:{closed_port} within 1s" in message
    assert "Connection refused" in message
