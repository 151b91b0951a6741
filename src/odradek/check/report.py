"""Reports: the terminal trade-off matrix, `--json`, and a self-contained `--html` file.

The HTML report needs no network: charts are inline SVG generated here, and each anomaly's
sequence diagram is given twice — as mermaid source (the seed's notation, rendered if the reader
has mermaid) and as an SVG drawn here, readable offline.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from odradek.check.analysis import ANOMALIES, Case
from odradek.check.case_report import MAX_CASES, case_cause, case_partition, case_time, shorten
from odradek.check.faults import DESCRIPTIONS
from odradek.check.history import (
    ASSIGN,
    FAIL,
    FINAL_POLL,
    FINAL_SINK,
    INFO,
    INVOKE,
    NEMESIS,
    OK,
    POLL,
    SEND,
    TXN,
    Op,
)
from odradek.check.runner import RunResult
from odradek.check.speed_order import SEED_ORDER, Measured, measured_order, reasons
from odradek.client import Guarantee

# Who led a partition at a moment: (topic, partition, time_ms on the run's history clock) -> the
# leader's node id, or None when unknown. The cluster timeline provides it (Metadata polled
# every 250 ms); a mapping {(topic, partition, time_ms): node} serves too (the latest entry at or
# before the time counts).
LeaderLookup = Callable[[str, int, float], int | None]


def leader_function(
    leaders: LeaderLookup | Mapping[tuple[str, int, float], int] | None,
) -> LeaderLookup | None:
    """`leaders` as a function: a mapping answers with its latest entry at or before the time."""
    if leaders is None or callable(leaders):
        return leaders
    table = sorted(leaders.items(), key=lambda item: item[0][2])

    def lookup(topic: str, partition: int, time_ms: float) -> int | None:
        found = None
        for (entry_topic, entry_partition, at), node in table:
            if at > time_ms:
                break
            if entry_topic == topic and entry_partition == partition:
                found = node
        return found

    return lookup


# The seed's trade-off matrix: what each guarantee claims.
SEED_CLAIMS = {
    Guarantee.AT_MOST_ONCE: {
        "Speed": "Fastest",
        "Complexity": "Low",
        "Duplication": "None",
        "Durability": "Weak",
        "Typical setting": "acks=0",
    },
    Guarantee.AT_LEAST_ONCE: {
        "Speed": "Moderate",
        "Complexity": "Medium",
        "Duplication": "Possible",
        "Durability": "Strong",
        "Typical setting": "acks=1 or all",
    },
    Guarantee.EXACTLY_ONCE: {
        "Speed": "Slowest",
        "Complexity": "High",
        "Duplication": "None",
        "Durability": "Strongest",
        "Typical setting": "acks=all + transactions",
    },
}

MEASURED_SETTINGS = {
    Guarantee.AT_MOST_ONCE: "acks=0, no retries, commit before processing",
    Guarantee.AT_LEAST_ONCE: "acks=all, retries, commit after processing",
    Guarantee.EXACTLY_ONCE: "idempotent acks=all, offsets + rows in one SQLite transaction",
}


@dataclass(frozen=True, slots=True)
class MatrixRow:
    dimension: str
    cells: list[tuple[str, str, bool | None]]  # (measured, seed claim, matches the claim?)


SPEED = "Speed (fault-free)"
LATENCY = "Latency p50 / p99 (produce call → sink commit, fault-free)"
RECOVERY = "Recovery (fault phase: fault end → sink moves)"


def _verdict(result: RunResult) -> tuple[bool | None, bool | None]:
    """(duplication matches the seed's claim, durability matches) for one run."""
    guarantee, analysis = result.guarantee, result.analysis
    if not analysis.acked:
        return None, None  # nothing acknowledged: nothing was shown kept (or not duplicated)
    duplication = analysis.duplicated == 0 if guarantee is not Guarantee.AT_LEAST_ONCE else None
    durability = analysis.lost == 0 if guarantee is not Guarantee.AT_MOST_ONCE else None
    if not result.drained:
        durability = None  # values the processor had yet to read would count as lost
    return duplication, durability


def _durability_text(result: RunResult) -> str:
    analysis = result.analysis
    if not analysis.acked:
        return "not measured: no value was acknowledged"
    text = f"{analysis.lost:,} lost of {analysis.acked:,} acked"
    if not result.drained:
        text += " (drain incomplete: not judged)"
    return text


def _measured(results: Sequence[RunResult]) -> list[Measured]:
    return [
        Measured(
            result.guarantee,
            result.fault_free.speed.throughput_msgs_per_s,
            result.fault_free.costs,
        )
        for result in results
    ]


def speed_order(results: Sequence[RunResult]) -> dict[str, Any]:
    """The measured order (fastest first), the seed's, and a reason for each inversion."""
    measured = _measured(results)
    ran = {result.guarantee for result in results}
    return {
        "measured": [guarantee.value for guarantee in measured_order(measured)],
        "seed": [guarantee.value for guarantee in SEED_ORDER if guarantee in ran],
        "reasons": reasons(measured),
    }


def latency_text(p50: float | None, p99: float | None) -> str:
    """`p50 / p99 ms`, or "not measured" when no value reached the sink."""
    if p50 is None or p99 is None:
        return "not measured (no value reached the sink)"
    return f"{p50:,.1f} / {p99:,.1f} ms"


def _faults(count: int) -> str:
    return f"{count} fault" + ("" if count == 1 else "s")


def _recovery_text(result: RunResult) -> str:
    recovered = result.fault_phase.recovery
    if recovered is None or not recovered.faults:
        return "no faults"
    total, unrecovered = len(recovered.faults), recovered.unrecovered
    if unrecovered == total:
        text = "the sink never moved again after " + (
            "the fault" if total == 1 else f"any of the {total} faults"
        )
    else:
        text = f"p50 {recovered.p50:.1f} s, max {recovered.max:.1f} s"
        if unrecovered:
            text += f" over the {total - unrecovered} of {_faults(total)} it recovered from"
            text += f" ({unrecovered} never recovered)"
        else:
            text += f" over {_faults(total)}"
    return (
        f"{text}; sink stood still {recovered.stood_still_seconds:.1f} s of "
        f"{result.fault_phase.seconds:.1f} s"
    )


def matrix(results: Sequence[RunResult]) -> list[MatrixRow]:
    order = measured_order(_measured(results))
    rows: dict[str, list[tuple[str, str, bool | None]]] = {
        name: []
        for name in (
            SPEED,
            LATENCY,
            "Duplication",
            "Durability",
            RECOVERY,
            "Complexity",
            "Typical setting",
            "Anomalies",
        )
    }
    for result in results:
        analysis, calm = result.analysis, result.fault_free.speed
        claims = SEED_CLAIMS[result.guarantee]
        duplication_ok, durability_ok = _verdict(result)
        speed = f"{calm.throughput_msgs_per_s:,.0f} msg/s"
        if not calm.produced:
            speed = "not measured (no fault-free phase)"
        elif len(order) == 3:
            speed += f" ({('fastest', 'middle', 'slowest')[order.index(result.guarantee)]})"
        speed += f"\n{result.settings.line()}"
        rows[SPEED].append((speed, claims["Speed"], None))
        rows[LATENCY].append((latency_text(calm.latency_p50, calm.latency_p99), "", None))
        rows["Duplication"].append(
            (f"{analysis.duplicated:,} duplicated", claims["Duplication"], duplication_ok)
        )
        rows["Durability"].append((_durability_text(result), claims["Durability"], durability_ok))
        rows[RECOVERY].append((_recovery_text(result), "", None))
        rows["Complexity"].append(("", claims["Complexity"], None))
        typical = (
            result.settings.line()
            if result.workload == "txn"
            else MEASURED_SETTINGS[result.guarantee]
        )
        rows["Typical setting"].append((typical, claims["Typical setting"], None))
        found = [
            f"{name} {len(cases):,}" + (" (allowed)" if all(case.allowed for case in cases) else "")
            for name, cases in analysis.anomalies.items()
            if cases
        ]
        rows["Anomalies"].append((", ".join(found) or "none", "", None))
    return [MatrixRow(name, cells) for name, cells in rows.items()]


def order_lines(results: Sequence[RunResult]) -> list[str]:
    """The measured speed order against the seed's, and why they differ."""
    if len(results) < 2 or any(not result.fault_free.speed.produced for result in results):
        return []
    order = speed_order(results)
    lines = [
        f"Speed order, fault-free: {' > '.join(order['measured'])} "
        f"(seed: {' > '.join(order['seed'])})"
    ]
    lines += [f"Why: {reason}" for reason in order["reasons"]]
    return lines


# -- terminal ------------------------------------------------------------------------------------
def print_table(results: Sequence[RunResult], console: Console | None = None) -> None:
    console = console or Console()
    if not results:
        return
    first = results[0]
    faults = ", ".join(sorted(set(first.faults))) or "none"
    table = Table(
        title=f"The seed's trade-off matrix, measured (seed {first.seed}; per guarantee "
        f"{first.fault_free.seconds:.1f} s fault-free, then {first.fault_phase.seconds:.1f} s "
        f"with faults: {faults})",
        show_lines=True,
    )
    table.add_column("Dimension", style="bold")
    for result in results:
        table.add_column(result.guarantee.value)
    for row in matrix(results):
        cells = []
        for measured, claim, matches in row.cells:
            mark = {True: " [green]✓[/green]", False: " [red]✗[/red]", None: ""}[matches]
            text = (measured or "") + mark
            if claim:
                text += f"\n[dim]seed: {claim}[/dim]"
            cells.append(text.strip())
        table.add_row(row.dimension, *cells)
    console.print(table)
    for line in order_lines(results):
        console.print(line, highlight=False)
    for result in results:
        for note in result.notes:
            console.print(f"[yellow]{result.guarantee.value}: {note}[/yellow]")


# -- JSON ----------------------------------------------------------------------------------------
def to_json(results: Sequence[RunResult], max_cases: int = MAX_CASES) -> dict[str, Any]:
    """The JSON report: each run (`RunResult.as_json`, listing at most `max_cases` cases per
    anomaly, 0: all), the speed order and the comparison rows."""
    document = {
        "runs": [result.as_json(max_cases) for result in results],
        "speed_order": speed_order(main_runs(results)),
    }
    rows = comparison_rows(results)
    if rows:
        document["comparison"] = rows
    return document


def write_json(results: Sequence[RunResult], path: Path, max_cases: int = MAX_CASES) -> None:
    path.write_text(json.dumps(to_json(results, max_cases), indent=2) + "\n")


# -- sequence diagrams ---------------------------------------------------------------------------
PARTICIPANTS = [
    ("P", "Producer"),
    ("K", "Kafka (topic)"),
    ("C", "Processor"),
    ("S", "Sink (SQLite)"),
]


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # "message" | "note"
    source: str
    target: str
    text: str
    arrow: str = "->>"  # mermaid arrow: ->> call, -->> reply, --x lost


def _short(values: Sequence[Any], limit: int = 4) -> str:
    shown = ", ".join(str(value) for value in values[:limit])
    return shown + (f", … ({len(values)} values)" if len(values) > limit else "")


def _partitions(op: Op, case: Case) -> list[int]:
    """The partitions an op of `case` touched that matter to the case."""
    if "partition" in case.details and case.details["partition"] is not None:
        return [int(case.details["partition"])]
    if op.f == SEND and op.offsets:
        return [int(op.offsets[0])]
    if op.f == POLL and op.offsets:
        return sorted({int(partition) for partition, _ in op.offsets})
    if op.f == TXN:
        found: set[int] = set()
        for mop in op.value or []:
            if mop and mop[0] == "send":
                found.add(int(mop[1]))
            elif mop and mop[0] == "poll" and len(mop) > 1:
                found.update(int(read[0]) for read in mop[1])
        return sorted(found)
    return []


def sequence(
    case: Case, limit: int = 16, *, leader: LeaderLookup | None = None, topic: str = ""
) -> list[Step]:
    """The steps of a case's operations, in the seed's participants. With `leader` (see
    `LeaderLookup`), each send, poll or transaction is annotated with the broker that led each
    partition it touched at that moment."""
    steps: list[Step] = []
    value = case.value
    for op in case.ops[: limit * 2]:
        steps.extend(_op_steps(op, value))
        if leader is not None and op.process != NEMESIS:
            led = []
            for partition in _partitions(op, case):
                node = leader(topic, partition, op.time / 1e6)
                if node is not None:
                    led.append(f"{partition}: broker {node}")
            if led:
                steps.append(Step("note", "K", "K", "leader " + ", ".join(led)))
    if len(steps) > limit:
        steps = [*steps[: limit - 1], Step("note", "K", "C", "…")]
    steps.append(Step("note", "P", "S", case.description))
    return steps


def _at(op: Op, value: int | None) -> str:
    if op.f == POLL and value is not None and value in op.value:
        partition, offset = op.offsets[op.value.index(value)]
        return f"{value} @ {partition}/{offset}"
    return _short(op.value)


def _op_steps(op: Op, value: int | None) -> list[Step]:
    if op.process == NEMESIS:
        where = "C" if op.f == "processor-kill" else "K"
        if op.extra.get("end"):
            return [Step("note", where, where, f"{op.f} over")]
        return [Step("note", where, where, f"fault: {op.f}")]
    if op.f == SEND:
        if op.type == INVOKE:
            return [Step("message", "P", "K", f"send {op.value}")]
        if op.type == OK:
            where = (
                f"offset {op.offsets[0]}/{op.offsets[1]}" if op.offsets else "no offset (acks=0)"
            )
            return [Step("message", "K", "P", f"ack {op.value}: {where}", "-->>")]
        return [Step("message", "K", "P", f"{op.type}: {op.extra.get('error', '')}"[:60], "--x")]
    if op.f == POLL:
        if op.type == OK:
            return [
                Step("message", "K", "C", f"deliver {_at(op, value)} to {op.process}", "-->>"),
                Step("message", "C", "S", f"{op.process} commits {_at(op, value)}"),
            ]
        return [Step("message", "C", "S", f"{op.process} rolled back {_at(op, value)}", "--x")]
    if op.f == ASSIGN:
        return [Step("note", "C", "C", f"{op.process} assigned {op.value}")]
    if op.f == TXN:
        return _txn_steps(op)
    if op.f == FINAL_SINK:
        count = op.value.count(value) if value is not None else 0
        return [Step("note", "S", "S", f"final drain: {value} is in the sink {count} time(s)")]
    if op.f == FINAL_POLL:
        return [Step("note", "K", "K", "final read of the topic")]
    if op.type in (FAIL, INFO):
        return [Step("note", "C", "C", f"{op.process} {op.f} {op.type}")]
    return []


def _txn_steps(op: Op) -> list[Step]:
    """A transaction: its sends (producer -> Kafka), its polls (Kafka -> consumer), its end."""
    if op.type == INVOKE:
        return [Step("message", "P", "K", f"{op.process} begins a transaction")]
    steps = []
    for mop in op.value or []:
        if mop and mop[0] == "send":
            payload = mop[2]
            if isinstance(payload, list):
                where = f"{mop[1]}/{payload[0]}" if payload[0] is not None else f"{mop[1]}/?"
                steps.append(
                    Step("message", "P", "K", f"{op.process} sends {payload[1]} @ {where}")
                )
        elif mop and mop[0] == "poll" and len(mop) > 1 and mop[1]:
            reads = ", ".join(f"{v} @ {p}/{o}" for p, o, v in mop[1][:4])
            more = f", … ({len(mop[1])})" if len(mop[1]) > 4 else ""
            steps.append(Step("message", "K", "C", f"{op.process} polls {reads}{more}", "-->>"))
    outcome = {OK: "commits", FAIL: "aborts"}.get(op.type, "ends unknown (info)")
    arrow = "-->>" if op.type == OK else "--x"
    steps.append(Step("message", "K", "P", f"{op.process} {outcome}", arrow))
    return steps


def mermaid(steps: Sequence[Step]) -> str:
    lines = ["sequenceDiagram"]
    lines += [f"  participant {key} as {name}" for key, name in PARTICIPANTS]
    for step in steps:
        text = step.text.replace(";", ",").replace("#", "no. ")
        if step.kind == "note":
            over = step.source if step.source == step.target else f"{step.source},{step.target}"
            lines.append(f"  Note over {over}: {text}")
        else:
            lines.append(f"  {step.source}{step.arrow}{step.target}: {text}")
    return "\n".join(lines)


def sequence_svg(steps: Sequence[Step]) -> str:
    column = 190
    row = 38
    top = 50
    width = column * len(PARTICIPANTS)
    height = top + row * (len(steps) + 1)
    x_of = {key: column // 2 + index * column for index, (key, _) in enumerate(PARTICIPANTS)}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" class="sequence" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#333"/></marker></defs>',
    ]
    for key, name in PARTICIPANTS:
        x = x_of[key]
        parts.append(
            f'<rect x="{x - 75}" y="8" width="150" height="26" rx="4" fill="#eef3fb" '
            f'stroke="#5b7db1"/><text x="{x}" y="25" text-anchor="middle">{_e(name)}</text>'
            f'<line x1="{x}" y1="34" x2="{x}" y2="{height - 6}" stroke="#aab" '
            'stroke-dasharray="4 3"/>'
        )
    for index, step in enumerate(steps):
        y = top + index * row + 14
        if step.kind == "note":
            left = min(x_of[step.source], x_of[step.target]) - 85
            right = max(x_of[step.source], x_of[step.target]) + 85
            parts.append(
                f'<rect x="{max(2, left)}" y="{y - 13}" width="{min(width - 4, right - left)}" '
                f'height="24" fill="#fff6c8" stroke="#c9b458"/>'
                f'<text x="{(left + right) // 2}" y="{y + 3}" text-anchor="middle">'
                f"{_e(step.text[:90])}</text>"
            )
            continue
        x1, x2 = x_of[step.source], x_of[step.target]
        dashed = ' stroke-dasharray="5 3"' if step.arrow.startswith("--") else ""
        lost = step.arrow.endswith("x")
        colour = "#b22" if lost else "#333"
        marker = "" if lost else ' marker-end="url(#arrow)"'
        parts.append(
            f'<line x1="{x1}" y1="{y + 6}" x2="{x2}" y2="{y + 6}" stroke="{colour}"{dashed}'
            f"{marker}/>"
            f'<text x="{(x1 + x2) // 2}" y="{y}" text-anchor="middle" fill="{colour}">'
            f"{_e(step.text[:70])}</text>"
        )
        if lost:
            parts.append(
                f'<text x="{x2}" y="{y + 10}" text-anchor="middle" fill="#b22" '
                'font-weight="bold">✕</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


# -- charts --------------------------------------------------------------------------------------
COLOURS = {
    Guarantee.AT_MOST_ONCE: "#e4572e",
    Guarantee.AT_LEAST_ONCE: "#f3a712",
    Guarantee.EXACTLY_ONCE: "#2e86ab",
}


def _e(text: object) -> str:
    return html.escape(str(text))


def bar_chart(title: str, bars: Sequence[tuple[str, float, str]], unit: str = "") -> str:
    width, height, left, bottom = 360, 220, 60, 40
    peak = max((value for _, value, _ in bars), default=0) or 1
    plot_height = height - bottom - 30
    slot = (width - left - 10) / max(1, len(bars))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-size="11">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-weight="bold">{_e(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 5}" y2="{height - bottom}" '
        'stroke="#333"/>',
    ]
    for index, (label, value, colour) in enumerate(bars):
        bar_height = plot_height * value / peak
        x = left + index * slot + slot * 0.15
        y = height - bottom - bar_height
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{bar_height:.1f}" '
            f'fill="{colour}"><title>{_e(label)}: {value:,.1f}{unit}</title></rect>'
            f'<text x="{x + slot * 0.35:.1f}" y="{y - 4:.1f}" text-anchor="middle">'
            f"{value:,.0f}{_e(unit)}</text>"
            f'<text x="{x + slot * 0.35:.1f}" y="{height - bottom + 15}" '
            f'text-anchor="middle">{_e(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def timeline_chart(result: RunResult) -> str:
    """Sent, acknowledged and delivered over time, with the fault windows shaded."""
    width, height, left, right, top, bottom = 760, 260, 70, 20, 25, 35
    samples = result.timeline
    end = max([sample.at for sample in samples] + [result.workload_seconds, 1.0])
    peak = max([sample.sent for sample in samples] + [1])

    def x(at: float) -> float:
        return left + (width - left - right) * at / end

    def y(count: float) -> float:
        return height - bottom - (height - top - bottom) * count / peak

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-size="11">',
        f'<text x="{left}" y="15" font-weight="bold">{_e(result.guarantee.value)}: values over '
        "time (s); green: the fault-free phase, red: faults, grey bars: the sink stood "
        "still</text>",
    ]
    calm = result.fault_free
    x1, x2 = x(max(0.0, calm.start)), x(max(calm.start, calm.end))
    parts.append(
        f'<rect class="fault-free" x="{x1:.1f}" y="{top}" width="{max(2.0, x2 - x1):.1f}" '
        f'height="{height - top - bottom}" fill="#2a9d8f" opacity="0.10">'
        f"<title>fault-free phase: speed and latency</title></rect>"
        f'<text x="{x1 + 2:.1f}" y="{height - bottom - 4}" fill="#1d6f65">fault-free</text>'
    )
    stalls = result.fault_phase.recovery.stalls if result.fault_phase.recovery else []
    for start, stop in stalls:
        x1, x2 = x(max(0.0, start)), x(min(end, max(start, stop)))
        parts.append(
            f'<rect class="stall" x="{x1:.1f}" y="{height - bottom - 6}" '
            f'width="{max(1.0, x2 - x1):.1f}" height="6" fill="#555">'
            f"<title>sink stood still {stop - start:.1f} s</title></rect>"
        )
    for index, (name, start, stop) in enumerate(result.fault_windows):
        x1, x2 = x(max(0.0, start)), x(max(start, stop))
        parts.append(
            f'<rect x="{x1:.1f}" y="{top}" width="{max(2.0, x2 - x1):.1f}" '
            f'height="{height - top - bottom}" fill="#d33" opacity="0.15">'
            f"<title>{_e(name)}</title></rect>"
            f'<text x="{x1 + 2:.1f}" y="{top + 12 + 12 * (index % 4)}" fill="#a22">'
            f"{_e(name)}</text>"
        )
    parts.append(
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
        f'stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" '
        'stroke="#333"/>'
        f'<text x="{left - 5}" y="{top + 4}" text-anchor="end">{peak:,}</text>'
        f'<text x="{left - 5}" y="{height - bottom}" text-anchor="end">0</text>'
    )
    for tick in range(int(end) + 1):
        if tick % 5 == 0:
            parts.append(
                f'<text x="{x(tick):.1f}" y="{height - bottom + 14}" '
                f'text-anchor="middle">{tick}</text>'
            )
    series = (
        ("sent", "#888", "sent"),
        ("acked", "#2a9d8f", "acked"),
        ("delivered", "#264653", "in sink"),
    )
    for index, (attribute, colour, label) in enumerate(series):
        points = " ".join(
            f"{x(sample.at):.1f},{y(getattr(sample, attribute)):.1f}" for sample in samples
        )
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.6"/>'
            f'<rect x="{width - 260 + index * 85}" y="{height - 14}" width="10" height="10" '
            f'fill="{colour}"/><text x="{width - 246 + index * 85}" y="{height - 5}">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


# -- HTML ----------------------------------------------------------------------------------------
_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}
table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccd;padding:.4rem .6rem;
vertical-align:top;text-align:left}th{background:#f2f4f8}.seed{color:#777;font-size:.85em}
.ok{color:#197a2b;font-weight:bold}.bad{color:#b22;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:1rem}pre.mermaid{background:#f7f7f7;padding:.5rem}
details{margin:.5rem 0}code,pre{font-size:.85em}.anomaly{border-left:4px solid #b22;
padding-left:1rem;margin:1rem 0}section{margin-bottom:2.5rem}
"""


def render_html(
    results: Sequence[RunResult],
    leaders: LeaderLookup | Mapping[tuple[str, int, float], int] | None = None,
    max_cases: int = MAX_CASES,
) -> str:
    """The self-contained HTML report. `leaders` (optional, see `LeaderLookup`) names the
    broker that led each partition in the anomalies' sequence diagrams; `max_cases` is the JSON
    report's bound, which each anomaly's summary mentions."""
    lookup = leader_function(leaders)
    first = results[0] if results else None
    body = ["<h1>Odradek guarantee check</h1>"]
    if first is not None:
        body.append(
            f"<p>Seed {first.seed}; each guarantee ran its workload for "
            f"{first.fault_free.seconds:.1f} s without faults (speed and latency), then "
            f"{first.fault_phase.seconds:.1f} s under the faults below (loss, duplicates, "
            "anomalies, recovery), on the same broker and workload; the final drain is not "
            f"counted. Histories: {', '.join(_e(result.history_path) for result in results)}."
            "</p>"
        )
    body.append("<h2>The seed's trade-off matrix, measured</h2>")
    body.append(_matrix_html(results))
    body += [f"<p>{_e(line)}</p>" for line in order_lines(results)]
    body.append('<h2>Charts</h2><div class="charts">')
    bars = [(result.guarantee.value, result, COLOURS[result.guarantee]) for result in results]
    body.append(
        bar_chart(
            "Throughput, fault-free (msg/s)",
            [
                (name, run.fault_free.speed.throughput_msgs_per_s, colour)
                for name, run, colour in bars
            ],
        )
    )
    body.append(
        bar_chart(
            "Latency p99, fault-free (ms, produce → sink commit)",
            [
                (name, run.fault_free.speed.latency_p99, colour)
                for name, run, colour in bars
                if run.fault_free.speed.latency_p99 is not None
            ],
        )
    )
    body.append(
        bar_chart(
            "Sink stood still under faults (s)",
            [
                (name, run.fault_phase.recovery.stood_still_seconds, colour)
                for name, run, colour in bars
                if run.fault_phase.recovery is not None
            ],
        )
    )
    body.append(
        bar_chart("Lost writes", [(name, run.analysis.lost, colour) for name, run, colour in bars])
    )
    body.append(
        bar_chart(
            "Duplicated values",
            [(name, run.analysis.duplicated, colour) for name, run, colour in bars],
        )
    )
    body.append("</div>")
    for result in results:
        body.append(_run_html(result, lookup, max_cases))
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        "<title>Odradek guarantee check</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _matrix_html(results: Sequence[RunResult]) -> str:
    head = "".join(f"<th>{_e(result.guarantee.value)}</th>" for result in results)
    rows = []
    for row in matrix(results):
        cells = []
        for measured, claim, matches in row.cells:
            mark = {True: ' <span class="ok">✓</span>', False: ' <span class="bad">✗</span>'}
            text = "<br>".join(_e(line) for line in measured.split("\n"))
            if matches is not None:
                text += mark[matches]
            if claim:
                text += f'<div class="seed">seed: {_e(claim)}</div>'
            cells.append(f"<td>{text}</td>")
        rows.append(f"<tr><th>{_e(row.dimension)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>Dimension</th>{head}</tr>{''.join(rows)}</table>"


def _case_summary(cases: Sequence[Case], listed: int) -> str:
    """Per partition and per cause, as the JSON report's `by_partition` and `by_cause`, and how
    many cases the JSON report lists."""
    partitions: dict[str, int] = {}
    causes: dict[str, int] = {}
    for case in cases:
        partition = case_partition(case)
        key = "none" if partition is None else str(partition)
        partitions[key] = partitions.get(key, 0) + 1
        cause = case_cause(case)
        causes[cause] = causes.get(cause, 0) + 1
    by_partition = ", ".join(f"{key}: {count:,}" for key, count in sorted(partitions.items()))
    by_cause = ", ".join(
        f"{key}: {count:,}" for key, count in sorted(causes.items(), key=lambda item: -item[1])
    )
    text = f"By partition: {by_partition}. By cause: {by_cause}."
    if listed < len(cases):
        left_out = len(cases) - listed
        text += f" The JSON report lists the first {listed:,} by time ({left_out:,} left out)."
    return text


def _run_html(
    result: RunResult, leader: LeaderLookup | None = None, max_cases: int = MAX_CASES
) -> str:
    analysis = result.analysis
    parts = [f'<section id="{_e(result.guarantee.value)}"><h2>{_e(result.guarantee.value)}</h2>']
    parts.append(
        "<table>"
        f"<tr><th>values sent</th><td>{analysis.produced:,}</td></tr>"
        f"<tr><th>acknowledged</th><td>{analysis.acked:,}</td></tr>"
        f"<tr><th>unacknowledged (failed or unknown)</th>"
        f"<td>{analysis.failed + analysis.indeterminate:,}</td></tr>"
        f"<tr><th>delivered to the sink (distinct)</th><td>{analysis.delivered:,}</td></tr>"
        f"<tr><th>lost (acknowledged, never delivered)</th><td>{analysis.lost:,}</td></tr>"
        f"<tr><th>duplicated</th><td>{analysis.duplicated:,}</td></tr>"
        f"<tr><th>settings</th><td>{_e(result.settings.line())}</td></tr>"
        f"<tr><th>processor restarts</th><td>{result.processor_restarts}</td></tr>"
        f"<tr><th>workload / drain</th><td>{result.workload_seconds:.1f} s / "
        f"{result.drain_seconds:.1f} s</td></tr></table>"
    )
    parts.append(_phases_html(result))
    parts.append(timeline_chart(result))
    parts.append(_recovery_html(result))
    faults = "".join(
        f"<tr><td>{_e(name)}</td><td>{_e(DESCRIPTIONS.get(name, ''))}</td><td>{count}</td></tr>"
        for name, count in analysis.fault_counts.items()
    )
    parts.append(
        f"<h3>Faults</h3><table><tr><th>fault</th><th>what</th><th>count</th></tr>{faults}</table>"
    )
    for note in result.notes:
        parts.append(f"<p><em>{_e(note)}</em></p>")
    parts.append("<h3>Anomalies</h3>")
    summary = ", ".join(f"{name}: {len(analysis.anomalies.get(name, []))}" for name in ANOMALIES)
    parts.append(f"<p>{_e(summary)}</p>")
    for name in ANOMALIES:
        cases = analysis.anomalies.get(name, [])
        if not cases:
            continue
        # The first by time, as the JSON report's `cases` list starts.
        case = min(cases, key=case_time)
        steps = sequence(case, leader=leader, topic=result.topic)
        allowed = " (allowed by Jepsen for Kafka)" if all(c.allowed for c in cases) else ""
        listed = len(cases) if max_cases <= 0 else min(max_cases, len(cases))
        parts.append(
            f'<div class="anomaly"><h4>{_e(name)} — {len(cases):,} case(s){allowed}; '
            "the first:</h4>"
            f"<p>{_e(_case_summary(cases, listed))}</p>"
            f"<p>{_e(case.description)}</p>{sequence_svg(steps)}"
            '<p class="seed">The same diagram in mermaid, the seed\'s notation (drawn by '
            "mermaid.js where it is loaded; this file loads no scripts):</p>"
            f'<pre class="mermaid">{_e(mermaid(steps))}</pre>'
            f"<details><summary>operations (JSON)</summary><pre>"
            f"{_e(json.dumps(shorten(case), indent=1)[:20000])}</pre></details></div>"
        )
    parts.append("</section>")
    return "".join(parts)


def _phases_html(result: RunResult) -> str:
    """Both phases side by side: speed, latency and batch costs."""
    head = "<tr><th>phase</th><th>seconds</th><th>throughput</th>"
    head += "<th>latency p50 / p99 (produce call → sink commit)</th>"
    head += (
        "<th>per batch: records; mean ms waiting in poll, in the sink, in a Kafka commit, "
        "in all (poll included)</th></tr>"
    )
    rows = []
    for phase in (result.fault_free, result.fault_phase):
        speed, costs = phase.speed, phase.costs
        rows.append(
            f"<tr><th>{_e(phase.name)}</th><td>{phase.start:.1f} to {phase.end:.1f}</td>"
            f"<td>{speed.throughput_msgs_per_s:,.0f} msg/s</td>"
            f"<td>{_e(latency_text(speed.latency_p50, speed.latency_p99))}</td>"
            f"<td>{costs.batch_size:.0f}, {costs.fetch_ms:.2f}, {costs.sink_ms:.2f}, "
            f"{costs.commit_ms:.2f}, {costs.total_ms:.2f}</td></tr>"
        )
    return f"<h3>Phases</h3><table>{head}{''.join(rows)}</table>"


def _recovery_html(result: RunResult) -> str:
    recovered = result.fault_phase.recovery
    if recovered is None or not recovered.faults:
        return ""
    rows = "".join(
        f"<tr><td>{_e(fault.fault)}</td><td>{fault.ended:.1f}</td><td>"
        + ("never" if fault.seconds is None else f"{fault.seconds:.2f}")
        + "</td></tr>"
        for fault in recovered.faults
    )
    return (
        f"<h3>Recovery</h3><p>{_e(_recovery_text(result))}.</p><table><tr><th>fault</th>"
        "<th>ended at (s)</th><th>until the sink moved again (s)</th></tr>"
        f"{rows}</table>"
    )


def write_html(
    results: Sequence[RunResult],
    path: Path,
    leaders: LeaderLookup | Mapping[tuple[str, int, float], int] | None = None,
    max_cases: int = MAX_CASES,
) -> None:
    """Write the HTML report: the plain runs, then the comparisons and cluster timelines.
    Without `leaders`, runs on the checker's own cluster name each partition's leader from
    their polled timeline (keyed by the run's topic)."""
    if leaders is None:
        leaders = timeline_leaders(results)
    html = render_html(main_runs(results), leaders, max_cases)
    path.write_text(html.replace("</body>", cluster_html(results) + "</body>", 1))


def timeline_leaders(results: Sequence[RunResult]) -> LeaderLookup | None:
    """(topic, partition, time_ms) -> the leader each run's cluster timeline recorded then;
    None when no run had a timeline."""
    timelines = {
        result.topic: result.cluster_timeline
        for result in results
        if result.cluster_timeline is not None and result.topic
    }
    if not timelines:
        return None

    def lookup(topic: str, partition: int, time_ms: float) -> int | None:
        timeline = timelines.get(topic)
        return None if timeline is None else timeline.leader_at(topic, partition, time_ms)

    return lookup


# -- comparisons and the cluster timeline (runs on the checker's own cluster) --------------------
def main_runs(results: Sequence[RunResult]) -> list[RunResult]:
    """The plain run of each guarantee (the matrix's columns), without the comparison runs."""
    return [result for result in results if not result.comparison]


def comparison_rows(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """The at-least-once runs side by side (the plain one and each acks / fsync comparison),
    when there are comparison runs; [] otherwise."""
    if not any(result.comparison for result in results):
        return []
    rows = []
    for result in results:
        if result.guarantee is not Guarantee.AT_LEAST_ONCE:
            continue
        analysis = result.analysis
        rows.append(
            {
                "run": result.name or result.guarantee.value,
                "acks": result.acks,
                "idempotence": result.idempotence,
                "fsync": result.fsync if result.brokers else None,
                "faults": sorted(set(result.faults)),
                "acked": analysis.acked,
                "lost": analysis.lost,
                "duplicated": analysis.duplicated,
                "unacknowledged": analysis.indeterminate + analysis.failed,
                "judged": result.drained,
            }
        )
    return rows


COMPARISON_NOTE = (
    "Each row ran the at-least-once workload on the same seeded fault schedule. Idempotence is "
    "off in every row: librdkafka forces acks=all on an idempotent producer, so acks=1 needs it "
    "off. fsync is the brokers' odradek.acks.all.fsync: on, acks=all waits until every ISR member "
    "has fsynced the batch; off (Kafka's behaviour), it is acknowledged from memory."
)


def print_comparison(results: Sequence[RunResult], console: Console | None = None) -> None:
    """The comparison table (acks, fsync) when comparison runs were made."""
    rows = comparison_rows(results)
    if not rows:
        return
    console = console or Console()
    table = Table(title="acks and fsync, side by side (at-least-once)", show_lines=False)
    table.add_column("run", no_wrap=True)
    for column in ("acks", "idempotence", "fsync"):
        table.add_column(column, no_wrap=True)
    for column in ("acked", "lost", "duplicated", "unacked"):
        table.add_column(column, no_wrap=True, justify="right")
    for row in rows:
        lost = f"[red]{row['lost']:,}[/red]" if row["lost"] else "[green]0[/green]"
        if not row["judged"]:
            lost += " (not judged: drain incomplete)"
        table.add_row(
            row["run"],
            row["acks"],
            "on" if row["idempotence"] else "off",
            "-" if row["fsync"] is None else ("on" if row["fsync"] else "off"),
            f"{row['acked']:,}",
            lost,
            f"{row['duplicated']:,}",
            f"{row['unacknowledged']:,}",
        )
    # Counts are never cut to "38,8…": when it is wider than the console (80 columns when the
    # output is a file or a CI log), the table is printed at the width it needs.
    width = console.width
    console.width = max(
        width, Measurement.get(console, console.options.update(width=500), table).maximum
    )
    try:
        console.print(table)
    finally:
        console.width = width
    console.print(COMPARISON_NOTE, style="dim", highlight=False)


_BROKER_COLOURS = {"up": "#2a9d8f", "paused": "#e9c46a", "isolated": "#f4a261", "down": "#d33"}


def cluster_timeline_chart(result: RunResult) -> str:
    """The cluster over time: one lane per node (up / paused / isolated / down), then per
    workload partition its leader (the lane's text) and ISR size (the bar's height), with the
    fault windows shaded; from Metadata polled every 250 ms. '' when the run had no cluster."""
    timeline = result.cluster_timeline
    if timeline is None or not timeline.samples or not result.fault_windows:
        return ""
    times = [sample.time / 1e9 for sample in timeline.samples]
    # Seconds since the fault-free phase started, as the fault windows are.
    points = [at - result.phase_origin_ns / 1e9 for at in times]
    nodes = sorted(timeline.samples[0].brokers)
    partitions = sorted({index for sample in timeline.samples for index in sample.partitions})
    end = max([*points, result.workload_seconds, 1.0])
    start = min(0.0, points[0])
    width, left, right, lane = 760, 90, 20, 18
    height = 30 + lane * (len(nodes) + len(partitions)) + 30

    def x(at: float) -> float:
        return left + (width - left - right) * (at - start) / (end - start)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-size="11">',
        f'<text x="{left}" y="15" font-weight="bold">{_e(result.name)}: the cluster over time '
        "(s); Metadata every 250 ms; red: faults</text>",
    ]
    top = 25
    for name, begin, stop in result.fault_windows:
        x1, x2 = x(max(start, begin)), x(max(begin, stop))
        parts.append(
            f'<rect x="{x1:.1f}" y="{top}" width="{max(2.0, x2 - x1):.1f}" '
            f'height="{lane * (len(nodes) + len(partitions))}" fill="#d33" opacity="0.12">'
            f"<title>{_e(name)}</title></rect>"
        )
    for row, node in enumerate(nodes):
        y = top + row * lane
        label = "controller" if node == 0 else f"broker {node}"
        parts.append(f'<text x="{left - 5}" y="{y + 12}" text-anchor="end">{label}</text>')
        for index, sample in enumerate(timeline.samples):
            x1 = x(points[index])
            x2 = x(points[index + 1]) if index + 1 < len(points) else x1 + 2
            state = sample.brokers.get(node, "up")
            parts.append(
                f'<rect x="{x1:.1f}" y="{y + 2}" width="{max(1.0, x2 - x1):.1f}" '
                f'height="{lane - 4}" fill="{_BROKER_COLOURS.get(state, "#999")}">'
                f"<title>{label}: {state}</title></rect>"
            )
    for row, partition in enumerate(partitions):
        y = top + (len(nodes) + row) * lane
        parts.append(
            f'<text x="{left - 5}" y="{y + 12}" text-anchor="end">partition {partition}</text>'
        )
        previous: int | None = None
        for index, sample in enumerate(timeline.samples):
            held = sample.partitions.get(partition)
            if held is None:
                continue
            x1 = x(points[index])
            x2 = x(points[index + 1]) if index + 1 < len(points) else x1 + 2
            full = max(1, len(sample.brokers) - 1)
            bar = (lane - 4) * len(held.isr) / full
            colour = "#264653" if held.leader >= 0 else "#d33"
            parts.append(
                f'<rect x="{x1:.1f}" y="{y + lane - 2 - bar:.1f}" '
                f'width="{max(1.0, x2 - x1):.1f}" height="{bar:.1f}" fill="{colour}" '
                f'opacity="0.35"><title>partition {partition}: leader {held.leader}, ISR '
                f"{list(held.isr)}, leader epoch {held.leader_epoch}</title></rect>"
            )
            if held.leader != previous:
                text = "no leader" if held.leader < 0 else f"L{held.leader}"
                parts.append(f'<text x="{x1 + 1:.1f}" y="{y + 12}" fill="#111">{text}</text>')
                previous = held.leader
    axis = top + lane * (len(nodes) + len(partitions))
    parts.append(f'<line x1="{left}" y1="{axis}" x2="{width - right}" y2="{axis}" stroke="#333"/>')
    for tick in range(int(start), int(end) + 1):
        if tick % 5 == 0:
            parts.append(
                f'<text x="{x(tick):.1f}" y="{axis + 14}" text-anchor="middle">{tick}</text>'
            )
    legend = " ".join(f"{state}: {colour}" for state, colour in _BROKER_COLOURS.items())
    parts.append(
        f'<text x="{left}" y="{height - 4}">lanes: {_e(legend)}; partition bars: ISR size '
        "(full height: every broker), Ln: leader n</text></svg>"
    )
    return "".join(parts)


def cluster_html(results: Sequence[RunResult]) -> str:
    """The comparison table and each run's cluster timeline ('' for runs without either)."""
    parts = []
    rows = comparison_rows(results)
    if rows:
        head = "".join(
            f"<th>{name}</th>"
            for name in ("run", "acks", "idempotence", "fsync", "acked", "lost", "duplicated")
        )
        body = "".join(
            "<tr>"
            f"<td>{_e(row['run'])}</td><td>{_e(row['acks'])}</td>"
            f"<td>{'on' if row['idempotence'] else 'off'}</td>"
            f"<td>{'-' if row['fsync'] is None else ('on' if row['fsync'] else 'off')}</td>"
            f"<td>{row['acked']:,}</td>"
            f'<td class="{"bad" if row["lost"] else "ok"}">{row["lost"]:,}</td>'
            f"<td>{row['duplicated']:,}</td></tr>"
            for row in rows
        )
        parts.append(
            "<section id=comparison><h2>acks and fsync, side by side</h2>"
            f"<table><tr>{head}</tr>{body}</table><p>{_e(COMPARISON_NOTE)}</p></section>"
        )
    charts = [(result, cluster_timeline_chart(result)) for result in results]
    charts = [(result, chart) for result, chart in charts if chart]
    if charts:
        parts.append("<section id=cluster-timeline><h2>The cluster over time</h2>")
        for _, chart in charts:
            parts.append(f'<div class="charts">{chart}</div>')
        parts.append("</section>")
    return "".join(parts)
