"""Server-side assignors of the KIP-848 consumer protocol: `uniform` and `range`.

Input: each member's subscribed topics, each topic's id and partition count, and the previous
target assignment (for stickiness). Output: member id -> {topic id: partitions}. Every partition
of a subscribed topic goes to exactly one subscribed member.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

Assignment = dict[str, dict[uuid.UUID, frozenset[int]]]


@dataclass(frozen=True, slots=True)
class TopicInfo:
    topic_id: uuid.UUID
    partitions: int


class UnknownAssignorError(ValueError):
    pass


def _eligible(
    subscriptions: Mapping[str, frozenset[str]], topics: Mapping[str, TopicInfo]
) -> dict[tuple[uuid.UUID, int], list[str]]:
    """Every partition of a subscribed, existing topic -> sorted subscribed members."""
    partitions: dict[tuple[uuid.UUID, int], list[str]] = {}
    for name in sorted({topic for subscribed in subscriptions.values() for topic in subscribed}):
        info = topics.get(name)
        if info is None:
            continue
        members = sorted(
            member for member, subscribed in subscriptions.items() if name in subscribed
        )
        for partition in range(info.partitions):
            partitions[(info.topic_id, partition)] = members
    return partitions


def _to_assignment(
    members: Mapping[str, object], owners: Mapping[tuple[uuid.UUID, int], str]
) -> Assignment:
    result: dict[str, dict[uuid.UUID, set[int]]] = {member: {} for member in members}
    for (topic_id, partition), member in owners.items():
        result[member].setdefault(topic_id, set()).add(partition)
    return {
        member: {topic_id: frozenset(parts) for topic_id, parts in topics.items()}
        for member, topics in result.items()
    }


def uniform(
    subscriptions: Mapping[str, frozenset[str]],
    topics: Mapping[str, TopicInfo],
    previous: Assignment,
) -> Assignment:
    """Balanced (counts within one where subscriptions allow) and sticky: a partition stays
    with its previous owner unless moving it is needed for balance."""
    eligible = _eligible(subscriptions, topics)
    owners: dict[tuple[uuid.UUID, int], str] = {}
    counts = dict.fromkeys(subscriptions, 0)
    for member, assigned in sorted(previous.items()):
        if member not in subscriptions:
            continue
        for topic_id, partitions in assigned.items():
            for partition in sorted(partitions):
                key = (topic_id, partition)
                if key in eligible and key not in owners and member in eligible[key]:
                    owners[key] = member
                    counts[member] += 1
    # Unowned partitions to the least loaded eligible member.
    for key, members in eligible.items():
        if key not in owners and members:
            chosen = min(members, key=lambda member: (counts[member], member))
            owners[key] = chosen
            counts[chosen] += 1
    # Move partitions from the most to the least loaded until no move improves balance.
    moved = True
    while moved:
        moved = False
        for key in sorted(owners, key=lambda key: (-counts[owners[key]], key)):
            owner = owners[key]
            target = min(eligible[key], key=lambda member: (counts[member], member))
            if counts[target] + 1 < counts[owner]:
                owners[key] = target
                counts[owner] -= 1
                counts[target] += 1
                moved = True
    return _to_assignment(subscriptions, owners)


def range_(
    subscriptions: Mapping[str, frozenset[str]],
    topics: Mapping[str, TopicInfo],
    previous: Assignment,
) -> Assignment:
    """Per topic, contiguous ranges over the members subscribed to it, sorted by member id;
    the first `partitions % members` members get one more (Kafka's RangeAssignor)."""
    owners: dict[tuple[uuid.UUID, int], str] = {}
    for name in sorted({topic for subscribed in subscriptions.values() for topic in subscribed}):
        info = topics.get(name)
        if info is None:
            continue
        members = sorted(
            member for member, subscribed in subscriptions.items() if name in subscribed
        )
        quota, extra = divmod(info.partitions, len(members))
        start = 0
        for index, member in enumerate(members):
            count = quota + (1 if index < extra else 0)
            for partition in range(start, start + count):
                owners[(info.topic_id, partition)] = member
            start += count
    return _to_assignment(subscriptions, owners)


ASSIGNORS = {"uniform": uniform, "range": range_}


def assign(
    name: str,
    subscriptions: Mapping[str, frozenset[str]],
    topics: Mapping[str, TopicInfo],
    previous: Assignment,
) -> Assignment:
    try:
        assignor = ASSIGNORS[name]
    except KeyError:
        raise UnknownAssignorError(name) from None
    return assignor(subscriptions, topics, previous)
