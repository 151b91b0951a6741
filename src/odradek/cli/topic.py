"""`odradek topic create|list|describe|alter|delete`, in the spirit of kafka-topics.sh, through
the Kafka admin API (confluent-kafka's AdminClient)."""

from __future__ import annotations

from typing import Any

import click
from confluent_kafka import KafkaException, TopicCollection, TopicPartition

# confluent-kafka's stubs re-export these without __all__, so mypy deems them private.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from odradek.cli.output import (
    Session,
    connection_options,
    echo_json,
    parse_pairs,
    print_table,
    wait_deleted,
)

config_option = click.option(
    "--config",
    "configs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A topic config (Kafka's names, e.g. retention.ms=60000); repeatable.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, not a table.")


def _admin(session: Session) -> AdminClient:
    return AdminClient(session.config())


@click.group()
def topic() -> None:
    """Create, list, describe, alter and delete topics."""


@topic.command()
@click.argument("name")
@click.option(
    "--partitions", type=click.IntRange(min=1), default=None, help="Default: the broker's."
)
@click.option(
    "--replication-factor", type=click.IntRange(min=1), default=None, help="Default: the broker's."
)
@config_option
@connection_options
def create(
    name: str,
    partitions: int | None,
    replication_factor: int | None,
    configs: tuple[str, ...],
    bootstrap_server: str,
    timeout: float,
) -> None:
    """Create topic NAME."""
    session = Session(bootstrap_server, timeout)
    admin = _admin(session)
    new_topic = NewTopic(
        name,
        num_partitions=-1 if partitions is None else partitions,
        replication_factor=-1 if replication_factor is None else replication_factor,
        config=dict(parse_pairs(configs, "--config")),
    )
    futures = admin.create_topics([new_topic], request_timeout=timeout, operation_timeout=timeout)
    session.wait(admin, futures[name], f"create topic {name!r}")
    click.echo(f"Created topic {name}.", err=True)


@topic.command(name="list")
@json_option
@connection_options
def list_topics(as_json: bool, bootstrap_server: str, timeout: float) -> None:
    """List topics and their partition counts."""
    session = Session(bootstrap_server, timeout)
    admin = _admin(session)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exception:
        admin.poll(0)  # serves error_cb: the reason the cluster did not answer
        raise session.error("list topics", exception) from None
    topics = sorted(metadata.topics.values(), key=lambda item: item.topic or "")
    if as_json:
        for item in topics:
            echo_json({"topic": item.topic, "partitions": len(item.partitions)})
        return
    print_table(None, ["topic", "partitions"], ((t.topic, len(t.partitions)) for t in topics))


@topic.command()
@click.argument("name")
@json_option
@connection_options
def describe(name: str, as_json: bool, bootstrap_server: str, timeout: float) -> None:
    """Show NAME's partitions (leader, replicas, ISR, offline replicas, offsets) and configs
    with their source."""
    session = Session(bootstrap_server, timeout)
    admin = _admin(session)
    action = f"describe topic {name!r}"
    # describe_topics, not list_topics(name): a Metadata request naming a topic may create it.
    futures = admin.describe_topics(TopicCollection([name]), request_timeout=timeout)
    description = session.wait(admin, futures[name], action)
    partitions = sorted(description.partitions, key=lambda partition: partition.id)
    # Offline replicas, as Kafka's Metadata states them: replicas on brokers not alive (fenced
    # or gone), i.e. missing from the cluster's broker list.
    cluster_future = admin.describe_cluster(request_timeout=timeout)
    alive = {int(node.id) for node in session.wait(admin, cluster_future, action).nodes}
    earliest = _offsets(session, admin, name, partitions, "earliest", action)
    latest = _offsets(session, admin, name, partitions, "latest", action)
    resource = ConfigResource(ResourceType.TOPIC, name)
    futures_configs = admin.describe_configs([resource], request_timeout=timeout)
    configs = session.wait(admin, futures_configs[resource], action)
    entries = sorted(configs.values(), key=lambda entry: entry.name)

    partition_rows = [
        {
            "partition": partition.id,
            "leader": _node_id(partition.leader),
            "replicas": [_node_id(node) for node in partition.replicas],
            "isr": [_node_id(node) for node in partition.isr],
            "offline_replicas": [
                int(node.id) for node in partition.replicas if int(node.id) not in alive
            ],
            "earliest_offset": earliest[partition.id],
            "latest_offset": latest[partition.id],
        }
        for partition in partitions
    ]
    config_rows = [
        {
            "name": entry.name,
            "value": None if entry.is_sensitive else entry.value,
            "source": _source_name(entry.source),
            "read_only": entry.is_read_only,
        }
        for entry in entries
    ]
    if as_json:
        echo_json(
            {
                "topic": name,
                "internal": description.is_internal,
                "partitions": partition_rows,
                "configs": config_rows,
            }
        )
        return
    print_table(
        f"Topic {name}: {len(partitions)} partition(s)",
        [
            "partition",
            "leader",
            "replicas",
            "isr",
            "offline replicas",
            "earliest offset",
            "latest offset",
        ],
        (
            (
                row["partition"],
                "none" if row["leader"] is None else row["leader"],
                ",".join(map(str, row["replicas"])),
                ",".join(map(str, row["isr"])),
                ",".join(map(str, row["offline_replicas"])) or "-",
                "?" if row["earliest_offset"] is None else row["earliest_offset"],
                "?" if row["latest_offset"] is None else row["latest_offset"],
            )
            for row in partition_rows
        ),
    )
    print_table(
        "Configs",
        ["name", "value", "source"],
        (
            (row["name"], "(sensitive)" if row["value"] is None else row["value"], row["source"])
            for row in config_rows
        ),
    )


def _source_name(source: Any) -> str:
    # ConfigEntry.source is a plain int in some confluent-kafka versions, an enum in others.
    try:
        return ConfigSource(int(source)).name
    except ValueError:
        return str(source)


def _node_id(node: Any) -> int | None:
    return None if node is None else int(node.id)


def _offsets(
    session: Session,
    admin: AdminClient,
    name: str,
    partitions: list[Any],
    which: str,
    action: str,
) -> dict[int, int | None]:
    if not partitions:
        return {}
    spec = getattr(OffsetSpec, which)()  # OffsetSpec.earliest() / .latest(), untyped
    requests = {TopicPartition(name, partition.id): spec for partition in partitions}
    futures = admin.list_offsets(requests, request_timeout=session.timeout)
    offsets: dict[int, int | None] = {}
    for partition, future in futures.items():
        # A partition without a leader (offline) has no offsets to give; describe still shows
        # its replicas, which is what an operator needs then.
        try:
            offsets[partition.partition] = int(session.wait(admin, future, action).offset)
        except click.ClickException as failure:
            offsets[partition.partition] = None
            click.echo(
                f"warning: {which} offset of partition {partition.partition}: {failure.message}",
                err=True,
            )
    return offsets


@topic.command()
@click.argument("name")
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=None,
    help="The new total number of partitions (can only grow).",
)
@config_option
@click.option(
    "--delete-config",
    "deleted_configs",
    multiple=True,
    metavar="KEY",
    help="Remove a topic config override, back to the default; repeatable.",
)
@connection_options
def alter(
    name: str,
    partitions: int | None,
    configs: tuple[str, ...],
    deleted_configs: tuple[str, ...],
    bootstrap_server: str,
    timeout: float,
) -> None:
    """Change NAME's partition count or configs (only the configs named change)."""
    if partitions is None and not configs and not deleted_configs:
        raise click.UsageError("nothing to change: give --partitions, --config or --delete-config")
    session = Session(bootstrap_server, timeout)
    admin = _admin(session)
    if configs or deleted_configs:
        entries = [
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in parse_pairs(configs, "--config")
        ] + [
            ConfigEntry(key, None, incremental_operation=AlterConfigOpType.DELETE)
            for key in deleted_configs
        ]
        resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries)
        config_futures = admin.incremental_alter_configs([resource], request_timeout=timeout)
        session.wait(admin, config_futures[resource], f"alter configs of topic {name!r}")
        click.echo(f"Altered configs of topic {name}.", err=True)
    if partitions is not None:
        futures = admin.create_partitions(
            [NewPartitions(name, partitions)], request_timeout=timeout, operation_timeout=timeout
        )
        session.wait(admin, futures[name], f"grow topic {name!r} to {partitions} partitions")
        click.echo(f"Topic {name} now has {partitions} partitions.", err=True)


@topic.command()
@click.argument("names", nargs=-1, required=True)
@connection_options
def delete(names: tuple[str, ...], bootstrap_server: str, timeout: float) -> None:
    """Delete topics NAMES."""
    session = Session(bootstrap_server, timeout)
    admin = _admin(session)
    futures = admin.delete_topics(
        list(dict.fromkeys(names)), request_timeout=timeout, operation_timeout=timeout
    )
    wait_deleted(session, admin, futures, "topic")
