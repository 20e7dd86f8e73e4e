"""``SpeechListener``: one menu's listening window on a call, on the event loop.

The media path calls ``feed(pcm)`` with every 20 ms frame (``MediaStream.add_audio_consumer(listener.feed)``). That
runs the VAD on the frame (a few microseconds of C) and, once speech has started, appends the frame to the engine's
session (a list append; pocketsphinx ships the utterance to a worker process in one message at end of speech). No
blocking, no per-frame process round trip.

Callbacks, all on the loop:
  ``on_speech_started()``   the caller began speaking (barge into the prompt, stop the no-input timer);
  ``on_result(keyword, text, confidence, alternatives)``   a keyword (or digit string) was recognised;
  ``on_no_match(reason)``   "no-input" (nobody spoke within the timeout), "no-speech", "out-of-grammar",
                            "low-confidence" or "error".
  ``on_partial(result)``    optional: partial results where the engine has them.
Exactly one of ``on_result``/``on_no_match`` is called per listener, unless it is cancelled first (then neither).

The no-input timer reads the loop's clock (``loop.call_later``), so it runs on virtual time in simulations.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Literal

import numpy as np

from ivr.speech.config import SpeechSettings
from ivr.speech.grammar import Grammar, GrammarError
from ivr.speech.recognizer import (
    Alternative,
    PartialCallback,
    Pcm,
    RecognitionResult,
    RecognitionSession,
    SpeechEngine,
)
from ivr.speech.vad import Endpointer, FrameClassifier, SpeechEnded, SpeechFrames, SpeechStarted

__all__ = ["ListenerState", "NoMatchCallback", "ResultCallback", "SpeechListener"]

ResultCallback = Callable[[str, str, float, tuple[Alternative, ...]], None]
NoMatchCallback = Callable[[str], None]
ListenerState = Literal["idle", "waiting", "speaking", "deciding", "done", "cancelled"]


class SpeechListener:
    """Listen for one utterance against ``grammar`` (see the module docstring). Frames fed before ``start()`` are
    ignored: call ``start()`` when listening begins (at the start of the prompt for barge-in, else at its end);
    it also arms the no-input timer."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        engine: SpeechEngine,
        grammar: Grammar,
        settings: SpeechSettings | None = None,
        *,
        on_result: ResultCallback,
        on_no_match: NoMatchCallback,
        on_speech_started: Callable[[], None] | None = None,
        on_partial: PartialCallback | None = None,
        classifier: FrameClassifier | None = None,
    ) -> None:
        if not engine.supports(grammar.language):
            # Refuse here, on the flow's side, rather than in feed() on the media path.
            raise GrammarError(f"speech engine {type(engine).__name__} does not speak {grammar.language!r}")
        self._loop = loop
        self._engine = engine
        self._grammar = grammar
        self._settings = settings or SpeechSettings()
        self._endpointer: Endpointer = self._settings.make_endpointer(classifier)
        self._on_result = on_result
        self._on_no_match = on_no_match
        self._on_speech_started = on_speech_started
        self._on_partial = on_partial
        self._session: RecognitionSession | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self.state: ListenerState = "idle"
        self.speech_ended_at: float | None = None
        self.decided_at: float | None = None
        self.last_result: RecognitionResult | None = None
        self._quiet: asyncio.TimerHandle | None = None

    @property
    def decision_latency(self) -> float | None:
        """Seconds from the end-of-speech decision to the result (None until both happened)."""
        if self.speech_ended_at is None or self.decided_at is None:
            return None
        return self.decided_at - self.speech_ended_at

    def start(self, no_input_timeout: float | None = None) -> None:
        """Begin listening: frames count from now, and no-input fires after the timeout if nobody speaks."""
        if self.state != "idle":
            raise RuntimeError(f"listener already {self.state}")
        self.state = "waiting"
        timeout = self._settings.no_input_timeout if no_input_timeout is None else no_input_timeout
        self._timer = self._loop.call_later(timeout, self._no_input)

    def feed(self, pcm: Pcm) -> None:
        """One 20 ms frame from the media path. Cheap; never blocks."""
        if self.state not in ("waiting", "speaking"):
            return
        self._process(pcm)
        if self.state == "speaking":
            # A phone that stops sending RTP when its user stops talking (silence suppression, DTX) sends no
            # silence to end the utterance: if no frame comes for the end-silence time, the line is silent.
            if self._quiet is not None:
                self._quiet.cancel()
            self._quiet = self._loop.call_later(self._settings.end_silence + 0.1, self._line_went_quiet)

    def _line_went_quiet(self) -> None:
        self._quiet = None
        silence = np.zeros(160, dtype=np.int16)  # one 20 ms frame at 8 kHz
        for _ in range(round((self._settings.end_silence + 0.5) / 0.02)):
            if self.state != "speaking":
                return
            self._process(silence)

    def _process(self, pcm: Pcm) -> None:
        for event in self._endpointer.process(pcm):
            if isinstance(event, SpeechFrames):
                if self._session is not None:
                    self._session.feed(event.frames)
            elif isinstance(event, SpeechStarted):
                self._speech_started()
            elif isinstance(event, SpeechEnded):
                self._speech_ended()

    def cancel(self) -> None:
        """Stop listening (a key was pressed, the caller hung up): no callback will follow. Idempotent."""
        if self.state in ("done", "cancelled"):
            return
        self.state = "cancelled"
        self._cancel_timer()
        if self._session is not None:
            self._session.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def wait(self) -> None:
        """Until the decision (or cancellation) is made; for tests and callers that prefer awaiting."""
        while self.state not in ("done", "cancelled"):
            if self._task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(self._task)
                if self.state in ("done", "cancelled"):
                    return
            await asyncio.sleep(0.01)

    # -- internals ----------------------------------------------------------------------------------------------

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._quiet is not None:
            self._quiet.cancel()
            self._quiet = None

    def _no_input(self) -> None:
        self._timer = None
        if self.state == "waiting":
            self.state = "done"
            self._on_no_match("no-input")

    def _speech_started(self) -> None:
        self._cancel_timer()
        self.state = "speaking"
        self._session = self._engine.start(self._grammar, self._on_partial)
        if self._on_speech_started is not None:
            self._on_speech_started()

    def _speech_ended(self) -> None:
        self.state = "deciding"
        self.speech_ended_at = self._loop.time()
        session = self._session
        assert session is not None
        self._task = self._loop.create_task(self._decide(session))

    async def _decide(self, session: RecognitionSession) -> None:
        try:
            result = await asyncio.wait_for(session.finish(), self._settings.decode_timeout)
        except TimeoutError:
            session.cancel()
            result = RecognitionResult.no_match("error")
        except asyncio.CancelledError:
            return
        except Exception:  # a dead worker or a broken engine must not leave the menu hanging
            session.cancel()
            result = RecognitionResult.no_match("error")
        if self.state != "deciding":
            return
        self.state = "done"
        self.decided_at = self._loop.time()
        self.last_result = result
        if result.keyword is None:
            self._on_no_match(result.reason or "out-of-grammar")
        elif result.confidence < self._settings.confidence_threshold:
            self._on_no_match("low-confidence")
        else:
            self._on_result(result.keyword, result.text, result.confidence, result.alternatives)
