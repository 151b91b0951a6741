"""Fixtures for tests that drive a real broker with real Kafka clients."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient

from odradek.broker.server import Broker


@pytest.fixture
def broker(odradek_broker: Broker) -> Broker:
    return odradek_broker


@pytest.fixture
def bootstrap(broker: Broker) -> str:
    return broker.bootstrap_servers


@pytest.fixture
def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})
