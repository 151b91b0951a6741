"""The simulator's speed: simulated seconds per wall-clock and per CPU second, by load.

Runs `odradek.sim.run_seed` in this process for a few seeds per row and prints a table, then
(with --profile) where the time of one run goes, grouped by package. The defined load is the
issue's: 6 partitions, 2 idempotent and 1 transactional producer at 200 messages/s nominal,
2 consumers in a group (classic, or KIP-848 in a third of the seeds); the cluster row is
`--brokers 3` with its own load. Timings depend on the machine and its load; they are printed,
never asserted. Run it on one core (`taskset -c 0`) to compare with CI's budget.

    .venv/bin/python benchmarks/sim_bench.py [--seconds 30] [--seeds 3] [--profile] [--no-cluster]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import dataclasses
import pstats
import time

from odradek.broker import dispatcher
from odradek.sim import DEFAULT_FAULTS, FAULTS, Load, SimOptions, run_seed
from odradek.sim.cluster import CLUSTER_FAULTS, CLUSTER_LOAD

# label, template (the seed is replaced)
ROWS = [
    ("defined load, 200 msg/s, no faults", SimOptions(seed=0, faults=())),
    ("defined load, 200 msg/s, default faults", SimOptions(seed=0)),
    ("defined load, 200 msg/s, every fault", SimOptions(seed=0, faults=FAULTS)),
    (
        "defined load, KIP-848 group, default faults",
        SimOptions(seed=0, load=Load(group_protocol="consumer")),
    ),
    ("50 msg/s, default faults", SimOptions(seed=0, load=Load(messages_per_second=50.0))),
    ("20 msg/s, default faults", SimOptions(seed=0, load=Load(messages_per_second=20.0))),
    (
        "idle clients (2 msg/s), default faults",
        SimOptions(seed=0, load=Load(messages_per_second=0)),
    ),
]
CLUSTER_ROW = (
    "3 brokers + controller, 100 msg/s, broker kills",
    SimOptions(seed=0, brokers=3, faults=CLUSTER_FAULTS, load=CLUSTER_LOAD),
)


def _row(label: str, template: SimOptions, seconds: float, seeds: int) -> str:
    simulated = wall = cpu = 0.0
    sent = 0
    for seed in range(1, seeds + 1):
        cpu_before = time.process_time()
        result = run_seed(dataclasses.replace(template, seed=seed, seconds=seconds))
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
        f"| {label} | {seeds} | {simulated:.0f} | {wall:.1f} | {cpu / seeds:.2f} | "
        f"{per_wall:.1f} | {per_cpu:.1f} | {sent / seconds / seeds:.0f} | "
        f"{seeds_in_two_minutes:.0f} |"
    )


def _profile(seconds: float) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run_seed(SimOptions(seed=1, seconds=seconds, faults=DEFAULT_FAULTS))
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
    print(f"\nwhere one {seconds:g} s run of the defined load spends its time (profiled):\n")
    print("| part | share |")
    print("| --- | ---: |")
    for group, own in groups.most_common():
        print(f"| {group} | {100 * own / total:.0f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-cluster", action="store_true", help="skip the 3-broker row")
    arguments = parser.parse_args()
    dispatcher.load_handlers()
    run_seed(SimOptions(seed=0, seconds=1, faults=()))  # imports and first-use costs
    started = time.perf_counter()
    print(
        "| load | seeds | simulated s (with settling) | wall s | CPU s per seed | "
        "loaded sim-s per wall-s | loaded sim-s per CPU-s | msg sent per loaded s | "
        "30-s seeds in 2 CPU-min |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = ROWS if arguments.no_cluster else [*ROWS, CLUSTER_ROW]
    for label, template in rows:
        print(_row(label, template, arguments.seconds, arguments.seeds), flush=True)
    print(f"\n(total {time.perf_counter() - started:.0f} s wall)")
    if arguments.profile:
        _profile(min(arguments.seconds, 10.0))


if __name__ == "__main__":
    main()
