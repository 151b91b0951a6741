"""`odradek txn list|describe|abort` and `odradek producers describe TOPIC`, in the spirit of
kafka-transactions.sh (KIP-664), over the tiny protocol client in `wire.py`.

`abort` ends a hanging transaction on one partition: it finds the producer whose open
transaction holds the partition's last stable offset (DescribeProducers) and writes an ABORT
marker for it (WriteTxnMarkers), exactly what Kafka's abort tool sends.

On a cluster each broker coordinates the transactional ids of the `__transaction_state`
partitions it leads: `list` asks every broker Metadata names and merges the answers (as Kafka's
admin client does), `describe` asks the coordinator FindCoordinator names.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import click
from kio.schema.errors import ErrorCode

from odradek.cli.output import connection_options, echo_json, print_table
from odradek.cli.wire import WireClient, decode_describe_transactions
from odradek.protocol.api_keys import ApiKey

_TRANSACTION_KEY = 1  # FindCoordinator's key type of a transactional id
_RETRIABLE = frozenset(
    {ErrorCode.coordinator_load_in_progress, ErrorCode.coordinator_not_available}
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, not a table.")


def _check(error: Any, action: str) -> None:
    code = ErrorCode(error)
    if code != ErrorCode.none:
        raise click.ClickException(f"cannot {action}: {code.name.upper()}")


def _time(milliseconds: int) -> str:
    if milliseconds < 0:
        return "-"
    moment = datetime.datetime.fromtimestamp(milliseconds / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds")


@click.group()
def txn() -> None:
    """List, describe and abort transactions."""


@txn.command(name="list")
@click.option("--state", "states", multiple=True, help="Only these states (Ongoing, …).")
@click.option("--producer-id", "producer_ids", type=int, multiple=True, help="Only these ids.")
@json_option
@connection_options
def list_(
    states: tuple[str, ...],
    producer_ids: tuple[int, ...],
    as_json: bool,
    bootstrap_server: str,
    timeout: float,
) -> None:
    """List transactional ids with their producer id and state (asking every broker)."""
    rows_found: set[tuple[str, int, str]] = set()
    for address in _broker_addresses(bootstrap_server, timeout):
        with WireClient(address, timeout) as client:
            response = client.request(
                ApiKey.LIST_TRANSACTIONS,
                0,
                state_filters=states,
                producer_id_filters=producer_ids,
            )
        _check(response.error_code, f"list transactions on {address}")
        if response.unknown_state_filters:
            unknown = ", ".join(response.unknown_state_filters)
            raise click.ClickException(f"unknown state(s): {unknown}")
        rows_found.update(
            (entry.transactional_id, int(entry.producer_id), entry.transaction_state)
            for entry in response.transaction_states
        )
    rows = sorted(rows_found)
    if as_json:
        for transactional_id, producer_id, state in rows:
            echo_json(
                {"transactional_id": transactional_id, "producer_id": producer_id, "state": state}
            )
        return
    print_table(None, ["TRANSACTIONAL ID", "PRODUCER ID", "STATE"], rows)


@txn.command()
@click.argument("transactional_id")
@json_option
@connection_options
def describe(transactional_id: str, as_json: bool, bootstrap_server: str, timeout: float) -> None:
    """Describe one transactional id: state, producer, timeout, start and partitions."""
    with WireClient(
        _coordinator_address(transactional_id, bootstrap_server, timeout), timeout
    ) as client:
        body = client.request_body(
            ApiKey.DESCRIBE_TRANSACTIONS, 0, transactional_ids=(transactional_id,)
        )
    (entry,) = decode_describe_transactions(body)
    _check(entry.error, f"describe {transactional_id}")
    partitions = [f"{topic}-{partition}" for topic, partition in entry.partitions]
    if as_json:
        echo_json(
            {
                "transactional_id": entry.transactional_id,
                "state": entry.state,
                "producer_id": entry.producer_id,
                "producer_epoch": entry.producer_epoch,
                "timeout_ms": entry.timeout_ms,
                "start_time_ms": entry.start_time_ms,
                "partitions": partitions,
            }
        )
        return
    print_table(
        None,
        [
            "TRANSACTIONAL ID",
            "STATE",
            "PRODUCER ID",
            "EPOCH",
            "TIMEOUT MS",
            "STARTED",
            "PARTITIONS",
        ],
        [
            (
                entry.transactional_id,
                entry.state,
                entry.producer_id,
                entry.producer_epoch,
                entry.timeout_ms,
                _time(entry.start_time_ms),
                ", ".join(partitions) or "-",
            )
        ],
    )


@txn.command()
@click.option("--topic", required=True)
@click.option("--partition", type=click.IntRange(min=0), required=True)
@click.option(
    "--start-offset",
    type=click.IntRange(min=0),
    default=None,
    help="First offset of the hanging transaction (see `odradek producers describe`).",
)
@click.option("--producer-id", type=click.IntRange(min=0), default=None)
@connection_options
def abort(
    topic: str,
    partition: int,
    start_offset: int | None,
    producer_id: int | None,
    bootstrap_server: str,
    timeout: float,
) -> None:
    """Abort a hanging transaction on one partition (KIP-664): write an ABORT marker for the
    producer whose open transaction starts at --start-offset (or is --producer-id's; with
    neither, the only open transaction on the partition)."""
    with WireClient(bootstrap_server, timeout) as client:
        states = _producer_states(client, topic, [partition])[partition]
        open_transactions = [state for state in states if state.current_txn_start_offset >= 0]
        if start_offset is not None:
            open_transactions = [
                s for s in open_transactions if s.current_txn_start_offset == start_offset
            ]
        if producer_id is not None:
            open_transactions = [s for s in open_transactions if s.producer_id == producer_id]
        if len(open_transactions) != 1:
            found = len(open_transactions)
            raise click.ClickException(
                f"{found} open transaction(s) on {topic}-{partition} match; "
                "give --start-offset or --producer-id"
                if found
                else f"no matching open transaction on {topic}-{partition}"
            )
        state = open_transactions[0]
        marker = client.build(
            ApiKey.WRITE_TXN_MARKERS,
            1,
            "WritableTxnMarker",
            producer_id=state.producer_id,
            producer_epoch=state.producer_epoch,
            transaction_result=False,
            coordinator_epoch=max(int(state.coordinator_epoch), 0),
            topics=(
                client.build(
                    ApiKey.WRITE_TXN_MARKERS,
                    1,
                    "WritableTxnMarkerTopic",
                    name=topic,
                    partition_indexes=(partition,),
                ),
            ),
        )
        response = client.request(ApiKey.WRITE_TXN_MARKERS, 1, markers=(marker,))
    _check(response.markers[0].topics[0].partitions[0].error_code, "write the ABORT marker")
    click.echo(
        f"aborted the transaction of producer {state.producer_id} (epoch "
        f"{state.producer_epoch}) on {topic}-{partition} from offset "
        f"{state.current_txn_start_offset}"
    )


def _broker_addresses(bootstrap_server: str, timeout: float) -> list[str]:
    """`host:port` of every broker the bootstrap broker's Metadata lists (one alone)."""
    with WireClient(bootstrap_server, timeout) as client:
        metadata = client.request(ApiKey.METADATA, 1, topics=())
    return [f"{broker.host}:{broker.port}" for broker in metadata.brokers]


def _coordinator_address(transactional_id: str, bootstrap_server: str, timeout: float) -> str:
    """`host:port` of the transaction coordinator of `transactional_id` (FindCoordinator v3,
    retrying while the coordinator is loading or being elected, at most `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    with WireClient(bootstrap_server, timeout) as client:
        while True:
            response = client.request(
                ApiKey.FIND_COORDINATOR, 3, key=transactional_id, key_type=_TRANSACTION_KEY
            )
            code = ErrorCode(response.error_code)
            if code is ErrorCode.none:
                return f"{response.host}:{response.port}"
            if code not in _RETRIABLE or time.monotonic() >= deadline:
                _check(code, f"find the coordinator of {transactional_id}")
            time.sleep(0.2)


def _producer_states(client: WireClient, topic: str, partitions: list[int]) -> dict[int, Any]:
    request_topic = client.build(
        ApiKey.DESCRIBE_PRODUCERS, 0, "TopicRequest", name=topic, partition_indexes=partitions
    )
    response = client.request(ApiKey.DESCRIBE_PRODUCERS, 0, topics=(request_topic,))
    answered: dict[int, Any] = {}
    for entry in response.topics[0].partitions:
        _check(entry.error_code, f"describe producers of {topic}-{entry.partition_index}")
        answered[int(entry.partition_index)] = entry.active_producers
    return answered


@click.group()
def producers() -> None:
    """Inspect the producers partitions remember (idempotence and transactions)."""


@producers.command(name="describe")
@click.argument("topic")
@click.option("--partition", "only", type=click.IntRange(min=0), multiple=True)
@json_option
@connection_options
def describe_producers(
    topic: str, only: tuple[int, ...], as_json: bool, bootstrap_server: str, timeout: float
) -> None:
    """Each partition's producers: epoch, last sequence and timestamp, open transaction."""
    with WireClient(bootstrap_server, timeout) as client:
        partitions = list(only)
        if not partitions:
            metadata = client.request(
                ApiKey.METADATA,
                4,
                topics=(client.build(ApiKey.METADATA, 4, "MetadataRequestTopic", name=topic),),
                allow_auto_topic_creation=False,
            )
            _check(metadata.topics[0].error_code, f"describe {topic}")
            partitions = sorted(p.partition_index for p in metadata.topics[0].partitions)
        states = _producer_states(client, topic, partitions)
    rows = [
        (
            partition,
            int(state.producer_id),
            int(state.producer_epoch),
            int(state.last_sequence),
            _time(int(state.last_timestamp)),
            int(state.coordinator_epoch),
            int(state.current_txn_start_offset),
        )
        for partition, entries in sorted(states.items())
        for state in entries
    ]
    if as_json:
        names = (
            "partition",
            "producer_id",
            "producer_epoch",
            "last_sequence",
            "last_timestamp",
            "coordinator_epoch",
            "current_txn_start_offset",
        )
        for row in rows:
            values = dict(zip(names, row, strict=True))
            values["last_timestamp"] = next(
                int(s.last_timestamp) for s in states[row[0]] if int(s.producer_id) == row[1]
            )
            echo_json(values)
        return
    print_table(
        None,
        [
            "PARTITION",
            "PRODUCER ID",
            "EPOCH",
            "LAST SEQUENCE",
            "LAST TIMESTAMP",
            "COORDINATOR EPOCH",
            "TXN START OFFSET",
        ],
        [(*row[:6], row[6] if row[6] >= 0 else "-") for row in rows],
    )
