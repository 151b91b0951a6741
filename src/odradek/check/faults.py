"""Fault names, the seeded schedule, and the injector that carries it out.

Every selected fault happens once at a fixed point of the run (spread over its middle, in a seeded
order), so each effect is certain rather than likely in a short run; longer runs add more
occurrences at seeded random times. Each fault is written to the history as two `info` ops of the
process `nemesis`: its start, and its end (`"end": true`).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from odradek.check.history import INFO, NEMESIS, HistoryWriter
from odradek.check.local_broker import LocalBroker
from odradek.check.proxy import FaultProxy

logger = logging.getLogger("odradek.check.faults")

KILL = "kill"
PAUSE = "pause"
POWER_LOSS = "power-loss"
PROXY_CUT = "proxy-cut"
PROXY_DELAY = "proxy-delay"
PROXY_DROP = "proxy-drop"
PROCESSOR_KILL = "processor-kill"

BROKER_FAULTS = (KILL, PAUSE, POWER_LOSS)
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
}


class FaultError(ValueError):
    """A fault name that does not exist or cannot be injected here."""


def parse_faults(text: str | None, *, local: bool) -> list[str]:
    """`--faults` (comma-separated names, `all` or `none`) -> fault names, in canonical order."""
    available: tuple[str, ...] = ALL_FAULTS if local else CLIENT_FAULTS
    if not POWER_LOSS_AVAILABLE:
        available = tuple(name for name in available if name != POWER_LOSS)
    if text is None or text.strip() in ("", "all"):
        return list(available)
    if text.strip() == "none":
        return []
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    for name in chosen:
        if name not in ALL_FAULTS:
            raise FaultError(f"unknown fault {name!r}: choose from {', '.join(ALL_FAULTS)}")
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
    ) -> None:
        self.planned = list(planned)
        self.history = history
        self.broker = broker
        self.proxy = proxy
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
        if name in (KILL, POWER_LOSS) and broker is not None:
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
