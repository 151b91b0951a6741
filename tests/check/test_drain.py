"""The final drain ends when the processor has read each partition to its log end — including
after a power loss left the group's committed offsets past the log end (the consumer resets per
`auto.offset.reset` and reads what the log holds) — and the report judges only drained runs."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from odradek import Broker
from odradek.check.history import Clock, HistoryWriter
from odradek.check.runner import (
    POSITIONS_FILE,
    CheckOptions,
    Progress,
    RunSpec,
    _drain,
    _Run,
    caught_up,
)
from odradek.check.worker import WorkerSpec
from odradek.check.workload import (
    PROCESSOR_OVERRIDES,
    ProcessorSupervisor,
    SinkReader,
    create_sink,
    create_topic,
)
from odradek.client import Guarantee, SqliteSink


def test_caught_up_means_read_to_the_log_end_not_past_it() -> None:
    assert caught_up({0: 10, 1: 0}, {0: 10})
    assert not caught_up({0: 10}, {0: 100})  # committed past a truncated log: not read yet
    assert not caught_up({0: 10}, {0: 9})
    assert not caught_up({0: 10}, {})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("guarantee", list(Guarantee))
def test_the_drain_waits_until_the_processor_read_below_a_committed_offset_past_the_log_end(
    odradek_broker: Broker, tmp_path: Path, guarantee: Guarantee
) -> None:
    """The group committed offset 100 (the sink stored it, under exactly-once) before the log
    was cut back; 10 records now sit at offsets 0-9. The drain ends only once the processor has
    read them: then every one of them is in the sink."""
    bootstrap = odradek_broker.bootstrap_servers
    name = f"drain-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, name, 1)
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in range(10):
        producer.produce(name, str(value).encode(), partition=0)
    assert producer.flush(10) == 0
    sink = tmp_path / "sink.db"
    create_sink(sink)
    if guarantee is Guarantee.EXACTLY_ONCE:
        stored = SqliteSink(str(sink))
        stored.open()
        with stored.transaction() as tx:
            claim = stored.claim(tx, name, name, 0)
            stored.store_offset(tx, name, name, 0, 100, claim.owner_token)
        stored.close()
        with sqlite3.connect(sink) as connection:
            assert connection.execute("SELECT COUNT(*) FROM odradek_offsets").fetchone()[0] == 1
    else:
        committer = Consumer({"bootstrap.servers": bootstrap, "group.id": name})
        try:
            committer.commit(offsets=[TopicPartition(name, 0, 100)], asynchronous=False)
        finally:
            committer.close()
    clock = Clock()
    spec = WorkerSpec(
        bootstrap=bootstrap,
        group=name,
        topic=name,
        guarantee=guarantee.value,
        sink_path=str(sink),
        history_path="",
        process="",
        clock_origin=clock.origin,
        kill_flag=str(tmp_path / "kill-processor"),
        config=dict(PROCESSOR_OVERRIDES),
        positions_path=str(tmp_path / POSITIONS_FILE),
    )
    supervisor = ProcessorSupervisor(spec, tmp_path)
    reader = SinkReader(sink)
    run = _Run(
        options=CheckOptions(
            guarantees=[guarantee],
            faults=[],
            bootstrap=bootstrap,
            workdir=tmp_path,
            partitions=1,
            drain_timeout=60.0,
        ),
        guarantee=guarantee,
        spec=RunSpec(guarantee),
        directory=tmp_path,
        clock=clock,
        history=HistoryWriter(tmp_path / "history-checker.jsonl", clock),
        progress=Progress(guarantee.value),
        on_progress=None,
        topic=name,
        group=name,
        kill_flag=tmp_path / "kill-processor",
        bootstrap=bootstrap,
        reader=reader,
        supervisor=supervisor,
    )
    supervisor.start()
    try:
        assert _drain(run)
        assert sorted(reader.values()) == list(range(10))
    finally:
        supervisor.stop()
        run.history.close()
