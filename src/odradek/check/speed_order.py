"""The speed order: each guarantee's settings, the measured order, and why it differs from the seed.

The seed ranks speed at-most-once > at-least-once > exactly-once. The checker reports the order it
measured in the fault-free phase instead of forcing it, and where the two differ it explains the
difference from the measurement: the processor writes each batch's costs to the history (`batch`
ops: ms in poll, in the SQLite transaction, in a synchronous Kafka offset commit, in all), and the
reason names the step whose cost per message differs most between the two guarantees.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from odradek.check.measures import BatchCosts
from odradek.client import CommitPoint, Guarantee

# The seed's trade-off matrix, fastest first.
SEED_ORDER = (Guarantee.AT_MOST_ONCE, Guarantee.AT_LEAST_ONCE, Guarantee.EXACTLY_ONCE)

# Throughputs closer than this (relative) are called out as within a run's noise.
NOISE = 0.05

STEPS = ("commit", "sink", "fetch", "other")


@dataclass(frozen=True, slots=True)
class Settings:
    """What one guarantee's workload does, in the words of the seed's cheat-sheet."""

    acks: str
    commit: str
    transactions: str

    def line(self) -> str:
        return f"acks={self.acks}; {self.commit}; {self.transactions}"


def settings(guarantee: Guarantee) -> Settings:
    """The checker's workload for `guarantee`: a `GuaranteeProducer` and a `Processor` into a
    SQLite sink, as `odradek.client` configures them."""
    acks = str(guarantee.producer_config()["acks"])
    if guarantee.commit_point is CommitPoint.ATOMIC_WITH_OUTPUT:
        commit = "offsets in the sink's SQLite transaction, no Kafka commit"
        transactions = "a SQLite transaction per batch (rows + offsets), idempotent producer"
    else:
        commit = f"sync Kafka offset commit {guarantee.commit_point.value}"
        transactions = "no transactions"
    return Settings(acks, commit, transactions)


@dataclass(frozen=True, slots=True)
class Measured:
    """One guarantee's fault-free speed and batch costs."""

    guarantee: Guarantee
    throughput_msgs_per_s: float
    costs: BatchCosts


def measured_order(runs: Sequence[Measured]) -> list[Guarantee]:
    """Fastest first."""
    ranked = sorted(runs, key=lambda run: run.throughput_msgs_per_s, reverse=True)
    return [run.guarantee for run in ranked]


def reasons(runs: Sequence[Measured]) -> list[str]:
    """One line for each neighbour in the measured order that the seed ranks the other way."""
    if len(runs) < 2 or any(not run.costs.batches for run in runs):
        return []
    ranked = sorted(runs, key=lambda run: run.throughput_msgs_per_s, reverse=True)
    lines = []
    for faster, slower in itertools.pairwise(ranked):
        if SEED_ORDER.index(faster.guarantee) < SEED_ORDER.index(slower.guarantee):
            continue  # the seed's order
        lines.append(reason(faster, slower))
    return lines


def reason(faster: Measured, slower: Measured) -> str:
    """Why `faster` outran `slower` although the seed ranks `slower` first, from their costs: the
    step whose mean cost per message differs most, and what the faster one did with the time
    saved if it then waited longer for records."""
    fast, slow = faster.throughput_msgs_per_s, slower.throughput_msgs_per_s
    apart = fast / slow - 1 if slow else 1.0
    text = (
        f"{faster.guarantee.value} {fast:,.0f} vs {slower.guarantee.value} {slow:,.0f} msg/s, "
        f"{apart:.0%} apart"
    )
    if apart < NOISE:
        text += f" (within this run's {NOISE:.0%} noise)"
    step = max(
        STEPS,
        key=lambda name: slower.costs.per_message_ms(name) - faster.costs.per_message_ms(name),
    )
    text += f": per batch {slower.guarantee.value} {_describe(slower, step)}, "
    text += f"{faster.guarantee.value} {_describe(faster, step)}"
    waited = faster.costs.per_message_ms("fetch") - slower.costs.per_message_ms("fetch")
    if step != "fetch" and waited > 0.25 * (
        slower.costs.per_message_ms(step) - faster.costs.per_message_ms(step)
    ):
        text += (
            f"; {faster.guarantee.value} gives part of that back waiting "
            f"{faster.costs.fetch_ms:.1f} ms per batch in poll (vs {slower.costs.fetch_ms:.1f})"
        )
    if abs(slower.costs.batch_size - faster.costs.batch_size) > 0.1 * max(
        slower.costs.batch_size, faster.costs.batch_size
    ):
        text += (
            f" (batches of {slower.costs.batch_size:.0f} vs {faster.costs.batch_size:.0f} records)"
        )
    return text


def _describe(run: Measured, step: str) -> str:
    """What `run` does in `step`, with its mean cost per batch."""
    costs, guarantee = run.costs, run.guarantee
    if step == "commit":
        if guarantee.commit_point is CommitPoint.ATOMIC_WITH_OUTPUT:
            return (
                f"{costs.commit_ms:.1f} ms (no Kafka commit: its offsets ride in its "
                f"{costs.sink_ms:.1f} ms SQLite transaction)"
            )
        return (
            f"waits {costs.commit_ms:.1f} ms for a synchronous Kafka offset commit "
            f"{guarantee.commit_point.value}"
        )
    if step == "sink":
        offsets = ", offsets included" if guarantee is Guarantee.EXACTLY_ONCE else ""
        return f"spends {costs.sink_ms:.1f} ms in its SQLite transaction{offsets}"
    if step == "fetch":
        acks = settings(guarantee).acks
        return f"waits {costs.fetch_ms:.1f} ms in poll for records (producer acks={acks})"
    return f"spends {costs.other_ms:.1f} ms in the Processor's own code"
