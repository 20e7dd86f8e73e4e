"""The flow engine: runs a loaded flow (a :class:`FlowTree`) against one call, node by node.

::

    engine = FlowEngine(tree, player=player, handoff=handoff, recorder=recorder, http=http)
    outcome = await engine.run(call, language="bg", client="vitosha")

One engine per loaded flow version, shared by every call on it (it holds no per-call state); a reload builds a new
engine and calls in progress finish on the one they started with. It never imports SIP or media (ARCHITECTURE.md
rule 2): it drives the Protocols of :mod:`ivr.flows.runtime`.

Timers (docs/flows.md section 5) all read the loop's clock: the engine waits with ``call.next_event(timeout)`` and
asks the sans-I/O :class:`ivr.flows.collector.DigitCollector` what a collect entry is at the loop time, so the same
flow gives the same result on virtual time. How a run ends is a :class:`CallOutcome`; what happened on the way is a
stream of :class:`ivr.flows.runtime.TraceEvent`. The caller hanging up at any point ends the run cleanly
(``caller_hangup``); an unexpected error in a node is traced and the call is ended politely (``error``), it never
escapes to the daemon.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import urllib.parse
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, Literal, TypeVar

from ivr.flows.calendar import Calendar, calendar_status, time_zone
from ivr.flows.collector import CollectOutcome, DigitCollector
from ivr.flows.conditions import choose_branch
from ivr.flows.entries import mask
from ivr.flows.loader import FlowTree, LoadedFlow
from ivr.flows.model import (
    BranchNode,
    CollectNode,
    GotoNode,
    HangupNode,
    HoursNode,
    HttpNode,
    LanguageNode,
    MenuNode,
    MenuOption,
    PauseItem,
    PlayNode,
    PromptItem,
    PromptRef,
    QueueNode,
    RecordNode,
    ReturnNode,
    SayItem,
    SetNode,
    SubflowNode,
    prompt_items,
)
from ivr.flows.numbers import LANGUAGES as NUMBER_LANGUAGES
from ivr.flows.numbers import say as say_words
from ivr.flows.numbers import vocabulary
from ivr.flows.prompt_sources import PromptMissing, PromptSource, resolve_prompt
from ivr.flows.runtime import (
    AudioPart,
    CallHungUp,
    FlowCall,
    Handoff,
    HttpClient,
    HttpError,
    KeyPressed,
    ListensForWords,
    PlayResult,
    PromptPlayer,
    Recorder,
    TraceEvent,
    TraceKind,
    TraceSink,
    WordsHeard,
)
from ivr.flows.templates import BUILTIN_NAMES, TemplateProblem, call_context, plain_data, render, variables_in

__all__ = ["MAX_SUBFLOW_DEPTH", "MAX_UNATTENDED_STEPS", "CallOutcome", "FlowEngine", "OutcomeKind"]

P = TypeVar("P")
C = TypeVar("C", bound="FlowCall[Any]")

OutcomeKind = Literal["caller_hangup", "hangup", "queued", "error"]

MAX_SUBFLOW_DEPTH: Final = 16
"""Subflows nested deeper than this end the call politely (a subflow that calls itself)."""
MAX_UNATTENDED_STEPS: Final = 1000
"""Nodes run in a row without playing, listening or waiting on anything; more is an endless loop at run time."""
_LOOKAHEAD: Final = 0.05
"""How long to wait for the key that just barged in (it is already queued: this returns at once)."""
_UNATTENDED_KINDS: Final = frozenset({"set", "branch", "language", "hours", "goto", "subflow", "return"})
_WORD_RE: Final = re.compile(r"[^\w]+")


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """How a run ended.

    ``kind``: ``caller_hangup`` (the caller hung up), ``hangup`` (a hangup node, or a ``return`` in the top flow),
    ``queued`` (a queue endpoint took the call: ``queue`` and ``data``), ``error`` (something broke: ``reason``;
    the call was ended politely). ``variables`` are the call's variables at the end (real values: mask the names in
    ``sensitive`` before writing them anywhere)."""

    kind: OutcomeKind
    reason: str
    node: str
    flow: str
    language: str
    variables: Mapping[str, Any]
    sensitive: frozenset[str] = frozenset()
    queue: str | None = None
    data: Mapping[str, str] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0

    @property
    def duration(self) -> float:
        return self.ended - self.started


class _CallerGone(Exception):
    """The caller hung up (raised from any await; ends the run as ``caller_hangup``)."""


class _FlowBroken(Exception):
    """The flow cannot go on (no failure path, unknown node, endless loop): ends the call politely."""


@dataclass(frozen=True, slots=True)
class _Input:
    key: str | None = None
    word: str | None = None


@dataclass(frozen=True, slots=True)
class _End:
    kind: OutcomeKind
    reason: str
    queue: str | None = None
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Run(Generic[C]):
    """One call's state."""

    call: C
    flow: LoadedFlow
    language: str
    variables: dict[str, Any]
    sensitive: set[str]
    client: str
    sink: TraceSink | None
    started: float
    node: str = ""
    stack: list[tuple[LoadedFlow, str]] = field(default_factory=list)
    pending: deque[_Input] = field(default_factory=deque)
    swallow: tuple[str, float] | None = None
    """(terminator, until): a terminator pressed right after an entry that max_digits completed is not input."""
    unattended: int = 0
    wall_start: str = ""
    """The wall-clock time the call started (ISO 8601, the flow's zone)."""


class FlowEngine(Generic[P, C]):
    """Runs the flows of one :class:`FlowTree` against calls of type ``C`` that play audio of type ``P``.

    ``clock`` must be the event loop's clock (the default: the running loop's ``time``), since the engine waits with
    ``call.next_event(timeout)`` on that loop. ``now`` gives the wall-clock time for ``hours`` nodes, branch
    ``days``/``time`` conditions and ``now`` in templates (default: the system's, in UTC; the simulator passes
    :func:`ivr.flows.runtime.loop_wall_clock`). ``calendars`` are the daemon's shared calendars (a flow's own
    ``calendars:`` win). ``trace`` receives every call's events (``run`` can take a per-call sink instead)."""

    def __init__(
        self,
        tree: FlowTree,
        *,
        player: PromptPlayer[P],
        handoff: Handoff[C],
        recorder: Recorder[C],
        http: HttpClient,
        clock: Callable[[], float] | None = None,
        now: Callable[[], dt.datetime] | None = None,
        trace: TraceSink | None = None,
        calendars: Mapping[str, Calendar] | None = None,
    ) -> None:
        self.tree = tree
        self._player = player
        self._handoff = handoff
        self._recorder = recorder
        self._http = http
        self._clock = clock
        self._now = now if now is not None else (lambda: dt.datetime.now(dt.UTC))
        self._trace_sink = trace
        self._calendars = dict(calendars or {})
        self._sources: dict[tuple[Path, str, str], PromptSource] = {}
        for loaded in tree.flows.values():
            for name in loaded.flow.prompts:
                for language in loaded.flow.languages:
                    try:
                        self._sources[(loaded.path.resolve(), name, language)] = resolve_prompt(loaded, name, language)
                    except PromptMissing:
                        continue

    # ---- what the daemon prepares at load ----------------------------------------------------------------------

    def audio_parts(self) -> frozenset[AudioPart]:
        """Every prompt and spoken word a call on this tree may play (pauses aside): what the daemon synthesises or
        loads at load time, keyed by :attr:`AudioPart.key`, so that composing during a call only concatenates."""
        parts: set[AudioPart] = {AudioPart.from_prompt(source) for source in self._sources.values()}
        for loaded in self.tree.flows.values():
            if not _has_say(loaded):
                continue
            for language in loaded.flow.languages:
                number_language = _number_language(language, loaded)
                if number_language is None:
                    continue
                voice = loaded.flow.voice(number_language)
                parts.update(AudioPart.spoken(number_language, w, voice) for w in vocabulary(number_language))
        return frozenset(parts)

    # ---- running a call ----------------------------------------------------------------------------------------

    async def run(
        self,
        call: C,
        *,
        language: str | None = None,
        variables: Mapping[str, Any] | None = None,
        client: str = "",
        trace: TraceSink | None = None,
    ) -> CallOutcome:
        """Run the tree's root flow on ``call`` until it ends. ``language`` overrides the flow's starting language,
        ``variables`` its starting variables (plain data), ``client`` is the line's client (templates and trace).
        Never raises for a call's sake (only ``CancelledError`` when the task is cancelled)."""
        root = self.tree.root
        run: _Run[C] = _Run(
            call=call,
            flow=root,
            language=language or root.flow.language,
            variables=dict(root.flow.variables),
            sensitive=set(),
            client=client,
            sink=trace if trace is not None else self._trace_sink,
            started=self._time(),
            node=root.flow.start,
        )
        try:
            run.variables.update(plain_data(dict(variables or {})))
            run.wall_start = self._wall(run).isoformat(timespec="seconds")
            end = await self._walk(run)
        except _CallerGone as gone:
            end = _End("caller_hangup", str(gone) or "caller hung up")
        except asyncio.CancelledError:
            self._finish(run, _End("error", "cancelled"))
            raise
        except Exception as exc:  # a node broke: trace it and end the call politely, never crash the daemon
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, _FlowBroken) else str(exc)
            self._trace(run, "error", {"error": reason})
            end = await self._polite_end(run, reason)
        return self._finish(run, end)

    async def _walk(self, run: _Run[C]) -> _End:
        node_id = run.node
        while True:
            node = run.flow.flow.nodes.get(node_id)
            if node is None:
                raise _FlowBroken(f"{run.flow.flow.name}: there is no node {node_id!r}")
            run.node = node_id
            if node.type in _UNATTENDED_KINDS:
                run.unattended += 1
                if run.unattended > MAX_UNATTENDED_STEPS:
                    raise _FlowBroken(f"{MAX_UNATTENDED_STEPS} nodes in a row without waiting for the caller")
            else:
                run.unattended = 0
            self._trace(run, "node", {"type": node.type})
            result = await self._step(run, node)
            if isinstance(result, _End):
                return result
            node_id = result

    async def _step(self, run: _Run[C], node: Any) -> str | _End:
        if isinstance(node, PlayNode):
            await self._play(run, prompt_items(node.prompt), barge_in=node.barge_in)
            return node.next
        if isinstance(node, MenuNode):
            return await self._menu(run, node)
        if isinstance(node, CollectNode):
            return await self._collect(run, node)
        if isinstance(node, BranchNode):
            return self._branch(run, node)
        if isinstance(node, SetNode):
            return self._set_node(run, node)
        if isinstance(node, HoursNode):
            return self._hours(run, node)
        if isinstance(node, LanguageNode):
            run.language = node.language
            self._trace(run, "variable", {"name": "language", "value": node.language})
            return node.next
        if isinstance(node, HttpNode):
            return await self._http_node(run, node)
        if isinstance(node, QueueNode):
            return await self._queue(run, node)
        if isinstance(node, RecordNode):
            return await self._record(run, node)
        if isinstance(node, GotoNode):
            return self._enter(run, node.flow, node.node, push=None)
        if isinstance(node, SubflowNode):
            return self._enter(run, node.flow, None, push=node.next)
        if isinstance(node, ReturnNode):
            return await self._return(run)
        if isinstance(node, HangupNode):
            await self._play(run, prompt_items(node.prompt), barge_in=False)
            await run.call.hangup()
            return _End("hangup", "hangup node")
        raise _FlowBroken(f"node type {getattr(node, 'type', '?')!r} is not known to the engine")

    # ---- ends ----------------------------------------------------------------------------------------------------

    async def _polite_end(self, run: _Run[C], reason: str, kind: OutcomeKind = "error") -> _End:
        """Play a ``goodbye`` prompt (of the current flow, else of the flows that called it) if one is declared,
        then hang up."""
        try:
            if not run.call.ended:
                flows = [run.flow, *(flow for flow, _next in reversed(run.stack))]
                polite = next((flow for flow in flows if "goodbye" in flow.flow.prompts), None)
                if polite is not None:
                    current, run.flow = run.flow, polite
                    try:
                        await self._play(run, ("goodbye",), barge_in=False)
                    finally:
                        run.flow = current
                await run.call.hangup()
        except _CallerGone:
            return _End("caller_hangup", "caller hung up")
        except Exception as exc:
            self._trace(run, "error", {"error": f"while ending the call: {type(exc).__name__}: {exc}"})
            try:
                await run.call.hangup()
            except Exception as again:
                self._trace(run, "error", {"error": f"hangup failed: {type(again).__name__}: {again}"})
        return _End(kind, reason)

    def _finish(self, run: _Run[C], end: _End) -> CallOutcome:
        outcome = CallOutcome(
            kind=end.kind,
            reason=end.reason,
            node=run.node,
            flow=run.flow.flow.name,
            language=run.language,
            variables=dict(run.variables),
            sensitive=frozenset(run.sensitive),
            queue=end.queue,
            data=dict(end.data),
            started=run.started,
            ended=self._time(),
        )
        detail: dict[str, Any] = {
            "outcome": end.kind,
            "reason": end.reason,
            "language": run.language,
            "caller": run.call.caller,
            "dialled": run.call.dialled,
            "client": run.client,
            "started_at": run.wall_start,
            "duration": round(outcome.duration, 3),
        }
        if end.queue is not None:
            detail["queue"] = end.queue
            detail["data"] = self._shown_data(run, end.data)
        self._trace(run, "outcome", detail)
        return outcome

    # ---- time, context, trace ------------------------------------------------------------------------------------

    def _time(self) -> float:
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

    def _wall(self, run: _Run[C]) -> dt.datetime:
        now = self._now()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("the engine's now() must return an aware datetime")
        return now.astimezone(time_zone(run.flow.flow.timezone))

    def _context(self, run: _Run[C]) -> dict[str, Any]:
        call = run.call
        return call_context(
            run.variables,
            caller=call.caller,
            dialled=call.dialled,
            language=run.language,
            now=self._wall(run),
            call_id=call.call_id,
            client=run.client,
            flow=run.flow.flow.name,
        )

    def _trace(self, run: _Run[C], kind: TraceKind, detail: dict[str, Any]) -> None:
        if run.sink is None:
            return
        event = TraceEvent(self._time(), kind, run.node or None, detail, run.call.call_id, run.flow.flow.name)
        try:
            run.sink(event)
        except Exception:  # a broken log sink must not end calls
            run.sink = None

    def _set(self, run: _Run[C], name: str, value: Any, *, sensitive: bool = False) -> None:
        if name in BUILTIN_NAMES:
            raise _FlowBroken(f"{name!r} is a built-in name and cannot be set")
        run.variables[name] = plain_data(value)
        if sensitive:
            run.sensitive.add(name)
        else:
            run.sensitive.discard(name)
        shown = mask(str(value)) if sensitive else value
        self._trace(run, "variable", {"name": name, "value": plain_data(shown)})

    def _reads_sensitive(self, run: _Run[C], source: str, *, expression: bool = False) -> bool:
        return bool(run.sensitive) and bool(variables_in(source, expression=expression) & run.sensitive)

    def _shown_data(self, run: _Run[C], data: Mapping[str, str]) -> dict[str, str]:
        node = run.flow.flow.nodes.get(run.node)
        sources = node.data if isinstance(node, QueueNode) else {}
        shown: dict[str, str] = {}
        for key, value in data.items():
            source = sources.get(key)
            secret = isinstance(source, str) and self._reads_sensitive(run, source)
            shown[key] = mask(value) if secret else value
        return shown

    # ---- audio ---------------------------------------------------------------------------------------------------

    def _source(self, flow: LoadedFlow, name: str, language: str) -> PromptSource:
        key = (flow.path.resolve(), name, language)
        source = self._sources.get(key)
        if source is None:
            source = resolve_prompt(flow, name, language)  # a language the flow does not list: resolve once
            self._sources[key] = source
        return source

    def _parts(self, run: _Run[C], items: Sequence[PromptItem]) -> tuple[list[AudioPart], list[str]]:
        parts: list[AudioPart] = []
        shown: list[str] = []
        context: dict[str, Any] | None = None
        for item in items:
            try:
                if isinstance(item, str):
                    part = AudioPart.from_prompt(self._source(run.flow, item, run.language))
                    parts.append(part)
                    shown.append(str(part))
                elif isinstance(item, PromptRef):
                    part = AudioPart.from_prompt(self._source(run.flow, item.prompt, item.language))
                    parts.append(part)
                    shown.append(str(part))
                elif isinstance(item, PauseItem):
                    parts.append(AudioPart.silence(item.pause))
                    shown.append(f"pause {item.pause:g}s")
                elif isinstance(item, SayItem):
                    if context is None:
                        context = self._context(run)
                    value = render(item.say, context)
                    language = _number_language(run.language, run.flow)
                    if language is None:
                        raise ValueError(f"numbers cannot be spoken in {run.language!r} nor in the fallback language")
                    words = say_words(value, item.as_, language, gender=item.gender, currency=item.currency)
                    voice = run.flow.flow.voice(language)
                    parts += [AudioPart.spoken(language, word, voice) for word in words]
                    secret = self._reads_sensitive(run, item.say)
                    shown.append(f"say {item.as_} {mask(value) if secret else value}")
            except (PromptMissing, TemplateProblem, ValueError, TypeError) as exc:
                # One item that cannot be played is left out; the caller hears the rest, never a dropped call.
                self._trace(run, "error", {"error": f"prompt item left out: {exc}"})
        return parts, shown

    async def _play(self, run: _Run[C], items: Sequence[PromptItem], *, barge_in: bool) -> PlayResult:
        """Play prompt items as one piece of audio. Raises :class:`_CallerGone` if the call ends meanwhile."""
        parts, shown = self._parts(run, items)
        if not parts:
            return PlayResult.COMPLETED
        if barge_in and any(i.key is not None for i in run.pending):
            self._trace(run, "prompt", {"items": shown, "barge_in": True, "result": "skipped", "started": self._time()})
            return PlayResult.BARGED_IN  # a key the caller already pressed skips it, as the Call does
        audio = self._player.compose(parts)
        replayed = False
        while True:
            started = self._time()
            result = PlayResult(str(await run.call.play(audio, barge_in=barge_in)))
            self._trace(run, "prompt", {"items": shown, "barge_in": barge_in, "result": result.value,
                                        "started": started, "language": run.language})  # fmt: skip
            if result is PlayResult.HANGUP or run.call.ended:
                raise _CallerGone("caller hung up during a prompt")
            if run.swallow is not None and started <= run.swallow[1]:
                run.swallow = (run.swallow[0], max(run.swallow[1], self._time()))
            if result is PlayResult.BARGED_IN and run.swallow is not None and not replayed:
                # The key that stopped the prompt may be the stray terminator after a full entry: look at it.
                event = await self._raw_event(run, _LOOKAHEAD)
                if event is not None and self._swallowed(run, event):
                    replayed = True
                    continue  # the caller has not heard it: play it again
                if event is not None:
                    run.pending.append(event)
            return result

    # ---- input ---------------------------------------------------------------------------------------------------

    async def _raw_event(self, run: _Run[C], timeout: float) -> _Input | None:
        if run.pending:
            return run.pending.popleft()
        deadline = self._time() + timeout
        while True:
            remaining = deadline - self._time()
            if remaining <= 0:
                return None
            event = await run.call.next_event(remaining)
            if event is None:
                if run.call.ended:
                    raise _CallerGone("caller hung up")
                return None
            if isinstance(event, KeyPressed):
                return _Input(key=event.key)
            if isinstance(event, WordsHeard):
                return _Input(word=event.text)
            if isinstance(event, CallHungUp) or run.call.ended:
                raise _CallerGone(f"caller hung up ({getattr(event, 'reason', 'ended')})")
            self._trace(run, "error", {"error": f"unknown call event ignored: {type(event).__name__}"})

    def _swallowed(self, run: _Run[C], event: _Input) -> bool:
        swallow, run.swallow = run.swallow, None
        if swallow is None or event.key is None:
            return False
        key, until = swallow
        if event.key == key and self._time() <= until:
            self._trace(run, "input", {"key": key, "result": "ignored",
                                       "why": "terminator after an entry that max_digits completed"})  # fmt: skip
            return True
        return False

    async def _event(self, run: _Run[C], timeout: float) -> _Input | None:
        """The caller's next key or word within ``timeout`` seconds, None when the time is up."""
        deadline = self._time() + timeout
        while True:
            event = await self._raw_event(run, max(0.0, deadline - self._time()))
            if event is None or not self._swallowed(run, event):
                return event

    # ---- menu ----------------------------------------------------------------------------------------------------

    def _menu_words(self, run: _Run[C], node: MenuNode) -> list[str]:
        return self._words_in(node, self._listening_language(run, node))

    @staticmethod
    def _words_in(node: MenuNode, language: str) -> list[str]:
        return [w for option in node.options for w in option.words.get(language, [])]

    def _listening_language(self, run: _Run[C], node: MenuNode) -> str:
        """The language to listen in: the call's, when the call can recognise it; otherwise another language the
        menu has words in and the call can recognise (a Bulgarian caller at the language menu may say "English"
        when only an English recogniser is installed). A call that says nothing about what it recognises gets the
        call's language."""
        can = getattr(run.call, "recognises", None)
        if can is None or can(run.language):
            return run.language
        for language in run.flow.flow.languages:
            if language != run.language and can(language) and self._words_in(node, language):
                return language
        return run.language

    def _choice(self, run: _Run[C], node: MenuNode, heard: _Input) -> MenuOption | None:
        if heard.key is not None:
            return next((o for o in node.options if o.key == heard.key), None)
        said = _normal(heard.word or "")
        if not said:
            return None
        # The words of the language listened in first, then any other language of the menu.
        first = self._listening_language(run, node)
        languages = [first, *(lang for lang in run.flow.flow.languages if lang != first)]
        for language in languages:
            found = self._choice_in(node, language, said)
            if found is not None:
                return found
        return None

    @staticmethod
    def _choice_in(node: MenuNode, language: str, said: str) -> MenuOption | None:
        best: tuple[int, MenuOption] | None = None
        ambiguous = False
        for option in node.options:
            for word in option.words.get(language, []):
                phrase = _normal(word)
                if not phrase:
                    continue
                if phrase == said:
                    return option
                if f" {phrase} " in f" {said} ":
                    if best is None or len(phrase) > best[0]:
                        best, ambiguous = (len(phrase), option), False
                    elif len(phrase) == best[0] and option is not best[1]:
                        ambiguous = True
        return None if best is None or ambiguous else best[1]

    async def _menu(self, run: _Run[C], node: MenuNode) -> str:
        counts = {"no_input": 0, "no_match": 0}
        items = prompt_items(node.prompt)
        listener = run.call if isinstance(run.call, ListensForWords) else None
        try:
            while True:
                words = self._menu_words(run, node)
                if listener is not None and words:
                    listener.expect_words(self._listening_language(run, node), words)
                await self._play(run, items, barge_in=node.barge_in)
                heard = await self._event(run, node.timeout)
                if heard is None:
                    kind = "no_input"
                    self._trace(run, "timer", {"timer": "no_input", "after": node.timeout})
                else:
                    option = self._choice(run, node, heard)
                    what = {"key": heard.key} if heard.key is not None else {"word": heard.word}
                    if option is not None:
                        self._trace(run, "input", {**what, "result": "choice", "next": option.next})
                        return option.next
                    kind = "no_match"
                    self._trace(run, "input", {**what, "result": "no_match"})
                target = self._count(run, node, counts, kind)
                if target is not None:
                    return target
                retry = node.no_input if kind == "no_input" else node.no_match
                items = (*prompt_items(retry.prompt), *prompt_items(node.retry_prompt or node.prompt))
        finally:
            if listener is not None and self._menu_words(run, node) and not run.call.ended:
                listener.expect_words(self._listening_language(run, node), ())

    def _count(self, run: _Run[C], node: MenuNode | CollectNode, counts: dict[str, int], kind: str) -> str | None:
        """Count a no-input or no-match; after the last try, where to go (else None: ask again)."""
        counts[kind] += 1
        retry = node.no_input if kind == "no_input" else node.no_match
        detail: dict[str, Any] = {"result": kind, "count": counts[kind], "tries": retry.tries}
        if counts[kind] < retry.tries:
            self._trace(run, "input", {**detail, "then": "retry"})
            return None
        target = retry.next or node.failure
        if target is None:
            raise _FlowBroken(f"node {run.node!r}: the last {kind.replace('_', '-')} has nowhere to go")
        self._trace(run, "input", {**detail, "then": target})
        return target

    # ---- collect -------------------------------------------------------------------------------------------------

    async def _collect(self, run: _Run[C], node: CollectNode) -> str:
        counts = {"no_input": 0, "no_match": 0}
        had_before = node.into in run.variables
        before = run.variables.get(node.into)
        was_sensitive = node.into in run.sensitive
        items = prompt_items(node.prompt)
        while True:
            collector = DigitCollector(node)
            await self._play(run, items, barge_in=node.barge_in)
            collector.prompt_ended(self._time())
            outcome = await self._entry(run, node, collector)
            explicit_no = False
            if outcome.kind == "entry":
                self._set(run, node.into, outcome.digits, sensitive=node.sensitive)
                if outcome.ended_by == "max_digits" and node.terminator is not None:
                    run.swallow = (node.terminator, self._time() + node.inter_digit)
                if node.confirm is None:
                    return node.next
                answer = await self._confirm(run, node)
                if answer == "yes":
                    return node.next
                explicit_no = answer == "no"
                self._restore(run, node.into, had_before, before, was_sensitive)
                kind = "no_match"
            else:
                kind = outcome.kind
            target = self._count(run, node, counts, kind)
            if target is not None:
                return target
            retry = node.no_input if kind == "no_input" else node.no_match
            # A caller who answered "no" to the read-back asked to type again: no "invalid" prompt for that.
            prefix = () if explicit_no else prompt_items(retry.prompt)
            items = (*prefix, *prompt_items(node.retry_prompt or node.prompt))

    def _restore(self, run: _Run[C], name: str, had: bool, value: Any, sensitive: bool) -> None:
        if had:
            self._set(run, name, value, sensitive=sensitive)
        else:
            run.variables.pop(name, None)
            run.sensitive.discard(name)
            self._trace(run, "variable", {"name": name, "value": None})

    async def _entry(self, run: _Run[C], node: CollectNode, collector: DigitCollector) -> CollectOutcome:
        """One try: keys into the collector until it says the entry is complete (timers on the loop's clock)."""
        assert collector.prompt_end is not None  # so every deadline is finite
        while True:
            deadline = collector.deadline()
            now = self._time()
            outcome = collector.expire(now) if now >= deadline else None
            if outcome is None:
                heard = await self._event(run, deadline - now)
                if heard is None:
                    # The loop woke us for this deadline (asyncio may fire a timer up to its clock resolution early).
                    outcome = collector.expire(max(self._time(), deadline))
                elif heard.key is not None:
                    ends = heard.key == node.terminator
                    secret = node.sensitive and not ends
                    self._trace(run, "input", {"key": "x" if secret else heard.key,
                                               "result": "terminator" if ends else "digit"})  # fmt: skip
                    outcome = collector.press(heard.key, self._time())
                else:
                    self._trace(run, "input", {"word": heard.word, "result": "ignored", "why": "collect takes keys"})
            if outcome is None:
                continue
            if outcome.ended_by in ("first_digit", "inter_digit", "total"):
                self._trace(run, "timer", {"timer": outcome.ended_by,
                                           "after": round(self._time() - collector.prompt_end, 3)})  # fmt: skip
            detail: dict[str, Any] = {"result": outcome.kind, "entry": outcome.shown(node.sensitive),
                                      "ended_by": outcome.ended_by}  # fmt: skip
            if outcome.problem is not None:
                detail["problem"] = outcome.problem
            self._trace(run, "input", detail)
            return outcome

    async def _confirm(self, run: _Run[C], node: CollectNode) -> Literal["yes", "no", "other", "timeout"]:
        confirm = node.confirm
        assert confirm is not None
        await self._play(run, prompt_items(confirm.prompt), barge_in=node.barge_in)
        heard = await self._event(run, confirm.timeout)
        if heard is None:
            self._trace(run, "timer", {"timer": "confirm", "after": confirm.timeout})
            return "timeout"
        answer: Literal["yes", "no", "other"] = (
            "yes" if heard.key == confirm.yes else "no" if heard.key == confirm.no else "other"
        )
        what = {"key": heard.key} if heard.key is not None else {"word": heard.word}
        self._trace(run, "input", {**what, "result": f"confirm {answer}"})
        return answer

    # ---- decisions -----------------------------------------------------------------------------------------------

    def _branch(self, run: _Run[C], node: BranchNode) -> str:
        choice = choose_branch(node, self._context(run), self._wall(run), run.flow.flow.timezone)
        for error in choice.errors:
            self._trace(run, "error", {"error": error})
        self._trace(run, "input", {"result": "branch", "case": "else" if choice.case is None else choice.case + 1,
                                   "next": choice.target})  # fmt: skip
        return choice.target

    def _set_node(self, run: _Run[C], node: SetNode) -> str:
        for name, value in node.vars.items():
            if isinstance(value, str):
                rendered = render(value, self._context(run))
                self._set(run, name, rendered, sensitive=self._reads_sensitive(run, value))
            else:
                self._set(run, name, value)
        return node.next

    def _hours(self, run: _Run[C], node: HoursNode) -> str:
        calendar = run.flow.flow.calendars.get(node.calendar) or self._calendars.get(node.calendar)
        if calendar is None:
            raise _FlowBroken(f"node {run.node!r}: there is no calendar {node.calendar!r}")
        when = self._wall(run)
        status = calendar_status(calendar, when)
        if status.open:
            target = node.open
        else:
            local_day = when.astimezone(calendar.zone).date()
            intervals, _why = calendar.day_hours(local_day)
            holiday = (
                status.reason == "holiday"
                or (status.reason == "override" and not intervals)
                or (calendar.holiday_name(local_day) is not None)
            )
            target = node.holiday if holiday and node.holiday is not None else node.closed
        detail: dict[str, Any] = {"result": "open" if status.open else "closed", "calendar": node.calendar,
                                  "reason": status.reason, "next": target}  # fmt: skip
        if status.holiday is not None:
            detail["holiday"] = status.holiday
        self._trace(run, "input", detail)
        return target

    # ---- lookups, handoff, recording -----------------------------------------------------------------------------

    async def _http_node(self, run: _Run[C], node: HttpNode) -> str:
        context = self._context(run)
        url = render(node.url, context)
        query = {k: render(v, context) for k, v in node.query.items()}
        if query:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(query)
        headers = {k: render(v, context) for k, v in node.headers.items()}
        body = _render_json(node.json_, context) if node.json_ is not None else None
        secret = self._reads_sensitive(run, node.url) or any(self._reads_sensitive(run, v) for v in node.query.values())
        shown_url = node.url if secret else url
        error: str | None = None
        status = 0
        answer: Any = None
        try:
            async with asyncio.timeout(node.timeout):
                result = await self._http.request(node.method, url, json=body, headers=headers, timeout=node.timeout)
            status, answer = result.status, result.json
            if not 200 <= status < 300:
                error = f"HTTP status {status}"
        except TimeoutError:
            error = f"no answer within {node.timeout:g}s"
        except (HttpError, OSError) as exc:
            error = str(exc) or type(exc).__name__
        if run.call.ended:
            raise _CallerGone("caller hung up during an HTTP lookup")
        mapped: dict[str, Any] = {}
        if error is None:
            for name, path in node.map.items():
                found, value = _dig(answer, path)
                if not found:
                    error = f"the answer has no {path}"
                    break
                mapped[name] = value
        self._trace(run, "input", {"result": "http", "method": node.method, "url": shown_url, "status": status,
                                   "error": error})  # fmt: skip
        self._set(run, "http_status", status)
        self._set(run, "http_error", error or "")
        if error is not None:
            return node.failure
        for name, value in mapped.items():
            self._set(run, name, value)
        return node.next

    async def _queue(self, run: _Run[C], node: QueueNode) -> str | _End:
        await self._play(run, prompt_items(node.prompt), barge_in=False)
        context = self._context(run)
        data = {key: _text(render(value, context) if isinstance(value, str) else value)
                for key, value in node.data.items()}  # fmt: skip
        result = await self._handoff.transfer(run.call, node.queue, data)
        shown = self._shown_data(run, data)
        self._trace(run, "input", {"result": "queue", "queue": node.queue, "ok": result.ok,
                                   "reason": result.reason, "data": shown})  # fmt: skip
        if result.ok:
            return _End("queued", f"handed to queue {node.queue}", node.queue, data)
        if run.call.ended:
            raise _CallerGone("caller hung up during the handoff")
        self._set(run, "queue_error", result.reason or "handoff failed")
        if node.failure is None:  # docs/flows.md: no failure path means a goodbye and hang-up
            return await self._polite_end(run, f"queue {node.queue} failed: {result.reason}", "hangup")
        return node.failure

    async def _record(self, run: _Run[C], node: RecordNode) -> str:
        await self._play(run, prompt_items(node.prompt), barge_in=False)
        result = await self._recorder.record(
            run.call,
            max_seconds=node.max_length,
            beep=node.beep,
            stop_keys=node.terminator or "",
            silence_seconds=node.silence,
        )
        self._trace(run, "input", {"result": "recording", "path": result.path, "seconds": round(result.seconds, 3),
                                   "reason": result.reason})  # fmt: skip
        self._set(run, node.into, result.path or "")
        self._set(run, f"{node.into}_seconds", round(result.seconds, 1))
        self._set(run, f"{node.into}_reason", result.reason)
        if run.call.ended:
            raise _CallerGone("caller hung up after recording")
        return node.next

    # ---- other flows ---------------------------------------------------------------------------------------------

    def _enter(self, run: _Run[C], relative: str, node_id: str | None, *, push: str | None) -> str:
        target = self.tree.flow_at(run.flow.resolve(relative))
        if push is not None:
            if len(run.stack) >= MAX_SUBFLOW_DEPTH:
                raise _FlowBroken(f"subflows nested more than {MAX_SUBFLOW_DEPTH} deep")
            run.stack.append((run.flow, push))
        for name, value in target.flow.variables.items():
            if name not in run.variables:
                self._set(run, name, value)
        run.flow = target
        start = node_id or target.flow.start
        self._trace(run, "input", {"result": "subflow" if push is not None else "goto", "flow": target.flow.name,
                                   "start": start})  # fmt: skip
        return start

    async def _return(self, run: _Run[C]) -> str | _End:
        if not run.stack:  # docs/flows.md: a return outside a subflow ends the call
            await run.call.hangup()
            return _End("hangup", "return in the top flow")
        run.flow, target = run.stack.pop()
        self._trace(run, "input", {"result": "return", "flow": run.flow.flow.name, "next": target})
        return target


# ---- helpers ------------------------------------------------------------------------------------------------------


def _has_say(loaded: LoadedFlow) -> bool:
    return any(
        isinstance(item, SayItem) for node in loaded.flow.nodes.values() for _loc, items in node.prompt_fields()
        for item in items
    )  # fmt: skip


def _number_language(language: str, loaded: LoadedFlow) -> str | None:
    """The language numbers are spoken in: the call's, else the flow's fallback (docs/flows.md section 7)."""
    for candidate in (language, loaded.flow.fallback_language):
        base = candidate.lower().split("-")[0]
        if base in NUMBER_LANGUAGES:
            return base
    return None


def _normal(text: str) -> str:
    return " ".join(_WORD_RE.sub(" ", text.casefold()).split())


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _render_json(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, list):
        return [_render_json(v, context) for v in value]
    if isinstance(value, dict):
        return {str(k): _render_json(v, context) for k, v in value.items()}
    return value


def _dig(data: Any, path: str) -> tuple[bool, Any]:
    """``customer.name`` / ``orders.0.id`` in a JSON value: (found, value)."""
    node = data
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node
