"""The group coordinator's settings (Kafka's `group.*` and `offsets.*` broker properties)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class MigrationPolicy(enum.Enum):
    """`group.consumer.migration.policy` (Kafka's ConsumerGroupMigrationPolicy)."""

    DISABLED = "disabled"
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    BIDIRECTIONAL = "bidirectional"

    @property
    def upgrade_enabled(self) -> bool:
        return self in (MigrationPolicy.UPGRADE, MigrationPolicy.BIDIRECTIONAL)

    @property
    def downgrade_enabled(self) -> bool:
        return self in (MigrationPolicy.DOWNGRADE, MigrationPolicy.BIDIRECTIONAL)

    @classmethod
    def parse(cls, value: str) -> MigrationPolicy:
        """Case-insensitive, as Kafka's parse; raises ValueError for anything else."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            names = ", ".join(policy.value for policy in cls)
            raise ValueError(f"expected one of {names}, got {value!r}") from None


@dataclass(frozen=True, slots=True)
class GroupConfig:
    offsets_topic_partitions: int = 50
    initial_rebalance_delay_ms: int = 3000
    min_session_timeout_ms: int = 6000
    max_session_timeout_ms: int = 1_800_000
    max_size: int = 2**31 - 1
    consumer_session_timeout_ms: int = 45_000
    consumer_min_session_timeout_ms: int = 45_000
    consumer_heartbeat_interval_ms: int = 5000
    consumer_min_heartbeat_interval_ms: int = 5000
    consumer_assignors: tuple[str, ...] = ("uniform", "range")
    offsets_retention_ms: int = 10080 * 60_000
    offsets_retention_check_interval_ms: int = 600_000
    offset_metadata_max_bytes: int = 4096
    # `group.consumer.migration.policy`: Kafka 4's default converts both ways.
    consumer_migration_policy: MigrationPolicy = MigrationPolicy.BIDIRECTIONAL
