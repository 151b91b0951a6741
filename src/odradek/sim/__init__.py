"""Deterministic simulation: the broker's real code in one process, on a seeded clock,
network and disk (FoundationDB's and TigerBeetle's way of testing).

`run_seed(SimOptions(seed=N))` runs one seed; `sweep(...)` runs many. Two runs of one seed give
byte-identical traces. See `odradek.sim.run` for what a run does, `odradek.sim.invariants` for
what it checks.
"""

from odradek.sim.invariants import Violation
from odradek.sim.run import DEFAULT_FAULTS, FAULTS, SimOptions, SimResult, run_seed
from odradek.sim.workload import Load

__all__ = [
    "DEFAULT_FAULTS",
    "FAULTS",
    "Load",
    "SimOptions",
    "SimResult",
    "Violation",
    "run_seed",
]
