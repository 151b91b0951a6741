"""Fixtures for the client commands: `run` invokes `odradek ...` against a real broker."""

from __future__ import annotations

import socket

import pytest
from cli_helpers import Run
from click.testing import CliRunner, Result

from odradek.broker.server import Broker
from odradek.cli.main import cli


@pytest.fixture
def bootstrap(odradek_broker: Broker) -> str:
    return odradek_broker.bootstrap_servers


@pytest.fixture
def run(bootstrap: str) -> Run:
    """`run("topic", "list")`: the command's Result, with ODRADEK_BOOTSTRAP set to the broker."""
    runner = CliRunner(env={"ODRADEK_BOOTSTRAP": bootstrap})

    def invoke(*args: str, input: bytes | str | None = None) -> Result:
        result = runner.invoke(cli, list(args), input=input, catch_exceptions=False)
        assert "Traceback" not in result.output
        return result

    return invoke


@pytest.fixture
def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
