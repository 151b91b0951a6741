"""Sinks: offsets beside the rows, owner-token fencing and the idempotent consumer's memory, on
SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from odradek.client import FencedError, PostgresSink, Sink, SqliteSink


@pytest.fixture(params=["sqlite", "postgres"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sink]:
    if request.param == "sqlite":
        chosen: Sink = SqliteSink(tmp_path / "sink.db")
    else:
        chosen = PostgresSink(request.getfixturevalue("postgres_dsn"))
    with chosen:
        yield chosen


def twin(sink: Sink) -> Sink:
    """A second connection to the same database: another processor."""
    if isinstance(sink, SqliteSink):
        return SqliteSink(sink.path)
    assert isinstance(sink, PostgresSink)
    return PostgresSink(sink.dsn)


def test_claim_returns_the_stored_offset_and_a_new_token(sink: Sink) -> None:
    with sink.transaction() as tx:
        first = sink.claim(tx, "g", "orders", 0)
    assert (first.owner_token, first.next_offset) == (1, None)
    with sink.transaction() as tx:
        sink.store_offset(tx, "g", "orders", 0, 42, first.owner_token)
    with sink.transaction() as tx:
        second = sink.claim(tx, "g", "orders", 0)
    assert (second.owner_token, second.next_offset) == (2, 42)
    assert sink.stored_offsets("g") == {("orders", 0): 42}


def test_a_stale_owner_token_rolls_back_the_whole_transaction(sink: Sink) -> None:
    with sink.transaction() as tx:
        tx.execute("CREATE TABLE rows (value INTEGER)")
    with sink.transaction() as tx:
        zombie = sink.claim(tx, "g", "orders", 0)
    with twin(sink) as successor, successor.transaction() as tx:
        successor.claim(tx, "g", "orders", 0)

    marker = sink.placeholder

    def zombie_commit() -> None:
        with sink.transaction() as tx:
            tx.execute(f"INSERT INTO rows (value) VALUES ({marker})", (1,))
            sink.store_offset(tx, "g", "orders", 0, 10, zombie.owner_token)

    with pytest.raises(FencedError, match="owned by another processor"):
        zombie_commit()
    with sink.transaction() as tx:
        assert tx.execute("SELECT count(*) FROM rows").fetchone()[0] == 0
    assert sink.stored_offsets("g") == {}


def test_a_savepoint_undoes_only_its_own_writes(sink: Sink) -> None:
    marker = sink.placeholder
    with sink.transaction() as tx:
        tx.execute("CREATE TABLE rows (value INTEGER)")
        tx.execute(f"INSERT INTO rows (value) VALUES ({marker})", (1,))

        def failing_write() -> None:
            with sink.savepoint(tx):
                tx.execute(f"INSERT INTO rows (value) VALUES ({marker})", (2,))
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            failing_write()
    with sink.transaction() as tx:
        assert [r[0] for r in tx.execute("SELECT value FROM rows").fetchall()] == [1]


def test_call_in_savepoint_undoes_only_a_failed_call_and_returns_a_result(sink: Sink) -> None:
    marker = sink.placeholder

    def write(value: int, fail: bool) -> int:
        tx.execute(f"INSERT INTO rows (value) VALUES ({marker})", (value,))
        if fail:
            raise ZeroDivisionError
        return value

    with sink.transaction() as tx:
        tx.execute("CREATE TABLE rows (value INTEGER)")
        assert sink.call_in_savepoint(tx, write, 1, False) == 1
        with pytest.raises(ZeroDivisionError):
            sink.call_in_savepoint(tx, write, 2, True)
        assert sink.call_in_savepoint(tx, write, 3, False) == 3
    with sink.transaction() as tx:
        assert sorted(r[0] for r in tx.execute("SELECT value FROM rows").fetchall()) == [1, 3]
    # The savepoints run on a cursor kept per connection: a reopened sink gets a new one.
    sink.close()
    sink.open()
    with sink.transaction() as tx:
        assert sink.call_in_savepoint(tx, write, 4, False) == 4
        with pytest.raises(ZeroDivisionError):
            sink.call_in_savepoint(tx, write, 5, True)
    with sink.transaction() as tx:
        values = sorted(r[0] for r in tx.execute("SELECT value FROM rows").fetchall())
    assert values == [1, 3, 4]


def test_mark_applied_is_true_once_per_scope(sink: Sink) -> None:
    with sink.transaction() as tx:
        assert sink.mark_applied(tx, "mail", "id-1")
        assert not sink.mark_applied(tx, "mail", "id-1")
        assert sink.mark_applied(tx, "sms", "id-1")

    def rolled_back() -> None:
        with sink.transaction() as tx:
            assert sink.mark_applied(tx, "mail", "id-2")
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        rolled_back()
    with sink.transaction() as tx:
        assert sink.mark_applied(tx, "mail", "id-2"), "a rolled-back mark is forgotten"
