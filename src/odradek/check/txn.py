"""A run of the transactional workload (`odradek check --workload txn`): Jepsen's Kafka queue
workload with transactions, beside the SQLite-sink workloads.

    broker (local, `odradek serve`)  <-  fault proxy  <-  TxnWorkload's clients (this process)

The same phases as a guarantee's run (`runner.py`): a fault-free phase, a fault phase under the
seeded schedule, then a final drain (the whole topic read with read_committed into a `final-poll`
op) and Jepsen's analysers (`jepsen.py`). Speed, latency and recovery are measured by
`measures.py` on a view of the history in the sink workload's shape: each value sent is a `send`
invoke at its transaction's invoke, and each committed transaction that read values is a `poll`
commit — "in the sink" here means "read by a committed transaction".
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence

from odradek.check.analysis import analyse
from odradek.check.cluster_timeline import TimelinePoller
from odradek.check.faults import FaultInjector, schedule
from odradek.check.history import (
    CHECKER,
    INFO,
    INVOKE,
    NEMESIS,
    OK,
    PHASE,
    POLL,
    SEND,
    TXN,
    Clock,
    HistoryWriter,
    Op,
    merge,
    read_history,
    write_history,
)
from odradek.check.jepsen import normalise
from odradek.check.measures import BatchCosts, Window, fault_windows, recovery, speed
from odradek.check.runner import (
    FAULT_FREE,
    FAULTS,
    CheckOptions,
    PhaseResult,
    Progress,
    ProgressCallback,
    RunResult,
    RunSpec,
    Sample,
    _Run,
    _start_brokers,
    _stop,
)
from odradek.check.speed_order import Settings
from odradek.check.workload import TxnWorkload, create_topic, final_poll
from odradek.client import Guarantee

WORKLOAD = "txn"


# What the txn workload does (not the SQLite sink's settings of exactly-once).
TXN_SETTINGS = Settings(
    acks="all",
    commit="read_committed consumers assigned every partition, no offset commits",
    transactions="a Kafka transaction per operation (1-4 sends and polls over several "
    "partitions), transactional producer",
)


def measure_view(history: Sequence[Op]) -> list[Op]:
    """The history in the sink workload's shape for `measures.py`: a `send` invoke per value
    sent (at its transaction's invoke), an ok `poll` per committed transaction that read values
    (the drain excluded), the nemesis and checker ops as they are."""
    view: list[Op] = []
    for op in history:
        if op.f == TXN and op.type == INVOKE:
            view += [
                Op(op.process, INVOKE, SEND, int(mop[2]), None, op.time)
                for mop in op.value or []
                if mop and mop[0] == SEND
            ]
        elif op.process in (NEMESIS, CHECKER):
            view.append(op)
    for item in normalise(history):
        if item.op.f == TXN and item.type == OK and item.reads:
            view.append(
                Op(
                    item.process,
                    OK,
                    POLL,
                    [value for _, _, value in item.reads],
                    [[partition, offset] for partition, offset, _ in item.reads],
                    item.op.time,
                )
            )
    return sorted(view, key=lambda op: op.time)


def run_txn(options: CheckOptions, on_progress: ProgressCallback | None = None) -> RunResult:
    """One run of the transactional workload: fault-free phase, fault phase, drain, analysis.
    The result is labelled exactly-once (the guarantee transactions give) with `workload` txn."""
    directory = options.workdir / WORKLOAD
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("history*.jsonl"):
        stale.unlink()
    clock = Clock()
    run_id = uuid.uuid4().hex[:8]
    run = _Run(
        options=options,
        guarantee=Guarantee.EXACTLY_ONCE,
        spec=RunSpec(Guarantee.EXACTLY_ONCE),
        directory=directory,
        clock=clock,
        history=HistoryWriter(directory / "history-checker.jsonl", clock),
        progress=Progress(WORKLOAD, duration=options.fault_free + options.duration),
        on_progress=on_progress,
        topic=f"odradek-check-{WORKLOAD}-{run_id}",
        group=f"odradek-check-{WORKLOAD}-{run_id}",
        kill_flag=directory / "kill-processor",
    )
    workload: TxnWorkload | None = None
    stop_monitor = threading.Event()
    monitor: threading.Thread | None = None
    try:
        _start_brokers(run)
        create_topic(run.bootstrap, run.topic, options.partitions)
        workload = TxnWorkload(
            run.bootstrap, run.topic, options.partitions, run.history, seed=options.seed
        )
        run.started = time.monotonic()
        monitor = threading.Thread(target=_monitor, args=(run, workload, stop_monitor), daemon=True)
        monitor.start()
        if run.cluster is not None:
            run.poller = TimelinePoller(run.cluster, run.topic, run.clock)
            run.poller.start()
        _phase(run, workload, FAULT_FREE, options.fault_free)
        run.planned = schedule(options.faults, options.duration, options.seed)
        run.injector = FaultInjector(
            run.planned,
            run.history,
            broker=run.broker,
            proxy=run.proxy,
            kill_flag=run.kill_flag,
            started=time.monotonic(),
            on_event=run.progress.faults.append,
            cluster=run.cluster,
            topic=run.topic,
            partitions=options.partitions,
        )
        run.injector.start()
        _phase(run, workload, FAULTS, options.duration)
        run.report("healing faults")
        run.injector.stop()
        run.notes += run.injector.errors
        run.report("final drain")
        drain_started = time.monotonic()
        final_poll(run.bootstrap, run.topic, options.partitions, run.history)
        run.drain_seconds = time.monotonic() - drain_started
        run.drained = True
    finally:
        stop_monitor.set()
        if monitor is not None:
            monitor.join(timeout=5)
        if workload is not None:
            workload.stop()
        _stop(run)
    return _result(run, workload)


def _monitor(run: _Run, workload: TxnWorkload, stop: threading.Event) -> None:
    progress = run.progress
    while not stop.is_set():
        progress.elapsed = time.monotonic() - run.started
        progress.sent, progress.acked = workload.sent, workload.acked
        progress.delivered = workload.delivered
        run.timeline.append(
            Sample(progress.elapsed, workload.sent, workload.acked, workload.delivered)
        )
        run.report()
        stop.wait(0.25)


def _phase(run: _Run, workload: TxnWorkload, phase: str, seconds: float) -> None:
    run.report(phase)
    start = run.history.write(CHECKER, INFO, PHASE, phase).time
    workload.send(time.monotonic() + seconds, run.options.messages)
    end = run.history.write(CHECKER, INFO, PHASE, phase, end=True).time
    run.windows[phase] = (start, end)


def _result(run: _Run, workload: TxnWorkload | None) -> RunResult:
    run.report("analysing")
    histories = [read_history(path) for path in sorted(run.directory.glob("history-*.jsonl"))]
    ops = merge(histories)
    history_path = run.directory / "history.jsonl"
    write_history(history_path, ops)
    view = measure_view(ops)
    phases = {name: Window(name, *bounds) for name, bounds in run.windows.items()}
    origin = phases[FAULT_FREE].start
    workload_seconds = (phases[FAULTS].end - origin) / 1e9

    def phase(window: Window, *, with_recovery: bool) -> PhaseResult:
        return PhaseResult(
            name=window.name,
            start=(window.start - origin) / 1e9,
            end=(window.end - origin) / 1e9,
            speed=speed(view, window),
            costs=BatchCosts(),
            recovery=recovery(view, window, origin=origin) if with_recovery else None,
        )

    run.notes.append(
        "transactional workload: speed, latency and recovery count a value when a committed "
        "transaction first read it"
    )
    run.report("done")
    return RunResult(
        guarantee=run.guarantee,
        faults=[fault.name for fault in run.planned],
        analysis=analyse(ops, workload_seconds),
        fault_free=phase(phases[FAULT_FREE], with_recovery=False),
        fault_phase=phase(phases[FAULTS], with_recovery=True),
        settings=TXN_SETTINGS,
        workload_seconds=workload_seconds,
        drain_seconds=run.drain_seconds,
        timeline=run.timeline,
        fault_windows=[
            (name, (start - origin) / 1e9, (end - origin) / 1e9)
            for name, start, end in fault_windows(ops)
        ],
        history_path=history_path,
        proxy_stats=run.proxy_stats,
        processor_restarts=0,
        notes=run.notes,
        seed=run.options.seed,
        drained=run.drained,
        workload=WORKLOAD,
        topic=run.topic,
        brokers=run.options.brokers if run.options.local else 0,
        replication_factor=run.options.copies,
        min_insync=run.options.insync if run.options.brokers else 1,
        cluster_timeline=run.cluster_timeline,
        phase_origin_ns=origin,
        injected=len(run.injector.done) if run.injector is not None else 0,
    )
