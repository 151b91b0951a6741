"""The run's trace: timestamped events, identical for two runs of one seed.

Events are short readable lines (`  12.345678 crash broker-0 (power loss)`); the network adds a
digest of every delivered byte. `fingerprint()` combines both: two runs of one seed must give
the same fingerprint, and a failing run prints its last events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable


class Trace:
    """Events with the virtual time they happened at."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.lines: list[str] = []
        self._digest = hashlib.blake2b(digest_size=16)

    def event(self, text: str) -> None:
        line = f"{self._clock():11.6f} {text}"
        self.lines.append(line)
        self._digest.update(line.encode())
        self._digest.update(b"\n")

    def fingerprint(self, *extra: bytes) -> str:
        digest = self._digest.copy()
        for part in extra:
            digest.update(part)
        return digest.hexdigest()

    def tail(self, count: int) -> list[str]:
        return self.lines[-count:]
