"""The wall clock, read only at the edge and passed into the deterministic core as `now_ms`."""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
