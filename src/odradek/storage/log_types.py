"""The value types of a partition log: its configuration and what appends and reads return.

Kept apart from `PartitionLog` (log.py) so the loader, append and lookup modules can share
them; log.py re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NEVER", "AppendInfo", "LogConfig", "ReadResult"]

NEVER = 2**63 - 1


@dataclass(frozen=True, slots=True)
class LogConfig:
    """The topic-level settings a partition log obeys (Kafka's names, in snake_case)."""

    segment_bytes: int = 1024**3
    segment_ms: int = 7 * 24 * 60 * 60 * 1000
    segment_index_bytes: int = 10 * 1024 * 1024
    retention_ms: int = 7 * 24 * 60 * 60 * 1000  # -1 keeps everything
    retention_bytes: int = -1  # -1 keeps everything
    index_interval_bytes: int = 4096
    flush_messages: int = NEVER
    flush_ms: int = NEVER
    max_message_bytes: int = 1048588
    message_timestamp_type: str = "CreateTime"  # or "LogAppendTime"
    # How far a CreateTime record's timestamp may be behind / ahead of the broker's clock
    # (KIP-937; Kafka 4 bounds the future to one hour, the past not at all).
    message_timestamp_before_max_ms: int = NEVER
    message_timestamp_after_max_ms: int = 60 * 60 * 1000
    cleanup_policy: str = "delete"  # "compact", "delete", both, or "" (neither)
    min_insync_replicas: int = 1
    delete_retention_ms: int = 24 * 60 * 60 * 1000  # how long compaction keeps tombstones
    min_compaction_lag_ms: int = 0
    min_cleanable_dirty_ratio: float = 0.5
    # "producer" keeps batches as sent; a codec name makes the broker recompress (KIP-390
    # levels: -1 is gzip's default; lz4 1..17; zstd -131072..22).
    compression_type: str = "producer"
    compression_gzip_level: int = -1
    compression_lz4_level: int = 9
    compression_zstd_level: int = 3

    @property
    def timestamp_bounds_ms(self) -> tuple[int, int]:
        """(before, after): how many ms a produced record's timestamp may lie behind and ahead
        of the broker's clock — the message.timestamp.*.max.ms bounds with CreateTime, no bound
        with LogAppendTime (the broker stamps the batch; Kafka's LogValidator)."""
        if self.message_timestamp_type == "CreateTime":
            return self.message_timestamp_before_max_ms, self.message_timestamp_after_max_ms
        return NEVER, NEVER

    @property
    def deletes(self) -> bool:
        """Whether retention deletes old segments (cleanup.policy contains delete)."""
        return "delete" in self.cleanup_policy.split(",")

    @property
    def compacts(self) -> bool:
        """Whether the cleaner compacts the log (cleanup.policy contains compact)."""
        return "compact" in self.cleanup_policy.split(",")


@dataclass(frozen=True, slots=True)
class AppendInfo:
    """What an append did, as the Produce response and the broker need it."""

    first_offset: int
    last_offset: int
    max_timestamp: int
    offset_of_max_timestamp: int  # base offset of the batch holding it
    log_append_time_ms: int  # -1 with CreateTime
    log_start_offset: int
    # A retry of a batch still retained in producer state: nothing was written, the offsets
    # and timestamp are the original append's.
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Whole batches ready for a Fetch response, and the base offset of the first one."""

    records: bytes | memoryview
    first_offset: int | None
