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


# -- decisions on a cluster (assess alone; the real 3-broker cluster is in tests/cluster) -------
EXACTLY_ONCE_BROKER = {
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "unclean.leader.election.enable": "false",
}


def cluster_facts(**changes: object) -> ClusterFacts:
    fields: dict[str, object] = {
        "broker_count": 3,
        "broker_configs": EXACTLY_ONCE_BROKER,
        "topics": (TopicFacts("orders", True, 3, 3, 2),),
        "broker_hosts": ("10.0.0.1", "10.0.0.2", "10.0.0.3"),
        "transaction_state_replicas": None,
    }
    fields.update(changes)
    return ClusterFacts(**fields)  # type: ignore[arg-type]


def messages(guarantee: Guarantee, facts: ClusterFacts) -> list[str]:
    return [str(f) for f in assess(guarantee, facts)]


def test_exactly_once_on_rf3_min_insync2_on_three_hosts_has_no_findings() -> None:
    assert assess(Guarantee.EXACTLY_ONCE, cluster_facts()) == []
    odradek = {**EXACTLY_ONCE_BROKER, "odradek.acks.all.fsync": "false"}
    # min.insync.replicas=2: acks=all never rests on one replica, so fsync=false exposes nothing.
    assert assess(Guarantee.EXACTLY_ONCE, cluster_facts(broker_configs=odradek)) == []


def test_the_transaction_log_needs_two_replicas_and_min_isr_two() -> None:
    existing = cluster_facts(transaction_state_replicas=1)
    (finding,) = assess(Guarantee.EXACTLY_ONCE, existing)
    assert finding.severity is Severity.ERROR
    assert finding.subject == "__transaction_state"
    assert "has 1 replica(s)" in finding.message
    assert assess(Guarantee.EXACTLY_ONCE, cluster_facts(transaction_state_replicas=3)) == []
    loose = {**EXACTLY_ONCE_BROKER, "transaction.state.log.min.isr": "1"}
    (finding,) = assess(Guarantee.EXACTLY_ONCE, cluster_facts(broker_configs=loose))
    assert finding.severity is Severity.ERROR
    assert "transaction.state.log.min.isr=1" in finding.message
    # Only exactly-once uses transactions.
    assert assess(Guarantee.AT_LEAST_ONCE, cluster_facts(broker_configs=loose)) == []


def test_unclean_election_on_the_brokers_is_reported() -> None:
    unclean = {**EXACTLY_ONCE_BROKER, "unclean.leader.election.enable": "true"}
    (finding,) = assess(Guarantee.AT_LEAST_ONCE, cluster_facts(broker_configs=unclean))
    assert finding.subject == "cluster"
    assert "unclean.leader.election.enable=true on the brokers" in finding.message
    assert assess(Guarantee.AT_MOST_ONCE, cluster_facts(broker_configs=unclean)) == []


def test_odradek_without_fsync_exposes_leader_only_isr_writes() -> None:
    topic = (TopicFacts("events", True, 3, 3, 1),)
    unsynced = {**EXACTLY_ONCE_BROKER, "odradek.acks.all.fsync": "false"}
    found = messages(Guarantee.AT_LEAST_ONCE, cluster_facts(broker_configs=unsynced, topics=topic))
    assert found == [
        "warning: events: odradek.acks.all.fsync=false and min.insync.replicas=1: when the ISR "
        "is only the leader, acks=all is acknowledged before the write reaches the disk, so a "
        "power loss or kernel crash of that broker's machine loses acknowledged writes (a "
        "process crash does not)"
    ]
    synced = {**EXACTLY_ONCE_BROKER, "odradek.acks.all.fsync": "true"}
    assert (
        messages(Guarantee.AT_LEAST_ONCE, cluster_facts(broker_configs=synced, topics=topic)) == []
    )
    # Not Odradek (no odradek.* config reported): the setting does not exist there.
    assert messages(Guarantee.AT_LEAST_ONCE, cluster_facts(topics=topic)) == []


def test_brokers_sharing_one_host_share_its_power_loss() -> None:
    same_host = cluster_facts(broker_hosts=("127.0.0.1",) * 3)
    report = assess(Guarantee.EXACTLY_ONCE, same_host)
    (finding,) = report
    assert finding.severity is Severity.WARNING
    assert "all 3 brokers are on one host (127.0.0.1)" in finding.message
    single = cluster_facts(broker_count=1, broker_hosts=("127.0.0.1",))
    assert not any("one host" in m for m in messages(Guarantee.AT_LEAST_ONCE, single))
