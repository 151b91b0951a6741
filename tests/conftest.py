"""Suite-wide settings: Hypothesis profiles (bounded for CI, longer for soak runs), and the
suite runs under a fixed string-hash seed (PYTHONHASHSEED=0, as `odradek sim` does)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# `odradek sim` replays a seed under PYTHONHASHSEED=0 (aiokafka iterates sets of partitions and
# topics, so a seed's run depends on string hashing); the simulator tests run under the same
# seed, so a seed they find replays with the command they print. Set ODRADEK_TEST_NO_REEXEC to
# keep the caller's hashing.
FIXED_HASH_SEED = "0"


def _pytest_command() -> list[str] | None:
    """The command line that started this pytest process, or None when it is not known (an
    embedded `pytest.main`)."""
    script = Path(sys.argv[0])
    if script.name in ("pytest", "py.test") and os.access(script, os.X_OK):
        return [str(script), *sys.argv[1:]]
    if script.name == "__main__.py" and script.parent.name == "pytest":
        return [sys.executable, "-m", "pytest", *sys.argv[1:]]
    return None


def pytest_configure(config: pytest.Config) -> None:
    """Start pytest again under PYTHONHASHSEED=0 when it runs under another string hashing."""
    if os.environ.get("PYTHONHASHSEED") == FIXED_HASH_SEED or os.environ.get(
        "ODRADEK_TEST_NO_REEXEC"
    ):
        return
    command = _pytest_command()
    if command is None:
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, {**os.environ, "PYTHONHASHSEED": FIXED_HASH_SEED})


settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=120, deadline=None)
settings.register_profile(
    "soak", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The broker may log a line per refused request, never an error or a traceback (for a
    broker running in the test's process: `Broker`, the `odradek_broker` fixture)."""
    caplog.set_level(logging.WARNING)
    yield
    bad = [
        f"{record.name}: {record.getMessage()}"
        for record in caplog.records
        if record.name.startswith("odradek")
        and (record.levelno >= logging.ERROR or record.exc_info is not None)
    ]
    assert bad == []
