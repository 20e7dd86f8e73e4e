"""An asyncio event loop on virtual time: when nothing is ready to run, the clock jumps to the next timer.

``asyncio.sleep(5)``, ``wait_for(..., 5)`` and ``call_later(5, ...)`` complete at once in real time but at exactly
+5 s on ``loop.time()``, so a 2-minute call runs in milliseconds and always gives the same result.

How: the loop's ``time()`` reads a number we own, and the loop's selector, asked to block for ``timeout`` seconds
(which asyncio computes as "until the next timer"), first polls the real file descriptors without blocking (the
loop's self-pipe, any real socket) and, if none is ready, advances the virtual clock by ``timeout`` instead of
sleeping. Only public asyncio API is used (``SelectorEventLoop(selector)`` and an overridden ``time()``).

A loop with nothing scheduled and nothing to do would block forever; here it waits ``idle_limit`` real seconds for
real I/O (another thread's ``call_soon_threadsafe``) and then raises :class:`VirtualDeadlock` so a broken test fails
fast and says why.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class VirtualDeadlock(RuntimeError):
    """Nothing is scheduled, nothing is ready and no real I/O arrived: the awaited thing can never happen."""


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def __init__(self, loop: VirtualClockLoop, idle_limit: float) -> None:
        super().__init__()
        self._loop = loop
        self._idle_limit = idle_limit

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if ready:
            return ready
        if timeout is None:  # no timer at all: only real I/O could wake us
            ready = super().select(self._idle_limit)
            if not ready:
                raise VirtualDeadlock("the loop has nothing scheduled and nothing to do (a wait that never ends)")
            return ready
        if timeout > 0:
            self._loop.advance(timeout)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock is virtual and jumps to the next timer when the loop is idle."""

    def __init__(self, start: float = 1000.0, *, idle_limit: float = 2.0) -> None:
        self._virtual_now = start
        super().__init__(_VirtualSelector(self, idle_limit))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the selector does this when the loop would otherwise sleep)."""
        if seconds < 0:
            raise ValueError("virtual time only moves forward")
        self._virtual_now += seconds


def run_virtual(
    main: Callable[[], Coroutine[Any, Any, T]] | Awaitable[T], *, start: float = 1000.0, idle_limit: float = 2.0
) -> T:
    """Run a coroutine to completion on a fresh :class:`VirtualClockLoop` and close the loop."""
    loop = VirtualClockLoop(start, idle_limit=idle_limit)
    try:
        awaitable = main() if callable(main) else main
        return loop.run_until_complete(awaitable)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
