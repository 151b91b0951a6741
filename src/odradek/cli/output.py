"""Shared by the client commands (`topic`, `produce`, `consume`): the connection options, the
client configuration, turning Kafka errors into one-line messages, tables and JSON lines.

These commands talk to a broker over the Kafka protocol with confluent-kafka only, so they work
the same against Odradek and any other Kafka cluster.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import click
from confluent_kafka import KafkaError, KafkaException
from rich.console import Console
from rich.table import Table

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_TIMEOUT = 10.0

F = TypeVar("F", bound=Callable[..., Any])

# librdkafka prints its own log lines ("Connect to ipv4#... failed") to stderr; the commands
# report the same facts once, in their error message, so its log goes nowhere.
_LIBRDKAFKA_LOG = logging.getLogger("odradek.cli.librdkafka")
_LIBRDKAFKA_LOG.addHandler(logging.NullHandler())
_LIBRDKAFKA_LOG.propagate = False

# Error codes that mean "no answer from the cluster", not "the cluster said no".
_UNREACHABLE = {
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError.REQUEST_TIMED_OUT,
}


def connection_options(command: F) -> F:
    """`--bootstrap-server` and `--timeout`, shared by every client command."""
    command = click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        help="Seconds to wait for each request to the cluster.",
    )(command)
    return click.option(
        "--bootstrap-server",
        "-b",
        "bootstrap_server",
        envvar="ODRADEK_BOOTSTRAP",
        default=DEFAULT_BOOTSTRAP,
        show_default=True,
        metavar="HOST:PORT",
        help="Broker(s) to connect to, comma separated (env ODRADEK_BOOTSTRAP).",
    )(command)


class Session:
    """The settings every client of one command shares, and the last connection-level error
    librdkafka reported (e.g. "Connection refused") so a timeout can say why it happened."""

    def __init__(self, bootstrap_server: str, timeout: float) -> None:
        self.bootstrap_server = bootstrap_server
        self.timeout = timeout
        self.last_error: KafkaError | None = None

    def config(self, **extra: Any) -> dict[str, Any]:
        timeout_ms = int(self.timeout * 1000)
        return {
            "bootstrap.servers": self.bootstrap_server,
            "socket.timeout.ms": max(timeout_ms, 10),
            "socket.connection.setup.timeout.ms": max(timeout_ms, 1000),
            "logger": _LIBRDKAFKA_LOG,
            "error_cb": self._on_error,
            **extra,
        }

    def _on_error(self, error: KafkaError) -> None:
        self.last_error = error

    def wait(self, client: Any, future: Future[Any], action: str) -> Any:
        """The result of an admin future; serves the client's callbacks while it waits."""
        # The request itself times out after `timeout`; the margin only guards against a
        # future that librdkafka never completes.
        deadline = time.monotonic() + self.timeout + 5
        while not future.done() and time.monotonic() < deadline:
            client.poll(0.05)
        try:
            return future.result(timeout=0)
        except KafkaException as exception:
            raise self.error(action, exception) from None
        except TimeoutError:
            raise self.unreachable(action) from None

    def error(self, action: str, exception: Exception) -> click.ClickException:
        """A one-line message for a failed request: `cannot ACTION: message (ERROR_NAME)`."""
        error = exception.args[0] if exception.args else None
        if not isinstance(error, KafkaError):
            return click.ClickException(f"cannot {action}: {exception}")
        if error.code() in _UNREACHABLE:
            return self.unreachable(action)
        return click.ClickException(f"cannot {action}: {describe_error(error)}")

    def unreachable(self, action: str) -> click.ClickException:
        reason = f": {self.last_error.str()}" if self.last_error is not None else ""
        return click.ClickException(
            f"cannot {action}: no answer from {self.bootstrap_server} "
            f"within {self.timeout:g}s{reason}"
        )


def wait_deleted(
    session: Session, client: Any, futures: Mapping[str, Future[Any]], noun: str
) -> None:
    """Wait for each of a delete request's futures (one per `noun`, e.g. topic), echoing each
    deletion; every one is tried, then each failure is reported and the command fails once."""
    failures = []
    for name, future in futures.items():
        try:
            session.wait(client, future, f"delete {noun} {name!r}")
        except click.ClickException as failure:
            failures.append(failure.message)
        else:
            click.echo(f"Deleted {noun} {name}.", err=True)
    if failures:
        for message in failures[:-1]:
            click.echo(f"Error: {message}", err=True)
        raise click.ClickException(failures[-1])


def describe_error(error: KafkaError) -> str:
    """`message (ERROR_NAME)`, e.g. `Topic 'x' already exists. (TOPIC_ALREADY_EXISTS)`."""
    message = error.str()
    name = error.name()
    return message if name in message else f"{message} ({name})"


def parse_pairs(values: Iterable[str], option: str) -> list[tuple[str, str]]:
    """`key=value` options in order; the value may itself contain `=`."""
    pairs = []
    for value in values:
        key, separator, item = value.partition("=")
        if not separator or not key:
            raise click.BadParameter(f"{value!r} is not key=value", param_hint=option)
        pairs.append((key, item))
    return pairs


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console = Console()
    if not console.is_terminal:
        # Piped output: never fold a long config value or topic name across lines.
        console = Console(width=max(console.width, 1000))
    console.print(table)


def count_of(number: int, noun: str) -> str:
    """`1 message`, `2 messages`."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


def decode(data: bytes | None, encoding: str) -> str | None:
    """Message bytes as JSON text: `utf-8` (invalid bytes become U+FFFD) or `base64`."""
    if data is None:
        return None
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    return data.decode("utf-8", errors="replace")
