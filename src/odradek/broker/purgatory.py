"""Delayed operations: fetches waiting for data, produces waiting for durability.

Kafka calls this the purgatory (DelayedFetch, DelayedProduce). Here a fetch waits on a
`DataArrived` signal for the partitions it reads, and an acks=all produce waits on a
`GroupCommit`, where every produce that arrives while one fdatasync runs shares the next one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import defaultdict
from collections.abc import Iterable

from odradek.storage.log import PartitionLog

logger = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


class DataArrived:
    """Wakes fetches parked on a partition when an append lands there."""

    def __init__(self) -> None:
        # Dicts, not sets: waiters wake in the order they parked (a set of futures would wake
        # them in memory-address order, which differs from run to run).
        self._waiters: dict[TopicPartition, dict[asyncio.Future[None], None]] = defaultdict(dict)

    def notify(self, topic_partition: TopicPartition) -> None:
        waiters = self._waiters.pop(topic_partition, None)
        if not waiters:
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, topic_partitions: Iterable[TopicPartition], timeout_s: float) -> None:
        """Return when any of the partitions gets data, or after the timeout."""
        if timeout_s <= 0:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        keys = list(topic_partitions)
        for key in keys:
            self._waiters[key][waiter] = None
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
            # arrives as the awaited future completes (the task then never stops).
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(waiter)
        except TimeoutError:
            pass
        finally:
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.pop(waiter, None)
                    if not waiters:
                        del self._waiters[key]


# fdatasyncs run on their own threads so that a slow disk never starves other executor work.
_FLUSHER = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="odradek-fsync")


def shutdown_flusher() -> None:
    """Let the fdatasync threads end once idle (the process is exiting); never waits."""
    _FLUSHER.shutdown(wait=False, cancel_futures=True)


class GroupCommit:
    """One flusher per partition log: waiters for offset N are released once the log's
    recovery point (what is known fsynced) passes N. Concurrent waiters share one fdatasync."""

    def __init__(self, log: PartitionLog) -> None:
        self.log = log
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._running: asyncio.Task[None] | None = None

    @property
    def flushing(self) -> asyncio.Task[None] | None:
        """The task running fdatasyncs for this log's waiters, if any (shutdown waits for it
        before closing the log)."""
        running = self._running
        return running if running is not None and not running.done() else None

    async def wait_flushed(self, end_offset: int) -> None:
        """Wait until every offset below `end_offset` is on disk."""
        if self.log.recovery_point >= end_offset:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((end_offset, waiter))
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._run())
        await waiter

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiters:
                try:
                    flushed = await loop.run_in_executor(_FLUSHER, self.log.flush)
                except OSError as error:
                    logger.error("fdatasync failed: %s", error)
                    for _offset, waiter in self._waiters:
                        if not waiter.done():
                            waiter.set_exception(error)
                    self._waiters = []
                    return
                remaining = []
                for offset, waiter in self._waiters:
                    if offset <= flushed:
                        if not waiter.done():
                            waiter.set_result(None)
                    else:
                        remaining.append((offset, waiter))
                self._waiters = remaining
        finally:
            self._running = None
