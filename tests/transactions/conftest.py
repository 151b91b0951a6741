"""Transaction tests reuse the raw protocol client and the `odradek serve` process helper."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "broker"))

from odradek.broker.server import Broker
from odradek.testing.pytest_plugin import TEST_CONFIG

# Timed-out transactions are looked for every 100 ms instead of Kafka's 10 s.
TXN_TEST_CONFIG = {
    **TEST_CONFIG,
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "100",
}


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(data_dir=tmp_path_factory.mktemp("odradek-txn"), config=TXN_TEST_CONFIG) as running:
        yield running


@pytest.fixture
def bootstrap(broker: Broker) -> str:
    return broker.bootstrap_servers
