"""Speech in the daemon's calls: menus' spoken keywords heard by the configured recogniser.

The flow engine tells a :class:`~ivr.call.Call` which words its current menu accepts (``expect_words``); the call
asks its :class:`CallListening`, which attaches a :class:`~ivr.speech.listener.SpeechListener` to the call's media
stream (VAD-gated: only speech reaches the decoder) with a grammar of those words. What it hears comes back to the
call as :class:`~ivr.flows.runtime.WordsHeard` events, like keys: speech start (``SpeechBegan``) barges into a
barge-in prompt, a recognised word is a choice, speech that matches none of the words (out of grammar, low
confidence) is a no-match for the menu, and silence is left to the menu's own no-input timer. Keys keep working
throughout, and whichever comes first wins.

A language without a recogniser (Bulgarian, unless an engine for it is configured) listens to nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from ivr.call import Call
from ivr.flows.runtime import SpeechBegan, WordsHeard
from ivr.media.stream import MediaStream
from ivr.speech.config import SpeechSettings
from ivr.speech.grammar import Grammar, GrammarError
from ivr.speech.listener import SpeechListener
from ivr.speech.recognizer import Alternative, SpeechEngine

__all__ = ["CallListening", "SpeechService"]

log = structlog.get_logger("ivr.speech")

_NO_MATCH_FOR_THE_MENU = frozenset({"out-of-grammar", "low-confidence"})
_NEVER = 24 * 3600.0


class SpeechService:
    """The daemon's recogniser: loaded once at start, shared by every call."""

    def __init__(self, settings: SpeechSettings) -> None:
        self.settings = settings
        self.engine: SpeechEngine | None = None
        self.recognised = 0
        self.rejected = 0

    def load(self) -> None:
        """Blocking (run it in an executor): load the engine and its models. A failure leaves speech off."""
        if not self.settings.enabled:
            return
        try:
            self.engine = self.settings.make_engine()
        except Exception as exc:  # a missing package or model must not stop the daemon: keys still work
            log.error("speech recogniser not loaded: menus take keys only", engine=self.settings.engine,
                      error=str(exc))  # fmt: skip
            self.engine = None

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def for_call(self, loop: asyncio.AbstractEventLoop, stream: MediaStream) -> CallListening:
        return CallListening(self, loop, stream)


class CallListening:
    """One call's listening (the :class:`~ivr.call.CallSpeech` of a daemon call)."""

    def __init__(self, service: SpeechService, loop: asyncio.AbstractEventLoop, stream: MediaStream) -> None:
        self._service = service
        self._loop = loop
        self._stream = stream
        self._listener: SpeechListener | None = None
        self._grammar: Grammar | None = None
        self._call: Call | None = None

    def recognises(self, language: str) -> bool:
        engine = self._service.engine
        return engine is not None and engine.supports(language)

    def listen(self, call: Call, language: str, words: Sequence[str]) -> None:
        self._stop()
        engine = self._service.engine
        if not words or engine is None or not engine.supports(language):
            self._grammar = None
            return
        grammar = self._grammar
        if grammar is None or grammar.language != language or set(grammar.keywords) != set(words):
            try:
                grammar = Grammar.from_mapping({word: [word] for word in words}, language)
            except GrammarError as exc:
                log.warning("menu words make no grammar: keys only", call_id=call.call_id, error=str(exc))
                self._grammar = None
                return
        self._grammar = grammar
        self._call = call
        self._start(engine, grammar)

    def _start(self, engine: SpeechEngine, grammar: Grammar) -> None:
        call = self._call
        assert call is not None
        listener = SpeechListener(
            self._loop,
            engine,
            grammar,
            self._service.settings,
            on_result=lambda keyword, text, confidence, alternatives: self._result(
                listener, keyword, text, confidence, alternatives
            ),
            on_no_match=lambda reason: self._no_match(listener, reason),
            on_speech_started=lambda: call.hear(SpeechBegan()),
        )
        self._listener = listener
        self._stream.add_audio_consumer(listener.feed)
        listener.start(no_input_timeout=_NEVER)  # the menu's own timer decides no-input

    def _stop(self) -> None:
        listener = self._listener
        if listener is not None:
            self._listener = None
            self._stream.remove_audio_consumer(listener.feed)
            listener.cancel()

    def _result(
        self,
        listener: SpeechListener,
        keyword: str,
        text: str,
        confidence: float,
        alternatives: tuple[Alternative, ...],
    ) -> None:
        if listener is not self._listener or self._call is None:
            return
        self._stop()
        self._service.recognised += 1
        language = self._grammar.language if self._grammar is not None else ""
        self._call.hear(WordsHeard(keyword, confidence, language, text))

    def _no_match(self, listener: SpeechListener, reason: str) -> None:
        if listener is not self._listener or self._call is None:
            return
        self._stop()
        if reason in _NO_MATCH_FOR_THE_MENU:
            self._service.rejected += 1
            language = self._grammar.language if self._grammar is not None else ""
            self._call.hear(WordsHeard("", 0.0, language, reason))
            return
        # Nobody spoke yet, a noise, or a decoder error: keep listening; the menu's timer decides no-input.
        engine = self._service.engine
        if engine is not None and self._grammar is not None and not self._call.ended:
            self._start(engine, self._grammar)
