"""Bounded shutdown steps: every step of stopping a broker or controller ends within a time
limit, and a step that runs over is named in the log.

Two things can keep a stopping process alive. A task that swallows its cancellation never
finishes, so awaiting it hangs: Python 3.11's `asyncio.wait_for` does exactly that when the
cancellation arrives in the same loop iteration as the awaited result (it returns the result;
fixed in 3.12), and a loop around it then runs on. `cancel_and_wait` cancels again until the
task ends, and gives up (with a warning naming the task) after its timeout. And a step that
waits on the disk or a peer can take arbitrarily long: `bounded` runs it with a time limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

#: Default limit of one shutdown step, in seconds.
STEP_TIMEOUT_S = 5.0
# How often a task that swallowed its cancellation is cancelled again, in seconds.
_RECANCEL_INTERVAL_S = 0.1


def _describe(tasks: Iterable[asyncio.Future[Any]]) -> str:
    names = []
    for task in tasks:
        if isinstance(task, asyncio.Task):
            coroutine = task.get_coro()
            name = getattr(coroutine, "__qualname__", None) or task.get_name()
            names.append(str(name))
        else:
            names.append(repr(task))
    return ", ".join(sorted(names))


def _retrieve(tasks: Iterable[asyncio.Future[Any]], what: str) -> None:
    """Log (once) the exception a finished task ended with, so asyncio does not complain."""
    for task in tasks:
        if task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                logger.warning("shutdown: %s: a task failed: %r", what, error)


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], what: str, timeout_s: float = STEP_TIMEOUT_S
) -> bool:
    """Cancel `tasks` and wait until they have finished, cancelling again every 0.1 s any task
    that swallowed the cancellation; at most `timeout_s` seconds. Returns True when every task
    finished; else logs a warning naming `what` and the tasks still running, and returns False
    (they are left behind). Never raises for the tasks' own exceptions (they are logged)."""
    every = [task for task in tasks if task is not asyncio.current_task()]
    pending = {task for task in every if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            logger.warning(
                "shutdown: %s: %d task(s) still running after %.1f s: %s",
                what,
                len(pending),
                timeout_s,
                _describe(pending),
            )
            return False
        _done, pending = await asyncio.wait(pending, timeout=min(remaining, _RECANCEL_INTERVAL_S))
    _retrieve(every, what)
    return True


async def wait_finished(
    tasks: Iterable[asyncio.Future[Any]], what: str, timeout_s: float = STEP_TIMEOUT_S
) -> bool:
    """Wait, without cancelling them, until `tasks` have finished (work that must not be cut
    short, such as an fdatasync in a thread); at most `timeout_s` seconds. False, with a
    warning naming `what`, when some are still running."""
    pending = {task for task in tasks if not task.done()}
    if pending:
        _done, pending = await asyncio.wait(pending, timeout=timeout_s)
    if pending:
        logger.warning(
            "shutdown: %s still running after %.1f s: %s", what, timeout_s, _describe(pending)
        )
        return False
    return True


async def bounded(step: Awaitable[Any], what: str, timeout_s: float = STEP_TIMEOUT_S) -> bool:
    """Run one shutdown step, `what` (e.g. "the replica fetchers"), for at most `timeout_s`
    seconds. True when it finished; False when it failed (logged with its traceback) or ran
    over (a warning naming it; the step is then cancelled, as `cancel_and_wait`)."""
    task = asyncio.ensure_future(step)
    _done, pending = await asyncio.wait({task}, timeout=timeout_s)
    if pending:
        logger.warning("shutdown: %s did not finish within %.1f s; going on", what, timeout_s)
        await cancel_and_wait(pending, what, timeout_s=1.0)
        return False
    if task.cancelled():
        logger.warning("shutdown: %s was cancelled", what)
        return False
    error = task.exception()
    if error is not None:
        logger.error("shutdown: %s failed", what, exc_info=error)
        return False
    return True
