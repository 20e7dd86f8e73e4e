"""Voice activity gating and endpointing on 20 ms frames of 8 kHz audio (webrtcvad).

``Endpointer`` is sans-I/O: frames in, events out, time counted in frames (20 ms each), no clock reads. It decides
when speech starts (enough voiced frames in a short window: a cough or a click does not barge into a prompt), keeps a
little audio from before the start (pre-roll: webrtcvad is late on soft onsets), and when speech ends (a run of
unvoiced frames as long as ``end_silence_ms``, or ``max_speech_ms`` reached). Between the two, ``SpeechFrames``
events carry the frames to hand to the recogniser, so only speech (plus padding) reaches the decoder.

The no-input timeout is not here: it is wall time on the event loop, owned by the listener.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ivr.speech.recognizer import FRAME_SAMPLES, SAMPLE_RATE, Pcm

__all__ = ["Endpointer", "EndpointerEvent", "FrameClassifier", "SpeechEnded", "SpeechFrames", "SpeechStarted",
           "WebRtcVad"]

FRAME_MS: Final = 1000 * FRAME_SAMPLES // SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech began ``frame`` frames into the stream (including the pre-roll, which was sent just before)."""

    frame: int


@dataclass(frozen=True, slots=True)
class SpeechFrames:
    frames: tuple[Pcm, ...]


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The utterance is over at ``frame``; ``voiced_ms`` of it were speech; ``truncated`` if max_speech_ms cut it."""

    frame: int
    voiced_ms: int
    truncated: bool


EndpointerEvent = SpeechStarted | SpeechFrames | SpeechEnded


class FrameClassifier:
    """Anything that says whether a 20 ms frame is speech (a protocol for tests: the real one is ``WebRtcVad``)."""

    def is_speech(self, frame: Pcm) -> bool:
        raise NotImplementedError


class WebRtcVad(FrameClassifier):
    """webrtcvad on 8 kHz 20 ms frames. ``aggressiveness`` 0 (lets most through) .. 3 (strictest)."""

    def __init__(self, aggressiveness: int = 2) -> None:
        import webrtcvad  # type: ignore[import-untyped]

        if not 0 <= aggressiveness <= 3:
            raise ValueError(f"VAD aggressiveness must be 0..3, not {aggressiveness}")
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: Pcm) -> bool:
        if frame.shape != (FRAME_SAMPLES,):
            raise ValueError(f"VAD needs {FRAME_SAMPLES}-sample frames, got {frame.shape}")
        return bool(self._vad.is_speech(frame.tobytes(), SAMPLE_RATE))


class Endpointer:
    """Speech start/end decisions over a stream of frames (see the module docstring).

    start: ``start_voiced_ms`` of voiced audio within the last ``start_window_ms``.
    end: ``end_silence_ms`` of consecutive unvoiced frames after the start, or ``max_speech_ms`` of utterance.
    ``pre_roll_ms`` of audio before the start and ``tail_ms`` of the closing silence are passed on as well.
    After an end, it waits for the next start (call ``reset`` to start afresh)."""

    def __init__(self, classifier: FrameClassifier, *, start_window_ms: int = 200, start_voiced_ms: int = 120,
                 end_silence_ms: int = 500, max_speech_ms: int = 10_000, pre_roll_ms: int = 300,
                 tail_ms: int = 200) -> None:
        if start_voiced_ms > start_window_ms:
            raise ValueError("start_voiced_ms cannot exceed start_window_ms")
        if tail_ms > end_silence_ms:
            raise ValueError("tail_ms cannot exceed end_silence_ms")
        self._classifier = classifier
        self._window = max(1, start_window_ms // FRAME_MS)
        self._start_voiced = max(1, start_voiced_ms // FRAME_MS)
        self._end_silence = max(1, end_silence_ms // FRAME_MS)
        self._max_speech = max(1, max_speech_ms // FRAME_MS)
        self._pre_roll = max(self._window, pre_roll_ms // FRAME_MS)
        self._tail = tail_ms // FRAME_MS
        self.reset()

    def reset(self) -> None:
        self._frame = 0
        self._recent: deque[tuple[Pcm, bool]] = deque(maxlen=self._pre_roll)
        self._in_speech = False
        self._silence_run = 0
        self._held: list[Pcm] = []  # trailing unvoiced frames not yet passed on
        self._utterance_frames = 0
        self._voiced = 0

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def frames_seen(self) -> int:
        return self._frame

    def process(self, frame: Pcm) -> list[EndpointerEvent]:
        voiced = self._classifier.is_speech(frame)
        self._frame += 1
        if not self._in_speech:
            self._recent.append((frame, voiced))
            window = list(self._recent)[-self._window:]
            if sum(v for _, v in window) < self._start_voiced:
                return []
            self._in_speech = True
            self._silence_run = 0
            self._held = []
            pre = tuple(f for f, _ in self._recent)
            self._recent.clear()
            self._utterance_frames = len(pre)
            self._voiced = sum(v for _, v in window)
            return [SpeechStarted(self._frame - len(pre)), SpeechFrames(pre)]
        self._utterance_frames += 1
        events: list[EndpointerEvent] = []
        if voiced:
            self._voiced += 1
            self._silence_run = 0
            if self._held:
                events.append(SpeechFrames((*self._held, frame)))
                self._held = []
            else:
                events.append(SpeechFrames((frame,)))
        else:
            self._silence_run += 1
            if self._silence_run <= self._tail:
                events.append(SpeechFrames((frame,)))  # the first tail_ms of silence go to the decoder
            else:
                self._held.append(frame)
        truncated = self._utterance_frames >= self._max_speech
        if self._silence_run >= self._end_silence or truncated:
            events.append(SpeechEnded(self._frame, self._voiced * FRAME_MS, truncated and
                                      self._silence_run < self._end_silence))
            self._in_speech = False
            self._held = []
            self._recent.clear()
        return events

    def process_many(self, frames: Sequence[Pcm]) -> list[EndpointerEvent]:
        out: list[EndpointerEvent] = []
        for frame in frames:
            out.extend(self.process(frame))
        return out
