"""Jepsen's Kafka analysers (jepsen.tests.kafka, the "queue" workload), on the checker's history.

Each analyser keeps Jepsen's name and definition (kafka.clj, and the anomaly list of the
jepsen.redpanda README); each docstring below cites it. Jepsen's key is a topic-partition; here
the key is the partition (one topic per run). The checker's values are unique across the whole
run, so "the writer of a value" needs no key.

    inconsistent-offsets   one offset of a partition holds two values (replicas diverged)
    lost-write             an acknowledged value below the highest offset read was never read
    unseen                 an acknowledged value never read at all, the final drain included
                           (and not a lost-write: nothing after it was read either)
    duplicate              one value at more than one offset
    G1a                    a value read although its write definitely failed (aborted read)
    G0                     a cycle of write-write dependencies between transactions
    G1c                    a cycle of write-write and write-read dependencies, with at least one
                           write-read edge
    poll-skip              one process's consecutive polls of a partition jumped over offsets
    nonmonotonic-poll      ... went backwards or repeated
    nonmonotonic-send      one process's consecutive sends to a partition went backwards
    int-poll-skip          inside one operation: consecutive reads of a partition skipped
    int-nonmonotonic-poll  inside one operation: consecutive reads went backwards or repeated
    int-send-skip          inside one operation: another write landed between two sends
    int-nonmonotonic-send  inside one operation: two sends got offsets out of order

Jepsen's allowed types (`allowed-error-types`): `int-send-skip` and `G0` always (writes of
concurrent Kafka transactions interleave); `poll-skip` and `nonmonotonic-poll` when consumers
subscribe (a rebalance moves a partition to the committed offset); `G1c` when its cycle needs a
write-write edge (t0 <ww t1 <wr t0 is normal without write isolation). A cycle of write-read edges
alone is never allowed. Each `Case` carries `allowed`.

The version order of a partition comes, as in Jepsen, from every operation that must have
committed (ok, or info with one of its writes read by an ok operation): sends with their offsets
and polls; indices are dense offsets (control records and aborted data leave gaps).
"""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from odradek.check.history import (
    ASSIGN,
    FAIL,
    FINAL_POLL,
    INFO,
    INVOKE,
    MOP_POLL,
    MOP_SEND,
    OK,
    POLL,
    SEND,
    SUBSCRIBE,
    TXN,
    Op,
)

INCONSISTENT_OFFSETS = "inconsistent-offsets"
LOST_WRITE = "lost-write"
UNSEEN = "unseen"
DUPLICATE = "duplicate"
G1A = "G1a"
ABORTED_READ = "aborted-read"  # the checker's earlier name for G1a, kept in the JSON
G0 = "G0"
G1C = "G1c"
POLL_SKIP = "poll-skip"
NONMONOTONIC_POLL = "nonmonotonic-poll"
NONMONOTONIC_SEND = "nonmonotonic-send"
INT_POLL_SKIP = "int-poll-skip"
INT_NONMONOTONIC_POLL = "int-nonmonotonic-poll"
INT_SEND_SKIP = "int-send-skip"
INT_NONMONOTONIC_SEND = "int-nonmonotonic-send"
ANOMALIES = (
    INCONSISTENT_OFFSETS,
    LOST_WRITE,
    UNSEEN,
    DUPLICATE,
    G1A,
    G0,
    G1C,
    POLL_SKIP,
    NONMONOTONIC_POLL,
    NONMONOTONIC_SEND,
    INT_POLL_SKIP,
    INT_NONMONOTONIC_POLL,
    INT_SEND_SKIP,
    INT_NONMONOTONIC_SEND,
)
ALIASES = {ABORTED_READ: G1A}

Partition = int
Offset = int
Value = int


@dataclass(slots=True)
class Case:
    """One instance of an anomaly: what was seen, and the operations that show it. `allowed`:
    Jepsen counts it as normal for Kafka in this run (see the module docstring)."""

    anomaly: str
    value: int | None
    description: str
    ops: list[Op] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    allowed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "description": self.description,
            "allowed": self.allowed,
            **self.details,
            "ops": [op.as_dict() for op in self.ops],
        }


def allowed(case: Case, *, subscribe: bool) -> bool:
    """Whether Jepsen's `allowed-error-types` lets `case` pass: `int-send-skip` and `G0` always,
    `poll-skip` and `nonmonotonic-poll` under subscribe, `G1c` when its cycle has a ww edge."""
    if case.anomaly in (INT_SEND_SKIP, G0):
        return True
    if case.anomaly in (POLL_SKIP, NONMONOTONIC_POLL):
        return subscribe
    if case.anomaly == G1C:
        return int(case.details.get("ww_edges", 0)) > 0
    return False


# -- the normalised history ----------------------------------------------------------------------
@dataclass(slots=True)
class QueueOp:
    """A completed client operation in Jepsen's terms: what it sent and what it read.

    `sends`: (partition, offset, value) in send order, partition or offset None when unknown;
    `reads`: (partition, offset, value) in the order polled (only for ok operations);
    `assigned`: for an assign op, the partitions; `subscribe`: a subscribe op."""

    index: int
    op: Op
    sends: list[tuple[Partition | None, Offset | None, Value]] = field(default_factory=list)
    reads: list[tuple[Partition, Offset, Value]] = field(default_factory=list)
    assigned: list[Partition] | None = None
    subscribe: bool = False

    @property
    def process(self) -> str:
        return self.op.process

    @property
    def type(self) -> str:
        return self.op.type

    def writes(self) -> dict[Partition, list[Value]]:
        by_partition: dict[Partition, list[Value]] = defaultdict(list)
        for partition, _, value in self.sends:
            if partition is not None:
                by_partition[partition].append(value)
        return by_partition

    def reads_by_partition(self) -> dict[Partition, list[Value]]:
        by_partition: dict[Partition, list[Value]] = defaultdict(list)
        for partition, _, value in self.reads:
            by_partition[partition].append(value)
        return by_partition


def _txn_mops(op: Op) -> tuple[list[tuple[Any, Any, Any]], list[tuple[int, int, int]]]:
    sends: list[tuple[Any, Any, Any]] = []
    reads: list[tuple[int, int, int]] = []
    for mop in op.value or []:
        if not mop:
            continue
        if mop[0] == MOP_SEND:
            partition, payload = mop[1], mop[2]
            if isinstance(payload, list):
                sends.append((partition, payload[0], int(payload[1])))
            else:
                sends.append((partition, None, int(payload)))
        elif mop[0] == MOP_POLL and len(mop) > 1 and op.type == OK:
            reads += [(int(p), int(o), int(v)) for p, o, v in mop[1]]
    return sends, reads


def normalise(history: Sequence[Op]) -> list[QueueOp]:
    """The completed client operations of either workload, in history order.

    Transactional workload: `txn` ops. SQLite-sink workload: each `send` completion is a
    one-send operation (its partition from its offsets or the invoke's `partition`), each ok
    `poll` (a sink transaction) and the `final-poll` a read-only operation."""
    partition_of: dict[int, int] = {}
    for op in history:
        if op.f == SEND and op.type == INVOKE and "partition" in op.extra:
            partition_of[op.value] = int(op.extra["partition"])
    result: list[QueueOp] = []
    for op in history:
        if op.type == INVOKE:
            continue
        item = QueueOp(len(result), op)
        if op.f == TXN:
            item.sends, item.reads = _txn_mops(op)
        elif op.f == SEND:
            partition = op.offsets[0] if op.offsets else partition_of.get(op.value)
            offset = op.offsets[1] if op.offsets else None
            item.sends = [(partition, offset, int(op.value))]
        elif op.f in (POLL, FINAL_POLL):
            if op.type == OK:
                item.reads = [
                    (int(partition), int(offset), int(value))
                    for value, (partition, offset) in zip(op.value, op.offsets, strict=True)
                ]
        elif op.f == ASSIGN and op.type == OK:
            item.assigned = [int(partition) for partition in op.value]
        elif op.f == SUBSCRIBE and op.type == OK:
            item.subscribe = True
        else:
            continue
        result.append(item)
    return result


@dataclass(slots=True)
class VersionOrder:
    """One partition's log as the history shows it (Jepsen's `version-orders`).

    `log`: offset -> the values seen there (more than one: inconsistent); `by_index`: one value
    per non-empty offset, in offset order (dense indices); `by_value`: value -> its index."""

    log: dict[Offset, list[Value]] = field(default_factory=dict)
    by_index: list[Value] = field(default_factory=list)
    by_value: dict[Value, int] = field(default_factory=dict)
    offset_of_index: list[Offset] = field(default_factory=list)


@dataclass(slots=True)
class QueueHistory:
    """The indexes every analyser shares."""

    ops: list[QueueOp]
    writer_of: dict[Value, QueueOp]
    readers_of: dict[Value, list[QueueOp]]
    committed: set[int]  # indices of the ops that must have committed
    orders: dict[Partition, VersionOrder]

    def index(self, partition: Partition, value: Value) -> int | None:
        order = self.orders.get(partition)
        return None if order is None else order.by_value.get(value)


def build(history: Sequence[Op]) -> QueueHistory:
    """Normalise `history` and build the writer/reader indexes and the version orders."""
    ops = normalise(history)
    writer_of: dict[Value, QueueOp] = {}
    readers_of: defaultdict[Value, list[QueueOp]] = defaultdict(list)
    for item in ops:
        for _, _, value in item.sends:
            writer_of[value] = item
        if item.type == OK:
            for _, _, value in item.reads:
                readers_of[value].append(item)
    committed = {item.index for item in ops if _must_have_committed(item, readers_of)}
    logs: dict[Partition, dict[Offset, list[Value]]] = defaultdict(dict)
    for item in ops:
        if item.index not in committed:
            continue
        for partition, offset, value in [*item.sends, *item.reads]:
            if partition is None or offset is None:
                continue
            seen = logs[partition].setdefault(offset, [])
            if value not in seen:
                seen.append(value)
    orders: dict[Partition, VersionOrder] = {}
    for partition in list(logs):
        log = logs.pop(partition)  # not held twice while its sorted copy is built
        order = VersionOrder(log={offset: log[offset] for offset in sorted(log)})
        del log
        for index, (offset, values) in enumerate(order.log.items()):
            order.by_index.append(values[0])
            order.offset_of_index.append(offset)
            for value in values:
                order.by_value[value] = index
        orders[partition] = order
    readers_of.default_factory = None  # a plain mapping now, without a second copy of it
    return QueueHistory(ops, writer_of, readers_of, committed, orders)


def _must_have_committed(item: QueueOp, readers_of: dict[Value, list[QueueOp]]) -> bool:
    """Jepsen's `must-have-committed?`: ok, or info with one of its sends read by an ok op."""
    if item.type == OK:
        return True
    return item.type == INFO and any(readers_of.get(value) for _, _, value in item.sends)


def _where(item: QueueOp) -> str:
    return f"{item.process}'s {item.op.f}"


# -- the analysers -------------------------------------------------------------------------------
def inconsistent_offsets(queue: QueueHistory) -> list[Case]:
    """Jepsen's `inconsistent-offsets`: "a single offset in some key's log contained multiple
    values" — the version order's sign of diverged replicas (a truncated log written again)."""
    cases = []
    for partition, order in sorted(queue.orders.items()):
        for offset, values in order.log.items():
            if len(values) < 2:
                continue
            ops = [queue.writer_of[value].op for value in values if value in queue.writer_of]
            for value in values:
                ops += [reader.op for reader in queue.readers_of.get(value, [])[:2]]
            cases.append(
                Case(
                    INCONSISTENT_OFFSETS,
                    values[0],
                    f"partition {partition} offset {offset} held values {sorted(values)}",
                    _ordered(ops),
                    {"partition": partition, "offset": offset, "values": sorted(values)},
                )
            )
    return cases


def lost_writes(queue: QueueHistory) -> list[Case]:
    """Jepsen's `lost-write`: "a known-successful send occurs at offset a, and some offset b
    (a < b) is polled, and the message at offset a never appears to any poll". The bound per
    partition is the latest first index of any value read; every value whose last appearance is
    at or below it must have been read, if its writer must have committed."""
    cases = []
    for partition, order in sorted(queue.orders.items()):
        read = {
            value
            for value in order.by_value
            if any(reader.type == OK for reader in queue.readers_of.get(value, []))
        }
        first_index: dict[Value, int] = {}
        last_index: dict[Value, int] = {}
        for index, values in enumerate(order.log.values()):
            for value in values:
                first_index.setdefault(value, index)
                last_index[value] = index
        bound = max((first_index[value] for value in read), default=-1)
        if bound < 0:
            continue
        bound_value = order.by_index[bound]
        max_read = next(iter(queue.readers_of.get(bound_value, [])), None)
        for value, index in sorted(last_index.items(), key=lambda item: item[1]):
            if index > bound or value in read:
                continue
            writer = queue.writer_of.get(value)
            if writer is None or writer.index not in queue.committed:
                continue
            offset = order.offset_of_index[first_index[value]]
            ops = [writer.op] + ([max_read.op] if max_read is not None else [])
            cases.append(
                Case(
                    LOST_WRITE,
                    value,
                    f"value {value} was acknowledged at partition {partition} offset {offset}; "
                    f"offset {order.offset_of_index[bound]} after it was read"
                    + (f" by {max_read.process}" if max_read else "")
                    + f", but no poll ever read {value}",
                    _ordered(ops),
                    {
                        "partition": partition,
                        "offset": offset,
                        "index": first_index[value],
                        "max_read_index": bound,
                    },
                )
            )
    return cases


def unseen(queue: QueueHistory, lost: Iterable[Case] = ()) -> list[Case]:
    """Jepsen's `unseen`: "messages which were successfully committed but have not appeared in
    any poll, as of the last poll in the history" (the final drain included). Values already
    reported as `lost-write` are left out: those were skipped over (a later offset was read),
    these were never visible at all (e.g. a truncated log tail, or acks=0 that never arrived)."""
    skipped = {case.value for case in lost}
    drains = [item.op for item in queue.ops if item.op.f == FINAL_POLL or item.process == "drain"]
    cases = []
    for value in sorted(queue.writer_of):
        writer = queue.writer_of[value]
        if writer.index not in queue.committed or value in skipped:
            continue
        if any(reader.type == OK for reader in queue.readers_of.get(value, [])):
            continue
        partition, offset = next(((p, o) for p, o, v in writer.sends if v == value), (None, None))
        where = "" if offset is None else f" at partition {partition} offset {offset}"
        cases.append(
            Case(
                UNSEEN,
                value,
                f"value {value} was acknowledged{where} and never read, the final drain included",
                _ordered([writer.op, *drains[-1:]]),
                {"partition": partition, "offset": offset},
            )
        )
    return cases


def duplicates(queue: QueueHistory) -> list[Case]:
    """Jepsen's `duplicate`: "a single value appears at multiple offsets in some key's log"
    (every value is sent once, so each should appear once)."""
    # Two passes: the positions of every value of a soak's log took gigabytes; those of the
    # values seen twice are enough.
    seen: set[Value] = set()
    twice: set[Value] = set()
    for _, order in sorted(queue.orders.items()):
        for values in order.log.values():
            for value in values:
                if value in seen:
                    twice.add(value)
                else:
                    seen.add(value)
    del seen
    positions: dict[Value, list[list[int]]] = defaultdict(list)
    for partition, order in sorted(queue.orders.items()):
        for offset, values in order.log.items():
            for value in values:
                if value in twice:
                    positions[value].append([partition, offset])
    cases = []
    for value, where in sorted(positions.items()):
        writer = queue.writer_of.get(value)
        ops = ([writer.op] if writer else []) + [
            reader.op for reader in queue.readers_of.get(value, [])[:3]
        ]
        cases.append(
            Case(
                DUPLICATE,
                value,
                f"value {value} is in the log {len(where)} times, at {where}",
                _ordered(ops),
                {"where": "log", "count": len(where), "offsets": where},
            )
        )
    return cases


def g1a(queue: QueueHistory) -> list[Case]:
    """Jepsen's `G1a` (aborted read): "an operation definitely failed, but one of its writes
    appeared in a poll operation" — read_committed must never return an aborted transaction's
    records."""
    cases = []
    for item in queue.ops:
        if item.type != OK:
            continue
        for partition, offset, value in item.reads:
            writer = queue.writer_of.get(value)
            if writer is None or writer.type != FAIL:
                continue
            cases.append(
                Case(
                    G1A,
                    value,
                    f"{item.process} read value {value} at partition {partition} offset "
                    f"{offset} although {_where(writer)} that sent it failed (aborted)",
                    _ordered([writer.op, item.op]),
                    {"partition": partition, "offset": offset},
                )
            )
    return cases


def _order_case(
    anomaly: str,
    queue: QueueHistory,
    partition: Partition,
    values: tuple[Value, Value],
    indices: tuple[int, int],
    ops: list[Op],
    what: str,
) -> Case:
    order = queue.orders[partition]
    delta = indices[1] - indices[0]
    offsets = [order.offset_of_index[index] for index in indices]
    details: dict[str, Any] = {
        "partition": partition,
        "values": list(values),
        "offsets": offsets,
        "delta": delta,
    }
    if delta > 1:
        details["skipped"] = order.by_index[indices[0] + 1 : indices[1]]
        text = f"skipping {delta - 1} record(s)"
    else:
        text = "going backwards" if delta < 0 else "repeating it"
    return Case(
        anomaly,
        values[1],
        f"{what} partition {partition} at offset {offsets[1]} (value {values[1]}) right after "
        f"offset {offsets[0]} (value {values[0]}), {text}",
        ops,
        details,
    )


def poll_order(queue: QueueHistory) -> tuple[list[Case], list[Case]]:
    """Jepsen's `poll-skip` and `nonmonotonic-poll` (`poll-skip+nonmonotonic-cases`), returned
    as (nonmonotonic-poll, poll-skip): per process, the first value an ok poll reads from a
    partition against the last value that process's previous poll of it read; a jump of more
    than one index is a skip, of less than one (backwards or the same) nonmonotonic. An `assign`
    keeps only the still-assigned partitions; a `subscribe` forgets them all."""
    nonmonotonic: list[Case] = []
    skips: list[Case] = []
    last: dict[str, dict[Partition, QueueOp]] = defaultdict(dict)
    for item in queue.ops:
        if item.assigned is not None:
            kept = set(item.assigned)
            last[item.process] = {p: o for p, o in last[item.process].items() if p in kept}
            continue
        if item.subscribe:
            last[item.process] = {}
            continue
        if item.type != OK or not item.reads:
            continue
        for partition, values in item.reads_by_partition().items():
            previous = last[item.process].get(partition)
            last[item.process][partition] = item
            if previous is None:
                continue
            before = previous.reads_by_partition()[partition][-1]
            pair = (before, values[0])
            indices = (queue.index(partition, pair[0]), queue.index(partition, pair[1]))
            if indices[0] is None or indices[1] is None:
                continue
            delta = indices[1] - indices[0]
            if delta == 1:
                continue
            case = _order_case(
                POLL_SKIP if delta > 1 else NONMONOTONIC_POLL,
                queue,
                partition,
                pair,
                (indices[0], indices[1]),
                [previous.op, item.op],
                f"{item.process} read",
            )
            (skips if delta > 1 else nonmonotonic).append(case)
    return nonmonotonic, skips


def nonmonotonic_sends(queue: QueueHistory) -> list[Case]:
    """Jepsen's `nonmonotonic-send`: "two subsequent operations on the same producer sent values
    to the same key, and the latter message wound up at an offset prior to (or at) the former"
    (ok and info completions, per process)."""
    cases = []
    last: dict[str, dict[Partition, QueueOp]] = defaultdict(dict)
    for item in queue.ops:
        if item.type not in (OK, INFO) or not item.sends:
            continue
        for partition, values in item.writes().items():
            previous = last[item.process].get(partition)
            last[item.process][partition] = item
            if previous is None:
                continue
            pair = (previous.writes()[partition][-1], values[0])
            indices = (queue.index(partition, pair[0]), queue.index(partition, pair[1]))
            if indices[0] is None or indices[1] is None or indices[1] - indices[0] >= 1:
                continue
            cases.append(
                _order_case(
                    NONMONOTONIC_SEND,
                    queue,
                    partition,
                    pair,
                    (indices[0], indices[1]),
                    [previous.op, item.op],
                    f"{item.process} wrote",
                )
            )
    return cases


def internal_polls(queue: QueueHistory) -> tuple[list[Case], list[Case]]:
    """Jepsen's `int-nonmonotonic-poll` and `int-poll-skip` (`int-poll-skip+nonmonotonic-cases`),
    returned in that order: inside one ok operation, each pair of consecutive reads of a
    partition must be adjacent in the version order. Partitions the operation lists in
    `rebalanced` (a rebalance during it) are exempt, as in Jepsen's rebalance log."""
    nonmonotonic: list[Case] = []
    skips: list[Case] = []
    for item in queue.ops:
        if item.type != OK:
            continue
        rebalanced = set(item.op.extra.get("rebalanced") or [])
        for partition, values in item.reads_by_partition().items():
            if partition in rebalanced:
                continue
            for pair in itertools.pairwise(values):
                case = _internal_case(queue, item, partition, pair, "read", POLL)
                if case is not None:
                    (skips if case.anomaly == INT_POLL_SKIP else nonmonotonic).append(case)
    return nonmonotonic, skips


def internal_sends(queue: QueueHistory) -> tuple[list[Case], list[Case]]:
    """Jepsen's `int-nonmonotonic-send` and `int-send-skip` (`int-send-skip+nonmonotonic-cases`),
    returned in that order: inside one completed operation, two consecutive sends to a partition
    got offsets out of order, or another write landed between them (Kafka allows that one: the
    writes of concurrent transactions interleave)."""
    nonmonotonic: list[Case] = []
    skips: list[Case] = []
    for item in queue.ops:
        for partition, values in item.writes().items():
            for pair in itertools.pairwise(values):
                case = _internal_case(queue, item, partition, pair, "sent", SEND)
                if case is not None:
                    (skips if case.anomaly == INT_SEND_SKIP else nonmonotonic).append(case)
    return nonmonotonic, skips


def _internal_case(
    queue: QueueHistory,
    item: QueueOp,
    partition: Partition,
    pair: tuple[Value, Value],
    verb: str,
    kind: str,
) -> Case | None:
    indices = (queue.index(partition, pair[0]), queue.index(partition, pair[1]))
    if indices[0] is None or indices[1] is None or indices[1] - indices[0] == 1:
        return None
    skip = indices[1] - indices[0] > 1
    if kind == POLL:
        anomaly = INT_POLL_SKIP if skip else INT_NONMONOTONIC_POLL
    else:
        anomaly = INT_SEND_SKIP if skip else INT_NONMONOTONIC_SEND
    return _order_case(
        anomaly,
        queue,
        partition,
        pair,
        (indices[0], indices[1]),
        [item.op],
        f"inside one {item.op.f}, {item.process} {verb}",
    )


# -- cycles (G0, G1c) ----------------------------------------------------------------------------
WW = "ww"
WR = "wr"
Edge = dict[str, Any]  # {"type": ww|wr, "partition", "value", "next_value"?}


# An edge of the cycle search's graph: (ww, partition, value, next_value) or (wr, partition,
# value); `_edge_dict` gives `dependency_graph`'s dict. A soak's history has millions of edges,
# and a dict each held gigabytes.
_Step = tuple[Any, ...]
Graph = dict[int, dict[int, Any]]


def _edge_dict(step: _Step) -> Edge:
    if step[0] == WW:
        return {"type": WW, "partition": step[1], "value": step[2], "next_value": step[3]}
    return {"type": WR, "partition": step[1], "value": step[2]}


def dependency_graph(queue: QueueHistory) -> dict[int, dict[int, Edge]]:
    """Jepsen's `ww-graph` and `wr-graph` over the operations that must have committed:
    T1 -ww-> T2 when T2 sent the value right after T1's in a partition's version order;
    T1 -wr-> T2 when T2 read a value T1 sent. No self-edges; one explanation per pair."""
    graph: dict[int, dict[int, Edge]] = defaultdict(dict)
    for source, children in _step_graph(queue, only_senders=False).items():
        graph[source] = {target: _edge_dict(step) for target, step in children.items()}
    return graph


def _cycle_graph(queue: QueueHistory) -> dict[int, dict[int, _Step]]:
    """`dependency_graph` for the cycle search, in the same order with the same explanations,
    less the edges into operations that sent nothing: an operation without a send has no
    outgoing edge, so it is on no cycle, and Tarjan's search (`_components`) and the path
    searches find the same cycles in the same order without it (an edge into a node that has
    no outgoing edge changes no other node's index, low link or stack order). In the sink
    workload these are the polls and the final drain: most of the graph."""
    return _step_graph(queue, only_senders=True)


def _step_graph(queue: QueueHistory, *, only_senders: bool) -> dict[int, dict[int, _Step]]:
    """The ww and wr edges between committed operations as steps (see `dependency_graph`);
    `only_senders`: wr edges only into readers that sent something."""
    graph: dict[int, dict[int, _Step]] = defaultdict(dict)
    for partition, order in queue.orders.items():
        for before, after in itertools.pairwise(order.by_index):
            first, second = queue.writer_of.get(before), queue.writer_of.get(after)
            if first is None or second is None or first.index == second.index:
                continue
            if first.index in queue.committed and second.index in queue.committed:
                graph[first.index].setdefault(second.index, (WW, partition, before, after))
    for value, readers in queue.readers_of.items():
        writer = queue.writer_of.get(value)
        if writer is None or writer.index not in queue.committed:
            continue
        sent_to: Partition | None = None
        found = False
        for reader in readers:
            if (only_senders and not reader.sends) or reader.index == writer.index:
                continue
            if reader.index not in queue.committed:
                continue
            if not found:
                sent_to = next((p for p, _, v in writer.sends if v == value), None)
                found = True
            children = graph[writer.index]
            existing = children.get(reader.index)
            if existing is None or existing[0] == WW:
                children[reader.index] = (WR, sent_to, value)  # wr explains more than ww
    return graph


def _components(nodes: Iterable[int], edges: Graph) -> list[list[int]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index_of: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    found: list[list[int]] = []
    counter = 0
    for root in nodes:
        if root in index_of:
            continue
        work = [(root, iter(edges.get(root, {})))]
        index_of[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index_of:
                    index_of[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, {}))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index_of[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _path(start: int, goal: int, members: set[int], edges: Graph) -> list[int] | None:
    """A shortest path start -> goal inside `members` (breadth first); with start == goal, a
    shortest cycle through start ([start, ..., start])."""
    previous: dict[int, int] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in edges.get(node, {}):
            if child not in members or child in previous or (child == start != goal):
                continue
            previous[child] = node
            if child == goal:
                path = [goal]
                step = node
                while step != start:
                    path.append(step)
                    step = previous[step]
                path.append(start)
                return path[::-1]
            queue.append(child)
    return None


def _only(edges: dict[int, dict[int, _Step]], kind: str) -> dict[int, dict[int, _Step]]:
    return {
        node: {child: edge for child, edge in children.items() if edge[0] == kind}
        for node, children in edges.items()
    }


def _cycle_case(
    anomaly: str, queue: QueueHistory, cycle: list[int], edges: dict[int, dict[int, _Step]]
) -> Case:
    steps = [_edge_dict(edges[a][b]) for a, b in itertools.pairwise([*cycle, cycle[0]])]
    names = [f"{queue.ops[node].process}'s {queue.ops[node].op.f}" for node in cycle]
    explained = []
    for (a, b), step in zip(itertools.pairwise([*cycle, cycle[0]]), steps, strict=True):
        first, second = queue.ops[a], queue.ops[b]
        if step["type"] == WW:
            explained.append(
                f"{first.process} sent {step['value']} to partition {step['partition']} before "
                f"{second.process} sent {step['next_value']}"
            )
        else:
            explained.append(
                f"{first.process} sent {step['value']} to partition {step['partition']}, "
                f"which {second.process} read"
            )
    ww_edges = sum(1 for step in steps if step["type"] == WW)
    return Case(
        anomaly,
        None,
        f"{anomaly} cycle of {len(cycle)} operations ({' -> '.join(names)}): "
        + "; ".join(explained),
        [queue.ops[node].op for node in cycle],
        {"steps": steps, "ww_edges": ww_edges, "wr_edges": len(steps) - ww_edges},
    )


def cycles(queue: QueueHistory) -> tuple[list[Case], list[Case]]:
    """Jepsen's `G0` and `G1c` (Elle's cycle search over the ww and wr graphs), as (G0, G1c).

    G0: a cycle of write-write edges only — "each wrote some message both before and after
    every other transaction in the cluster". G1c: "circular information flow", a cycle of
    write-read and write-write edges with at least one write-read edge; a cycle of write-read
    edges alone is reported first (never allowed), else one that needs ww edges (allowed).
    One case of each per strongly connected component."""
    graph = _cycle_graph(queue)
    every = set(graph)
    for children in graph.values():
        every.update(children)
    nodes = sorted(every)
    del every
    g0: list[Case] = []
    g1c: list[Case] = []
    # Each component's own edges filtered by kind: filtering the whole graph per component
    # made the search quadratic (a 10-minute soak's analysis ran for more than 15 minutes),
    # and a filtered copy of the whole graph held a soak's millions of edges twice more.
    for component in _components(nodes, graph):
        members = set(component)
        ww = _only({n: graph.get(n, {}) for n in component}, WW)
        wr = _only({n: graph.get(n, {}) for n in component}, WR)
        for inner in _components(component, ww):
            path = _path(inner[0], inner[0], set(inner), ww)
            if path is not None:
                g0.append(_cycle_case(G0, queue, path[:-1], graph))
        wr_cycles = _components(component, wr)
        for inner in wr_cycles:
            path = _path(inner[0], inner[0], set(inner), wr)
            if path is not None:
                g1c.append(_cycle_case(G1C, queue, path[:-1], graph))
        if wr_cycles:
            continue
        for a in component:
            found = None
            for b, edge in graph.get(a, {}).items():
                if edge[0] == WR and b in members:
                    back = _path(b, a, members, graph)
                    if back is not None:
                        found = [a, *back[:-1]]
                        break
            if found is not None:
                g1c.append(_cycle_case(G1C, queue, found, graph))
                break
    return g0, g1c


def _ordered(ops: Iterable[Op]) -> list[Op]:
    unique: dict[int, Op] = {}
    for op in ops:
        unique.setdefault(id(op), op)
    return sorted(unique.values(), key=lambda op: op.time)


def analyse_queue(
    history: Sequence[Op], *, subscribe: bool = False, queue: QueueHistory | None = None
) -> dict[str, list[Case]]:
    """Every analyser of this module over `history`, keyed by Jepsen's names (in `ANOMALIES`
    order), each case marked `allowed` per Jepsen's allowed types (`subscribe`: the consumers
    subscribed, so rebalances may skip or rewind)."""
    queue = queue or build(history)
    lost = lost_writes(queue)
    nonmonotonic_poll, poll_skip = poll_order(queue)
    int_nonmonotonic_poll, int_poll_skip = internal_polls(queue)
    int_nonmonotonic_send, int_send_skip = internal_sends(queue)
    g0, g1c = cycles(queue)
    found = {
        INCONSISTENT_OFFSETS: inconsistent_offsets(queue),
        LOST_WRITE: lost,
        UNSEEN: unseen(queue, lost),
        DUPLICATE: duplicates(queue),
        G1A: g1a(queue),
        G0: g0,
        G1C: g1c,
        POLL_SKIP: poll_skip,
        NONMONOTONIC_POLL: nonmonotonic_poll,
        NONMONOTONIC_SEND: nonmonotonic_sends(queue),
        INT_POLL_SKIP: int_poll_skip,
        INT_NONMONOTONIC_POLL: int_nonmonotonic_poll,
        INT_SEND_SKIP: int_send_skip,
        INT_NONMONOTONIC_SEND: int_nonmonotonic_send,
    }
    mark_allowed(found, subscribe=subscribe)
    return found


def mark_allowed(anomalies: dict[str, list[Case]], *, subscribe: bool) -> None:
    """Set each case's `allowed` per Jepsen's `allowed-error-types`."""
    for cases in anomalies.values():
        for case in cases:
            case.allowed = allowed(case, subscribe=subscribe)


def bad_anomalies(anomalies: dict[str, list[Case]]) -> list[str]:
    """The anomaly names with a case Jepsen does not allow (Jepsen's `bad-error-types`)."""
    return [name for name in ANOMALIES if any(not case.allowed for case in anomalies.get(name, []))]
