"""The simulator's speed: simulated seconds per wall-clock second, by load and faults.

Runs `odradek.sim.run_seed` in this process for a few seeds per row and prints a table, then
(with --profile) where the wall time of one run goes, grouped by package. Timings depend on the
machine and its load; they are printed, never asserted.

    .venv/bin/python benchmarks/sim_bench.py [--seconds 30] [--seeds 3] [--profile]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import time

from odradek.broker import dispatcher
from odradek.sim import DEFAULT_FAULTS, Load, SimOptions, run_seed

ROWS = [
    ("200 msg/s, no faults", 200.0, ()),
    ("200 msg/s, default faults", 200.0, DEFAULT_FAULTS),
    ("50 msg/s, default faults", 50.0, DEFAULT_FAULTS),
    ("20 msg/s, default faults", 20.0, DEFAULT_FAULTS),
]


def _row(label: str, rate: float, faults: tuple[str, ...], seconds: float, seeds: int) -> str:
    simulated = wall = cpu = 0.0
    sent = 0
    for seed in range(1, seeds + 1):
        cpu_before = time.process_time()
        result = run_seed(
            SimOptions(
                seed=seed,
                seconds=seconds,
                faults=faults,
                load=Load(messages_per_second=rate),
            )
        )
        cpu += time.process_time() - cpu_before
        simulated += result.simulated_s
        wall += result.wall_s
        sent += result.stats["sent"]
    # Loaded simulated seconds (the --seconds of each run; the settling after it is mostly
    # idle and cheap) per second of wall clock and of this process's CPU.
    loaded = seconds * seeds
    per_wall = loaded / wall if wall else 0.0
    per_cpu = loaded / cpu if cpu else 0.0
    # 30-simulated-second seeds one core runs in 2 minutes (CPU time: other jobs on the machine
    # slow the wall clock, not this).
    seeds_in_two_minutes = 120 * per_cpu / 30
    return (
        f"| {label} | {seeds} | {simulated:.0f} | {wall:.1f} | {per_wall:.1f} | {per_cpu:.1f} | "
        f"{sent / seconds / seeds:.0f} | {seeds_in_two_minutes:.0f} |"
    )


def _profile(seconds: float) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run_seed(SimOptions(seed=1, seconds=seconds, faults=()))
    profiler.disable()
    groups: collections.Counter[str] = collections.Counter()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (path, _line, _name), (_cc, _nc, own, _cumulative, _callers) in stats.items():
        if "aiokafka" in path:
            group = "aiokafka (clients)"
        elif "odradek/sim" in path:
            group = "odradek.sim (loop, network, disk, checks)"
        elif "odradek/" in path:
            group = "odradek." + path.split("odradek/")[1].split("/")[0] + " (the broker)"
        elif "asyncio" in path:
            group = "asyncio (tasks, futures, timers)"
        else:
            group = "builtins and stdlib"
        groups[group] += own
    total = sum(groups.values())
    print(f"\nwhere one {seconds:g} s run at 200 msg/s spends its time (profiled):\n")
    print("| part | share |")
    print("| --- | ---: |")
    for group, own in groups.most_common():
        print(f"| {group} | {100 * own / total:.0f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    arguments = parser.parse_args()
    dispatcher.load_handlers()
    run_seed(SimOptions(seed=0, seconds=1, faults=()))  # imports and first-use costs
    started = time.perf_counter()
    print(
        "| load | seeds | simulated s (with settling) | wall s | loaded sim-s per wall-s | "
        "loaded sim-s per CPU-s | msg per loaded s | 30-s seeds in 2 CPU-min |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, rate, faults in ROWS:
        print(_row(label, rate, faults, arguments.seconds, arguments.seeds), flush=True)
    print(f"\n(total {time.perf_counter() - started:.0f} s wall)")
    if arguments.profile:
        _profile(min(arguments.seconds, 10.0))


if __name__ == "__main__":
    main()
