"""How a report shows the anomaly cases the analysers found (jepsen.py): counts, summaries per
partition and per cause, and a bounded, time-ordered list of cases whose long operation value
lists are cut to the entries each case is about.

A soak has hundreds of thousands of duplicates and its final drain's operations list every
value of the run; Jepsen's reports give counts and a few examples, and so do these (the JSON
report of a 5-million-operation run went from 1.95 GB to 16 MB).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from odradek.check.history import Op
from odradek.check.jepsen import ALIASES, ANOMALIES, Case

# How many entries of an operation's value list a case shows in a report: the final drain's ops
# list every value of the run, and a soak's JSON report held them in full in every example.
OP_VALUES_SHOWN = 20
# How many cases of each anomaly a report lists (the first by time), by default; 0 = all.
MAX_CASES = 1000


def case_time(case: Case) -> float:
    """When a case happened: its earliest operation's time (ns); inf for a case without ops."""
    return min((op.time for op in case.ops), default=float("inf"))


def _pairs(details: dict[str, Any]) -> list[tuple[int, int]]:
    """The (partition, offset) pairs a case's details name, in any of the analysers' shapes."""
    partition = details.get("partition")
    pairs: list[tuple[int, int]] = []
    if isinstance(partition, int) and isinstance(details.get("offset"), int):
        pairs.append((partition, details["offset"]))
    for key in ("offsets", "read_at"):
        found = details.get(key)
        if not isinstance(found, list) or not found:
            continue
        if len(found) == 2 and all(isinstance(item, int) for item in found) and partition is None:
            pairs.append((found[0], found[1]))  # the sink's lost-write: [partition, offset]
            continue
        for item in found:
            if isinstance(item, list) and len(item) == 2:
                pairs.append((int(item[0]), int(item[1])))
            elif isinstance(item, int) and isinstance(partition, int):
                pairs.append((partition, item))
    return pairs


def case_partition(case: Case) -> int | None:
    """The partition a case is about (its details' `partition`, else its first offset's)."""
    partition = case.details.get("partition")
    if isinstance(partition, int):
        return partition
    pairs = _pairs(case.details)
    return pairs[0][0] if pairs else None


def case_cause(case: Case) -> str:
    """What a case is put down to in a report's summary: where a duplicate is (sink or log) and
    the faults among its operations (the faults around it), or "no fault"."""
    faults = sorted(
        {op.f for op in case.ops if op.process == "nemesis" and not op.extra.get("end")}
    )
    cause = ", ".join(faults) or "no fault"
    where = case.details.get("where")
    return f"{where}: {cause}" if isinstance(where, str) else cause


class _Shortener:
    """Renders cases for a report with each long value list (an operation's `value`, and its
    aligned `offsets`) cut to the entries the case is about, at most OP_VALUES_SHOWN of them,
    with `values_total` saying how many it had. Each long list is scanned once for every case
    shown (not once per case: the final drain's ops hold every value of the run)."""

    def __init__(self, cases: Iterable[Case]) -> None:
        self._keys: dict[int, tuple[set[Any], set[tuple[int, int]]]] = {}
        wanted_values: set[Any] = set()
        wanted_pairs: set[tuple[int, int]] = set()
        long_ops: dict[int, Op] = {}
        for case in cases:
            values = {case.value} if case.value is not None else set()
            listed = case.details.get("values")
            if isinstance(listed, list):
                values.update(item for item in listed if isinstance(item, int))
            pairs = set(_pairs(case.details))
            self._keys[id(case)] = (values, pairs)
            wanted_values |= values
            wanted_pairs |= pairs
            for op in case.ops:
                if _long(op):
                    long_ops[id(op)] = op
        # op id -> value -> positions, and (partition, offset) -> positions, for wanted keys only
        self._positions: dict[int, tuple[dict[Any, list[int]], dict[tuple[int, int], list[int]]]]
        self._positions = {}
        for key, op in long_ops.items():
            by_value: dict[Any, list[int]] = defaultdict(list)
            by_pair: dict[tuple[int, int], list[int]] = defaultdict(list)
            for position, value in enumerate(op.value):
                if isinstance(value, int) and value in wanted_values:
                    by_value[value].append(position)
            if _aligned(op):
                for position, pair in enumerate(op.offsets):
                    if isinstance(pair, list) and len(pair) == 2:
                        at = (pair[0], pair[1])
                        if at in wanted_pairs:
                            by_pair[at].append(position)
            self._positions[key] = (by_value, by_pair)

    def case(self, case: Case) -> dict[str, Any]:
        """`case.as_dict()` with its long value lists cut (see the class)."""
        line = case.as_dict()
        line["ops"] = [self._op(op, case) for op in case.ops]
        return line

    def _op(self, op: Op, case: Case) -> dict[str, Any]:
        line = op.as_dict()
        positions = self._positions.get(id(op))
        if positions is None:
            return line
        values, pairs = self._keys.get(id(case), (set(), set()))
        by_value, by_pair = positions
        chosen: set[int] = set()
        for value in values:
            chosen.update(by_value.get(value, ()))
        for pair in pairs:
            chosen.update(by_pair.get(pair, ()))
        shown = sorted(chosen)[:OP_VALUES_SHOWN]
        line["value"] = [op.value[position] for position in shown]
        if _aligned(op):
            line["offsets"] = [op.offsets[position] for position in shown]
        line["values_total"] = len(op.value)
        return line


def shorten(case: Case) -> dict[str, Any]:
    """One case as a report shows it: `case.as_dict()` with long value lists cut (see
    `anomalies_json`)."""
    return _Shortener([case]).case(case)


def _long(op: Op) -> bool:
    return isinstance(op.value, list) and len(op.value) > OP_VALUES_SHOWN


def _aligned(op: Op) -> bool:
    return isinstance(op.offsets, list) and len(op.offsets) == len(op.value)


def anomalies_json(
    anomalies: dict[str, list[Case]], examples: int = 5, max_cases: int = MAX_CASES
) -> dict[str, Any]:
    """Per anomaly (every name in `ANOMALIES`, then the aliases): its count, how many of those
    Jepsen allows, whether it makes the run invalid (`bad`), the first `examples` (bad ones
    first), the cases per partition (`by_partition`, "none" for a case without one) and per
    cause (`by_cause`, see `case_cause`), and the first `max_cases` cases by time (`cases`; 0:
    all) with `cases_left_out` saying how many more there are — as Jepsen's reports give counts
    and a few examples: a soak has hundreds of thousands of duplicates. An operation's long
    value list is cut to the entries the case is about (`values_total` gives its length)."""
    chosen: dict[str, tuple[list[Case], list[Case]]] = {}
    for name in ANOMALIES:
        cases = anomalies.get(name, [])
        bad = [case for case in cases if not case.allowed]
        sample = sorted(cases, key=case_time)  # stable: the analyser's order within a moment
        if max_cases > 0:
            sample = sample[:max_cases]
        chosen[name] = ((bad or cases)[:examples], sample)
    shortener = _Shortener(
        case for shown, sample in chosen.values() for case in itertools.chain(shown, sample)
    )
    result: dict[str, Any] = {}
    for name in ANOMALIES:
        cases = anomalies.get(name, [])
        shown, sample = chosen[name]
        allowed_count = sum(1 for case in cases if case.allowed)
        by_partition: Counter[str] = Counter()
        by_cause: Counter[str] = Counter()
        for case in cases:
            partition = case_partition(case)
            by_partition["none" if partition is None else str(partition)] += 1
            by_cause[case_cause(case)] += 1
        result[name] = {
            "count": len(cases),
            "allowed": allowed_count,
            "bad": allowed_count < len(cases),
            "examples": [shortener.case(case) for case in shown],
            "by_partition": dict(sorted(by_partition.items())),
            "by_cause": dict(by_cause.most_common()),
            "cases": [shortener.case(case) for case in sample],
            "cases_left_out": len(cases) - len(sample),
        }
    for alias, name in ALIASES.items():
        result[alias] = {**result[name], "alias_of": name}
    return result
