"""Findings of a first-time user of `odradek check --brokers N` (issue 15), as README describes it.

Each test states what a user expects and failed on the code as found:

- `--min-insync 3 --replication-factor 2` was taken: every acks=all write of the run would then
  fail with NOT_ENOUGH_REPLICAS, so the run measured nothing instead of saying why;
- `--workload txn` with `--acks` / `--fsync` silently ran without either (the txn workload has
  no acks or fsync comparison), while the banner announced "acks 1,all; fsync on,off";
- the "acks and fsync, side by side" table printed to a file or a CI log (80 columns) cut its
  counts short: "38,8…" acked, "idem…", "dupl…";
- the `--workload txn` report described the SQLite-sink exactly-once workload ("offsets in the
  sink's SQLite transaction") instead of the transactional queue workload that ran.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from odradek.check.analysis import analyse
from odradek.check.history import Op
from odradek.check.measures import BatchCosts, Recovery, Window, speed
from odradek.check.report import matrix, print_comparison
from odradek.check.runner import PhaseResult, RunResult
from odradek.check.speed_order import settings
from odradek.check.txn import TXN_SETTINGS
from odradek.cli.check import check
from odradek.client import Guarantee

S = 1_000_000_000


@pytest.mark.parametrize(
    "arguments",
    [
        ["--brokers", "3", "--replication-factor", "2", "--min-insync", "3"],
        ["--brokers", "2", "--min-insync", "3"],
    ],
)
def test_more_in_sync_replicas_than_copies_is_a_usage_error(
    arguments: list[str], tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        check, [*arguments, "--duration", "1", "--fault-free", "1", "--workdir", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert "--min-insync" in result.output
    assert "Traceback" not in result.output
    assert not any(tmp_path.iterdir())  # nothing was started


@pytest.mark.parametrize("comparison", [["--acks", "1"], ["--fsync", "off"]])
def test_the_txn_workload_refuses_acks_and_fsync_comparisons(
    comparison: list[str], tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        check,
        [
            "--workload",
            "txn",
            "--brokers",
            "3",
            *comparison,
            "--duration",
            "1",
            "--fault-free",
            "1",
            "--workdir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "txn" in result.output
    assert "Traceback" not in result.output
    assert not any(tmp_path.iterdir())


def _acks_run(acked: int, lost: int) -> RunResult:
    """An at-least-once comparison run over a history of `acked` acknowledged values, the last
    `lost` of them never reaching the sink."""
    history = [Op("producer", "invoke", "send", value, None, S, {}) for value in range(acked)]
    history += [Op("producer", "ok", "send", v, [0, v], S + 1, {}) for v in range(acked)]
    delivered = list(range(acked - lost))
    history.append(Op("processor-1", "ok", "poll", delivered, [[0, v] for v in delivered], S, {}))
    history.append(Op("drain", "ok", "final-sink", delivered, None, 3 * S, {}))
    calm, faults = Window("fault-free", 0, S), Window("faults", S, 2 * S)
    return RunResult(
        guarantee=Guarantee.AT_LEAST_ONCE,
        faults=["leader-kill"],
        analysis=analyse(history, 2.0),
        fault_free=PhaseResult("fault-free", 0.0, 1.0, speed(history, calm), BatchCosts()),
        fault_phase=PhaseResult(
            "faults", 1.0, 2.0, speed(history, faults), BatchCosts(), Recovery([], 0.0, [])
        ),
        settings=settings(Guarantee.AT_LEAST_ONCE),
        workload_seconds=2.0,
        drain_seconds=0.0,
        timeline=[],
        fault_windows=[],
        history_path=Path("history.jsonl"),
        proxy_stats={},
        processor_restarts=0,
        notes=[],
        seed=7,
        drained=True,
    )


def test_the_comparison_table_in_an_80_column_log_keeps_every_count_whole() -> None:
    plain = dataclasses.replace(_acks_run(38_807, 0), brokers=3)
    acks_1 = dataclasses.replace(
        _acks_run(18_077, 694),
        name="at-least-once-acks-1",
        acks="1",
        comparison=True,
        brokers=3,
    )
    fsync_off = dataclasses.replace(
        _acks_run(34_089, 0),
        name="at-least-once-fsync-off",
        fsync=False,
        comparison=True,
        brokers=3,
    )
    output = io.StringIO()
    print_comparison([plain, acks_1, fsync_off], Console(file=output, width=80))
    text = output.getvalue()
    assert "…" not in text, text
    for whole in ("38,807", "18,077", "694", "34,089", "at-least-once-fsync-off", "idempotence"):
        assert whole in text, text


def test_the_txn_report_describes_the_transactional_workload_not_the_sqlite_sink() -> None:
    run = dataclasses.replace(
        _acks_run(40, 0),
        guarantee=Guarantee.EXACTLY_ONCE,
        workload="txn",
        settings=TXN_SETTINGS,
        brokers=3,
    )
    cells = [row.cells[0][0] for row in matrix([run]) if row.dimension != "Anomalies"]
    text = "\n".join(cells)
    assert "SQLite" not in text, text
    assert "Kafka transaction per operation" in text, text
