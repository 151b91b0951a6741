"""KIP-848 online migration: a classic group becomes a consumer group and back.

Kafka's rules (GroupMetadataManager.validateOnlineUpgrade / convertToConsumerGroup and
validateOnlineDowngrade... / convertToClassicGroup, `group.consumer.migration.policy`):

- Upgrade: the first ConsumerGroupHeartbeat member joining a non-empty classic group converts
  it, if the policy allows upgrades, the group uses the "consumer" protocol type and it is not
  larger than the consumer group size limit. The classic members stay, on the classic
  protocol, each Stable at the classic generation with its last assignment as both current
  and target assignment; group epoch = assignment epoch = the generation.
- Downgrade: when the members leaving (or timing out) are the last ones on the consumer
  protocol, the rest become a classic group at generation = group epoch, each member's target
  assignment as its classic assignment, and a rebalance starts; if the policy allows
  downgrades, at least one member stays and the classic group size limit holds.

The conversions here only build the other group; the coordinator writes the records and swaps
the groups.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from odradek.coordinator.group.assignors import TopicInfo
from odradek.coordinator.group.classic import ClassicGroup, ClassicMember
from odradek.coordinator.group.consumer import ConsumerGroup, ConsumerMember, Partitions
from odradek.coordinator.group.consumer_records import ClassicMemberMetadata
from odradek.coordinator.group.embedded_protocol import (
    PROTOCOL_TYPE,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    subscription_version,
)
from odradek.coordinator.group.state import ClassicGroupState, MemberState


def to_topic_ids(
    partitions: Mapping[str, frozenset[int]], topics: Mapping[str, TopicInfo]
) -> Partitions:
    """Named partitions -> by topic id; topics that do not exist (any more) are dropped."""
    return {
        topics[name].topic_id: numbers
        for name, numbers in partitions.items()
        if name in topics and numbers
    }


def to_topic_names(
    partitions: Mapping[uuid.UUID, frozenset[int]], names: Mapping[uuid.UUID, str]
) -> dict[str, frozenset[int]]:
    return {
        names[topic_id]: numbers for topic_id, numbers in partitions.items() if topic_id in names
    }


def classic_group_uses_consumer_protocol(group: ClassicGroup) -> bool:
    """Kafka's ClassicGroup.usesConsumerGroupProtocol."""
    return group.protocol_type == PROTOCOL_TYPE


def to_consumer_group(
    classic: ClassicGroup, topics: Mapping[str, TopicInfo], now_ms: int, new_group: ConsumerGroup
) -> ConsumerGroup:
    """Fill `new_group` (empty) from `classic` (Kafka's ConsumerGroup.fromClassicGroup).
    Raises MalformedProtocolError if a member's subscription or assignment does not parse."""
    group = new_group
    group.group_epoch = group.assignment_epoch = classic.generation_id
    group.state_timestamp_ms = now_ms
    for member in classic.members.values():
        metadata = member.metadata(classic.protocol_name)
        if not metadata and member.protocols:
            metadata = member.protocols[0][1]
        subscription = decode_subscription(metadata)
        assigned = to_topic_ids(decode_assignment(member.assignment), topics)
        group.members[member.member_id] = ConsumerMember(
            member_id=member.member_id,
            instance_id=member.group_instance_id,
            rack_id=subscription.rack_id,
            client_id=member.client_id,
            client_host=member.client_host,
            rebalance_timeout_ms=member.rebalance_timeout_ms,
            subscribed_topic_names=frozenset(subscription.topics),
            member_epoch=classic.generation_id,
            previous_member_epoch=classic.generation_id,
            state=MemberState.STABLE,
            assigned=assigned,
            session_deadline_ms=now_ms + member.session_timeout_ms,
            classic=ClassicMemberMetadata(member.session_timeout_ms, member.protocols),
        )
        group.target[member.member_id] = dict(assigned)
    return group


def to_classic_group(
    consumer: ConsumerGroup,
    leaving: set[str],
    names: Mapping[uuid.UUID, str],
    now_ms: int,
) -> ClassicGroup:
    """The classic group of `consumer`'s members but `leaving` (Kafka's
    ClassicGroup.fromConsumerGroup): Stable at generation = group epoch, each member's
    target assignment as its assignment, written with its subscription's version."""
    group = ClassicGroup(consumer.group_id, now_ms)
    group.state = ClassicGroupState.STABLE
    group.generation_id = consumer.group_epoch
    group.protocol_type = PROTOCOL_TYPE
    for member_id, member in consumer.members.items():
        if member_id in leaving or member.classic is None:
            continue
        group.add_member(
            ClassicMember(
                member_id=member_id,
                group_instance_id=member.instance_id,
                client_id=member.client_id,
                client_host=member.client_host,
                rebalance_timeout_ms=member.rebalance_timeout_ms,
                session_timeout_ms=member.classic.session_timeout_ms,
                protocol_type=PROTOCOL_TYPE,
                protocols=member.classic.protocols,
                heartbeat_deadline_ms=now_ms + member.classic.session_timeout_ms,
            )
        )
    group.protocol_name = group.select_protocol()
    for member_id, classic_member in group.members.items():
        target = to_topic_names(consumer.target.get(member_id, {}), names)
        version = subscription_version(classic_member.metadata(group.protocol_name))
        classic_member.assignment = encode_assignment(target, version)
    return group
