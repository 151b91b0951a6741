"""The metadata image a broker builds by replaying the controller's log (Kafka's MetadataImage
and MetadataDelta).

A `MetadataImage` is an immutable snapshot: brokers (registrations, fenced or not), topics and
their partitions (replicas, ISR, leader, leader epoch, partition epoch, recovery state), configs,
finalized features and the producer-id counter, as of `offset`, the last record replayed. A
`MetadataDelta` collects the records of one batch on top of an image and `apply()`s them into
the next image; it also says what changed for one broker (`local_changes`: the partitions it now
leads, follows, or must delete), which is what a broker's replica manager acts on.

`partition_metadata` is what a broker answers in a Metadata response: the leader, leader epoch,
replicas, ISR, and the offline replicas — those on brokers that are fenced, unregistered, or
without the listener the client came in on (Kafka's KRaftMetadataCache.getOfflineReplicas).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from odradek.controller.cluster_control import (
    BrokerRegistration,
    MetadataReplayError,
    replay_registration_change,
)
from odradek.controller.partition_change import LeaderRecoveryState, PartitionRegistration
from odradek.controller.records import (
    BrokerRegistrationChangeRecord,
    ConfigRecord,
    ConfigResourceType,
    FeatureLevelRecord,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnregisterBrokerRecord,
)

TopicIdPartition = tuple[uuid.UUID, int]


@dataclass(frozen=True, slots=True)
class TopicImage:
    name: str
    topic_id: uuid.UUID
    partitions: Mapping[int, PartitionRegistration]


@dataclass(frozen=True, slots=True)
class PartitionMetadata:
    """One partition as a Metadata response states it."""

    topic: str
    topic_id: uuid.UUID
    partition_index: int
    leader_id: int
    leader_epoch: int
    replica_nodes: tuple[int, ...]
    isr_nodes: tuple[int, ...]
    offline_replicas: tuple[int, ...]
    leader_recovery_state: LeaderRecoveryState
    partition_epoch: int


@dataclass(frozen=True, slots=True)
class LocalReplicaChanges:
    """What a batch changed for one broker (Kafka's LocalReplicaChanges)."""

    leaders: Mapping[TopicIdPartition, PartitionRegistration]
    followers: Mapping[TopicIdPartition, PartitionRegistration]
    deletes: frozenset[TopicIdPartition]


@dataclass(frozen=True, slots=True)
class MetadataImage:
    """The cluster's metadata as of `offset` (-1: nothing replayed)."""

    offset: int = -1
    brokers: Mapping[int, BrokerRegistration] = field(default_factory=dict)
    topics_by_id: Mapping[uuid.UUID, TopicImage] = field(default_factory=dict)
    topics_by_name: Mapping[str, uuid.UUID] = field(default_factory=dict)
    configs: Mapping[tuple[int, str], Mapping[str, str]] = field(default_factory=dict)
    features: Mapping[str, int] = field(default_factory=dict)
    next_producer_id: int = 0

    def topic(self, name: str) -> TopicImage | None:
        topic_id = self.topics_by_name.get(name)
        return None if topic_id is None else self.topics_by_id[topic_id]

    def alive_brokers(self) -> tuple[BrokerRegistration, ...]:
        """Unfenced brokers, by id: the brokers a Metadata response lists."""
        return tuple(
            registration
            for _, registration in sorted(self.brokers.items())
            if not registration.fenced
        )

    def offline_replicas(
        self, partition: PartitionRegistration, listener: str | None = None
    ) -> tuple[int, ...]:
        """Replicas on brokers that are unregistered, fenced, or lack `listener`."""
        offline: list[int] = []
        for broker_id in partition.replicas:
            registration = self.brokers.get(broker_id)
            if (
                registration is None
                or registration.fenced
                or (
                    listener is not None
                    and all(endpoint.name != listener for endpoint in registration.listeners)
                )
            ):
                offline.append(broker_id)
        return tuple(offline)

    def partition_metadata(
        self, topic: str, partition_index: int, listener: str | None = None
    ) -> PartitionMetadata | None:
        image = self.topic(topic)
        if image is None:
            return None
        partition = image.partitions.get(partition_index)
        if partition is None:
            return None
        return PartitionMetadata(
            topic=topic,
            topic_id=image.topic_id,
            partition_index=partition_index,
            leader_id=partition.leader,
            leader_epoch=partition.leader_epoch,
            replica_nodes=partition.replicas,
            isr_nodes=partition.isr,
            offline_replicas=self.offline_replicas(partition, listener),
            leader_recovery_state=partition.leader_recovery_state,
            partition_epoch=partition.partition_epoch,
        )

    def replay(self, records: Iterable[tuple[MetadataRecord, int]]) -> MetadataImage:
        """The image after `(record, offset)` pairs, in log order."""
        delta = MetadataDelta(self)
        for record, offset in records:
            delta.replay(record, offset)
        return delta.apply()


class MetadataDelta:
    """Records on top of an image, applied together (Kafka's MetadataDelta)."""

    def __init__(self, image: MetadataImage) -> None:
        self.image = image
        self.offset = image.offset
        self._brokers: dict[int, BrokerRegistration] | None = None
        self._topics_by_name: dict[str, uuid.UUID] | None = None
        #: Topics created or changed in this delta: id -> (name, partitions).
        self._changed_topics: dict[uuid.UUID, tuple[str, dict[int, PartitionRegistration]]] = {}
        self._deleted_topics: dict[uuid.UUID, TopicImage] = {}
        self._changed_partitions: dict[TopicIdPartition, PartitionRegistration] = {}
        self._configs: dict[tuple[int, str], dict[str, str]] | None = None
        self._features: dict[str, int] | None = None
        self._next_producer_id = image.next_producer_id

    # -- replay ----------------------------------------------------------------------------

    def _broker_map(self) -> dict[int, BrokerRegistration]:
        if self._brokers is None:
            self._brokers = dict(self.image.brokers)
        return self._brokers

    def _names(self) -> dict[str, uuid.UUID]:
        if self._topics_by_name is None:
            self._topics_by_name = dict(self.image.topics_by_name)
        return self._topics_by_name

    def _topic(self, topic_id: uuid.UUID) -> tuple[str, dict[int, PartitionRegistration]]:
        changed = self._changed_topics.get(topic_id)
        if changed is not None:
            return changed
        existing = self.image.topics_by_id.get(topic_id)
        if existing is None or topic_id in self._deleted_topics:
            raise MetadataReplayError(f"no topic {topic_id}")
        changed = self._changed_topics[topic_id] = (existing.name, dict(existing.partitions))
        return changed

    def replay(self, record: MetadataRecord, offset: int) -> None:
        """Apply one record (MetadataReplayError if it contradicts the image)."""
        if isinstance(
            record, RegisterBrokerRecord | UnregisterBrokerRecord | BrokerRegistrationChangeRecord
        ):
            replay_registration_change(self._broker_map(), record)
        elif isinstance(record, TopicRecord):
            names = self._names()
            if record.name in names:
                raise MetadataReplayError(f"topic {record.name} exists")
            names[record.name] = record.topic_id
            self._changed_topics[record.topic_id] = (record.name, {})
        elif isinstance(record, PartitionRecord):
            _, partitions = self._topic(record.topic_id)
            partition = PartitionRegistration.from_record(record)
            partitions[record.partition_id] = partition
            self._changed_partitions[(record.topic_id, record.partition_id)] = partition
        elif isinstance(record, PartitionChangeRecord):
            _, partitions = self._topic(record.topic_id)
            current = partitions.get(record.partition_id)
            if current is None:
                raise MetadataReplayError(f"no partition {record.partition_id}")
            partition = current.merge(record)
            partitions[record.partition_id] = partition
            self._changed_partitions[(record.topic_id, record.partition_id)] = partition
        elif isinstance(record, RemoveTopicRecord):
            name, partitions = self._topic(record.topic_id)
            del self._changed_topics[record.topic_id]
            del self._names()[name]
            self._changed_partitions = {
                key: value
                for key, value in self._changed_partitions.items()
                if key[0] != record.topic_id
            }
            if record.topic_id in self.image.topics_by_id:
                self._deleted_topics[record.topic_id] = TopicImage(
                    name, record.topic_id, partitions
                )
            self._config_map().pop((ConfigResourceType.TOPIC, name), None)
        elif isinstance(record, ConfigRecord):
            configs = self._config_map()
            key = (record.resource_type, record.resource_name)
            values = configs.setdefault(key, {})
            if record.value is None:
                values.pop(record.name, None)
                if not values:
                    del configs[key]
            else:
                values[record.name] = record.value
        elif isinstance(record, ProducerIdsRecord):
            self._next_producer_id = record.next_producer_id
        elif isinstance(record, FeatureLevelRecord):
            features = self._feature_map()
            if record.feature_level == 0:
                features.pop(record.name, None)
            else:
                features[record.name] = record.feature_level
        self.offset = max(self.offset, offset)

    def _config_map(self) -> dict[tuple[int, str], dict[str, str]]:
        if self._configs is None:
            self._configs = {key: dict(values) for key, values in self.image.configs.items()}
        return self._configs

    def _feature_map(self) -> dict[str, int]:
        if self._features is None:
            self._features = dict(self.image.features)
        return self._features

    # -- results ---------------------------------------------------------------------------

    def apply(self) -> MetadataImage:
        """The image after every record replayed into this delta."""
        topics_by_id = dict(self.image.topics_by_id)
        for topic_id in self._deleted_topics:
            topics_by_id.pop(topic_id, None)
        for topic_id, (name, partitions) in self._changed_topics.items():
            topics_by_id[topic_id] = TopicImage(name, topic_id, partitions)
        image = self.image
        return MetadataImage(
            offset=self.offset,
            brokers=image.brokers if self._brokers is None else self._brokers,
            topics_by_id=topics_by_id,
            topics_by_name=image.topics_by_name
            if self._topics_by_name is None
            else self._topics_by_name,
            configs=image.configs if self._configs is None else self._configs,
            features=image.features if self._features is None else self._features,
            next_producer_id=self._next_producer_id,
        )

    def local_changes(self, broker_id: int) -> LocalReplicaChanges:
        """Partitions of `broker_id` this delta changed: now led by it, followed by it, or to
        delete (its topic was removed, or the broker is no longer a replica)."""
        leaders: dict[TopicIdPartition, PartitionRegistration] = {}
        followers: dict[TopicIdPartition, PartitionRegistration] = {}
        deletes: set[TopicIdPartition] = set()
        for topic_id, topic in self._deleted_topics.items():
            for partition_id, partition in topic.partitions.items():
                if broker_id in partition.replicas:
                    deletes.add((topic_id, partition_id))
        for key, partition in self._changed_partitions.items():
            if partition.leader == broker_id:
                leaders[key] = partition
            elif broker_id in partition.replicas:
                followers[key] = partition
            else:
                previous_topic = self.image.topics_by_id.get(key[0])
                previous = None if previous_topic is None else previous_topic.partitions.get(key[1])
                if previous is not None and broker_id in previous.replicas:
                    deletes.add(key)
        return LocalReplicaChanges(leaders, followers, frozenset(deletes))
