"""The media clock: one 20 ms tick for every playing stream of the process.

Ticks fall on absolute deadlines ``t0 + n * ptime`` of the event loop's clock (``loop.time()``, scheduled with
``loop.call_at``), so they do not drift and a scenario on a virtual-time loop paces media the same way. Tick
``n`` is a point on the wall clock: a stream stamps the frame it sends on tick ``n`` with
``timestamp_base + n * samples_per_tick``, so RTP timestamps keep advancing in real time while a stream is idle
or on hold, and stay true to the wall clock when the loop runs late.

When a timer fires more than one period late, the frames that are due are sent in that one callback (at most
``max_catch_up`` periods; older periods are skipped, which leaves a gap in the timestamps, never a shift).
With no stream registered the clock schedules nothing: an idle process does not wake up 50 times a second.

Who registers: ``MediaStream.play()`` adds the stream and the stream discards itself when its playback ends or
is stopped, so the call side never calls ``add``/``discard`` itself (they are public for other frame sources).
A tick allocates no object per stream beyond the integers of its arithmetic, logs nothing and awaits nothing;
it only calls ``send_tick`` on each registered stream.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = ["ClockStats", "Clocked", "MediaClock"]

DEFAULT_PTIME: Final = 0.020
CLOCK_RATE: Final = 8000


class Clocked(Protocol):
    """What the clock drives: anything that sends its frame for tick ``tick`` when asked."""

    def send_tick(self, tick: int) -> None: ...


@dataclass(slots=True)
class ClockStats:
    ticks: int = 0
    """Tick periods processed (each one sends one frame per registered stream)."""
    timer_callbacks: int = 0
    late_ticks: int = 0
    """Timer callbacks that ran more than ``late_threshold`` (5 ms) after their deadline."""
    max_lateness: float = 0.0
    """Seconds."""
    catch_up_ticks: int = 0
    """Periods sent late, in the callback of a later period (bursts after a stall)."""
    skipped_ticks: int = 0
    """Periods dropped because the loop stalled for longer than ``max_catch_up`` periods."""


class MediaClock:
    """One clock for all calls. See the module docstring for the contract."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ptime: float = DEFAULT_PTIME,
        *,
        max_catch_up: int = 5,
        late_threshold: float = 0.005,
    ) -> None:
        samples = ptime * CLOCK_RATE
        if ptime <= 0 or abs(samples - round(samples)) > 1e-6:
            raise ValueError(f"ptime {ptime} s is not a whole number of 8 kHz samples")
        if max_catch_up < 1:
            raise ValueError("max_catch_up must be at least 1")
        self.loop = loop
        self.ptime = ptime
        self.samples_per_tick = round(samples)
        self.max_catch_up = max_catch_up
        self.late_threshold = late_threshold
        self.t0 = loop.time()
        self.stats = ClockStats()
        self._next = 0  # the next tick to process
        self._streams: dict[Clocked, None] = {}
        self._snapshot: tuple[Clocked, ...] = ()
        self._dirty = False
        self._running = False
        self._handle: asyncio.TimerHandle | None = None

    # -- time -----------------------------------------------------------------------------------------------

    def tick_at(self, when: float) -> int:
        """The last tick whose deadline is at or before loop time ``when``."""
        return math.floor((when - self.t0) / self.ptime + 1e-9)

    def deadline(self, tick: int) -> float:
        return self.t0 + tick * self.ptime

    @property
    def running(self) -> bool:
        return self._running

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream: object) -> bool:
        return stream in self._streams

    # -- control --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start ticking (idempotent). Streams added before start begin sending now."""
        if not self._running:
            self._running = True
            if self._streams:
                self._wake()

    def stop(self) -> None:
        """Stop ticking; registered streams stay registered and resume on ``start()``."""
        self._running = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def add(self, stream: Clocked) -> None:
        """Register ``stream``: from the next tick on, it is asked for one frame per tick."""
        if stream not in self._streams:
            self._streams[stream] = None
            self._dirty = True
            if self._running and self._handle is None:
                self._wake()

    def discard(self, stream: Clocked) -> None:
        """Unregister ``stream`` (no-op if it is not registered). Safe to call from within ``send_tick``."""
        if self._streams.pop(stream, 0) is None:
            self._dirty = True

    # -- ticking --------------------------------------------------------------------------------------------

    def _wake(self) -> None:
        self._next = max(self._next, self.tick_at(self.loop.time()) + 1)
        self._handle = self.loop.call_at(self.t0 + self._next * self.ptime, self._on_timer)

    def _on_timer(self) -> None:
        now = self.loop.time()
        first = self._next
        t0 = self.t0
        ptime = self.ptime
        stats = self.stats
        lateness = now - (t0 + first * ptime)
        if lateness < 0.0:
            lateness = 0.0  # timers may fire a hair early (uvloop rounds to milliseconds)
        elif lateness > stats.max_lateness:
            stats.max_lateness = lateness
        if lateness > self.late_threshold:
            stats.late_ticks += 1
        last = int((now - t0) / ptime + 1e-9)
        if last < first:
            last = first
        elif last - first >= self.max_catch_up:
            stats.skipped_ticks += last - first + 1 - self.max_catch_up
            first = last + 1 - self.max_catch_up
        stats.timer_callbacks += 1
        stats.ticks += last - first + 1
        stats.catch_up_ticks += last - first
        try:
            for tick in range(first, last + 1):
                if self._dirty:
                    self._snapshot = tuple(self._streams)
                    self._dirty = False
                for stream in self._snapshot:
                    stream.send_tick(tick)
        finally:
            self._next = last + 1
            if self._running and self._streams:
                self._handle = self.loop.call_at(t0 + self._next * ptime, self._on_timer)
            else:
                self._handle = None
