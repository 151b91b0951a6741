"""Findings of a first-time user of `odradek check` after issue 14 (two phases, recovery row).

Each test states the behaviour a user expects and fails on the code as found:

- `--bootstrap` without a numeric port ends in a Python traceback instead of a usage error;
- `--fault-free` / `--duration` take `nan` and `inf` (a phase of "nan s", or one that never ends);
- `--messages` takes 0 and negative caps, and the run then reports "0 lost of 0 acked ✓";
- a phase without a single latency sample reports p50 / p99 latency 0.0 ms instead of none;
- the final drain calls the processor caught up as soon as the group's committed offsets are at
  or past the log end — after a power loss truncated the log below an at-most-once group's
  committed offsets, that holds while the records written after the truncation were never read,
  and they are counted as lost writes;
- `odradek check` stopped by SIGTERM (a CI cancel, `timeout`) leaves its broker and its processor
  running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition

from odradek import Broker
from odradek.check.history import Clock, HistoryWriter
from odradek.check.measures import Window, speed
from odradek.check.runner import CheckOptions, Progress, RunSpec, _drain, _Run
from odradek.check.workload import SinkReader, create_sink, create_topic
from odradek.cli.check import check
from odradek.client import Guarantee


def _process_value(name: str, raw: str) -> object:
    """What the `check` command makes of `--<name> <raw>` (type conversion and callbacks)."""
    context = click.Context(check)
    param = next(param for param in check.params if param.name == name)
    return param.process_value(context, raw)


@pytest.mark.parametrize("bootstrap", ["nohost:xx", "localhost"])
def test_a_bootstrap_without_a_numeric_port_is_a_usage_error(
    bootstrap: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        check,
        [
            "--bootstrap",
            bootstrap,
            "--guarantee",
            "exactly-once",
            "--faults",
            "none",
            "--fault-free",
            "0",
            "--duration",
            "0",
            "--workdir",
            str(tmp_path),
        ],
    )
    assert not isinstance(result.exception, ValueError), result.output
    assert result.exit_code == 2, result.output
    assert "--bootstrap" in result.output


@pytest.mark.parametrize("name", ["fault_free", "duration"])
@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_phase_lengths_must_be_finite(name: str, raw: str) -> None:
    with pytest.raises(click.BadParameter):
        _process_value(name, raw)


@pytest.mark.parametrize("raw", ["0", "-3"])
def test_a_message_cap_below_one_is_refused(raw: str) -> None:
    with pytest.raises(click.BadParameter):
        _process_value("messages", raw)


def test_a_phase_without_latency_samples_reports_no_latency() -> None:
    measured = speed([], Window("fault-free", 0, 1_000_000_000))
    latency = measured.as_json()["latency_ms"]
    assert latency["samples"] == 0
    assert latency["p50"] is None, latency
    assert latency["p99"] is None, latency


def test_the_drain_is_not_done_while_committed_offsets_are_past_the_log_end(
    odradek_broker: Broker, tmp_path: Path
) -> None:
    """The at-most-once situation after a power loss: the group committed offset 100 before the
    broker lost the unsynced log, and 10 new records now sit at offsets 0-9, unread."""
    bootstrap = odradek_broker.bootstrap_servers
    name = f"drain-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, name, 1)
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in range(10):
        producer.produce(name, str(value).encode(), partition=0)
    assert producer.flush(10) == 0
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": name})
    try:
        committer.commit(offsets=[TopicPartition(name, 0, 100)], asynchronous=False)
    finally:
        committer.close()
    sink = tmp_path / "sink.db"
    create_sink(sink)
    clock = Clock()
    run = _Run(
        options=CheckOptions(
            guarantees=[Guarantee.AT_MOST_ONCE],
            faults=[],
            bootstrap=bootstrap,
            workdir=tmp_path,
            partitions=1,
            drain_timeout=3.0,
        ),
        guarantee=Guarantee.AT_MOST_ONCE,
        spec=RunSpec(Guarantee.AT_MOST_ONCE),
        directory=tmp_path,
        clock=clock,
        history=HistoryWriter(tmp_path / "history-checker.jsonl", clock),
        progress=Progress(Guarantee.AT_MOST_ONCE.value),
        on_progress=None,
        topic=name,
        group=name,
        kill_flag=tmp_path / "kill-processor",
        bootstrap=bootstrap,
        reader=SinkReader(sink),
    )
    try:
        # Nothing read offsets 0-9: the processor has not caught up.
        assert not _drain(run)
    finally:
        run.history.close()


def _processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_sigterm_stops_the_broker_and_the_processor(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    check_process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "odradek.cli",
            "check",
            "--guarantee",
            "at-least-once",
            "--faults",
            "none",
            "--fault-free",
            "60",
            "--duration",
            "1",
            "--workdir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    leftovers: list[int] = []
    try:
        assignment = workdir / "at-least-once" / "history-processor-1.jsonl"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (
            assignment.exists() and assignment.stat().st_size
        ):
            time.sleep(0.2)
        assert assignment.exists(), "the processor never got its partitions"
        check_process.send_signal(signal.SIGTERM)
        check_process.wait(30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            leftovers = _processes_mentioning(str(workdir))
            if not leftovers:
                break
            time.sleep(0.5)
        assert leftovers == [], "processes left behind after SIGTERM"
    finally:
        if check_process.poll() is None:
            check_process.kill()
            check_process.wait()
        for pid in _processes_mentioning(str(workdir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
