"""A stopping broker always stops: Python 3.11's `asyncio.wait_for` swallows a cancellation
that arrives in the same loop iteration as the awaited result, so a task looping around it
(the group timer, a replica fetcher, a metadata fetch) runs on after `cancel()`, and a stop that
awaits it hangs for ever. The broker's loops use `asyncio.timeout` instead, and every stop step
re-cancels and is bounded (`odradek.broker.shutdown`)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from odradek import Broker
from odradek.broker.shutdown import bounded, cancel_and_wait, wait_finished

pytestmark = pytest.mark.timeout(60)


def test_group_timer_stops_when_woken_as_it_is_cancelled(tmp_path: Path) -> None:
    async def scenario() -> bool:
        async with Broker(data_dir=tmp_path) as broker:
            assert broker.context is not None
            groups = broker.context.groups
            timer = groups._timer
            assert timer is not None
            assert groups._wakeup is not None
            # The race: the timer's wakeup fires in the loop iteration the stop cancels it.
            groups._wakeup.set()
            timer.cancel()
            done, _ = await asyncio.wait({timer}, timeout=2)
            return timer in done

    assert asyncio.run(scenario()), "the group timer swallowed its cancellation"


def test_cancel_and_wait_ends_a_task_that_swallows_cancellation() -> None:
    async def scenario() -> tuple[bool, int]:
        swallowed = 0

        async def stubborn() -> None:
            nonlocal swallowed
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    swallowed += 1
                    if swallowed == 3:
                        raise

        task = asyncio.get_running_loop().create_task(stubborn())
        await asyncio.sleep(0)
        return await cancel_and_wait([task], "a stubborn task", timeout_s=5), swallowed

    assert asyncio.run(scenario()) == (True, 3)


def test_shutdown_steps_give_up_after_their_timeout(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        listening = False

        async def deaf() -> None:
            while not listening:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(10)

        task = asyncio.get_running_loop().create_task(deaf())
        await asyncio.sleep(0)  # running, inside its sleep
        gave_up = await cancel_and_wait([task], "a deaf task", timeout_s=0.3)
        step_finished = await bounded(asyncio.sleep(10), "a slow step", timeout_s=0.2)
        waited = await wait_finished([task], "a deaf task's work", timeout_s=0.1)
        listening = True
        task.cancel()
        await task
        return gave_up, step_finished, waited

    assert asyncio.run(scenario()) == (False, False, False)
    messages = [record.getMessage() for record in caplog.records]
    assert any("a deaf task: 1 task(s) still running after 0.3 s" in m for m in messages)
    assert any("a slow step did not finish within 0.2 s" in m for m in messages)
