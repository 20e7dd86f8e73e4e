"""A scripted caller for the engine tests, on virtual time (see virtual_loop.py).

A :class:`FakeCall` behaves like ``ivr.call.Call`` as the engine sees it: a prompt lasts as long as its audio, a key
during a barge-in prompt stops it and waits in ``next_event``, a key already waiting skips a barge-in prompt, a
hang-up ends a prompt with "hangup" and is the next event. The caller's side is a script:

    FakeCall([Press("1", at=3.0), OnPrompt("enter-account", press="123456#", after=1.0), HangUp(at=120.0)])

``at`` is seconds after the call started; ``OnPrompt`` reacts to the n-th time a prompt with that name starts
playing. Everything played is kept in :attr:`FakeCall.played` with its start and end times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.flows.engine import CallOutcome, FlowEngine
from ivr.flows.loader import FlowTree, load_flow_tree
from ivr.flows.runtime import (
    AudioPart,
    CallHungUp,
    FixtureHttpClient,
    HandoffResult,
    KeyPressed,
    PlayResult,
    RecordResult,
    TraceLog,
    WordsHeard,
)

# ---- audio --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeAudio:
    parts: tuple[AudioPart, ...]
    seconds: float

    @property
    def names(self) -> list[str]:
        """Prompt names, with ``@lang`` when played in the fallback language; words as they are."""
        return [str(p) for p in self.parts if p.kind != "pause"]

    @property
    def prompts(self) -> list[str]:
        return [p.source.name for p in self.parts if p.kind == "prompt" and p.source is not None]

    @property
    def words(self) -> list[str]:
        return [p.word for p in self.parts if p.kind == "word"]


class FakePlayer:
    """Composes parts into a :class:`FakeAudio` whose length is the sum of its parts' lengths."""

    def __init__(
        self, *, prompt_seconds: float = 2.0, word_seconds: float = 0.4, durations: Mapping[str, float] | None = None
    ) -> None:
        self.prompt_seconds = prompt_seconds
        self.word_seconds = word_seconds
        self.durations = dict(durations or {})
        self.composed: list[FakeAudio] = []

    def compose(self, parts: Sequence[AudioPart]) -> FakeAudio:
        seconds = 0.0
        for part in parts:
            if part.kind == "pause":
                seconds += part.seconds
            elif part.kind == "word":
                seconds += self.word_seconds
            else:
                assert part.source is not None
                seconds += self.durations.get(part.source.name, self.prompt_seconds)
        audio = FakeAudio(tuple(parts), seconds)
        self.composed.append(audio)
        return audio


# ---- the caller's script ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Press:
    """Press ``keys`` one by one, the first at ``at`` seconds after the start, then every ``gap`` seconds."""

    keys: str
    at: float
    gap: float = 0.3


@dataclass(frozen=True)
class Say:
    """Say ``text`` (a recognised word event) at ``at``."""

    text: str
    at: float


@dataclass(frozen=True)
class HangUp:
    at: float


@dataclass(frozen=True)
class OnPrompt:
    """When a prompt named ``prompt`` starts playing for the ``nth`` time: after ``after`` seconds press ``press``
    (``gap`` apart), say ``say``, or hang up."""

    prompt: str
    press: str = ""
    say: str | None = None
    hangup: bool = False
    after: float = 0.5
    gap: float = 0.3
    nth: int = 1


Action = Press | Say | HangUp | OnPrompt


@dataclass
class Played:
    start: float
    audio: FakeAudio
    barge_in: bool
    end: float | None = None
    result: str = ""

    @property
    def names(self) -> list[str]:
        return self.audio.names


@dataclass
class FakeCall:
    """A call driven by a script on the running (virtual) loop. Call :meth:`start` inside the loop first."""

    script: Sequence[Action] = ()
    caller: str = "+35929001234"
    dialled: str = "070010100"
    call_id: str = "call-1"
    played: list[Played] = field(default_factory=list)
    sent: list[tuple[float, str]] = field(default_factory=list)
    hung_up_at: float | None = None
    """When the engine hung up."""
    caller_hung_up_at: float | None = None
    words_expected: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.t0 = self._loop.time()
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._playing: tuple[asyncio.Future[PlayResult], bool] | None = None
        self._ended = asyncio.Event()
        self._prompt_starts: dict[str, int] = {}
        for action in self.script:
            if isinstance(action, Press):
                self._press_at(action.at, action.keys, action.gap)
            elif isinstance(action, Say):
                self._loop.call_at(self.t0 + action.at, self._word, action.text)
            elif isinstance(action, HangUp):
                self._loop.call_at(self.t0 + action.at, self.caller_hangs_up)

    def now(self) -> float:
        """Seconds since the start (rounded to the microsecond, so scripts compare exactly)."""
        return round(self._loop.time() - self.t0, 6)

    # ---- what the caller does ---------------------------------------------------------------------------------------

    def _press_at(self, at: float, keys: str, gap: float) -> None:
        for i, key in enumerate(keys):
            self._loop.call_at(self.t0 + at + i * gap, self._key, key)

    def _key(self, key: str) -> None:
        if self._ended.is_set():
            return
        self.sent.append((self.now(), key))
        self._events.put_nowait(KeyPressed(key, "test"))
        self._barge()

    def _word(self, text: str) -> None:
        if self._ended.is_set():
            return
        self.sent.append((self.now(), f"word:{text}"))
        self._events.put_nowait(WordsHeard(text))
        self._barge()

    def _barge(self) -> None:
        if self._playing is not None and self._playing[1] and not self._playing[0].done():
            self._playing[0].set_result(PlayResult.BARGED_IN)

    def caller_hangs_up(self) -> None:
        if self._ended.is_set():
            return
        self.caller_hung_up_at = self.now()
        self._end(PlayResult.HANGUP)
        self._events.put_nowait(CallHungUp("caller"))

    def _end(self, result: PlayResult) -> None:
        self._ended.set()
        if self._playing is not None and not self._playing[0].done():
            self._playing[0].set_result(result)

    # ---- what the engine does ----------------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    async def play(self, audio: FakeAudio, /, *, barge_in: bool) -> PlayResult:
        now = self.now()
        if self._ended.is_set():
            return PlayResult.HANGUP
        played = Played(now, audio, barge_in)
        self.played.append(played)
        if barge_in and not self._events.empty():
            played.end, played.result = now, PlayResult.BARGED_IN.value
            return PlayResult.BARGED_IN
        future: asyncio.Future[PlayResult] = self._loop.create_future()
        self._playing = (future, barge_in)
        timer = self._loop.call_later(audio.seconds, lambda: future.done() or future.set_result(PlayResult.COMPLETED))
        self._react(audio)
        try:
            result = await future
        finally:
            timer.cancel()
            self._playing = None
        played.end, played.result = self.now(), result.value
        return result

    def _react(self, audio: FakeAudio) -> None:
        for name in dict.fromkeys(audio.prompts):
            self._prompt_starts[name] = self._prompt_starts.get(name, 0) + 1
            for action in self.script:
                if isinstance(action, OnPrompt) and action.prompt == name and action.nth == self._prompt_starts[name]:
                    at = self.now() + action.after
                    if action.press:
                        self._press_at(at, action.press, action.gap)
                    if action.say is not None:
                        self._loop.call_at(self.t0 + at, self._word, action.say)
                    if action.hangup:
                        self._loop.call_at(self.t0 + at, self.caller_hangs_up)

    async def next_event(self, timeout: float | None) -> Any:
        try:
            return await asyncio.wait_for(self._events.get(), timeout)
        except TimeoutError:
            return None

    async def hangup(self) -> None:
        if self._ended.is_set():
            return
        self.hung_up_at = self.now()
        self._end(PlayResult.STOPPED)

    def expect_words(self, language: str, words: Sequence[str]) -> None:
        self.words_expected.append((language, tuple(words)))

    # ---- for assertions ---------------------------------------------------------------------------------------------

    def heard(self) -> list[list[str]]:
        """What each play held (prompt names, words), in order; skipped plays included."""
        return [p.names for p in self.played]

    def prompts_heard(self) -> list[str]:
        return [name for p in self.played for name in p.audio.prompts]


# ---- queue endpoints and recording ------------------------------------------------------------------------------


class FakeHandoff:
    """Queue endpoints: every queue takes the call unless ``refuse`` names it (with the reason)."""

    def __init__(self, refuse: Mapping[str, str] | None = None, *, delay: float = 0.5) -> None:
        self.refuse = dict(refuse or {})
        self.delay = delay
        self.transfers: list[tuple[str, dict[str, str]]] = []

    async def transfer(self, call: FakeCall, queue: str, data: dict[str, str]) -> HandoffResult:
        await asyncio.sleep(self.delay)
        self.transfers.append((queue, dict(data)))
        if queue in self.refuse:
            return HandoffResult(False, self.refuse[queue])
        return HandoffResult(True)


class FakeRecorder:
    """Records for ``speak_seconds`` (or until the call ends, or ``max_seconds``)."""

    def __init__(self, speak_seconds: float = 12.0) -> None:
        self.speak_seconds = speak_seconds
        self.calls: list[dict[str, Any]] = []

    async def record(
        self, call: FakeCall, *, max_seconds: float, beep: bool, stop_keys: str, silence_seconds: float | None
    ) -> RecordResult:
        self.calls.append({"max_seconds": max_seconds, "beep": beep, "stop_keys": stop_keys,
                           "silence_seconds": silence_seconds})  # fmt: skip
        length = min(self.speak_seconds, max_seconds)
        started = call.now()
        try:
            await asyncio.wait_for(call.wait_ended(), length)
        except TimeoutError:
            reason = "max_length" if length >= max_seconds else "silence"
            return RecordResult(f"/var/spool/ivr/{call.call_id}.wav", length, reason)
        return RecordResult(f"/var/spool/ivr/{call.call_id}.wav", call.now() - started, "hangup")


# ---- running ----------------------------------------------------------------------------------------------------


@dataclass
class Rig:
    """An engine with fakes, ready to run scripted calls."""

    tree: FlowTree
    player: FakePlayer = field(default_factory=FakePlayer)
    handoff: FakeHandoff = field(default_factory=FakeHandoff)
    recorder: FakeRecorder = field(default_factory=FakeRecorder)
    http: FixtureHttpClient = field(default_factory=FixtureHttpClient)
    now: Any = None
    trace: TraceLog = field(default_factory=TraceLog)

    def engine(self) -> FlowEngine[FakeAudio, FakeCall]:
        return FlowEngine(self.tree, player=self.player, handoff=self.handoff, recorder=self.recorder,
                          http=self.http, now=self.now, trace=self.trace)  # fmt: skip

    async def run(self, call: FakeCall, **kwargs: Any) -> CallOutcome:
        call.start()
        return await self.engine().run(call, **kwargs)


def rig(path: Path | str, **kwargs: Any) -> Rig:
    return Rig(load_flow_tree(path), **kwargs)
