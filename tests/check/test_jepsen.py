"""Jepsen's Kafka analysers (odradek.check.jepsen) on hand-written transactional histories: each
anomaly is found, Jepsen's allowed types pass, and clean histories have none."""

from __future__ import annotations

from typing import Any

from odradek.check.analysis import analyse
from odradek.check.case_report import anomalies_json
from odradek.check.history import Op
from odradek.check.jepsen import (
    ABORTED_READ,
    ANOMALIES,
    DUPLICATE,
    G0,
    G1A,
    G1C,
    INCONSISTENT_OFFSETS,
    INT_NONMONOTONIC_POLL,
    INT_NONMONOTONIC_SEND,
    INT_POLL_SKIP,
    INT_SEND_SKIP,
    LOST_WRITE,
    NONMONOTONIC_POLL,
    NONMONOTONIC_SEND,
    POLL_SKIP,
    UNSEEN,
    analyse_queue,
    bad_anomalies,
)

_time = [0]


def _op(process: str, type_: str, f: str, value: Any, **extra: Any) -> Op:
    _time[0] += 1_000_000
    return Op(process, type_, f, value, None, _time[0], extra)


def send(partition: int, offset: int | None, value: int) -> list[Any]:
    return ["send", partition, [offset, value]]


def poll(*reads: tuple[int, int, int]) -> list[Any]:
    """reads: (partition, offset, value)"""
    return ["poll", [list(read) for read in reads]]


def txn(process: str, *mops: list[Any], type_: str = "ok", **extra: Any) -> list[Op]:
    """An invoke and its completion; the invoke has the sends' values and empty polls."""
    invoked = [["send", m[1], m[2][1]] if m[0] == "send" else ["poll"] for m in mops]
    return [_op(process, "invoke", "txn", invoked), _op(process, type_, "txn", list(mops), **extra)]


def drain(*reads: tuple[int, int, int]) -> Op:
    """The final drain: the whole topic read_committed (the sink workload's `final-poll`)."""
    return Op(
        "drain",
        "ok",
        "final-poll",
        [value for _, _, value in reads],
        [[partition, offset] for partition, offset, _ in reads],
        _time[0] + 1,
    )


def counts(found: dict[str, list[Any]]) -> dict[str, int]:
    return {name: len(cases) for name, cases in found.items() if cases}


def clean() -> list[Op]:
    history = [*txn("txn-0", send(0, 0, 1), send(1, 0, 2))]
    history += txn("txn-1", send(0, 1, 3), poll((0, 0, 1), (0, 1, 3)))
    history += txn("txn-0", poll((1, 0, 2)), send(1, 1, 4))
    history += txn("txn-1", poll((1, 0, 2), (1, 1, 4)))
    history += txn("txn-0", poll((0, 0, 1), (0, 1, 3)))
    # an aborted transaction's offsets (2 on partition 0) are never read: a gap, not a skip
    history += txn("txn-1", send(0, 2, 99), type_="fail")
    history += txn("txn-0", send(0, 4, 5))
    history += txn("txn-1", poll((0, 4, 5)))
    history.append(drain((0, 0, 1), (0, 1, 3), (0, 4, 5), (1, 0, 2), (1, 1, 4)))
    return history


def test_a_clean_transactional_history_has_no_anomalies() -> None:
    found = analyse_queue(clean())
    assert counts(found) == {}
    assert list(found) == list(ANOMALIES)
    analysis = analyse(clean(), workload_seconds=1.0)
    assert analysis.workload == "txn"
    assert (analysis.produced, analysis.acked, analysis.failed) == (6, 5, 1)
    assert (analysis.delivered, analysis.lost, analysis.duplicated) == (5, 0, 0)
    assert analysis.bad_anomalies == []
    assert all(latency > 0 for latency in analysis.latencies_ms)


def test_inconsistent_offsets_two_values_at_one_offset() -> None:
    history = [*txn("txn-0", send(0, 0, 1)), *txn("txn-1", send(0, 0, 2))]
    history.append(drain((0, 0, 2)))
    (case,) = analyse_queue(history)[INCONSISTENT_OFFSETS]
    assert case.details == {"partition": 0, "offset": 0, "values": [1, 2]}
    assert not case.allowed


def test_lost_write_is_skipped_over_and_unseen_is_never_visible() -> None:
    history = [*txn("txn-0", send(0, 0, 1), send(0, 1, 2), send(0, 2, 3))]
    history += txn("txn-0", send(0, 3, 4))  # the log's tail, lost with nothing after it
    history.append(drain((0, 0, 1), (0, 2, 3)))
    found = analyse_queue(history)
    (lost,) = found[LOST_WRITE]
    assert (lost.value, lost.details["offset"], lost.details["max_read_index"]) == (2, 1, 2)
    (never,) = found[UNSEEN]
    assert never.value == 4
    assert "never read" in never.description
    # an unknown (info) transaction nobody read from is neither
    quiet = [*txn("txn-0", send(0, 0, 1)), *txn("txn-0", send(0, 1, 2), type_="info")]
    quiet.append(drain((0, 0, 1)))
    assert counts(analyse_queue(quiet)) == {}
    assert analyse(history).lost == 2


def test_duplicate_one_value_at_two_offsets() -> None:
    history = [*txn("txn-0", send(0, 0, 1))]
    history.append(drain((0, 0, 1), (0, 1, 1)))
    (case,) = analyse_queue(history)[DUPLICATE]
    assert (case.value, case.details["offsets"]) == (1, [[0, 0], [0, 1]])


def test_g1a_an_aborted_transactions_write_was_read() -> None:
    history = [*txn("txn-0", send(0, 0, 1), type_="fail")]
    history += txn("txn-1", poll((0, 0, 1)))
    found = analyse_queue(history)
    (case,) = found[G1A]
    assert case.value == 1
    assert not case.allowed
    assert anomalies_json(found)[ABORTED_READ]["count"] == 1
    assert anomalies_json(found)[ABORTED_READ]["alias_of"] == G1A


def test_g0_write_cycle_is_found_and_allowed() -> None:
    # T1 wrote before T2 on partition 0, T2 before T1 on partition 1
    history = [*txn("txn-0", send(0, 0, 1), send(1, 1, 2))]
    history += txn("txn-1", send(0, 1, 3), send(1, 0, 4))
    history.append(drain((0, 0, 1), (0, 1, 3), (1, 0, 4), (1, 1, 2)))
    found = analyse_queue(history)
    (cycle,) = found[G0]
    assert cycle.allowed
    assert [step["type"] for step in cycle.details["steps"]] == ["ww", "ww"]
    assert found[G1C] == []
    assert bad_anomalies(found) == []


def test_g1c_write_read_cycle_is_bad_and_one_with_a_ww_edge_is_allowed() -> None:
    # each transaction read what the other wrote: only possible reading uncommitted data
    history = [*txn("txn-0", send(0, 0, 1), poll((1, 0, 2)))]
    history += txn("txn-1", send(1, 0, 2), poll((0, 0, 1)))
    found = analyse_queue(history)
    (cycle,) = found[G1C]
    assert cycle.details["ww_edges"] == 0
    assert not cycle.allowed
    assert bad_anomalies(found) == [G1C]
    # T0 -ww-> T1 on partition 0, T1 -wr-> T0 on partition 1: Kafka's interleaving
    mixed = [*txn("txn-0", send(0, 0, 1), poll((1, 0, 3)))]
    mixed += txn("txn-1", send(0, 1, 2), send(1, 0, 3))
    found = analyse_queue(mixed)
    (cycle,) = found[G1C]
    assert cycle.details["ww_edges"] == 1
    assert cycle.allowed


def test_poll_skip_and_nonmonotonic_poll_between_a_processes_polls() -> None:
    history = [*txn("txn-0", *(send(0, offset, offset) for offset in range(5)))]
    history += txn("txn-1", poll((0, 0, 0), (0, 1, 1)))
    history += txn("txn-1", poll((0, 3, 3)))  # skips offset 2
    history += txn("txn-1", poll((0, 2, 2)))  # back to 2
    history.append(drain(*((0, offset, offset) for offset in range(5))))
    found = analyse_queue(history)
    (skip,) = found[POLL_SKIP]
    assert (skip.details["skipped"], skip.details["delta"]) == ([2], 2)
    (back,) = found[NONMONOTONIC_POLL]
    assert (back.details["offsets"], back.details["delta"]) == ([3, 2], -1)
    assert bad_anomalies(found) == [POLL_SKIP, NONMONOTONIC_POLL]
    # under subscribe, rebalances make both normal
    subscribed = analyse_queue(history, subscribe=True)
    assert bad_anomalies(subscribed) == []
    # an assign that drops the partition forgets the position; one that keeps it does not
    kept = [*history[:4], _op("txn-1", "ok", "assign", [0, 1]), *history[4:6]]
    assert len(analyse_queue(kept)[POLL_SKIP]) == 1
    dropped = [*history[:4], _op("txn-1", "ok", "assign", [1]), *history[4:6]]
    assert analyse_queue(dropped)[POLL_SKIP] == []
    # a new process (a crashed client's successor) starts afresh
    fresh = history[:4] + txn("txn-2", poll((0, 3, 3)))
    assert analyse_queue(fresh)[POLL_SKIP] == []


def test_nonmonotonic_send_a_later_send_landed_earlier() -> None:
    history = [*txn("txn-0", send(0, 3, 10))]
    history += txn("txn-0", send(0, 1, 11))
    history += txn("txn-1", send(0, 2, 12), send(0, 4, 13))
    found = analyse_queue(history)
    (case,) = found[NONMONOTONIC_SEND]
    assert (case.details["values"], case.details["delta"]) == ([10, 11], -2)
    assert case.ops[0].process == case.ops[1].process == "txn-0"


def test_int_poll_skip_and_int_nonmonotonic_poll_inside_one_transaction() -> None:
    history = [*txn("txn-0", *(send(0, offset, offset) for offset in range(4)))]
    history += txn("txn-1", poll((0, 0, 0), (0, 2, 2)))  # offset 1 exists
    history += txn("txn-2", poll((0, 3, 3)), poll((0, 1, 1)))  # two polls, backwards
    found = analyse_queue(history)
    (skip,) = found[INT_POLL_SKIP]
    assert skip.details["skipped"] == [1]
    (back,) = found[INT_NONMONOTONIC_POLL]
    assert back.details["values"] == [3, 1]
    # a rebalance during the transaction excuses its partitions, as Jepsen's rebalance log does
    excused = [*txn("txn-0", *(send(0, offset, offset) for offset in range(4)))]
    excused += txn("txn-1", poll((0, 0, 0), (0, 2, 2)), rebalanced=[0])
    assert analyse_queue(excused)[INT_POLL_SKIP] == []


def test_int_send_skip_is_allowed_and_int_nonmonotonic_send_is_not() -> None:
    history = [*txn("txn-0", send(0, 0, 1), send(0, 2, 3))]
    history += txn("txn-1", send(0, 1, 2))  # landed between txn-0's two sends
    history += txn("txn-2", send(1, 1, 4), send(1, 0, 5))  # second send got the earlier offset
    history.append(drain((0, 0, 1), (0, 1, 2), (0, 2, 3), (1, 0, 5), (1, 1, 4)))
    found = analyse_queue(history)
    (skip,) = found[INT_SEND_SKIP]
    assert skip.details["skipped"] == [2]
    assert skip.allowed
    (back,) = found[INT_NONMONOTONIC_SEND]
    assert back.details["values"] == [4, 5]
    assert not back.allowed
    assert bad_anomalies(found) == [INT_NONMONOTONIC_SEND]


def test_the_json_lists_every_analyser() -> None:
    history = [*txn("txn-0", send(0, 0, 1), type_="fail"), *txn("txn-1", poll((0, 0, 1)))]
    report = anomalies_json(analyse_queue(history))
    assert set(report) == {*ANOMALIES, ABORTED_READ}
    assert report[G1A]["count"] == 1
    assert report[G1A]["bad"]
    assert report[G1A]["examples"][0]["ops"][0]["type"] == "fail"
    assert all(report[name]["count"] == 0 for name in ANOMALIES if name != G1A)


def test_the_sink_workloads_history_gets_the_new_analysers_too() -> None:
    def sink_send(value: int, partition: int, offset: int | None) -> list[Op]:
        return [
            _op("producer", "invoke", "send", value, partition=partition),
            Op("producer", "ok", "send", value, None if offset is None else [partition, offset]),
        ]

    # value 1 acknowledged at offset 1, the log truncated, value 2 acknowledged at offset 1 too
    history = [*sink_send(0, 0, 0), *sink_send(1, 0, 1), *sink_send(2, 0, 1)]
    history += sink_send(3, 0, None)  # acks=0: no offset, never arrived
    history.append(Op("processor-1", "ok", "poll", [0, 1], [[0, 0], [0, 1]], _time[0] + 1))
    history.append(Op("drain", "ok", "final-poll", [0, 2], [[0, 0], [0, 1]], _time[0] + 2))
    history.append(Op("drain", "ok", "final-sink", [0, 1], None, _time[0] + 3))
    analysis = analyse(history)
    assert [case.details["values"] for case in analysis.anomalies[INCONSISTENT_OFFSETS]] == [[1, 2]]
    # 2 and 3 never reached the sink; 3 was never visible at all (2 is in the log)
    assert [case.value for case in analysis.anomalies[LOST_WRITE]] == [2, 3]
    assert [case.value for case in analysis.anomalies[UNSEEN]] == [3]
    assert analysis.anomalies[UNSEEN][0].details["partition"] == 0


def test_sequence_diagrams_name_the_leader_when_given_a_lookup() -> None:
    from odradek.check.report import leader_function, mermaid, sequence, sequence_svg

    history = [*txn("txn-0", send(0, 0, 1), type_="fail"), *txn("txn-1", poll((0, 0, 1)))]
    (case,) = analyse_queue(history)[G1A]
    calls: list[tuple[str, int, float]] = []

    def leader(topic: str, partition: int, time_ms: float) -> int | None:
        calls.append((topic, partition, time_ms))
        return 2 if time_ms < case.ops[1].time / 1e6 else 3

    text = mermaid(sequence(case, leader=leader, topic="t"))
    assert "txn-0 aborts" in text
    assert "txn-1 polls 1 @ 0/0" in text
    assert "leader 0: broker 2" in text
    assert "leader 0: broker 3" in text
    assert {(topic, partition) for topic, partition, _ in calls} == {("t", 0)}
    assert "leader" not in mermaid(sequence(case))  # without a lookup, no leader notes
    # a mapping works too: the latest entry at or before the moment
    lookup = leader_function({("t", 0, 0.0): 1, ("t", 0, case.ops[1].time / 1e6): 4})
    assert lookup is not None
    steps = sequence(case, leader=lookup, topic="t")
    assert "leader 0: broker 1" in mermaid(steps)
    assert "leader 0: broker 4" in mermaid(steps)
    assert sequence_svg(steps).startswith("<svg")
