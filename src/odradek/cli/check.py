"""`odradek check`: measure the seed's trade-off matrix under injected faults."""

from __future__ import annotations

import logging
import math
import signal
import tempfile
from pathlib import Path
from types import FrameType

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from odradek.check.case_report import MAX_CASES
from odradek.check.faults import FaultError, parse_faults
from odradek.check.report import (
    main_runs,
    print_comparison,
    print_table,
    write_html,
    write_json,
)
from odradek.check.runner import CheckOptions, Progress, run_check
from odradek.client import Guarantee

GUARANTEES = ["at-most-once", "at-least-once", "exactly-once", "all"]


def _finite_seconds(context: click.Context, param: click.Parameter, value: float) -> float:
    """A phase length: a finite number of seconds, 0 or more (nan and inf are refused)."""
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number of seconds")
    return value


def _bootstrap_servers(
    context: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    """`host:port[,host:port...]` with numeric ports 1-65535 (a bracketed IPv6 host allowed)."""
    if value is None:
        return None
    for item in value.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise click.BadParameter(
                f"{item.strip()!r} is not host:port with a numeric port (e.g. localhost:9092)"
            )
    return value


def _acks_values(
    context: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    """`1,all` -> ("1", "all"); -1 is all."""
    if value is None:
        return None
    chosen = []
    for part in filter(None, (part.strip().lower() for part in value.split(","))):
        item = "all" if part == "-1" else part
        if item not in ("0", "1", "all"):
            raise click.BadParameter(f"{item!r} is not an acks setting: 0, 1 or all")
        chosen.append(item)
    return tuple(dict.fromkeys(chosen))


def _fsync_values(
    context: click.Context, param: click.Parameter, value: str | None
) -> tuple[bool, ...] | None:
    """`on,off` -> (True, False)."""
    if value is None:
        return None
    words = {"on": True, "true": True, "off": False, "false": False}
    chosen = []
    for item in filter(None, (part.strip().lower() for part in value.split(","))):
        if item not in words:
            raise click.BadParameter(f"{item!r} is not on or off")
        chosen.append(words[item])
    return tuple(dict.fromkeys(chosen))


def _stop_on_sigterm() -> None:
    """SIGTERM (a CI cancel, `timeout`, `kill`) stops the run as Ctrl-C does: the runner's
    cleanup stops the broker and the processor it started. A second SIGTERM during that cleanup
    is ignored, so the cleanup finishes."""

    def handle(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handle)


PROGRESS_LINE_EVERY_S = 10.0


class _ProgressLines:
    """A progress callback for output that is not a terminal: one line per phase change and
    at most one every PROGRESS_LINE_EVERY_S seconds of run time otherwise."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._last: tuple[str, str] | None = None
        self._last_elapsed = 0.0

    def __call__(self, progress: Progress) -> None:
        key = (progress.guarantee, progress.phase)
        if key == self._last and progress.elapsed - self._last_elapsed < PROGRESS_LINE_EVERY_S:
            return
        self._last = key
        self._last_elapsed = progress.elapsed
        self._console.print(
            f"{progress.guarantee}: {progress.phase}, "
            f"{min(progress.elapsed, progress.duration):.0f}/{progress.duration:.0f} s; "
            f"sent {progress.sent:,}, acked {progress.acked:,}, in sink {progress.delivered:,}; "
            f"faults: {', '.join(progress.faults) or '-'}",
            highlight=False,
            soft_wrap=True,
        )


def _progress_table(progress: Progress) -> Table:
    table = Table(show_header=True, box=None)
    for column in ("guarantee", "phase", "elapsed", "sent", "acked", "in sink", "faults"):
        table.add_column(column)
    table.add_row(
        progress.guarantee,
        progress.phase,
        f"{min(progress.elapsed, progress.duration):.1f}/{progress.duration:.0f} s",
        f"{progress.sent:,}",
        f"{progress.acked:,}",
        f"{progress.delivered:,}",
        ", ".join(progress.faults) or "-",
    )
    return table


@click.command()
@click.option(
    "--guarantee",
    type=click.Choice(GUARANTEES),
    default="all",
    show_default=True,
    help="Which guarantee's workload to run.",
)
@click.option(
    "--workload",
    type=click.Choice(["sink", "txn"]),
    default="sink",
    show_default=True,
    help="sink: each guarantee's producer -> processor -> SQLite sink; txn: Jepsen's "
    "transactional queue workload (transactions over several partitions, read_committed "
    "consumers; --guarantee does not apply).",
)
@click.option(
    "--faults",
    default="all",
    show_default=True,
    help="Comma-separated: kill, pause, power-loss, proxy-cut, proxy-delay, proxy-drop, "
    "processor-kill; with --brokers: leader-kill, follower-pause, isolate, controller-kill, "
    "all-power-loss and the proxy/processor faults; 'all' (those that apply) or 'none'.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    callback=_finite_seconds,
    default=20.0,
    show_default=True,
    help="Seconds of the fault phase (loss, duplicates, recovery) per guarantee.",
)
@click.option(
    "--fault-free",
    type=click.FloatRange(min=0),
    callback=_finite_seconds,
    default=10.0,
    show_default=True,
    help="Seconds of the fault-free phase before the faults (speed and latency come from it).",
)
@click.option(
    "--messages",
    type=click.IntRange(min=1),
    default=None,
    help="Cap on values produced in each phase (1 or more).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the fault schedule.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None)
@click.option(
    "--bootstrap",
    default=None,
    callback=_bootstrap_servers,
    help="Check an external cluster (host:port[,host:port]; client-side faults only) instead "
    "of a local broker.",
)
@click.option(
    "--brokers",
    type=click.IntRange(min=1),
    default=None,
    help="Run each workload on a local cluster of this many brokers (and a controller) "
    "instead of one broker.",
)
@click.option(
    "--replication-factor",
    type=click.IntRange(min=1),
    default=None,
    help="With --brokers: the workload topic's replication factor (default min(3, brokers)).",
)
@click.option(
    "--min-insync",
    type=click.IntRange(min=1),
    default=None,
    help="With --brokers: the workload topic's min.insync.replicas (default min(2, RF)).",
)
@click.option(
    "--acks",
    "acks_text",
    default=None,
    callback=_acks_values,
    help="Comma-separated acks settings (0, 1, all): the at-least-once workload once per "
    "setting, on the same fault schedule (idempotence off; librdkafka forces acks=all with "
    "it). Default with --brokers: 1,all.",
)
@click.option(
    "--fsync",
    "fsync_text",
    default=None,
    callback=_fsync_values,
    help="Comma-separated on/off: the at-least-once workload once per odradek.acks.all.fsync "
    "setting of the local brokers. Default with --brokers: on,off.",
)
@click.option(
    "--max-cases",
    type=click.IntRange(min=0),
    default=MAX_CASES,
    show_default=True,
    help="Cases the JSON report lists per anomaly, the first by time (0: all); the counts "
    "and the per-partition and per-cause summaries cover every case.",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where histories, broker data and sinks go (default: a new temporary directory).",
)
def check(
    guarantee: str,
    workload: str,
    faults: str,
    duration: float,
    fault_free: float,
    messages: int | None,
    seed: int,
    json_path: Path | None,
    html_path: Path | None,
    bootstrap: str | None,
    brokers: int | None,
    replication_factor: int | None,
    min_insync: int | None,
    acks_text: tuple[str, ...] | None,
    fsync_text: tuple[bool, ...] | None,
    max_cases: int,
    workdir: Path | None,
) -> None:
    """Run each guarantee's workload, first fault-free, then under faults, and measure the
    trade-off matrix: speed and latency from the fault-free phase; loss, duplicates, anomalies
    and recovery from the fault phase."""
    logging.basicConfig(level=logging.ERROR)
    if brokers is not None and bootstrap is not None:
        raise click.UsageError("--brokers starts a local cluster; --bootstrap checks another one")
    if brokers is None and (replication_factor or min_insync):
        raise click.UsageError("--replication-factor and --min-insync need --brokers")
    if brokers is not None and (replication_factor or min(3, brokers)) > brokers:
        raise click.BadParameter(
            f"{replication_factor} copies need at least as many brokers ({brokers})",
            param_hint="--replication-factor",
        )
    if brokers is not None and min_insync is not None:
        copies = replication_factor or min(3, brokers)
        if min_insync > copies:
            raise click.BadParameter(
                f"{min_insync} in-sync replicas need at least as many copies "
                f"(--replication-factor {copies}): every acks=all write would fail",
                param_hint="--min-insync",
            )
    if fsync_text is not None and bootstrap is not None:
        raise click.UsageError("--fsync sets the local brokers' odradek.acks.all.fsync")
    if workload == "txn" and (acks_text is not None or fsync_text is not None):
        raise click.UsageError(
            "--acks and --fsync compare the at-least-once sink workload; the txn workload's "
            "transactional producer always uses acks=all"
        )
    comparing = brokers is not None and workload == "sink"
    acks = acks_text if acks_text is not None else (("1", "all") if comparing else ())
    fsync = fsync_text if fsync_text is not None else ((True, False) if comparing else ())
    try:
        chosen_faults = parse_faults(faults, local=bootstrap is None, brokers=brokers or 0)
    except FaultError as error:
        raise click.BadParameter(str(error), param_hint="--faults") from None
    guarantees = list(Guarantee) if guarantee == "all" else [Guarantee(guarantee)]
    directory = workdir or Path(tempfile.mkdtemp(prefix="odradek-check-"))
    options = CheckOptions(
        guarantees=guarantees,
        workload=workload,
        faults=chosen_faults,
        duration=duration,
        fault_free=fault_free,
        messages=messages,
        seed=seed,
        bootstrap=bootstrap,
        workdir=directory,
        brokers=brokers or 0,
        replication_factor=replication_factor,
        min_insync=min_insync,
        acks=acks,
        fsync=fsync,
    )
    _stop_on_sigterm()
    console = Console(stderr=True)
    running = "txn workload" if workload == "txn" else ", ".join(g.value for g in guarantees)
    console.print(
        f"odradek check: {running}; faults: "
        f"{', '.join(chosen_faults) or 'none'}; {fault_free:g} s fault-free then {duration:g} s "
        f"of faults each"
        + (f"; {brokers} brokers" if brokers else "")
        + (f"; acks {','.join(acks)}" if acks else "")
        + (f"; fsync {','.join('on' if f else 'off' for f in fsync)}" if fsync else "")
        + f"; work in {directory}"
    )
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            results = run_check(options, lambda progress: live.update(_progress_table(progress)))
    else:
        # Not a terminal (CI, a pipe, a log file): a live table would print nothing until the
        # end, so a plain line at each phase change and every PROGRESS_LINE_EVERY_S seconds.
        results = run_check(options, _ProgressLines(console))
    print_table(main_runs(results), Console())
    print_comparison(results, Console())
    if json_path is not None:
        write_json(results, json_path, max_cases)
        console.print(f"JSON: {json_path}")
    if html_path is not None:
        write_html(results, html_path, max_cases=max_cases)
        console.print(f"HTML: {html_path}")
