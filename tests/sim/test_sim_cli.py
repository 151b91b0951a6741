"""`odradek sim`: one seed, a sweep, and the readable trace of a failing seed."""

from __future__ import annotations

from click.testing import CliRunner
from sim_planted import read_committed_keeps_aborted

from odradek.cli.main import cli


def test_one_seed_prints_its_result_and_trace_fingerprint() -> None:
    result = CliRunner().invoke(cli, ["sim", "--seed", "2", "--seconds", "2"])
    assert result.exit_code == 0, result.output
    assert "seed 2: ok" in result.output
    assert "trace " in result.output


def test_a_sweep_summarises_its_seeds() -> None:
    result = CliRunner().invoke(
        cli, ["sim", "--seeds", "2", "--seconds", "1.5", "--faults", "reset,cut"]
    )
    assert result.exit_code == 0, result.output
    assert "2 seed(s), 0 failed" in result.output


def test_a_failing_seed_prints_its_trace_and_the_replay_command() -> None:
    with read_committed_keeps_aborted():
        result = CliRunner().invoke(
            cli, ["sim", "--seed", "1", "--seconds", "5", "--faults", "none"]
        )
    assert result.exit_code == 1, result.output
    assert "VIOLATION read-committed-sees-only-committed" in result.output
    assert "replay: odradek sim --seed 1 --seconds 5 --faults none" in result.output


def test_bad_arguments_get_a_readable_message() -> None:
    runner = CliRunner()
    assert "either --seed N or --seeds COUNT" in runner.invoke(cli, ["sim"]).output
    result = runner.invoke(cli, ["sim", "--seed", "1", "--faults", "meteor"])
    assert result.exit_code == 2
    assert "unknown fault(s) meteor" in result.output
