"""Issue 9 item 5: no group-coordinator answer leaves before the writes it depends on are
durable, and a failed write fails every answer waiting on it.

The broker runs in-process with `odradek.acks.all.fsync=true`; the test holds the fdatasync of
`__consumer_offsets` behind a gate (the runtime's injected group-commit), so the window between
"appended" and "durable" is as long as the test wants: deterministic, no timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import pytest_asyncio
from kio.schema.errors import ErrorCode

from odradek.broker.group_runtime import OFFSETS_TOPIC, CoordinatorNotAvailableError, GroupRuntime
from odradek.broker.purgatory import GroupCommit
from odradek.broker.server import Broker
from odradek.coordinator.group import CommitRequest, JoinRequest, PartitionCommit, SyncRequest
from odradek.testing.pytest_plugin import TEST_CONFIG

pytestmark = pytest.mark.timeout(60)


class GatedFlush:
    """Wraps the runtime's group commit: `__consumer_offsets` flushes wait for `open()`,
    or fail with OSError after `fail()`."""

    def __init__(self, runtime: GroupRuntime) -> None:
        self.gate = asyncio.Event()
        self.failure: OSError | None = None
        self._real: Callable[[str, int], GroupCommit | None] = runtime._group_commit
        runtime._group_commit = self._commit

    def open(self) -> None:
        self.gate.set()

    def fail(self) -> None:
        self.failure = OSError(5, "injected fdatasync failure")
        self.gate.set()

    def _commit(self, topic: str, partition: int) -> Any:
        real = self._real(topic, partition)
        if topic != OFFSETS_TOPIC or real is None:
            return real
        return _Gated(self, real)


class _Gated:
    def __init__(self, owner: GatedFlush, real: GroupCommit) -> None:
        self._owner = owner
        self._real = real

    async def wait_flushed(self, end_offset: int) -> None:
        await self._owner.gate.wait()
        if self._owner.failure is not None:
            raise self._owner.failure
        await self._real.wait_flushed(end_offset)


def join_request(member_id: str = "", instance_id: str | None = None) -> JoinRequest:
    return JoinRequest(
        "g",
        member_id,
        instance_id,
        "consumer",
        (("range", b"meta"),),
        10_000,
        10_000,
        "c",
        "/127.0.0.1",
        3,
    )


async def run(runtime: GroupRuntime, operation: Callable[[int, int], Any]) -> Any:
    return await runtime.run(operation)


async def settle() -> None:
    """Let every ready callback and task run (the answers, if nothing holds them)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def two_members(runtime: GroupRuntime) -> tuple[str, str]:
    """a (the leader) and b in a stable generation 1, then both rejoined into generation 2."""
    coordinator = runtime.coordinator
    a = await run(runtime, lambda ref, now: coordinator.join_group(ref, join_request(), now))
    b_join = asyncio.create_task(
        run(runtime, lambda ref, now: coordinator.join_group(ref, join_request(), now))
    )
    await settle()
    a_join = await run(
        runtime, lambda ref, now: coordinator.join_group(ref, join_request(a.member_id), now)
    )
    b = await b_join
    assert a_join.generation_id == b.generation_id == 2
    assert a_join.leader == a.member_id
    return a.member_id, b.member_id


def sync(runtime: GroupRuntime, member_id: str, assignments: dict[str, bytes]) -> Any:
    request = SyncRequest("g", 2, member_id, None, "consumer", "range", assignments)
    return asyncio.create_task(
        run(runtime, lambda ref, now: runtime.coordinator.sync_group(ref, request, now))
    )


@pytest_asyncio.fixture
async def broker(tmp_path: Any) -> Any:
    config = {**TEST_CONFIG, "odradek.acks.all.fsync": "true"}
    async with Broker(data_dir=tmp_path, config=config) as running:
        yield running


@pytest.mark.asyncio
async def test_follower_gets_its_assignment_only_once_the_leaders_is_durable(
    broker: Broker,
) -> None:
    assert broker.context is not None
    runtime = broker.context.groups
    a, b = await two_members(runtime)
    gate = GatedFlush(runtime)
    leader = sync(runtime, a, {a: b"for-a", b: b"for-b"})
    await settle()
    follower = sync(runtime, b, {})
    heartbeat = asyncio.create_task(
        run(runtime, lambda ref, now: runtime.coordinator.heartbeat(ref, "g", 2, b, None, now))
    )
    await settle()
    # The group record is appended but not durable: nobody has an answer yet, not even the
    # follower whose SyncGroup needs no write of its own, nor a heartbeat behind it.
    assert not leader.done()
    assert not follower.done()
    assert not heartbeat.done()
    gate.open()
    assert (await leader).assignment == b"for-a"
    assert (await follower).assignment == b"for-b"
    assert (await heartbeat).error == ErrorCode.none


@pytest.mark.asyncio
async def test_failed_flush_fails_every_waiting_answer_and_rebalances(broker: Broker) -> None:
    assert broker.context is not None
    runtime = broker.context.groups
    a, b = await two_members(runtime)
    gate = GatedFlush(runtime)
    leader = sync(runtime, a, {a: b"for-a", b: b"for-b"})
    await settle()
    follower = sync(runtime, b, {})
    fetch = asyncio.create_task(
        runtime.read(lambda: runtime.coordinator.fetch_offsets("g", {"t": [0]}))
    )
    await settle()
    gate.fail()
    # Kafka maps a storage error from a coordinator append to NOT_COORDINATOR.
    assert (await leader).error == ErrorCode.not_coordinator
    assert (await follower).error == ErrorCode.not_coordinator
    with pytest.raises(CoordinatorNotAvailableError) as failed:
        await fetch
    assert failed.value.args == (ErrorCode.not_coordinator,)
    group = runtime.coordinator.group("g")
    assert group is not None
    assert group.state.value == "PreparingRebalance"


@pytest.mark.asyncio
async def test_offset_fetch_waits_for_the_commit_to_be_durable(broker: Broker) -> None:
    assert broker.context is not None
    runtime = broker.context.groups
    coordinator = runtime.coordinator
    broker.context.logs.create_topic("t", 1, {})
    gate = GatedFlush(runtime)
    request = CommitRequest("g", -1, "", None, {"t": {0: PartitionCommit(7, -1, "")}}, 8)
    commit = asyncio.create_task(
        run(runtime, lambda ref, now: coordinator.commit_offsets(ref, request, now))
    )
    await settle()
    fetch = asyncio.create_task(runtime.read(lambda: coordinator.fetch_offsets("g", {"t": [0]})))
    await settle()
    assert not commit.done()
    assert not fetch.done()
    gate.open()
    assert (await commit).errors == {"t": {0: ErrorCode.none}}
    _error, offsets = await fetch
    value = offsets["t"][0]
    assert value is not None
    assert value.offset == 7
