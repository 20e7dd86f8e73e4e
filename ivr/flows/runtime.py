"""What the flow engine needs from the world, as small Protocols, and the plain values that cross them.

The engine (:mod:`ivr.flows.engine`) knows no SIP and no media (ARCHITECTURE.md rule 2). It drives:

- a :class:`FlowCall` — the caller: play audio, hear keys (and words), hang up. ``ivr.call.Call`` fits it as it is:
  its ``PlayOutcome`` values are :class:`PlayResult`'s, and its ``next_event`` gives the :data:`FlowInput` values
  defined here (:class:`KeyPressed`, :class:`WordsHeard`, :class:`CallHungUp`), the same ones fakes and the simulator
  use; ``Call.hear`` takes :data:`CallerInput` (keys, words and :class:`SpeechBegan`);
- a :class:`PromptPlayer` — turns a list of :class:`AudioPart` (resolved prompts, spoken number words, pauses) into
  one playable value of the daemon's type ``P`` (``ivr.media.prompts.Prompt``). All audio is made at load: composing
  only concatenates;
- a :class:`Handoff` (queue endpoints), a :class:`Recorder` (voice messages) and an :class:`HttpClient` (lookups).

It reports what happens as :class:`TraceEvent` values to a sink (logs, call records, the simulator's assertions).
Here too: :class:`AiohttpClient` (the real HTTP client) and :class:`FixtureHttpClient` (canned answers for tests and
the simulator), and :func:`loop_wall_clock` (a wall clock that runs on the loop's clock, so hours and branch time
conditions follow virtual time in the simulator).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json as jsonlib
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar, runtime_checkable

from ivr.flows.model import parse_duration
from ivr.flows.prompt_sources import PromptSource

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "AiohttpClient",
    "AudioPart",
    "CallHungUp",
    "CallerInput",
    "FixtureHttpClient",
    "FixtureResponse",
    "FlowCall",
    "FlowInput",
    "Handoff",
    "HandoffResult",
    "HttpClient",
    "HttpError",
    "HttpRequest",
    "HttpResult",
    "KeyPressed",
    "ListensForWords",
    "PlayResult",
    "PromptPlayer",
    "RecordResult",
    "Recorder",
    "SpeechBegan",
    "TraceEvent",
    "TraceKind",
    "TraceLog",
    "TraceSink",
    "WordsHeard",
    "loop_wall_clock",
]

P_contra = TypeVar("P_contra", contravariant=True)
P_co = TypeVar("P_co", covariant=True)
C_contra = TypeVar("C_contra", contravariant=True)


# ---- the call ---------------------------------------------------------------------------------------------------


class PlayResult(StrEnum):
    """How a ``play`` ended; the values are ``ivr.call.PlayOutcome``'s."""

    COMPLETED = "completed"
    """Every frame was sent."""
    BARGED_IN = "barged_in"
    """A key stopped a barge-in prompt; the key waits in ``next_event``."""
    STOPPED = "stopped"
    """Someone stopped the prompt."""
    HANGUP = "hangup"
    """The call ended while playing."""


@dataclass(frozen=True, slots=True)
class KeyPressed:
    """A key the caller pressed, delivered once per press, however it came (``source``: ``"rfc4733"``,
    ``"inband"`` or ``"info"``, as ``ivr.media.digits.DigitSource`` names them)."""

    key: str
    source: str = "rfc4733"


@dataclass(frozen=True, slots=True)
class WordsHeard:
    """Something the caller said, recognised against the current menu's words: ``text`` is the matched phrase
    (empty when the recogniser heard speech but none of the words: a no-match for the menu)."""

    text: str
    confidence: float = 0.0
    language: str = ""
    """The language it was recognised in (empty: not said)."""
    heard: str = ""
    """What the recogniser heard, for the trace (may differ from ``text`` when a synonym matched)."""


@dataclass(frozen=True, slots=True)
class SpeechBegan:
    """The caller began to speak (the :class:`WordsHeard` follow when the recogniser has decided). It stops a
    barge-in prompt and is not queued for ``next_event``. Not ``ivr.speech.vad.SpeechStarted``, the endpointer's
    event that leads to it."""


@dataclass(frozen=True, slots=True)
class CallHungUp:
    """The call ended: the caller hung up, the daemon ended it, or it failed (``reason`` says which)."""

    reason: str


CallerInput = KeyPressed | WordsHeard | SpeechBegan
"""What the caller does, from any source: what ``ivr.call.Call.hear`` takes."""

FlowInput = KeyPressed | WordsHeard | CallHungUp
"""What a flow hears from its call: what :meth:`FlowCall.next_event` gives (the end of the call last)."""


class FlowCall(Protocol[P_contra]):
    """The call as the engine drives it. ``ivr.call.Call`` is a ``FlowCall[Prompt]`` as it stands."""

    @property
    def call_id(self) -> str: ...

    @property
    def caller(self) -> str: ...

    @property
    def dialled(self) -> str: ...

    @property
    def ended(self) -> bool: ...

    async def play(self, audio: P_contra, /, *, barge_in: bool) -> str:
        """Play ``audio``; return a :class:`PlayResult` value. With ``barge_in`` a key stops it and stays queued
        for :meth:`next_event`; a key already queued when a barge-in prompt starts skips the prompt."""
        ...

    async def next_event(self, timeout: float | None) -> FlowInput | None:
        """The next key, word or end of the call; ``None`` after ``timeout`` seconds (on the loop's clock) of
        nothing. Keys pressed while a prompt played are queued, never lost."""
        ...

    async def hangup(self) -> None: ...


@runtime_checkable
class ListensForWords(Protocol):
    """Optional: a call that recognises speech is told which words a menu accepts (its grammar) in which language.
    The engine calls it before each menu prompt, and with no words when the menu is left."""

    def expect_words(self, language: str, words: Sequence[str]) -> None: ...


# ---- audio ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioPart:
    """One piece of what a node plays: a resolved prompt, one spoken word of a number, or a pause.

    ``kind == "prompt"``: ``source`` is the recording or text to play (the fallback language already applied).
    ``kind == "word"``: ``word`` in ``language`` (a word of :func:`ivr.flows.numbers.vocabulary`), synthesised
    with ``voice``. ``kind == "pause"``: ``seconds`` of silence."""

    kind: Literal["prompt", "word", "pause"]
    source: PromptSource | None = None
    language: str = ""
    word: str = ""
    voice: str = ""
    seconds: float = 0.0

    @classmethod
    def from_prompt(cls, source: PromptSource) -> AudioPart:
        return cls("prompt", source=source, language=source.language)

    @classmethod
    def spoken(cls, language: str, word: str, voice: str | None = None) -> AudioPart:
        return cls("word", language=language, word=word, voice=voice or language)

    @classmethod
    def silence(cls, seconds: float) -> AudioPart:
        return cls("pause", seconds=seconds)

    @property
    def key(self) -> str:
        """A stable name for this part's audio (what a cache of pre-made audio is keyed by)."""
        if self.kind == "prompt" and self.source is not None:
            return self.source.cache_key
        if self.kind == "word":
            return f"word.{self.voice}.{self.word}"
        return f"pause.{round(self.seconds * 1000)}ms"

    def __str__(self) -> str:
        if self.kind == "prompt" and self.source is not None:
            return self.source.name if not self.source.fallback else f"{self.source.name}@{self.source.language}"
        if self.kind == "word":
            return self.word
        return f"pause {self.seconds:g}s"


class PromptPlayer(Protocol[P_co]):
    """Makes one playable value from parts. The daemon's concatenates audio made at load (never synthesises during
    a call); it may raise if a part's audio is missing (the engine then ends the call politely)."""

    def compose(self, parts: Sequence[AudioPart], /) -> P_co: ...


# ---- handoff, recording, HTTP -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandoffResult:
    """Whether the queue endpoint took the call; ``reason`` says why not (it goes into the ``queue_error``
    variable and the trace)."""

    ok: bool
    reason: str = ""


class Handoff(Protocol[C_contra]):
    """Hands a call to a named queue endpoint with data attached (REFER, bridge: the queue-handoff issue)."""

    async def transfer(self, call: C_contra, queue: str, data: dict[str, str]) -> HandoffResult: ...


@dataclass(frozen=True, slots=True)
class RecordResult:
    """A recording: where it was stored (None: nothing kept), how long it is, and what ended it
    (e.g. ``"terminator"``, ``"silence"``, ``"max_length"``, ``"hangup"``, ``"failed: ..."``)."""

    path: str | None
    seconds: float
    reason: str


class Recorder(Protocol[C_contra]):
    """Records the caller: an optional beep, then until a stop key, ``silence_seconds`` of silence (None: not on
    silence), ``max_seconds`` or the end of the call. Failures are reported in the result, not raised."""

    async def record(
        self, call: C_contra, *, max_seconds: float, beep: bool, stop_keys: str, silence_seconds: float | None
    ) -> RecordResult: ...


@dataclass(frozen=True, slots=True)
class HttpResult:
    """An HTTP answer: the status and the body as JSON (None when empty or not JSON)."""

    status: int
    json: Any = None


class HttpError(Exception):
    """No HTTP answer: a connection error, a timeout, a body too large."""


class HttpClient(Protocol):
    """What an ``http`` node calls. Raises :class:`HttpError` (or ``TimeoutError``/``OSError``) when there is no
    answer; an answer with any status is a result. ``timeout`` is the whole exchange, in seconds."""

    async def request(
        self, method: str, url: str, *, json: Any, headers: Mapping[str, str], timeout: float
    ) -> HttpResult: ...


class AiohttpClient:
    """:class:`HttpClient` on aiohttp: one connection pool for every call (create it once, :meth:`close` at
    shutdown). Answers longer than ``max_bytes`` are refused (an IVR lookup is small)."""

    def __init__(self, *, max_bytes: int = 1 << 20, user_agent: str = "ivr") -> None:
        self.max_bytes = max_bytes
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    async def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": self.user_agent})
        return self._session

    async def request(
        self, method: str, url: str, *, json: Any, headers: Mapping[str, str], timeout: float
    ) -> HttpResult:
        import aiohttp

        session = await self._get_session()
        try:
            async with session.request(
                method, url, json=json, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                body = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise HttpError(f"the answer is longer than {self.max_bytes} bytes")
                status = response.status
        except TimeoutError:
            raise HttpError(f"no answer within {timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise HttpError(f"{type(exc).__name__}: {exc}") from None
        return HttpResult(status, _json_or_none(bytes(body)))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _json_or_none(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return jsonlib.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class FixtureResponse:
    """A canned answer: ``status`` and ``json`` after ``delay`` seconds (on the loop's clock), or no answer at all
    (``error``: e.g. "connection refused"). ``{name}`` in the answer's text is replaced by what the URL template
    captured."""

    status: int = 200
    json: Any = None
    delay: float = 0.0
    error: str | None = None

    @classmethod
    def of(cls, value: FixtureResponse | Mapping[str, Any]) -> FixtureResponse:
        """From a mapping as written in a scenario file: ``{status: 200, json: {...}, delay: 2s, error: ...}``."""
        if isinstance(value, FixtureResponse):
            return value
        unknown = set(value) - {"status", "json", "delay", "error"}
        if unknown:
            raise ValueError(f"unknown keys in an HTTP fixture: {', '.join(sorted(unknown))}")
        delay = value.get("delay", 0.0)
        seconds = parse_duration(delay) if isinstance(delay, str) else float(delay)
        return cls(int(value.get("status", 200)), value.get("json"), seconds, value.get("error"))


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request a :class:`FixtureHttpClient` received."""

    method: str
    url: str
    json: Any
    headers: Mapping[str, str]
    timeout: float


_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _template_regex(template: str) -> re.Pattern[str]:
    parts: list[str] = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[last : match.start()]))
        parts.append(f"(?P<{match.group(1)}>[^/?#&]+)")
        last = match.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts))


def _fill(value: Any, captures: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for name, text in captures.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, list):
        return [_fill(v, captures) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, captures) for k, v in value.items()}
    return value


class FixtureHttpClient:
    """:class:`HttpClient` with canned answers, for tests and the simulator.

    Keys are ``"METHOD URL-template"``: ``"GET https://crm.example.bg/api/accounts/{account}"``; a ``{name}`` matches
    one path segment or query value. The query string is ignored unless the template has one. The first template that
    matches wins; no match answers 404. Every request is kept in :attr:`requests`."""

    def __init__(self, responses: Mapping[str, FixtureResponse | Mapping[str, Any]] | None = None) -> None:
        self._routes: list[tuple[str, re.Pattern[str], bool, FixtureResponse]] = []
        self.requests: list[HttpRequest] = []
        for key, response in (responses or {}).items():
            self.add(key, response)

    def add(self, key: str, response: FixtureResponse | Mapping[str, Any]) -> None:
        method, _, template = key.strip().partition(" ")
        if not template.strip():
            raise ValueError(f"an HTTP fixture key is 'METHOD URL', not {key!r}")
        template = template.strip()
        self._routes.append((method.upper(), _template_regex(template), "?" in template, FixtureResponse.of(response)))

    async def request(
        self, method: str, url: str, *, json: Any, headers: Mapping[str, str], timeout: float
    ) -> HttpResult:
        self.requests.append(HttpRequest(method.upper(), url, json, dict(headers), timeout))
        for route_method, pattern, with_query, response in self._routes:
            if route_method != method.upper():
                continue
            target = url if with_query else url.split("?", 1)[0]
            match = pattern.fullmatch(target)
            if match is None:
                continue
            if response.delay > timeout:
                await asyncio.sleep(timeout)
                raise HttpError(f"no answer within {timeout:g}s")
            if response.delay > 0:
                await asyncio.sleep(response.delay)
            if response.error is not None:
                raise HttpError(response.error)
            captures = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            return HttpResult(response.status, _fill(response.json, captures))
        return HttpResult(404, {"error": f"no fixture for {method.upper()} {url}"})


# ---- trace ------------------------------------------------------------------------------------------------------

TraceKind = Literal["node", "prompt", "input", "timer", "variable", "outcome", "error"]


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One thing that happened in a call, at loop time ``t``: a node entered, a prompt played, an input heard, a timer
    fired, a variable set, the outcome, or an error. ``detail`` is plain data (JSON-ready); sensitive digits in it are
    already masked."""

    t: float
    kind: TraceKind
    node: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    call_id: str = ""
    flow: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"t": self.t, "kind": self.kind, "node": self.node, "flow": self.flow, "call_id": self.call_id,
                **self.detail}  # fmt: skip


TraceSink = Callable[[TraceEvent], None]


class TraceLog:
    """A trace sink that keeps every event (tests, the simulator, a call's record)."""

    def __init__(self) -> None:
        self.events: list[TraceEvent] = []

    def __call__(self, event: TraceEvent) -> None:
        self.events.append(event)

    def of(self, kind: TraceKind) -> list[TraceEvent]:
        return [e for e in self.events if e.kind == kind]

    def nodes(self) -> list[str]:
        """The ids of the nodes entered, in order."""
        return [e.node for e in self.events if e.kind == "node" and e.node is not None]


# ---- time -------------------------------------------------------------------------------------------------------


def loop_wall_clock(
    start: dt.datetime, loop: asyncio.AbstractEventLoop | None = None, *, origin: float | None = None
) -> Callable[[], dt.datetime]:
    """A ``now`` for the engine that advances with the event loop's clock (on a virtual-time loop, "now" is virtual
    too): it reads ``start`` at loop time ``origin`` (default: the first time it is read; the engine reads it when a
    call starts). ``start`` must be aware. ``loop`` defaults to the running loop."""
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be an aware datetime")
    anchor: list[float] = [] if origin is None else [origin]

    def now() -> dt.datetime:
        clock = loop if loop is not None else asyncio.get_running_loop()
        if not anchor:
            anchor.append(clock.time())
        return start + dt.timedelta(seconds=clock.time() - anchor[0])

    return now
