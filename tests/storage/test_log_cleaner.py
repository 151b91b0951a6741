"""Log compaction: latest value per key, tombstones, transactions, offsets, crash safety."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from storage_helpers import append, keyed_batch, read_everything, read_records, small_config

from odradek.protocol.record_batch import COMPRESSION_GZIP
from odradek.storage import LogConfig, LogManager, PartitionLog, StorageError
from odradek.storage.log_manager import log_config_from_overrides

DAY = 86_400_000
NOW = 10 * DAY


def _config(**changes: int | str | float) -> LogConfig:
    base: dict[str, int | str | float] = {
        "cleanup_policy": "compact",
        "segment_bytes": 1024,
        "min_cleanable_dirty_ratio": 0.0,
    }
    base.update(changes)
    return small_config(**base)  # type: ignore[arg-type]


def _open(log_dir: Path, **changes: int | str | float) -> PartitionLog:
    return PartitionLog.open(log_dir, _config(**changes), now_ms=0)


def _put(log: PartitionLog, *items: tuple[bytes | None, bytes | None], ts: int = 1_000) -> int:
    info = append(log, keyed_batch(list(items), timestamp=ts))
    log.high_watermark = log.log_end_offset
    return info.first_offset


def _state(log: PartitionLog) -> dict[bytes, tuple[int, bytes | None]]:
    """key -> (offset, value) of the latest record per key, as a consumer rebuilding a table."""
    table: dict[bytes, tuple[int, bytes | None]] = {}
    for header, record in read_records(log):
        if not header.is_control and record.key is not None:
            table[record.key] = (record.offset, record.value)
    return table


def _fill(log: PartitionLog, rounds: int = 12, keys: int = 5) -> None:
    for round_ in range(rounds):
        _put(log, *[(f"k{k}".encode(), f"v{round_}-{k}".encode() * 4) for k in range(keys)])


def test_keeps_only_the_latest_record_per_key_and_its_offset(log_dir: Path) -> None:
    log = _open(log_dir)
    _fill(log)
    before = _state(log)
    size_before = log.size_in_bytes
    end = log.log_end_offset
    result = log.clean(NOW)
    assert result.cleaned
    assert result.records_removed > 0
    assert result.bytes_after < result.bytes_before
    assert log.size_in_bytes < size_before
    assert _state(log) == before  # same latest values at the same offsets
    assert log.log_end_offset == end
    offsets = [record.offset for _, record in read_records(log)]
    assert offsets == sorted(set(offsets))
    # Each key appears once in the cleaned part (plus what the active segment holds).
    cleaned_end = result.first_dirty_offset
    cleaned_keys = [r.key for _, r in read_records(log) if r.offset < cleaned_end]
    assert len(cleaned_keys) == len(set(cleaned_keys))
    # Appends continue at the old end; every batch still passes its CRC.
    assert _put(log, (b"k0", b"new")) == end
    read_everything(log)
    log.close()


def test_keys_in_the_active_segment_win(log_dir: Path) -> None:
    log = _open(log_dir)
    _put(log, (b"a", b"old-a"), (b"b", b"old-b"))
    _fill(log, rounds=10, keys=3)  # rolls past the first segment
    _put(log, (b"a", b"new-a"))  # lands in the active segment
    assert log.segment_base_offsets()[-1] <= log.log_end_offset - 1
    log.clean(NOW)
    values = [r.value for _, r in read_records(log) if r.key == b"a"]
    assert values == [b"new-a"]
    assert [r.value for _, r in read_records(log) if r.key == b"b"] == [b"old-b"]
    log.close()


def test_tombstones_are_kept_for_delete_retention_ms_then_dropped(log_dir: Path) -> None:
    log = _open(log_dir, delete_retention_ms=DAY)
    _put(log, (b"gone", b"value"), (b"kept", b"value"), ts=1_000)
    _put(log, (b"gone", None), ts=2_000)
    _fill(log, rounds=10, keys=3)
    log.clean(2_000 + DAY, force=True)
    records = [(r.key, r.value) for _, r in read_records(log)]
    assert (b"gone", None) in records
    assert (b"gone", b"value") not in records
    log.clean(2_001 + DAY, force=True)
    keys = [r.key for _, r in read_records(log)]
    assert b"gone" not in keys
    assert b"kept" in keys
    log.close()


def test_keyless_records_are_kept_and_logged_never_dropped_silently(
    log_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A topic written under cleanup.policy=delete, then switched to compact: its keyless
    # records cannot be compacted (nothing supersedes them), so they stay.
    log = _open(log_dir, cleanup_policy="delete")
    _put(log, (None, b"no key"), (b"k", b"v"))  # offsets 0, 1
    append(
        log,
        keyed_batch([(b"k", b"old"), (None, None), (None, b"z")], compression=COMPRESSION_GZIP),
    )  # offsets 2, 3, 4: a superseded record beside a keyless tombstone and value
    _fill(log, rounds=10, keys=2)
    _put(log, (b"k", b"latest"))
    log.update_config(_config())
    with caplog.at_level("WARNING", logger="odradek.storage.log"):
        result = log.clean(NOW)
    assert result.cleaned
    assert result.records_removed > 0
    assert result.keyless_offsets == (0, 3, 4)
    assert "kept 3 record(s) without a key at offset(s) 0, 3, 4" in caplog.text
    keyless = [(record.offset, record.value) for _, record in read_records(log) if not record.key]
    assert keyless == [(0, b"no key"), (3, None), (4, b"z")]
    assert _state(log)[b"k"][1] == b"latest"
    assert all(record.value != b"old" for _, record in read_records(log))
    log.close()


def test_compressed_batches_are_reencoded_with_their_codec(log_dir: Path) -> None:
    log = _open(log_dir)
    for round_ in range(12):
        append(
            log,
            keyed_batch(
                [(b"x", f"{round_}".encode() * 30), (f"u{round_}".encode(), b"u" * 30)],
                compression=COMPRESSION_GZIP,
            ),
        )
    log.high_watermark = log.log_end_offset
    before = _state(log)
    log.clean(NOW)
    assert _state(log) == before
    headers = [header for header, _ in read_records(log)]
    assert all(header.compression == COMPRESSION_GZIP for header in headers)
    log.close()


def test_aborted_transaction_data_is_removed_and_markers_kept(log_dir: Path) -> None:
    log = _open(log_dir)
    aborted_pid, committed_pid = 7, 8
    append(
        log,
        keyed_batch(
            [(b"t", b"aborted")],
            producer_id=aborted_pid,
            producer_epoch=0,
            base_sequence=0,
            transactional=True,
        ),
    )
    append(
        log,
        keyed_batch(
            [(b"c", b"committed")],
            producer_id=committed_pid,
            producer_epoch=0,
            base_sequence=0,
            transactional=True,
        ),
    )
    log.append_control(aborted_pid, 0, commit=False, coordinator_epoch=0, now_ms=1_000)
    log.append_control(committed_pid, 0, commit=True, coordinator_epoch=0, now_ms=1_000)
    log.high_watermark = log.log_end_offset
    _put(log, (b"t", b"plain"))
    _fill(log, rounds=10, keys=2)
    log.clean(NOW)
    records = read_records(log)
    values = [r.value for h, r in records if not h.is_control]
    assert b"aborted" not in values
    assert b"committed" in values
    assert b"plain" in values
    assert sum(1 for h, _ in records if h.is_control) == 2
    log.close()


def test_aborted_data_never_supersedes_committed_data(log_dir: Path) -> None:
    log = _open(log_dir)
    _put(log, (b"k", b"committed"))
    _fill(log, rounds=6, keys=2)
    append(
        log,
        keyed_batch(
            [(b"k", b"aborted")],
            producer_id=9,
            producer_epoch=0,
            base_sequence=0,
            transactional=True,
        ),
    )
    log.append_control(9, 0, commit=False, coordinator_epoch=0, now_ms=1_000)
    log.high_watermark = log.log_end_offset
    _fill(log, rounds=6, keys=2)
    log.clean(NOW)
    values = [r.value for _, r in read_records(log) if r.key == b"k"]
    assert values == [b"committed"]
    log.close()


def test_ongoing_transactions_bound_the_cleanable_range(log_dir: Path) -> None:
    log = _open(log_dir)
    _put(log, (b"k", b"first"))
    append(
        log,
        keyed_batch(
            [(b"k", b"in-txn")],
            producer_id=9,
            producer_epoch=0,
            base_sequence=0,
            transactional=True,
        ),
    )
    _fill(log, rounds=10, keys=2)
    log.high_watermark = log.log_end_offset
    assert log.last_stable_offset == 1
    log.clean(NOW)
    # Nothing at or past the LSO was used to supersede: "first" is still there.
    assert [r.value for _, r in read_records(log) if r.key == b"k"] == [b"first", b"in-txn"]
    log.close()


def test_producer_state_is_preserved_through_compaction(log_dir: Path) -> None:
    log = _open(log_dir)
    pid = 42
    for sequence in range(3):
        append(
            log,
            keyed_batch(
                [(b"k", f"{sequence}".encode())],
                producer_id=pid,
                producer_epoch=0,
                base_sequence=sequence,
            ),
        )
    _fill(log, rounds=10, keys=2)
    _put(log, (b"k", b"overwritten"))  # supersedes the producer's last batch
    log.clean(NOW)
    headers = [h for h in read_everything(log) if h.producer_id == pid]
    # The producer's last batch stays, emptied, with its sequence and offsets.
    assert headers[-1].records_count == 0
    assert headers[-1].base_sequence == 2
    log.close()
    for path in log_dir.glob("*.snapshot"):
        path.unlink()
    reopened = _open(log_dir)  # rebuilds producer state from the cleaned log alone
    [view] = reopened.producer_states()
    assert view.last_sequence == 2
    info = append(
        reopened, keyed_batch([(b"k", b"3")], producer_id=pid, producer_epoch=0, base_sequence=3)
    )
    assert not info.duplicate
    reopened.close()


def test_partially_cleaned_batch_keeps_base_offset_and_last_offset(log_dir: Path) -> None:
    log = _open(log_dir)
    append(
        log,
        keyed_batch(
            [(b"a", b"1"), (b"b", b"1"), (b"c", b"1")],
            producer_id=5,
            producer_epoch=0,
            base_sequence=0,
        ),
    )
    _put(log, (b"b", b"2"))
    _fill(log, rounds=10, keys=2)
    log.clean(NOW)
    first = read_everything(log)[0]
    assert (first.base_offset, first.last_offset_delta, first.records_count) == (0, 2, 2)
    assert (first.producer_id, first.base_sequence) == (5, 0)
    log.close()


def test_policy_ratio_and_lag(log_dir: Path) -> None:
    log = _open(log_dir, cleanup_policy="delete")
    _fill(log)
    assert not log.clean(NOW).cleaned
    log.update_config(_config(min_cleanable_dirty_ratio=0.5))
    assert log.clean(NOW).cleaned
    # Only the newly rolled segments are dirty now: below the ratio, nothing happens.
    _fill(log, rounds=2)
    assert not log.clean(NOW).cleaned
    assert log.clean(NOW, force=True).cleaned
    log.update_config(_config(cleanup_policy="compact,delete", min_compaction_lag_ms=DAY))
    _fill(log, rounds=8)
    assert not log.clean(1_000 + DAY - 1, force=True).cleaned  # every segment is too young
    assert log.clean(1_000 + DAY, force=True).cleaned
    log.close()


@pytest.mark.parametrize("clean", [True, False], ids=["close", "kill-9"])
def test_cleaned_log_survives_reopen(log_dir: Path, clean: bool) -> None:
    log = _open(log_dir)
    _fill(log)
    log.clean(NOW)
    expected = _state(log)
    bases = log.segment_base_offsets()
    if clean:
        log.close()
    else:
        log._close_segments()
    reopened = _open(log_dir)
    assert _state(reopened) == expected
    assert reopened.segment_base_offsets() == bases
    read_everything(reopened)
    reopened.close()


def _crash_during_swap(
    log_dir: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> dict[bytes, tuple[int, bytes | None]]:
    log = _open(log_dir)
    _fill(log)
    expected = _state(log)

    def boom(*_args: object, **_kwargs: object) -> None:
        raise StorageError("crash")

    monkeypatch.setattr(target, boom)
    with pytest.raises(StorageError):
        log.clean(NOW)
    monkeypatch.undo()
    log._close_segments()
    return expected


def test_crash_before_the_swap_commit_keeps_the_originals(
    log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _crash_during_swap(log_dir, monkeypatch, "odradek.storage.cleaner.os.replace")
    assert list(log_dir.glob("*.cleaned"))
    reopened = _open(log_dir)
    assert not list(log_dir.glob("*.cleaned"))
    assert _state(reopened) == expected
    reopened.high_watermark = reopened.log_end_offset  # nothing above it is ever cleaned
    assert reopened.clean(NOW).cleaned
    assert _state(reopened) == expected
    reopened.close()


def test_crash_after_the_swap_commit_finishes_the_swap(
    log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _crash_during_swap(log_dir, monkeypatch, "odradek.storage.log_cleaning.swap_in")
    assert list(log_dir.glob("*.swap"))
    reopened = _open(log_dir)
    assert not list(log_dir.glob("*.swap"))
    assert _state(reopened) == expected
    keys = [
        r.key for _, r in read_records(reopened) if r.offset < reopened.segment_base_offsets()[1]
    ]
    assert len(keys) == len(set(keys))  # the first segment is the cleaned one
    read_everything(reopened)
    reopened.close()


def test_crash_after_originals_were_deleted_finishes_the_swap(
    log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _crash_during_swap(log_dir, monkeypatch, "odradek.storage.log_cleaning.finish_swap")
    assert list(log_dir.glob("*.swap"))
    reopened = _open(log_dir)
    assert _state(reopened) == expected
    read_everything(reopened)
    reopened.close()


def test_crash_with_some_originals_deleted(log_dir: Path) -> None:
    log = _open(log_dir, segment_bytes=600)
    _fill(log)
    expected = _state(log)
    log.close()
    shadow = log_dir.with_name("shadow")
    shutil.copytree(log_dir, shadow)
    cleaned = _open(shadow, segment_bytes=600)
    cleaned.update_config(_config(segment_bytes=1 << 20))  # one group for all segments
    cleaned.clean(NOW)
    group_bases = [int(p.stem) for p in sorted(log_dir.glob("*.log"))][:-1]
    cleaned_first = cleaned._segments[0]
    swap_bytes = os.pread(cleaned_first.fd, cleaned_first.size, 0)
    cleaned.close()
    # As if the process died while deleting the group: the swap is committed, one original
    # (the first) is gone, the others remain.
    (log_dir / f"{group_bases[0]:020d}.log.swap").write_bytes(swap_bytes)
    (log_dir / f"{group_bases[0]:020d}.log").unlink()
    (log_dir / ".kafka_cleanshutdown").unlink()
    reopened = _open(log_dir, segment_bytes=600)
    assert _state(reopened) == expected
    assert reopened.segment_base_offsets()[0] == group_bases[0]
    assert len(reopened.segment_base_offsets()) == 2
    read_everything(reopened)
    reopened.close()


def test_log_manager_cleans_compacted_topics(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path, LogConfig(segment_bytes=1024), now_ms=0)
    manager.create_topic(
        "table",
        1,
        {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0", "segment.bytes": "1024"},
    )
    manager.create_topic("stream", 1, {"segment.bytes": "1024"})
    for name in ("table", "stream"):
        log = manager.log(name, 0)
        assert log is not None
        _fill(log)
    results = manager.clean(NOW)
    assert list(results) == [("table", 0)]
    manager.close()


def test_compaction_configs_are_parsed() -> None:
    config = log_config_from_overrides(
        LogConfig(),
        {
            "delete.retention.ms": "1000",
            "min.compaction.lag.ms": "5",
            "min.cleanable.dirty.ratio": "0.25",
        },
    )
    assert (config.delete_retention_ms, config.min_compaction_lag_ms) == (1000, 5)
    assert config.min_cleanable_dirty_ratio == 0.25
    assert LogConfig().delete_retention_ms == DAY
    from odradek.storage import InvalidConfig

    with pytest.raises(InvalidConfig):
        log_config_from_overrides(LogConfig(), {"min.cleanable.dirty.ratio": "1.5"})
