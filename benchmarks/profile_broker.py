"""Where the broker spends its time under the raw produce (or fetch) load: a cProfile table.

The broker runs in this process's main thread (`Broker`, on the same event loop `odradek serve`
uses) under cProfile; the load is `broker_load.py --bootstrap ...` in a child process, so the
profile holds only broker work. cProfile adds overhead to every Python call, so absolute
rates are lower than in broker_load.py; the shares are what matter. For a sampling view of a
real `odradek serve` process use py-spy instead (see README.md).

    .venv/bin/python benchmarks/profile_broker.py [--pass acks1|acksall|fetch] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import print_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pass", dest="load_pass", default="acks1", help="acks1|acksall|fetch")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--save", metavar="FILE", help="also write the raw pstats file")
    args = parser.parse_args()

    from odradek.broker.server import Broker, new_event_loop

    data_dir = Path(tempfile.mkdtemp(prefix="odradek-profile-"))
    profile = cProfile.Profile()

    async def load(broker_address: str, passes: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("broker_load.py")),
            "--bootstrap",
            broker_address,
            "--broker-pid",
            str(os.getpid()),
            "--passes",
            passes,
            "--seconds",
            str(args.seconds),
            stdout=subprocess.PIPE,
        )
        output, _ = await process.communicate()
        return output.decode()

    async def run() -> str:
        broker = Broker(data_dir=data_dir, host="127.0.0.1", port=0)
        await broker.start()
        try:
            if args.load_pass == "fetch":
                # Fill the log first, unprofiled; then profile only the catch-up fetch.
                await load(broker.bootstrap_servers, "acks1")
            profile.enable()
            output = await load(broker.bootstrap_servers, args.load_pass)
            profile.disable()
        finally:
            await broker.stop()
        return output

    loop = new_event_loop()
    try:
        output = loop.run_until_complete(run())
    finally:
        loop.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(output)
    if args.save:
        profile.dump_stats(args.save)

    stats = pstats.Stats(profile)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tottime for (_calls, _primitive, tottime, _cumtime, _callers) in entries.values())
    root = str(Path(__file__).resolve().parents[1])
    rows = []
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)
    for (filename, line, function), (calls, _primitive, tottime, cumtime, _) in ranked[: args.top]:
        where = filename.replace(root + "/", "").replace(str(Path(sys.prefix)) + "/", "")
        name = f"{where}:{line}:{function}" if line else function
        rows.append(
            [name, f"{100 * tottime / total:.1f}", f"{tottime:.2f}", f"{cumtime:.2f}", f"{calls:,}"]
        )
    print_table(
        f"Broker hotspots under the '{args.load_pass}' load, by own time "
        f"(total profiled {total:.1f} s incl. event-loop idle)",
        ["function", "% own", "own s", "cumulative s", "calls"],
        rows,
    )


if __name__ == "__main__":
    main()
