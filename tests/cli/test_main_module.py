"""`python -m odradek` is the `odradek` command, for users without the console script on PATH."""

from __future__ import annotations

import subprocess
import sys


def test_python_dash_m_odradek_runs_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "odradek", "txn", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "transaction" in result.stdout.lower()
