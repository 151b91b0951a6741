"""The tools on a real 3-broker cluster (one module-wide odradek.Cluster): the toolkit's
preflight says exactly-once is ok on a topic with replication.factor=3 and min.insync=2;
`odradek cluster status` (by bootstrap and by data dir), `odradek topic describe` and `cluster
up`'s live table report a killed broker's under-replicated and offline partitions."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console

from odradek.cli.cluster import status_table
from odradek.cli.main import cli
from odradek.client import Guarantee, Severity, preflight
from odradek.cluster import Cluster
from odradek.testing.pytest_plugin import cluster_test_config


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3, data_dir=tmp_path_factory.mktemp("tools"), config=cluster_test_config()
    ) as running:
        yield running


def odradek(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def create(cluster: Cluster, name: str, partitions: int, rf: int, **configs: str) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})
    topic = NewTopic(name, partitions, rf, config=configs)
    admin.create_topics([topic])[name].result(15)
    for partition in range(partitions):
        cluster.wait_for_isr(name, partition, size=rf, timeout_s=10)


def test_preflight_says_exactly_once_is_ok_on_rf3_min_insync2(cluster: Cluster) -> None:
    create(cluster, "payments", 3, 3, **{"min.insync.replicas": "2"})
    report = preflight(cluster.bootstrap_servers, ["payments"], Guarantee.EXACTLY_ONCE)
    assert report.ok, str(report)
    assert str(report).splitlines()[0] == "preflight for exactly-once on payments: ok"
    # The one remaining advice: three brokers on one host share its power supply.
    (finding,) = report.findings
    assert finding.severity is Severity.WARNING
    assert "all 3 brokers are on one host (127.0.0.1)" in finding.message

    create(cluster, "relaxed", 1, 3)  # min.insync.replicas=1
    relaxed = preflight(cluster.bootstrap_servers, ["relaxed"], Guarantee.EXACTLY_ONCE)
    assert not relaxed.ok
    assert any("min.insync.replicas=1" in message for message in relaxed.messages)


def test_status_of_a_healthy_cluster(cluster: Cluster) -> None:
    result = odradek("cluster", "status", "-b", cluster.bootstrap_servers, "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["cluster_id"] == cluster.cluster_id
    # Found through the brokers' controller.quorum.voters, then read from its metadata log.
    assert status["controller"] == {
        "id": cluster.controller_id,
        "address": cluster.controller_address,
        "state": "reachable",
    }
    assert [(b["id"], b["state"]) for b in status["brokers"]] == [
        (1, "alive"),
        (2, "alive"),
        (3, "alive"),
    ]
    assert all(b["broker_epoch"] is not None for b in status["brokers"])
    assert status["partitions"] == 4
    assert status["under_replicated"] == []
    assert status["offline"] == []


def test_a_killed_broker_shows_everywhere(cluster: Cluster) -> None:
    create(cluster, "single", 3, 1)  # one partition per broker: broker 3's goes offline
    victim = 3
    alone = [
        index
        for index in range(3)
        if cluster.describe_partition("single", index).replicas == (victim,)
    ]
    assert len(alone) == 1
    cluster.kill(victim)
    cluster.wait_for_brokers([1, 2], timeout_s=15)

    status = json.loads(
        odradek("cluster", "status", "--data-dir", str(cluster.data_dir), "--json").stdout
    )
    assert [(b["id"], b["state"]) for b in status["brokers"]] == [
        (1, "alive"),
        (2, "alive"),
        (3, "fenced"),
    ]
    under = {(p["topic"], p["partition"]) for p in status["under_replicated"]}
    assert under == {("payments", 0), ("payments", 1), ("payments", 2), ("relaxed", 0)}
    assert all(p["offline_replicas"] == [victim] for p in status["under_replicated"])
    assert all(victim not in p["isr"] for p in status["under_replicated"])
    (offline,) = status["offline"]
    assert (offline["topic"], offline["partition"], offline["leader"]) == ("single", alone[0], -1)

    table = odradek("cluster", "status", "--data-dir", str(cluster.data_dir))
    assert table.exit_code == 0, table.output
    assert "partitions: 7 · under-replicated: 4 · offline: 1" in table.stdout
    assert "fenced" in table.stdout

    described = odradek("topic", "describe", "payments", "-b", cluster.bootstrap_servers, "--json")
    assert described.exit_code == 0, described.output
    for partition in json.loads(described.stdout)["partitions"]:
        assert sorted(partition["replicas"]) == [1, 2, 3]
        assert victim not in partition["isr"]
        assert partition["offline_replicas"] == [victim]
        assert partition["leader"] in (1, 2)

    # An offline partition (no leader) is still described, its offsets unknown.
    offline_topic = odradek(
        "topic", "describe", "single", "-b", cluster.bootstrap_servers, "--json"
    )
    assert offline_topic.exit_code == 0, offline_topic.output
    rows = {p["partition"]: p for p in json.loads(offline_topic.stdout)["partitions"]}
    assert rows[alone[0]]["leader"] is None
    assert rows[alone[0]]["offline_replicas"] == [victim]
    assert rows[alone[0]]["latest_offset"] is None

    console = Console(record=True, width=200)
    console.print(status_table(cluster))
    rendered = console.export_text()
    assert "partitions: 7 · under-replicated: 4 · offline: 1" in rendered
    assert "stopped" in rendered


def test_status_without_a_cluster_is_one_readable_error(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    empty = tmp_path_factory.mktemp("no-cluster")
    result = odradek("cluster", "status", "--data-dir", str(empty))
    assert result.exit_code == 1
    assert "does not describe a cluster" in result.stderr
