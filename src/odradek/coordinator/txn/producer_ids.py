"""Producer id allocation that never hands out an id twice, across restarts and crashes.

Ids are reserved in blocks (Kafka's ``ProducerIdsBlock``, 1000 ids). The exclusive end of a
block is persisted as a producer-id-block record (see :mod:`.records`) in the *same* append as
the first write that hands out an id from it: the broker sends that id only after the append
succeeded, so every id a client ever saw lies below a durable block end. Until a block's record
is known to be appended, every write that hands out an id from it carries the record again
(harmless: the value only grows). Replay moves the allocator past the newest block end, so after
a crash allocation starts at a fresh block; ids reserved but never handed out are skipped, never
reused.
"""

from __future__ import annotations

from odradek.coordinator.txn.records import TransactionRecord, encode_producer_id_block

#: Kafka's ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE.
DEFAULT_BLOCK_SIZE = 1000
#: Kafka's producer ids are non-negative int64.
MAX_PRODUCER_ID = 2**63 - 1


class ProducerIdsExhaustedError(Exception):
    """No producer id is left below 2**63 (Kafka treats this as fatal, too)."""


class ProducerIdsUnavailableError(Exception):
    """A cluster member's block is used up and the controller's next block has not arrived
    yet (Kafka's RPCProducerIdManager answers COORDINATOR_LOAD_IN_PROGRESS meanwhile)."""


class ProducerIdManager:
    """Hands out producer ids from blocks whose end is persisted before any id leaves."""

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE, broker_id: int = 0) -> None:
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.block_size = block_size
        self.broker_id = broker_id
        #: The next id to hand out.
        self.next_producer_id = 0
        #: Exclusive end of the current block (reserved in memory).
        self.block_end = 0
        #: The largest block end known to be in the log.
        self.durable_block_end = 0

    def allocate(self) -> tuple[int, TransactionRecord | None]:
        """Return a fresh id and, while its block is not yet known durable, the block record
        that must be appended (in the same batch) before the id is sent to anyone."""
        if self.next_producer_id >= self.block_end:
            start = max(self.next_producer_id, self.block_end)
            if start > MAX_PRODUCER_ID - self.block_size:
                raise ProducerIdsExhaustedError(f"no producer id block after {start}")
            self.next_producer_id = start
            self.block_end = start + self.block_size
        producer_id = self.next_producer_id
        self.next_producer_id += 1
        record = None
        if self.block_end > self.durable_block_end:
            record = encode_producer_id_block(self.block_end, broker_id=self.broker_id)
        return producer_id, record

    def install_block(self, start: int, length: int) -> None:
        """Hand out ids from the controller's block [start, start + length) (AllocateProducerIds,
        KIP-730) from now on. The controller's blocks are unique across the cluster and only
        grow, and its own log made the block durable, so no block record is needed here."""
        if length <= 0 or start < 0:
            raise ValueError(f"bad producer id block {start}+{length}")
        self.next_producer_id = start
        self.block_end = start + length
        self.durable_block_end = max(self.durable_block_end, self.block_end)

    def remaining(self) -> int:
        """Ids left in the current block."""
        return max(self.block_end - self.next_producer_id, 0)

    def block_appended(self, block_end: int) -> None:
        """A write carrying a block record with ``block_end`` was appended."""
        self.durable_block_end = max(self.durable_block_end, block_end)

    def replay_block(self, block_end: int) -> None:
        """Rebuild from the log: nothing below ``block_end`` may be handed out again."""
        self.durable_block_end = max(self.durable_block_end, block_end)
        self.block_end = max(self.block_end, block_end)
        self.next_producer_id = max(self.next_producer_id, block_end)

    def observe(self, producer_id: int) -> None:
        """A producer id seen in the log (defensive: never allocate it again)."""
        if producer_id >= self.next_producer_id:
            self.next_producer_id = producer_id + 1


#: Ask for the next block once this share of the current one is handed out (Kafka's
#: RPCProducerIdManager prefetches at 90 %).
PREFETCH_RATIO = 0.9


class ControllerProducerIdManager(ProducerIdManager):
    """A cluster member's producer ids: only from the controller's AllocateProducerIds blocks
    (KIP-730, Kafka's RPCProducerIdManager), never from a local block, which could collide
    with another broker's.

    `install_block` hands in a block; while the current one still has ids, it waits as the
    next block. `allocate` raises ProducerIdsUnavailableError when no id is left (the answer
    is COORDINATOR_LOAD_IN_PROGRESS, which clients retry). `wants_block` says when to ask the
    controller: no block yet, or 90 % of the current one handed out and no next block.
    Nothing of this is written to `__transaction_state`: the controller's log made the block
    durable, so the ids a restarted broker hands out come from a fresh block.
    """

    def __init__(self, broker_id: int = 0) -> None:
        super().__init__(DEFAULT_BLOCK_SIZE, broker_id)
        self.block_start = 0
        self._next_block: tuple[int, int] | None = None

    def allocate(self) -> tuple[int, TransactionRecord | None]:
        if self.next_producer_id >= self.block_end:
            if self._next_block is None:
                raise ProducerIdsUnavailableError("waiting for the controller's next block")
            self._switch(*self._next_block)
            self._next_block = None
        producer_id = self.next_producer_id
        self.next_producer_id += 1
        return producer_id, None

    def install_block(self, start: int, length: int) -> None:
        if length <= 0 or start < 0:
            raise ValueError(f"bad producer id block {start}+{length}")
        if self.next_producer_id >= self.block_end:
            self._switch(start, length)
        else:
            self._next_block = (start, length)

    def _switch(self, start: int, length: int) -> None:
        self.block_start = start
        self.next_producer_id = start
        self.block_end = start + length
        self.durable_block_end = max(self.durable_block_end, self.block_end)

    def wants_block(self) -> bool:
        """Whether to ask the controller for a block now (none in hand, or the current one
        90 % used with no next block waiting)."""
        if self._next_block is not None:
            return False
        length = self.block_end - self.block_start
        if length <= 0 or self.next_producer_id >= self.block_end:
            return True
        return self.next_producer_id - self.block_start >= PREFETCH_RATIO * length

    def remaining(self) -> int:
        following = self._next_block[1] if self._next_block is not None else 0
        return super().remaining() + following

    def replay_block(self, block_end: int) -> None:
        """A block record of `__transaction_state` (written by a single broker before this
        one joined a cluster) says nothing about the controller's blocks: ignored."""

    def observe(self, producer_id: int) -> None:
        """Ids in the log came from the controller's unique blocks: nothing to skip."""
