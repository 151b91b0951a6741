"""Phase measures and the speed-order explanation, on hand-written histories and costs."""

from __future__ import annotations

from typing import Any

import pytest

from odradek.check.history import Op
from odradek.check.measures import (
    STALL_SECONDS,
    BatchCosts,
    Window,
    batch_costs,
    fault_windows,
    recovery,
    speed,
)
from odradek.check.speed_order import Measured, measured_order, reasons, settings
from odradek.client import Guarantee

MS = 1_000_000
S = 1_000_000_000


def at(time: int, process: str, type_: str, f: str, value: Any = None, **extra: Any) -> Op:
    return Op(process, type_, f, value, None, time, extra)


def send(value: int, time: int) -> Op:
    return at(time, "producer", "invoke", "send", value)


def commit(time: int, *values: int) -> Op:
    return Op("processor-1", "ok", "poll", list(values), [[0, v] for v in values], time)


def test_speed_counts_the_window_only() -> None:
    history = [
        send(0, 0),  # before the window: neither its latency nor its commit count
        send(1, 1 * S),
        send(2, 1 * S + 500 * MS),
        commit(1 * S + 10 * MS, 0, 1),
        commit(1 * S + 530 * MS, 2),
        send(3, 3 * S),  # after the window
        commit(3 * S + 5 * MS, 3),
    ]
    measured = speed(history, Window("fault-free", 1 * S, 2 * S))
    assert (measured.produced, measured.committed) == (2, 3)
    assert measured.throughput_msgs_per_s == 3.0
    assert sorted(measured.latencies_ms) == [10.0, 30.0]
    assert measured.latency_p99 == 30.0
    json = measured.as_json()
    assert "produce call" in json["latency_ms"]["measures"]


def test_a_value_committed_twice_counts_its_first_commit() -> None:
    history = [send(0, 0), commit(20 * MS, 0), commit(90 * MS, 0)]
    assert speed(history, Window("w", 0, S)).latencies_ms == [20.0]


def test_batch_costs_are_means_over_the_window() -> None:
    def batch(time: int, size: int, **costs: float) -> Op:
        return at(time, "processor-1", "ok", "batch", size, **costs)

    history = [
        batch(1 * S, 100, fetch_ms=1.0, sink_ms=2.0, commit_ms=6.0, total_ms=9.0),
        batch(2 * S, 50, fetch_ms=3.0, sink_ms=4.0, commit_ms=2.0, total_ms=7.0),
        batch(9 * S, 10, fetch_ms=99.0, sink_ms=99.0, commit_ms=99.0, total_ms=999.0),
    ]
    costs = batch_costs(history, Window("w", 0, 3 * S))
    assert (costs.batches, costs.messages, costs.batch_size) == (2, 150, 75.0)
    assert (costs.fetch_ms, costs.sink_ms, costs.commit_ms, costs.processing_ms) == (2, 3, 4, 8)
    assert costs.total_ms == 10  # the poll wait included
    assert costs.other_ms == 1.0
    assert costs.per_message_ms("commit") == pytest.approx(4 / 75)
    assert batch_costs(history, Window("w", 10 * S, 11 * S)) == BatchCosts()


def nemesis(time: int, f: str, **extra: Any) -> Op:
    return at(time, "nemesis", "info", f, None, **extra)


def test_fault_windows_pair_starts_and_ends() -> None:
    history = [
        nemesis(1 * S, "kill"),
        nemesis(2 * S, "kill", end=True),
        nemesis(3 * S, "proxy-cut", fired=True),
        nemesis(4 * S, "proxy-cut", fired=False),  # never happened
        nemesis(5 * S, "processor-kill", batch_size=3),
        nemesis(6 * S, "pause"),  # healed at the phase's end, no end op
    ]
    assert fault_windows(history) == [
        ("kill", 1 * S, 2 * S),
        ("proxy-cut", 3 * S, 3 * S),
        ("processor-kill", 5 * S, 5 * S),
        ("pause", 6 * S, 6 * S),
    ]


def test_recovery_from_each_faults_end_to_the_next_sink_commit() -> None:
    history = [commit(t * 100 * MS, t) for t in range(10, 21)]  # moving: every 0.1 s to 2 s
    history += [nemesis(15 * 100 * MS, "kill"), nemesis(2 * S, "kill", end=True)]
    history += [commit(5 * S, 50)]  # the sink stood still from 2 s to 5 s
    history += [nemesis(5 * S + 500 * MS, "processor-kill")]
    history += [commit(7 * S, 70)]  # stood still 2 s
    history += [nemesis(8 * S, "pause"), nemesis(9 * S, "pause", end=True)]  # never recovered
    history += [nemesis(0, "kill"), nemesis(S // 2, "kill", end=True)]  # an earlier phase
    history.sort(key=lambda op: op.time)
    result = recovery(history, Window("faults", 1 * S, 10 * S), origin=1 * S)
    assert [(fault.fault, fault.ended) for fault in result.faults] == [
        ("kill", 1.0),
        ("processor-kill", 4.5),
        ("pause", 8.0),
    ]
    assert [fault.seconds for fault in result.faults] == [3.0, 1.5, None]
    assert (result.p50, result.max, result.unrecovered) == (1.5, 3.0, 1)
    # stalls: 2 s -> 5 s, 5 s -> 7 s, and 7 s to the phase's end at 10 s
    assert result.stalls == [(1.0, 4.0), (4.0, 6.0), (6.0, 9.0)]
    assert result.stood_still_seconds == 8.0
    assert result.as_json()["stall_threshold_s"] == STALL_SECONDS


def test_a_sink_that_keeps_moving_never_stood_still() -> None:
    history = [commit(t * 100 * MS, t) for t in range(0, 31)]
    history.insert(12, nemesis(1 * S + 150 * MS, "proxy-cut", fired=True))
    result = recovery(history, Window("faults", 0, 3 * S))
    assert result.stood_still_seconds == 0.0
    assert [fault.seconds for fault in result.faults] == [pytest.approx(0.05)]


def costs(*, sink: float, commit: float, fetch: float = 1.0, size: int = 100) -> BatchCosts:
    return BatchCosts(10, 10 * size, fetch, sink, commit, sink + commit + 0.2)


def test_no_reason_when_the_order_is_the_seeds() -> None:
    runs = [
        Measured(Guarantee.AT_MOST_ONCE, 9000, costs(sink=2, commit=0)),
        Measured(Guarantee.AT_LEAST_ONCE, 8000, costs(sink=2, commit=5)),
        Measured(Guarantee.EXACTLY_ONCE, 7000, costs(sink=9, commit=0)),
    ]
    assert measured_order(runs) == list(Guarantee)
    assert reasons(runs) == []


def test_the_reason_names_the_step_whose_measured_cost_differs_most() -> None:
    runs = [
        Measured(Guarantee.AT_MOST_ONCE, 5000, costs(sink=3, commit=7)),
        Measured(Guarantee.AT_LEAST_ONCE, 6000, costs(sink=3, commit=5)),
        Measured(Guarantee.EXACTLY_ONCE, 9000, costs(sink=4, commit=0, fetch=4)),
    ]
    assert measured_order(runs) == [
        Guarantee.EXACTLY_ONCE,
        Guarantee.AT_LEAST_ONCE,
        Guarantee.AT_MOST_ONCE,
    ]
    first, second = reasons(runs)
    assert first.startswith("exactly-once 9,000 vs at-least-once 6,000 msg/s, 50% apart")
    assert "at-least-once waits 5.0 ms for a synchronous Kafka offset commit after" in first
    assert "offsets ride in its 4.0 ms SQLite transaction" in first
    assert "waiting 4.0 ms per batch in poll" in first  # what exactly-once did with the time
    assert "at-most-once waits 7.0 ms for a synchronous Kafka offset commit before" in second

    # The same order from other costs gives another reason: it is read from the measurement.
    runs[0] = Measured(Guarantee.AT_MOST_ONCE, 5000, costs(sink=9, commit=5))
    assert "at-most-once spends 9.0 ms in its SQLite transaction" in reasons(runs)[1]


def test_a_close_call_says_it_is_within_the_noise() -> None:
    runs = [
        Measured(Guarantee.AT_MOST_ONCE, 7000, costs(sink=3, commit=6)),
        Measured(Guarantee.AT_LEAST_ONCE, 7100, costs(sink=3, commit=6, fetch=2)),
    ]
    (line,) = reasons(runs)
    assert "1% apart (within this run's 5% noise)" in line


def test_settings_state_acks_commit_point_and_transactions() -> None:
    assert settings(Guarantee.AT_MOST_ONCE).line() == (
        "acks=0; sync Kafka offset commit before processing; no transactions"
    )
    assert settings(Guarantee.AT_LEAST_ONCE).acks == "all"
    exactly_once = settings(Guarantee.EXACTLY_ONCE)
    assert "offsets in the sink's SQLite transaction" in exactly_once.commit
    assert "rows + offsets" in exactly_once.transactions


def test_the_time_stood_still_counts_the_phase_only() -> None:
    """A stall that runs on into the drain counts up to the phase's end: the total reads against
    the phase's length (never "12.5 s of 10.0 s")."""
    history = [commit(t * 100 * MS, t) for t in range(0, 21)]  # moving until 2 s
    history += [commit(14 * S, 140)]  # then still until 14 s, in the drain
    result = recovery(history, Window("faults", 0, 10 * S))
    assert result.stalls == [(2.0, 14.0)]
    assert result.stood_still_seconds == 8.0
