"""Call: everything a flow may do to a caller, and what it hears. The one door between flows and telephony.

A flow (or, until flows exist, the daemon's welcome application) holds a :class:`Call` and awaits its verbs. The call
controller (``ivr.daemon.calls``) creates it once the call is up and feeds it, through :meth:`Call.hear`, what the
caller does: keys by RFC 4733, in-band or SIP INFO, speech starting, and words. Those values, and what
:meth:`Call.next_event` gives a flow, are defined once in :mod:`ivr.flows.runtime` (``KeyPressed``, ``WordsHeard``,
``SpeechBegan``, ``CallHungUp``; the unions ``CallerInput`` and ``FlowInput``).
Verbs are added here when the issue that needs them lands; each one works on a real call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Protocol

from ivr.flows.runtime import CallerInput, CallHungUp, FlowInput, KeyPressed, WordsHeard
from ivr.media.prompts import Prompt


class PlayOutcome(StrEnum):
    COMPLETED = "completed"  # every frame was sent
    BARGED_IN = "barged_in"  # the caller pressed a key during a barge-in prompt (the key waits in next_event)
    STOPPED = "stopped"  # stop() was called
    HANGUP = "hangup"  # the call ended while playing


MAX_PENDING_INPUTS = 64
"""How many keys and words may wait unread for :meth:`Call.next_event`. A caller cannot usefully be ahead of the
flow by more; past it the oldest waiting input is dropped (and counted in :attr:`Call.inputs_dropped`), so a stream of
RFC 4733 events that no menu reads cannot grow a call's memory without bound. Never a hang-up."""

KeyHook = Callable[[str, str], bool]
"""Sees each key (key, source) before the call does; True when it took the key (a recording's stop key)."""


class CallMedia(Protocol):
    """What a Call needs from its media stream (``ivr.media.stream.MediaStream`` provides it)."""

    def play(
        self, frames: Sequence[bytes], *, loop: bool = False, on_done: Callable[[], None] | None = None
    ) -> None: ...

    def stop_playback(self) -> None: ...


class CallSpeech(Protocol):
    """What a Call needs to hear words: listening for a menu's words in a language (no words: stop listening)."""

    def listen(self, call: Call, language: str, words: Sequence[str]) -> None: ...

    def recognises(self, language: str) -> bool: ...


class CallControl(Protocol):
    """What a Call needs from the call controller: ending the SIP leg."""

    def hangup_call(self, call: Call) -> None: ...


class Call:
    """One answered call as a flow sees it."""

    def __init__(
        self,
        *,
        call_id: str,
        caller: str,
        dialled: str,
        codec: str,
        media: CallMedia,
        control: CallControl,
        speech: CallSpeech | None = None,
    ) -> None:
        self.call_id = call_id
        self.caller = caller
        self.dialled = dialled
        self.codec = codec
        self._media = media
        self._control = control
        self._speech = speech
        self._events: asyncio.Queue[FlowInput] = asyncio.Queue()
        self._playing: asyncio.Future[PlayOutcome] | None = None
        self._barge_in = False
        self._ended = asyncio.Event()
        self.end_reason: str | None = None
        self.prompts_played: list[str] = []
        self.digits_by_source: dict[str, int] = {}
        self.words_heard = 0
        self.inputs_dropped = 0
        """Keys and words dropped unread because :data:`MAX_PENDING_INPUTS` were already waiting (oldest first)."""
        self.key_hook: KeyHook | None = None
        """Set while something else takes keys first (a recording listening for its stop key)."""

    # ---- verbs ------------------------------------------------------------------------------------------------------

    async def play(self, prompt: Prompt, *, loop: bool = False, barge_in: bool = False) -> PlayOutcome:
        """Play ``prompt`` to the caller; returns when it has been sent whole, was stopped, or the call ended.
        With ``loop=True`` it repeats until :meth:`stop` or hang-up. With ``barge_in=True`` a key press stops the
        prompt at once (before the next 20 ms packet) and returns ``BARGED_IN``; the key itself is not consumed:
        it is the next :meth:`next_event`. A key that is already waiting when a barge-in prompt starts skips it."""
        if self._ended.is_set():
            return PlayOutcome.HANGUP
        self.stop()
        if barge_in and not self._events.empty():
            return PlayOutcome.BARGED_IN
        future: asyncio.Future[PlayOutcome] = asyncio.get_running_loop().create_future()
        self._playing = future
        self._barge_in = barge_in

        def done() -> None:
            if not future.done():
                future.set_result(PlayOutcome.COMPLETED)

        self.prompts_played.append(prompt.name)
        self._media.play(prompt.frames(self.codec), loop=loop, on_done=done)
        try:
            return await future
        finally:
            if self._playing is future:
                self._playing = None

    def stop(self) -> None:
        """Stop the prompt that is playing, if any (its ``play`` returns ``STOPPED``)."""
        future = self._playing
        if future is not None and not future.done():
            self._media.stop_playback()
            future.set_result(PlayOutcome.STOPPED)
        self._playing = None

    async def hangup(self) -> None:
        """End the call (BYE). Returns at once; :attr:`ended` is set when the controller has torn it down."""
        if self._ended.is_set():
            return
        self.stop()
        self._control.hangup_call(self)

    def expect_words(self, language: str, words: Sequence[str]) -> None:
        """Listen for ``words`` in ``language`` (a menu's keywords) until told otherwise; no words: stop. Without a
        recogniser for the language this does nothing: keys always work."""
        if self._speech is not None and not self._ended.is_set():
            self._speech.listen(self, language, words)

    def recognises(self, language: str) -> bool:
        """Whether words in ``language`` can be heard on this call (a recogniser for it is loaded)."""
        return self._speech is not None and self._speech.recognises(language)

    async def next_event(self, timeout: float | None = None) -> FlowInput | None:
        """The next thing the caller did (a key, words, the end of the call); ``None`` after ``timeout`` seconds of
        nothing."""
        if not self._events.empty():
            return self._events.get_nowait()  # wait_for(..., 0) would cancel the get before it runs (3.11)
        if timeout is not None and timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._events.get(), timeout)
        except TimeoutError:
            return None

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    # ---- fed by the call controller -------------------------------------------------------------------------------

    def hear(self, event: CallerInput) -> None:
        """The one entry for what the caller does: a key (any source), speech starting, or words. A key goes to
        :attr:`key_hook` first; a key or words are queued for :meth:`next_event` and end a barge-in prompt, and so
        does speech starting."""
        if self._ended.is_set():
            return
        if isinstance(event, KeyPressed):
            hook = self.key_hook
            if hook is not None and hook(event.key, event.source):
                return
            self._queue(event)
            self.digits_by_source[event.source] = self.digits_by_source.get(event.source, 0) + 1
        elif isinstance(event, WordsHeard):
            self._queue(event)
            self.words_heard += 1
        self._barge()

    def _queue(self, event: KeyPressed | WordsHeard) -> None:
        """Queue a caller's input for :meth:`next_event`; at :data:`MAX_PENDING_INPUTS` unread, the oldest goes.
        (Only ``_end`` queues after the call ended, so what is dropped is never the hang-up.)"""
        events = self._events
        while events.qsize() >= MAX_PENDING_INPUTS:
            events.get_nowait()
            self.inputs_dropped += 1
        events.put_nowait(event)

    def key(self, key: str, source: str = "rfc4733") -> None:
        """A key press (the media stream's and SIP INFO's callback): ``hear(KeyPressed(key, source))``."""
        self.hear(KeyPressed(key, source))

    def _barge(self) -> None:
        future = self._playing
        if self._barge_in and future is not None and not future.done():
            self._media.stop_playback()
            future.set_result(PlayOutcome.BARGED_IN)
            self._playing = None

    def _end(self, reason: str) -> None:
        if self._ended.is_set():
            return
        self.end_reason = reason
        future = self._playing
        if future is not None and not future.done():
            self._media.stop_playback()
            future.set_result(PlayOutcome.HANGUP)
        self._playing = None
        self._ended.set()
        self._events.put_nowait(CallHungUp(reason))
        if self._speech is not None:
            self._speech.listen(self, "", ())
