"""Exactly-once sinks: the consumer's offsets live in the database, beside the rows they produced.

Each sink keeps one table of `(group, topic, partition) -> next offset, owner token`. A processor
that is assigned a partition *claims* it: one statement bumps the owner token and returns the
stored offset, which the processor seeks to. Every later offset write is a compare-and-set on that
token, in the same database transaction as the handler's writes: a processor that lost the
partition (a zombie: paused, partitioned, slow) finds the token changed, and its whole transaction
rolls back. confluent-kafka's group metadata is opaque and the KIP-848 protocol has no
generation, so the fence lives here.

A second table remembers which message ids were applied, for the at-least-once idempotent
consumer (`IdempotentConsumer`).
"""

from __future__ import annotations

import abc
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OFFSETS_TABLE = "odradek_offsets"
APPLIED_TABLE = "odradek_applied_messages"


class FencedError(Exception):
    """The owner token of a partition changed: another processor owns it now."""

    def __init__(self, group: str, topic: str, partition: int, token: int) -> None:
        super().__init__(
            f"{topic}[{partition}] of group {group!r} is owned by another processor "
            f"(our owner token {token} is stale): the transaction was rolled back"
        )
        self.topic = topic
        self.partition = partition


@dataclass(frozen=True, slots=True)
class Claim:
    """Ownership of one partition: the token every offset write must match, and where to resume."""

    topic: str
    partition: int
    owner_token: int
    next_offset: int | None  # None: nothing stored yet, start from the reset policy


class Sink(abc.ABC):
    """A database the processor writes to, with its offsets in the same transactions.

    The handler receives the open transaction's DB-API connection (`tx`); it must not commit or
    roll back itself.
    """

    placeholder = "?"

    def __init__(self) -> None:
        self._connection: Any = None
        # A cursor for the toolkit's own per-message statements (savepoints, applied ids), made
        # once per connection: `connection.execute` builds a new cursor per call, which in
        # sqlite3 costs more than running a SAVEPOINT.
        self._cursor: Any = None
        self._cursor_connection: Any = None

    # -- connection management ---------------------------------------------------------------
    @abc.abstractmethod
    def _connect(self) -> Any: ...

    @property
    def commits_survive_power_loss(self) -> bool:
        """Whether a COMMIT that returned is on stable storage (PostgreSQL's default
        synchronous_commit=on; SQLite's synchronous=FULL)."""
        return True

    def open(self) -> None:
        """Connect and create the toolkit's tables (idempotent)."""
        if self._connection is None:
            self._connection = self._connect()
            with self.transaction() as tx:
                for statement in self._schema():
                    tx.execute(statement)

    def close(self) -> None:
        self._cursor = self._cursor_connection = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> Sink:
        self.open()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def connection(self) -> Any:
        if self._connection is None:
            self.open()
        return self._connection

    # -- transactions ------------------------------------------------------------------------
    def _begin_statement(self) -> str:
        return "BEGIN"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """One database transaction: committed on normal exit, rolled back on an exception."""
        tx = self.begin()
        try:
            yield tx
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def begin(self) -> Any:
        """Begin a transaction that outlives one call (the processor's commit interval); end it
        with `commit()` or `rollback()`. Returns the connection (`tx`)."""
        connection = self.connection
        connection.execute(self._begin_statement())
        return connection

    def commit(self) -> None:
        self.connection.execute("COMMIT")

    def rollback(self) -> None:
        self.connection.execute("ROLLBACK")

    def _statements(self, tx: Any) -> Any:
        """A cursor on `tx` for statements whose results are read at once (or never), reused
        while `tx` is the same connection."""
        if self._cursor is None or self._cursor_connection is not tx:
            self._cursor = tx.cursor()
            self._cursor_connection = tx
        return self._cursor

    @contextlib.contextmanager
    def savepoint(self, tx: Any, name: str = "odradek_message") -> Iterator[Any]:
        """A nested scope inside `tx`: an exception undoes only the writes made inside it."""
        execute = self._statements(tx).execute
        execute(f"SAVEPOINT {name}")
        try:
            yield tx
        except BaseException:
            execute(f"ROLLBACK TO SAVEPOINT {name}")
            execute(f"RELEASE SAVEPOINT {name}")
            raise
        execute(f"RELEASE SAVEPOINT {name}")

    def call_in_savepoint(self, tx: Any, function: Callable[..., Any], *arguments: Any) -> Any:
        """`function(*arguments)` inside a savepoint of `tx`: `savepoint`'s behaviour, without
        a context manager per call (the processor runs one per message), its statements on one
        reused cursor (in sqlite3 a SAVEPOINT and RELEASE pair cost ~1 µs that way, ~4 µs
        through `connection.execute`)."""
        execute = self._statements(tx).execute
        execute("SAVEPOINT odradek_message")
        try:
            result = function(*arguments)
        except BaseException:
            execute("ROLLBACK TO SAVEPOINT odradek_message")
            execute("RELEASE SAVEPOINT odradek_message")
            raise
        execute("RELEASE SAVEPOINT odradek_message")
        return result

    # -- offsets and owner tokens ------------------------------------------------------------
    def _schema(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} ("
            " group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id INTEGER NOT NULL,"
            " next_offset BIGINT, owner_token BIGINT NOT NULL,"
            " PRIMARY KEY (group_id, topic, partition_id))",
            f"CREATE TABLE IF NOT EXISTS {APPLIED_TABLE} ("
            " scope TEXT NOT NULL, message_id TEXT NOT NULL,"
            " PRIMARY KEY (scope, message_id))",
        ]

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder)

    def claim(self, tx: Any, group: str, topic: str, partition: int) -> Claim:
        """Take ownership of a partition: bump its owner token, return it and the stored offset."""
        row = tx.execute(
            self._sql(
                f"INSERT INTO {OFFSETS_TABLE} (group_id, topic, partition_id, next_offset,"
                " owner_token) VALUES (?, ?, ?, NULL, 1)"
                " ON CONFLICT (group_id, topic, partition_id)"
                f" DO UPDATE SET owner_token = {OFFSETS_TABLE}.owner_token + 1"
                " RETURNING owner_token, next_offset"
            ),
            (group, topic, partition),
        ).fetchone()
        return Claim(topic, partition, int(row[0]), None if row[1] is None else int(row[1]))

    def store_offset(
        self, tx: Any, group: str, topic: str, partition: int, next_offset: int, owner_token: int
    ) -> None:
        """Compare-and-set the next offset; `FencedError` if the owner token moved on."""
        cursor = tx.execute(
            self._sql(
                f"UPDATE {OFFSETS_TABLE} SET next_offset = ?"
                " WHERE group_id = ? AND topic = ? AND partition_id = ? AND owner_token = ?"
            ),
            (next_offset, group, topic, partition, owner_token),
        )
        if cursor.rowcount != 1:
            raise FencedError(group, topic, partition, owner_token)

    def stored_offsets(self, group: str) -> dict[tuple[str, int], int]:
        """The committed `(topic, partition) -> next offset` of a group (outside a transaction)."""
        with self.transaction() as tx:
            rows = tx.execute(
                self._sql(
                    f"SELECT topic, partition_id, next_offset FROM {OFFSETS_TABLE}"
                    " WHERE group_id = ? AND next_offset IS NOT NULL"
                ),
                (group,),
            ).fetchall()
        return {(str(topic), int(partition)): int(offset) for topic, partition, offset in rows}

    # -- idempotent consumer -----------------------------------------------------------------
    def mark_applied(self, tx: Any, scope: str, message_id: str) -> bool:
        """Record `message_id` as applied in `tx`; False if it already was."""
        cursor = self._statements(tx)
        cursor.execute(
            self._sql(
                f"INSERT INTO {APPLIED_TABLE} (scope, message_id) VALUES (?, ?)"
                " ON CONFLICT (scope, message_id) DO NOTHING"
            ),
            (scope, message_id),
        )
        return bool(cursor.rowcount == 1)


class SqliteSink(Sink):
    """A SQLite database file (stdlib sqlite3), in WAL mode, synchronous=FULL by default.

    SQLite has one writer at a time: every transaction starts with BEGIN IMMEDIATE, so claims
    and offset compare-and-sets of concurrent processors are serialised.

    `synchronous` (SQLite's PRAGMA synchronous in WAL mode): FULL fsyncs the WAL at every
    commit, so a commit survives a power loss. NORMAL fsyncs only at checkpoints: a commit
    survives a crash of the process (SIGKILL) but the last ones can roll back in a power loss
    or OS crash — always whole transactions, the database stays consistent. Exactly-once keeps
    its offsets in the same transactions, so a rolled-back commit takes its offsets with it and
    the input is processed again: the guarantee holds under NORMAL (only a commit already
    reported to someone, e.g. in `on_after_commit`, can be undone). At-least-once commits its
    offsets to Kafka after the database commit, so it needs FULL: under NORMAL a power loss could
    drop rows whose offsets Kafka already has (`Processor` refuses that combination).
    """

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 30.0, synchronous: str = "FULL"
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(
                f"synchronous={synchronous!r}: choose FULL, EXTRA or NORMAL (OFF loses "
                "consistency in a power loss)"
            )

    @property
    def commits_survive_power_loss(self) -> bool:
        return self.synchronous != "NORMAL"

    def __repr__(self) -> str:
        return f"SqliteSink({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self.synchronous}")
        return connection

    def _begin_statement(self) -> str:
        return "BEGIN IMMEDIATE"


class PostgresSink(Sink):
    """A PostgreSQL database through psycopg 3; `tx` is a `psycopg.Connection` (use `%s`)."""

    placeholder = "%s"

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.dsn = dsn

    def __repr__(self) -> str:
        return "PostgresSink(...)"  # the DSN may hold a password

    def _connect(self) -> Any:
        import psycopg

        # Autocommit, with explicit BEGIN/COMMIT from `transaction()`: one code path for both
        # sinks, and no transaction left open between batches.
        return psycopg.connect(self.dsn, autocommit=True)
