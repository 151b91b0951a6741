"""Smoke: three brokers, a replicated topic, leader moves on fencing."""

from __future__ import annotations

from controller_harness import Harness


def test_three_brokers_and_a_topic() -> None:
    h = Harness()
    h.start_brokers(1, 2, 3)
    result = h.create_topic("orders", partitions=3, replication_factor=3)
    assert result.error_code == 0
    for p in range(3):
        assert len(h.partition("orders", p).isr) == 3
