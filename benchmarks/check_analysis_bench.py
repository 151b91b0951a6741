"""The guarantee checker's analysis of a long run: wall time, peak memory and report sizes.

A seeded synthetic history in the sink workload's shape (`odradek.check.history`): a producer's
send invokes and completions over a few partitions (mostly ok with an offset, a few info and
fail; some acks=1 writes acknowledged and then truncated — lost, their offset reused by a later
write; some retried writes at two offsets), processors' ok and failed polls with their `batch`
ops, a few hundred nemesis faults (start and end), processor kills and rebalances that rewind to
the last committed offsets (the sink duplicates, ~8 % of the values as in the soak), phase
markers, and the final drain (`final-poll`, `final-sink`).

The history is written to a JSON-lines file, then a child process does what `odradek check`
does after a run (runner._result): read and merge the history, `analyse` it, measure the
phases, and write the JSON and HTML reports. The child reports its wall time per step and its
peak RSS (getrusage ru_maxrss); one child runs at a time.

    .venv/bin/python benchmarks/check_analysis_bench.py [--ops 5000000] [--seed 1]
        [--max-cases 1000] [--keep DIR]

`generate` is also the test suite's source of synthetic histories (tests/check/).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odradek.check.history import (
    ASSIGN,
    BATCH,
    CHECKER,
    FAIL,
    FINAL_POLL,
    FINAL_SINK,
    INFO,
    INVOKE,
    NEMESIS,
    OK,
    PHASE,
    POLL,
    SEND,
    Op,
)

FAULT_NAMES = (
    "leader-kill",
    "follower-pause",
    "isolate",
    "controller-kill",
    "proxy-cut",
    "proxy-delay",
    "proxy-drop",
    "processor-kill",
)
FAULT_FREE_SHARE = 0.05  # the fault-free phase: this share of the sends, before any fault


@dataclass(slots=True)
class Truth:
    """What the generator did, counted as it did it (not from any analyser)."""

    invoked: int = 0
    acked: int = 0  # ok sends
    failed: int = 0  # fail sends (never written)
    unknown: int = 0  # info sends (written or not)
    lost: set[int] = field(default_factory=set)  # acked, truncated, never read
    log_duplicates: set[int] = field(default_factory=set)  # written at two offsets
    sink_counts: Counter[int] = field(default_factory=Counter)  # value -> rows in the sink
    faults: Counter[str] = field(default_factory=Counter)  # fault name -> started
    rewinds: int = 0  # processor kills and rebalances that went back to committed offsets
    ops: int = 0
    fault_free_ns: tuple[int, int] = (0, 0)
    faults_ns: tuple[int, int] = (0, 0)

    @property
    def sink_duplicates(self) -> set[int]:
        return {value for value, count in self.sink_counts.items() if count > 1}


def generate(
    ops: int, seed: int = 1, partitions: int = 3, faults: int | None = None
) -> Iterator[Op]:
    """About `ops` operations in time order; `truth` (set on the returned iterator's first
    `next`) counts what was injected. Use `generate_with_truth` for both at once."""
    history, _ = generate_with_truth(ops, seed, partitions, faults)
    return history


def generate_with_truth(
    ops: int, seed: int = 1, partitions: int = 3, faults: int | None = None
) -> tuple[Iterator[Op], Truth]:
    """(the operations, in time order, lazily; the `Truth` they fill in as they are drawn).
    `faults` defaults to one per 2,000 ops, 10 to 300."""
    truth = Truth()
    if faults is None:
        faults = max(10, min(300, ops // 2000))
    return _generate(max(ops, 200), random.Random(seed), partitions, faults, truth), truth


def _generate(
    target: int, rng: random.Random, partitions: int, faults: int, truth: Truth
) -> Iterator[Op]:
    now = 0
    emitted = 0

    def op(process: str, type_: str, f: str, value: Any = None, offsets: Any = None, **extra: Any):
        nonlocal now, emitted
        now += rng.randint(20_000, 200_000)
        emitted += 1
        return Op(process, type_, f, value, offsets, now, extra)

    # Each value costs about 2 send ops, plus a poll and a batch op per ~70 values.
    values_planned = int(target / 2.03)
    fault_every = max(1, values_planned // (faults + 1))
    fault_free_until = int(values_planned * FAULT_FREE_SHARE)
    # Offsets are committed every `commit_every` polls: a rewind reads half of that again on
    # average, which makes the sink's duplicates about 8 % of the values at any size.
    commit_every = max(2, round(0.0072 * values_planned / faults))
    logs: list[list[int]] = [[] for _ in range(partitions)]
    position = [0] * partitions  # the processor's next offset per partition
    committed = [0] * partitions  # its last committed offsets
    polls_since_commit = 0
    process_number = 0
    process = f"processor-{process_number}"
    open_faults: list[tuple[int, str]] = []  # (value at which it ends, name)
    next_value = 0
    phase_start = 0

    yield op(CHECKER, INFO, PHASE, "fault-free")
    phase_start = now
    yield op(process, OK, ASSIGN, list(range(partitions)))
    faults_started = False
    while next_value < values_planned:
        if not faults_started and next_value >= fault_free_until:
            yield op(CHECKER, INFO, PHASE, "fault-free", end=True)
            truth.fault_free_ns = (phase_start, now)
            yield op(CHECKER, INFO, PHASE, "faults")
            phase_start = now
            faults_started = True
        # A burst of sends: invokes, then completions in a slightly shuffled order.
        burst = list(range(next_value, next_value + rng.randint(20, 60)))
        next_value = burst[-1] + 1
        for value in burst:
            yield op("producer", INVOKE, SEND, value)
        truth.invoked += len(burst)
        retries: list[int] = []
        completions = burst[:]
        for index in range(len(completions) - 1):
            if rng.random() < 0.1:
                completions[index], completions[index + 1] = (
                    completions[index + 1],
                    completions[index],
                )
        for value in completions:
            partition = value % partitions
            log = logs[partition]
            draw = rng.random()
            if faults_started and draw < 0.002:
                truth.failed += 1
                yield op("producer", FAIL, SEND, value, error="KafkaError{code=MSG_SIZE_TOO_LARGE}")
            elif faults_started and draw < 0.006:
                truth.unknown += 1
                if rng.random() < 0.5:
                    log.append(value)
                yield op("producer", INFO, SEND, value, error="KafkaError{code=_MSG_TIMED_OUT}")
            elif faults_started and draw < 0.010:
                # acks=1: acknowledged by a leader that then lost it; the next write reuses the
                # offset. The processor has not read it yet (offset at or past its position).
                offset = len(log)
                truth.acked += 1
                truth.lost.add(value)
                yield op("producer", OK, SEND, value, [partition, offset])
            elif faults_started and draw < 0.030:
                # A retry after a lost acknowledgement: the value at two offsets, the second
                # after the burst's other writes.
                log.append(value)
                retries.append(value)
                truth.acked += 1
                truth.log_duplicates.add(value)
                yield op("producer", OK, SEND, value, [partition, len(log) - 1])
            else:
                log.append(value)
                truth.acked += 1
                yield op("producer", OK, SEND, value, [partition, len(log) - 1])
        for value in retries:
            logs[value % partitions].append(value)
        # Faults: start one every `fault_every` values; each lasts a few bursts.
        if faults_started and next_value // fault_every > (next_value - len(burst)) // fault_every:
            name = rng.choice(FAULT_NAMES)
            truth.faults[name] += 1
            yield op(NEMESIS, INFO, name, None, None, target=rng.randint(1, 3))
            open_faults.append((next_value + rng.randint(100, 2000), name))
            if name == "processor-kill" or rng.random() < 0.5:
                # The processor (killed, or rebalanced) goes back to its committed offsets:
                # what it read since is read again (sink duplicates).
                truth.rewinds += 1
                if name == "processor-kill":
                    process_number += 1
                    process = f"processor-{process_number}"
                yield op(process, OK, ASSIGN, list(range(partitions)))
                position = committed[:]
        for end, name in [item for item in open_faults if item[0] <= next_value]:
            open_faults.remove((end, name))
            yield op(NEMESIS, INFO, name, None, None, end=True)
        # The processor: polls of 30-120 records, round robin over the partitions.
        while any(position[p] < len(logs[p]) for p in range(partitions)):
            budget = rng.randint(30, 120)
            values: list[int] = []
            offsets: list[list[int]] = []
            for partition in range(partitions):
                take = min(budget // partitions + 1, len(logs[partition]) - position[partition])
                for offset in range(position[partition], position[partition] + take):
                    values.append(logs[partition][offset])
                    offsets.append([partition, offset])
            if not values:
                break
            if faults_started and rng.random() < 0.005:
                yield op(process, FAIL, POLL, values, offsets)  # the sink rolled back
                continue
            yield op(process, OK, POLL, values, offsets)
            truth.sink_counts.update(values)
            for partition, offset in offsets:
                position[partition] = max(position[partition], offset + 1)
            yield op(
                process,
                OK,
                BATCH,
                len(values),
                None,
                fetch_ms=round(rng.uniform(0.1, 5), 3),
                sink_ms=round(rng.uniform(0.5, 3), 3),
                commit_ms=0.0,
                total_ms=round(rng.uniform(1, 9), 3),
            )
            polls_since_commit += 1
            if polls_since_commit >= commit_every:
                committed = position[:]
                polls_since_commit = 0
            if rng.random() < 0.7:
                break
    for _, name in open_faults:
        yield op(NEMESIS, INFO, name, None, None, end=True)
    yield op(CHECKER, INFO, PHASE, "faults", end=True)
    truth.faults_ns = (phase_start, now)
    # The drain: the processor reads to the end, then the whole topic and the sink are read.
    while any(position[p] < len(logs[p]) for p in range(partitions)):
        values, offsets = [], []
        for partition in range(partitions):
            for offset in range(
                position[partition], min(len(logs[partition]), position[partition] + 100)
            ):
                values.append(logs[partition][offset])
                offsets.append([partition, offset])
            position[partition] = min(len(logs[partition]), position[partition] + 100)
        yield op(process, OK, POLL, values, offsets)
        truth.sink_counts.update(values)
    final_values = [value for log in logs for value in log]
    final_offsets = [
        [partition, offset] for partition, log in enumerate(logs) for offset in range(len(log))
    ]
    yield op("drain", OK, FINAL_POLL, final_values, final_offsets)
    sink = list(truth.sink_counts.elements())
    yield op("drain", OK, FINAL_SINK, sink, None)
    truth.ops = emitted


# -- measuring: a child process per analysis ---------------------------------------------------
def write_history_file(path: Path, ops: int, seed: int) -> Truth:
    """Generate the history into `path` (JSON lines, as `history.write_history` writes it)."""
    history, truth = generate_with_truth(ops, seed)
    with path.open("w") as out:
        for item in history:
            out.write(json.dumps(item.as_dict(), separators=(",", ":")) + "\n")
    return truth


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(directory: Path, max_cases: int | None) -> None:
    """What runner._result does after a run, timed step by step; prints one JSON line."""
    from odradek.check import report
    from odradek.check.analysis import analyse
    from odradek.check.history import merge, read_history
    from odradek.check.measures import Window, batch_costs, fault_windows, recovery, speed
    from odradek.check.runner import PhaseResult, RunResult
    from odradek.check.speed_order import settings
    from odradek.client import Guarantee

    meta = json.loads((directory / "meta.json").read_text())
    steps: dict[str, float] = {}
    started = time.perf_counter()
    ops = merge([read_history(directory / "history-0.jsonl")])
    steps["read"] = time.perf_counter() - started
    steps["read_rss_mb"] = _max_rss_mb()
    calm = Window("fault-free", *meta["fault_free_ns"])
    faulty = Window("faults", *meta["faults_ns"])
    workload_seconds = (faulty.end - calm.start) / 1e9
    moment = time.perf_counter()
    analysis = analyse(ops, workload_seconds)
    steps["analyse"] = time.perf_counter() - moment
    steps["analyse_rss_mb"] = _max_rss_mb()
    moment = time.perf_counter()
    origin = calm.start
    result = RunResult(
        guarantee=Guarantee.AT_LEAST_ONCE,
        faults=[],
        analysis=analysis,
        fault_free=PhaseResult(
            calm.name, 0.0, calm.seconds, speed(ops, calm), batch_costs(ops, calm)
        ),
        fault_phase=PhaseResult(
            faulty.name,
            (faulty.start - origin) / 1e9,
            (faulty.end - origin) / 1e9,
            speed(ops, faulty),
            batch_costs(ops, faulty),
            recovery(ops, faulty, origin=origin),
        ),
        settings=settings(Guarantee.AT_LEAST_ONCE),
        workload_seconds=workload_seconds,
        drain_seconds=0.0,
        timeline=[],
        fault_windows=[
            (name, (start - origin) / 1e9, (end - origin) / 1e9)
            for name, start, end in fault_windows(ops)
        ],
        history_path=directory / "history-0.jsonl",
        proxy_stats={},
        processor_restarts=0,
        notes=[],
        seed=meta["seed"],
    )
    steps["phases"] = time.perf_counter() - moment
    moment = time.perf_counter()
    extra: dict[str, Any] = {} if max_cases is None else {"max_cases": max_cases}
    report.write_json([result], directory / "report.json", **extra)
    steps["json"] = time.perf_counter() - moment
    moment = time.perf_counter()
    report.write_html([result], directory / "report.html", **extra)
    steps["html"] = time.perf_counter() - moment
    steps["total"] = time.perf_counter() - started
    steps["peak_rss_mb"] = _max_rss_mb()
    steps["history_ops"] = len(ops)
    steps["json_bytes"] = (directory / "report.json").stat().st_size
    steps["html_bytes"] = (directory / "report.html").stat().st_size
    steps["lost"] = analysis.lost
    steps["duplicated"] = analysis.duplicated
    steps["cases"] = sum(len(cases) for cases in analysis.anomalies.values())
    print(json.dumps(steps))


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:,.1f} {unit}" if unit != "B" else f"{count:,.0f} B"
        count /= 1000
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5_000_000, help="history operations")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--max-cases", type=int, default=None, help="the reports' case bound (default: theirs)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the files in this directory")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child is not None:
        child(options.child, options.max_cases)
        return
    directory = options.keep or Path(tempfile.mkdtemp(prefix="check-analysis-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        moment = time.perf_counter()
        truth = write_history_file(directory / "history-0.jsonl", options.ops, options.seed)
        generated = time.perf_counter() - moment
        (directory / "meta.json").write_text(
            json.dumps(
                {
                    "seed": options.seed,
                    "fault_free_ns": truth.fault_free_ns,
                    "faults_ns": truth.faults_ns,
                }
            )
        )
        command = [sys.executable, __file__, "--child", str(directory)]
        if options.max_cases is not None:
            command += ["--max-cases", str(options.max_cases)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        steps = json.loads(output.strip().splitlines()[-1])
        history_bytes = (directory / "history-0.jsonl").stat().st_size
        delivered = len(truth.sink_counts)
        print(
            f"history: {truth.ops:,} ops ({_size(history_bytes)}), {truth.invoked:,} values, "
            f"{truth.acked:,} acked, {len(truth.lost):,} lost, "
            f"{len(truth.sink_duplicates):,} duplicated in the sink "
            f"({len(truth.sink_duplicates) / max(1, delivered):.1%}), "
            f"{len(truth.log_duplicates):,} at two offsets, {sum(truth.faults.values())} faults, "
            f"{truth.rewinds} rewinds; generated in {generated:.0f} s"
        )
        print(
            f"analysis: lost {steps['lost']:,}, duplicated {steps['duplicated']:,}, "
            f"{steps['cases']:,} cases in all"
        )
        print_rows(
            f"odradek check's analysis of {steps['history_ops']:,} history ops (seed "
            f"{options.seed})",
            [
                (
                    "read + merge history",
                    f"{steps['read']:.1f} s",
                    f"{steps['read_rss_mb']:,.0f} MB",
                    "",
                ),
                ("analyse", f"{steps['analyse']:.1f} s", f"{steps['analyse_rss_mb']:,.0f} MB", ""),
                ("phase measures", f"{steps['phases']:.1f} s", "", ""),
                ("JSON report", f"{steps['json']:.1f} s", "", _size(steps["json_bytes"])),
                ("HTML report", f"{steps['html']:.1f} s", "", _size(steps["html_bytes"])),
                ("total", f"{steps['total']:.1f} s", f"{steps['peak_rss_mb']:,.0f} MB", ""),
            ],
        )
    finally:
        if options.keep is None:
            shutil.rmtree(directory, ignore_errors=True)


def print_rows(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    columns = ("step", "wall time", "peak RSS so far", "file size")
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
