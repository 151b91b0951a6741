"""The three examples under examples/ run end to end against the broker on the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from odradek.broker.server import Broker

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, *arguments: str, cwd: Path) -> str:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_log_aggregation(odradek_broker: Broker, tmp_path: Path) -> None:
    output = run_example(
        "log_aggregation.py",
        odradek_broker.bootstrap_servers,
        *("--produce", "300", "--idle-timeout", "1.5"),
        cwd=tmp_path,
    )
    assert "preflight for at-most-once on app-logs: ok" in output
    assert "consumed 300, dropped 0" in output


def test_notification_service(odradek_broker: Broker, tmp_path: Path) -> None:
    output = run_example(
        "notification_service.py",
        odradek_broker.bootstrap_servers,
        *("--produce", "30", "--idle-timeout", "1.5"),
        cwd=tmp_path,
    )
    assert "consumed 30, sent 30, duplicates skipped 0" in output
    assert (tmp_path / "notifications.db").exists()


def test_payments(odradek_broker: Broker, tmp_path: Path, postgres_dsn: str) -> None:
    arguments = (odradek_broker.bootstrap_servers, "--dsn", postgres_dsn, "--idle-timeout", "1.5")
    output = run_example("payments.py", *arguments, "--produce", "50", cwd=tmp_path)
    assert "preflight for exactly-once on payments: cannot be honoured" in output
    assert "orders recorded: 50;" in output
    assert "money in the system: 4000 (always 4000)" in output
    again = run_example("payments.py", *arguments, cwd=tmp_path)  # resumes from its offsets
    assert "consumed 0 payments" in again
    assert "orders recorded: 50;" in again
