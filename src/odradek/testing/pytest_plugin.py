"""pytest plugin (entry point `odradek`): the `odradek_broker` fixture.

def test_round_trip(odradek_broker):
    producer = Producer({"bootstrap.servers": odradek_broker.bootstrap_servers})
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from odradek.broker.server import Broker

# Tests want a fast first join and no waiting on timers that only matter in production: no
# initial rebalance delay, and session timeouts (classic and KIP-848) allowed down to 1 s.
TEST_CONFIG = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.min.session.timeout.ms": "1000",
    "group.consumer.heartbeat.interval.ms": "500",
    "group.consumer.min.heartbeat.interval.ms": "100",
}


@pytest.fixture
def odradek_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker on an ephemeral 127.0.0.1 port with its data in a temporary directory."""
    # Imported here, not at plugin load: kio registers Hypothesis strategies on import, which
    # Hypothesis refuses before its own plugin has loaded.
    from odradek.broker.server import Broker

    data_dir = tmp_path_factory.mktemp("odradek-data")
    with Broker(data_dir=data_dir, config=TEST_CONFIG) as broker:
        yield broker
