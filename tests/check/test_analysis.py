"""Each analyser on hand-written histories: every anomaly is found, clean histories pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from odradek.check.analysis import (
    ABORTED_READ,
    ANOMALIES,
    DUPLICATE,
    G1A,
    LOST_WRITE,
    aborted_reads,
    analyse,
    duplicates,
    lost_writes,
    percentile,
    poll_order,
)
from odradek.check.history import Clock, HistoryWriter, Op, merge, read_history
from odradek.check.report import mermaid, render_html, sequence, sequence_svg

_time = [0]


def op(
    process: str, type_: str, f: str, value: Any = None, offsets: Any = None, **extra: Any
) -> Op:
    _time[0] += 1_000_000
    return Op(process, type_, f, value, offsets, _time[0], extra)


def send(value: int, partition: int, offset: int | None, outcome: str = "ok") -> list[Op]:
    offsets = None if offset is None else [partition, offset]
    return [
        op("producer", "invoke", "send", value),
        op("producer", outcome, "send", value, offsets),
    ]


def poll(process: str, *reads: tuple[int, int, int], type_: str = "ok") -> Op:
    """reads: (value, partition, offset)"""
    return op(
        process,
        type_,
        "poll",
        [value for value, _, _ in reads],
        [[partition, offset] for _, partition, offset in reads],
    )


def final(log: list[tuple[int, int, int]], sink: list[int]) -> list[Op]:
    return [
        op("drain", "ok", "final-poll", [v for v, _, _ in log], [[p, o] for _, p, o in log]),
        op("drain", "ok", "final-sink", sink),
    ]


def clean_history() -> list[Op]:
    history: list[Op] = []
    for value in range(6):
        history += send(value, value % 2, value // 2)
    history.append(op("processor-1", "ok", "assign", [0, 1]))
    history.append(poll("processor-1", (0, 0, 0), (2, 0, 1)))
    history.append(poll("processor-1", (1, 1, 0), (3, 1, 1), (5, 1, 2)))
    history.append(poll("processor-1", (4, 0, 2)))
    log = [(0, 0, 0), (2, 0, 1), (4, 0, 2), (1, 1, 0), (3, 1, 1), (5, 1, 2)]
    return history + final(log, [0, 2, 1, 3, 5, 4])


def test_a_clean_history_has_no_anomalies() -> None:
    analysis = analyse(clean_history(), workload_seconds=1.0)
    assert {name: len(cases) for name, cases in analysis.anomalies.items()} == dict.fromkeys(
        ANOMALIES, 0
    )
    assert analysis.anomalies_json()[ABORTED_READ]["alias_of"] == G1A
    assert (analysis.produced, analysis.acked, analysis.delivered) == (6, 6, 6)
    assert analysis.lost == analysis.duplicated == 0
    assert analysis.throughput_msgs_per_s == 6.0
    assert all(latency > 0 for latency in analysis.latencies_ms)


def test_lost_write_an_acknowledged_value_that_never_reached_the_sink() -> None:
    history = [*send(0, 0, 0), *send(1, 0, 1), *send(2, 0, None)]  # 2: acks=0, no offset
    history += send(3, 0, None, outcome="info")  # unknown outcome: never counted as lost
    history.append(op("nemesis", "info", "processor-kill", "processor-1"))
    history.append(poll("processor-2", (1, 0, 1)))
    history += final([(0, 0, 0), (1, 0, 1)], [1])
    cases = lost_writes(history)
    assert [case.value for case in cases] == [0, 2]
    assert "offset [0, 0]" in cases[0].description
    assert "acks=0" in cases[1].description
    # The fault between the write and the drain is part of the story.
    assert any(o.f == "processor-kill" for o in cases[0].ops)
    assert analyse(history).lost == 2


def test_duplicate_in_the_sink_and_in_the_log() -> None:
    history = [*send(0, 0, 0), *send(1, 0, 1)]
    history.append(poll("processor-1", (0, 0, 0), (1, 0, 1)))
    history.append(op("nemesis", "info", "processor-kill", "processor-1"))
    history.append(poll("processor-2", (0, 0, 0), (1, 0, 1), (1, 0, 2)))
    # value 1 was appended twice by a producer retry (offsets 1 and 2)
    history += final([(0, 0, 0), (1, 0, 1), (1, 0, 2)], [0, 1, 0, 1, 1])
    cases = duplicates(history)
    in_sink = {
        case.value: case.details["count"] for case in cases if case.details["where"] == "sink"
    }
    in_log = {
        case.value: case.details["offsets"] for case in cases if case.details["where"] == "log"
    }
    assert in_sink == {0: 2, 1: 3}
    assert in_log == {1: [[0, 1], [0, 2]]}
    assert analyse(history).duplicated == 2


def test_aborted_read_a_value_whose_write_failed_was_read() -> None:
    history = [*send(0, 0, 0), *send(1, 0, None, outcome="fail")]
    history.append(poll("processor-1", (0, 0, 0), (1, 0, 1)))
    history += final([(0, 0, 0), (1, 0, 1)], [0, 1])
    cases = aborted_reads(history)
    assert [case.value for case in cases] == [1]
    # A failed write that nobody read is fine.
    quiet = [*send(0, 0, 0), *send(1, 0, None, outcome="fail"), poll("processor-1", (0, 0, 0))]
    assert aborted_reads(quiet + final([(0, 0, 0)], [0])) == []


def test_nonmonotonic_poll_a_consumer_went_backwards() -> None:
    log = [(value, 0, value) for value in range(4)]
    history: list[Op] = []
    for value in range(4):
        history += send(value, 0, value)
    history.append(poll("processor-1", (0, 0, 0), (1, 0, 1), (2, 0, 2)))
    history.append(poll("processor-1", (1, 0, 1), (2, 0, 2), (3, 0, 3)))
    history += final(log, [0, 1, 2, 1, 2, 3])
    nonmonotonic, skips = poll_order(history)
    assert [case.details["offsets"] for case in nonmonotonic] == [[2, 1]]
    assert skips == []


def test_poll_skip_a_consumer_jumped_over_records() -> None:
    log = [(value, 0, value) for value in range(5)]
    history: list[Op] = []
    for value in range(5):
        history += send(value, 0, value)
    history.append(poll("processor-1", (0, 0, 0), (1, 0, 1)))
    history.append(poll("processor-1", (4, 0, 4)))
    history += final(log, [0, 1, 4])
    nonmonotonic, skips = poll_order(history)
    assert nonmonotonic == []
    assert [case.details["skipped"] for case in skips] == [[2, 3]]


def test_poll_order_allows_rewinds_after_assign_failures_and_restarts() -> None:
    log = [(value, 0, value) for value in range(4)]
    history: list[Op] = []
    for value in range(4):
        history += send(value, 0, value)
    history.append(poll("processor-1", (0, 0, 0), (1, 0, 1)))
    # a rolled-back poll does not move the consumer's position...
    history.append(poll("processor-1", (2, 0, 2), type_="fail"))
    history.append(poll("processor-1", (2, 0, 2)))
    # ...a rebalance may rewind it to the committed offset...
    history.append(op("processor-1", "ok", "assign", [0]))
    history.append(poll("processor-1", (1, 0, 1), (2, 0, 2), (3, 0, 3)))
    # ...and a restarted processor is a new process.
    history.append(poll("processor-2", (1, 0, 1)))
    # Gaps in offsets (transaction markers) are not skips: the version order has no hole there.
    history += final(log, [0, 1, 2, 1, 2, 3, 1])
    assert poll_order(history) == ([], [])


def test_transaction_markers_leave_offset_gaps_that_are_not_skips() -> None:
    log = [(0, 0, 0), (1, 0, 2), (2, 0, 4)]  # offsets 1 and 3 are commit markers
    history = [*send(0, 0, 0), *send(1, 0, 2), *send(2, 0, 4)]
    history.append(poll("processor-1", (0, 0, 0)))
    history.append(poll("processor-1", (1, 0, 2), (2, 0, 4)))
    history += final(log, [0, 1, 2])
    assert poll_order(history) == ([], [])


def test_percentiles() -> None:
    assert percentile([], 50) == 0.0
    samples = [float(value) for value in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0


def test_history_files_round_trip_and_tolerate_a_torn_last_line(tmp_path: Path) -> None:
    clock = Clock()
    first = HistoryWriter(tmp_path / "a.jsonl", clock)
    second = HistoryWriter(tmp_path / "b.jsonl", clock)
    first.write("producer", "invoke", "send", 1)
    second.write("processor-1", "ok", "poll", [1], [[0, 0]])
    first.write("producer", "ok", "send", 1, [0, 0])
    first.close()
    second.close()
    with (tmp_path / "b.jsonl").open("a") as torn:
        torn.write('{"process": "processor-1", "ty')  # killed mid-line
    ops = merge([read_history(tmp_path / "a.jsonl"), read_history(tmp_path / "b.jsonl")])
    assert [(o.process, o.type, o.f) for o in ops] == [
        ("producer", "invoke", "send"),
        ("processor-1", "ok", "poll"),
        ("producer", "ok", "send"),
    ]
    assert ops[2].offsets == [0, 0]


def test_each_anomaly_gets_a_sequence_diagram() -> None:
    history = [*send(0, 0, 0), *send(1, 0, 1)]
    history.append(poll("processor-1", (0, 0, 0)))
    history.append(op("nemesis", "info", "processor-kill", "processor-1"))
    history.append(poll("processor-2", (0, 0, 0)))
    history += final([(0, 0, 0), (1, 0, 1)], [0, 0])
    analysis = analyse(history)
    (lost,) = analysis.anomalies[LOST_WRITE]
    duplicate = analysis.anomalies[DUPLICATE][0]
    for case in (lost, duplicate):
        steps = sequence(case)
        text = mermaid(steps)
        assert text.startswith("sequenceDiagram")
        assert "P->>K: send" in text
        assert "fault: processor-kill" in text
        assert sequence_svg(steps).startswith("<svg")
    assert "processor-2 commits 0 @ 0/0" in mermaid(sequence(duplicate))
    assert "<script" not in render_html([])


def test_fault_names_and_the_seeded_schedule() -> None:
    import pytest

    from odradek.check.faults import FaultError, parse_faults, schedule

    local = parse_faults("all", local=True)
    assert {"kill", "pause", "proxy-cut", "proxy-delay", "proxy-drop", "processor-kill"} <= set(
        local
    )
    assert set(parse_faults(None, local=False)) == {
        "proxy-cut",
        "proxy-delay",
        "proxy-drop",
        "processor-kill",
    }
    assert parse_faults("none", local=True) == []
    with pytest.raises(FaultError, match="own broker"):
        parse_faults("kill", local=False)
    with pytest.raises(FaultError, match="unknown fault"):
        parse_faults("meteor", local=True)
    planned = schedule(local, 20, seed=5)
    assert planned == schedule(local, 20, seed=5)  # seeded: the same run twice
    assert sorted(fault.name for fault in planned) == sorted(local)  # each fault once
    assert all(3 <= fault.at <= 16 for fault in planned)


def test_every_fault_fits_inside_a_short_fault_phase() -> None:
    """A fault started near the phase's end would be cut short by the injector's heal (or run
    past the phase): each starts at least its own length before the end (the lengths of
    DESCRIPTIONS; a broker kill or power loss 0.5 s down plus a restart, taken as 3 s)."""
    from odradek.check.faults import parse_faults, schedule

    lengths = {
        "kill": 3.0,
        "power-loss": 3.0,
        "pause": 2.0,
        "proxy-delay": 2.0,
        "proxy-drop": 1.5,
        "proxy-cut": 0.0,
        "processor-kill": 0.0,
    }
    local = parse_faults("all", local=True)
    for duration in (4, 6, 8, 10, 20, 60):
        for seed in range(6):
            for fault in schedule(local, duration, seed):
                assert fault.at + lengths[fault.name] <= duration, (duration, seed, fault)
