"""Findings of a first-time user of `odradek check --brokers N` (issue 15), as README describes it.

Each test states what a user expects and failed on the code as found:

- `--min-insync 3 --replication-factor 2` was taken: every acks=all write of the run would then
  fail with NOT_ENOUGH_REPLICAS, so the run measured nothing instead of saying why;
- `--workload txn` with `--acks` / `--fsync` silently ran without either (the txn workload has
  no acks or fsync comparison), while the banner announced "acks 1,all; fsync on,off".
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from odradek.cli.check import check


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
