"""`odradek sim`: run the deterministic simulator for one seed, or sweep many."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import click

FAULT_HELP = (
    "comma-separated: crash, power-loss, reset, cut, consumer-crash, disk-error (one broker), "
    "crash, power-loss, cut, controller-crash (a cluster); 'none' for none"
)


def _parse_faults(value: str | None) -> tuple[str, ...] | None:
    from odradek.sim import FAULTS
    from odradek.sim.cluster import CLUSTER_FAULTS, OPT_IN_CLUSTER_FAULTS

    if value is None:
        return None
    if value.strip().lower() == "none":
        return ()
    faults = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [
        fault for fault in faults if fault not in (*FAULTS, *CLUSTER_FAULTS, *OPT_IN_CLUSTER_FAULTS)
    ]
    if unknown:
        raise click.BadParameter(f"unknown fault(s) {', '.join(unknown)}: {FAULT_HELP}")
    return faults


def _replay_with_fixed_string_hashing() -> None:
    """Run again under PYTHONHASHSEED=0 when started as `odradek` with another hash seed.

    The broker's decisions do not depend on string hashing, and the simulator gives aiokafka's
    modules an insertion-ordered `set`; aiokafka's set literals and comprehensions (of topics
    and partitions) still iterate by string hash, so a fixed hash seed keeps every replay of a
    seed identical (the test suite runs under the same one). Only for the console script
    (never inside a test runner).
    """
    if os.environ.get("PYTHONHASHSEED") == "0" or os.environ.get("ODRADEK_SIM_NO_REEXEC"):
        return
    if os.path.basename(sys.argv[0]) not in ("odradek", "__main__.py"):
        return
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    os.execve(sys.executable, [sys.executable, "-m", "odradek.cli", *sys.argv[1:]], environment)


@click.command()
@click.option("--seed", type=int, help="Replay one run.")
@click.option("--seeds", type=int, help="Sweep this many seeds (from --first-seed).")
@click.option("--first-seed", type=int, default=1, show_default=True)
@click.option("--seconds", type=float, default=30.0, show_default=True, help="Simulated time.")
@click.option("--faults", help=FAULT_HELP + " (default: all but disk-error)")
@click.option(
    "--fsync/--no-fsync",
    default=True,
    show_default=True,
    help="odradek.acks.all.fsync: without it a power loss may lose acknowledged writes.",
)
@click.option("--rate", type=float, help="Produced messages per simulated second (all producers).")
@click.option(
    "--brokers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="1: one broker alone; more: a controller and this many brokers, a topic of "
    "replication factor 3.",
)
@click.option("--trace-lines", type=int, default=60, show_default=True)
@click.option("--trace-file", type=click.Path(dir_okay=False, path_type=Path))
def sim(
    seed: int | None,
    seeds: int | None,
    first_seed: int,
    seconds: float,
    faults: str | None,
    fsync: bool,
    rate: float | None,
    brokers: int,
    trace_lines: int,
    trace_file: Path | None,
) -> None:
    """Run the broker's real code on a simulated clock, network and disk.

    One seed replays exactly (the same trace every time); a sweep prints each failing seed
    with the command that replays it.
    """
    if (seed is None) == (seeds is None):
        raise click.UsageError("give either --seed N or --seeds COUNT")
    _replay_with_fixed_string_hashing()
    try:
        from odradek.sim import DEFAULT_FAULTS, FAULTS, Load, SimOptions, run_seed
        from odradek.sim.sweep import sweep
    except ImportError as error:
        raise click.ClickException(
            f"the simulator needs aiokafka ({error}); install odradek[sim]"
        ) from None
    chosen = _parse_faults(faults)
    if brokers == 1:
        load = Load() if rate is None else Load(messages_per_second=rate)
        default_faults: tuple[str, ...] = DEFAULT_FAULTS
        unknown = sorted(set(chosen or ()) - set(FAULTS))
        if unknown:
            raise click.UsageError(
                f"--faults: a one-broker run knows {', '.join(FAULTS)}, not {', '.join(unknown)}"
            )
    else:
        from odradek.sim.cluster import (
            CLUSTER_FAULTS,
            CLUSTER_LOAD,
            OPT_IN_CLUSTER_FAULTS,
            REPLICATION_FACTOR,
        )

        if brokers < REPLICATION_FACTOR:
            raise click.UsageError(f"--brokers: a cluster needs {REPLICATION_FACTOR} or more")
        load = CLUSTER_LOAD
        if rate is not None:
            load = dataclasses.replace(load, messages_per_second=rate)
        default_faults = CLUSTER_FAULTS
        unsupported = sorted(set(chosen or ()) - {*CLUSTER_FAULTS, *OPT_IN_CLUSTER_FAULTS})
        if unsupported:
            raise click.UsageError(
                f"--faults: a cluster run knows {', '.join(CLUSTER_FAULTS)}, "
                f"not {', '.join(unsupported)}"
            )
    template = SimOptions(
        seed=first_seed,
        seconds=seconds,
        faults=default_faults if chosen is None else chosen,
        load=load,
        acks_all_fsync=fsync,
        brokers=brokers,
    )
    if seed is not None:
        result = run_seed(dataclasses.replace(template, seed=seed))
        if trace_file is not None:
            trace_file.write_text("\n".join(result.trace) + "\n")
        rate_text = f"{result.simulated_s / result.wall_s:.1f}" if result.wall_s else "-"
        stats = ", ".join(f"{key} {value:,}" for key, value in result.stats.items())
        if result.violation is None:
            click.echo(
                f"seed {seed}: ok — {result.simulated_s:.1f} simulated s in {result.wall_s:.1f} s "
                f"({rate_text} sim-s/s); {stats}; trace {result.fingerprint}"
            )
            return
        click.echo("\n".join(result.trace[-trace_lines:]))
        click.echo(f"\nseed {seed} FAILED: {result.violation}")
        click.echo(f"{stats}; trace {result.fingerprint}")
        if result.errors:
            click.echo("errors logged during the run (last 5):")
            for line in result.errors[-5:]:
                click.echo(f"  {line}")
        click.echo(f"replay: {result.options.command()}")
        sys.exit(1)
    assert seeds is not None

    def report(result: object) -> None:
        from odradek.sim import SimResult

        assert isinstance(result, SimResult)
        if result.violation is not None:
            click.echo(f"seed {result.options.seed}: {result.violation}")
            click.echo(f"  replay: {result.options.command()}")

    summary = sweep(template, range(first_seed, first_seed + seeds), on_result=report)
    click.echo(
        f"{summary.seeds} seed(s), {len(summary.failures)} failed; "
        f"{summary.simulated_s:.0f} simulated s in {summary.wall_s:.1f} s "
        f"({summary.simulated_per_wall_second:.1f} sim-s/s)"
    )
    for invariant, count in sorted(summary.by_invariant.items()):
        click.echo(f"  {invariant}: {count}")
    if summary.failures:
        sys.exit(1)
