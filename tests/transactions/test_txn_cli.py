"""`odradek txn list|describe|abort` and `odradek producers describe` on a hanging transaction:
a producer killed with SIGKILL mid-transaction (long transaction.timeout.ms) holds the last
stable offset until the abort tool writes an ABORT marker (KIP-664)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer
from eos_helpers import create_topic, read_all, watermarks

from odradek.cli.main import cli

pytestmark = pytest.mark.timeout(90)


def odradek(bootstrap: str, *args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "-b", bootstrap], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_hanging_transaction_found_described_and_aborted(bootstrap: str) -> None:
    topic = create_topic(bootstrap)
    plain = Producer({"bootstrap.servers": bootstrap})
    plain.produce(topic, value=b"before", partition=0)
    assert plain.flush(10) == 0
    hanging = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("hanging_producer.py")),
            bootstrap,
            topic,
            "stuck",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert hanging.stdout is not None
        assert hanging.stdout.readline().strip() == "ready"
    finally:
        hanging.kill()
        hanging.wait(timeout=10)
        if hanging.stdout is not None:
            hanging.stdout.close()
    plain.produce(topic, value=b"after", partition=0)
    assert plain.flush(10) == 0
    # Held back: the read_committed reader sees only what precedes the open transaction.
    assert read_all(bootstrap, topic, "read_committed", timeout_s=3) == [b"before"]

    listed = json_lines(odradek(bootstrap, "txn", "list", "--json").output)
    assert {"transactional_id": "stuck", "state": "Ongoing"}.items() <= listed[0].items()
    described = json_lines(odradek(bootstrap, "txn", "describe", "stuck", "--json").output)[0]
    assert described["state"] == "Ongoing"
    assert described["partitions"] == [f"{topic}-0"]
    assert described["timeout_ms"] == 600_000
    table = odradek(bootstrap, "txn", "describe", "stuck").output
    assert "Ongoing" in table
    assert f"{topic}-0" in table

    producers = json_lines(odradek(bootstrap, "producers", "describe", topic, "--json").output)
    open_txn = [p for p in producers if p["current_txn_start_offset"] >= 0]
    assert len(open_txn) == 1
    assert open_txn[0]["producer_id"] == described["producer_id"]
    assert open_txn[0]["current_txn_start_offset"] == 1
    assert "TXN START OFFSET" in odradek(bootstrap, "producers", "describe", topic).output

    aborted = odradek(
        bootstrap, "txn", "abort", "--topic", topic, "--partition", "0", "--start-offset", "1"
    )
    assert "aborted the transaction of producer" in aborted.output
    assert read_all(bootstrap, topic, "read_committed", expect=2) == [b"before", b"after"]
    producers = json_lines(odradek(bootstrap, "producers", "describe", topic, "--json").output)
    assert all(p["current_txn_start_offset"] == -1 for p in producers)
    assert watermarks(bootstrap, topic) == (0, 4)  # before, hanging, after, ABORT marker


def test_abort_without_an_open_transaction_is_an_error(bootstrap: str) -> None:
    topic = create_topic(bootstrap)
    result = CliRunner().invoke(
        cli, ["txn", "abort", "--topic", topic, "--partition", "0", "-b", bootstrap]
    )
    assert result.exit_code == 1
    assert "no matching open transaction" in result.output
    unknown = CliRunner().invoke(cli, ["txn", "describe", "nobody", "-b", bootstrap])
    assert unknown.exit_code == 1
    assert "TRANSACTIONAL_ID_NOT_FOUND" in unknown.output
