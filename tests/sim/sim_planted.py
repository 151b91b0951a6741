"""Bugs planted by monkeypatching the broker, to show that a seed sweep catches each.

Each is a context manager that swaps one piece of the broker's real code for a broken copy and
restores it afterwards. Nothing here is reachable from broker code: the broker has no flags
for them. `PLANTED` names each with the faults its sweep runs under.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker.handlers import produce
from odradek.coordinator.group.coordinator import GroupCoordinator
from odradek.storage import producer_state
from odradek.storage.log import AppendOrigin, PartitionLog
from odradek.storage.log_append import measure
from odradek.storage.producer_state import BatchMetadata


def _check_callable_like(original: Any, replacement: Any, where: str) -> None:
    """Raise TypeError unless `replacement` can be called in every way `original` can: each
    parameter by name (positional-only ones by position), and a coroutine function exactly when
    `original` is one. A stand-in that drifted from the code it replaces would otherwise fail
    inside the broker, where a handler's exception only closes the client's connection, and
    the sweep would run to its limit without reaching the bug (the zombie plant's KIP-890
    stand-in once took no `add=`)."""
    if inspect.iscoroutinefunction(original) != inspect.iscoroutinefunction(replacement):
        raise TypeError(f"{where}: the stand-in must be async exactly when the original is")
    positional: list[str] = []
    keywords: dict[str, str] = {}
    for parameter in inspect.signature(original).parameters.values():
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            positional.append(parameter.name)
        elif parameter.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        ):
            keywords[parameter.name] = parameter.name
    try:
        inspect.signature(replacement).bind(*positional, **keywords)
    except TypeError as error:
        message = f"{where}: the stand-in cannot be called as the original: {error}"
        raise TypeError(message) from None


@contextlib.contextmanager
def _swapped(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    original = getattr(owner, name)
    if callable(original) and not isinstance(original, type):
        _check_callable_like(original, replacement, f"{getattr(owner, '__name__', owner)}.{name}")
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def state_before_append() -> Iterator[None]:
    """Producer state advances before the batch is written (Tansu #742): when the write fails,
    the retry is answered as a duplicate of a batch that is not in the log."""

    def append(
        self: PartitionLog,
        records: Any,
        headers: Any,
        now_ms: int,
        partition_leader_epoch: int | None = None,
        origin: AppendOrigin = AppendOrigin.CLIENT,
    ) -> Any:
        # PartitionLog.append as it is, with the state applied before the write.
        self._check_open()
        total_size, offset_count, message_count = measure(
            records, headers, self._config.max_message_bytes
        )
        first_offset = self._log_end_offset
        log_append_time_ms = self._log_append_time(now_ms)
        pending = self._producer_state.prepare_append(
            headers, first_offset, log_append_time_ms, origin
        )
        if isinstance(pending, BatchMetadata):
            return self._duplicate_info(pending)
        epoch = self.leader_epoch if partition_leader_epoch is None else partition_leader_epoch
        self._assign_epoch(epoch, first_offset)
        self._producer_state.apply(pending)  # the bug: before the write
        self._write(
            records,
            headers,
            first_offset,
            total_size,
            offset_count,
            message_count,
            now_ms,
            epoch,
            log_append_time_ms,
        )
        return self._finish_append(headers, first_offset, offset_count, now_ms, log_append_time_ms)

    with _swapped(PartitionLog, "append", append):
        yield


@contextlib.contextmanager
def read_committed_keeps_aborted() -> Iterator[None]:
    """Fetch forgets the aborted transactions (Tansu #716): read_committed clients cannot
    drop aborted batches."""

    def aborted_transactions(self: PartitionLog, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    with _swapped(PartitionLog, "aborted_transactions", aborted_transactions):
        yield


@contextlib.contextmanager
def txn_offsets_before_marker() -> Iterator[None]:
    """A TxnOffsetCommit's offsets are applied when written, not when the COMMIT marker lands."""
    original: Callable[..., None] = GroupCoordinator.replay

    def replay(
        self: GroupCoordinator,
        key_bytes: bytes,
        value: bytes | None,
        now_ms: int = 0,
        producer_id: int = -1,
    ) -> None:
        original(self, key_bytes, value, now_ms, -1)

    with _swapped(GroupCoordinator, "replay", replay):
        yield


@contextlib.contextmanager
def zombie_produce_accepted() -> Iterator[None]:
    """A fenced producer's produce gets through: the partition takes the zombie's old epoch as
    current instead of answering INVALID_PRODUCER_EPOCH, and KIP-890's check is skipped."""
    original = producer_state._append_data_batch

    def append_data_batch(
        entry: Any, current: Any, header: Any, first_offset: int, max_timestamp: int, origin: Any
    ) -> None:
        if header.producer_epoch < entry.producer_epoch:
            origin = None  # the bug: a stale epoch is recorded unchecked, as if replayed
        original(entry, current, header, first_offset, max_timestamp, origin)

    async def verify(*_args: Any, **_kwargs: Any) -> ErrorCode:
        return ErrorCode.none

    with (
        _swapped(producer_state, "_append_data_batch", append_data_batch),
        _swapped(produce, "_verify_transaction", verify),
    ):
        yield


# name -> (the plant, the faults its sweep runs with)
PLANTED: dict[
    str, tuple[Callable[[], contextlib.AbstractContextManager[None]], tuple[str, ...]]
] = {
    "state-before-append": (state_before_append, ("disk-error",)),
    "read-committed-keeps-aborted": (read_committed_keeps_aborted, ()),
    "txn-offsets-before-marker": (txn_offsets_before_marker, ()),
    "zombie-produce-accepted": (zombie_produce_accepted, ()),
}
