"""Analysers: a history in, Jepsen's anomalies and the trade-off matrix's numbers out.

Every produced value is unique, so loss and duplication are counted by value, after the final
drain (a `final-sink` op lists what the sink holds; a `final-poll` op is the whole input topic read
with read_committed, which gives each partition's version order):

    lost-write         a send was acknowledged (ok) and the value never reached the sink
    duplicate          a value is in the sink more than once, or at more than one offset of the log
    aborted-read       a value was read although its send definitely failed (fail)
    nonmonotonic-poll  one processor's successive reads of a partition went backwards (or repeated)
    poll-skip          one processor's successive reads of a partition jumped over offsets

Poll-order checks follow Jepsen's kafka workload: they compare a process's ok polls with its
previous ok poll of the same partition, in the version order of the final poll; a failed poll
changes nothing, and an `assign` op starts the process's sequence afresh (Jepsen keeps the
partitions still assigned; a Kafka consumer restarts every assigned partition at its committed
offset, which may be behind what it had read). A killed processor restarts as a new
process, as a crashed Jepsen process does.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from odradek.check import case_report, jepsen
from odradek.check.history import (
    ASSIGN,
    FAIL,
    FINAL_POLL,
    FINAL_SINK,
    INFO,
    INVOKE,
    NEMESIS,
    OK,
    POLL,
    SEND,
    TXN,
    Op,
)
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
    Case,
)

Partition = int
_NEARBY_NS = 3_000_000_000
Offset = int


@dataclass(slots=True)
class Analysis:
    """Everything the report shows about one run."""

    produced: int  # sends invoked
    acked: int  # sends ok
    failed: int  # sends fail (certainly not written)
    indeterminate: int  # sends info or never completed
    delivered: int  # distinct values in the sink
    lost: int
    duplicated: int  # values delivered more than once
    latencies_ms: list[float]
    throughput_msgs_per_s: float
    fault_counts: dict[str, int]
    anomalies: dict[str, list[Case]]
    workload: str = "sink"  # "sink" (the SQLite-sink workload) or "txn" (transactional)

    @property
    def bad_anomalies(self) -> list[str]:
        """Anomalies with a case Jepsen does not allow (its `bad-error-types`)."""
        return jepsen.bad_anomalies(self.anomalies)

    def anomalies_json(self, max_cases: int = case_report.MAX_CASES) -> dict[str, Any]:
        """Every analyser's count, allowed count, summaries, first examples and the first
        `max_cases` cases by time (0: all; `aborted-read` = `G1a`; see
        `case_report.anomalies_json`)."""
        return case_report.anomalies_json(self.anomalies, max_cases=max_cases)

    @property
    def latency_p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def latency_p99(self) -> float:
        return percentile(self.latencies_ms, 99)


def percentile(samples: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile; 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, math.ceil(percent / 100 * len(ordered)) - 1))
    return float(ordered[rank])


# -- indexes over a history ----------------------------------------------------------------------
@dataclass(slots=True)
class _Index:
    send_invokes: dict[int, Op] = field(default_factory=dict)
    send_completions: dict[int, Op] = field(default_factory=dict)
    polls: list[Op] = field(default_factory=list)  # ok and fail polls, in history order
    reads_by_value: dict[int, list[Op]] = field(default_factory=lambda: defaultdict(list))
    final_poll: Op | None = None
    final_sink: Op | None = None
    nemesis: list[Op] = field(default_factory=list)  # by time
    nemesis_times: list[int] = field(default_factory=list)  # their times, for bisection
    delivered: Counter[int] | None = None  # `_delivered`, once computed


def _index(history: Sequence[Op]) -> _Index:
    index = _Index()
    for op in history:
        if op.f == SEND:
            if op.type == INVOKE:
                index.send_invokes[op.value] = op
            else:
                index.send_completions[op.value] = op
        elif op.f == POLL:
            index.polls.append(op)
            if op.type == OK:
                for value in op.value:
                    index.reads_by_value[value].append(op)
        elif op.f == FINAL_POLL and op.type == OK:
            index.final_poll = op
        elif op.f == FINAL_SINK and op.type == OK:
            index.final_sink = op
        elif op.process == NEMESIS:
            index.nemesis.append(op)
    index.nemesis.sort(key=lambda op: op.time)
    index.nemesis_times = [op.time for op in index.nemesis]
    return index


def version_orders(final_poll: Op | None) -> dict[Partition, dict[Offset, int]]:
    """Per partition, each offset's position among the visible records (gaps are control records
    and aborted data, as in Jepsen)."""
    orders: dict[Partition, list[Offset]] = defaultdict(list)
    if final_poll is not None:
        for partition, offset in final_poll.offsets:
            orders[partition].append(offset)
    return {
        partition: {offset: position for position, offset in enumerate(sorted(set(offsets)))}
        for partition, offsets in orders.items()
    }


def _delivered(index: _Index) -> Counter[int]:
    """How many times each value is in the sink (from the final read of the sink if there is one,
    else from the committed polls). Computed once per index: a soak's sink holds millions."""
    if index.delivered is None:
        if index.final_sink is not None:
            index.delivered = Counter(index.final_sink.value)
        else:
            index.delivered = Counter(
                value for op in index.polls if op.type == OK for value in op.value
            )
    return index.delivered


def _faults_between(index: _Index, start: int, end: int) -> list[Op]:
    """The fault ops from `start` to `end` (ns, inclusive), by bisection: called once per lost
    or duplicated value, a scan of every fault made a long soak's analysis quadratic."""
    low = bisect.bisect_left(index.nemesis_times, start)
    high = bisect.bisect_right(index.nemesis_times, end)
    return index.nemesis[low:high]


# -- the analysers -------------------------------------------------------------------------------
def lost_writes(history: Sequence[Op], index: _Index | None = None) -> list[Case]:
    """`index`: the history's `_index`, when the caller has built it (analyse builds it once)."""
    index = index or _index(history)
    delivered = _delivered(index)
    end = history[-1].time if history else 0
    cases = []
    for value in sorted(index.send_completions):
        completion = index.send_completions[value]
        if completion.type != OK or value in delivered:
            continue
        invoke = index.send_invokes.get(value)
        start = invoke.time if invoke else completion.time
        ops = [op for op in (invoke, completion) if op is not None]
        # The faults around the write are the likely cause; later ones are not shown.
        nearby = _faults_between(index, start - _NEARBY_NS, completion.time + _NEARBY_NS)
        ops += nearby or _faults_between(index, start, end)[:1]
        if index.final_sink is not None:
            ops.append(index.final_sink)
        where = f" at offset {completion.offsets}" if completion.offsets else " (no offset: acks=0)"
        cases.append(
            Case(
                LOST_WRITE,
                value,
                f"value {value} was acknowledged{where} and never reached the sink",
                sorted(ops, key=lambda op: op.time),
                {"offsets": completion.offsets},
            )
        )
    return cases


def duplicates(history: Sequence[Op], index: _Index | None = None) -> list[Case]:
    """`index`: the history's `_index`, when the caller has built it (analyse builds it once)."""
    index = index or _index(history)
    cases = []
    for value, count in sorted(_delivered(index).items()):
        if count < 2:
            continue
        reads = index.reads_by_value.get(value, [])
        invoke = index.send_invokes.get(value)
        ops = [op for op in (invoke, index.send_completions.get(value)) if op is not None]
        ops += reads
        if reads:
            ops += _faults_between(index, reads[0].time, reads[-1].time)
        offsets = [read.offsets[read.value.index(value)] for read in reads if value in read.value]
        cases.append(
            Case(
                DUPLICATE,
                value,
                f"value {value} is in the sink {count} times",
                sorted(ops, key=lambda op: op.time),
                {"where": "sink", "count": count, "read_at": offsets},
            )
        )
    if index.final_poll is not None:
        positions: dict[int, list[list[int]]] = defaultdict(list)
        for value, offset in zip(index.final_poll.value, index.final_poll.offsets, strict=True):
            positions[value].append(offset)
        for value, offsets in sorted(positions.items()):
            if len(offsets) < 2:
                continue
            ops = [
                op
                for op in (index.send_invokes.get(value), index.send_completions.get(value))
                if op is not None
            ]
            if ops:
                ops += _faults_between(index, ops[0].time, ops[-1].time)
            cases.append(
                Case(
                    DUPLICATE,
                    value,
                    f"value {value} was written to the log {len(offsets)} times, at {offsets}",
                    sorted(ops, key=lambda op: op.time),
                    {"where": "log", "count": len(offsets), "offsets": offsets},
                )
            )
    return cases


def aborted_reads(history: Sequence[Op], index: _Index | None = None) -> list[Case]:
    """`index`: the history's `_index`, when the caller has built it (analyse builds it once)."""
    index = index or _index(history)
    # Where each failed value was seen: its reads, then the final poll, then the final sink
    # (only the failed values: a copy for every value of a soak took gigabytes).
    failed = {value for value, op in index.send_completions.items() if op.type == FAIL}
    finals: dict[int, list[Op]] = defaultdict(list)
    for final in (index.final_poll, index.final_sink):
        if final is not None and failed:
            for value in {value for value in final.value if value in failed}:
                finals[value].append(final)
    cases = []
    for value in sorted(failed):
        completion = index.send_completions[value]
        seen = index.reads_by_value.get(value, []) + finals.get(value, [])
        if not seen:
            continue
        invoke = index.send_invokes.get(value)
        ops = [op for op in (invoke, completion) if op is not None] + seen[:3]
        cases.append(
            Case(
                ABORTED_READ,
                value,
                f"value {value} was read although its write failed",
                sorted(ops, key=lambda op: op.time),
            )
        )
    return cases


def poll_order(history: Sequence[Op], index: _Index | None = None) -> tuple[list[Case], list[Case]]:
    """(nonmonotonic-poll cases, poll-skip cases); `index` as for `lost_writes`."""
    index = index or _index(history)
    orders = version_orders(index.final_poll)
    by_position: dict[Partition, dict[int, Offset]] = {
        partition: {position: offset for offset, position in order.items()}
        for partition, order in orders.items()
    }
    nonmonotonic: list[Case] = []
    skips: list[Case] = []
    # process -> partition -> (last position read, the op that read it)
    last: dict[str, dict[Partition, tuple[int, Op]]] = defaultdict(dict)
    for op in history:
        if op.f == ASSIGN and op.type == OK:
            # A new assignment starts each partition at its committed offset, which may be behind
            # what this consumer read (at-least-once) or ahead of it (at-most-once).
            last[op.process] = {}
            continue
        if op.f != POLL or op.type != OK:
            continue
        reads: dict[Partition, list[int]] = defaultdict(list)
        for partition, offset in op.offsets:
            position = orders.get(partition, {}).get(offset)
            if position is not None:
                reads[partition].append(position)
        for partition, positions in reads.items():
            previous = last[op.process].get(partition)
            sequence = ([previous[0]] if previous else []) + positions
            for step, (earlier, later) in enumerate(itertools.pairwise(sequence)):
                delta = later - earlier
                if delta == 1:
                    continue
                ops = [previous[1], op] if previous and step == 0 else [op]
                offsets = (by_position[partition][earlier], by_position[partition][later])
                if delta < 1:
                    nonmonotonic.append(
                        Case(
                            NONMONOTONIC_POLL,
                            None,
                            f"{op.process} read partition {partition} at offset {offsets[1]} "
                            f"after offset {offsets[0]}",
                            ops,
                            {"partition": partition, "offsets": list(offsets), "delta": delta},
                        )
                    )
                else:
                    skipped = [
                        by_position[partition][position] for position in range(earlier + 1, later)
                    ]
                    skips.append(
                        Case(
                            POLL_SKIP,
                            None,
                            f"{op.process} read partition {partition} at offset {offsets[1]} "
                            f"right after offset {offsets[0]}, skipping {len(skipped)} record(s)",
                            ops,
                            {"partition": partition, "offsets": list(offsets), "skipped": skipped},
                        )
                    )
            last[op.process][partition] = (positions[-1], op)
    return nonmonotonic, skips


def analyse(history: Sequence[Op], workload_seconds: float | None = None) -> Analysis:
    """All analysers and the run's numbers.

    `workload_seconds` is how long the workload ran (the drain excluded); throughput is the
    values that reached the sink during it, per second. A history with `txn` ops is the
    transactional workload's (`analyse_txn`).
    """
    if any(op.f == TXN for op in history):
        return analyse_txn(history, workload_seconds)
    # Jepsen's analysers first: their indexes are gone before this module's is built.
    queue = jepsen.analyse_queue(history, subscribe=True)
    index = _index(history)
    delivered = _delivered(index)
    completions = index.send_completions
    acked = sum(1 for op in completions.values() if op.type == OK)
    failed = sum(1 for op in completions.values() if op.type == FAIL)
    indeterminate = len(index.send_invokes) - acked - failed
    first_commit: dict[int, int] = {}
    for op in index.polls:
        if op.type == OK:
            for value in op.value:
                first_commit.setdefault(value, op.time)
    latencies = [
        (first_commit[value] - invoke.time) / 1e6
        for value, invoke in index.send_invokes.items()
        if value in first_commit
    ]
    if workload_seconds is None:
        sends = [op.time for op in index.send_invokes.values()]
        workload_seconds = (max(sends) - min(sends)) / 1e9 if len(sends) > 1 else 0.0
    start = min((op.time for op in index.send_invokes.values()), default=0)
    window_end = start + int((workload_seconds or 0) * 1e9)
    in_window = sum(1 for moment in first_commit.values() if moment <= window_end)
    throughput = in_window / workload_seconds if workload_seconds else 0.0
    del first_commit
    nonmonotonic, skips = poll_order(history, index)
    # The sink workload's own lost-write, duplicate (sink and log), G1a and poll order; the rest
    # is Jepsen's, over the same history. The index is built once for all of them: each built
    # its own, and a soak's history held two at a time.
    anomalies = {
        **queue,
        LOST_WRITE: lost_writes(history, index),
        DUPLICATE: duplicates(history, index),
        G1A: aborted_reads(history, index),
        NONMONOTONIC_POLL: nonmonotonic,
        POLL_SKIP: skips,
    }
    jepsen.mark_allowed(anomalies, subscribe=True)  # the processor subscribes (rebalances)
    fault_counts = _fault_counts(index.nemesis)
    return Analysis(
        produced=len(index.send_invokes),
        acked=acked,
        failed=failed,
        indeterminate=max(0, indeterminate),
        delivered=len(delivered),
        lost=len(anomalies[LOST_WRITE]),
        duplicated=sum(1 for count in delivered.values() if count > 1),
        latencies_ms=latencies,
        throughput_msgs_per_s=throughput,
        fault_counts=fault_counts,
        anomalies=anomalies,
    )


def _fault_counts(nemesis: Sequence[Op]) -> dict[str, int]:
    counts: Counter[str] = Counter(
        op.f for op in nemesis if op.type in (INFO, OK) and not op.extra.get("end")
    )
    return dict(sorted(counts.items()))


def analyse_txn(history: Sequence[Op], workload_seconds: float | None = None) -> Analysis:
    """The transactional workload's numbers and Jepsen's analysers (`jepsen.analyse_queue`).

    Counted per value sent: `acked` in committed transactions, `failed` in aborted ones,
    `indeterminate` the rest; `delivered` the distinct values an ok poll read (the final drain
    included); `lost` = lost-write + unseen; `duplicated` = values at two offsets or more.
    Latency: from the invoke of the transaction that sent a value to the completion of the first
    committed operation that read it (the drain excluded), ms. The consumers subscribe when the
    history has `subscribe` ops (then rebalances excuse poll-skip and nonmonotonic-poll)."""
    queue = jepsen.build(history)
    subscribe = any(item.subscribe for item in queue.ops)
    anomalies = jepsen.analyse_queue(history, subscribe=subscribe, queue=queue)
    invoked: dict[int, int] = {}
    for op in history:
        if op.f == TXN and op.type == INVOKE:
            for mop in op.value or []:
                if mop and mop[0] == SEND:
                    invoked[int(mop[2])] = op.time
    acked = failed = 0
    for item in queue.ops:
        if item.op.f == TXN:
            acked += len(item.sends) if item.type == OK else 0
            failed += len(item.sends) if item.type == FAIL else 0
    first_read: dict[int, int] = {}
    for item in queue.ops:
        if item.type == OK and item.process != "drain" and item.op.f == TXN:
            for _, _, value in item.reads:
                first_read.setdefault(value, item.op.time)
    delivered = {value for value, readers in queue.readers_of.items() if readers}
    latencies = [
        (first_read[value] - moment) / 1e6
        for value, moment in invoked.items()
        if value in first_read
    ]
    if workload_seconds is None:
        moments = list(invoked.values())
        workload_seconds = (max(moments) - min(moments)) / 1e9 if len(moments) > 1 else 0.0
    start = min(invoked.values(), default=0)
    window_end = start + int(workload_seconds * 1e9)
    in_window = sum(1 for moment in first_read.values() if moment <= window_end)
    nemesis = [op for op in history if op.process == NEMESIS]
    return Analysis(
        produced=len(invoked),
        acked=acked,
        failed=failed,
        indeterminate=max(0, len(invoked) - acked - failed),
        delivered=len(delivered),
        lost=len(anomalies[LOST_WRITE]) + len(anomalies[UNSEEN]),
        duplicated=len(anomalies[DUPLICATE]),
        latencies_ms=latencies,
        throughput_msgs_per_s=in_window / workload_seconds if workload_seconds else 0.0,
        fault_counts=_fault_counts(nemesis),
        anomalies=anomalies,
        workload="txn",
    )


__all__ = [
    "ABORTED_READ",
    "ANOMALIES",
    "DUPLICATE",
    "G0",
    "G1A",
    "G1C",
    "INCONSISTENT_OFFSETS",
    "INT_NONMONOTONIC_POLL",
    "INT_NONMONOTONIC_SEND",
    "INT_POLL_SKIP",
    "INT_SEND_SKIP",
    "LOST_WRITE",
    "NONMONOTONIC_POLL",
    "NONMONOTONIC_SEND",
    "POLL_SKIP",
    "UNSEEN",
    "Analysis",
    "Case",
    "aborted_reads",
    "analyse",
    "analyse_txn",
    "duplicates",
    "lost_writes",
    "percentile",
    "poll_order",
    "version_orders",
]
