"""SpeechListener on the loop: no-input timer, barge-in event, one decision per listener, thresholds, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from ivr.speech.config import SpeechSettings
from ivr.speech.grammar import Grammar, GrammarError
from ivr.speech.listener import SpeechListener
from ivr.speech.recognizer import (
    Alternative,
    PartialCallback,
    Pcm,
    RecognitionResult,
    RecognitionSession,
    SpeechEngine,
)
from ivr.speech.vad import FrameClassifier

GRAMMAR = Grammar.from_mapping({"billing": ["billing", "invoice"], "sales": ["sales"]})


class Loud(FrameClassifier):
    def is_speech(self, frame: Pcm) -> bool:
        return bool(np.abs(frame).max() > 500)


class KeywordBySampleEngine(SpeechEngine):
    """A test engine: "recognises" the keyword whose index is the loudest sample of the utterance / 1000, with a
    confidence taken from the options; records what it was fed."""

    languages = ("en",)

    def __init__(self, options: dict[str, object]) -> None:
        self.confidence = float(options.get("confidence", 0.9))  # type: ignore[arg-type]
        self.fed: list[int] = []

    def start(self, grammar: Grammar, on_partial: PartialCallback | None = None) -> RecognitionSession:
        engine = self

        class Session(RecognitionSession):
            frames: list[Pcm] = []

            def feed(self, frames: Sequence[Pcm]) -> None:
                self.frames = [*self.frames, *frames]
                engine.fed.append(len(frames))

            async def finish(self) -> RecognitionResult:
                await asyncio.sleep(0)
                peak = int(max(np.abs(f).max() for f in self.frames))
                keyword = grammar.keywords[peak // 1000 - 1] if 1000 <= peak < 3000 else None
                if keyword is None:
                    return RecognitionResult.no_match("out-of-grammar", "banana", 0.2)
                return RecognitionResult(keyword, keyword, engine.confidence,
                                         (Alternative("sales", "sales", 0.1),))

            def cancel(self) -> None:
                self.frames = []

        return Session()

    def close(self) -> None:
        return None


def speech(level: int, n: int) -> list[Pcm]:
    return [np.full(160, level, dtype=np.int16) for _ in range(n)]


def silence(n: int) -> list[Pcm]:
    return [np.zeros(160, dtype=np.int16) for _ in range(n)]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def result(self, keyword: str, text: str, confidence: float, alternatives: tuple[Alternative, ...]) -> None:
        self.events.append(("result", keyword, confidence, alternatives))

    def no_match(self, reason: str) -> None:
        self.events.append(("no_match", reason))

    def started(self) -> None:
        self.events.append(("speech_started",))


def make(engine: SpeechEngine, rec: Recorder, **settings: object) -> SpeechListener:
    return SpeechListener(asyncio.get_running_loop(), engine, GRAMMAR, SpeechSettings.model_validate(settings),
                          on_result=rec.result, on_no_match=rec.no_match, on_speech_started=rec.started,
                          classifier=Loud())


async def test_nobody_speaking_gives_no_input_after_the_timeout() -> None:
    rec = Recorder()
    listener = make(KeywordBySampleEngine({}), rec, no_input_timeout=0.05)
    listener.start()
    for f in silence(5):
        listener.feed(f)
    await asyncio.sleep(0.1)
    assert rec.events == [("no_match", "no-input")]
    assert listener.state == "done"


async def test_speech_start_stops_the_no_input_timer_and_the_result_follows_end_of_speech() -> None:
    rec = Recorder()
    engine = KeywordBySampleEngine({})
    listener = make(engine, rec, no_input_timeout=0.05, end_silence=0.2)
    listener.start()
    for f in silence(3) + speech(1500, 20):
        listener.feed(f)
    assert rec.events == [("speech_started",)]
    await asyncio.sleep(0.1)  # past the no-input timeout: it must not fire while the caller speaks
    for f in silence(15):
        listener.feed(f)
    await listener.wait()
    assert rec.events == [("speech_started",), ("result", "billing", 0.9, (Alternative("sales", "sales", 0.1),))]
    assert listener.decision_latency is not None and listener.decision_latency >= 0
    assert sum(engine.fed) < 3 + 20 + 15  # the tail of the silence was not sent to the engine


async def test_a_result_below_the_confidence_threshold_is_no_match() -> None:
    rec = Recorder()
    listener = make(KeywordBySampleEngine({"confidence": 0.3}), rec, confidence_threshold=0.5, end_silence=0.1)
    listener.start()
    for f in speech(2500, 20) + silence(10):
        listener.feed(f)
    await listener.wait()
    assert rec.events == [("speech_started",), ("no_match", "low-confidence")]


async def test_out_of_grammar_speech_is_no_match_with_the_engines_reason() -> None:
    rec = Recorder()
    listener = make(KeywordBySampleEngine({}), rec, end_silence=0.1)
    listener.start()
    for f in speech(9000, 20) + silence(10):
        listener.feed(f)
    await listener.wait()
    assert rec.events[-1] == ("no_match", "out-of-grammar")


async def test_cancel_silences_the_listener() -> None:
    rec = Recorder()
    listener = make(KeywordBySampleEngine({}), rec, end_silence=0.1, no_input_timeout=0.05)
    listener.start()
    for f in speech(1500, 20) + silence(10):
        listener.feed(f)
    listener.cancel()
    await asyncio.sleep(0.1)
    assert rec.events == [("speech_started",)]
    assert listener.state == "cancelled"


async def test_frames_before_start_are_ignored_and_one_decision_only() -> None:
    rec = Recorder()
    listener = make(KeywordBySampleEngine({}), rec, end_silence=0.1)
    for f in speech(1500, 20) + silence(10):
        listener.feed(f)
    assert rec.events == []
    listener.start()
    for f in speech(1500, 20) + silence(10) + speech(2500, 20) + silence(10):
        listener.feed(f)
    await listener.wait()
    await asyncio.sleep(0.05)
    assert [e[0] for e in rec.events] == ["speech_started", "result"]


async def test_a_grammar_in_a_language_the_engine_does_not_speak_is_refused_up_front() -> None:
    rec = Recorder()
    with pytest.raises(GrammarError, match="'bg'"):
        SpeechListener(asyncio.get_running_loop(), KeywordBySampleEngine({}),
                       Grammar.from_mapping({"billing": ["сметка"]}, language="bg"),
                       on_result=rec.result, on_no_match=rec.no_match)
