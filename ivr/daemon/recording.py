"""The record node in the daemon: an optional beep, then the caller's audio to a WAV file on the writer thread,
until a stop key, silence, the length limit or a hang-up.

The recording takes its stop keys through the call's key hook (:attr:`ivr.call.Call.key_hook`), so a key reaches
the recording or the flow by the one path every key takes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from ivr.call import Call
from ivr.daemon.calls import ActiveCall
from ivr.flows.runtime import RecordResult
from ivr.media.prompts import Prompt
from ivr.media.recorder import Recording, RecordingWriter

__all__ = ["StreamRecorder"]

log = structlog.get_logger("ivr.recording")


def beep_pcm() -> npt.NDArray[np.int16]:
    t = np.arange(int(0.25 * 8000)) / 8000.0
    return (np.sin(2 * np.pi * 1000.0 * t) * 8000).astype(np.int16)


class StreamRecorder:
    """``Recorder`` for the flow engine. ``active_for`` finds a call's leg; ``folder()`` is where recordings go
    (one subfolder per UTC day)."""

    def __init__(
        self,
        active_for: Callable[[Call], ActiveCall | None],
        folder: Callable[[], Path],
        loop: Callable[[], asyncio.AbstractEventLoop],
    ) -> None:
        self._active_for = active_for
        self._folder = folder
        self._loop = loop
        self.writer = RecordingWriter()
        self.beep = Prompt("beep", beep_pcm())

    async def record(
        self, call: Call, *, max_seconds: float, beep: bool, stop_keys: str, silence_seconds: float | None
    ) -> RecordResult:
        active = self._active_for(call)
        if active is None or call.ended:
            return RecordResult(None, 0.0, "hangup")
        if beep:
            await call.play(self.beep)
            if call.ended:
                return RecordResult(None, 0.0, "hangup")
        active.recordings += 1
        day = time.strftime("%Y-%m-%d", time.gmtime())
        safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in call.call_id)[:80]
        path = self._folder() / day / f"{safe_id}-{active.recordings}.wav"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            recording = Recording(
                self.writer, path, loop=self._loop(), source=active.stream, max_seconds=max_seconds,
                stop_keys=stop_keys, silence_seconds=silence_seconds,
            )  # fmt: skip
        except (OSError, ValueError) as exc:
            return RecordResult(None, 0.0, f"failed: {exc}")
        active.recording = recording
        call.key_hook = lambda key, source: not recording.stopped and recording.digit(key, source)
        try:
            result = await recording.wait()
        finally:
            active.recording = None
            call.key_hook = None
        if result.error is not None:
            return RecordResult(None, result.duration, f"failed: {result.error}")
        reason = {"dtmf": "terminator", "closed": "hangup"}.get(result.stop_reason, result.stop_reason)
        log.info("recorded", call_id=call.call_id, path=str(result.path), seconds=round(result.duration, 2),
                 reason=reason, frames_dropped=result.frames_dropped)  # fmt: skip
        return RecordResult(str(result.path), result.duration, reason)
