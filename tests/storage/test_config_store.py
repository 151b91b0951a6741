"""The dynamic-config store: Kafka's ConfigRecord framing, replay, torn tails, snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.storage import config_store
from odradek.storage.config_store import (
    RESOURCE_BROKER,
    RESOURCE_GROUP,
    ConfigRecord,
    ConfigStore,
    decode_config_record,
    encode_config_record,
)

records = st.builds(
    ConfigRecord,
    st.sampled_from([RESOURCE_BROKER, RESOURCE_GROUP, 2]),
    st.text(max_size=20),
    st.text(min_size=1, max_size=40),
    st.none() | st.text(max_size=200),
)


@given(records)
def test_config_record_round_trips(record: ConfigRecord) -> None:
    assert decode_config_record(encode_config_record(record)) == record


def test_config_record_is_kafkas_metadata_framing() -> None:
    # frame version 1, api key 4 (ConfigRecord), version 0, int8 type, compact strings, no tags.
    encoded = encode_config_record(ConfigRecord(RESOURCE_BROKER, "", "a", None))
    assert encoded == b"\x01\x04\x00\x04\x01\x02a\x00\x00"


def test_replay_survives_restart_and_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "configs.log"
    store = ConfigStore.open(path)
    store.append([ConfigRecord(RESOURCE_BROKER, "1", "log.retention.ms", "1000")])
    store.append([ConfigRecord(RESOURCE_GROUP, "g", "consumer.session.timeout.ms", "50000")])
    store.append([ConfigRecord(RESOURCE_BROKER, "1", "log.retention.ms", None)])
    with open(path, "ab") as file:
        file.write(b"\x00\x00\x00\x30torn")  # a crash in the middle of an append
    reopened = ConfigStore.open(path)
    assert reopened.image.resources == {
        (RESOURCE_GROUP, "g"): {"consumer.session.timeout.ms": "50000"}
    }
    reopened.append([ConfigRecord(RESOURCE_BROKER, "", "message.max.bytes", "2000")])
    assert ConfigStore.open(path).image.configs(RESOURCE_BROKER, "") == {
        "message.max.bytes": "2000"
    }


def test_a_long_log_is_rewritten_as_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_store, "_COMPACT_SLACK", 20)
    path = tmp_path / "configs.log"
    store = ConfigStore.open(path)
    for value in range(config_store._COMPACT_SLACK + 5):
        store.append([ConfigRecord(RESOURCE_BROKER, "1", "num.io.threads", str(value + 1))])
    reopened = ConfigStore.open(path)
    assert reopened.image.configs(RESOURCE_BROKER, "1") == {
        "num.io.threads": str(config_store._COMPACT_SLACK + 5)
    }
    assert path.stat().st_size < 200  # one record, not 25
