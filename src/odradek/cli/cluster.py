"""`odradek cluster up`: a controller and N brokers on 127.0.0.1 until Ctrl-C, with a live
status table; `odradek cluster status`: brokers, controller, under-replicated and offline
partitions of a running cluster, found by `--bootstrap-server` or by `cluster up`'s
`--data-dir`.

Partition health uses Kafka's definitions (the ReplicaManager / KafkaController metrics):
under-replicated = a leader but fewer in-sync replicas than replicas; offline = no leader.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from odradek.cli.output import DEFAULT_BOOTSTRAP, echo_json, print_table
from odradek.cli.wire import WireClient
from odradek.cluster import CLUSTER_FILE, Cluster, ClusterError
from odradek.controller import MetadataImage, decode_record
from odradek.protocol.record_batch import decode_batches

_METADATA_TOPIC = "__cluster_metadata"


def read_metadata_image(controller_address: str) -> MetadataImage:
    """The controller's metadata log, fetched (Fetch v12 of __cluster_metadata-0) and replayed,
    as a broker does it."""
    image = MetadataImage()
    with WireClient(controller_address, timeout=2) as client:
        while True:
            partition = client.build(
                1,
                12,
                "FetchPartition",
                partition=0,
                current_leader_epoch=-1,
                fetch_offset=image.offset + 1,
                last_fetched_epoch=-1,
                log_start_offset=-1,
                partition_max_bytes=8 * 1024 * 1024,
            )
            topic = client.build(
                1, 12, "FetchTopic", topic=_METADATA_TOPIC, partitions=(partition,)
            )
            response = client.request(
                1,
                12,
                cluster_id=None,
                replica_id=-1,
                max_wait=0,
                min_bytes=0,
                max_bytes=8 * 1024 * 1024,
                isolation_level=0,
                session_id=0,
                session_epoch=-1,
                topics=(topic,),
                forgotten_topics_data=(),
                rack_id="",
            )
            data = response.responses[0].partitions[0]
            if not data.records:
                return image
            image = image.replay(
                (decode_record(record.value), record.offset)
                for _header, records in decode_batches(bytes(data.records))
                for record in records
                if record.value is not None and record.offset > image.offset
            )
            if image.offset + 1 >= int(data.high_watermark):
                return image


@dataclass(frozen=True, slots=True)
class PartitionHealth:
    """One partition's replication state (broker ids; leader -1: none)."""

    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline_replicas: tuple[int, ...] = ()

    @property
    def offline(self) -> bool:
        return self.leader == -1

    @property
    def under_replicated(self) -> bool:
        return not self.offline and len(self.isr) < len(self.replicas)


@dataclass(frozen=True, slots=True)
class HealthCounts:
    partitions: int
    under_replicated: int
    offline: int

    def __str__(self) -> str:
        return (
            f"partitions: {self.partitions} · under-replicated: {self.under_replicated}"
            f" · offline: {self.offline}"
        )


def count_health(partitions: Iterable[PartitionHealth]) -> HealthCounts:
    listed = list(partitions)
    return HealthCounts(
        len(listed),
        sum(p.under_replicated for p in listed),
        sum(p.offline for p in listed),
    )


def image_partitions(image: MetadataImage) -> list[PartitionHealth]:
    """Every partition of the controller's image (offline replicas: on fenced or unregistered
    brokers)."""
    return [
        PartitionHealth(
            topic.name,
            index,
            registration.leader,
            registration.replicas,
            registration.isr,
            image.offline_replicas(registration),
        )
        for topic in sorted(image.topics_by_id.values(), key=lambda t: t.name)
        for index, registration in sorted(topic.partitions.items())
    ]


def status_table(cluster: Cluster) -> Table:
    image: MetadataImage | None
    try:
        image = read_metadata_image(cluster.controller_address)
    except click.ClickException:
        image = None
    counts = count_health(image_partitions(image)) if image is not None else None
    table = Table(
        title=f"Odradek cluster {cluster.cluster_id} — controller {cluster.controller_id}"
        f" on {cluster.controller_address}",
        caption=str(counts) if counts is not None else "controller unreachable",
    )
    for column in ("broker", "address", "process", "broker epoch", "fenced"):
        table.add_column(column)
    for node_id in cluster.node_ids:
        registration = image.brokers.get(node_id) if image is not None else None
        table.add_row(
            str(node_id),
            cluster.broker_address(node_id),
            "running" if cluster.is_running(node_id) else "stopped",
            str(registration.epoch) if registration is not None else "-",
            "?" if registration is None else ("yes" if registration.fenced else "no"),
        )
    return table


@dataclass
class BrokerStatus:
    node_id: int
    address: str
    state: str  # alive (in Metadata), fenced, registered-only, or unreachable
    broker_epoch: int | None = None
    leaders: int = 0
    replicas: int = 0


@dataclass
class ClusterStatus:
    """What `odradek cluster status` reports."""

    cluster_id: str | None
    controller_id: int | None
    controller_address: str | None
    controller_state: str  # reachable | unreachable | unreadable | unknown
    brokers: list[BrokerStatus] = field(default_factory=list)
    partitions: list[PartitionHealth] = field(default_factory=list)

    @property
    def counts(self) -> HealthCounts:
        return count_health(self.partitions)

    def to_json(self) -> dict[str, Any]:
        def partition(p: PartitionHealth) -> dict[str, Any]:
            return {
                "topic": p.topic,
                "partition": p.partition,
                "leader": p.leader,
                "replicas": list(p.replicas),
                "isr": list(p.isr),
                "offline_replicas": list(p.offline_replicas),
            }

        counts = self.counts
        return {
            "cluster_id": self.cluster_id,
            "controller": {
                "id": self.controller_id,
                "address": self.controller_address,
                "state": self.controller_state,
            },
            "brokers": [
                {
                    "id": b.node_id,
                    "address": b.address,
                    "state": b.state,
                    "broker_epoch": b.broker_epoch,
                    "leaders": b.leaders,
                    "replicas": b.replicas,
                }
                for b in self.brokers
            ],
            "partitions": counts.partitions,
            "under_replicated": [partition(p) for p in self.partitions if p.under_replicated],
            "offline": [partition(p) for p in self.partitions if p.offline],
        }


def _client_metadata(addresses: Sequence[str], timeout: float) -> tuple[str, Any] | None:
    """Metadata v12 (every topic, no auto-creation) from the first address that answers."""
    for address in addresses:
        try:
            with WireClient(address, timeout=timeout) as client:
                return address, client.request(
                    3,
                    12,
                    topics=None,
                    allow_auto_topic_creation=False,
                    include_topic_authorized_operations=False,
                )
        except click.ClickException:
            continue
    return None


def _quorum_voter(address: str, broker_id: int, timeout: float) -> tuple[int, str] | None:
    """The first voter of the broker's `controller.quorum.voters` (id@host:port), read with
    DescribeConfigs v4 on its BROKER resource; None when it has none (not KRaft) or says
    nothing."""
    try:
        with WireClient(address, timeout=timeout) as client:
            resource = client.build(
                32,
                4,
                "DescribeConfigsResource",
                resource_type=4,
                resource_name=str(broker_id),
                configuration_keys=("controller.quorum.voters",),
            )
            response = client.request(
                32, 4, resources=(resource,), include_synonyms=False, include_documentation=False
            )
    except click.ClickException:
        return None
    for result in response.results:
        for config in result.configs:
            if config.name == "controller.quorum.voters" and config.value:
                voter = config.value.split(",")[0].strip()
                node, _, endpoint = voter.partition("@")
                if node.isdigit() and endpoint:
                    return int(node), endpoint
    return None


def gather_status(
    bootstrap: Sequence[str],
    timeout: float,
    controller: tuple[int, str] | None = None,
    known_brokers: dict[int, str] | None = None,
    cluster_id: str | None = None,
) -> ClusterStatus:
    """Ask a broker (Metadata) and, when its address is known, the controller (its metadata
    log, replayed) for the cluster's state. `known_brokers` (from `cluster.json`) adds brokers
    that are neither alive nor registered."""
    answer = _client_metadata(bootstrap, timeout)
    brokers: dict[int, BrokerStatus] = {
        node: BrokerStatus(node, address, "unreachable")
        for node, address in (known_brokers or {}).items()
    }
    partitions: list[PartitionHealth] = []
    if answer is not None:
        address, metadata = answer
        cluster_id = metadata.cluster_id or cluster_id
        for broker in metadata.brokers:
            node = int(broker.node_id)
            brokers[node] = BrokerStatus(node, f"{broker.host}:{int(broker.port)}", "alive")
        for topic in metadata.topics:
            for state in topic.partitions:
                partitions.append(
                    PartitionHealth(
                        str(topic.name),
                        int(state.partition_index),
                        int(state.leader_id),
                        tuple(int(n) for n in state.replica_nodes),
                        tuple(int(n) for n in state.isr_nodes),
                        tuple(int(n) for n in state.offline_replicas),
                    )
                )
        if controller is None and metadata.brokers:
            controller = _quorum_voter(address, int(metadata.brokers[0].node_id), timeout)
    controller_state = "unknown"
    if controller is not None:
        try:
            image = read_metadata_image(controller[1])
        except click.ClickException:
            controller_state = "unreachable"
        except Exception:  # it answered, but not with a metadata log we can read (not Odradek)
            controller_state = "unreadable"
        else:
            controller_state = "reachable"
            for node, registration in image.brokers.items():
                status = brokers.get(node)
                if status is None:
                    endpoint = registration.listeners[0] if registration.listeners else None
                    address = f"{endpoint.host}:{endpoint.port}" if endpoint else "?"
                    status = brokers[node] = BrokerStatus(node, address, "registered")
                status.broker_epoch = registration.epoch
                if registration.fenced:
                    status.state = "fenced"
            if answer is None:  # no broker answered: the controller's view of the partitions
                partitions = image_partitions(image)
    for p in partitions:
        for node in p.replicas:
            if node in brokers:
                brokers[node].replicas += 1
        if p.leader in brokers:
            brokers[p.leader].leaders += 1
    return ClusterStatus(
        cluster_id,
        controller[0] if controller else None,
        controller[1] if controller else None,
        controller_state,
        [brokers[node] for node in sorted(brokers)],
        sorted(partitions, key=lambda p: (p.topic, p.partition)),
    )


@click.group()
def cluster() -> None:
    """Run a local Odradek cluster (one controller, N brokers) and show a cluster's state."""


@cluster.command()
@click.option(
    "--bootstrap-server",
    "-b",
    "bootstrap_server",
    envvar="ODRADEK_BOOTSTRAP",
    default=None,
    metavar="HOST:PORT",
    help=f"Broker(s) to ask, comma separated (env ODRADEK_BOOTSTRAP; default {DEFAULT_BOOTSTRAP}"
    " unless --data-dir is given).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="A `cluster up --data-dir`: its cluster.json names the controller and the brokers.",
)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, not tables.")
def status(
    bootstrap_server: str | None, data_dir: Path | None, timeout: float, as_json: bool
) -> None:
    """Brokers, controller, under-replicated and offline partitions of a running cluster.

    Works against any Kafka cluster by --bootstrap-server (the controller is found through the
    brokers' controller.quorum.voters); exits 1 when no broker and no controller answers.
    """
    controller: tuple[int, str] | None = None
    known: dict[int, str] = {}
    cluster_id = None
    if data_dir is not None:
        layout_file = data_dir / CLUSTER_FILE
        try:
            layout = json.loads(layout_file.read_text())
            controller = (int(layout["controller_id"]), str(layout["controller_address"]))
            known = {int(node): str(address) for node, address in layout["brokers"].items()}
            cluster_id = str(layout["cluster_id"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise click.ClickException(
                f"{layout_file} does not describe a cluster (written by `odradek cluster up "
                f"--data-dir`): {error}"
            ) from None
    bootstrap = (bootstrap_server or "").split(",") if bootstrap_server else list(known.values())
    if not bootstrap:
        bootstrap = [DEFAULT_BOOTSTRAP]
    found = gather_status(
        [a.strip() for a in bootstrap if a.strip()], timeout, controller, known, cluster_id
    )
    if not any(b.state == "alive" for b in found.brokers) and found.controller_state != "reachable":
        raise click.ClickException(
            f"no broker answered at {','.join(bootstrap)}"
            + (
                f" and the controller at {found.controller_address} did not either"
                if found.controller_address
                else ""
            )
        )
    if as_json:
        echo_json(found.to_json())
        return
    counts = found.counts
    controller_text = (
        f"controller {found.controller_id} on {found.controller_address} ({found.controller_state})"
        if found.controller_address
        else "controller: not known (no controller.quorum.voters)"
    )
    print_table(
        f"Cluster {found.cluster_id or '?'} — {controller_text}",
        ["broker", "address", "state", "broker epoch", "leaders", "replicas"],
        (
            (
                b.node_id,
                b.address,
                b.state,
                "-" if b.broker_epoch is None else b.broker_epoch,
                b.leaders,
                b.replicas,
            )
            for b in found.brokers
        ),
    )
    click.echo(str(counts))
    troubled = [p for p in found.partitions if p.offline or p.under_replicated]
    if troubled:
        print_table(
            "Under-replicated and offline partitions",
            ["topic", "partition", "state", "leader", "replicas", "isr", "offline replicas"],
            (
                (
                    p.topic,
                    p.partition,
                    "offline" if p.offline else "under-replicated",
                    "none" if p.offline else p.leader,
                    ",".join(map(str, p.replicas)),
                    ",".join(map(str, p.isr)),
                    ",".join(map(str, p.offline_replicas)) or "-",
                )
                for p in troubled
            ),
        )


@cluster.command()
@click.option("--brokers", type=click.IntRange(1, 64), default=3, show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where each node keeps its data (default: a temporary directory).",
)
@click.option(
    "--base-port",
    type=int,
    default=None,
    help="Controller on this port, brokers on the next ones (default: free ports).",
)
@click.option(
    "--override",
    "override",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set one property on every node.",
)
def up(
    brokers: int, data_dir: Path | None, base_port: int | None, override: tuple[str, ...]
) -> None:
    """Start a controller and N brokers on 127.0.0.1; Ctrl-C stops them all."""
    from odradek.cli.serve import _overrides

    running = Cluster(
        brokers,
        data_dir=data_dir,
        base_port=base_port,
        config=_overrides(override),
        log_level="INFO",
    )
    console = Console()
    # SIGTERM and SIGINT both stop the cluster, even when SIGINT arrives ignored (a shell
    # script's `odradek cluster up &` starts it with SIGINT ignored, so `kill -INT` would not).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        running.start()
    except ClusterError as error:
        running.stop()
        raise click.ClickException(str(error)) from None
    console.print(f"bootstrap.servers={running.bootstrap_servers}")
    console.print(f"node logs in {running.data_dir}; Ctrl-C stops the cluster")
    try:
        with Live(status_table(running), console=console, refresh_per_second=2) as live:
            while True:
                time.sleep(1)
                live.update(status_table(running))
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        running.stop()
