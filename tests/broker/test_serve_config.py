"""`odradek serve --config server.properties` and readable configuration errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from confluent_kafka.admin import AdminClient
from serve_process import ServeProcess


def test_server_properties_file_is_used(tmp_path: Path) -> None:
    properties = tmp_path / "server.properties"
    properties.write_text(
        "# a Kafka-style file\n"
        "num.partitions=4\n"
        "auto.create.topics.enable = true\n"
        "log.retention.hours: 1\n"
    )
    broker = ServeProcess(tmp_path / "data", config_file=properties)
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        metadata = admin.list_topics("auto", timeout=10)  # Metadata auto-creates the topic
        assert len(metadata.topics["auto"].partitions) == 4
    finally:
        assert broker.terminate() == 0


def test_bad_configuration_is_a_readable_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "odradek.cli",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
            "--override",
            "num.partitions=many",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "num.partitions must be an integer" in result.stderr
    assert "Traceback" not in result.stderr
