"""One check run per guarantee: start the pieces, a fault-free phase, a fault phase, drain, analyse.

    broker (local, `odradek serve`)  <-  fault proxy  <-  producer (this process)
                                                    <-  processor (a child process) -> SQLite sink

The local broker advertises the proxy, so every client connection goes through it. With
`bootstrap`, the proxy fronts the external cluster instead and rewrites the addresses it
advertises; only client-side faults apply. With `brokers` N, a local cluster (a controller and N
brokers, `local_cluster.py`) stands behind the proxy instead of the one broker; the workload topic
gets `replication_factor` copies and `min_insync` (3 and 2 by default), the cluster faults apply,
and a poller records the cluster timeline (`cluster_timeline.py`).

Comparisons (`acks`, `fsync`) run the at-least-once workload once more per setting, each on the
same seeded fault schedule: acks=1 (idempotence off, as at-least-once has it: librdkafka forces
acks=all with idempotence) against acks=all, and `odradek.acks.all.fsync` off against on.

A run is a sequence of small phase functions over one `_Run`, each of which a new kind of run can
replace or extend (a cluster instead of one broker, new faults):

    _start_brokers     the broker (or the external cluster) behind the fault proxy
    _start_workload    topic, sink, processor, producer
    _await_assignment  until the processor owns every partition (no backlog before it joined)
    _fault_free_phase  produce with no faults: the speed and latency rows
    _settle            until the sink has what the fault-free phase sent
    _fault_phase       produce while the injector runs the schedule: loss, duplicates, recovery
    _final_drain       heal, let the processor catch up, read the topic and the sink
    _stop              stop every process (also on error)
    _result            merge the histories and measure each phase
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AdminClient,
    NewTopic,
)

from odradek.check.analysis import Analysis, analyse
from odradek.check.case_report import MAX_CASES
from odradek.check.cluster_timeline import ClusterTimeline, TimelinePoller
from odradek.check.faults import (
    ALL_POWER_LOSS,
    BROKER_FAULTS,
    CLUSTER_FAULTS,
    DESCRIPTIONS,
    POWER_LOSS,
    FaultInjector,
    ScheduledFault,
    schedule,
)
from odradek.check.history import (
    ASSIGN,
    CHECKER,
    INFO,
    OK,
    PHASE,
    Clock,
    HistoryWriter,
    merge,
    read_history,
    write_history,
)
from odradek.check.local_broker import LocalBroker, free_port
from odradek.check.local_cluster import LocalCluster
from odradek.check.measures import (
    BatchCosts,
    Recovery,
    Speed,
    Window,
    batch_costs,
    fault_windows,
    recovery,
    speed,
)
from odradek.check.proxy import FaultProxy
from odradek.check.speed_order import Settings, settings
from odradek.check.worker import WorkerSpec, read_positions
from odradek.check.workload import (
    PROCESSOR_OVERRIDES,
    PRODUCER_OVERRIDES,
    ProcessorSupervisor,
    ProducerWorkload,
    SinkReader,
    create_sink,
    create_topic,
    end_offsets,
    final_poll,
    final_sink,
)
from odradek.client import Guarantee, GuaranteeProducer

logger = logging.getLogger("odradek.check")

# The broker property that keeps unsynced bytes in memory only (see odradek.storage.lazy_files).
LAZY_STORAGE = {"odradek.storage.mode": "lazy"}

# Where the processor reports how far it has read (see worker.py), in the guarantee's directory.
POSITIONS_FILE = "processor-positions.json"

FAULT_FREE = "fault-free"
FAULTS = "faults"


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """`duration` is the fault phase's length and `fault_free` the fault-free phase's before it
    (seconds); `messages` caps the values produced in each phase."""

    guarantees: list[Guarantee]
    faults: list[str]
    duration: float = 20.0
    messages: int | None = None
    seed: int = 0
    bootstrap: str | None = None
    workdir: Path = Path("odradek-check")
    partitions: int = 3
    window: int = 2000
    workload: str = "sink"  # "sink" (per guarantee) or "txn" (check/txn.py)
    drain_timeout: float = 60.0
    fault_free: float = 10.0
    assignment_timeout: float = 60.0
    settle_timeout: float = 15.0
    brokers: int = 0  # 0: one local broker; N: a local cluster of N brokers
    replication_factor: int | None = None  # the workload topic's, on a cluster (default 3)
    min_insync: int | None = None  # its min.insync.replicas (default 2)
    acks: tuple[str, ...] = ()  # at-least-once once per acks setting ("0", "1", "all")
    fsync: tuple[bool, ...] = ()  # at-least-once once per odradek.acks.all.fsync setting

    @property
    def local(self) -> bool:
        return self.bootstrap is None

    @property
    def copies(self) -> int:
        """The workload topic's replication factor."""
        if self.brokers <= 0:
            return 1
        return self.replication_factor or min(3, self.brokers)

    @property
    def insync(self) -> int:
        """The workload topic's min.insync.replicas."""
        return self.min_insync or min(2, self.copies)


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run: a guarantee's workload, with its producer's `acks` and the brokers'
    `odradek.acks.all.fsync` overridden for a comparison (None: as the guarantee/broker has it)."""

    guarantee: Guarantee
    acks: str | None = None
    fsync: bool | None = None

    @property
    def name(self) -> str:
        """The run's label and directory: the guarantee, plus what the comparison changed."""
        parts = [self.guarantee.value]
        if self.acks is not None:
            parts.append(f"acks-{self.acks}")
        if self.fsync is not None:
            parts.append(f"fsync-{'on' if self.fsync else 'off'}")
        return "-".join(parts)

    @property
    def comparison(self) -> bool:
        return self.acks is not None or self.fsync is not None


def run_specs(options: CheckOptions) -> list[RunSpec]:
    """Each guarantee once, then the comparisons: the at-least-once workload once per `acks`
    and per `fsync` value (a value equal to the plain run's is that run: acks=all, fsync on)."""
    specs = [RunSpec(guarantee) for guarantee in options.guarantees]
    alo = Guarantee.AT_LEAST_ONCE
    plain = alo in options.guarantees
    for acks in options.acks:
        if acks != "all" or not plain:
            specs.append(RunSpec(alo, acks=acks))
            plain = plain or acks == "all"
    for fsync in options.fsync:
        if not fsync or not plain:
            specs.append(RunSpec(alo, fsync=fsync))
            plain = plain or fsync
    return specs


@dataclass(slots=True)
class Sample:
    """The run's counters at one moment (seconds since the fault-free phase started)."""

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
class PhaseResult:
    """One phase's numbers; `start` and `end` are seconds since the run's first phase started."""

    name: str
    start: float
    end: float
    speed: Speed
    costs: BatchCosts
    recovery: Recovery | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def as_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "start_s": round(self.start, 3),
            "end_s": round(self.end, 3),
            **self.speed.as_json(),
            "batches": self.costs.as_json(),
        }
        if self.recovery is not None:
            result["recovery"] = self.recovery.as_json()
        return result


@dataclass(slots=True)
class RunResult:
    guarantee: Guarantee
    faults: list[str]  # the faults scheduled, in order
    analysis: Analysis  # loss, duplicates and anomalies over the whole history
    fault_free: PhaseResult  # speed and latency
    fault_phase: PhaseResult  # recovery
    settings: Settings
    workload_seconds: float  # both phases
    drain_seconds: float
    timeline: list[Sample]
    fault_windows: list[tuple[str, float, float]]  # name, start, end (seconds)
    history_path: Path
    proxy_stats: dict[str, int]
    processor_restarts: int
    notes: list[str]
    seed: int
    drained: bool = True  # the processor read the topic to its end: loss is judged
    workload: str = "sink"  # "sink" (SQLite sink per guarantee) or "txn" (transactional)
    topic: str = ""  # the input topic (the report's leader lookup takes it)
    name: str = ""  # the guarantee, plus a comparison's setting ("at-least-once-acks-1")
    comparison: bool = False  # a comparison run (the matrix shows the plain runs)
    acks: str = "all"  # the producer's acks
    idempotence: bool = False  # the producer's enable.idempotence
    fsync: bool = True  # the brokers' odradek.acks.all.fsync (unknown against --bootstrap)
    brokers: int = 1  # 0: an external cluster
    replication_factor: int = 1
    min_insync: int = 1
    cluster_timeline: ClusterTimeline | None = None  # times: ns on the history clock
    phase_origin_ns: int = 0  # history-clock ns when the fault-free phase started
    injected: int = 0  # faults the injector carried out (a late one may not fit the phase)

    def as_json(self, max_cases: int = MAX_CASES) -> dict[str, Any]:
        """The run's JSON report entry; each anomaly lists its first `max_cases` cases by time
        (0: all) beside its count and summaries (`case_report.anomalies_json`)."""
        analysis = self.analysis
        calm = self.fault_free.speed
        return {
            "guarantee": self.guarantee.value,
            "workload": self.workload,
            "run": self.name or self.guarantee.value,
            "comparison": self.comparison,
            "acks": self.acks,
            "idempotence": self.idempotence,
            "fsync": self.fsync if self.brokers else None,
            "brokers": self.brokers or None,
            "replication_factor": self.replication_factor if self.brokers else None,
            "min_insync_replicas": self.min_insync if self.brokers else None,
            "settings": {
                "acks": self.settings.acks,
                "commit": self.settings.commit,
                "transactions": self.settings.transactions,
            },
            "faults": self.faults,
            "faults_injected": self.injected,
            "acked": analysis.acked,
            "lost": analysis.lost,
            "duplicated": analysis.duplicated,
            # Speed and latency come from the fault-free phase (see "phases").
            "throughput_msgs_per_s": round(calm.throughput_msgs_per_s, 1),
            "latency_ms": {
                "measures": "produce call to sink commit, fault-free phase",
                "p50": None if calm.latency_p50 is None else round(calm.latency_p50, 2),
                "p99": None if calm.latency_p99 is None else round(calm.latency_p99, 2),
            },
            "phases": {
                "fault_free": self.fault_free.as_json(),
                "faults": self.fault_phase.as_json(),
            },
            "anomalies": analysis.anomalies_json(max_cases),
            "bad_anomalies": analysis.bad_anomalies,
            "produced": analysis.produced,
            "delivered": analysis.delivered,
            "unacknowledged": analysis.indeterminate + analysis.failed,
            "fault_counts": analysis.fault_counts,
            "seed": self.seed,
            "workload_seconds": round(self.workload_seconds, 2),
            "drain_seconds": round(self.drain_seconds, 2),
            "drained": self.drained,
            "processor_restarts": self.processor_restarts,
            "history": str(self.history_path),
            "notes": self.notes,
        }


ProgressCallback = Callable[[Progress], None]


@dataclass(slots=True)
class _Run:
    """Everything one guarantee's run holds while it runs."""

    options: CheckOptions
    guarantee: Guarantee
    spec: RunSpec
    directory: Path
    clock: Clock
    history: HistoryWriter
    progress: Progress
    on_progress: ProgressCallback | None
    topic: str
    group: str
    kill_flag: Path
    notes: list[str] = field(default_factory=list)
    broker: LocalBroker | None = None
    cluster: LocalCluster | None = None
    poller: TimelinePoller | None = None
    cluster_timeline: ClusterTimeline | None = None
    proxy: FaultProxy | None = None
    bootstrap: str = ""
    reader: SinkReader | None = None
    supervisor: ProcessorSupervisor | None = None
    producer: ProducerWorkload | None = None
    injector: FaultInjector | None = None
    planned: list[ScheduledFault] = field(default_factory=list)
    windows: dict[str, tuple[int, int]] = field(default_factory=dict)  # phase -> ns bounds
    started: float = 0.0  # monotonic s when the first phase started
    delivered: int = 0  # rows in the sink, as the monitor last saw them
    timeline: list[Sample] = field(default_factory=list)
    stop_monitor: threading.Event = field(default_factory=threading.Event)
    monitor_thread: threading.Thread | None = None
    drain_seconds: float = 0.0
    drained: bool = False  # the processor read the topic to its end before the final reads
    proxy_stats: dict[str, int] = field(default_factory=dict)

    def report(self, phase: str | None = None) -> None:
        if phase is not None:
            self.progress.phase = phase
        if self.on_progress is not None:
            self.on_progress(self.progress)


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    addresses = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        addresses.append((host or "127.0.0.1", int(port)))
    return addresses


def run_guarantee(
    options: CheckOptions,
    guarantee: Guarantee | RunSpec,
    on_progress: ProgressCallback | None = None,
) -> RunResult:
    """One guarantee's run: a fault-free phase, then a fault phase, on one broker (or cluster)
    and workload."""
    spec = guarantee if isinstance(guarantee, RunSpec) else RunSpec(guarantee)
    run = _new_run(options, spec, on_progress)
    try:
        _start_brokers(run)
        _create_replicated_topic(run)
        _start_workload(run)
        _await_assignment(run)
        _start_monitor(run)
        _fault_free_phase(run)
        _settle(run)
        _fault_phase(run)
        _final_drain(run)
    finally:
        _stop(run)
    return _result(run)


def _new_run(options: CheckOptions, spec: RunSpec, on_progress: ProgressCallback | None) -> _Run:
    guarantee = spec.guarantee
    directory = options.workdir / spec.name
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("history*.jsonl"):
        stale.unlink()
    clock = Clock()
    run_id = uuid.uuid4().hex[:8]
    return _Run(
        options=options,
        guarantee=guarantee,
        spec=spec,
        directory=directory,
        clock=clock,
        history=HistoryWriter(directory / "history-checker.jsonl", clock),
        progress=Progress(spec.name, duration=options.fault_free + options.duration),
        on_progress=on_progress,
        topic=f"odradek-check-{guarantee.value}-{run_id}",
        group=f"odradek-check-{guarantee.value}-{run_id}",
        kill_flag=directory / "kill-processor",
    )


def _broker_overrides(run: _Run) -> dict[str, str]:
    """Lazy storage when a power-loss fault is scheduled; the comparison's fsync setting."""
    overrides: dict[str, str] = {}
    if POWER_LOSS in run.options.faults or ALL_POWER_LOSS in run.options.faults:
        overrides |= LAZY_STORAGE
    if run.spec.fsync is not None:
        overrides["odradek.acks.all.fsync"] = "true" if run.spec.fsync else "false"
    return overrides


def _start_cluster(run: _Run) -> None:
    """A controller and `brokers` brokers, each advertising its fault-proxy port to clients."""
    options = run.options
    run.cluster = cluster = LocalCluster(
        run.directory / "cluster", options.brokers, overrides=_broker_overrides(run)
    )
    run.proxy = proxy = FaultProxy([("127.0.0.1", port) for port in cluster.client_ports.values()])
    run.bootstrap = proxy.start()
    cluster.advertised = {
        node: proxy.port_for(("127.0.0.1", port)) for node, port in cluster.client_ports.items()
    }
    run.report(f"starting a cluster of {options.brokers} brokers")
    run.cluster.start()


def _create_replicated_topic(run: _Run) -> None:
    """On a cluster: the workload topic with its replication factor and min.insync.replicas,
    created before the workload's own (replication factor 1) call, which then finds it; waits
    until every partition has a leader and a full ISR."""
    if run.cluster is None:
        return
    options = run.options
    admin = AdminClient({"bootstrap.servers": run.bootstrap, "log_level": 0})
    topic = NewTopic(
        run.topic,
        options.partitions,
        options.copies,
        config={"min.insync.replicas": str(options.insync)},
    )
    admin.create_topics([topic], operation_timeout=20)[run.topic].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        views = run.cluster.partitions(run.topic)
        if len(views) == options.partitions and all(
            view.leader >= 0 and len(view.isr) == options.copies for view in views.values()
        ):
            return
        time.sleep(0.1)
    run.notes.append("the workload topic's ISR was not full within 30 s of its creation")


def _start_brokers(run: _Run) -> None:
    """The local broker (or cluster) behind the proxy, or the proxy in front of `--bootstrap`."""
    options = run.options
    if options.local and options.brokers > 0:
        _start_cluster(run)
    elif options.local:
        broker_port = free_port()
        run.proxy = FaultProxy([("127.0.0.1", broker_port)])
        run.bootstrap = run.proxy.start()
        overrides = _broker_overrides(run)
        run.broker = LocalBroker(
            run.directory / "data",
            port=broker_port,
            advertised=("127.0.0.1", run.proxy.port_for(("127.0.0.1", broker_port))),
            overrides=overrides,
            log_path=run.directory / "broker.log",
        )
        run.report("starting the broker")
        run.broker.start()
    else:
        assert options.bootstrap is not None
        run.proxy = FaultProxy(_addresses(options.bootstrap))
        run.bootstrap = run.proxy.start()


def _start_workload(run: _Run) -> None:
    """The input topic, an empty sink, the processor process and the producer."""
    options = run.options
    create_topic(run.bootstrap, run.topic, options.partitions)
    sink_path = run.directory / "sink.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{sink_path}{suffix}").unlink(missing_ok=True)
    create_sink(sink_path)
    run.reader = SinkReader(sink_path)
    run.kill_flag.unlink(missing_ok=True)
    (run.directory / POSITIONS_FILE).unlink(missing_ok=True)
    spec = WorkerSpec(
        bootstrap=run.bootstrap,
        group=run.group,
        topic=run.topic,
        guarantee=run.guarantee.value,
        sink_path=str(sink_path),
        history_path="",
        process="",
        clock_origin=run.clock.origin,
        kill_flag=str(run.kill_flag),
        config=dict(PROCESSOR_OVERRIDES),
        positions_path=str(run.directory / POSITIONS_FILE),
    )
    run.supervisor = ProcessorSupervisor(spec, run.directory)
    run.report("starting the processor")
    run.supervisor.start()
    run.producer = ProducerWorkload(
        run.bootstrap,
        run.topic,
        options.partitions,
        run.guarantee,
        run.history,
        lambda: run.delivered,
        window=options.window,
    )
    if run.spec.acks is not None:
        # The comparison's acks: a producer of the guarantee's settings with `acks` replaced
        # (at-least-once has idempotence off, which acks=0/1 need: librdkafka forces acks=all
        # on an idempotent producer).
        run.producer.producer = GuaranteeProducer(
            run.bootstrap,
            run.guarantee,
            {**PRODUCER_OVERRIDES, "acks": run.spec.acks, "enable.idempotence": False},
        )


def assigned_partitions(supervisor: ProcessorSupervisor) -> set[int]:
    """The partitions the current processor wrote `assign` ops for (its history so far)."""
    paths = supervisor.history_paths()
    if not paths:
        return set()
    current = f"processor-{supervisor.incarnation}"
    partitions: set[int] = set()
    for path in paths:
        for op in read_history(path):
            if op.process == current and op.f == ASSIGN and op.type == OK:
                partitions.update(op.value)
    return partitions


def _await_assignment(run: _Run) -> None:
    """Until the processor owns every partition, so no latency counts a backlog built up before
    it joined (a note if it does not within `assignment_timeout`)."""
    assert run.supervisor is not None
    run.report("waiting for the processor's partitions")
    wanted = set(range(run.options.partitions))
    deadline = time.monotonic() + run.options.assignment_timeout
    while time.monotonic() < deadline:
        if assigned_partitions(run.supervisor) >= wanted:
            return
        time.sleep(0.1)
    run.notes.append(
        f"the processor did not own every partition within {run.options.assignment_timeout:.0f} s;"
        " the fault-free latency may include a backlog"
    )


def _start_monitor(run: _Run) -> None:
    """A thread sampling the sink and the producer every 0.25 s (progress and the timeline)."""
    assert run.reader is not None
    assert run.producer is not None
    reader, producer = run.reader, run.producer
    run.started = time.monotonic()

    def monitor() -> None:
        progress = run.progress
        while not run.stop_monitor.is_set():
            run.delivered = reader.rows()
            progress.elapsed = time.monotonic() - run.started
            progress.sent, progress.acked = producer.sent, producer.acked
            progress.delivered = run.delivered
            progress.processor_restarts = run.supervisor.restarts if run.supervisor else 0
            run.timeline.append(
                Sample(progress.elapsed, producer.sent, producer.acked, run.delivered)
            )
            run.report()
            run.stop_monitor.wait(0.25)

    run.monitor_thread = threading.Thread(target=monitor, name="odradek-check-monitor", daemon=True)
    run.monitor_thread.start()
    if run.cluster is not None:
        run.poller = TimelinePoller(run.cluster, run.topic, run.clock)
        run.poller.start()


def _produce(run: _Run, phase: str, seconds: float) -> float:
    """Produce for `seconds` as phase `phase` (two `phase` ops bound it in the history: the
    phase ends when sending stops, so it lasts what was asked unless `messages` ended it
    earlier), then wait for the delivery reports; returns the monotonic time it started."""
    assert run.producer is not None
    run.report(phase)
    started = time.monotonic()
    start = run.history.write(CHECKER, INFO, PHASE, phase).time
    run.producer.send(started + seconds, run.options.messages)
    end = run.history.write(CHECKER, INFO, PHASE, phase, end=True).time
    run.windows[phase] = (start, end)
    run.producer.flush()
    return started


def _fault_free_phase(run: _Run) -> None:
    _produce(run, FAULT_FREE, run.options.fault_free)


def _settle(run: _Run) -> None:
    """Until the sink holds as many rows as values were sent, or stops growing for 2 s: the fault
    phase starts with an empty pipeline, so no fault-free value waits out a fault."""
    assert run.reader is not None
    assert run.producer is not None
    run.report("settling")
    deadline = time.monotonic() + run.options.settle_timeout
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        rows = run.reader.rows()
        if rows >= run.producer.sent:
            return
        if rows != last:
            last, last_change = rows, time.monotonic()
        elif time.monotonic() - last_change > 2.0:
            return
        time.sleep(0.05)


def _fault_phase(run: _Run) -> None:
    """Produce for `duration` while the injector carries out the seeded schedule."""
    options = run.options
    run.planned = schedule(options.faults, options.duration, options.seed)
    producer, supervisor = run.producer, run.supervisor
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
        acked=(lambda: producer.acked) if producer is not None else None,
        processor_pid=(
            lambda: supervisor.process.pid if supervisor and supervisor.process else None
        ),
        seed=options.seed,
    )
    run.injector.start()  # its schedule counts from here; the phase starts a moment later
    _produce(run, FAULTS, options.duration)
    run.report("healing faults")
    run.injector.stop()
    run.notes += run.injector.errors


def _final_drain(run: _Run) -> None:
    """Let the processor commit everything in the topic, then read the topic and the sink."""
    assert run.supervisor is not None
    assert run.reader is not None
    run.report("final drain")
    drain_started = time.monotonic()
    run.drained = _drain(run)
    if not run.drained:
        run.notes.append(
            f"the processor did not read the topic to its end within "
            f"{run.options.drain_timeout:.0f} s of drain: values it had yet to read count as "
            "lost, so loss is not judged"
        )
    run.supervisor.stop()
    final_poll(run.bootstrap, run.topic, run.options.partitions, run.history)
    final_sink(run.reader, run.history)
    run.drain_seconds = time.monotonic() - drain_started


def caught_up(ends: dict[int, int], positions: dict[int, int]) -> bool:
    """Whether a processor that has read each partition up to `positions` (the offset after its
    last processed record, or the log end it reached) has read a topic whose log ends at `ends`.

    Equal, not at-or-past: a position past the log end is one the log no longer has (a power loss
    truncated it below what the processor had read and committed), and the consumer has yet to
    find that out and reset per `auto.offset.reset` (earliest here: it then reads what the log
    holds now, up to its end). Committed offsets cannot tell either: after such a truncation
    they stay past the log end until the processor has read past them again."""
    return all(end == 0 or positions.get(partition) == end for partition, end in ends.items())


def _drain(run: _Run) -> bool:
    """Until the processor has read and processed each partition up to its log end, as its
    position reports (`worker.py`) say: a report written after the log ends were read, and the
    same on two checks in a row. False after `drain_timeout` s."""
    options = run.options
    positions_path = run.directory / POSITIONS_FILE
    deadline = time.monotonic() + options.drain_timeout
    confirmed: dict[int, int] | None = None
    while time.monotonic() < deadline:
        checked = run.clock.now()
        try:
            ends = end_offsets(run.bootstrap, run.topic, options.partitions)
        except Exception:  # the cluster may still be coming back: ask again
            time.sleep(0.5)
            continue
        time.sleep(0.3)  # the processor rewrites its report at every poll (0.2 s at most)
        report = read_positions(positions_path)
        if report is not None and report[1] >= checked and caught_up(ends, report[2]):
            if confirmed == ends:
                return True
            confirmed = ends
        else:
            confirmed = None
    return False


def _stop(run: _Run) -> None:
    """Stop everything this run started (also after an error)."""
    run.stop_monitor.set()
    if run.monitor_thread is not None:
        run.monitor_thread.join(timeout=5)
    if run.injector is not None:
        run.injector.stop()
    if run.poller is not None:
        run.cluster_timeline = run.poller.stop()
        run.cluster_timeline.write(run.directory / "cluster-timeline.jsonl")
    if run.supervisor is not None and run.supervisor.process is not None:
        run.supervisor.stop()
    run.kill_flag.unlink(missing_ok=True)
    run.history.close()
    if run.proxy is not None:
        run.proxy_stats = run.proxy.stats.as_dict()
        run.proxy.stop()
    if run.broker is not None:
        run.broker.stop()
    if run.cluster is not None:
        run.cluster.stop()


def _result(run: _Run) -> RunResult:
    """Merge the histories, analyse them, and measure each phase."""
    run.report("analysing")
    histories = [read_history(path) for path in sorted(run.directory.glob("history-*.jsonl"))]
    ops = merge(histories)
    history_path = run.directory / "history.jsonl"
    write_history(history_path, ops)
    phases = {name: Window(name, *bounds) for name, bounds in run.windows.items()}
    origin = phases[FAULT_FREE].start
    workload_seconds = (phases[FAULTS].end - origin) / 1e9
    analysis = analyse(ops, workload_seconds)

    def phase(window: Window, *, with_recovery: bool) -> PhaseResult:
        return PhaseResult(
            name=window.name,
            start=(window.start - origin) / 1e9,
            end=(window.end - origin) / 1e9,
            speed=speed(ops, window),
            costs=batch_costs(ops, window),
            recovery=recovery(ops, window, origin=origin) if with_recovery else None,
        )

    if run.options.local and POWER_LOSS in run.options.faults:
        run.notes.append(
            "the broker ran in lazy storage mode (odradek.storage.mode=lazy), so every broker "
            "kill in this run also lost the bytes that were not fsynced"
        )
    if run.cluster is not None and ALL_POWER_LOSS in run.options.faults:
        run.notes.append(
            "the brokers ran in lazy storage mode (odradek.storage.mode=lazy), so every broker "
            "kill in this run also lost the bytes that were not fsynced"
        )
    options = run.options
    acks = run.spec.acks or settings(run.guarantee).acks
    idempotence = run.spec.acks is None and bool(
        run.guarantee.producer_config().get("enable.idempotence", False)
    )
    run.report("done")
    return RunResult(
        guarantee=run.guarantee,
        faults=[fault.name for fault in run.planned],
        analysis=analysis,
        fault_free=phase(phases[FAULT_FREE], with_recovery=False),
        fault_phase=phase(phases[FAULTS], with_recovery=True),
        settings=settings(run.guarantee),
        workload_seconds=workload_seconds,
        drain_seconds=run.drain_seconds,
        timeline=run.timeline,
        fault_windows=[
            (name, (start - origin) / 1e9, (end - origin) / 1e9)
            for name, start, end in fault_windows(ops)
        ],
        history_path=history_path,
        proxy_stats=run.proxy_stats,
        processor_restarts=run.supervisor.restarts if run.supervisor else 0,
        notes=run.notes,
        seed=run.options.seed,
        drained=run.drained,
        topic=run.topic,
        name=run.spec.name,
        comparison=run.spec.comparison,
        acks=acks,
        idempotence=idempotence,
        fsync=run.spec.fsync if run.spec.fsync is not None else True,
        brokers=options.brokers if options.local else 0,
        replication_factor=options.copies,
        min_insync=options.insync if options.brokers else 1,
        cluster_timeline=run.cluster_timeline,
        phase_origin_ns=origin,
        injected=len(run.injector.done) if run.injector is not None else 0,
    )


def run_check(
    options: CheckOptions, on_progress: ProgressCallback | None = None
) -> list[RunResult]:
    """Run each guarantee's workload in turn, then the comparisons (`run_specs`), each against a
    fresh local broker or cluster (or the external cluster)."""
    if not options.local:
        invalid = [fault for fault in options.faults if fault in BROKER_FAULTS]
        if invalid:
            raise ValueError(f"{', '.join(invalid)} need the checker's own broker")
    if options.brokers <= 0:
        invalid = [fault for fault in options.faults if fault in CLUSTER_FAULTS]
        if invalid:
            raise ValueError(f"{', '.join(invalid)} need the checker's own cluster (--brokers N)")
    if options.workload == "txn":
        from odradek.check.txn import run_txn  # txn.py builds on this module

        return [run_txn(options, on_progress)]
    return [run_guarantee(options, spec, on_progress) for spec in run_specs(options)]


__all__ = [
    "DESCRIPTIONS",
    "CheckOptions",
    "PhaseResult",
    "Progress",
    "RunResult",
    "RunSpec",
    "Sample",
    "run_check",
    "run_guarantee",
    "run_specs",
]
