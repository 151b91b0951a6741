"""What the simulator swaps for the length of a run: the process's clock and randomness, the
clients' `time` and `random`, and the file system.

- `odradek.determinism` gets the virtual clock and a seeded UUID source (the broker's own seam).
- aiokafka reads `time.monotonic()`, `time.time()` and `random` directly in several modules;
  each such module's `time` and `random` attribute is replaced by a virtual-time stand-in and a
  seeded `random.Random`, then restored.
- storage's `os`, `open` and `shutil` reach the in-memory file system (`odradek.sim.memfs`), so
  no real file is touched; every node's disk is a directory in it.
"""

from __future__ import annotations

import contextlib
import gc
import random
import sys
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

from odradek import determinism
from odradek.sim.memfs import MemoryFileSystem, patched_storage

# Virtual wall-clock time 0 (2024-01-01T00:00:00Z): record timestamps look like real ones.
EPOCH_S = 1_704_067_200.0


class VirtualTime(types.ModuleType):
    """A `time` module whose clocks read the simulated loop's virtual time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__("time")
        self._clock = clock

    def monotonic(self) -> float:
        return self._clock()

    def perf_counter(self) -> float:
        return self._clock()

    def time(self) -> float:
        return EPOCH_S + self._clock()

    def monotonic_ns(self) -> int:
        return int(self._clock() * 1e9)

    def time_ns(self) -> int:
        return int((EPOCH_S + self._clock()) * 1e9)

    def sleep(self, _seconds: float) -> None:
        raise RuntimeError("time.sleep would block the simulated loop")

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def virtual_now_ms(clock: Callable[[], float]) -> Callable[[], int]:
    def now_ms() -> int:
        return round((EPOCH_S + clock()) * 1000)

    return now_ms


@contextlib.contextmanager
def patched_clients(clock: Callable[[], float], rng: random.Random) -> Iterator[None]:
    """Point every loaded aiokafka module's `time` and `random` at the simulation."""
    import aiokafka.consumer.fetcher
    import aiokafka.producer.producer  # noqa: F401 - load the modules to patch

    virtual_time = VirtualTime(clock)
    replaced: list[tuple[types.ModuleType, str, Any]] = []
    for name in sorted(sys.modules):
        if not (name == "aiokafka" or name.startswith("aiokafka.")):
            continue
        module = sys.modules[name]
        for attribute, real, fake in (("time", time, virtual_time), ("random", random, rng)):
            if getattr(module, attribute, None) is real:
                replaced.append((module, attribute, real))
                setattr(module, attribute, fake)
    try:
        yield
    finally:
        for module, attribute, real in replaced:
            setattr(module, attribute, real)


@contextlib.contextmanager
def simulated_process(
    clock: Callable[[], float], seed: int, fs: MemoryFileSystem
) -> Iterator[None]:
    """Everything a run swaps, restored afterwards. The cyclic garbage collector is off for the
    run: objects it finalizes would log at points no seed decides."""
    client_rng = random.Random(f"{seed}:clients")
    uuid_rng = random.Random(f"{seed}:uuids")
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with (
            patched_storage(fs),
            determinism.installed(virtual_now_ms(clock), uuid_rng),
            patched_clients(clock, client_rng),
        ):
            yield
    finally:
        if gc_was_enabled:
            gc.enable()
