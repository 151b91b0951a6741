"""Sweeps: many seeds in a row, the failing ones listed with the command that replays each."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from odradek.sim.run import SimOptions, SimResult, run_seed


@dataclass(slots=True)
class SweepSummary:
    """What a sweep found: its failing results and totals of simulated and wall time."""

    seeds: int = 0
    failures: list[SimResult] = field(default_factory=list)
    simulated_s: float = 0.0
    wall_s: float = 0.0
    by_invariant: dict[str, int] = field(default_factory=dict)

    @property
    def simulated_per_wall_second(self) -> float:
        return self.simulated_s / self.wall_s if self.wall_s else 0.0


def sweep(
    template: SimOptions,
    seeds: Iterable[int],
    on_result: Callable[[SimResult], None] | None = None,
    stop_at_first: bool = False,
) -> SweepSummary:
    """Run `template` once per seed; `on_result` hears of each run as it ends."""
    summary = SweepSummary()
    started = time.perf_counter()
    for seed in seeds:
        result = run_seed(dataclasses.replace(template, seed=seed))
        summary.seeds += 1
        summary.simulated_s += result.simulated_s
        if result.violation is not None:
            summary.failures.append(result)
            name = result.violation.invariant
            summary.by_invariant[name] = summary.by_invariant.get(name, 0) + 1
        if on_result is not None:
            on_result(result)
        if stop_at_first and result.violation is not None:
            break
    summary.wall_s = time.perf_counter() - started
    return summary
