"""A replicated partition as this broker hosts it (Kafka's Partition, as ReplicaManager holds it).

Shared by the replica manager (leader side, produce waits), the replica fetchers (follower
side) and the handlers that route client requests to it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from kio.schema.errors import ErrorCode

from odradek.replication.partition_state import PartitionState
from odradek.storage.log import PartitionLog

TopicPartition = tuple[str, int]


@dataclass(eq=False)
class HostedPartition:
    """One replicated partition on this broker: its log, its replication state, and the
    acks=all produces waiting on its high watermark (batch last offset, future of the error)."""

    topic: str
    topic_id: uuid.UUID
    index: int
    log: PartitionLog
    state: PartitionState
    waits: list[tuple[int, asyncio.Future[ErrorCode]]] = field(default_factory=list)
    flush_scheduled: bool = False
