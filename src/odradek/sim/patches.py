"""What the simulator swaps for the length of a run: the process's clock and randomness, the
clients' `time` and `random`, and the file system.

- `odradek.determinism` gets the virtual clock and a seeded UUID source (the broker's own seam).
- aiokafka reads `time.monotonic()`, `time.time()` and `random` directly in several modules;
  each such module's `time` and `random` attribute is replaced by a virtual-time stand-in and a
  seeded `random.Random`, then restored.
- aiokafka keeps tasks, futures, partitions and topics in sets and acts on them in iteration
  order (the sender's finished requests, the fetcher's waiters, the partitions of a request).
  A set iterates by hash: for tasks and futures that is the object's address (it changes with
  whatever the process allocated before), for strings the per-process PYTHONHASHSEED. Each
  aiokafka module's `set` is an `InsertionOrderedSet` for the run, so those iterations follow
  the order the simulation added the items in.
- storage's `os`, `open` and `shutil` reach the in-memory file system (`odradek.sim.memfs`), so
  no real file is touched; every node's disk is a directory in it.
"""

from __future__ import annotations

import abc
import contextlib
import gc
import random
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator, MutableSet
from typing import Any, TypeVar

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


_T = TypeVar("_T")


class _AnySetType(abc.ABCMeta):
    """`isinstance(x, InsertionOrderedSet)` holds for built-in sets too: a patched module's
    `isinstance(topics, set)` must still accept a set made elsewhere."""

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, set | frozenset) or super().__instancecheck__(instance)


class InsertionOrderedSet(MutableSet[_T], metaclass=_AnySetType):
    """A mutable set that iterates in insertion order (a dict's keys), whatever its items'
    hashes: the `set` of the simulated clients' modules. Supports what aiokafka does with its
    sets: add/discard/remove/pop/clear, update and the other in-place methods, the operators
    (`|`, `&`, `-`, `^`, comparisons) and their method forms."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[_T] = ()) -> None:
        self._items: dict[_T, None] = dict.fromkeys(items)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[_T]:
        # A snapshot: aiokafka discards from some sets while it walks them.
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"{{{', '.join(map(repr, self._items))}}}" if self._items else "set()"

    __hash__ = None  # type: ignore[assignment]

    def add(self, item: _T) -> None:
        self._items[item] = None

    def discard(self, item: _T) -> None:
        self._items.pop(item, None)

    def copy(self) -> InsertionOrderedSet[_T]:
        return InsertionOrderedSet(self._items)

    def update(self, *others: Iterable[_T]) -> None:
        for other in others:
            self._items.update(dict.fromkeys(other))

    def difference_update(self, *others: Iterable[Any]) -> None:
        for other in others:
            for item in other:
                self._items.pop(item, None)

    def intersection_update(self, *others: Iterable[Any]) -> None:
        for other in others:
            keep = set(other)
            self._items = {item: None for item in self._items if item in keep}

    def union(self, *others: Iterable[_T]) -> InsertionOrderedSet[_T]:
        result = self.copy()
        result.update(*others)
        return result

    def difference(self, *others: Iterable[Any]) -> InsertionOrderedSet[_T]:
        result = self.copy()
        result.difference_update(*others)
        return result

    def intersection(self, *others: Iterable[Any]) -> InsertionOrderedSet[_T]:
        result = self.copy()
        result.intersection_update(*others)
        return result

    def symmetric_difference(self, other: Iterable[_T]) -> InsertionOrderedSet[_T]:
        return InsertionOrderedSet(self ^ InsertionOrderedSet(other))

    def issubset(self, other: Iterable[Any]) -> bool:
        return self <= InsertionOrderedSet(other)

    def issuperset(self, other: Iterable[Any]) -> bool:
        return self >= InsertionOrderedSet(other)


@contextlib.contextmanager
def patched_clients(clock: Callable[[], float], rng: random.Random) -> Iterator[None]:
    """Point every loaded aiokafka module's `time` and `random` at the simulation, and its
    `set` at `InsertionOrderedSet`."""
    import aiokafka.consumer.fetcher
    import aiokafka.producer.producer  # noqa: F401 - load the modules to patch

    virtual_time = VirtualTime(clock)
    replaced: list[tuple[types.ModuleType, str, Any]] = []
    shadowed: list[types.ModuleType] = []
    for name in sorted(sys.modules):
        if not (name == "aiokafka" or name.startswith("aiokafka.")):
            continue
        module = sys.modules[name]
        for attribute, real, fake in (("time", time, virtual_time), ("random", random, rng)):
            if getattr(module, attribute, None) is real:
                replaced.append((module, attribute, real))
                setattr(module, attribute, fake)
        # `set` is a builtin: the module-level name shadows it for the module's code.
        if "set" not in vars(module):
            shadowed.append(module)
            module.set = InsertionOrderedSet  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module, attribute, real in replaced:
            setattr(module, attribute, real)
        for module in shadowed:
            del module.set


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
