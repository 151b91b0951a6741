"""Preflight: what a guarantee cannot promise on this cluster, read with the admin API.

Preflight advises; it never refuses to run. `ok` is false when a finding is an error: the
guarantee, as configured, does not hold on this cluster (for example exactly-once on a topic
whose every write rests on one disk).

What is read, all through confluent-kafka's AdminClient (Metadata and DescribeConfigs): the
brokers and their hosts, each topic's replicas, ISR, `min.insync.replicas` and
`unclean.leader.election.enable`, `__transaction_state`'s replicas when it exists, and one
broker's configs. Odradek is told apart from other Kafka brokers by that broker resource: only
Odradek reports `odradek.acks.all.fsync` (Kafka and Redpanda do not know the name).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AdminClient,
    ConfigResource,
    ResourceType,
)

from odradek.client.guarantee import Guarantee

TRANSACTION_STATE_TOPIC = "__transaction_state"


class Severity(enum.Enum):
    ERROR = "error"  # the guarantee does not hold here
    WARNING = "warning"  # it holds, with a weaker margin than the guarantee recommends


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    subject: str  # a topic name, or "cluster"
    message: str

    def __str__(self) -> str:
        return f"{self.severity.value}: {self.subject}: {self.message}"


@dataclass(frozen=True, slots=True)
class PreflightReport:
    guarantee: Guarantee
    topics: tuple[str, ...]
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    @property
    def messages(self) -> tuple[str, ...]:
        return tuple(str(f) for f in self.findings)

    def __str__(self) -> str:
        head = f"preflight for {self.guarantee.value} on {', '.join(self.topics)}: " + (
            "ok" if self.ok else "cannot be honoured"
        )
        return "\n".join([head, *(f"  - {f}" for f in self.findings)])


@dataclass(frozen=True, slots=True)
class TopicFacts:
    """What preflight learned about one topic."""

    name: str
    exists: bool
    replication_factor: int = 0
    smallest_isr: int = 0
    min_insync_replicas: int = 1
    unclean_leader_election: bool = False


@dataclass(frozen=True, slots=True)
class ClusterFacts:
    """What preflight learned about the cluster: broker count, one broker's configs, the topics,
    the brokers' hosts and the replica count of `__transaction_state` (None: not created yet)."""

    broker_count: int
    broker_configs: Mapping[str, str]
    topics: tuple[TopicFacts, ...]
    broker_hosts: tuple[str, ...] = ()
    transaction_state_replicas: int | None = None

    @property
    def is_odradek(self) -> bool:
        """The broker reports Odradek's own `odradek.acks.all.fsync` setting."""
        return "odradek.acks.all.fsync" in self.broker_configs

    @property
    def acks_all_fsync(self) -> bool:
        """Odradek fdatasyncs before acknowledging acks=all on a leader-only ISR (only
        meaningful when `is_odradek`)."""
        return self.broker_configs.get("odradek.acks.all.fsync", "true").lower() == "true"


def preflight(
    bootstrap: str,
    topics: Iterable[str],
    guarantee: Guarantee | str,
    *,
    timeout: float = 10.0,
    admin_config: Mapping[str, Any] | None = None,
) -> PreflightReport:
    """Read the cluster's broker and topic configs and say what `guarantee` cannot promise."""
    guarantee = Guarantee.parse(guarantee)
    names = tuple(dict.fromkeys(topics))
    admin = AdminClient({"bootstrap.servers": bootstrap, **(admin_config or {})})
    facts = read_cluster(admin, names, timeout)
    return PreflightReport(guarantee, names, tuple(assess(guarantee, facts)))


def read_cluster(admin: AdminClient, topics: tuple[str, ...], timeout: float) -> ClusterFacts:
    metadata = admin.list_topics(timeout=timeout)
    broker_ids = sorted(metadata.brokers)
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics if t in metadata.topics]
    if broker_ids:
        resources.append(ConfigResource(ResourceType.BROKER, str(broker_ids[0])))
    configs: dict[tuple[str, str], dict[str, str]] = {}
    if resources:
        for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
            entries = future.result(timeout)
            kind = "broker" if resource.restype == ResourceType.BROKER else "topic"
            configs[(kind, resource.name)] = {
                name: entry.value for name, entry in entries.items() if entry.value is not None
            }
    broker_configs = configs.get(("broker", str(broker_ids[0])), {}) if broker_ids else {}
    transaction_state = metadata.topics.get(TRANSACTION_STATE_TOPIC)
    transaction_state_replicas = (
        min((len(p.replicas) for p in transaction_state.partitions.values()), default=0)
        if transaction_state is not None and transaction_state.error is None
        else None
    )
    facts = []
    for name in topics:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None:
            facts.append(TopicFacts(name, exists=False))
            continue
        topic_configs = configs.get(("topic", name), {})
        partitions = list(topic.partitions.values())
        facts.append(
            TopicFacts(
                name,
                exists=True,
                replication_factor=min((len(p.replicas) for p in partitions), default=0),
                smallest_isr=min((len(p.isrs) for p in partitions), default=0),
                min_insync_replicas=int(topic_configs.get("min.insync.replicas", "1")),
                unclean_leader_election=topic_configs.get(
                    "unclean.leader.election.enable", "false"
                ).lower()
                == "true",
            )
        )
    return ClusterFacts(
        len(broker_ids),
        broker_configs,
        tuple(facts),
        broker_hosts=tuple(str(metadata.brokers[b].host) for b in broker_ids),
        transaction_state_replicas=transaction_state_replicas,
    )


def assess(guarantee: Guarantee, cluster: ClusterFacts) -> list[Finding]:
    """The findings for `guarantee` on `cluster`: plain synchronous logic, tested without Kafka."""
    findings: list[Finding] = []
    needs = guarantee.topic_requirements()
    if guarantee is Guarantee.AT_MOST_ONCE:
        # acks=0 waits for no replica: replication cannot protect what was never acknowledged.
        for topic in cluster.topics:
            if not topic.exists:
                findings.append(_missing(topic.name, cluster))
        return findings

    if cluster.broker_count < needs.replication_factor:
        findings.append(
            Finding(
                Severity.WARNING,
                "cluster",
                f"the cluster has {cluster.broker_count} broker(s); {guarantee.value} wants "
                f"{needs.replication_factor} copies of every partition, so no topic here can have "
                "them",
            )
        )
    findings.extend(_assess_cluster(cluster))
    for topic in cluster.topics:
        if not topic.exists:
            findings.append(_missing(topic.name, cluster))
            continue
        findings.extend(_assess_topic(guarantee, topic))
        if cluster.is_odradek and not cluster.acks_all_fsync:
            findings.extend(_assess_unsynced_acks(topic))
    if guarantee is Guarantee.EXACTLY_ONCE:
        findings.extend(_assess_transaction_log(cluster))
    return findings


def _assess_cluster(cluster: ClusterFacts) -> list[Finding]:
    findings = []
    if cluster.broker_configs.get("unclean.leader.election.enable", "false").lower() == "true":
        findings.append(
            Finding(
                Severity.WARNING,
                "cluster",
                "unclean.leader.election.enable=true on the brokers: every topic without its own "
                "setting may elect a lagging replica and drop acknowledged writes",
            )
        )
    hosts = set(cluster.broker_hosts)
    if cluster.broker_count >= 2 and len(hosts) == 1:
        findings.append(
            Finding(
                Severity.WARNING,
                "cluster",
                f"all {cluster.broker_count} brokers are on one host ({hosts.pop()}): acks=all "
                "is acknowledged once every in-sync replica has the write in memory (Kafka does "
                "not fsync per write), so replicas protect against a broker crash here but a "
                "power loss or kernel crash of that host can lose acknowledged writes",
            )
        )
    return findings


def _assess_unsynced_acks(topic: TopicFacts) -> list[Finding]:
    """Odradek with `odradek.acks.all.fsync=false`: acks=all on a leader-only ISR is answered
    from the page cache. `min.insync.replicas>=2` never lets acks=all rest on one replica, so
    the setting changes nothing there; below it, one machine's power loss loses writes."""
    if topic.min_insync_replicas >= 2:
        return []
    return [
        Finding(
            Severity.WARNING,
            topic.name,
            f"odradek.acks.all.fsync=false and min.insync.replicas={topic.min_insync_replicas}: "
            "when the ISR is only the leader, acks=all is acknowledged before the write reaches "
            "the disk, so a power loss or kernel crash of that broker's machine loses "
            "acknowledged writes (a process crash does not)",
        )
    ]


def _missing(name: str, cluster: ClusterFacts) -> Finding:
    auto = cluster.broker_configs.get("auto.create.topics.enable", "true").lower() == "true"
    return Finding(
        Severity.WARNING if auto else Severity.ERROR,
        name,
        "the topic does not exist"
        + (
            "; the broker will create it with its defaults on first use, so check them"
            if auto
            else " and the broker does not create topics automatically"
        ),
    )


def _assess_topic(guarantee: Guarantee, topic: TopicFacts) -> list[Finding]:
    findings = []
    exactly_once = guarantee is Guarantee.EXACTLY_ONCE
    rf, min_isr = topic.replication_factor, topic.min_insync_replicas
    if rf < 2:
        findings.append(
            Finding(
                Severity.ERROR if exactly_once else Severity.WARNING,
                topic.name,
                f"replication.factor={rf}: every acknowledged write rests on one disk; losing "
                f"that broker's disk loses data, which {guarantee.value} promises not to",
            )
        )
    if min_isr < guarantee.topic_requirements().min_insync_replicas:
        findings.append(
            Finding(
                Severity.ERROR,
                topic.name,
                f"min.insync.replicas={min_isr}: acks=all is acknowledged once a single replica "
                f"has the write, so durability rests on one disk; {guarantee.value} needs "
                "min.insync.replicas>=2",
            )
        )
    elif min_isr >= 2 and rf <= min_isr:
        findings.append(
            Finding(
                Severity.WARNING,
                topic.name,
                f"replication.factor={rf} and min.insync.replicas={min_isr}: one broker down and "
                "every acks=all write is refused (NOT_ENOUGH_REPLICAS)",
            )
        )
    if topic.smallest_isr < min_isr:
        findings.append(
            Finding(
                Severity.ERROR,
                topic.name,
                f"a partition has {topic.smallest_isr} in-sync replica(s), fewer than "
                f"min.insync.replicas={min_isr}: acks=all writes are refused now",
            )
        )
    if topic.unclean_leader_election:
        findings.append(
            Finding(
                Severity.ERROR,
                topic.name,
                "unclean.leader.election.enable=true: a lagging replica may become leader and "
                "drop acknowledged writes",
            )
        )
    return findings


def _assess_transaction_log(cluster: ClusterFacts) -> list[Finding]:
    """`__transaction_state` (the coordinators' commit decisions) needs a second copy and
    `transaction.state.log.min.isr>=2`, or a lost disk forgets or rolls back transactions."""
    findings = []
    configs = cluster.broker_configs
    replication = int(configs.get("transaction.state.log.replication.factor", "3"))
    min_isr = int(configs.get("transaction.state.log.min.isr", "2"))
    if cluster.transaction_state_replicas is not None:
        if cluster.transaction_state_replicas < 2:
            findings.append(
                Finding(
                    Severity.ERROR,
                    TRANSACTION_STATE_TOPIC,
                    f"{TRANSACTION_STATE_TOPIC} has {cluster.transaction_state_replicas} "
                    f"replica(s) (transaction.state.log.replication.factor={replication} when "
                    "it was created): the transaction coordinator's state rests on one disk",
                )
            )
    elif replication < 2:
        findings.append(
            Finding(
                Severity.ERROR,
                "cluster",
                f"transaction.state.log.replication.factor={replication}: "
                f"{TRANSACTION_STATE_TOPIC} will be created with one replica, so the transaction "
                "coordinator's state rests on one disk",
            )
        )
    if min_isr < 2:
        findings.append(
            Finding(
                Severity.ERROR,
                "cluster",
                f"transaction.state.log.min.isr={min_isr}: a transaction's commit decision is "
                "acknowledged once one replica of the transaction log has it",
            )
        )
    return findings
