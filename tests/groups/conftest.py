"""Group tests reuse the raw protocol client and the `odradek serve` process helper."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "broker"))
