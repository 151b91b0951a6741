"""kcat (Debian's build, on an older librdkafka) produces and consumes."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from client_helpers import create_topic

pytestmark = [
    pytest.mark.kcat,
    pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed"),
]


def test_kcat_metadata_produce_consume(bootstrap: str, admin: object) -> None:
    topic = create_topic(admin, partitions=2)  # type: ignore[arg-type]
    listing = subprocess.run(
        ["kcat", "-b", bootstrap, "-L", "-t", topic],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert listing.returncode == 0, listing.stderr
    assert "2 partitions" in listing.stdout
    lines = "".join(f"key{i}:value{i}\n" for i in range(20))
    produced = subprocess.run(
        ["kcat", "-b", bootstrap, "-P", "-t", topic, "-K", ":", "-z", "snappy"],
        input=lines,
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert produced.returncode == 0, produced.stderr
    consumed = subprocess.run(
        ["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k=%s\n"],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert consumed.returncode == 0, consumed.stderr
    assert sorted(consumed.stdout.split()) == sorted(f"key{i}=value{i}" for i in range(20))
