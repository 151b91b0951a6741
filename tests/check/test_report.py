"""What the report says about runs it cannot judge or did not measure, from real `speed`,
`recovery` and `analyse` results over small histories."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from odradek.check.analysis import analyse
from odradek.check.history import Op
from odradek.check.measures import BatchCosts, FaultRecovery, Recovery, Window, speed
from odradek.check.report import matrix, print_table, render_html, to_json
from odradek.check.runner import PhaseResult, RunResult
from odradek.check.speed_order import settings
from odradek.client import Guarantee

S = 1_000_000_000


def op(time: int, process: str, type_: str, f: str, value: Any, offsets: Any = None) -> Op:
    return Op(process, type_, f, value, offsets, time, {})


def result(
    history: list[Op],
    guarantee: Guarantee = Guarantee.EXACTLY_ONCE,
    *,
    recovery: Recovery | None = None,
    drained: bool = True,
) -> RunResult:
    calm, faults = Window("fault-free", 0, 2 * S), Window("faults", 2 * S, 4 * S)
    return RunResult(
        guarantee=guarantee,
        faults=[],
        analysis=analyse(history, 4.0),
        fault_free=PhaseResult("fault-free", 0.0, 2.0, speed(history, calm), BatchCosts()),
        fault_phase=PhaseResult(
            "faults",
            2.0,
            4.0,
            speed(history, faults),
            BatchCosts(),
            recovery or Recovery([], 0.0, []),
        ),
        settings=settings(guarantee),
        workload_seconds=4.0,
        drain_seconds=0.0,
        timeline=[],
        fault_windows=[],
        history_path=Path("history.jsonl"),
        proxy_stats={},
        processor_restarts=0,
        notes=[],
        seed=0,
        drained=drained,
    )


def terminal(results: list[RunResult]) -> str:
    output = io.StringIO()
    print_table(results, Console(file=output, width=250, color_system=None))
    return output.getvalue()


def cell(results: list[RunResult], dimension: str) -> tuple[str, str, bool | None]:
    row = next(row for row in matrix(results) if row.dimension.startswith(dimension))
    return row.cells[0]


def test_a_run_that_acknowledged_nothing_is_not_a_pass() -> None:
    history = [op(1 * S, "producer", "invoke", "send", value) for value in range(3)]
    run = [result(history)]
    measured, _, verdict = cell(run, "Durability")
    assert verdict is None, measured
    assert "no value was acknowledged" in measured
    assert cell(run, "Duplication")[2] is None
    assert "✓" not in terminal(run)


def test_no_latency_samples_read_not_measured_in_every_report() -> None:
    history = [
        op(1 * S, "producer", "invoke", "send", 1),
        op(1 * S + 10, "producer", "ok", "send", 1, [0, 0]),
    ]
    run = [result(history, drained=False)]
    assert "not measured" in cell(run, "Latency")[0]
    assert "not measured" in terminal(run)
    assert "not measured (no value reached the sink)" in render_html(run)
    latency = to_json(run)["runs"][0]["latency_ms"]
    assert (latency["p50"], latency["p99"]) == (None, None)
    json.dumps(to_json(run))
    # Not drained: the lost value may still sit in the topic, so loss is not judged.
    measured, _, verdict = cell(run, "Durability")
    assert verdict is None
    assert "drain incomplete" in measured


def test_recovery_says_how_many_faults_never_recovered() -> None:
    history = [
        op(1 * S, "producer", "invoke", "send", 1),
        op(1 * S + 10, "producer", "ok", "send", 1, [0, 0]),
        op(1 * S + 20, "processor-1", "ok", "poll", [1], [[0, 0]]),
    ]
    recovery = Recovery(
        [
            FaultRecovery("kill", 2.5, 1.0),
            FaultRecovery("pause", 3.0, 2.0),
            FaultRecovery("proxy-drop", 3.5, None),
        ],
        1.5,
        [],
    )
    text = cell([result(history, recovery=recovery)], "Recovery")[0]
    assert text.startswith("p50 1.0 s, max 2.0 s over the 2 of 3 faults it recovered from")
    assert "(1 never recovered)" in text
    none = Recovery([FaultRecovery("kill", 2.5, None)], 1.5, [])
    assert cell([result(history, recovery=none)], "Recovery")[0].startswith(
        "the sink never moved again after the fault;"
    )


def test_anomaly_counts_have_thousands_separators() -> None:
    history = [op(1 * S, "producer", "invoke", "send", value) for value in range(1200)]
    history += [op(1 * S + 1, "producer", "ok", "send", value, [0, value]) for value in range(1200)]
    history.append(op(2 * S, "drain", "ok", "final-sink", []))
    assert cell([result(history)], "Anomalies")[0] == "lost-write 1,200, unseen 1,200"
