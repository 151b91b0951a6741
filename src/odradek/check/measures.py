"""Numbers of one phase of a run, from its history: speed, what each batch cost, recovery.

A run has two phases on the same broker and workload (see `runner.py`): a fault-free phase, which
gives the speed and latency rows, and a fault phase, which gives loss, duplicates, anomalies (in
`analysis.py`) and recovery. A phase is a window `[start, end)` of the history's clock (ns since
the run started): from the first produce of the phase to the last.

    speed      values first committed to the sink during the window, per second; latency from
               each value's produce call to the sink commit that first held it (ms)
    costs      the processor's `batch` ops in the window: mean ms per batch waiting in poll, in the
               SQLite transaction, in a synchronous Kafka offset commit, after poll in all
               (`processing`), and in all with the poll wait (`total`)
    recovery   per fault, the time from the fault's end until the sink next committed (s); and
               the time the sink stood still in all: every gap of more than `STALL_SECONDS`
               between sink commits from the phase's start on (the stalls run to the sink's
               last commit; the total counts their part inside the phase)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from odradek.check.analysis import percentile
from odradek.check.history import BATCH, INVOKE, NEMESIS, OK, POLL, SEND, Op

# A gap between two sink commits longer than this is the sink standing still (calm batches of
# this workload commit every few ms; a fault that stops the pipeline stops them for seconds).
STALL_SECONDS = 0.5

PROCESSOR_KILL = "processor-kill"


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True, slots=True)
class Window:
    """A phase of the run: its name and its bounds on the history clock (ns)."""

    name: str
    start: int
    end: int

    @property
    def seconds(self) -> float:
        return max(0, self.end - self.start) / 1e9


@dataclass(slots=True)
class Speed:
    """Throughput and end-to-end latency of the values produced in one window."""

    seconds: float
    produced: int  # sends invoked in the window
    committed: int  # values whose first sink commit fell in the window
    throughput_msgs_per_s: float
    latencies_ms: list[float] = field(default_factory=list)  # produce call -> first sink commit

    @property
    def latency_p50(self) -> float | None:
        """Median latency (ms); None when no value of the window reached the sink."""
        return percentile(self.latencies_ms, 50) if self.latencies_ms else None

    @property
    def latency_p99(self) -> float | None:
        """99th-percentile latency (ms); None when no value of the window reached the sink."""
        return percentile(self.latencies_ms, 99) if self.latencies_ms else None

    def as_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 2),
            "produced": self.produced,
            "committed": self.committed,
            "throughput_msgs_per_s": round(self.throughput_msgs_per_s, 1),
            "latency_ms": {
                "measures": "produce call to the sink commit that first held the value",
                "p50": _rounded(self.latency_p50, 2),
                "p99": _rounded(self.latency_p99, 2),
                "samples": len(self.latencies_ms),
            },
        }


@dataclass(frozen=True, slots=True)
class BatchCosts:
    """What the processor's batches in one window cost, as means per batch (ms)."""

    batches: int = 0
    messages: int = 0
    fetch_ms: float = 0.0  # in the poll call that returned the batch
    sink_ms: float = 0.0  # in the SQLite transaction (rows, and offsets under exactly-once)
    commit_ms: float = 0.0  # in a synchronous Kafka offset commit (0: none)
    processing_ms: float = 0.0  # the batch after poll returned it: sink, commit and the rest

    @property
    def batch_size(self) -> float:
        return self.messages / self.batches if self.batches else 0.0

    @property
    def total_ms(self) -> float:
        """The whole batch, the wait in poll included (ms)."""
        return self.fetch_ms + self.processing_ms

    @property
    def other_ms(self) -> float:
        """Time in the batch outside poll, the sink and the offset commit (the Processor's own
        code)."""
        return max(0.0, self.processing_ms - self.sink_ms - self.commit_ms)

    def per_message_ms(self, step: str) -> float:
        """Mean ms per message of one step: fetch, sink, commit, other, processing or total."""
        if not self.batch_size:
            return 0.0
        value: float = getattr(self, f"{step}_ms")
        return value / self.batch_size

    def as_json(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "mean_batch_size": round(self.batch_size, 1),
            "mean_ms_per_batch": {
                "fetch": round(self.fetch_ms, 3),
                "sink": round(self.sink_ms, 3),
                "commit": round(self.commit_ms, 3),
                "other": round(self.other_ms, 3),
                "processing": round(self.processing_ms, 3),
                "total": round(self.total_ms, 3),
            },
        }


@dataclass(frozen=True, slots=True)
class FaultRecovery:
    fault: str
    ended: float  # s since the run started
    seconds: float | None  # until the sink committed again; None: it never did


@dataclass(slots=True)
class Recovery:
    """How the sink came back after each fault of a window, and how long it stood still."""

    faults: list[FaultRecovery]
    stood_still_seconds: float
    stalls: list[tuple[float, float]]  # (start s, end s) since the run started

    @property
    def recovered(self) -> list[float]:
        return [fault.seconds for fault in self.faults if fault.seconds is not None]

    @property
    def p50(self) -> float:
        return percentile(self.recovered, 50)

    @property
    def max(self) -> float:
        return max(self.recovered, default=0.0)

    @property
    def unrecovered(self) -> int:
        return sum(1 for fault in self.faults if fault.seconds is None)

    def as_json(self) -> dict[str, Any]:
        return {
            "measures": "per fault: from the fault's end until the sink next committed (s)",
            "p50_s": round(self.p50, 3),
            "max_s": round(self.max, 3),
            "unrecovered": self.unrecovered,
            "per_fault": [
                {
                    "fault": fault.fault,
                    "ended_s": round(fault.ended, 3),
                    "seconds": None if fault.seconds is None else round(fault.seconds, 3),
                }
                for fault in self.faults
            ],
            "stood_still_s": round(self.stood_still_seconds, 3),
            "stall_threshold_s": STALL_SECONDS,
        }


def sink_commits(history: Sequence[Op]) -> list[int]:
    """The times (ns) of every sink commit (an ok poll), in order."""
    return sorted(op.time for op in history if op.f == POLL and op.type == OK)


def first_commits(history: Sequence[Op]) -> dict[int, int]:
    """Each value's first sink commit (ns)."""
    first: dict[int, int] = {}
    for op in history:
        if op.f == POLL and op.type == OK:
            for value in op.value:
                if value not in first or op.time < first[value]:
                    first[value] = op.time
    return first


def speed(history: Sequence[Op], window: Window) -> Speed:
    """Throughput and latency of the values produced in `window`."""
    first = first_commits(history)
    invokes = [
        op
        for op in history
        if op.f == SEND and op.type == INVOKE and window.start <= op.time <= window.end
    ]
    latencies = [(first[op.value] - op.time) / 1e6 for op in invokes if op.value in first]
    committed = sum(1 for moment in first.values() if window.start <= moment <= window.end)
    seconds = window.seconds
    return Speed(
        seconds=seconds,
        produced=len(invokes),
        committed=committed,
        throughput_msgs_per_s=committed / seconds if seconds else 0.0,
        latencies_ms=latencies,
    )


def batch_costs(history: Sequence[Op], window: Window) -> BatchCosts:
    """Mean costs of the processor's batches that ended in `window`."""
    batches = [
        op
        for op in history
        if op.f == BATCH and op.type == OK and window.start <= op.time <= window.end
    ]
    if not batches:
        return BatchCosts()

    def mean(name: str) -> float:
        return sum(float(op.extra.get(name, 0.0)) for op in batches) / len(batches)

    return BatchCosts(
        batches=len(batches),
        messages=sum(int(op.value) for op in batches),
        fetch_ms=mean("fetch_ms"),
        sink_ms=mean("sink_ms"),
        commit_ms=mean("commit_ms"),
        processing_ms=mean("total_ms"),
    )


def fault_windows(history: Sequence[Op]) -> list[tuple[str, int, int]]:
    """(fault, start ns, end ns) of every fault the nemesis wrote; a fault with no end op (one the
    injector healed at the end of its phase) ends where it started. A proxy cut that never fired
    is left out."""
    windows: list[tuple[str, int, int]] = []
    open_faults: dict[str, int] = {}
    for op in sorted((op for op in history if op.process == NEMESIS), key=lambda op: op.time):
        if op.extra.get("end"):
            windows.append((op.f, open_faults.pop(op.f, op.time), op.time))
        elif op.f == PROCESSOR_KILL or "fired" in op.extra:
            if op.extra.get("fired", True):
                windows.append((op.f, op.time, op.time))
        else:
            open_faults[op.f] = op.time
    windows += [(name, start, start) for name, start in open_faults.items()]
    return sorted(windows, key=lambda window: window[1])


def recovery(history: Sequence[Op], window: Window, *, origin: int = 0) -> Recovery:
    """Per fault from `window`'s start on, the time from its end to the sink's next commit; and
    the sink's stalls from the window's start to its last commit (or the window's end, if later).
    Faults after the window's end count too: a processor kill armed in the phase fires at the
    processor's next batch, which a fault may have held up until the drain. Times in the result
    are seconds since `origin` (ns)."""
    commits = [moment for moment in sink_commits(history) if moment >= window.start]
    faults: list[FaultRecovery] = []
    for name, start, end in fault_windows(history):
        if start < window.start:
            continue
        following = next((moment for moment in commits if moment > end), None)
        seconds = None if following is None else (following - end) / 1e9
        faults.append(FaultRecovery(name, (end - origin) / 1e9, seconds))
    points = [window.start, *commits]
    if points[-1] < window.end:
        points.append(window.end)  # the sink stood still until the phase ended
    stalls = [
        ((earlier - origin) / 1e9, (later - origin) / 1e9)
        for earlier, later in itertools.pairwise(points)
        if (later - earlier) / 1e9 > STALL_SECONDS
    ]
    # The total counts the phase only, so it reads against the phase's length.
    phase_start, phase_end = (window.start - origin) / 1e9, (window.end - origin) / 1e9
    return Recovery(
        faults=faults,
        stood_still_seconds=sum(
            max(0.0, min(end, phase_end) - max(start, phase_start)) for start, end in stalls
        ),
        stalls=stalls,
    )
