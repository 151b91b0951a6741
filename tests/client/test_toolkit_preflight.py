"""Preflight reads the cluster with the admin API and says what a guarantee cannot promise."""

from __future__ import annotations

import logging

import pytest
from toolkit_helpers import create_topic, unique

from odradek.broker.server import Broker
from odradek.client import Guarantee, Processor, Severity, preflight
from odradek.client.preflight import ClusterFacts, TopicFacts, assess


def test_exactly_once_on_one_replica_is_not_ok(odradek_broker: Broker) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("payments"))
    report = preflight(bootstrap, [topic], "exactly-once")
    assert not report.ok
    text = "\n".join(report.messages)
    assert f"{topic}: replication.factor=1: every acknowledged write rests on one disk" in text
    assert "min.insync.replicas=1" in text
    assert "the cluster has 1 broker(s)" in text
    assert "transaction.state.log.replication.factor=1" in text
    assert all(f.severity is Severity.ERROR for f in report.findings if f.subject == topic)


def test_the_same_topic_is_advice_only_for_at_least_once(odradek_broker: Broker) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("notifications"))
    report = preflight(bootstrap, [topic], Guarantee.AT_LEAST_ONCE)
    assert report.ok
    assert any("replication.factor=1" in str(f) for f in report.findings)
    assert all(f.severity is Severity.WARNING for f in report.findings)


def test_at_most_once_asks_nothing_of_the_topic(odradek_broker: Broker) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("logs"))
    report = preflight(bootstrap, [topic], "at-most-once")
    assert report.ok
    assert report.findings == ()


def test_min_insync_replicas_above_the_in_sync_replicas_refuses_writes(
    odradek_broker: Broker,
) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("strict"), **{"min.insync.replicas": "2"})
    report = preflight(bootstrap, [topic], "at-least-once")
    assert not report.ok
    assert any(
        "fewer than min.insync.replicas=2: acks=all writes are refused now" in str(f)
        for f in report.findings
    )


def test_a_missing_topic_is_reported(odradek_broker: Broker) -> None:
    report = preflight(odradek_broker.bootstrap_servers, ["nowhere"], "at-least-once")
    assert any(f.subject == "nowhere" and "does not exist" in f.message for f in report.findings)


def test_a_well_replicated_cluster_is_ok_for_exactly_once() -> None:
    cluster = ClusterFacts(
        broker_count=3,
        broker_configs={
            "transaction.state.log.replication.factor": "3",
            "transaction.state.log.min.isr": "2",
        },
        topics=(TopicFacts("orders", True, 3, 3, 2),),
    )
    assert assess(Guarantee.EXACTLY_ONCE, cluster) == []
    two = ClusterFacts(3, cluster.broker_configs, (TopicFacts("orders", True, 2, 2, 2),))
    (finding,) = assess(Guarantee.EXACTLY_ONCE, two)
    assert finding.severity is Severity.WARNING
    assert "one broker down" in finding.message
    unclean = ClusterFacts(3, {}, (TopicFacts("orders", True, 3, 3, 2, True),))
    assert any(
        "unclean.leader.election" in f.message for f in assess(Guarantee.AT_LEAST_ONCE, unclean)
    )


def test_the_processor_logs_the_findings_once(
    odradek_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("orders"))
    processor = Processor(
        bootstrap, unique("group"), [topic], "at-least-once", lambda message: None
    )
    with caplog.at_level(logging.WARNING, logger="odradek.client"):
        first = processor.run(idle_timeout=0.5)
        processor.run(idle_timeout=0.5)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("preflight")]
    assert len(logged) == len(first.preflight_findings) > 0
    assert any(f"{topic}: replication.factor=1" in line for line in logged)
