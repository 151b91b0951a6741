"""Fault names, the seeded schedule, and the injector that carries it out.

Every selected fault happens once at a fixed point of the run (spread over its middle, in a seeded
order), so each effect is certain rather than likely in a short run; longer runs add more
occurrences at seeded random times. Each fault is written to the history as two `info` ops of the
process `nemesis`: its start, and its end (`"end": true`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from odradek.check.history import INFO, NEMESIS, HistoryWriter
from odradek.check.local_broker import LocalBroker
from odradek.check.local_cluster import (
    CONTROLLER_ID,
    LAG_TIME_MAX_MS,
    SESSION_TIMEOUT_MS,
    LocalCluster,
)
from odradek.check.proxy import FaultProxy

logger = logging.getLogger("odradek.check.faults")

KILL = "kill"
PAUSE = "pause"
POWER_LOSS = "power-loss"
PROXY_CUT = "proxy-cut"
PROXY_DELAY = "proxy-delay"
PROXY_DROP = "proxy-drop"
PROCESSOR_KILL = "processor-kill"

# On the checker's own cluster (`--brokers N`).
LEADER_KILL = "leader-kill"
FOLLOWER_PAUSE = "follower-pause"
ISOLATE = "isolate"
CONTROLLER_KILL = "controller-kill"
ALL_POWER_LOSS = "all-power-loss"
CLUSTER_FAULTS = (LEADER_KILL, FOLLOWER_PAUSE, ISOLATE, CONTROLLER_KILL, ALL_POWER_LOSS)

# How long the followers are held back before a leader kill, and the short follower pause: below
# min(broker.session.timeout.ms, replica.lag.time.max.ms), so they stay in the ISR while they lag.
LAGGING_SECONDS = 1.5
# The long follower pause: past replica.lag.time.max.ms and the session, so it leaves the ISR.
LONG_PAUSE_SECONDS = max(SESSION_TIMEOUT_MS, LAG_TIME_MAX_MS) / 1000 + 1.5
# After a new leader is elected, how long the isolated old leader keeps taking client writes.
ZOMBIE_SECONDS = 2.0

BROKER_FAULTS = (KILL, PAUSE, POWER_LOSS, *CLUSTER_FAULTS)
# power-loss runs the broker in its lazy storage mode (`odradek.storage.mode=lazy`, see
# storage/lazy_files.py: unsynced log bytes kept in memory only, so a kill -9 loses them, as LazyFS
# does). Without that mode a kill would keep the page cache and "power loss" would be a plain kill.
POWER_LOSS_AVAILABLE = True
CLIENT_FAULTS = (PROXY_CUT, PROXY_DELAY, PROXY_DROP, PROCESSOR_KILL)
ALL_FAULTS = (PROCESSOR_KILL, PROXY_CUT, KILL, PAUSE, PROXY_DELAY, PROXY_DROP, POWER_LOSS)

DESCRIPTIONS = {
    KILL: "broker kill -9, restarted on the same data",
    PAUSE: "broker SIGSTOP for 2 s, then SIGCONT",
    POWER_LOSS: "broker kill -9 in lazy storage mode: unsynced bytes are lost",
    PROXY_CUT: "cut the connection after forwarding a Produce request, before its response",
    PROXY_DELAY: "delay every response by 300 ms for 2 s",
    PROXY_DROP: "drop all traffic for 1.5 s, then cut the connections",
    PROCESSOR_KILL: "processor kill -9 between processing and committing",
    LEADER_KILL: f"followers of a workload partition paused {LAGGING_SECONDS:g} s (they lag but "
    "stay in the ISR), its leader killed -9, followers resumed, the old leader restarted",
    FOLLOWER_PAUSE: f"a follower SIGSTOPped {LAGGING_SECONDS:g} s (stays in the ISR), then "
    f"{LONG_PAUSE_SECONDS:g} s (leaves it)",
    ISOLATE: "a partition's leader cut off from the other brokers and the controller (clients "
    f"still reach it) until a new leader is elected and {ZOMBIE_SECONDS:g} s more, then healed",
    CONTROLLER_KILL: "the controller killed -9 and restarted",
    ALL_POWER_LOSS: "every broker killed -9 at once right after an acknowledgement, in lazy "
    "storage mode (unsynced bytes lost), while the processor lags 1 s; then restarted",
}


# How long each fault lasts once injected (s; a broker restart counted generously): the schedule
# starts a fault at least this long before the fault phase ends, so the phase's end does not cut
# it short (the injector heals whatever still holds when the phase ends).
FAULT_SECONDS = {
    KILL: 3.0,
    PAUSE: 2.0,
    POWER_LOSS: 3.0,
    PROXY_CUT: 1.0,
    PROXY_DELAY: 2.0,
    PROXY_DROP: 1.5,
    PROCESSOR_KILL: 0.0,
    LEADER_KILL: LAGGING_SECONDS + SESSION_TIMEOUT_MS / 1000 + 4.0,
    FOLLOWER_PAUSE: LAGGING_SECONDS + 1.0 + LONG_PAUSE_SECONDS + 1.0,
    ISOLATE: SESSION_TIMEOUT_MS / 1000 + ZOMBIE_SECONDS + 3.0,
    CONTROLLER_KILL: 4.0,
    ALL_POWER_LOSS: 6.0,
}


class FaultError(ValueError):
    """A fault name that does not exist or cannot be injected here."""


KNOWN_FAULTS = (*ALL_FAULTS, *CLUSTER_FAULTS)
SINGLE_BROKER_FAULTS = (KILL, PAUSE, POWER_LOSS)
# The default on the checker's own cluster: every cluster fault (the zombie-leader schedule,
# `isolate`, included) and the client-side ones.
CLUSTER_DEFAULT = (PROCESSOR_KILL, PROXY_CUT, *CLUSTER_FAULTS, PROXY_DELAY, PROXY_DROP)


def parse_faults(text: str | None, *, local: bool, brokers: int = 0) -> list[str]:
    """`--faults` (comma-separated names, `all` or `none`) -> fault names, in canonical order.

    `brokers` > 0: the checker's own cluster, where the cluster faults replace the single
    broker's kill, pause and power-loss. Raises `FaultError` naming what cannot be injected."""
    if local and brokers > 0:
        return _parse_cluster_faults(text)
    available: tuple[str, ...] = ALL_FAULTS if local else CLIENT_FAULTS
    if not POWER_LOSS_AVAILABLE:
        available = tuple(name for name in available if name != POWER_LOSS)
    if text is None or text.strip() in ("", "all"):
        return list(available)
    if text.strip() == "none":
        return []
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    for name in chosen:
        if name not in KNOWN_FAULTS:
            raise FaultError(f"unknown fault {name!r}: choose from {', '.join(KNOWN_FAULTS)}")
        if name in CLUSTER_FAULTS:
            raise FaultError(f"{name} needs the checker's own cluster (--brokers N)")
        if name == POWER_LOSS and not POWER_LOSS_AVAILABLE:
            raise FaultError(
                "power-loss needs the broker's lazy storage mode (odradek.storage.mode=lazy), "
                "which this version does not have yet"
            )
        if name not in available:
            raise FaultError(
                f"{name} needs the checker's own broker; against --bootstrap only "
                f"{', '.join(CLIENT_FAULTS)} can be injected"
            )
    return [name for name in ALL_FAULTS if name in chosen]


def _parse_cluster_faults(text: str | None) -> list[str]:
    if text is None or text.strip() in ("", "all"):
        return list(CLUSTER_DEFAULT)
    if text.strip() == "none":
        return []
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    for name in chosen:
        if name not in KNOWN_FAULTS:
            raise FaultError(f"unknown fault {name!r}: choose from {', '.join(KNOWN_FAULTS)}")
        if name in SINGLE_BROKER_FAULTS:
            raise FaultError(
                f"{name} is a single-broker fault; on a cluster choose from "
                f"{', '.join(CLUSTER_DEFAULT)}"
            )
    return [name for name in CLUSTER_DEFAULT if name in chosen]


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    at: float  # seconds after the workload started
    name: str


def schedule(faults: Sequence[str], duration: float, seed: int) -> list[ScheduledFault]:
    """One fixed point per fault over [15 %, 80 %] of the phase, plus seeded extras in long
    phases; each fault starts no later than `FAULT_SECONDS` before the phase's end (earlier than
    15 % if the phase is that short), so it is over when the phase ends."""
    if not faults:
        return []
    rng = random.Random(seed)
    order = list(faults)
    rng.shuffle(order)
    start, end = 0.15 * duration, 0.8 * duration

    def fitted(at: float, name: str) -> ScheduledFault:
        latest = max(0.0, duration - FAULT_SECONDS.get(name, 0.0))
        return ScheduledFault(round(min(at, latest), 2), name)

    step = (end - start) / max(1, len(order))
    planned = [fitted(start + index * step, name) for index, name in enumerate(order)]
    extras = int(duration // 30) * len(order) // 2
    for _ in range(extras):
        planned.append(fitted(rng.uniform(start, end), rng.choice(order)))
    return sorted(planned, key=lambda fault: fault.at)


class FaultInjector:
    """Runs a schedule in a background thread against the broker, the proxy and the processor."""

    def __init__(
        self,
        planned: Sequence[ScheduledFault],
        history: HistoryWriter,
        *,
        broker: LocalBroker | None,
        proxy: FaultProxy | None,
        kill_flag: Path,
        started: float,
        on_event: Callable[[str], None] | None = None,
        cluster: LocalCluster | None = None,
        topic: str = "",
        partitions: int = 1,
        acked: Callable[[], int] | None = None,
        processor_pid: Callable[[], int | None] | None = None,
        seed: int = 0,
    ) -> None:
        self.planned = list(planned)
        self.history = history
        self.broker = broker
        self.proxy = proxy
        self.cluster = cluster
        self.topic = topic
        self.partitions = partitions
        self.acked = acked
        self.processor_pid = processor_pid
        self._rng = random.Random(seed)
        self._paused_processor: int | None = None
        self.kill_flag = kill_flag
        self.started = started
        self.on_event = on_event
        self.done: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="odradek-check-faults", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.heal()

    def heal(self) -> None:
        """Undo every fault still in effect (before the final drain).

        An armed processor kill stays armed: it fires at the processor's next batch, in the drain
        if a fault held the processor up until the phase ended, so a scheduled kill is certain.
        The runner disarms it when it stops the processor."""
        if self.proxy is not None:
            self.proxy.clear()
        self._resume_processor()
        if self.cluster is not None:
            self.cluster.heal_all()
        if self.broker is not None:
            self.broker.resume()
            if not self.broker.running:
                self.broker.start()

    def _run(self) -> None:
        for fault in self.planned:
            delay = self.started + fault.at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            try:
                self._inject(fault.name)
            except Exception as error:  # a fault that cannot be injected must not end the run
                logger.warning("fault %s failed: %s", fault.name, error)
                self.errors.append(f"{fault.name}: {error}")

    def _mark(self, name: str, *, end: bool = False, **extra: object) -> None:
        if end:
            self.history.write(NEMESIS, INFO, name, None, None, end=True, **extra)
        else:
            self.history.write(NEMESIS, INFO, name, None, None, **extra)
            self.done.append(name)
            if self.on_event is not None:
                self.on_event(name)

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _inject(self, name: str) -> None:
        broker, proxy = self.broker, self.proxy
        if name in CLUSTER_FAULTS:
            if self.cluster is None:
                raise FaultError(f"{name} needs the checker's own cluster (--brokers N)")
            self._inject_cluster(name, self.cluster)
        elif name in (KILL, POWER_LOSS) and broker is not None:
            self._mark(name)
            broker.kill()
            self._sleep(0.5)
            broker.start()
            self._mark(name, end=True)
        elif name == PAUSE and broker is not None:
            self._mark(name)
            broker.pause()
            self._sleep(2.0)
            broker.resume()
            self._mark(name, end=True)
        elif name == PROXY_CUT and proxy is not None:
            cuts = proxy.stats.cuts
            proxy.cut_nth(1)
            deadline = time.monotonic() + 5
            while proxy.stats.cuts == cuts and time.monotonic() < deadline:
                self._sleep(0.01)
            fired = proxy.stats.cuts > cuts
            if not fired:
                proxy.clear()
            self._mark(name, fired=fired)
        elif name == PROXY_DELAY and proxy is not None:
            self._mark(name, seconds=0.3)
            proxy.set_delay(0.3)
            self._sleep(2.0)
            proxy.set_delay(0.0)
            self._mark(name, end=True)
        elif name == PROXY_DROP and proxy is not None:
            self._mark(name)
            proxy.set_drop(True)
            self._sleep(1.5)
            proxy.set_drop(False)
            proxy.cut_all()
            self._mark(name, end=True)
        elif name == PROCESSOR_KILL:
            # The processor kills itself at its commit hook (the fixed point) and writes the op.
            self.kill_flag.write_text(str(os.getpid()))
            self.done.append(name)
            if self.on_event is not None:
                self.on_event(name)
        else:
            raise FaultError(f"{name} cannot be injected in this run")

    # -- the cluster faults ----------------------------------------------------------------

    def _partition(self, cluster: LocalCluster) -> tuple[int, int]:
        """A seeded workload partition and its current leader (FaultError when it has none)."""
        partition = self._rng.randrange(self.partitions)
        leader = cluster.leader_of(self.topic, partition)
        if leader < 0:
            raise FaultError(f"partition {partition} has no leader to fault")
        return partition, leader

    def _restart(self, cluster: LocalCluster, *nodes: int) -> None:
        for node in nodes:
            cluster.start_node(node)
        cluster.wait_for_brokers(SESSION_TIMEOUT_MS / 1000 + 20)

    def _resume_processor(self) -> None:
        pid, self._paused_processor = self._paused_processor, None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def _inject_cluster(self, name: str, cluster: LocalCluster) -> None:
        election_s = SESSION_TIMEOUT_MS / 1000 + 10
        if name == LEADER_KILL:
            # The fixed point of tests/cluster's acks=1 test: followers that lag but stay in the
            # ISR, writes only the leader has (acks=1 acknowledges them), then the leader dies.
            partition, leader = self._partition(cluster)
            followers = [node for node in cluster.answering() if node != leader]
            self._mark(name, node=leader, partition=partition)
            for follower in followers:
                cluster.pause(follower)
            self._sleep(LAGGING_SECONDS)
            cluster.kill(leader)
            for follower in followers:
                cluster.resume(follower)
            new_leader = cluster.wait_for_leader(
                self.topic, partition, not_in={leader}, timeout=election_s
            )
            self._restart(cluster, leader)
            self._mark(name, end=True, new_leader=new_leader)
        elif name == FOLLOWER_PAUSE:
            partition, leader = self._partition(cluster)
            followers = [node for node in cluster.answering() if node != leader]
            if not followers:
                raise FaultError(f"partition {partition} has no follower up to pause")
            follower = self._rng.choice(followers)
            self._mark(name, node=follower, partition=partition)
            for seconds in (LAGGING_SECONDS, LONG_PAUSE_SECONDS):
                cluster.pause(follower)
                self._sleep(seconds)
                cluster.resume(follower)
                self._sleep(1.0)
            cluster.wait_for_brokers(election_s)
            self._mark(name, end=True)
        elif name == ISOLATE:
            # The zombie leader: clients still reach it, its followers and the controller do not.
            partition, leader = self._partition(cluster)
            self._mark(name, node=leader, partition=partition)
            cluster.isolate(leader)
            new_leader = cluster.wait_for_leader(
                self.topic, partition, not_in={leader}, timeout=election_s
            )
            self._sleep(ZOMBIE_SECONDS)
            cluster.heal(leader)
            cluster.wait_for_brokers(election_s)
            self._mark(name, end=True, new_leader=new_leader)
        elif name == CONTROLLER_KILL:
            self._mark(name, node=CONTROLLER_ID)
            cluster.kill(CONTROLLER_ID)
            self._sleep(1.0)
            self._restart(cluster, CONTROLLER_ID)
            self._mark(name, end=True)
        elif name == ALL_POWER_LOSS:
            self._all_power_loss(cluster)

    def _all_power_loss(self, cluster: LocalCluster) -> None:
        """Hold the processor back 1 s (acknowledged values stay unread, as a lagging consumer's
        do), then kill every broker at once right after the next acknowledgement arrives."""
        self._mark(ALL_POWER_LOSS, nodes=list(cluster.node_ids))
        pid = self.processor_pid() if self.processor_pid is not None else None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                self._paused_processor = pid
        self._sleep(1.0)
        if self.acked is not None:
            acked, deadline = self.acked(), time.monotonic() + 5
            while self.acked() == acked and time.monotonic() < deadline:
                time.sleep(0.0005)
        cluster.kill_all()
        self._resume_processor()
        self._sleep(0.5)
        self._restart(cluster, *cluster.node_ids)
        self._mark(ALL_POWER_LOSS, end=True)
