"""Recording the caller: 20 ms frames from a stream's inbound audio path to a WAV file, written off the event loop.

A ``RecordingWriter`` is one thread for the whole process with one queue; each ``Recording`` puts its frames on
that queue without waiting (when the queue is full the frame is dropped and counted, the loop never blocks) and
the thread opens, writes (with soundfile, 16-bit PCM, 8 kHz mono) and closes the files. The event-loop side
decides when a recording ends:

* ``max_seconds`` of audio (or of wall time, if the caller sends nothing at all);
* a key in ``stop_keys`` (``digit()``); the key's own tone is not kept when it came in-band;
* ``silence_seconds`` of silence: frames below ``silence_threshold_dbm0``, or no audio at all; the trailing
  silence is not kept;
* ``stop()``, or the stream closing.

``await recording.wait()`` gives the ``RecordingResult`` (path, seconds written, why it stopped) once the file
is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import numpy as np
import soundfile

from ivr.media import g711
from ivr.media.dtmf_inband import DBM0_AMPLITUDE
from ivr.media.jitterbuffer import Pcm

__all__ = ["AudioSource", "Recording", "RecordingResult", "RecordingWriter", "StopReason"]

StopReason = Literal["dtmf", "silence", "max_length", "stopped", "closed", "error"]

FRAME_SECONDS: Final = g711.FRAME_SAMPLES / g711.CLOCK_RATE
HOLDBACK_FRAMES: Final = 3
"""Frames kept back from the writer, so that an in-band stop key's tone (heard about 30-40 ms after it began) can
be left out of the file."""


class AudioSource(Protocol):
    """Where a recording gets its frames (``MediaStream`` is one)."""

    def add_audio_consumer(self, consumer: Callable[[Pcm], None]) -> None: ...

    def remove_audio_consumer(self, consumer: Callable[[Pcm], None]) -> None: ...


@dataclass(frozen=True, slots=True)
class RecordingResult:
    path: Path
    duration: float
    """Seconds of audio in the file."""
    stop_reason: StopReason
    digit: str | None = None
    """The key that stopped the recording (``stop_reason == "dtmf"``)."""
    frames_dropped: int = 0
    """Frames lost because the writer could not keep up (its queue was full)."""
    error: str | None = None


_OPEN: Final = 0
_FRAME: Final = 1
_CLOSE: Final = 2
_QUIT: Final = 3


class RecordingWriter:
    """The thread that writes every recording's file. Start it once (``start()`` is also called by the first
    recording), ``close()`` it at shutdown (off the loop, or with a small timeout: it waits for the thread)."""

    def __init__(self, *, max_queued_frames: int = 5000, samplerate: int = g711.CLOCK_RATE) -> None:
        self.max_queued_frames = max_queued_frames
        self.samplerate = samplerate
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._queued_frames = 0  # written by the loop thread only; the writer reports what it took back
        self._taken = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self.frames_written = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ivr-recording-writer", daemon=True)
            self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Finish what is queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put((_QUIT,))
            self._thread.join(timeout)
            self._thread = None

    # -- called on the event loop ---------------------------------------------------------------------------

    def _new_id(self) -> int:
        return next(self._ids)

    def _open(self, rec_id: int, path: Path) -> None:
        self.start()
        self._queue.put((_OPEN, rec_id, path))

    def _write(self, rec_id: int, frame: Pcm) -> bool:
        """Queue one frame; False (dropped) when the queue is full."""
        with self._lock:
            backlog = self._queued_frames - self._taken
        if backlog >= self.max_queued_frames:
            return False
        self._queued_frames += 1
        self._queue.put((_FRAME, rec_id, frame))
        return True

    def _close(self, rec_id: int, done: Callable[[int, str | None], None]) -> None:
        self._queue.put((_CLOSE, rec_id, done))

    # -- the thread -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        files: dict[int, soundfile.SoundFile | None] = {}
        written: dict[int, int] = {}
        errors: dict[int, str] = {}
        get = self._queue.get
        while True:
            batch = [get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 500:
                    batch.append(self._queue.get_nowait())
            frames = sum(1 for item in batch if item[0] == _FRAME)
            with self._lock:
                self._taken += frames
            pending: dict[int, list[Pcm]] = {}
            for item in batch:
                kind = item[0]
                if kind == _FRAME:
                    pending.setdefault(item[1], []).append(item[2])
                    continue
                self._flush(pending, files, written, errors)  # keep the order of frames and open/close
                if kind == _OPEN:
                    rec_id, path = item[1], item[2]
                    written[rec_id] = 0
                    try:
                        files[rec_id] = soundfile.SoundFile(
                            str(path), "w", samplerate=self.samplerate, channels=1, subtype="PCM_16", format="WAV"
                        )
                    except Exception as exc:  # unwritable directory, disk full...
                        files[rec_id] = None
                        errors[rec_id] = f"{path}: cannot open for writing ({exc})"
                elif kind == _CLOSE:
                    rec_id, done = item[1], item[2]
                    handle = files.pop(rec_id, None)
                    if handle is not None:
                        try:
                            handle.close()
                        except Exception as exc:
                            errors.setdefault(rec_id, f"closing failed ({exc})")
                    done(written.pop(rec_id, 0), errors.pop(rec_id, None))
                elif kind == _QUIT:
                    for handle in files.values():
                        if handle is not None:
                            handle.close()
                    return
            self._flush(pending, files, written, errors)

    def _flush(
        self,
        pending: dict[int, list[Pcm]],
        files: dict[int, soundfile.SoundFile | None],
        written: dict[int, int],
        errors: dict[int, str],
    ) -> None:
        for rec_id, frames in pending.items():
            handle = files.get(rec_id)
            if handle is None:
                continue
            try:
                handle.write(np.concatenate(frames))
                written[rec_id] += len(frames)
                self.frames_written += len(frames)
            except Exception as exc:
                errors.setdefault(rec_id, f"write failed ({exc})")
                with contextlib.suppress(Exception):
                    handle.close()
                files[rec_id] = None
        pending.clear()


class Recording:
    """One recording in progress. Feed it frames (``feed``, an audio consumer) and keys (``digit``); it stops
    itself on max length, a stop key or silence. With ``source`` it adds itself as that source's audio consumer
    and removes itself when it stops."""

    def __init__(
        self,
        writer: RecordingWriter,
        path: Path | str,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        source: AudioSource | None = None,
        max_seconds: float = 60.0,
        stop_keys: str = "#",
        silence_seconds: float | None = 5.0,
        silence_threshold_dbm0: float = -45.0,
    ) -> None:
        if max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        if silence_seconds is not None and silence_seconds <= 0:
            raise ValueError("silence_seconds must be positive (or None for no silence stop)")
        self.path = Path(path)
        self.stop_keys = stop_keys.upper()
        self.max_seconds = max_seconds
        self.silence_seconds = silence_seconds
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._writer = writer
        self._source = source
        self._id = writer._new_id()
        self._max_frames = math.ceil(max_seconds / FRAME_SECONDS)
        self._silence_frames = (
            None if silence_seconds is None else max(HOLDBACK_FRAMES + 1, math.ceil(silence_seconds / FRAME_SECONDS))
        )
        ms0 = DBM0_AMPLITUDE * DBM0_AMPLITUDE / 2.0
        self._silence_energy = g711.FRAME_SAMPLES * ms0 * 10 ** (silence_threshold_dbm0 / 10)
        self._pending: deque[Pcm] = deque()
        self._silent_run = 0
        self._frames_in = 0
        self._committed = 0
        self._dropped = 0
        self._stopped = False
        self._reason: StopReason | None = None
        self._digit: str | None = None
        self._last_audio = self._loop.time()
        self._future: asyncio.Future[RecordingResult] = self._loop.create_future()
        self._timers: list[asyncio.TimerHandle] = [self._loop.call_later(max_seconds, self.stop, "max_length")]
        if silence_seconds is not None:
            self._timers.append(self._loop.call_later(0.25, self._watch))
        writer._open(self._id, self.path)
        if source is not None:
            source.add_audio_consumer(self.feed)

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def seconds(self) -> float:
        """Audio received so far."""
        return self._frames_in * FRAME_SECONDS

    async def wait(self) -> RecordingResult:
        """The result, once the recording has stopped and its file is closed."""
        return await asyncio.shield(self._future)

    def result(self) -> RecordingResult | None:
        return self._future.result() if self._future.done() else None

    # -- inputs ---------------------------------------------------------------------------------------------

    def feed(self, frame: Pcm) -> None:
        """One 20 ms frame of the caller's audio (an ``AudioConsumer``)."""
        if self._stopped:
            return
        self._frames_in += 1
        self._last_audio = self._loop.time()
        x = frame.astype(np.float32)
        silent = float(x @ x) < self._silence_energy
        self._silent_run = self._silent_run + 1 if silent else 0
        pending = self._pending
        pending.append(frame)
        keep = max(HOLDBACK_FRAMES, self._silent_run)
        while len(pending) > keep:
            self._commit(pending.popleft())
        if self._silence_frames is not None and self._silent_run >= self._silence_frames:
            self._finish("silence", keep_pending=False)
        elif self._frames_in >= self._max_frames:
            self._finish("max_length", keep_pending=True)

    def digit(self, key: str, source: str = "rfc4733") -> bool:
        """A key the caller pressed; True if it stopped the recording. An in-band key's tone is left out."""
        if self._stopped or not key or key.upper() not in self.stop_keys:
            return False
        self._digit = key.upper()
        if source == "inband":
            self._silent_run = 0
            self._finish("dtmf", keep_pending=False)
        else:
            self._finish("dtmf", keep_pending=True)
        return True

    def stop(self, reason: StopReason = "stopped") -> None:
        """Stop now, keeping what was received (idempotent)."""
        if not self._stopped:
            self._finish(reason, keep_pending=True)

    # -- internals --------------------------------------------------------------------------------------------

    def _watch(self) -> None:
        if self._stopped or self.silence_seconds is None:
            return
        if self._loop.time() - self._last_audio >= self.silence_seconds:
            self._finish("silence", keep_pending=False)  # the caller sends nothing at all
            return
        self._timers.append(self._loop.call_later(0.25, self._watch))

    def _commit(self, frame: Pcm) -> None:
        if self._committed >= self._max_frames:
            return
        if self._writer._write(self._id, frame):
            self._committed += 1
        else:
            self._dropped += 1

    def _finish(self, reason: StopReason, *, keep_pending: bool) -> None:
        self._stopped = True
        self._reason = reason
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        pending = self._pending
        if keep_pending:
            while pending:
                self._commit(pending.popleft())
        elif reason == "silence":
            # Keep what came before the silent run; drop the silence itself.
            while len(pending) > self._silent_run:
                self._commit(pending.popleft())
        pending.clear()
        if self._source is not None:
            self._source.remove_audio_consumer(self.feed)
        # The result comes from the writer thread: a virtual-time loop (the simulator's) must wait for it.
        note = getattr(self._loop, "note_outside_work", None)
        if note is not None:
            note(self._future)
        self._writer._close(self._id, self._closed_by_writer)

    def _closed_by_writer(self, frames: int, error: str | None) -> None:
        """Runs on the writer thread."""
        result = RecordingResult(
            path=self.path,
            duration=frames * FRAME_SECONDS,
            stop_reason="error" if error is not None and frames == 0 else self._reason or "stopped",
            digit=self._digit,
            frames_dropped=self._dropped,
            error=error,
        )
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._resolve, result)

    def _resolve(self, result: RecordingResult) -> None:
        if not self._future.done():
            self._future.set_result(result)
