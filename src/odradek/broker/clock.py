"""The wall clock, read only at the edge and passed into the deterministic core as `now_ms`.

The clock itself lives behind `odradek.determinism` (the simulator swaps it for virtual time).
"""

from __future__ import annotations

from odradek.determinism import now_ms

__all__ = ["now_ms"]
