"""CI acceptance: short seeded `odradek check` runs — exactly-once loses and duplicates nothing
under broker kill, proxy cut and processor kill, and the JSON and HTML reports carry both phases;
at-most-once killed between its commit and its processing loses that batch and duplicates
nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from odradek.check.analysis import ANOMALIES
from odradek.check.history import ASSIGN, OK, SEND, read_history
from odradek.check.runner import CheckOptions, run_check
from odradek.client import Guarantee

FAULTS = ["processor-kill", "proxy-cut", "kill"]


@pytest.mark.timeout(150)
def test_exactly_once_loses_and_duplicates_nothing_and_the_report_is_complete(
    tmp_path: Path,
) -> None:
    json_path, html_path = tmp_path / "check.json", tmp_path / "check.html"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "odradek.cli",
            "check",
            "--guarantee",
            "exactly-once",
            "--faults",
            ",".join(FAULTS),
            "--duration",
            "8",
            "--fault-free",
            "3",
            "--seed",
            "3",
            "--json",
            str(json_path),
            "--html",
            str(html_path),
            "--workdir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "trade-off matrix, measured" in completed.stdout
    # Not a terminal: progress comes as plain lines (a live table would show nothing).
    progress = [line for line in completed.stderr.splitlines() if line.startswith("exactly-once: ")]
    phases = [line.split(": ", 1)[1].split(",", 1)[0] for line in progress]
    assert {"starting the processor", "final drain", "analysing", "done"} <= set(phases)
    assert any("sent " in line and "in sink " in line for line in progress)

    report = json.loads(json_path.read_text())
    (run,) = report["runs"]
    assert run["guarantee"] == "exactly-once"
    assert sorted(run["faults"]) == sorted(FAULTS)
    assert run["acked"] > 0
    assert run["lost"] == 0
    assert run["duplicated"] == 0
    # Speed and latency come from the fault-free phase; recovery from the fault phase.
    calm, faulty = run["phases"]["fault_free"], run["phases"]["faults"]
    assert run["throughput_msgs_per_s"] == calm["throughput_msgs_per_s"] > 0
    assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"]
    assert "produce call to sink commit" in run["latency_ms"]["measures"]
    assert calm["end_s"] <= faulty["start_s"]
    assert calm["batches"]["batches"] > 0
    assert run["settings"]["acks"] == "all"
    assert "recovery" not in calm
    recovered = faulty["recovery"]
    assert sorted(entry["fault"] for entry in recovered["per_fault"]) == sorted(FAULTS)
    # Every fault healed before the drain, so the sink moved again after each of them.
    assert all(entry["seconds"] is not None for entry in recovered["per_fault"]), recovered
    assert 0 <= recovered["p50_s"] <= recovered["max_s"]
    assert recovered["stood_still_s"] > 0  # the processor kill alone stops the sink for seconds
    assert report["speed_order"]["measured"] == ["exactly-once"]
    assert set(run["anomalies"]) == {*ANOMALIES, "aborted-read"}
    assert run["bad_anomalies"] == []
    assert all(entry["count"] == 0 for entry in run["anomalies"].values()), run["anomalies"]
    # Every scheduled fault really happened (the fixed points make them certain).
    assert {name: run["fault_counts"].get(name, 0) for name in FAULTS} == dict.fromkeys(FAULTS, 1)
    assert run["processor_restarts"] >= 1
    assert run["delivered"] == run["acked"]
    history = Path(run["history"]).read_text().splitlines()
    assert any('"f":"final-sink"' in line for line in history)
    # The fault-free phase starts once the processor owns its partitions: no backlog before it.
    ops = read_history(Path(run["history"]))
    assigned = next(op.time for op in ops if op.f == ASSIGN and op.type == OK)
    assert min(op.time for op in ops if op.f == SEND) > assigned

    html = html_path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "exactly-once" in html
    assert "trade-off matrix" in html
    assert html.count("<svg") >= 6  # five comparison charts and the run's timeline
    assert 'class="fault-free"' in html  # the timeline shades the fault-free phase
    assert "Recovery" in html
    # Self-contained: no scripts, stylesheets or images from elsewhere.
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["']?https?:""", html)


@pytest.mark.timeout(150)
def test_at_most_once_killed_between_commit_and_processing_never_duplicates(
    tmp_path: Path,
) -> None:
    """The processor-kill fault's fixed point under at-most-once is its commit hook: the batch's
    offsets are committed and the batch is not processed. Its values are lost, none repeats."""
    (result,) = run_check(
        CheckOptions(
            guarantees=[Guarantee.AT_MOST_ONCE],
            faults=["processor-kill"],
            duration=4,
            fault_free=1,
            seed=1,
            workdir=tmp_path,
        )
    )
    ops = read_history(result.history_path)
    (kill,) = [op for op in ops if op.f == "processor-kill"]
    killed_batch = kill.extra["batch_values"]
    assert killed_batch
    assert result.processor_restarts >= 1
    sink = next(op for op in ops if op.f == "final-sink").value
    in_sink = set(sink)
    assert not in_sink & set(killed_batch)  # committed, never processed: lost
    assert len(sink) == len(in_sink)  # nothing twice
    assert result.analysis.duplicated == 0
    assert result.analysis.anomalies["duplicate"] == []
    assert result.analysis.lost >= len(killed_batch)
    # The restarted processor resumed after the killed batch, so the sink moved again.
    (recovered,) = result.fault_phase.recovery.faults if result.fault_phase.recovery else []
    assert recovered.fault == "processor-kill"
    assert recovered.seconds is not None
