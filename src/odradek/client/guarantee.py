"""The one switch: a `Guarantee` and the producer, consumer and topic settings it stands for.

The settings are the seed's cheat-sheet as librdkafka property dicts. Where the seed is loose,
Odradek follows the classic definitions: at-most-once commits *before* processing (a crash loses
the batch, never repeats it) and at-least-once commits after.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# librdkafka property values are strings, ints or booleans.
ConfigValue = str | int | bool
Config = dict[str, ConfigValue]


class UnknownGuaranteeError(ValueError):
    """A guarantee name that is not one of the three."""


class IncompatibleSettingsError(ValueError):
    """A combination of settings that cannot honour the chosen guarantee."""


class CommitPoint(enum.Enum):
    """Where the consumer's position is committed relative to processing."""

    BEFORE_PROCESSING = "before processing"
    AFTER_PROCESSING = "after processing"
    ATOMIC_WITH_OUTPUT = "atomically with the output (a Kafka or database transaction)"


@dataclass(frozen=True, slots=True)
class TopicRequirements:
    """The replication a topic needs for a guarantee to mean what it says.

    `replication_factor` is the number of copies; `min_insync_replicas` the copies an
    `acks=all` write must reach before it is acknowledged.
    """

    replication_factor: int
    min_insync_replicas: int


class Guarantee(enum.Enum):
    """at-most-once | at-least-once | exactly-once.

    >>> Guarantee("exactly-once").consumer_config()["isolation.level"]
    'read_committed'
    """

    AT_MOST_ONCE = "at-most-once"
    AT_LEAST_ONCE = "at-least-once"
    EXACTLY_ONCE = "exactly-once"

    @classmethod
    def _missing_(cls, value: object) -> Guarantee:
        if isinstance(value, str):
            spelled = value.strip().lower().replace("_", "-").replace(" ", "-")
            for member in cls:
                if member.value == spelled:
                    return member
        choices = ", ".join(repr(member.value) for member in cls)
        raise UnknownGuaranteeError(f"unknown guarantee {value!r}: choose one of {choices}")

    @classmethod
    def parse(cls, value: Guarantee | str) -> Guarantee:
        """A `Guarantee` from itself or from its name."""
        return value if isinstance(value, Guarantee) else cls(value)

    def __str__(self) -> str:
        return self.value

    @property
    def commit_point(self) -> CommitPoint:
        return _COMMIT_POINTS[self]

    @property
    def transactional(self) -> bool:
        return self is Guarantee.EXACTLY_ONCE

    def producer_config(self, transactional_id: str | None = None) -> Config:
        """librdkafka producer properties for this guarantee.

        Only exactly-once takes a `transactional.id`: transactions need `acks=all` and the
        idempotent producer, which the other two guarantees do not ask for.
        """
        if self is Guarantee.AT_MOST_ONCE:
            config: Config = {"acks": "0", "retries": 0, "enable.idempotence": False}
        elif self is Guarantee.AT_LEAST_ONCE:
            # Retries can duplicate a write whose acknowledgement was lost; the toolkit's message-id
            # header lets an idempotent consumer drop those. Idempotence stays off so at-least-once
            # works on brokers without idempotent-producer support.
            config = {
                "acks": "all",
                "retries": 2_147_483_647,
                "enable.idempotence": False,
                "delivery.timeout.ms": 120_000,
            }
        else:
            config = {
                "enable.idempotence": True,
                "acks": "all",
                "retries": 2_147_483_647,
                "max.in.flight.requests.per.connection": 5,
            }
        if transactional_id is not None:
            if self is not Guarantee.EXACTLY_ONCE:
                raise IncompatibleSettingsError(
                    f"a transactional.id needs exactly-once; {self.value} produces without "
                    "transactions (acks="
                    f"{config['acks']}, no idempotent producer)"
                )
            if not transactional_id:
                raise IncompatibleSettingsError("transactional.id must not be empty")
            config["transactional.id"] = transactional_id
        return config

    def consumer_config(self) -> Config:
        """librdkafka consumer properties for this guarantee.

        Offsets are never auto-committed: the `Processor` commits them itself, before processing
        (at-most-once), after processing (at-least-once) or atomically with the output
        (exactly-once). A new group starts from the earliest offset so nothing produced before
        its first join is skipped.
        """
        config: Config = {
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }
        if self is Guarantee.EXACTLY_ONCE:
            config["isolation.level"] = "read_committed"
        return config

    def topic_requirements(self) -> TopicRequirements:
        """The replication.factor and min.insync.replicas this guarantee needs from a topic.

        at-most-once needs nothing (`acks=0` waits for no replica); at-least-once wants a second
        copy (the seed: replication.factor>=2 recommended); exactly-once wants
        min.insync.replicas>=2 and one replica more, so one broker can fail without stopping
        writes.
        """
        return _TOPIC_REQUIREMENTS[self]


_COMMIT_POINTS = {
    Guarantee.AT_MOST_ONCE: CommitPoint.BEFORE_PROCESSING,
    Guarantee.AT_LEAST_ONCE: CommitPoint.AFTER_PROCESSING,
    Guarantee.EXACTLY_ONCE: CommitPoint.ATOMIC_WITH_OUTPUT,
}

_TOPIC_REQUIREMENTS = {
    Guarantee.AT_MOST_ONCE: TopicRequirements(replication_factor=1, min_insync_replicas=1),
    Guarantee.AT_LEAST_ONCE: TopicRequirements(replication_factor=2, min_insync_replicas=1),
    Guarantee.EXACTLY_ONCE: TopicRequirements(replication_factor=3, min_insync_replicas=2),
}
