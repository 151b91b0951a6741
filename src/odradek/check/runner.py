"""One check run per guarantee: start the pieces, inject the faults, drain, analyse.

    broker (local, `odradek serve`)  <-  fault proxy  <-  producer (this process)
                                                    <-  processor (a child process) -> SQLite sink

The local broker advertises the proxy, so every client connection goes through it. With
`bootstrap`, the proxy fronts the external cluster instead and rewrites the addresses it
advertises; only client-side faults apply.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odradek.check.analysis import Analysis, analyse
from odradek.check.faults import (
    BROKER_FAULTS,
    DESCRIPTIONS,
    POWER_LOSS,
    FaultInjector,
    schedule,
)
from odradek.check.history import NEMESIS, Clock, HistoryWriter, merge, read_history, write_history
from odradek.check.local_broker import LocalBroker, free_port
from odradek.check.proxy import FaultProxy
from odradek.check.worker import WorkerSpec
from odradek.check.workload import (
    PROCESSOR_OVERRIDES,
    ProcessorSupervisor,
    ProducerWorkload,
    SinkReader,
    committed_offsets,
    create_sink,
    create_topic,
    end_offsets,
    final_poll,
    final_sink,
)
from odradek.client import Guarantee

logger = logging.getLogger("odradek.check")

# The broker property that keeps unsynced bytes in memory only (see odradek.storage.lazy_files).
LAZY_STORAGE = {"odradek.storage.mode": "lazy"}


@dataclass(frozen=True, slots=True)
class CheckOptions:
    guarantees: list[Guarantee]
    faults: list[str]
    duration: float = 20.0
    messages: int | None = None
    seed: int = 0
    bootstrap: str | None = None
    workdir: Path = Path("odradek-check")
    partitions: int = 3
    window: int = 2000
    drain_timeout: float = 60.0

    @property
    def local(self) -> bool:
        return self.bootstrap is None


@dataclass(slots=True)
class Sample:
    """The run's counters at one moment (seconds since the workload started)."""

    at: float
    sent: int
    acked: int
    delivered: int


@dataclass(slots=True)
class Progress:
    guarantee: str
    phase: str = "starting"
    elapsed: float = 0.0
    duration: float = 0.0
    sent: int = 0
    acked: int = 0
    delivered: int = 0
    faults: list[str] = field(default_factory=list)
    processor_restarts: int = 0


@dataclass(slots=True)
class RunResult:
    guarantee: Guarantee
    faults: list[str]  # the faults scheduled, in order
    analysis: Analysis
    workload_seconds: float
    drain_seconds: float
    timeline: list[Sample]
    fault_windows: list[tuple[str, float, float]]  # name, start, end (seconds)
    history_path: Path
    proxy_stats: dict[str, int]
    processor_restarts: int
    notes: list[str]
    seed: int

    def as_json(self) -> dict[str, Any]:
        analysis = self.analysis
        return {
            "guarantee": self.guarantee.value,
            "faults": self.faults,
            "acked": analysis.acked,
            "lost": analysis.lost,
            "duplicated": analysis.duplicated,
            "throughput_msgs_per_s": round(analysis.throughput_msgs_per_s, 1),
            "latency_ms": {
                "p50": round(analysis.latency_p50, 2),
                "p99": round(analysis.latency_p99, 2),
            },
            "anomalies": {
                name: {
                    "count": len(cases),
                    "examples": [case.as_dict() for case in cases[:5]],
                }
                for name, cases in analysis.anomalies.items()
            },
            "produced": analysis.produced,
            "delivered": analysis.delivered,
            "unacknowledged": analysis.indeterminate + analysis.failed,
            "fault_counts": analysis.fault_counts,
            "seed": self.seed,
            "workload_seconds": round(self.workload_seconds, 2),
            "drain_seconds": round(self.drain_seconds, 2),
            "processor_restarts": self.processor_restarts,
            "history": str(self.history_path),
            "notes": self.notes,
        }


ProgressCallback = Callable[[Progress], None]


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    addresses = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        addresses.append((host or "127.0.0.1", int(port)))
    return addresses


def run_guarantee(
    options: CheckOptions, guarantee: Guarantee, on_progress: ProgressCallback | None = None
) -> RunResult:
    directory = options.workdir / guarantee.value
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("history*.jsonl"):
        stale.unlink()
    clock = Clock()
    history = HistoryWriter(directory / "history-checker.jsonl", clock)
    progress = Progress(guarantee.value, duration=options.duration)
    notes: list[str] = []
    run_id = uuid.uuid4().hex[:8]
    topic = f"odradek-check-{guarantee.value}-{run_id}"
    group = f"odradek-check-{guarantee.value}-{run_id}"

    def report(phase: str | None = None) -> None:
        if phase is not None:
            progress.phase = phase
        if on_progress is not None:
            on_progress(progress)

    broker: LocalBroker | None = None
    if options.local:
        broker_port = free_port()
        proxy = FaultProxy([("127.0.0.1", broker_port)])
        bootstrap = proxy.start()
        overrides = dict(LAZY_STORAGE) if POWER_LOSS in options.faults else {}
        broker = LocalBroker(
            directory / "data",
            port=broker_port,
            advertised=("127.0.0.1", proxy.port_for(("127.0.0.1", broker_port))),
            overrides=overrides,
            log_path=directory / "broker.log",
        )
        report("starting the broker")
        broker.start()
    else:
        assert options.bootstrap is not None
        proxy = FaultProxy(_addresses(options.bootstrap))
        bootstrap = proxy.start()

    supervisor: ProcessorSupervisor | None = None
    injector: FaultInjector | None = None
    timeline: list[Sample] = []
    stop_monitor = threading.Event()
    try:
        create_topic(bootstrap, topic, options.partitions)
        sink_path = directory / "sink.db"
        sink_path.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(f"{sink_path}{suffix}").unlink(missing_ok=True)
        create_sink(sink_path)
        reader = SinkReader(sink_path)
        kill_flag = directory / "kill-processor"
        kill_flag.unlink(missing_ok=True)
        spec = WorkerSpec(
            bootstrap=bootstrap,
            group=group,
            topic=topic,
            guarantee=guarantee.value,
            sink_path=str(sink_path),
            history_path="",
            process="",
            clock_origin=clock.origin,
            kill_flag=str(kill_flag),
            config=dict(PROCESSOR_OVERRIDES),
        )
        supervisor = ProcessorSupervisor(spec, directory)
        supervisor.start()
        delivered = {"rows": 0}
        producer = ProducerWorkload(
            bootstrap,
            topic,
            options.partitions,
            guarantee,
            history,
            lambda: delivered["rows"],
            window=options.window,
        )
        planned = schedule(options.faults, options.duration, options.seed)
        started = time.monotonic()
        injector = FaultInjector(
            planned,
            history,
            broker=broker,
            proxy=proxy,
            kill_flag=kill_flag,
            started=started,
            on_event=progress.faults.append,
        )

        def monitor() -> None:
            while not stop_monitor.is_set():
                delivered["rows"] = reader.rows()
                progress.elapsed = time.monotonic() - started
                progress.sent, progress.acked = producer.sent, producer.acked
                progress.delivered = delivered["rows"]
                progress.processor_restarts = supervisor.restarts if supervisor else 0
                timeline.append(
                    Sample(progress.elapsed, producer.sent, producer.acked, delivered["rows"])
                )
                report()
                stop_monitor.wait(0.25)

        monitor_thread = threading.Thread(target=monitor, name="odradek-check-monitor", daemon=True)
        monitor_thread.start()
        report("workload")
        injector.start()
        producer.run(started + options.duration, options.messages)
        workload_seconds = time.monotonic() - started
        report("healing faults")
        injector.stop()
        notes += injector.errors
        report("final drain")
        drain_started = time.monotonic()
        caught_up = _drain(bootstrap, guarantee, group, topic, options, reader, supervisor)
        if not caught_up:
            notes.append(
                f"the processor did not catch up within {options.drain_timeout:.0f} s of drain"
            )
        supervisor.stop()
        final_poll(bootstrap, topic, options.partitions, history)
        final_sink(reader, history)
        drain_seconds = time.monotonic() - drain_started
        stop_monitor.set()
        monitor_thread.join(timeout=5)
        processor_restarts = supervisor.restarts
    finally:
        stop_monitor.set()
        if injector is not None:
            injector.stop()
        if supervisor is not None and supervisor.process is not None:
            supervisor.stop()
        history.close()
        proxy_stats = proxy.stats.as_dict()
        proxy.stop()
        if broker is not None:
            broker.stop()

    report("analysing")
    histories = [read_history(path) for path in sorted(directory.glob("history-*.jsonl"))]
    ops = merge(histories)
    history_path = directory / "history.jsonl"
    write_history(history_path, ops)
    analysis = analyse(ops, workload_seconds)
    windows = _fault_windows(ops, workload_start=started - clock.origin / 1e9)
    if options.local and POWER_LOSS in options.faults:
        notes.append(
            "the broker ran in lazy storage mode (odradek.storage.mode=lazy), so every broker "
            "kill in this run also lost the bytes that were not fsynced"
        )
    report("done")
    return RunResult(
        guarantee=guarantee,
        faults=[fault.name for fault in planned],
        analysis=analysis,
        workload_seconds=workload_seconds,
        drain_seconds=drain_seconds,
        timeline=timeline,
        fault_windows=windows,
        history_path=history_path,
        proxy_stats=proxy_stats,
        processor_restarts=processor_restarts,
        notes=notes,
        seed=options.seed,
    )


def _drain(
    bootstrap: str,
    guarantee: Guarantee,
    group: str,
    topic: str,
    options: CheckOptions,
    reader: SinkReader,
    supervisor: ProcessorSupervisor,
) -> bool:
    """Wait until the processor has committed everything in the topic."""
    deadline = time.monotonic() + options.drain_timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            ends = end_offsets(bootstrap, topic, options.partitions)
            if guarantee is Guarantee.EXACTLY_ONCE:
                committed = reader.stored_offsets(group)
            else:
                committed = committed_offsets(bootstrap, group, topic, options.partitions)
            if all(committed.get(partition, 0) >= end for partition, end in ends.items()):
                time.sleep(0.5)  # at-most-once commits before it processes: let it finish
                return True
        time.sleep(0.5)
    return False


def _fault_windows(ops: list[Any], *, workload_start: float) -> list[tuple[str, float, float]]:
    """(fault, start s, end s) relative to the workload start, from the nemesis ops."""
    windows: list[tuple[str, float, float]] = []
    open_faults: dict[str, float] = {}
    for op in ops:
        if op.process != NEMESIS:
            continue
        at = op.time / 1e9 - workload_start
        if op.extra.get("end"):
            start = open_faults.pop(op.f, at)
            windows.append((op.f, start, at))
        elif op.f == "processor-kill" or op.extra.get("fired") is not None:
            windows.append((op.f, at, at))
        else:
            open_faults[op.f] = at
    for name, start in open_faults.items():
        windows.append((name, start, start))
    return windows


def run_check(
    options: CheckOptions, on_progress: ProgressCallback | None = None
) -> list[RunResult]:
    """Run each guarantee's workload in turn, each against a fresh local broker (or the cluster)."""
    if not options.local:
        invalid = [fault for fault in options.faults if fault in BROKER_FAULTS]
        if invalid:
            raise ValueError(f"{', '.join(invalid)} need the checker's own broker")
    return [run_guarantee(options, guarantee, on_progress) for guarantee in options.guarantees]


__all__ = [
    "DESCRIPTIONS",
    "CheckOptions",
    "Progress",
    "RunResult",
    "Sample",
    "run_check",
    "run_guarantee",
]
