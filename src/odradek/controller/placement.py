"""Replica placement for new partitions: Kafka's rack-unaware round robin with a random start.

Kafka's `AdminUtils.assignReplicasToBrokersRackUnaware` (the placement ZooKeeper-era Kafka used
and KRaft's striped placer generalises): brokers sorted by id; partition p's first replica is
broker (start + p) mod n; the others follow at a shift that grows by one every n partitions, so
leaders and followers spread evenly. The start index and the first shift come from the injected
RNG, never from global randomness.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Rng(Protocol):
    """The randomness the controller may use (`random.Random` satisfies it)."""

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int: ...

    def getrandbits(self, k: int, /) -> int: ...


class InvalidReplicationFactor(Exception):  # noqa: N818 - Kafka's exception name
    """More replicas than usable brokers (INVALID_REPLICATION_FACTOR)."""


def _replica_index(first_index: int, shift: int, replica: int, brokers: int) -> int:
    return (first_index + 1 + (shift + replica) % (brokers - 1)) % brokers


def place_replicas(
    brokers: Sequence[int],
    num_partitions: int,
    replication_factor: int,
    rng: Rng,
    start_partition_id: int = 0,
) -> list[tuple[int, ...]]:
    """Replica lists for partitions `start_partition_id ..`, one per partition.

    Raises InvalidReplicationFactor when `replication_factor` exceeds the usable brokers.
    """
    ordered = sorted(brokers)
    count = len(ordered)
    if replication_factor <= 0:
        raise InvalidReplicationFactor("Replication factor must be larger than 0.")
    if count == 0:
        raise InvalidReplicationFactor("All brokers are currently fenced.")
    if replication_factor > count:
        raise InvalidReplicationFactor(
            f"The target replication factor of {replication_factor} cannot be reached because "
            f"only {count} broker(s) are registered."
        )
    start_index = rng.randrange(count)
    shift = rng.randrange(count)
    assignments: list[tuple[int, ...]] = []
    for partition_id in range(start_partition_id, start_partition_id + num_partitions):
        if partition_id > 0 and partition_id % count == 0:
            shift += 1
        first = (partition_id + start_index) % count
        replicas = [ordered[first]]
        replicas.extend(
            ordered[_replica_index(first, shift, replica, count)]
            for replica in range(replication_factor - 1)
        )
        assignments.append(tuple(replicas))
    return assignments
