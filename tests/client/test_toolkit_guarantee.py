"""The one switch: the librdkafka settings of each guarantee, and the errors for bad input."""

from __future__ import annotations

import pytest

from odradek.client import (
    CommitPoint,
    Guarantee,
    IncompatibleSettingsError,
    Processor,
    SqliteSink,
    TopicRequirements,
    UnknownGuaranteeError,
)


def test_constructible_from_the_three_names() -> None:
    assert Guarantee("at-most-once") is Guarantee.AT_MOST_ONCE
    assert Guarantee("at-least-once") is Guarantee.AT_LEAST_ONCE
    assert Guarantee("exactly-once") is Guarantee.EXACTLY_ONCE
    assert Guarantee("EXACTLY_ONCE") is Guarantee.EXACTLY_ONCE
    assert str(Guarantee.AT_LEAST_ONCE) == "at-least-once"


def test_an_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(UnknownGuaranteeError, match=r"'twice'.*'at-most-once'.*'exactly-once'"):
        Guarantee("twice")
    assert issubclass(UnknownGuaranteeError, ValueError)


def test_at_most_once() -> None:
    guarantee = Guarantee.AT_MOST_ONCE
    assert guarantee.producer_config() == {
        "acks": "0",
        "retries": 0,
        "enable.idempotence": False,
    }
    consumer = guarantee.consumer_config()
    assert consumer["enable.auto.commit"] is False
    assert "isolation.level" not in consumer
    assert guarantee.commit_point is CommitPoint.BEFORE_PROCESSING
    assert guarantee.topic_requirements() == TopicRequirements(1, 1)


def test_at_least_once() -> None:
    guarantee = Guarantee.AT_LEAST_ONCE
    producer = guarantee.producer_config()
    assert producer["acks"] == "all"
    assert int(producer["retries"]) > 0
    consumer = guarantee.consumer_config()
    assert consumer["enable.auto.commit"] is False
    assert consumer["auto.offset.reset"] == "earliest"
    assert guarantee.commit_point is CommitPoint.AFTER_PROCESSING
    assert guarantee.topic_requirements().replication_factor >= 2


def test_exactly_once() -> None:
    guarantee = Guarantee.EXACTLY_ONCE
    producer = guarantee.producer_config("billing-0")
    assert producer["enable.idempotence"] is True
    assert producer["acks"] == "all"
    assert producer["transactional.id"] == "billing-0"
    assert "transactional.id" not in guarantee.producer_config()
    consumer = guarantee.consumer_config()
    assert consumer["isolation.level"] == "read_committed"
    assert consumer["enable.auto.commit"] is False
    assert guarantee.commit_point is CommitPoint.ATOMIC_WITH_OUTPUT
    requirements = guarantee.topic_requirements()
    assert requirements.min_insync_replicas >= 2
    assert requirements.replication_factor > requirements.min_insync_replicas


@pytest.mark.parametrize("name", ["at-most-once", "at-least-once"])
def test_a_transactional_id_needs_exactly_once(name: str) -> None:
    with pytest.raises(IncompatibleSettingsError, match="needs exactly-once"):
        Guarantee(name).producer_config("tx-1")


def _processor(guarantee: str, **arguments: object) -> Processor:
    return Processor("127.0.0.1:9", "group", ["in"], guarantee, print, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("guarantee", "arguments", "message"),
    [
        ("exactly-once", {}, "needs an output topic .* or a sink"),
        ("at-least-once", {"sink": SqliteSink(":memory:"), "output_topic": "out"}, "not both"),
        ("at-least-once", {"config": {"enable.auto.commit": True}}, "commits offsets itself"),
        ("at-least-once", {"config": {"acks": "0"}}, "acks=0 cannot give at-least-once"),
        ("exactly-once", {"output_topic": "out", "config": {"acks": "1"}}, "acks=1"),
        (
            "exactly-once",
            {"output_topic": "out", "config": {"isolation.level": "read_uncommitted"}},
            "read_committed",
        ),
        (
            "exactly-once",
            {"output_topic": "out", "config": {"enable.idempotence": False}},
            "enable.idempotence=true",
        ),
        ("at-least-once", {"output_topic": "in"}, "also an input topic"),
    ],
)
def test_impossible_combinations_are_refused(
    guarantee: str, arguments: dict[str, object], message: str
) -> None:
    with pytest.raises(IncompatibleSettingsError, match=message):
        _processor(guarantee, **arguments)


def test_an_unknown_guarantee_is_refused_by_the_processor() -> None:
    with pytest.raises(UnknownGuaranteeError):
        _processor("at-least-twice")


def test_config_is_routed_to_the_client_it_belongs_to() -> None:
    processor = _processor(
        "at-least-once",
        config={"session.timeout.ms": 1500, "linger.ms": 5, "client.id": "x", "producer.acks": 1},
    )
    consumer, producer = processor.consumer_config(), processor.producer_config()
    assert consumer["session.timeout.ms"] == 1500
    assert "session.timeout.ms" not in producer
    assert producer["linger.ms"] == 5
    assert producer["acks"] == 1
    assert "linger.ms" not in consumer
    assert consumer["client.id"] == producer["client.id"] == "x"
    assert consumer["group.id"] == "group"


def test_the_consumer_reconnect_backoff_defaults_to_kafkas_and_can_be_overridden() -> None:
    # librdkafka spaces a joining consumer's first cluster connection by half of it.
    assert _processor("at-least-once").consumer_config()["reconnect.backoff.ms"] == 50
    overridden = _processor("at-least-once", config={"reconnect.backoff.ms": 250})
    assert overridden.consumer_config()["reconnect.backoff.ms"] == 250
