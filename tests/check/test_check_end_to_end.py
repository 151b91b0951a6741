"""CI acceptance: a short seeded `odradek check` run — exactly-once loses and duplicates nothing
under broker kill, proxy cut and processor kill, and the JSON and HTML reports are complete."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

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

    report = json.loads(json_path.read_text())
    (run,) = report["runs"]
    assert run["guarantee"] == "exactly-once"
    assert sorted(run["faults"]) == sorted(FAULTS)
    assert run["acked"] > 0
    assert run["lost"] == 0
    assert run["duplicated"] == 0
    assert run["throughput_msgs_per_s"] > 0
    assert set(run["latency_ms"]) == {"p50", "p99"}
    assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"]
    assert set(run["anomalies"]) == {
        "lost-write",
        "duplicate",
        "aborted-read",
        "nonmonotonic-poll",
        "poll-skip",
    }
    assert all(entry["count"] == 0 for entry in run["anomalies"].values()), run["anomalies"]
    # Every scheduled fault really happened (the fixed points make them certain).
    assert {name: run["fault_counts"].get(name, 0) for name in FAULTS} == dict.fromkeys(FAULTS, 1)
    assert run["processor_restarts"] >= 1
    assert run["delivered"] == run["acked"]
    history = Path(run["history"]).read_text().splitlines()
    assert any('"f":"final-sink"' in line for line in history)

    html = html_path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "exactly-once" in html
    assert "trade-off matrix" in html
    assert html.count("<svg") >= 5  # four comparison charts and the run's timeline
    # Self-contained: no scripts, stylesheets or images from elsewhere.
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["']?https?:""", html)
