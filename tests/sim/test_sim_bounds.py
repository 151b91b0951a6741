"""Every run is bounded: a run that never ends fails as `stuck`, with its seed and replay
command, whether it runs on in simulated time, spins without letting time move, or sits in one
callback that never returns."""

from __future__ import annotations

import asyncio
import signal

import pytest

from odradek.sim import SimOptions, run_seed, world
from odradek.sim.run import _World


def _quiesce_with(monkeypatch: pytest.MonkeyPatch, quiesce: object) -> SimOptions:
    monkeypatch.setattr(_World, "quiesce", quiesce)
    return SimOptions(seed=3, seconds=1, faults=())


def test_a_run_that_never_ends_in_simulated_time_fails_as_stuck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def forever(self: _World) -> None:
        while True:
            await asyncio.sleep(1)

    result = run_seed(_quiesce_with(monkeypatch, forever))
    assert result.violation is not None
    assert result.violation.invariant == "stuck"
    assert "simulated s" in result.violation.detail
    assert result.simulated_s == pytest.approx(1 + world.STUCK_MARGIN_S, abs=2)
    assert result.options.command() == "odradek sim --seed 3 --seconds 1 --faults none"


def test_a_run_that_spins_without_time_moving_fails_after_its_step_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def spin(self: _World) -> None:
        while True:
            await asyncio.sleep(0)

    monkeypatch.setattr(world, "MIN_STEPS", 200_000)
    monkeypatch.setattr(world, "STEPS_PER_SIMULATED_S", 100)
    result = run_seed(_quiesce_with(monkeypatch, spin))
    assert result.violation is not None
    assert result.violation.invariant == "stuck"
    assert "200,001 steps" in result.violation.detail


def test_a_callback_that_never_returns_is_ended_by_the_watchdog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def busy(self: _World) -> None:
        while True:  # no await: the loop never gets a turn back
            pass

    monkeypatch.setattr(world, "STEP_WALL_LIMIT_S", 2.0)
    result = run_seed(_quiesce_with(monkeypatch, busy))
    assert result.violation is not None
    assert result.violation.invariant == "stuck"
    assert "without returning" in result.violation.detail


@pytest.mark.timeout(60)
def test_the_watchdog_ends_the_step_whatever_sigint_handler_the_process_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGINT handler that does not raise (one an earlier test's asyncio runner or CLI left
    installed) made the watchdog's SIGINT do nothing: the run hung until pytest's timeout (a
    CI run). The watchdog raises in the loop's thread directly."""

    async def busy(self: _World) -> None:
        while True:  # no await: the loop never gets a turn back
            pass

    monkeypatch.setattr(world, "STEP_WALL_LIMIT_S", 2.0)
    previous = signal.signal(signal.SIGINT, lambda _number, _frame: None)
    try:
        result = run_seed(_quiesce_with(monkeypatch, busy))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.violation is not None
    assert result.violation.invariant == "stuck"
    assert "without returning" in result.violation.detail
