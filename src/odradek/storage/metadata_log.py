"""The controller's metadata log on its disk: `__cluster_metadata-0`, a segmented partition log.

Kafka's single-voter KRaft log, without consensus (see ARCHITECTURE.md, "One controller voter
for now"). Each controller write is one record batch (v2, uncompressed) whose records carry the
encoded metadata records as values, so a write is atomic: recovery truncates a torn batch
whole. A write is committed when it is fsynced; `append` returns only after `fdatasync`, and
the high watermark (what brokers may fetch) is the durable end. This module stores bytes; the
controller's record codec (`odradek.controller.records`) lives above it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from odradek.protocol.record_batch import Record, decode_batches, encode_batch, validate_batches
from odradek.storage.lazy_files import OS_FILES, SegmentFiles
from odradek.storage.log import LogConfig, PartitionLog

#: Kafka's name for the metadata topic.
METADATA_TOPIC = "__cluster_metadata"
METADATA_PARTITION = 0
_MAX_BATCH_BYTES = 8 * 1024 * 1024


class MetadataLog:
    """Append-and-fsync batches of metadata record values; read them back from an offset."""

    def __init__(self, log: PartitionLog) -> None:
        self._log = log

    @classmethod
    def open(cls, log_dir: Path, now_ms: int, files: SegmentFiles = OS_FILES) -> MetadataLog:
        """Open (or create and recover) `<log_dir>/__cluster_metadata-0`; `files` is the file
        layer its segments go through (the simulator passes its simulated disk)."""
        directory = log_dir / f"{METADATA_TOPIC}-{METADATA_PARTITION}"
        config = LogConfig(max_message_bytes=_MAX_BATCH_BYTES)
        log = PartitionLog.open(directory, config, now_ms, files)
        log.high_watermark = log.log_end_offset
        return cls(log)

    @property
    def log_start_offset(self) -> int:
        return self._log.log_start_offset

    @property
    def end_offset(self) -> int:
        """The offset the next record gets; everything below it is durable."""
        return self._log.log_end_offset

    def append(self, values: Sequence[bytes], now_ms: int) -> int:
        """Append `values` as one batch and fdatasync it; return the first record's offset.

        Raises OSError when the disk fails (the caller must then rebuild its state from the
        log, as QuorumController's contract says).
        """
        if not values:
            return self.end_offset
        batch = encode_batch(
            [Record(key=None, value=value) for value in values], base_timestamp=now_ms
        )
        headers = validate_batches(batch, _MAX_BATCH_BYTES)
        info = self._log.append(batch, headers, now_ms)
        self._log.flush()
        self._log.high_watermark = self._log.log_end_offset
        return info.first_offset

    def read(self, fetch_offset: int, max_bytes: int) -> bytes | memoryview:
        """Whole batches from `fetch_offset` (at least one), as Fetch serves them.

        Raises storage's OffsetOutOfRange outside [log start, end].
        """
        return self._log.read(fetch_offset, max_bytes, self.end_offset, True).records

    def entries(self, from_offset: int = 0) -> Iterator[tuple[int, bytes]]:
        """(offset, value) of every record from `from_offset`, in log order (for replay)."""
        offset = max(from_offset, self.log_start_offset)
        while offset < self.end_offset:
            chunk = self.read(offset, _MAX_BATCH_BYTES)
            if not chunk:
                return
            for _header, records in decode_batches(chunk):
                for record in records:
                    if record.offset >= offset and record.value is not None:
                        yield record.offset, record.value
                    offset = max(offset, record.offset + 1)

    def close(self) -> None:
        self._log.close()
