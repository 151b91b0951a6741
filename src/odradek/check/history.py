"""The history of a check run: one JSON object per line, in the shape Jepsen uses.

Every operation a workload performs is written twice, as Jepsen does: an `invoke` when it starts and
a completion when it ends — `ok` (it happened), `fail` (it certainly did not happen) or `info`
(unknown: a timeout, a crash). Faults are `info` operations of the process `nemesis`.

    {"process": "producer", "type": "invoke", "f": "send", "value": 17, "offsets": null,
     "time": 1203400}
    {"process": "producer", "type": "ok", "f": "send", "value": 17, "offsets": [2, 5], "time": ...}
    {"process": "processor-1", "type": "ok", "f": "poll", "value": [17, 20],
     "offsets": [[2, 5], [2, 6]], "time": ...}

The transactional workload (Jepsen's "queue" workload with transactions) writes `txn` ops whose
`value` is a list of micro-operations, in Jepsen's shape; the key is the partition (one topic):

    {"process": "txn-0", "type": "invoke", "f": "txn",
     "value": [["send", 2, 17], ["poll"], ["send", 0, 18]], ...}
    {"process": "txn-0", "type": "ok", "f": "txn",
     "value": [["send", 2, [5, 17]], ["poll", [[1, 7, 12], [1, 8, 13]]], ["send", 0, [3, 18]]]}

A completed send is `["send", partition, [offset, value]]` (offset null when unknown); a completed
poll is `["poll", [[partition, offset, value], ...]]` in the order the consumer returned them.
The transaction's completion says what happened to all of it: `ok` it committed, `fail` it aborted
(none of its sends is visible to read_committed), `info` unknown (its producer is closed and the
process starts afresh under a new name, as a crashed Jepsen client does). `assign` ops give the
partitions a consumer was assigned; the final drain is an ok `poll` op of process `drain`.

`time` is nanoseconds since the run started, on the host's monotonic clock (shared by every
process of the run). `offsets` is `[partition, offset]` for a send and a list of them, aligned with
`value`, for a poll. Each process writes its own file (a killed process loses nothing it had
written: every line is one `write` call); `merge` puts them in time order.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

INVOKE = "invoke"
OK = "ok"
FAIL = "fail"
INFO = "info"
TYPES = (INVOKE, OK, FAIL, INFO)

# Operation names (`f`).
SEND = "send"  # producer: value = one unique int
POLL = "poll"  # processor: the values it consumed and committed to the sink in one transaction
ASSIGN = "assign"  # processor: value = the partitions it was assigned (resets poll order checks)
FINAL_POLL = "final-poll"  # drain: the whole input topic, read_committed, after the run
FINAL_SINK = "final-sink"  # drain: every value in the sink, once per row
NEMESIS = "nemesis"  # the process name of the fault injector
# processor: one per batch, value = its size; `fetch_ms` (waiting in poll), `sink_ms` (the SQLite
# transaction), `commit_ms` (a synchronous Kafka offset commit, 0 if none), `total_ms` (the batch
# after poll returned it)
BATCH = "batch"
TXN = "txn"  # transactional workload: value = micro-operations (see above)
SUBSCRIBE = "subscribe"  # a consumer subscribed to the topic (forgets every position it had)
MOP_SEND = "send"
MOP_POLL = "poll"
PHASE = "phase"  # checker: value = the phase's name, `end: true` on its end
CHECKER = "checker"  # the process name of the runner itself


# The `extra` of every op that has none: one shared, read-only mapping (a soak's history has
# millions of ops, and an empty dict each cost 64 bytes apiece).
NO_EXTRA: Mapping[str, Any] = MappingProxyType({})


def _no_extra() -> Mapping[str, Any]:
    return NO_EXTRA


@dataclass(frozen=True, slots=True)
class Op:
    """One line of the history. `extra` is read-only: the fields beyond the six named ones."""

    process: str
    type: str
    f: str
    value: Any = None
    offsets: Any = None
    time: int = 0
    extra: Mapping[str, Any] = field(default_factory=_no_extra)

    def as_dict(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "value": self.value,
            "offsets": self.offsets,
            "time": self.time,
        }
        line.update(self.extra)
        return line

    @classmethod
    def from_dict(cls, line: dict[str, Any]) -> Op:
        """The op of one parsed history line. The names (process, type, f) are interned and an
        op without extra fields shares `NO_EXTRA`: a soak's history holds millions of ops, and
        a copy of "producer", "ok" and "send" in each took about 160 bytes per op."""
        extra = {key: item for key, item in line.items() if key not in _KNOWN}
        return cls(
            process=sys.intern(str(line["process"])),
            type=sys.intern(str(line["type"])),
            f=sys.intern(str(line["f"])),
            value=line.get("value"),
            offsets=line.get("offsets"),
            time=int(line.get("time", 0)),
            extra=extra or NO_EXTRA,
        )


_KNOWN = frozenset({"process", "type", "f", "value", "offsets", "time"})


class Clock:
    """Nanoseconds since `origin` (a `time.monotonic_ns()` reading, shared between processes)."""

    def __init__(self, origin: int | None = None) -> None:
        self.origin = time.monotonic_ns() if origin is None else origin

    def now(self) -> int:
        return time.monotonic_ns() - self.origin


class HistoryWriter:
    """Appends operations to a JSON-lines file, one `os.write` per line (thread-safe)."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()

    def write(
        self,
        process: str,
        type_: str,
        f: str,
        value: Any = None,
        offsets: Any = None,
        **extra: Any,
    ) -> Op:
        op = Op(process, type_, f, value, offsets, self.clock.now(), extra or NO_EXTRA)
        line = (json.dumps(op.as_dict(), separators=(",", ":")) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)
        return op

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read_history(path: Path) -> list[Op]:
    """The operations of one JSON-lines file; a torn last line (a killed writer) is skipped."""
    ops = []
    with path.open() as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                ops.append(Op.from_dict(json.loads(line)))
            except (json.JSONDecodeError, KeyError):
                continue
    return ops


def merge(histories: Iterable[Iterable[Op]]) -> list[Op]:
    """All operations in time order (stable: a process's own order is kept)."""
    return sorted((op for history in histories for op in history), key=lambda op: op.time)


def write_history(path: Path, ops: Iterable[Op]) -> None:
    with path.open("w") as out:
        for op in ops:
            out.write(json.dumps(op.as_dict(), separators=(",", ":")) + "\n")
