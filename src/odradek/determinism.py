"""The process's sources of nondeterminism behind one seam: the wall clock and randomness.

Core code never reads `time` or draws from `random`/`uuid4` itself: it takes `now` as an
argument, and what must be random (a cluster id, a topic id, a group member id) comes from
`random_uuid()` here. By default these are the real clock and the OS's randomness; the
deterministic simulator (`odradek.sim`) installs a virtual clock and a seeded generator for the
length of a run with `installed(...)`, so one seed replays one run exactly.

Executors are the third source (fdatasync pools): the broker reaches them through
`loop.run_in_executor`, which the simulator's event loop answers on virtual time.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable, Iterator

__all__ = ["installed", "new_random", "now_ms", "random_uuid"]


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


_clock_ms: Callable[[], int] = _wall_clock_ms
_uuid: Callable[[], uuid.UUID] = uuid.uuid4


def now_ms() -> int:
    """Milliseconds since the epoch: the wall clock, or the simulator's virtual one."""
    return _clock_ms()


def random_uuid() -> uuid.UUID:
    """A random (version 4) UUID: `uuid.uuid4()`, or drawn from the simulator's seeded RNG."""
    return _uuid()


def new_random() -> random.Random:
    """A `random.Random` seeded from `random_uuid()`: the OS's randomness, or the simulator's
    seeded generator (the controller's replica placement draws from it)."""
    return random.Random(random_uuid().int)


@contextlib.contextmanager
def installed(clock_ms: Callable[[], int], rng: random.Random) -> Iterator[None]:
    """Use `clock_ms` and `rng` as the process's clock and randomness inside the block.

    The simulator's seam; not for use while a real broker runs in the same process.
    """
    global _clock_ms, _uuid
    previous = _clock_ms, _uuid

    def seeded_uuid() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)

    _clock_ms = clock_ms
    _uuid = seeded_uuid
    try:
        yield
    finally:
        _clock_ms, _uuid = previous
