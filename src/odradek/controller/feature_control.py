"""Finalized feature levels (Kafka's FeatureControlManager, reduced to what Odradek needs).

The controller bootstraps its log with a FeatureLevelRecord per feature; a broker registers only
if it supports every finalized level. Level 0 removes a feature. Changing levels at run time
(UpdateFeatures) is not built.
"""

from __future__ import annotations

from collections.abc import Mapping

from odradek.controller.records import FeatureLevelRecord

METADATA_VERSION_FEATURE = "metadata.version"
#: The metadata.version level Odradek's controller writes: the record layout of
#: `odradek.controller.records` version 0 (Odradek's own numbering, not Kafka's MetadataVersion).
ODRADEK_METADATA_VERSION = 1


class FeatureControlManager:
    """Finalized feature levels, from FeatureLevelRecords."""

    def __init__(self) -> None:
        self.finalized: dict[str, int] = {}

    def bootstrap_records(
        self, levels: Mapping[str, int] | None = None
    ) -> tuple[FeatureLevelRecord, ...]:
        """The FeatureLevelRecords that start an empty metadata log."""
        chosen = {METADATA_VERSION_FEATURE: ODRADEK_METADATA_VERSION} if levels is None else levels
        return tuple(FeatureLevelRecord(name, level) for name, level in chosen.items())

    def replay(self, record: FeatureLevelRecord) -> None:
        if record.feature_level == 0:
            self.finalized.pop(record.name, None)
        else:
            self.finalized[record.name] = record.feature_level
