"""Brokers: registration and epochs, heartbeats, session expiry, fencing, controlled shutdown."""

from __future__ import annotations

import uuid

from controller_harness import CLUSTER_ID, Harness
from kio.schema.errors import ErrorCode

from odradek.controller import (
    BrokerHeartbeatRequest,
    BrokerRegistrationChangeRecord,
    BrokerRegistrationRequest,
    Feature,
    PartitionChangeRecord,
    RegisterBrokerRecord,
)
from odradek.controller.feature_control import METADATA_VERSION_FEATURE


def register_request(
    broker_id: int, incarnation: uuid.UUID, **changes: object
) -> BrokerRegistrationRequest:
    fields: dict[str, object] = {
        "broker_id": broker_id,
        "cluster_id": CLUSTER_ID,
        "incarnation_id": incarnation,
        "features": (Feature(METADATA_VERSION_FEATURE, 1, 1),),
    }
    fields.update(changes)
    return BrokerRegistrationRequest(**fields)  # type: ignore[arg-type]


def test_broker_epoch_is_the_offset_of_the_register_broker_record() -> None:
    h = Harness()
    epochs = [h.register(b) for b in (1, 2, 3)]
    for broker_id, epoch in zip((1, 2, 3), epochs, strict=True):
        record = h.log[epoch]
        assert isinstance(record, RegisterBrokerRecord)
        assert (record.broker_id, record.broker_epoch) == (broker_id, epoch)
    assert len(set(epochs)) == 3
    # A broker that registers again gets a new, larger epoch.
    assert h.register(2, uuid.uuid4()) > epochs[2]


def test_a_new_broker_is_fenced_until_it_has_replayed_its_registration() -> None:
    h = Harness()
    epoch = h.register(1)
    behind = h.heartbeat(1, metadata_offset=epoch - 1)
    assert (behind.is_fenced, behind.is_caught_up) == (True, False)
    assert h.controller.cluster.registrations[1].fenced
    caught_up = h.heartbeat(1, metadata_offset=epoch)
    assert (caught_up.is_fenced, caught_up.is_caught_up) == (False, True)
    assert isinstance(h.log[-1], BrokerRegistrationChangeRecord)
    assert not h.controller.cluster.registrations[1].fenced


def test_registration_errors() -> None:
    h = Harness()
    h.start_brokers(1)
    c = h.controller
    wrong_cluster = c.handle_broker_registration(
        register_request(2, uuid.uuid4(), cluster_id="other"), h.now_ms
    )
    assert wrong_cluster.response.error_code is ErrorCode.inconsistent_cluster_id
    assert wrong_cluster.records == ()
    # Another incarnation of broker 1 while broker 1's session is alive.
    duplicate = c.handle_broker_registration(register_request(1, uuid.uuid4()), h.now_ms)
    assert duplicate.response.error_code is ErrorCode.duplicate_broker_registration
    unsupported = c.handle_broker_registration(
        register_request(2, uuid.uuid4(), features=(Feature(METADATA_VERSION_FEATURE, 2, 3),)),
        h.now_ms,
    )
    assert unsupported.response.error_code is ErrorCode.unsupported_version
    missing = c.handle_broker_registration(register_request(2, uuid.uuid4(), features=()), 0)
    assert missing.response.error_code is ErrorCode.unsupported_version
    # The same incarnation may retry (a lost response): it gets a fresh epoch.
    retry = h.run(c.handle_broker_registration(register_request(1, h.incarnations[1]), 0))
    assert retry.error_code is ErrorCode.none
    assert retry.broker_epoch > h.epochs[1]


def test_a_restarted_broker_may_register_once_its_old_session_expired() -> None:
    h = Harness()
    h.start_brokers(1)
    h.advance(9001)
    assert h.controller.cluster.registrations[1].fenced
    response = h.run(
        h.controller.handle_broker_registration(register_request(1, uuid.uuid4()), h.now_ms)
    )
    assert response.error_code is ErrorCode.none


def test_heartbeat_with_a_stale_epoch_is_refused() -> None:
    h = Harness()
    h.start_brokers(1)
    old_epoch = h.epochs[1]
    h.register(1, h.incarnations[1])
    stale = h.heartbeat(1, broker_epoch=old_epoch)
    assert stale.error_code is ErrorCode.stale_broker_epoch
    never_registered = BrokerHeartbeatRequest(
        broker_id=7, broker_epoch=1, current_metadata_offset=0
    )
    unknown = h.controller.handle_broker_heartbeat(never_registered, h.now_ms)
    assert unknown.response.error_code is ErrorCode.stale_broker_epoch


def test_fenced_after_the_session_timeout_and_not_before() -> None:
    h = Harness()
    h.start_brokers(1, 2)
    h.create_topic("t", partitions=1, replication_factor=2)
    leader = h.partition("t").leader
    other = 3 - leader
    h.advance(5000)
    h.heartbeat(other)
    assert h.advance(4000) == ()  # exactly broker.session.timeout.ms: still alive
    records = h.advance(1)  # 9001 ms after the leader's last heartbeat
    assert any(isinstance(r, PartitionChangeRecord) for r in records)
    assert h.controller.cluster.registrations[leader].fenced
    assert not h.controller.cluster.registrations[other].fenced
    partition = h.partition("t")
    assert (partition.leader, partition.isr) == (other, (other,))
    assert partition.leader_epoch == 1


def test_a_fenced_broker_is_unfenced_by_its_next_heartbeat_and_leads_again() -> None:
    h = Harness()
    h.start_brokers(1)
    h.create_topic("t")
    h.advance(10_000)
    partition = h.partition("t")
    # The only ISR member stays in the ISR; the partition has no leader.
    assert (partition.leader, partition.isr) == (-1, (1,))
    response = h.heartbeat(1)
    assert not response.is_fenced
    partition = h.partition("t")
    assert (partition.leader, partition.isr, partition.leader_epoch) == (1, (1,), 2)


def test_want_fence_fences_and_want_shut_down_when_fenced_shuts_down_at_once() -> None:
    h = Harness()
    h.start_brokers(1)
    fenced = h.heartbeat(1, want_fence=True)
    assert (fenced.is_fenced, fenced.should_shut_down) == (True, False)
    shut = h.heartbeat(1, want_shut_down=True)
    assert shut.should_shut_down


def test_controlled_shutdown_moves_leaders_and_waits_for_the_others_to_catch_up() -> None:
    h = Harness()
    h.start_brokers(1, 2, 3)
    h.create_topic("t", partitions=6, replication_factor=2)
    led_by_1 = [p for p in range(6) if h.partition("t", p).leader == 1]
    assert led_by_1
    stale_offset = h.offset
    first = h.heartbeat(1, want_shut_down=True)
    assert (first.is_fenced, first.should_shut_down) == (False, False)
    registration = h.controller.cluster.registrations[1]
    assert registration.in_controlled_shutdown
    for p in range(6):
        partition = h.partition("t", p)
        assert partition.leader != 1
        assert 1 not in partition.isr
    for p in led_by_1:
        assert h.partition("t", p).leader_epoch == 1
    # Brokers 2 and 3 have not yet replayed the leader moves: no shutdown yet.
    h.heartbeat(2, metadata_offset=stale_offset)
    h.heartbeat(3, metadata_offset=stale_offset)
    assert not h.heartbeat(1, want_shut_down=True).should_shut_down
    h.heartbeat(2)
    h.heartbeat(3)
    done = h.heartbeat(1, want_shut_down=True)
    assert (done.should_shut_down, done.is_fenced) == (True, True)
    assert h.controller.cluster.registrations[1].fenced


def test_controlled_shutdown_of_a_broker_without_leaderships_is_immediate() -> None:
    h = Harness()
    h.start_brokers(1, 2)
    h.create_topic("t", assignments=[(0, (1, 2))])
    response = h.heartbeat(2, want_shut_down=True)
    assert response.should_shut_down
    assert h.partition("t").isr == (1,)


def test_a_restarted_broker_rejoins_the_isr_only_with_its_new_epoch_kip_903() -> None:
    h = Harness()
    h.start_brokers(1, 2)
    h.create_topic("t", assignments=[(0, (2, 1))])
    h.advance(5000)
    h.heartbeat(2)
    h.advance(4001)  # broker 1 crashed: its session expires
    assert h.partition("t").isr == (2,)
    old_epoch = h.epochs[1]
    h.register(1, uuid.uuid4())  # broker 1 restarted, maybe with an empty disk
    h.heartbeat(1)
    stale = h.alter_partition("t", 0, [2, 1], isr_epochs={1: old_epoch})
    assert stale.topics[0].partitions[0].error_code is ErrorCode.ineligible_replica
    current = h.alter_partition("t", 0, [2, 1])
    assert current.topics[0].partitions[0].error_code is ErrorCode.none
    assert h.partition("t").isr == (2, 1)


def test_registering_again_ends_the_old_epochs_isr_memberships_and_leaderships() -> None:
    h = Harness()
    h.start_brokers(1, 2)
    h.create_topic("t", assignments=[(0, (1, 2))])
    assert h.partition("t").leader == 1
    # The same incarnation registers again (its first response was lost).
    h.register(1, h.incarnations[1])
    partition = h.partition("t")
    assert (partition.leader, partition.isr) == (2, (2,))
    assert h.controller.cluster.registrations[1].fenced


def test_unregister_broker() -> None:
    h = Harness()
    h.start_brokers(1, 2)
    h.create_topic("t", assignments=[(0, (1, 2))])
    assert h.run(h.controller.handle_unregister_broker(1)) is ErrorCode.none
    assert 1 not in h.controller.cluster.registrations
    assert h.partition("t").isr == (2,)
    assert h.run(h.controller.handle_unregister_broker(1)) is ErrorCode.broker_id_not_registered


def test_a_restarted_controller_gives_every_broker_a_fresh_session() -> None:
    h = Harness()
    h.start_brokers(1)
    h.now_ms += 60_000
    h.restart()
    assert h.advance(0) == ()
    assert not h.controller.cluster.registrations[1].fenced
    h.advance(9001)
    assert h.controller.cluster.registrations[1].fenced


def test_a_broker_told_to_shut_down_must_register_again_before_it_leads() -> None:
    h = Harness()
    h.start_brokers(1)
    h.create_topic("t")
    assert not h.heartbeat(1, want_shut_down=True).should_shut_down  # leads t-0: controlled
    assert h.heartbeat(1, want_shut_down=True).should_shut_down
    # The process keeps heartbeating instead of exiting: it stays fenced and is told again.
    again = h.heartbeat(1)
    assert (again.is_fenced, again.should_shut_down) == (True, True)
    assert h.partition("t").leader == -1
    h.register(1, uuid.uuid4())
    assert not h.heartbeat(1).is_fenced
    assert h.partition("t").leader == 1
