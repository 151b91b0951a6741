"""A deterministic asyncio event loop on virtual time.

`SimLoop` is asyncio's own `BaseEventLoop` (its ready queue, timer heap, tasks and futures, so
real asyncio code runs unchanged) with three things replaced:

- **time**: `loop.time()` is a virtual clock that jumps straight to the next timer when nothing
  is runnable. CPU work takes no virtual time beyond a microsecond per turn of the loop, so a
  simulated minute costs only the work done in it.
- **the turn of the loop**: a lean `_run_once` (a heap of `(when, sequence, timer)` tuples,
  asyncio's deque of ready handles, no selector call, no debug checks) and lean `call_soon` /
  `call_at`: the loop's own cost per callback is a handle and a deque append. Timers due at the
  same virtual time run in the order they were scheduled.
- **I/O**: there is no selector. `create_connection` and `create_server` go to the simulated
  network (`odradek.sim.network`); nothing touches a real socket.
- **executors**: `run_in_executor` runs the function on the loop after a latency drawn from the
  seeded RNG (an fdatasync takes simulated disk time), never on a thread.

Every task and timer carries the simulated node that created it (a context variable copied
into each task and handle), so a node's crash cancels exactly its own work.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import heapq
import random
from asyncio import events
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")

# The simulated node whose code is running (a task or handle inherits it from its creator).
current_node: contextvars.ContextVar[str] = contextvars.ContextVar(
    "odradek_sim_node", default="sim"
)


# Virtual seconds one turn of the loop takes.
TURN_S = 1e-6


class DeadlockError(RuntimeError):
    """Nothing is runnable and no timer is pending: the run can never make progress."""


# Compact the timer heap when more than this many timers are pending and over half of them are
# cancelled (asyncio's own rule).
_MIN_TIMERS_TO_COMPACT = 100


class _VirtualSelector:
    """What BaseEventLoop.close() closes; `_run_once` never selects."""

    def close(self) -> None:
        pass


class SimLoop(asyncio.BaseEventLoop):
    """asyncio's loop with virtual time, the simulated network and seeded executors.

    `executor_latency(function)` gives the simulated seconds an executor call takes (fdatasync
    in the broker); the network is attached by `odradek.sim.network.SimNetwork`.
    """

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self._virtual_time = 0.0
        self._selector = _VirtualSelector()
        # (when, sequence, timer): tuples compare in C; the sequence orders equal deadlines.
        self._timers: list[tuple[float, int, asyncio.TimerHandle]] = []
        self._timer_sequence = 0
        self.rng = rng
        self.network: Any = None  # odradek.sim.network.SimNetwork, set by it
        self.executor_latency: Callable[[Callable[..., Any]], float] = lambda _function: 0.0
        # Live tasks per node, in creation order (dicts: deterministic iteration).
        self._node_tasks: dict[str, dict[asyncio.Task[Any], None]] = {}
        self.exceptions: list[dict[str, Any]] = []
        self.set_task_factory(self._make_task)  # type: ignore[arg-type]
        self.set_exception_handler(self._record_exception)

    # -- time --------------------------------------------------------------------------------

    def time(self) -> float:
        return self._virtual_time

    def _run_once(self) -> None:
        # Every turn of the loop costs a microsecond: code that polls with a timeout computed
        # from the clock (aiokafka's autocommit does) must see time move, or it spins forever.
        now = self._virtual_time + TURN_S
        timers = self._timers
        ready: collections.deque[events.Handle] = self._ready  # type: ignore[attr-defined]
        cancelled = self._timer_cancelled_count  # type: ignore[has-type]
        if cancelled > _MIN_TIMERS_TO_COMPACT and cancelled * 2 > len(timers):
            for _when, _sequence, timer in timers:
                if timer._cancelled:
                    timer._scheduled = False  # type: ignore[attr-defined]
            self._timers = timers = [entry for entry in timers if not entry[2]._cancelled]
            heapq.heapify(timers)
            self._timer_cancelled_count = 0
        else:
            while timers and timers[0][2]._cancelled:
                self._timer_cancelled_count -= 1
                heapq.heappop(timers)[2]._scheduled = False  # type: ignore[attr-defined]
        if not ready and not self._stopping:  # type: ignore[attr-defined]
            if not timers:
                self._virtual_time = now
                raise DeadlockError("no runnable callback and no pending timer")
            # Nothing runnable: jump to the next timer.
            now = max(now, timers[0][0])
        self._virtual_time = now
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            timer._scheduled = False  # type: ignore[attr-defined]
            ready.append(timer)
        for _ in range(len(ready)):
            handle = ready.popleft()
            if not handle._cancelled:
                handle._run()

    def advance_to_next_timer(self) -> None:
        if self._timers:
            self._virtual_time = max(self._virtual_time, self._timers[0][0])

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> events.Handle:
        handle = events.Handle(callback, args, self, context)
        self._ready.append(handle)  # type: ignore[attr-defined]
        return handle

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        timer = asyncio.TimerHandle(when, callback, args, self, context)
        self._timer_sequence += 1
        heapq.heappush(self._timers, (when, self._timer_sequence, timer))
        timer._scheduled = True  # type: ignore[attr-defined]
        return timer

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_at(self._virtual_time + delay, callback, *args, context=context)

    def close(self) -> None:
        self._timers.clear()
        super().close()

    # -- selector hooks BaseEventLoop calls ----------------------------------------------------

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    # -- node bookkeeping --------------------------------------------------------------------

    def _make_task(
        self, loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        task = asyncio.Task(coroutine, loop=loop, **kwargs)
        context: contextvars.Context | None = kwargs.get("context")
        node = current_node.get() if context is None else context.get(current_node, "sim")
        tasks = self._node_tasks.setdefault(node, {})
        tasks[task] = None
        task.add_done_callback(tasks.pop)
        return task

    def kill_node(self, node: str) -> int:
        """Cancel every task and timer `node` created, as a process crash ends them.

        Returns how many tasks were cancelled.
        """
        for _when, _sequence, timer in list(self._timers):
            context: contextvars.Context = timer._context  # type: ignore[attr-defined]
            if context.get(current_node, "sim") == node:
                timer.cancel()
        tasks = list(self._node_tasks.pop(node, {}))
        for task in tasks:
            task.cancel()
        return len(tasks)

    # -- executors ---------------------------------------------------------------------------

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        future: asyncio.Future[_T] = self.create_future()

        def run() -> None:
            if future.cancelled():
                return
            try:
                result = func(*args)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)

        self.call_later(self.executor_latency(func), run)
        return future

    # -- network -----------------------------------------------------------------------------

    async def create_connection(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None = None,
        port: int | None = None,
        **_kwargs: Any,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        if self.network is None:
            raise OSError("no simulated network")
        result: tuple[asyncio.Transport, asyncio.BaseProtocol] = await self.network.connect(
            current_node.get(), str(host), int(port or 0), protocol_factory
        )
        return result

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: int | None = None,
        **_kwargs: Any,
    ) -> asyncio.Server:
        if self.network is None:
            raise OSError("no simulated network")
        server: asyncio.Server = self.network.listen(
            current_node.get(), str(host), int(port or 0), protocol_factory
        )
        return server

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("the simulation has no name resolution")

    # -- errors ------------------------------------------------------------------------------

    def _record_exception(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # Kept out of the trace: some arrive from garbage collection, whose timing is not ours.
        self.exceptions.append(context)


def run_in_node(node: str, coroutine: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
    """Start `coroutine` as a task that belongs to `node` (and so do the tasks it starts)."""
    context = contextvars.copy_context()
    context.run(current_node.set, node)
    loop = asyncio.get_running_loop()
    return loop.create_task(coroutine, context=context)


def call_in_node(node: str, callback: Callable[[], _T]) -> _T:
    """Run `callback` now with `node` as the current node (tasks it creates belong to it)."""
    context = contextvars.copy_context()
    context.run(current_node.set, node)
    return context.run(callback)
