"""`odradek check --workload txn`: a short run of Jepsen's transactional queue workload on a local
broker — clients commit transactions over several partitions, the final drain reads everything,
and the JSON lists every analyser with no anomaly Jepsen would call bad."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from odradek.check.history import TXN, read_history
from odradek.check.jepsen import ABORTED_READ, ANOMALIES


@pytest.mark.timeout(150)
def test_a_short_txn_run_is_clean_and_the_json_lists_every_analyser(tmp_path: Path) -> None:
    json_path, html_path = tmp_path / "check.json", tmp_path / "check.html"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "odradek.cli",
            "check",
            "--workload",
            "txn",
            "--faults",
            "none",
            "--fault-free",
            "2",
            "--duration",
            "2",
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
    (run,) = json.loads(json_path.read_text())["runs"]
    assert run["workload"] == "txn"
    assert set(run["anomalies"]) == {*ANOMALIES, ABORTED_READ}
    assert run["bad_anomalies"] == [], run["anomalies"]
    assert run["acked"] > 0
    assert run["lost"] == run["duplicated"] == 0
    assert run["delivered"] == run["acked"]  # the drain read every committed value
    history = read_history(Path(run["history"]))
    committed = [op for op in history if op.f == TXN and op.type == "ok"]
    partitions = {mop[1] for op in committed for mop in op.value if mop[0] == "send"}
    assert len(partitions) > 1  # transactions wrote to several partitions
    assert any(len(mop[1]) > 0 for op in committed for mop in op.value if mop[0] == "poll")
    assert "Anomalies" in html_path.read_text()
