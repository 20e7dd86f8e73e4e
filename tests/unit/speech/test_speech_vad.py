"""The endpointer: speech start needs enough voiced frames, pre-roll is kept, end after the configured silence."""

from __future__ import annotations

import numpy as np
import pytest

from ivr.speech.recognizer import Pcm
from ivr.speech.vad import (
    Endpointer,
    EndpointerEvent,
    FrameClassifier,
    SpeechEnded,
    SpeechFrames,
    SpeechStarted,
    WebRtcVad,
)


class Scripted(FrameClassifier):
    """Says "speech" for frames whose first sample is non-zero (the test writes the script into the audio)."""

    def is_speech(self, frame: Pcm) -> bool:
        return bool(frame[0] != 0)


def frames(pattern: str) -> list[Pcm]:
    """'s' = a speech frame, '.' = a silent one; each frame's second sample is its index (to trace it)."""
    out = []
    for i, ch in enumerate(pattern):
        f = np.zeros(160, dtype=np.int16)
        f[0] = 1000 if ch == "s" else 0
        f[1] = i
        out.append(f)
    return out


def run(ep: Endpointer, pattern: str) -> list[EndpointerEvent]:
    return ep.process_many(frames(pattern))


def test_a_click_does_not_start_speech() -> None:
    ep = Endpointer(Scripted(), start_window_ms=200, start_voiced_ms=120)
    assert run(ep, "..s....s..s.....") == []
    assert not ep.in_speech


def test_speech_starts_after_enough_voiced_frames_and_carries_the_pre_roll() -> None:
    ep = Endpointer(Scripted(), start_window_ms=200, start_voiced_ms=120, pre_roll_ms=100)
    events = run(ep, "......ssssss")
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    assert len(starts) == 1
    first = next(e for e in events if isinstance(e, SpeechFrames))
    indices = [int(f[1]) for f in first.frames]
    assert indices[-1] == 11 and len(indices) == 10  # 10 frames of pre-roll (the start window), ending now


def test_end_of_speech_after_end_silence_with_only_tail_passed_on() -> None:
    ep = Endpointer(Scripted(), start_window_ms=100, start_voiced_ms=100, end_silence_ms=200, tail_ms=60,
                    pre_roll_ms=100)
    events = run(ep, "sssss" + "." * 12)
    ends = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ends) == 1 and ends[0].frame == 15 and not ends[0].truncated
    passed = [int(f[1]) for e in events if isinstance(e, SpeechFrames) for f in e.frames]
    assert passed == list(range(0, 8))  # 5 speech frames + 3 tail frames; the rest of the silence is not decoded


def test_a_pause_inside_speech_is_passed_on_when_speech_resumes() -> None:
    ep = Endpointer(Scripted(), start_window_ms=100, start_voiced_ms=100, end_silence_ms=300, tail_ms=40)
    events = run(ep, "sssss" + "......" + "sss" + "." * 15)
    passed = [int(f[1]) for e in events if isinstance(e, SpeechFrames) for f in e.frames]
    assert passed == list(range(0, 14 + 2))
    assert sum(isinstance(e, SpeechEnded) for e in events) == 1


def test_max_speech_cuts_a_never_ending_utterance() -> None:
    ep = Endpointer(Scripted(), start_window_ms=100, start_voiced_ms=100, max_speech_ms=400)
    events = run(ep, "s" * 40)
    ends = [e for e in events if isinstance(e, SpeechEnded)]
    assert ends and ends[0].truncated and ends[0].frame == 20


def test_bad_timing_combinations_are_refused() -> None:
    with pytest.raises(ValueError):
        Endpointer(Scripted(), start_window_ms=100, start_voiced_ms=200)
    with pytest.raises(ValueError):
        Endpointer(Scripted(), end_silence_ms=100, tail_ms=200)


def test_webrtc_vad_hears_a_voice_like_signal_and_not_silence() -> None:
    vad = WebRtcVad(2)
    t = np.arange(160) / 8000
    voiced = (4000 * (np.sin(2 * np.pi * 140 * t) + 0.6 * np.sin(2 * np.pi * 280 * t)
                      + 0.4 * np.sin(2 * np.pi * 700 * t))).astype(np.int16)
    silence = np.zeros(160, dtype=np.int16)
    assert not vad.is_speech(silence)
    assert any(vad.is_speech(voiced) for _ in range(10))
    with pytest.raises(ValueError):
        vad.is_speech(np.zeros(80, dtype=np.int16))
    with pytest.raises(ValueError):
        WebRtcVad(4)
