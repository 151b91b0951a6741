"""The analysers after their memory work give exactly what they gave before, and the reports
bound their case lists.

The oracle is a frozen copy of the analysers as they were (reference_analysis.py,
reference_jepsen.py). The histories are seeded synthetic ones: the benchmark's soak-shaped sink
history (benchmarks/check_analysis_bench.py), whose generator counts what it injected, and a
transactional history built here with concurrent transactions whose writes interleave (G0, G1c).
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import reference_analysis  # type: ignore[import-not-found]
from click.testing import CliRunner

from odradek.check.analysis import Analysis, analyse, analyse_txn
from odradek.check.case_report import OP_VALUES_SHOWN, anomalies_json, case_time
from odradek.check.history import FAIL, INFO, INVOKE, OK, TXN, Op
from odradek.check.jepsen import (
    ABORTED_READ,
    ANOMALIES,
    DUPLICATE,
    G0,
    G1A,
    G1C,
    LOST_WRITE,
)

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "check_analysis_bench.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_analysis_bench", BENCHMARK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sink_history() -> tuple[list[Op], Any]:
    history, truth = _bench().generate_with_truth(50_000, seed=7)
    return list(history), truth


def _same(before: Any, after: Analysis) -> None:
    """Every number and every case (its JSON, ops included) identical, in the same order."""
    for name in (
        "produced",
        "acked",
        "failed",
        "indeterminate",
        "delivered",
        "lost",
        "duplicated",
        "latencies_ms",
        "throughput_msgs_per_s",
        "fault_counts",
        "workload",
    ):
        assert getattr(after, name) == getattr(before, name), name
    assert list(after.anomalies) == list(before.anomalies)
    for name, cases in before.anomalies.items():
        assert [case.as_dict() for case in after.anomalies[name]] == [
            case.as_dict() for case in cases
        ], name


def test_sink_history_matches_the_old_analysers_and_what_was_injected(
    sink_history: tuple[list[Op], Any],
) -> None:
    ops, truth = sink_history
    after = analyse(ops)
    _same(reference_analysis.analyse(ops), after)
    # What the generator injected, counted as it injected it.
    assert (after.produced, after.acked, after.failed, after.indeterminate) == (
        truth.invoked,
        truth.acked,
        truth.failed,
        truth.unknown,
    )
    assert after.delivered == len(truth.sink_counts)
    assert after.lost == len(truth.lost) > 0
    assert [case.value for case in after.anomalies[LOST_WRITE]] == sorted(truth.lost)
    assert after.duplicated == len(truth.sink_duplicates) > 0
    duplicates = after.anomalies[DUPLICATE]
    in_sink = [case.value for case in duplicates if case.details["where"] == "sink"]
    in_log = [case.value for case in duplicates if case.details["where"] == "log"]
    assert in_sink == sorted(truth.sink_duplicates)
    assert in_log == sorted(truth.log_duplicates)
    assert after.anomalies[G1A] == []  # failed sends were never written
    assert after.fault_counts == dict(sorted(truth.faults.items()))
    assert after.anomalies[G0]  # retried writes at two offsets make write-write cycles


def _txn_history(transactions: int, seed: int) -> list[Op]:
    """Two concurrent transactional clients and a read-only one: each transaction sends 1-3
    unique values to random partitions, its sends interleaved with the other's in the log, and
    reads the latest records of a partition; it commits, aborts (its values stay in the log,
    as read_uncommitted would show them) or ends unknown."""
    rng = random.Random(seed)
    logs: list[list[int]] = [[], [], []]
    ops: list[Op] = []
    now = 0
    value = 0

    def add(process: str, type_: str, mops: list[Any]) -> None:
        nonlocal now
        now += rng.randint(1_000, 50_000)
        ops.append(Op(process, type_, TXN, mops, None, now))

    for _ in range(transactions):
        clients = ["txn-0", "txn-1"] + (["reader"] if rng.random() < 0.3 else [])
        planned: dict[str, list[int]] = {}
        for process in clients:
            count = 0 if process == "reader" else rng.randint(1, 3)
            planned[process] = list(range(value, value + count))
            value += count
            add(process, INVOKE, [["send", v % 3, v] for v in planned[process]] + [["poll"]])
        sent: dict[str, list[Any]] = {process: [] for process in clients}
        queue = [(process, v) for process in clients for v in planned[process]]
        rng.shuffle(queue)
        for process, v in queue:
            partition = rng.randrange(3)
            logs[partition].append(v)
            sent[process].append(["send", partition, [len(logs[partition]) - 1, v]])
        for process in clients:
            partition = rng.randrange(3)
            start = max(0, len(logs[partition]) - rng.randint(1, 4))
            reads = [[partition, o, logs[partition][o]] for o in range(start, len(logs[partition]))]
            outcome = rng.choice([OK, OK, OK, FAIL, INFO])
            add(process, outcome, [*sent[process], ["poll", reads]])
    return ops


def test_txn_history_matches_the_old_analysers() -> None:
    ops = _txn_history(400, seed=3)
    after = analyse(ops)
    _same(reference_analysis.analyse(ops), after)
    _same(reference_analysis.analyse_txn(ops), analyse_txn(ops))
    assert after.anomalies[G0]
    assert after.anomalies[G1C]


def test_the_json_report_lists_the_first_cases_by_time_and_counts_all(
    sink_history: tuple[list[Op], Any],
) -> None:
    ops, truth = sink_history
    analysis = analyse(ops)
    report = anomalies_json(analysis.anomalies, max_cases=100)
    duplicates = analysis.anomalies[DUPLICATE]
    entry = report[DUPLICATE]
    assert entry["count"] == len(truth.sink_duplicates) + len(truth.log_duplicates)
    assert len(entry["cases"]) == 100
    assert entry["cases_left_out"] == entry["count"] - 100
    first = sorted(duplicates, key=case_time)[:100]
    assert [case["value"] for case in entry["cases"]] == [case.value for case in first]
    assert sum(entry["by_partition"].values()) == entry["count"]
    assert sum(entry["by_cause"].values()) == entry["count"]
    log_causes = {key: n for key, n in entry["by_cause"].items() if key.startswith("log")}
    assert sum(log_causes.values()) == len(truth.log_duplicates)
    for name in ANOMALIES:
        assert len(report[name]["cases"]) <= 100
        for case in report[name]["cases"] + report[name]["examples"]:
            for op in case["ops"]:
                if "values_total" in op:
                    assert len(op["value"]) <= OP_VALUES_SHOWN < op["values_total"]
    # A lost write's case shows the final sink without the value (it is not there), and says
    # how many values the sink held.
    lost = report[LOST_WRITE]["cases"][0]
    sink = next(op for op in lost["ops"] if op["f"] == "final-sink")
    assert sink["value"] == []
    assert sink["values_total"] == sum(truth.sink_counts.values())
    assert report[ABORTED_READ]["alias_of"] == G1A
    everything = anomalies_json(analysis.anomalies, max_cases=0)[DUPLICATE]
    assert len(everything["cases"]) == everything["count"]
    assert everything["cases_left_out"] == 0
    assert len(json.dumps(report)) < len(json.dumps(everything))


def test_check_refuses_a_negative_max_cases() -> None:
    from odradek.cli.check import check

    result = CliRunner().invoke(check, ["--max-cases", "-1"])
    assert result.exit_code == 2
    assert "--max-cases" in result.output


def test_the_html_report_gives_the_same_summaries(sink_history: tuple[list[Op], Any]) -> None:
    from test_report import result  # type: ignore[import-not-found]

    from odradek.check.report import render_html

    ops, truth = sink_history
    page = render_html([result(ops)], max_cases=100)
    count = len(truth.sink_duplicates) + len(truth.log_duplicates)
    assert f"duplicate — {count:,} case(s)" in page
    assert f"The JSON report lists the first 100 by time ({count - 100:,} left out)." in page
    assert "By partition: 0: " in page
