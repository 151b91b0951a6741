"""What every simulated run shares: the phases of one run, and its bounds.

A run (`odradek.sim.run`'s single broker, `odradek.sim.cluster`'s cluster) starts its nodes,
runs the clients under the seeded fault schedule for `seconds` of simulated time, heals every
fault, lets the clients' in-flight work settle, waits for the nodes to quiesce, and checks the
final state; the invariants are also checked continuously meanwhile. `run_phases` is that
sequence; each world supplies the steps (`World`).

`BoundedLoop` bounds a run: a run that is still going after `max_simulated_s` simulated
seconds or `max_steps` turns of the loop (a livelock that never lets time move far) ends with a
`StuckError`, which the runner reports as a failed run (invariant `stuck`), never a hang. Both
bounds are deterministic. One turn that never ends (a callback looping without awaiting) cannot
be counted; `step_watchdog` ends it after `STEP_WALL_LIMIT_S` of real time without a turn (the
only bound that reads a real clock, and only to end a run that is failing anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import random
import threading
import time
from collections.abc import Iterator
from typing import Protocol

from odradek.sim.invariants import Checker, InvariantBrokenError
from odradek.sim.loop import SimLoop
from odradek.sim.trace import Trace
from odradek.sim.workload import Clients

# Simulated seconds a run may take beyond its load (`seconds`): creating the topic, settling,
# quiescing and converging are bounded at 20 to 30 s each.
STUCK_MARGIN_S = 180.0
# Turns of the loop per simulated second a run may take on average. A healthy run takes a
# few thousand; a livelock (tasks waking each other at no cost in virtual time) far more.
STEPS_PER_SIMULATED_S = 10_000
MIN_STEPS = 1_000_000
# Real seconds one turn of the loop may take before the watchdog ends the run.
STEP_WALL_LIMIT_S = 60.0


class StuckError(RuntimeError):
    """The run went past its bound on simulated time or on turns of the loop."""


class BoundedLoop(SimLoop):
    """A `SimLoop` that raises `StuckError` past `max_simulated_s` or `max_steps` turns.

    The bound is checked once per turn, after the turn ran; once it fired it is off, so the
    runner can still cancel what is left.
    """

    def __init__(self, rng: random.Random, max_simulated_s: float, max_steps: int) -> None:
        super().__init__(rng)
        self.max_simulated_s = max_simulated_s
        self.max_steps = max_steps
        self.steps = 0
        self.bounded = True
        self.stuck_in_step: str | None = None

    def _run_once(self) -> None:
        super()._run_once()
        self.steps += 1
        if not self.bounded:
            return
        if self.steps > self.max_steps:
            self.bounded = False
            raise StuckError(
                f"no progress to the end after {self.steps:,} steps ({self.time():.1f} simulated s)"
            )
        if self.time() > self.max_simulated_s:
            self.bounded = False
            raise StuckError(
                f"no progress to the end after {self.time():.1f} simulated s ({self.steps:,} steps)"
            )


@contextlib.contextmanager
def step_watchdog(loop: BoundedLoop, limit_s: float | None = None) -> Iterator[None]:
    """Raise KeyboardInterrupt in the thread running `loop` (the one entering this context)
    when `loop` makes no turn for `limit_s` (default `STEP_WALL_LIMIT_S`) real seconds;
    `loop.stuck_in_step` then says so (the runner reports it as `stuck`).

    The exception is set on that thread directly (PyThreadState_SetAsyncExc), not sent as
    SIGINT (`_thread.interrupt_main`): whatever SIGINT handler the process has (one left by
    an asyncio runner or a CLI, or none in a thread that is not the main one), the run ends.
    """
    if limit_s is None:
        limit_s = STEP_WALL_LIMIT_S
    done = threading.Event()
    target = threading.get_ident()

    def watch() -> None:
        seen, since = -1, time.monotonic()
        while not done.wait(min(1.0, limit_s / 4)):
            if loop.steps != seen or not loop.is_running():
                seen, since = loop.steps, time.monotonic()
            elif time.monotonic() - since > limit_s:
                loop.stuck_in_step = f"one step ran {limit_s:g} s without returning"
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(target), ctypes.py_object(KeyboardInterrupt)
                )
                return

    watcher = threading.Thread(target=watch, name="odradek-sim-watchdog", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def bounded_loop(seed: int, seconds: float) -> BoundedLoop:
    """The loop of one run of `seconds` simulated seconds of load, with its bounds."""
    limit_s = seconds + STUCK_MARGIN_S
    return BoundedLoop(
        random.Random(f"{seed}:loop"),
        limit_s,
        max(MIN_STEPS, int(limit_s * STEPS_PER_SIMULATED_S)),
    )


class World(Protocol):
    """The steps of one run (`_World` in run.py, `ClusterWorld` in cluster.py)."""

    loop: SimLoop
    trace: Trace
    stop: asyncio.Event
    checker: Checker
    clients: Clients

    async def start(self) -> None:
        """Start the nodes and create the topic."""

    async def check_continuously(self) -> None:
        """Check the state invariants until cancelled or one breaks."""

    def fault_tasks(self) -> list[asyncio.Task[None]]:
        """Start the seeded fault schedule."""

    async def heal(self) -> None:
        """Undo every fault: cuts healed, every node running."""

    async def quiesce(self) -> None:
        """After the clients stopped: wait until the nodes' state settles."""

    def final(self) -> None:
        """Check the final state (raises `InvariantBrokenError`)."""


async def run_phases(world: World, seconds: float, settle_s: float) -> None:
    """Run `world` through every phase; ends early at the first broken invariant."""
    loop = world.loop
    await world.start()
    checks = loop.create_task(world.check_continuously())
    world.clients.start()
    faults = world.fault_tasks()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(world.stop.wait(), seconds)
    for task in faults:
        task.cancel()
    await asyncio.gather(*faults, return_exceptions=True)
    if not world.stop.is_set():
        # (After a broken invariant nothing is healed: the run ends as it stands.)
        await world.heal()
    if not world.stop.is_set():
        world.trace.event("load stops; faults healed")
        settle = loop.create_task(world.clients.settle(settle_s))
        stopped = loop.create_task(world.stop.wait())
        await asyncio.wait([settle, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not settle.done():
            settle.cancel()
    else:
        for task in world.clients.tasks:
            task.cancel()
    await asyncio.gather(*world.clients.tasks, return_exceptions=True)
    if not world.stop.is_set():
        await world.quiesce()
    checks.cancel()
    await asyncio.gather(checks, return_exceptions=True)
    if not world.checker.violations:
        with contextlib.suppress(InvariantBrokenError):
            world.final()
