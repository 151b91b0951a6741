"""Replaying every record a coordinator emitted rebuilds exactly its state (Hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from txn_helpers import Harness, tps

from odradek.coordinator.txn import TransactionConfig, TransactionState, TxnMarkers

IDS = ["a", "b", "c"]
PARTITIONS = tps(("t", 0), ("t", 1), ("u", 0))

_init = st.tuples(st.just("init"), st.sampled_from([*IDS, None]), st.integers(1, 3000))
_add = st.tuples(
    st.just("add"),
    st.sampled_from(IDS),
    st.lists(st.sampled_from(PARTITIONS), min_size=1, max_size=3),
)
_offsets = st.tuples(st.just("offsets"), st.sampled_from(IDS), st.sampled_from(["g1", "g2"]))
_end = st.tuples(st.just("end"), st.sampled_from(IDS), st.booleans())
_markers = st.tuples(st.just("markers"), st.integers(0, 10))
_advance = st.tuples(st.just("advance"), st.integers(0, 2500))
_poll = st.tuples(st.just("poll"))
# Repetition weights the choice towards the steps that move transactions along.
operation = st.one_of(
    _init,
    _add,
    _add,
    _offsets,
    _end,
    _end,
    _markers,
    _markers,
    _advance,
    _poll,
    _poll,
    st.tuples(st.just("restart")),
)


class Driver:
    def __init__(self) -> None:
        self.config = TransactionConfig(
            transactional_id_expiration_ms=4000, producer_id_block_size=4
        )
        self.harness = Harness(self.config)
        self.now = 0
        self.markers: list[TxnMarkers] = []
        self.seen_producer_ids: dict[int, str | None] = {}
        for transactional_id in IDS:
            self.step(("init", transactional_id, 2000), succeed=True)

    def settle(self, result: Any, records: list[Any], succeed: bool) -> Any:
        if not records:
            return result
        if succeed:
            return self.harness.commit(result, records)
        self.harness.fail(result, records)
        return None

    def producer(self, transactional_id: str) -> tuple[int, int]:
        metadata = self.harness.coordinator.transaction(transactional_id)
        if metadata is None:
            return (-1, -1)
        return (metadata.producer_id, metadata.producer_epoch)

    def step(self, op: tuple[Any, ...], succeed: bool) -> None:
        coordinator = self.harness.coordinator
        kind = op[0]
        if kind == "init":
            result = self.settle(*coordinator.init_producer_id(op[1], op[2], self.now), succeed)
            if result is not None and result.error is ErrorCode.none:
                producer_id = result.producer_id
                # Never the same id for two owners, even across crashes; idempotent producers
                # always get a fresh one.
                if op[1] is None:
                    assert producer_id not in self.seen_producer_ids
                else:
                    assert self.seen_producer_ids.get(producer_id, op[1]) == op[1]
                self.seen_producer_ids[producer_id] = op[1]
            if result is not None and result.markers is not None:
                self.markers.append(result.markers)
        elif kind == "add":
            producer_id, epoch = self.producer(op[1])
            self.settle(
                *coordinator.add_partitions_to_txn(op[1], producer_id, epoch, op[2], self.now),
                succeed,
            )
        elif kind == "offsets":
            producer_id, epoch = self.producer(op[1])
            self.settle(
                *coordinator.add_offsets_to_txn(op[1], producer_id, epoch, op[2], self.now),
                succeed,
            )
        elif kind == "end":
            producer_id, epoch = self.producer(op[1])
            result = self.settle(
                *coordinator.end_txn(op[1], producer_id, epoch, op[2], self.now), succeed
            )
            if result is not None and result.markers is not None:
                self.markers.append(result.markers)
        elif kind == "markers" and self.markers:
            markers = self.markers.pop(op[1] % len(self.markers))
            result = self.settle(*coordinator.markers_written(markers, self.now), succeed)
            if result is None:
                self.markers.append(markers)  # the broker retries a failed completion
        elif kind == "advance":
            self.now += op[1]
        elif kind == "poll":
            result = self.settle(*coordinator.poll(self.now), succeed)
            if result is not None:
                self.markers.extend(result.aborts)
        elif kind == "restart":
            self.harness = self.harness.restart(self.now)
            self.markers = list(self.harness.start.markers)


#: Appends mostly succeed; one in eight fails.
append_succeeds = st.integers(0, 7).map(bool)


@settings(max_examples=200)
@given(st.lists(st.tuples(operation, append_succeeds), min_size=5, max_size=60))
def test_replay_reproduces_state(steps: list[tuple[tuple[Any, ...], bool]]) -> None:
    driver = Driver()
    for op, succeed in steps:
        driver.step(op, succeed or op[0] in ("advance", "restart"))
        live = driver.harness.coordinator.snapshot()
        replayed = Harness(driver.config, driver.harness.log).coordinator
        rebuilt = replayed.snapshot()
        assert rebuilt.transactions == live.transactions
        assert rebuilt.producer_id_block_end == live.producer_id_block_end
        assert rebuilt.coordinator_epoch == live.coordinator_epoch + 1
        for metadata in live.transactions.values():
            assert metadata.state not in (
                TransactionState.DEAD,
                TransactionState.PREPARE_EPOCH_FENCE,
            )
            if metadata.state is TransactionState.EMPTY:
                assert not metadata.topic_partitions
        assert all(driver.harness.coordinator.pending_state(t) is None for t in IDS)
