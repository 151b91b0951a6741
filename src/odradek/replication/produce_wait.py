"""When an acks=all produce may be answered, and with which error (Kafka 4's `Partition`).

Three decisions, each a pure function of numbers the leader already has:

1. `check_before_append`: before the leader appends an acks=all batch, the committed ISR must
   hold at least the effective `min.insync.replicas`, or the batch is refused with
   NOT_ENOUGH_REPLICAS and never written (Kafka's `appendRecordsToLeader`).
2. `completion`: after the append, the produce waits in purgatory until the high watermark
   passes the batch (`high_watermark >= last_offset + 1`). Then it is answered NONE, or
   NOT_ENOUGH_REPLICAS_AFTER_APPEND if the maximal ISR has meanwhile fallen below the
   effective minimum (Kafka's `checkEnoughReplicasReachOffset`). The batch stays in the log
   either way: the error only says that it is not as replicated as asked.
3. `expired`: a produce still waiting when its timeout fires is answered REQUEST_TIMED_OUT
   (Kafka's `DelayedProduce.onExpiration`). Since the high watermark does not advance while
   the ISR is below the minimum (KAFKA-15583), a produce that was appended while the ISR was
   large enough and then saw it shrink ends here, not with NOT_ENOUGH_REPLICAS_AFTER_APPEND.

"Effective" minimum: since Kafka 3.7 the leader uses `min(min.insync.replicas, replication
factor)`, so a topic whose min.insync.replicas exceeds its replica count is still writable
(KAFKA-15583). Pass `replication_factor` to get that; without it the raw setting applies.

acks=1 and acks=0 never wait: they are answered after the leader's append.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kio.schema.errors import ErrorCode

__all__ = [
    "ProduceWaitState",
    "ProduceWaitStatus",
    "check_before_append",
    "completion",
    "effective_min_insync",
    "expired",
]


class ProduceWaitState(enum.Enum):
    """Where an acks=all produce stands for one partition."""

    PENDING = "pending"  # the high watermark has not passed the batch yet: keep waiting
    DONE = "done"  # answer now, with `ProduceWaitStatus.error`


@dataclass(frozen=True, slots=True)
class ProduceWaitStatus:
    """The decision for one partition of a waiting produce: its state and (when done) error."""

    state: ProduceWaitState
    error: ErrorCode = ErrorCode.none

    @property
    def is_done(self) -> bool:
        return self.state is ProduceWaitState.DONE


PENDING = ProduceWaitStatus(ProduceWaitState.PENDING)


def effective_min_insync(min_insync_replicas: int, replication_factor: int | None = None) -> int:
    """`min.insync.replicas` capped at the replica count, as Kafka >= 3.7 applies it."""
    if replication_factor is None:
        return min_insync_replicas
    return min(min_insync_replicas, replication_factor)


def check_before_append(
    isr_size: int, min_insync: int, replication_factor: int | None = None
) -> ErrorCode | None:
    """NOT_ENOUGH_REPLICAS when an acks=all batch must be refused before it is written.

    `isr_size` is the committed ISR (pending additions do not count here, as in Kafka).
    None means the append may go ahead.
    """
    if isr_size < effective_min_insync(min_insync, replication_factor):
        return ErrorCode.not_enough_replicas
    return None


def completion(
    batch_last_offset: int,
    high_watermark: int,
    maximal_isr_size: int,
    min_insync: int,
    *,
    replication_factor: int | None = None,
    is_leader: bool = True,
) -> ProduceWaitStatus:
    """Kafka's `checkEnoughReplicasReachOffset(batch_last_offset + 1)` for one partition.

    - not the leader any more: done with NOT_LEADER_OR_FOLLOWER;
    - high watermark past the batch and maximal ISR >= the effective minimum: done, NONE;
    - high watermark past the batch but the maximal ISR below it: done,
      NOT_ENOUGH_REPLICAS_AFTER_APPEND;
    - otherwise pending.
    """
    if not is_leader:
        return ProduceWaitStatus(ProduceWaitState.DONE, ErrorCode.not_leader_or_follower)
    if high_watermark >= batch_last_offset + 1:
        if effective_min_insync(min_insync, replication_factor) <= maximal_isr_size:
            return ProduceWaitStatus(ProduceWaitState.DONE, ErrorCode.none)
        return ProduceWaitStatus(ProduceWaitState.DONE, ErrorCode.not_enough_replicas_after_append)
    return PENDING


def expired(status: ProduceWaitStatus) -> ProduceWaitStatus:
    """The answer when the produce's timeout fires: a pending wait ends in REQUEST_TIMED_OUT."""
    if status.is_done:
        return status
    return ProduceWaitStatus(ProduceWaitState.DONE, ErrorCode.request_timed_out)
