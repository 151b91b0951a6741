"""`odradek group list|describe|delete|reset-offsets`, in the spirit of kafka-consumer-groups.sh,
through the Kafka admin API (confluent-kafka's AdminClient).

Lag is the partition's log end offset (ListOffsets "latest") minus the group's committed offset;
a partition with no committed offset has no lag to show.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import click
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicCollection,
    TopicPartition,
)

# confluent-kafka's stubs re-export these without __all__, so mypy deems them private.
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from odradek.cli.output import (
    Session,
    connection_options,
    count_of,
    describe_error,
    echo_json,
    print_table,
    wait_deleted,
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, not a table.")

# Errors an offset commit from outside the group gets while the group has members: Kafka's
# broker accepts such commits only for an empty group.
_GROUP_ACTIVE_ERRORS = (
    "UNKNOWN_MEMBER_ID",
    "REBALANCE_IN_PROGRESS",
    "ILLEGAL_GENERATION",
    "STALE_MEMBER_EPOCH",
)
# States in which a group has no members, so its offsets may be reset (as Kafka's tool checks).
_INACTIVE_STATES = {"Empty", "Dead"}


def _admin(session: Session) -> AdminClient:
    return AdminClient(session.config())


def _spec(which: str) -> Any:
    """`OffsetSpec.earliest()` / `.latest()`, which the stubs leave untyped."""
    return getattr(OffsetSpec, which)()


def _enum_name(value: Any) -> str:
    """`ConsumerGroupState.PREPARING_REBALANCE` → `PreparingRebalance`, Kafka's spelling."""
    name = value.name if isinstance(value, Enum) else str(value)
    return "".join(word.capitalize() for word in name.split("_"))


@click.group()
def group() -> None:
    """List, describe and delete consumer groups; reset their committed offsets."""


@group.command(name="list")
@json_option
@connection_options
def list_groups(as_json: bool, bootstrap_server: str, timeout: float) -> None:
    """List consumer groups with their state and type (classic or consumer)."""
    session = Session(bootstrap_server, timeout)
    admin = _admin(session)
    future = admin.list_consumer_groups(request_timeout=timeout)
    result = session.wait(admin, future, "list groups")
    if result.errors:
        # Errors come back as KafkaError values here, not raised KafkaExceptions.
        error = result.errors[0]
        raise session.error(
            "list groups", error if isinstance(error, Exception) else KafkaException(error)
        )
    listings = sorted(result.valid or [], key=lambda listing: listing.group_id)
    rows = [
        {
            "group": listing.group_id,
            "state": _enum_name(getattr(listing, "state", "unknown")),
            "type": _enum_name(getattr(listing, "type", "unknown")).lower(),
        }
        for listing in listings
    ]
    if as_json:
        for row in rows:
            echo_json(row)
        return
    print_table(
        None, ["group", "state", "type"], ((r["group"], r["state"], r["type"]) for r in rows)
    )


# -- describe -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """What `describe` and `reset-offsets` need to know about a group."""

    group_id: str
    state: str
    type: str
    protocol: str
    coordinator: int | None
    members: list[dict[str, Any]]


def _describe(session: Session, admin: AdminClient, group_id: str, action: str) -> GroupSummary:
    futures = admin.describe_consumer_groups([group_id], request_timeout=session.timeout)
    description = session.wait(admin, futures[group_id], action)
    state = _enum_name(getattr(description, "state", "unknown"))
    if state == "Dead":
        # DescribeGroups before v6 reports a group that does not exist as Dead, without error.
        raise click.ClickException(f"cannot {action}: group {group_id!r} does not exist")
    members = [
        {
            "member_id": member.member_id,
            "group_instance_id": member.group_instance_id,
            "client_id": member.client_id,
            "host": member.host,
            "assignment": sorted(
                (tp.topic, tp.partition) for tp in member.assignment.topic_partitions
            ),
        }
        for member in description.members
    ]
    members.sort(key=lambda member: (member["client_id"], member["member_id"]))
    coordinator = description.coordinator
    return GroupSummary(
        group_id=group_id,
        state=state,
        type=_enum_name(getattr(description, "type", "unknown")).lower(),
        protocol=description.partition_assignor or "",
        coordinator=None if coordinator is None else int(coordinator.id),
        members=members,
    )


def _committed(
    session: Session, admin: AdminClient, group_id: str, action: str
) -> dict[tuple[str, int], int]:
    """The group's committed offsets; partitions without one are left out."""
    request = [ConsumerGroupTopicPartitions(group_id)]
    futures = admin.list_consumer_group_offsets(request, request_timeout=session.timeout)
    result = session.wait(admin, futures[group_id], action)
    committed = {}
    for partition in result.topic_partitions or []:
        if partition.error is not None:
            raise click.ClickException(f"cannot {action}: {describe_error(partition.error)}")
        if partition.offset >= 0:
            committed[partition.topic, partition.partition] = int(partition.offset)
    return committed


def _list_offsets(
    session: Session,
    admin: AdminClient,
    partitions: list[tuple[str, int]],
    spec: Any,
    action: str,
) -> dict[tuple[str, int], int]:
    """ListOffsets for `partitions`; a partition the broker refuses (e.g. its topic was deleted)
    is left out rather than failing the whole command."""
    if not partitions:
        return {}
    requests = {TopicPartition(topic, partition): spec for topic, partition in partitions}
    futures = admin.list_offsets(requests, request_timeout=session.timeout)
    offsets = {}
    for partition, future in futures.items():
        try:
            info = session.wait(admin, future, action)
        except click.ClickException:
            continue
        offsets[partition.topic, partition.partition] = int(info.offset)
    return offsets


@group.command()
@click.argument("group_id", metavar="GROUP")
@json_option
@connection_options
def describe(group_id: str, as_json: bool, bootstrap_server: str, timeout: float) -> None:
    """Show GROUP's state, members and, per partition, committed offset, log end offset, lag."""
    session = Session(bootstrap_server, timeout)
    admin = _admin(session)
    action = f"describe group {group_id!r}"
    summary = _describe(session, admin, group_id, action)
    committed = _committed(session, admin, group_id, action)
    owners = {
        (topic, partition): member["member_id"]
        for member in summary.members
        for topic, partition in member["assignment"]
    }
    partitions = sorted(set(committed) | set(owners))
    log_end = _list_offsets(session, admin, partitions, _spec("latest"), action)
    partition_rows = []
    for key in partitions:
        offset, end = committed.get(key), log_end.get(key)
        partition_rows.append(
            {
                "topic": key[0],
                "partition": key[1],
                "committed_offset": offset,
                "log_end_offset": end,
                "lag": None if offset is None or end is None else max(end - offset, 0),
                "member_id": owners.get(key),
            }
        )
    if as_json:
        echo_json(
            {
                "group": group_id,
                "state": summary.state,
                "type": summary.type,
                "protocol": summary.protocol,
                "coordinator": summary.coordinator,
                "members": [
                    {
                        **member,
                        "assignment": [
                            {"topic": topic, "partition": partition}
                            for topic, partition in member["assignment"]
                        ],
                    }
                    for member in summary.members
                ],
                "partitions": partition_rows,
            }
        )
        return
    protocol = f", protocol {summary.protocol}" if summary.protocol else ""
    # A line of its own, not a table title: rich would fold it to a narrow table's width.
    click.echo(
        f"Group {group_id}: {summary.state}, {summary.type}{protocol}, "
        f"coordinator {summary.coordinator}, {count_of(len(summary.members), 'member')}"
    )
    if summary.members:
        print_table(
            "Members",
            ["member id", "instance id", "client id", "host", "assignment"],
            (
                (
                    member["member_id"],
                    member["group_instance_id"] or "-",
                    member["client_id"],
                    member["host"] or "-",
                    _assignment_text(member["assignment"]),
                )
                for member in summary.members
            ),
        )
    if not partition_rows:
        click.echo("No committed offsets and no assigned partitions.")
        return
    print_table(
        "Offsets",
        ["topic", "partition", "committed offset", "log end offset", "lag", "member id"],
        (
            (
                row["topic"],
                row["partition"],
                _or_dash(row["committed_offset"]),
                _or_dash(row["log_end_offset"]),
                _or_dash(row["lag"]),
                _or_dash(row["member_id"]),
            )
            for row in partition_rows
        ),
    )


def _assignment_text(assignment: list[tuple[str, int]]) -> str:
    """`orders-0,1,2 payments-0`: each topic once, then its partitions."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in assignment:
        by_topic.setdefault(topic, []).append(partition)
    return (
        " ".join(f"{topic}-{','.join(map(str, parts))}" for topic, parts in by_topic.items()) or "-"
    )


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


# -- delete ---------------------------------------------------------------------------------


@group.command()
@click.argument("group_ids", metavar="GROUPS", nargs=-1, required=True)
@connection_options
def delete(group_ids: tuple[str, ...], bootstrap_server: str, timeout: float) -> None:
    """Delete GROUPS and their committed offsets (only groups without members)."""
    session = Session(bootstrap_server, timeout)
    admin = _admin(session)
    futures = admin.delete_consumer_groups(list(dict.fromkeys(group_ids)), request_timeout=timeout)
    wait_deleted(session, admin, futures, "group")


# -- reset-offsets --------------------------------------------------------------------------


@group.command(name="reset-offsets")
@click.argument("group_id", metavar="GROUP")
@click.option("--topic", required=True, help="The topic whose offsets to reset.")
@click.option(
    "--partition",
    "partitions",
    type=click.IntRange(min=0),
    multiple=True,
    help="Only this partition; repeatable. Default: every partition of the topic.",
)
@click.option("--to-earliest", is_flag=True, help="To each partition's log start offset.")
@click.option("--to-latest", is_flag=True, help="To each partition's log end offset.")
@click.option(
    "--to-offset",
    type=click.IntRange(min=0),
    default=None,
    help="To offset N (kept within the partition's earliest..latest).",
)
@click.option(
    "--to-datetime",
    default=None,
    metavar="ISO",
    help="To the first offset with a timestamp at or after ISO (e.g. 2024-05-01T12:00:00Z; "
    "local time without a zone); the log end where there is none.",
)
@click.option(
    "--shift-by",
    type=int,
    default=None,
    help="Move each committed offset by N (negative: back), kept within earliest..latest.",
)
@click.option("--dry-run", is_flag=True, help="Show the new offsets, change nothing (default).")
@click.option("--execute", is_flag=True, help="Commit the new offsets.")
@json_option
@connection_options
def reset_offsets(
    group_id: str,
    topic: str,
    partitions: tuple[int, ...],
    to_earliest: bool,
    to_latest: bool,
    to_offset: int | None,
    to_datetime: str | None,
    shift_by: int | None,
    dry_run: bool,
    execute: bool,
    as_json: bool,
    bootstrap_server: str,
    timeout: float,
) -> None:
    """Reset GROUP's committed offsets on a topic; the group must have no active members."""
    chosen = [
        name
        for name, given in (
            ("--to-earliest", to_earliest),
            ("--to-latest", to_latest),
            ("--to-offset", to_offset is not None),
            ("--to-datetime", to_datetime is not None),
            ("--shift-by", shift_by is not None),
        )
        if given
    ]
    if len(chosen) != 1:
        raise click.UsageError(
            "give exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime, "
            f"--shift-by (got {', '.join(chosen) or 'none'})"
        )
    if dry_run and execute:
        raise click.UsageError("--dry-run and --execute are mutually exclusive")
    timestamp_ms = None if to_datetime is None else _timestamp_ms(to_datetime)

    session = Session(bootstrap_server, timeout)
    admin = _admin(session)
    action = f"reset offsets of group {group_id!r}"
    selected = _topic_partitions(session, admin, topic, partitions, action)
    if not execute:
        # The broker refuses an --execute on an active group itself; a dry run asks first, as
        # kafka-consumer-groups.sh does. A group that does not exist yet is fine: resetting
        # creates its offsets.
        _require_inactive(session, admin, group_id, action)

    earliest = _list_offsets(session, admin, selected, _spec("earliest"), action)
    latest = _list_offsets(session, admin, selected, _spec("latest"), action)
    committed = _committed(session, admin, group_id, action)
    by_time = (
        {}
        if timestamp_ms is None
        else _list_offsets(session, admin, selected, OffsetSpec.for_timestamp(timestamp_ms), action)
    )
    plan: list[tuple[tuple[str, int], int | None, int]] = []
    for key in selected:
        if key not in earliest or key not in latest:
            raise click.ClickException(f"cannot {action}: no offsets for {key[0]}-{key[1]}")
        low, high = earliest[key], latest[key]
        current = committed.get(key)
        if to_earliest:
            target = low
        elif to_latest:
            target = high
        elif to_offset is not None:
            target = to_offset
        elif timestamp_ms is not None:
            found = by_time.get(key, -1)
            target = high if found < 0 else found
        else:
            assert shift_by is not None
            if current is None:
                raise click.ClickException(
                    f"cannot {action}: cannot shift {key[0]}-{key[1]}: the group has no "
                    "committed offset there"
                )
            target = current + shift_by
        plan.append((key, current, min(max(target, low), high)))

    if execute:
        request = ConsumerGroupTopicPartitions(
            group_id,
            [TopicPartition(topic, partition, offset) for (topic, partition), _, offset in plan],
        )
        futures = admin.alter_consumer_group_offsets([request], request_timeout=timeout)
        try:
            result = session.wait(admin, futures[group_id], action)
        except click.ClickException as failure:
            raise _explain_active(failure, group_id) from None
        for partition in result.topic_partitions or []:
            if partition.error is not None:
                message = f"cannot {action}: {describe_error(partition.error)}"
                raise _explain_active(click.ClickException(message), group_id)

    rows = [
        {"topic": topic_name, "partition": partition, "current_offset": current, "new_offset": new}
        for (topic_name, partition), current, new in plan
    ]
    if as_json:
        for row in rows:
            echo_json(row)
    else:
        print_table(
            f"Group {group_id}: new offsets" + ("" if execute else " (dry run)"),
            ["topic", "partition", "current offset", "new offset"],
            (
                (row["topic"], row["partition"], _or_dash(row["current_offset"]), row["new_offset"])
                for row in rows
            ),
        )
    if execute:
        click.echo(f"Reset {count_of(len(rows), 'partition')} of group {group_id}.", err=True)
    else:
        click.echo("Dry run: nothing changed; add --execute to commit these offsets.", err=True)


def _timestamp_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO date-time", param_hint="--to-datetime"
        ) from None
    # A naive date-time is local time, as kafka-consumer-groups.sh reads it.
    return int(moment.astimezone().timestamp() * 1000)


def _topic_partitions(
    session: Session, admin: AdminClient, topic: str, partitions: tuple[int, ...], action: str
) -> list[tuple[str, int]]:
    futures = admin.describe_topics(TopicCollection([topic]), request_timeout=session.timeout)
    description = session.wait(admin, futures[topic], action)
    existing = sorted(partition.id for partition in description.partitions)
    if not partitions:
        return [(topic, partition) for partition in existing]
    missing = sorted(set(partitions) - set(existing))
    if missing:
        raise click.ClickException(
            f"cannot {action}: topic {topic!r} has no partition {', '.join(map(str, missing))} "
            f"(it has {len(existing)})"
        )
    return [(topic, partition) for partition in sorted(set(partitions))]


def _require_inactive(session: Session, admin: AdminClient, group_id: str, action: str) -> None:
    try:
        summary = _describe(session, admin, group_id, action)
    except click.ClickException as failure:
        if "GROUP_ID_NOT_FOUND" in failure.message or "does not exist" in failure.message:
            return
        raise
    if summary.state not in _INACTIVE_STATES:
        raise click.ClickException(
            f"cannot {action}: the group is {summary.state} with "
            f"{count_of(len(summary.members), 'member')}; offsets can only be reset while it "
            "has none (stop its consumers first)"
        )


def _explain_active(failure: click.ClickException, group_id: str) -> click.ClickException:
    """Add the likely reason to the broker's refusal of a commit from outside the group."""
    if any(name in failure.message for name in _GROUP_ACTIVE_ERRORS):
        return click.ClickException(
            f"{failure.message}: group {group_id!r} has active members; offsets can only be "
            "reset while it has none (stop its consumers first)"
        )
    return failure
