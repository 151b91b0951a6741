"""`odradek produce TOPIC`: one message per input line, in the spirit of `kcat -P`."""

from __future__ import annotations

from typing import IO, Any

import click
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from odradek.cli.output import (
    Session,
    connection_options,
    count_of,
    describe_error,
    parse_pairs,
)

# Delivery reports for messages that failed are listed one per line up to this many.
_FAILURES_LISTED = 5


class _Deliveries:
    """Counts delivery reports and keeps the first failures."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.failures: list[str] = []

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
            return
        self.failed += 1
        if len(self.failures) < _FAILURES_LISTED:
            self.failures.append(
                f"not delivered to {message.topic()} [{message.partition()}]: "
                f"{describe_error(error)}"
            )


def _split(line: bytes, key_separator: bytes | None) -> tuple[bytes | None, bytes]:
    if key_separator is None:
        return None, line
    key, separator, value = line.partition(key_separator)
    # As kcat does: a line without the separator is a value without a key.
    return (key, value) if separator else (None, line)


def _produce_one(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes,
    on_delivery: _Deliveries,
    extra: dict[str, Any],
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery, **extra)
            return
        except BufferError:
            # The local queue is full: let deliveries drain it.
            producer.poll(0.1)


@click.command()
@click.argument("topic")
@click.option(
    "--key-separator",
    "-K",
    default=None,
    metavar="SEP",
    help="The part of a line before the first SEP is the key, the rest the value;"
    " a line without SEP is a value without a key.",
)
@click.option(
    "--header",
    "-H",
    "headers",
    multiple=True,
    metavar="KEY=VALUE",
    help="A header added to every message; repeatable.",
)
@click.option(
    "--partition",
    "-p",
    type=click.IntRange(min=0),
    default=None,
    help="Produce to this partition (default: the partitioner picks, by key).",
)
@click.option(
    "--acks",
    type=click.Choice(["0", "1", "all"]),
    default="all",
    show_default=True,
    help="Acknowledgements the broker must give before a message counts as delivered.",
)
@click.option(
    "--compression",
    type=click.Choice(["none", "gzip", "snappy", "lz4", "zstd"]),
    default="none",
    show_default=True,
    help="Compression codec for record batches.",
)
@click.option(
    "--file",
    "-f",
    "input_file",
    type=click.File("rb"),
    default="-",
    help="Read messages from this file instead of stdin.",
)
@connection_options
def produce(
    topic: str,
    key_separator: str | None,
    headers: tuple[str, ...],
    partition: int | None,
    acks: str,
    compression: str,
    input_file: IO[bytes],
    bootstrap_server: str,
    timeout: float,
) -> None:
    """Produce each line of stdin (or --file) to TOPIC as one message.

    The trailing newline is not part of the message; an empty line is an empty message.
    Exits 1 if any message was not acknowledged.
    """
    if key_separator == "":
        raise click.BadParameter("must not be empty", param_hint="--key-separator")
    session = Session(bootstrap_server, timeout)
    message_headers = [(key, value.encode()) for key, value in parse_pairs(headers, "--header")]
    separator = key_separator.encode() if key_separator is not None else None
    delivery_timeout = max(30.0, timeout)
    producer = Producer(
        session.config(
            **{
                "acks": acks,
                "compression.type": compression,
                # Stage 3 brings idempotent producers to the broker.
                "enable.idempotence": False,
                "linger.ms": 5,
                "request.timeout.ms": int(timeout * 1000),
                "message.timeout.ms": int(delivery_timeout * 1000),
            }
        )
    )
    try:
        # Fail fast, and clearly, when no broker answers.
        producer.list_topics(timeout=timeout)
    except KafkaException as exception:
        producer.poll(0)
        raise session.error(f"produce to {topic!r}", exception) from None

    deliveries = _Deliveries()
    extra: dict[str, Any] = {"partition": partition} if partition is not None else {}
    if message_headers:
        extra["headers"] = message_headers
    sent = 0
    refused: str | None = None
    for line in input_file:
        key, value = _split(line.removesuffix(b"\n"), separator)
        try:
            _produce_one(producer, topic, key, value, deliveries, extra)
        except KafkaException as exception:
            # Refused before sending (e.g. a partition the topic does not have): stop reading.
            refused = describe_error(exception.args[0])
            break
        sent += 1
        producer.poll(0)
    unfinished = producer.flush(delivery_timeout + 5)

    for failure in deliveries.failures:
        click.echo(failure, err=True)
    not_delivered = deliveries.failed + unfinished
    click.echo(f"{count_of(deliveries.delivered, 'message')} delivered to {topic}.", err=True)
    if refused is not None:
        raise click.ClickException(f"cannot produce to {topic!r}: {refused}")
    if not_delivered:
        raise click.ClickException(f"{not_delivered} of {count_of(sent, 'message')} not delivered")
