"""`odradek consume TOPIC`: print messages, in the spirit of `kcat -C`.

Partitions are assigned with explicit offsets (no consumer group, nothing committed).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable

import click
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from odradek.cli.output import (
    Session,
    connection_options,
    count_of,
    decode,
    describe_error,
    echo_json,
)

# librdkafka's RD_KAFKA_OFFSET_TAIL(n): start n messages before the end of the partition.
_OFFSET_TAIL_BASE = -2000

_TIMESTAMP_TYPES = {TIMESTAMP_CREATE_TIME: "CreateTime", TIMESTAMP_LOG_APPEND_TIME: "LogAppendTime"}


def _start_offset(from_beginning: bool, offset: int | None) -> int:
    if from_beginning:
        return OFFSET_BEGINNING
    if offset is None:
        return OFFSET_END
    if offset < 0:
        return _OFFSET_TAIL_BASE + offset
    return offset


def _headers(message: Message) -> list[tuple[str, bytes | None]]:
    headers = message.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [(key, value.encode() if isinstance(value, str) else value) for key, value in pairs]


def _as_json(message: Message, encoding: str) -> dict[str, object]:
    timestamp_type, timestamp = message.timestamp()
    return {
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp": timestamp if timestamp_type in _TIMESTAMP_TYPES else None,
        "timestamp_type": _TIMESTAMP_TYPES.get(timestamp_type),
        "key": decode(message.key(), encoding),
        "value": decode(message.value(), encoding),
        "headers": [[key, decode(value, encoding)] for key, value in _headers(message)],
    }


def _as_text(message: Message, print_key: bool, print_headers: bool, key_separator: bytes) -> bytes:
    line = b""
    if print_headers:
        line += b",".join(key.encode() + b"=" + (value or b"") for key, value in _headers(message))
        line += key_separator
    if print_key:
        line += (message.key() or b"") + key_separator
    return line + (message.value() or b"") + b"\n"


@click.command()
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at each partition's earliest offset.")
@click.option(
    "--offset",
    "-o",
    type=int,
    default=None,
    help="Start at this offset in each partition; negative: that many messages before the end."
    " Default: the end (new messages only).",
)
@click.option(
    "--partition",
    "-p",
    "partitions",
    type=click.IntRange(min=0),
    multiple=True,
    help="Read only this partition; repeatable. Default: all.",
)
@click.option(
    "--max-messages",
    "-c",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many messages.",
)
@click.option(
    "--exit-at-end",
    "-e",
    is_flag=True,
    help="Stop when every partition has been read to its end.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per message: topic, partition, offset, timestamp, timestamp_type,"
    " key, value, headers (a list of [key, value]). Bytes are decoded per --encoding.",
)
@click.option(
    "--encoding",
    type=click.Choice(["utf-8", "base64"]),
    default="utf-8",
    show_default=True,
    help="How --json renders keys, values and header values: UTF-8 (invalid bytes become"
    " U+FFFD) or base64 (lossless).",
)
@click.option("--print-key", is_flag=True, help="Print KEY<SEP>VALUE.")
@click.option(
    "--key-separator",
    default="\t",
    metavar="SEP",
    help="Separates headers, key and value in text output (default: tab).",
)
@click.option("--print-headers", is_flag=True, help="Print HEADERS<SEP> first, as k1=v1,k2=v2.")
@connection_options
def consume(
    topic: str,
    from_beginning: bool,
    offset: int | None,
    partitions: tuple[int, ...],
    max_messages: int | None,
    exit_at_end: bool,
    as_json: bool,
    encoding: str,
    print_key: bool,
    key_separator: str,
    print_headers: bool,
    bootstrap_server: str,
    timeout: float,
) -> None:
    """Print TOPIC's messages, one per line.

    Each line is the value, after the headers and key with --print-headers and --print-key;
    --json prints one object per message instead. A summary goes to stderr.
    """
    if from_beginning and offset is not None:
        raise click.UsageError("--from-beginning and --offset are mutually exclusive")
    session = Session(bootstrap_server, timeout)
    consumer = Consumer(
        session.config(
            **{
                # assign() only: the group id is never joined nor committed to.
                "group.id": f"odradek-cli-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                # An explicit --offset outside the log is an error, not a silent jump.
                "auto.offset.reset": "error",
                "fetch.wait.max.ms": 100,
            }
        )
    )
    try:
        assignment = _assignment(session, consumer, topic, partitions, offset, from_beginning)
        consumer.assign(assignment)
        output = sys.stdout.buffer

        def emit(message: Message) -> None:
            if as_json:
                echo_json(_as_json(message, encoding))
                return
            output.write(_as_text(message, print_key, print_headers, key_separator.encode()))
            output.flush()

        count = _consume(
            consumer,
            {partition.partition for partition in assignment},
            max_messages,
            exit_at_end,
            emit,
        )
    except KeyboardInterrupt:
        count = None
    except BrokenPipeError:
        # The reader went away (`odradek consume ... | head`): stop quietly, as cat does.
        # Python would complain again when it flushes stdout at exit; point it at devnull.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        count = None
    finally:
        consumer.close()
    if count is not None:
        click.echo(f"{count_of(count, 'message')} consumed from {topic}.", err=True)


def _assignment(
    session: Session,
    consumer: Consumer,
    topic: str,
    partitions: tuple[int, ...],
    offset: int | None,
    from_beginning: bool,
) -> list[TopicPartition]:
    action = f"consume from {topic!r}"
    try:
        metadata = consumer.list_topics(topic, timeout=session.timeout)
    except KafkaException as exception:
        consumer.poll(0)
        raise session.error(action, exception) from None
    topic_metadata = metadata.topics.get(topic)
    if topic_metadata is None:
        raise click.ClickException(f"cannot {action}: no metadata for the topic")
    if topic_metadata.error is not None:
        raise click.ClickException(f"cannot {action}: {describe_error(topic_metadata.error)}")
    existing = sorted(topic_metadata.partitions)
    missing = sorted(set(partitions) - set(existing))
    if missing:
        raise click.ClickException(
            f"cannot {action}: no partition {', '.join(map(str, missing))}"
            f" (the topic has {len(existing)})"
        )
    start = _start_offset(from_beginning, offset)
    chosen = sorted(set(partitions)) if partitions else existing
    return [TopicPartition(topic, partition, start) for partition in chosen]


def _consume(
    consumer: Consumer,
    assigned: set[int],
    max_messages: int | None,
    exit_at_end: bool,
    emit: Callable[[Message], None],
) -> int:
    """Print messages until --max-messages, or every partition's end with --exit-at-end."""
    at_end: set[int] = set()
    count = 0
    while max_messages is None or count < max_messages:
        if exit_at_end and at_end >= assigned:
            break
        message = consumer.poll(0.2)
        if message is None:
            continue
        error = message.error()
        if error is not None:
            partition = message.partition()
            if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                at_end.add(partition)
                continue
            _raise_for(error, message)
        at_end.discard(message.partition())
        emit(message)
        count += 1
    return count


def _raise_for(error: KafkaError, message: Message) -> None:
    where = f"{message.topic()} [{message.partition()}]"
    if error.code() == KafkaError._AUTO_OFFSET_RESET:
        raise click.ClickException(f"offset out of range in {where}: {error.str()}")
    if error.fatal() or not error.retriable():
        raise click.ClickException(f"cannot consume from {where}: {describe_error(error)}")
    # librdkafka retries transient errors (a broker restarting) itself; say so and go on.
    click.echo(f"warning: {where}: {describe_error(error)}", err=True)
