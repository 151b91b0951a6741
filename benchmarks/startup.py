"""Broker start-up time.

* process: from spawning `odradek serve` (a free port chosen beforehand) to the first TCP
  connection the port accepts, polled every 2 ms; the process is then stopped (SIGTERM) and
  the next run starts in a fresh data directory;
* in-process: `await Broker(port=0).start()` in this process (kio schemas and handlers
  already imported after the first run, so run 1 is shown separately as the cold start).

  .venv/bin/python benchmarks/startup.py [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time

from _common import BrokerProcess, median, print_table, wait_for_port

GOAL_SECONDS = 0.5


def process_start_seconds() -> float:
    broker = BrokerProcess()
    start = time.monotonic()
    broker.process = subprocess.Popen(
        broker.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        accepted = wait_for_port(broker.port, timeout=30)
    finally:
        broker.stop()
    return accepted - start


def in_process_start_seconds() -> float:
    from odradek.broker.server import Broker

    async def once() -> float:
        broker = Broker(host="127.0.0.1", port=0)
        start = time.perf_counter()
        await broker.start()
        elapsed = time.perf_counter() - start
        await broker.stop()
        return elapsed

    return asyncio.run(once())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 runs")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    print(
        f"startup: `odradek serve` spawn -> first accepted connection, and in-process "
        f"Broker.start(); {runs} runs each, empty data directory each time."
    )
    process = [process_start_seconds() for _ in range(runs)]
    import_start = time.perf_counter()
    import odradek.broker.server  # noqa: F401 -- timed: the embedding's import cost

    import_seconds = time.perf_counter() - import_start
    in_process = [in_process_start_seconds() for _ in range(runs)]
    rows = [
        [
            "odradek serve (process)",
            f"{median(process):.3f}",
            f"{min(process):.3f}",
            f"{max(process):.3f}",
            f"< {GOAL_SECONDS}",
            "yes" if median(process) < GOAL_SECONDS else "NO",
        ],
        [
            "import odradek.broker.server",
            f"{import_seconds:.3f}",
            "",
            "",
            "",
            "",
        ],
        [
            "Broker().start() cold (run 1)",
            f"{in_process[0]:.3f}",
            "",
            "",
            f"< {GOAL_SECONDS}",
            "yes" if in_process[0] < GOAL_SECONDS else "NO",
        ],
        [
            "Broker().start() warm",
            f"{median(in_process[1:]):.3f}",
            f"{min(in_process[1:]):.3f}",
            f"{max(in_process[1:]):.3f}",
            f"< {GOAL_SECONDS}",
            "yes" if median(in_process[1:]) < GOAL_SECONDS else "NO",
        ],
    ]
    print_table(
        f"Start-up time, seconds (median of {runs})",
        ["what", "median s", "min s", "max s", "goal", "met"],
        rows,
    )


if __name__ == "__main__":
    main()
