"""What a flush writes besides fdatasync: the log checkpoint (log start offset, recovery point,
high watermark) is rewritten only when the recovery point enters another segment, since
recovery re-checks batches segment by segment. Flushed data survives a power cut either way;
a segment write larger than 1 MiB reaches the file whole."""

from __future__ import annotations

from pathlib import Path

from storage_helpers import append, headers_of, make_batch, read_everything, small_config

from odradek.storage import LogManager, PartitionLog
from odradek.storage.lazy_files import LazyFiles
from odradek.storage.log_loader import CHECKPOINT_FILE_NAME, read_checkpoint


def _checkpointed_recovery_point(log: PartitionLog) -> int:
    checkpoint = read_checkpoint(log.directory / CHECKPOINT_FILE_NAME)
    assert checkpoint is not None
    return checkpoint.recovery_point


def test_flush_rewrites_the_checkpoint_when_the_recovery_point_changes_segment(
    log_dir: Path,
) -> None:
    log = PartitionLog.open(log_dir, small_config(segment_bytes=4096), now_ms=0)
    append(log, make_batch(2, value_size=100))
    assert log.flush() == 2
    assert _checkpointed_recovery_point(log) == 2  # the first flush writes it
    append(log, make_batch(2, value_size=100))
    assert log.flush() == 4
    assert _checkpointed_recovery_point(log) == 2  # same segment: recovery would not differ
    while len(log.segment_base_offsets()) < 2:
        append(log, make_batch(2, value_size=1000))
    end = log.log_end_offset
    assert log.flush() == end
    assert _checkpointed_recovery_point(log) == end  # now in the next segment
    log.close()
    assert _checkpointed_recovery_point(log) == end


def test_flushed_batches_survive_a_power_cut_with_an_older_checkpoint(tmp_path: Path) -> None:
    files = LazyFiles()
    manager = LogManager.open(tmp_path, small_config(segment_bytes=1 << 20), now_ms=0, files=files)
    manager.create_topic("t", 1, {})
    log = manager.log("t", 0)
    assert log is not None
    for tag in range(10):
        append(log, make_batch(2, value_size=50, tag=tag))
        log.flush()
    assert _checkpointed_recovery_point(log) == 2  # the rest were flushed in its segment
    append(log, make_batch(2, value_size=50, tag=10))  # never flushed: lost in the cut
    files.power_cut()
    reopened = LogManager.open(tmp_path, small_config(segment_bytes=1 << 20), now_ms=0)
    recovered = reopened.log("t", 0)
    assert recovered is not None
    assert recovered.log_end_offset == 20
    assert [header.base_offset for header in read_everything(recovered)] == list(range(0, 20, 2))
    reopened.close()


def test_a_write_of_several_mebibytes_lands_whole(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(segment_bytes=64 << 20), now_ms=0)
    # ~3.5 MB in one follower append, written in 1 MiB pieces.
    batches = _with_offsets(b"".join(make_batch(1, value_size=700_000, tag=t) for t in range(5)))
    info = log.append_as_follower(batches, now_ms=0)
    assert info is not None
    assert log.log_end_offset == 5
    data = bytes(log.read(0, 8 << 20, 5, min_one_batch=True).records)
    assert data == batches
    log.close()


def _with_offsets(batches: bytes) -> bytes:
    """make_batch's batches all start at offset 0; give them consecutive base offsets (the
    follower keeps the leader's offsets, and the CRC does not cover the base offset)."""
    out = bytearray(batches)
    position = 0
    for offset, header in enumerate(headers_of(batches)):
        out[position : position + 8] = offset.to_bytes(8, "big")
        position += header.size
    return bytes(out)
