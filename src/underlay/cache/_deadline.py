"""Deadlines for cache operations: one loop timer for every operation in flight.

``asyncio.timeout`` arms a loop timer for each operation and cancels it afterwards; a cache
hit is short enough for that to be a visible share of its cost. `Deadlines` keeps the
operations running under one delay in the order they started, which for one delay is also
the order of their deadlines, and arms one timer, for the oldest. An operation that ends
only marks its slot; when the timer fires it cancels the tasks whose deadline has passed
(as ``asyncio.timeout`` does, so the operation raises ``TimeoutError``) and re-arms itself
for the oldest operation still running, if any. A run of short sequential operations thus
arms about one timer per delay instead of one per operation.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

__all__ = ["Deadlines"]

R = TypeVar("R")

_RUNNING: Final = 0
_DONE: Final = 1
_EXPIRED: Final = 2


class _Slot:
    """One operation in flight: its deadline (loop time), its task and its state."""

    __slots__ = ("at", "state", "task")

    def __init__(self, at: float, task: asyncio.Task[object]) -> None:
        self.at = at
        self.task = task
        self.state = _RUNNING


class Deadlines:
    """Run awaitables with a deadline of ``delay`` seconds each, sharing one timer.

    Args:
        delay: Seconds each operation may take before it is cancelled.
    """

    __slots__ = ("_handle", "_loop", "_pending", "delay")

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._pending: deque[_Slot] = deque()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, operation: Callable[..., Awaitable[R]], *args: object) -> R:
        """Return ``await operation(*args)``; raise ``TimeoutError`` once the delay has passed.

        Cancellation from outside is never turned into ``TimeoutError``, and the task's
        cancellation count is left as it was, as with ``asyncio.timeout``.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:  # pragma: no cover - awaited outside a task (a bare callback)
            async with asyncio.timeout(self.delay):
                return await operation(*args)
        if loop is not self._loop:
            self._reset(loop)
        cancelling = task.cancelling()
        slot = _Slot(loop.time() + self.delay, task)
        self._pending.append(slot)
        if self._handle is None:
            # Armed only when no timer is: one that is runs for an older, earlier deadline.
            self._handle = loop.call_at(slot.at, self._fire)
        try:
            result = await operation(*args)
        except BaseException as exc:
            if (
                self._end(slot)
                and task.uncancel() <= cancelling
                and isinstance(exc, asyncio.CancelledError)
            ):
                raise TimeoutError from exc  # our own cancellation, not an outer one
            raise
        if self._end(slot):
            task.uncancel()  # cancelled at the last moment, yet the operation finished
        return result

    def _end(self, slot: _Slot) -> bool:
        """Mark ``slot`` finished; return whether its deadline cancelled it."""
        expired = slot.state == _EXPIRED
        slot.state = _DONE
        pending = self._pending
        while pending and pending[0].state == _DONE:
            pending.popleft()
        return expired

    def _fire(self) -> None:
        self._handle = None
        loop = self._loop
        if loop is None:  # pragma: no cover - reset meanwhile
            return
        now = loop.time()
        pending = self._pending
        while pending:
            slot = pending[0]
            if slot.state == _RUNNING:
                if slot.at > now:
                    self._handle = loop.call_at(slot.at, self._fire)
                    return
                slot.state = _EXPIRED
                slot.task.cancel()
            pending.popleft()

    def _reset(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start over on another event loop (what ran on the old one cannot be resumed)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._pending.clear()
        self._loop = loop

    def __repr__(self) -> str:
        return f"Deadlines(delay={self.delay!r}, in_flight={len(self._pending)})"
