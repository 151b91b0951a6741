"""Bounded sweeps: every invariant holds over a range of seeds with every fault, and each seed
that once found a real bug stays a regression test."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from odradek.broker.txn_runtime import TxnRuntime
from odradek.sim import FAULTS, Load, SimOptions, run_seed
from odradek.sim.sweep import sweep

ALL_FAULTS = ("crash", "power-loss", "reset", "cut", "disk-error")


# CI's bounded sweep: the defined load (6 partitions, 2 idempotent + 1 transactional producer
# at 200 messages/s nominal, 2 consumers in a group, classic or KIP-848 by seed) for 30
# simulated seconds per seed with every fault, as many seeds as fit about 2 minutes of one core
# (README, "Speed": about 7-8 CPU seconds per seed with every fault).
SWEEP_SEEDS = range(1000, 1016)


@pytest.mark.timeout(1200)
def test_a_bounded_sweep_with_every_fault_keeps_every_invariant() -> None:
    summary = sweep(SimOptions(seed=0, seconds=30, faults=FAULTS), SWEEP_SEEDS)
    failures = [f"{result.options.command()}: {result.violation}" for result in summary.failures]
    assert failures == []
    assert summary.seeds == len(SWEEP_SEEDS)


def test_without_fsync_a_power_loss_run_is_checked_without_the_durability_invariant() -> None:
    result = run_seed(
        SimOptions(seed=4, seconds=8, faults=("power-loss", "reset"), acks_all_fsync=False)
    )
    assert result.ok, result.violation


# Seeds that found real bugs, with the options that replay them.
REGRESSIONS = {
    # A transaction marker whose write failed with a storage error (wrapped as StorageError)
    # was dropped as if the partition had refused it: the aborted transaction's record on
    # that partition stayed open, then the producer's next COMMIT marker committed it and a
    # read_committed consumer read it. Fixed in TxnRuntime.complete (retry the write).
    "marker-write-error-dropped": SimOptions(seed=11, seconds=10, faults=ALL_FAULTS),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_a_seed_that_found_a_bug_passes(name: str) -> None:
    result = run_seed(REGRESSIONS[name])
    assert result.ok, f"{result.violation}\n" + "\n".join(result.trace[-30:])


def test_a_client_disconnecting_during_end_txn_does_not_strand_its_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The producer's connections break the moment its first commit reaches the coordinator:
    # the request is cancelled, but the coordinator's write and markers must still finish
    # (they ran inside the request's task and were cancelled with it: seed 104's bug).
    original = TxnRuntime.end_txn
    broken: list[str] = []

    async def end_txn(self: TxnRuntime, *args: Any, **kwargs: Any) -> Any:
        if not broken:
            network = asyncio.get_running_loop().network  # type: ignore[attr-defined]
            for connection in network.connections_of("txn-producer-0"):
                network.reset(connection, "test: disconnect during EndTxn")
                broken.append(connection.describe())
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(TxnRuntime, "end_txn", end_txn)
    # No zombies: the first EndTxn is then the producer's own commit or abort.
    result = run_seed(SimOptions(seed=1, seconds=3, faults=(), load=Load(zombies=False)))
    assert broken
    assert result.ok, f"{result.violation}\n" + "\n".join(result.trace[-20:])
