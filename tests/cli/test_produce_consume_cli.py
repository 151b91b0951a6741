"""`odradek produce` and `odradek consume` against a real broker."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import Run, json_lines, one_line_error


@pytest.fixture
def topic(run: Run) -> str:
    """A one-partition topic, so offsets are predictable."""
    assert run("topic", "create", "lines").exit_code == 0
    return "lines"


def produce(run: Run, topic: str, text: str | bytes, *args: str) -> None:
    result = run("produce", topic, *args, input=text)
    assert result.exit_code == 0, result.output


def consume(run: Run, topic: str, *args: str) -> list[str]:
    result = run("consume", topic, *args)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_keys_and_headers_round_trip_as_json(run: Run, topic: str) -> None:
    result = run(
        "produce",
        topic,
        "--key-separator",
        ":",
        "--header",
        "source=cli",
        "--header",
        "formula=a=b",
        input="k1:v1\nk2:v2:with colon\nno key\n:empty key\n",
    )
    assert result.exit_code == 0, result.output
    assert "4 messages delivered to lines." in result.stderr

    messages = json_lines("\n".join(consume(run, topic, "--from-beginning", "-e", "--json")))
    headers = [["source", "cli"], ["formula", "a=b"]]
    assert [(m["offset"], m["key"], m["value"], m["headers"]) for m in messages] == [
        (0, "k1", "v1", headers),
        (1, "k2", "v2:with colon", headers),
        (2, None, "no key", headers),
        (3, "", "empty key", headers),
    ]
    for message in messages:
        assert message["topic"] == topic
        assert message["partition"] == 0
        assert message["timestamp_type"] == "CreateTime"
        assert isinstance(message["timestamp"], int)


def test_text_output(run: Run, topic: str) -> None:
    produce(run, topic, "k1:v1\nk2:v2\n", "-K", ":", "-H", "h=1")
    assert consume(run, topic, "--from-beginning", "-e") == ["v1", "v2"]
    assert consume(run, topic, "--from-beginning", "-e", "--print-key") == ["k1\tv1", "k2\tv2"]
    assert consume(
        run,
        topic,
        "--from-beginning",
        "-e",
        "--print-key",
        "--print-headers",
        "--key-separator",
        "|",
    ) == ["h=1|k1|v1", "h=1|k2|v2"]


def test_start_offsets_and_max_messages(run: Run, topic: str) -> None:
    produce(run, topic, "".join(f"m{number}\n" for number in range(10)))
    assert consume(run, topic, "--from-beginning", "-e") == [f"m{n}" for n in range(10)]
    assert consume(run, topic, "--offset", "7", "-e") == ["m7", "m8", "m9"]
    assert consume(run, topic, "--offset", "-2", "-e") == ["m8", "m9"]
    assert consume(run, topic, "--from-beginning", "--max-messages", "3") == ["m0", "m1", "m2"]
    assert consume(run, topic, "--offset", "4", "-c", "2") == ["m4", "m5"]
    # The default start is the end: only messages produced later.
    assert consume(run, topic, "-e") == []


def test_partitions(run: Run) -> None:
    run("topic", "create", "spread", "--partitions", "3")
    for partition in range(3):
        produce(run, "spread", f"p{partition}-a\np{partition}-b\n", "--partition", str(partition))
    all_messages = json_lines("\n".join(consume(run, "spread", "--from-beginning", "-e", "--json")))
    assert sorted((m["partition"], m["offset"], m["value"]) for m in all_messages) == [
        (p, o, f"p{p}-{'ab'[o]}") for p in range(3) for o in range(2)
    ]
    chosen = consume(run, "spread", "--from-beginning", "-e", "-p", "2", "-p", "0")
    assert sorted(chosen) == ["p0-a", "p0-b", "p2-a", "p2-b"]


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_compression_and_acks(run: Run, topic: str, compression: str, acks: str) -> None:
    lines = [f"line {number} " + "x" * (number % 50) for number in range(200)]
    produce(run, topic, "\n".join(lines) + "\n", "--compression", compression, "--acks", acks)
    assert consume(run, topic, "--from-beginning", "-e") == lines


def test_produce_from_file_with_binary_values(run: Run, topic: str, tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.write_bytes(b"plain\n\xff\xfe not utf-8\n\nlast line without newline")
    produce(run, topic, "", "--file", str(path))
    messages = json_lines(
        "\n".join(consume(run, topic, "--from-beginning", "-e", "--json", "--encoding", "base64"))
    )
    values = [base64.b64decode(message["value"]) for message in messages]
    assert values == [b"plain", b"\xff\xfe not utf-8", b"", b"last line without newline"]
    replaced = json_lines("\n".join(consume(run, topic, "--from-beginning", "-e", "--json")))
    assert replaced[1]["value"] == "\ufffd\ufffd not utf-8"


def test_produce_to_missing_partition_fails(run: Run, topic: str) -> None:
    message = one_line_error(run("produce", topic, "--partition", "5", input="a\n"))
    assert "partition" in message.lower()


def test_consume_errors(run: Run, topic: str) -> None:
    produce(run, topic, "a\n")
    assert "UNKNOWN_TOPIC_OR_PART" in one_line_error(run("consume", "missing", "-e"))
    assert "no partition 3" in one_line_error(run("consume", topic, "-p", "3", "-e"))
    assert "out of range" in one_line_error(run("consume", topic, "--offset", "5", "-e"))
    both = run("consume", topic, "--from-beginning", "--offset", "0")
    assert both.exit_code == 2
    assert "mutually exclusive" in both.stderr


def test_as_a_process(bootstrap: str, tmp_path: Path) -> None:
    """Through `python -m odradek.cli` with real pipes, as a shell user would run it."""
    env = {**os.environ, "ODRADEK_BOOTSTRAP": bootstrap}

    def odradek(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "odradek.cli", *args],
            input=stdin,
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )

    assert odradek("topic", "create", "piped", "--partitions", "2").returncode == 0
    produced = odradek("produce", "piped", "-K", "=", stdin=b"a=1\nb=2\nc=3\n")
    assert produced.returncode == 0, produced.stderr
    assert produced.stderr.strip().endswith(b"3 messages delivered to piped.")
    consumed = odradek("consume", "piped", "--from-beginning", "-e", "--print-key")
    assert consumed.returncode == 0, consumed.stderr
    assert sorted(consumed.stdout.splitlines()) == [b"a\t1", b"b\t2", b"c\t3"]
    failed = odradek("topic", "create", "piped")
    assert failed.returncode == 1
    assert failed.stderr.decode().splitlines() == [
        "Error: cannot create topic 'piped': Topic 'piped' already exists. (TOPIC_ALREADY_EXISTS)"
    ]
