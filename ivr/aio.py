"""Small asyncio helpers shared across layers."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import TypeVar

__all__ = ["wrap_outside"]

T = TypeVar("T")


def wrap_outside(future: concurrent.futures.Future[T]) -> asyncio.Future[T]:
    """``asyncio.wrap_future`` for work done outside the event loop (a thread or a process pool), telling the loop
    about it: a virtual-time loop (the simulator's) then waits for the work in real time instead of jumping its clock
    past timeouts that the work's result should have beaten."""
    loop = asyncio.get_running_loop()
    wrapped = asyncio.wrap_future(future, loop=loop)
    note = getattr(loop, "note_outside_work", None)
    if note is not None:
        note(wrapped)
    return wrapped
