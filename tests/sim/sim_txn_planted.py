"""Transaction bugs planted by monkeypatching the real code, to show that a transactional
cluster seed sweep catches each (issue 13: within 1,000 seeds).

Each is a context manager that swaps one function of the broker's, the storage's or the
transaction coordinator's real code for a broken copy and restores it afterwards; the broker
has no flag for any of them. `TXN_PLANTED` maps each name to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from kio.schema.errors import ErrorCode
from sim_planted import _swapped

from odradek.broker.txn_runtime import TxnRuntime
from odradek.coordinator.txn.coordinator import TransactionCoordinator
from odradek.storage.log import PartitionLog


@contextlib.contextmanager
def marker_counted_before_replicated() -> Iterator[None]:
    """A transaction counts as ended as soon as the leader appended its marker: the last
    stable offset moves past the marker at once (to the marker's offset + 1, the LSO the
    transaction index records after it) instead of waiting until the high watermark passes
    the marker (Kafka's ProducerStateManager.unreplicatedTxns and the LSO's bound by the HW
    left out). read_committed fetches then return records no follower has yet."""
    ended_at: weakref.WeakKeyDictionary[PartitionLog, int] = weakref.WeakKeyDictionary()

    def append_control(self: PartitionLog, *args: Any, **kwargs: Any) -> Any:
        info = original_append_control(self, *args, **kwargs)
        ended_at[self] = info.last_offset + 1
        return info

    def last_stable_offset(self: PartitionLog) -> int:
        # the bug: every ended transaction is stable at once, the marker's end counts as stable
        stable = max(self._high_watermark, ended_at.get(self, 0))
        first_unstable = self._producer_state.first_unstable_offset(None)
        if first_unstable is None:
            return stable
        return min(max(first_unstable, self._log_start_offset), stable)

    original_append_control: Callable[..., Any] = PartitionLog.append_control
    with (
        _swapped(PartitionLog, "append_control", append_control),
        _swapped(PartitionLog, "last_stable_offset", property(last_stable_offset)),
    ):
        yield


@contextlib.contextmanager
def prepare_commit_left_unfinished() -> Iterator[None]:
    """A coordinator that loads a transactional id in PrepareCommit (after a failover or a
    restart) forgets to finish it: no COMMIT markers re-sent, no CompleteCommit written
    (Kafka's TransactionStateManager.loadTransactionsForTxnTopicPartition without the
    transactionsPendingForCompletion it hands to the marker channel). PrepareAbort is still
    finished."""

    def start(
        self: TransactionCoordinator, now_ms: int, coordinator_epoch: int | None = None
    ) -> Any:
        result, records = original(self, now_ms, coordinator_epoch)
        # the bug: the loaded PrepareCommit transactions are not completed
        unfinished = tuple(markers for markers in result.markers if not markers.commit)
        return dataclasses.replace(result, markers=unfinished), records

    original = TransactionCoordinator.start
    with _swapped(TransactionCoordinator, "start", start):
        yield


@contextlib.contextmanager
def remote_verification_skipped() -> Iterator[None]:
    """KIP-890's verification is skipped when the transaction coordinator is another broker:
    a partition leader appends a transactional batch that would start a transaction without
    asking the coordinator (no AddPartitionsToTxn verify_only round trip, no verification
    guard), so a late batch is appended after its transaction ended."""

    async def verify_remotely(
        self: TxnRuntime,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        topic: str,
        index: int,
        add: bool,
    ) -> ErrorCode:
        if add:
            return await original(
                self, transactional_id, producer_id, producer_epoch, topic, index, add
            )
        return ErrorCode.none  # the bug: nothing asked, every batch accepted

    original = TxnRuntime._verify_remotely
    with _swapped(TxnRuntime, "_verify_remotely", verify_remotely):
        yield


TXN_PLANTED: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "marker-counted-before-replicated": marker_counted_before_replicated,
    "prepare-commit-left-unfinished": prepare_commit_left_unfinished,
    "remote-verification-skipped": remote_verification_skipped,
}
