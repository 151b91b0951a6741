"""The simulator end to end: the real broker and aiokafka clients on the simulated loop.

Runs are short (a few simulated seconds) so the file stays within CI's budget; the bounded
sweep in test_sweep.py and the planted bugs in test_planted.py run longer ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from odradek.sim import Load, SimOptions, run_seed

ALL_FAULTS = ("crash", "power-loss", "reset", "cut", "disk-error")


def test_one_seed_replays_byte_identically_with_aiokafka_in_the_loop() -> None:
    options = SimOptions(seed=5, seconds=4, faults=ALL_FAULTS)
    first = run_seed(options)
    second = run_seed(options)
    assert first.ok, first.violation
    # The clients did real work: acknowledged writes, transactions and reads.
    assert first.stats["acknowledged"] > 100
    assert first.stats["transactions"] > 3
    assert first.stats["reads"] > 100
    assert first.trace == second.trace
    assert first.fingerprint == second.fingerprint
    assert first.stats == second.stats


def test_different_seeds_give_different_runs() -> None:
    fingerprints = {run_seed(SimOptions(seed=seed, seconds=1.5)).fingerprint for seed in (1, 2)}
    assert len(fingerprints) == 2


def _replay_in_a_process(seed: int, hash_seed: str, reexec: bool) -> tuple[str, str]:
    """(trace fingerprint, trace text) of `odradek sim --seed` in a fresh process."""
    environment = {**os.environ, "PYTHONHASHSEED": hash_seed}
    if not reexec:
        environment["ODRADEK_SIM_NO_REEXEC"] = "1"
    trace = Path(tempfile.mkdtemp()) / "trace.txt"
    command = [sys.executable, "-m", "odradek.cli", "sim", "--seed", str(seed)]
    output = subprocess.run(
        [*command, "--seconds", "2", "--trace-file", str(trace)],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
        timeout=120,
    ).stdout
    assert f"seed {seed}: ok" in output, output
    text = trace.read_text()
    shutil.rmtree(trace.parent)
    return output.rsplit("trace ", 1)[1].strip(), text


def test_a_seed_replays_identically_in_another_process() -> None:
    # The command fixes string hashing (aiokafka builds some requests from sets), so a replay
    # matches byte for byte whatever the caller's PYTHONHASHSEED.
    assert _replay_in_a_process(3, "1", True) == _replay_in_a_process(3, "2", True)


def test_the_broker_decides_the_same_whatever_the_string_hashing() -> None:
    # Without the fixed hash seed the events match (the broker's decisions, the faults, the
    # clients' outcomes); only the order aiokafka lists partitions in may differ on the wire.
    first = _replay_in_a_process(3, "1", False)[1]
    second = _replay_in_a_process(3, "2", False)[1]
    assert first.splitlines() == second.splitlines()


class _Audit:
    """Records every socket, thread and file write the process makes while `active`."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.active = False

    def hook(self, event: str, arguments: tuple[Any, ...]) -> None:
        if not self.active:
            return
        if event.startswith("socket.") or event in (
            "os.rename",
            "os.remove",
            "os.mkdir",
            "os.rmdir",
            "shutil.rmtree",
            "os.truncate",
        ):
            self.seen.append(f"{event} {arguments!r}")
        elif event == "open":
            path, mode, flags = arguments
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            if writing or str(path).startswith("/sim"):
                self.seen.append(f"open {path!r} {mode!r}")


@pytest.fixture
def real_io_audit(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Audit]:
    audit = _Audit()
    original_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        # The runner's watchdog (odradek.sim.world.step_watchdog) only watches the loop's
        # turn counter from outside the run; any other thread is the run's.
        if audit.active and thread.name != "odradek-sim-watchdog":
            audit.seen.append(f"thread {thread.name}")
        original_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    sys.addaudithook(audit.hook)  # audit hooks cannot be removed: this one goes quiet after
    try:
        yield audit
    finally:
        audit.active = False


def test_a_run_touches_no_real_socket_thread_or_file(real_io_audit: _Audit, tmp_path: Path) -> None:
    # A first run imports what the broker loads lazily (importing may write bytecode files).
    run_seed(SimOptions(seed=8, seconds=1, faults=ALL_FAULTS))
    real_io_audit.active = True
    result = run_seed(SimOptions(seed=8, seconds=3, faults=ALL_FAULTS))
    real_io_audit.active = False
    assert result.ok, result.violation
    assert result.stats["restarts"] + result.stats.get("fault_reset", 0) > 0
    assert real_io_audit.seen == []
    # The audit itself sees a real write.
    real_io_audit.active = True
    (tmp_path / "probe").write_text("x")
    real_io_audit.active = False
    assert any("probe" in line for line in real_io_audit.seen)


def test_a_kip848_consumer_group_keeps_one_owner_per_partition_per_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both consumers are KIP-848 members (odradek.sim.kip848): ConsumerGroupHeartbeat,
    # reconciliation, OffsetCommit v9 with the member epoch; a consumer crashes and rejoins.
    from odradek.sim.invariants import Checker

    assignments: list[tuple[str, int, list[int]]] = []
    original = Checker.assigned

    def assigned(self: Checker, member: str, generation: int, partitions: Any) -> None:
        assignments.append((member, generation, sorted(partitions)))
        original(self, member, generation, partitions)

    monkeypatch.setattr(Checker, "assigned", assigned)
    options = SimOptions(
        seed=2, seconds=12, faults=("consumer-crash", "reset"), load=Load(group_protocol="consumer")
    )
    result = run_seed(options)
    assert result.ok, f"{result.violation}\n" + "\n".join(result.trace[-20:])
    assert result.stats["reads"] > 100
    # Both members took partitions, at a positive member epoch, and together all six.
    assert {member.split(".")[0] for member, _epoch, _partitions in assignments} == {
        "consumer-0",
        "consumer-1",
    }
    assert all(epoch > 0 for _member, epoch, _partitions in assignments)
    assert set().union(*(partitions for _m, _e, partitions in assignments)) == set(range(6))
