"""`odradek cluster up`: a controller and N brokers on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from odradek.cli.wire import WireClient
from odradek.cluster import Cluster, ClusterError
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


def status_table(cluster: Cluster) -> Table:
    table = Table(
        title=f"Odradek cluster {cluster.cluster_id} — controller {cluster.controller_id}"
        f" on {cluster.controller_address}"
    )
    for column in ("broker", "address", "process", "broker epoch", "fenced"):
        table.add_column(column)
    try:
        image = read_metadata_image(cluster.controller_address)
    except click.ClickException:
        image = None
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


@click.group()
def cluster() -> None:
    """Run a local Odradek cluster (one controller, N brokers)."""


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
    signal.signal(signal.SIGTERM, signal.default_int_handler)
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
