"""CI acceptance on a 3-broker cluster: a short seeded `odradek check --brokers 3` under the
leader-kill fixed point (followers paused so they lag but stay in the ISR, the leader killed -9,
the followers resumed, the old leader restarted). Exactly-once loses and duplicates nothing,
at-least-once with acks=all loses nothing, and the same schedule with acks=1 loses acknowledged
writes; the JSON names each run's acks and fsync, and the HTML carries the comparison and the
cluster timeline, whose `leader_at` names the leader the Metadata polls saw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from odradek.check.cluster_timeline import ClusterTimeline, leader_at
from odradek.check.faults import parse_faults
from odradek.check.history import NEMESIS, read_history
from odradek.check.runner import CheckOptions, RunSpec, run_specs
from odradek.client import Guarantee


@pytest.mark.timeout(300)
def test_acks_1_loses_under_the_leader_kill_acks_all_and_exactly_once_do_not(
    tmp_path: Path,
) -> None:
    json_path, html_path, work = tmp_path / "check.json", tmp_path / "check.html", tmp_path / "w"
    arguments = [
        sys.executable,
        "-m",
        "odradek.cli",
        "check",
        "--brokers",
        "3",
        "--guarantee",
        "exactly-once",
        "--faults",
        "leader-kill",
        "--acks",
        "1,all",
        "--fsync",
        "on",
        "--duration",
        "10",
        "--fault-free",
        "2",
        "--seed",
        "7",
        "--json",
        str(json_path),
        "--html",
        str(html_path),
        "--workdir",
        str(work),
    ]
    completed = subprocess.run(arguments, capture_output=True, text=True, timeout=280, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "acks and fsync, side by side" in completed.stdout

    runs = {run["run"]: run for run in json.loads(json_path.read_text())["runs"]}
    assert set(runs) == {"exactly-once", "at-least-once-acks-1", "at-least-once-acks-all"}
    for run in runs.values():
        assert run["faults"] == ["leader-kill"]
        assert run["brokers"] == 3
        assert run["replication_factor"] == 3
        assert run["min_insync_replicas"] == 2
        assert run["fsync"] is True
        assert run["drained"], run["notes"]
        assert run["acked"] > 0

    exactly = runs["exactly-once"]
    assert (exactly["acks"], exactly["idempotence"]) == ("all", True)
    assert exactly["lost"] == 0
    assert exactly["duplicated"] == 0

    acks_all = runs["at-least-once-acks-all"]
    assert (acks_all["acks"], acks_all["idempotence"]) == ("all", False)
    assert acks_all["lost"] == 0

    acks_1 = runs["at-least-once-acks-1"]
    assert (acks_1["acks"], acks_1["idempotence"]) == ("1", False)
    assert acks_1["lost"] > 0  # what the old leader alone acknowledged

    html = html_path.read_text()
    assert "acks and fsync, side by side" in html
    assert "the cluster over time" in html

    # The timeline names the leader the fault killed at the moment the fault started.
    directory = work / "at-least-once-acks-1"
    timeline = ClusterTimeline.read(directory / "cluster-timeline.jsonl")
    (start,) = [
        op
        for op in read_history(directory / "history.jsonl")
        if op.process == NEMESIS and op.f == "leader-kill" and not op.extra.get("end")
    ]
    killed, partition = start.extra["node"], start.extra["partition"]
    assert leader_at(timeline, timeline.topic, partition, start.time / 1e6) == killed
    assert leader_at(timeline, "another-topic", partition, start.time / 1e6) is None


def test_cluster_faults_and_comparisons_are_parsed() -> None:
    assert "isolate" in parse_faults("all", local=True, brokers=3)
    assert "kill" not in parse_faults("all", local=True, brokers=3)
    options = CheckOptions(
        guarantees=[Guarantee.EXACTLY_ONCE, Guarantee.AT_LEAST_ONCE],
        faults=[],
        brokers=3,
        acks=("1", "all"),
        fsync=(True, False),
    )
    assert run_specs(options) == [
        RunSpec(Guarantee.EXACTLY_ONCE),
        RunSpec(Guarantee.AT_LEAST_ONCE),
        RunSpec(Guarantee.AT_LEAST_ONCE, acks="1"),
        RunSpec(Guarantee.AT_LEAST_ONCE, fsync=False),
    ]
