"""Request frames captured from real clients (tests/fixtures/capture_frames.py), decoded."""

from __future__ import annotations

from pathlib import Path

import pytest

from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import is_flexible, read_request_body, read_request_header
from odradek.protocol.record_batch import decode_batches, validate_batches

FRAMES = sorted((Path(__file__).parent.parent / "fixtures" / "frames").glob("*.bin"))
SUPPORTED_API_VERSIONS_MAX = 4


def test_fixtures_cover_every_client() -> None:
    clients = {path.name.split("-")[0] for path in FRAMES}
    assert {"librdkafka", "kafka", "aiokafka", "kcat"} <= clients


@pytest.mark.parametrize("path", FRAMES, ids=[path.stem for path in FRAMES])
def test_decode_captured_frame(path: Path) -> None:
    frame = path.read_bytes()
    api_name = path.stem.rsplit("-v", 1)[0].split("-", 1)[1].removeprefix("python-")
    version = int(path.stem.rsplit("-v", 1)[1])
    api_key = ApiKey[api_name.upper()]
    if api_key == ApiKey.API_VERSIONS and version > SUPPORTED_API_VERSIONS_MAX:
        # kafka-python opens with ApiVersions v4; the broker answers with the v0 fallback.
        header, _ = read_request_header(frame, None)
        assert (header.api_key, header.api_version) == (api_key, version)
        return
    header, position = read_request_header(frame, is_flexible)
    assert (header.api_key, header.api_version) == (api_key, version)
    assert header.client_id
    request = read_request_body(header, frame, position)
    if api_key == ApiKey.PRODUCE:
        (topic,) = request.topic_data
        assert topic.name == "captured"
        for partition in topic.partition_data:
            headers = validate_batches(partition.records, 1 << 20)
            assert headers
            assert all(records for _header, records in decode_batches(partition.records))
    elif api_key == ApiKey.FETCH:
        assert request.topics
    elif api_key == ApiKey.METADATA and request.topics:
        assert {topic.name for topic in request.topics} <= {"captured"}
