"""LeaderEpochFileCache and the leader-epoch-checkpoint file: Kafka's rules and format."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.storage.leader_epoch import (
    CHECKPOINT_FILE_NAME,
    UNDEFINED_EPOCH,
    UNDEFINED_EPOCH_OFFSET,
    EpochEntry,
    LeaderEpochCheckpointCorrupt,
    LeaderEpochCheckpointFile,
    LeaderEpochFileCache,
    MemoryLeaderEpochCheckpoint,
    decode_checkpoint,
    encode_checkpoint,
)


def cache_of(*entries: tuple[int, int]) -> LeaderEpochFileCache:
    cache = LeaderEpochFileCache()
    for epoch, offset in entries:
        cache.assign(epoch, offset)
    return cache


def entries(cache: LeaderEpochFileCache) -> list[tuple[int, int]]:
    return [(entry.epoch, entry.start_offset) for entry in cache.epoch_entries()]


# ---- assign ---------------------------------------------------------------------------------


def test_assign_appends_new_epochs_in_order() -> None:
    cache = cache_of((0, 0), (1, 10), (3, 25))
    assert entries(cache) == [(0, 0), (1, 10), (3, 25)]
    assert cache.latest_epoch == 3
    assert cache.earliest_entry == EpochEntry(0, 0)


def test_assign_of_the_latest_epoch_at_a_later_offset_changes_nothing() -> None:
    checkpoint = MemoryLeaderEpochCheckpoint()
    cache = LeaderEpochFileCache(checkpoint)
    assert cache.assign(2, 5)
    assert not cache.assign(2, 9)  # every batch of epoch 2 assigns; only the first counts
    assert not cache.assign(2, 5)
    assert entries(cache) == [(2, 5)]
    assert checkpoint.writes == 1


def test_assign_of_the_latest_epoch_at_a_lower_offset_moves_its_start() -> None:
    cache = cache_of((0, 0), (2, 10))
    assert cache.assign(2, 7)
    assert entries(cache) == [(0, 0), (2, 7)]


def test_a_new_epoch_at_a_lower_offset_removes_the_later_entries() -> None:
    # A new leader whose log ends before the entries a former leader left behind.
    cache = cache_of((0, 0), (1, 10), (2, 20))
    assert cache.assign(3, 15)
    assert entries(cache) == [(0, 0), (1, 10), (3, 15)]


def test_an_older_epoch_at_a_later_offset_removes_the_newer_epochs() -> None:
    cache = cache_of((0, 0), (2, 50))
    assert cache.assign(1, 100)
    assert entries(cache) == [(0, 0), (1, 100)]


def test_a_new_epoch_at_the_same_offset_replaces_an_epoch_that_wrote_nothing() -> None:
    cache = cache_of((0, 0), (1, 10))
    assert cache.assign(2, 10)
    assert entries(cache) == [(0, 0), (2, 10)]


@pytest.mark.parametrize(("epoch", "offset"), [(-1, 0), (0, -1)])
def test_assign_refuses_negative_values(epoch: int, offset: int) -> None:
    with pytest.raises(ValueError, match="invalid partition leader epoch"):
        LeaderEpochFileCache().assign(epoch, offset)


# ---- end_offset_for -------------------------------------------------------------------------


def test_end_offset_for_the_latest_epoch_is_the_log_end_offset() -> None:
    cache = cache_of((0, 0), (2, 10))
    assert cache.end_offset_for(2, 42) == (2, 42)


def test_end_offset_for_an_older_epoch_is_the_start_of_the_next() -> None:
    cache = cache_of((0, 0), (2, 10), (4, 30))
    assert cache.end_offset_for(0, 42) == (0, 10)
    assert cache.end_offset_for(2, 42) == (2, 30)


def test_end_offset_for_an_unknown_epoch_between_known_ones_answers_the_one_below() -> None:
    cache = cache_of((0, 0), (2, 10), (4, 30))
    assert cache.end_offset_for(1, 42) == (0, 10)
    assert cache.end_offset_for(3, 42) == (2, 30)


def test_end_offset_for_an_epoch_below_every_entry_is_the_first_start() -> None:
    cache = cache_of((3, 100), (5, 200))
    assert cache.end_offset_for(1, 300) == (1, 100)


def test_end_offset_for_an_epoch_above_every_entry_is_undefined() -> None:
    cache = cache_of((0, 0), (2, 10))
    assert cache.end_offset_for(7, 42) == (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)


def test_end_offset_for_the_undefined_epoch_or_an_empty_cache_is_undefined() -> None:
    undefined = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
    assert cache_of((0, 0)).end_offset_for(UNDEFINED_EPOCH, 5) == undefined
    assert LeaderEpochFileCache().end_offset_for(0, 5) == undefined


# ---- truncation and lookups ------------------------------------------------------------------


def test_truncate_from_end_removes_entries_starting_at_or_after_the_offset() -> None:
    cache = cache_of((0, 0), (1, 10), (2, 20))
    assert cache.truncate_from_end(10) == [EpochEntry(2, 20), EpochEntry(1, 10)]
    assert entries(cache) == [(0, 0)]


def test_truncate_from_end_inside_the_latest_epoch_keeps_it() -> None:
    cache = cache_of((0, 0), (1, 10))
    assert cache.truncate_from_end(15) == []
    assert cache.truncate_from_end(-1) == []
    assert entries(cache) == [(0, 0), (1, 10)]


def test_truncate_from_start_moves_the_covering_epoch_up() -> None:
    cache = cache_of((0, 0), (1, 10), (2, 20))
    removed = cache.truncate_from_start(15)
    assert removed == [EpochEntry(0, 0), EpochEntry(1, 10)]
    assert entries(cache) == [(1, 15), (2, 20)]


def test_truncate_from_start_is_exclusive_at_an_entry_boundary() -> None:
    cache = cache_of((0, 0), (1, 10))
    cache.truncate_from_start(10)
    assert entries(cache) == [(1, 10)]
    assert cache.truncate_from_start(5) == []


def test_epoch_for_offset() -> None:
    cache = cache_of((1, 5), (3, 20))
    assert cache.epoch_for_offset(4) is None
    assert cache.epoch_for_offset(5) == 1
    assert cache.epoch_for_offset(19) == 1
    assert cache.epoch_for_offset(20) == 3
    assert cache.epoch_for_offset(10_000) == 3


def test_previous_and_next_epoch() -> None:
    cache = cache_of((1, 5), (3, 20), (6, 30))
    assert cache.previous_epoch(3) == 1
    assert cache.previous_epoch(1) is None
    assert cache.next_epoch(3) == 6
    assert cache.next_epoch(4) == 6
    assert cache.next_epoch(6) is None
    assert cache.epoch_entry(3) == EpochEntry(3, 20)
    assert cache.epoch_entry(4) is None


def test_entries_in_range_leaves_the_cache_alone() -> None:
    cache = cache_of((0, 0), (1, 10), (2, 20))
    assert cache.entries_in_range(5, 20) == [EpochEntry(0, 5), EpochEntry(1, 10)]
    assert entries(cache) == [(0, 0), (1, 10), (2, 20)]


@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 200)),
        max_size=40,
    )
)
def test_entries_stay_strictly_increasing_in_epoch_and_offset(
    assignments: list[tuple[int, int]],
) -> None:
    cache = LeaderEpochFileCache()
    for epoch, offset in assignments:
        cache.assign(epoch, offset)
        listed = cache.epoch_entries()
        assert all(a.epoch < b.epoch for a, b in itertools.pairwise(listed))
        assert all(a.start_offset < b.start_offset for a, b in itertools.pairwise(listed))
        # The epoch just assigned is always the latest: a newer assignment wins.
        assert cache.latest_epoch == epoch
        assert cache.epoch_for_offset(offset) == epoch


# ---- the checkpoint file --------------------------------------------------------------------


def test_checkpoint_text_is_kafkas_format() -> None:
    data = encode_checkpoint([EpochEntry(0, 0), EpochEntry(3, 1042)])
    assert data == b"0\n2\n0 0\n3 1042\n"
    assert decode_checkpoint(data) == [EpochEntry(0, 0), EpochEntry(3, 1042)]
    assert decode_checkpoint(encode_checkpoint([])) == []
    assert decode_checkpoint(b"") == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"1\n0\n", "unrecognised version 1"),
        (b"0\n2\n0 0\n", "expected 2 entries but found 1"),
        (b"0\n1\n0 0\n1 5\n", "expected 1 entries but found 2"),
        (b"0\n1\n0 0 0\n", "malformed line"),
        (b"0\n1\nzero 0\n", "malformed number"),
        (b"\xff\n", "not ASCII"),
    ],
)
def test_a_corrupt_checkpoint_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(LeaderEpochCheckpointCorrupt, match=message):
        decode_checkpoint(data)


def test_cache_writes_and_reloads_the_checkpoint_file(tmp_path: Path) -> None:
    checkpoint = LeaderEpochCheckpointFile.in_directory(tmp_path)
    assert checkpoint.read() == []  # no file yet
    cache = LeaderEpochFileCache(checkpoint)
    cache.assign(0, 0)
    cache.assign(2, 10)
    cache.assign(5, 30)
    path = tmp_path / CHECKPOINT_FILE_NAME
    assert path.read_bytes() == b"0\n3\n0 0\n2 10\n5 30\n"

    cache.truncate_from_end(30)
    cache.truncate_from_start(4)
    assert path.read_bytes() == b"0\n2\n0 4\n2 10\n"
    assert not list(tmp_path.glob("*.tmp"))

    reloaded = LeaderEpochFileCache(LeaderEpochCheckpointFile(path))
    assert entries(reloaded) == [(0, 4), (2, 10)]


def test_loading_a_checkpoint_applies_kafkas_assign_rules(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE_NAME
    path.write_bytes(b"0\n3\n0 0\n4 20\n2 10\n")  # out of order: the later line wins
    cache = LeaderEpochFileCache(LeaderEpochCheckpointFile(path))
    assert entries(cache) == [(0, 0), (2, 10)]


def test_a_corrupt_checkpoint_file_raises_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE_NAME
    path.write_bytes(b"0\n5\n0 0\n")
    with pytest.raises(LeaderEpochCheckpointCorrupt, match=CHECKPOINT_FILE_NAME):
        LeaderEpochFileCache(LeaderEpochCheckpointFile(path))


def test_clear_and_flush_empties_the_file(tmp_path: Path) -> None:
    checkpoint = LeaderEpochCheckpointFile.in_directory(tmp_path)
    cache = LeaderEpochFileCache(checkpoint)
    cache.assign(1, 0)
    cache.clear_and_flush()
    assert cache.is_empty()
    assert checkpoint.read() == []
