"""The lab: a daemon and simulated callers on one event loop, for scenario files, pytest and Python.

:class:`IvrLab` starts an :class:`~ivr.daemon.server.IvrServer` on the running loop: on a
:class:`~ivr.simulator.virtual.VirtualTimeLoop` it lives on the virtual network and every timer runs on virtual
time; on an ordinary loop it listens on 127.0.0.1 (free ports) and calls go over real UDP. :meth:`IvrLab.call`
places a call from a :class:`~ivr.simulator.caller.SimCaller` and returns a :class:`SimulatedCall`, whose methods
are the scenario steps::

    async with IvrLab(config=Path("configs/ivr.yaml")) as lab:
        call = await lab.call("2000", at=dt.datetime(2026, 11, 24, 10, 0, tzinfo=SOFIA))
        await call.expect_prompt("welcome")
        await call.press("2")
        await call.expect_prompt("main-menu", language="en")
        await call.hang_up()

Expectations check what the caller *received*: prompts named from the audio (:mod:`ivr.simulator.catalog`), the
transfer it was asked to make, the BYE.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import socket
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import structlog

from ivr.config import IvrConfig, load_config
from ivr.daemon.calls import DialOutcome
from ivr.daemon.routes import FlowRoute
from ivr.daemon.server import IvrServer
from ivr.flows.loader import FlowError, FlowTree, Problem
from ivr.flows.prompt_sources import PromptSource, espeak_argv
from ivr.flows.runtime import AiohttpClient, FixtureHttpClient, FixtureResponse, HttpResult, TraceEvent, loop_wall_clock
from ivr.media.prompts import Prompt, PromptError, load_prompt
from ivr.simulator.caller import CallFailed, ObservedTransfer, SimCaller, SimCallerError
from ivr.simulator.catalog import Heard, PromptCatalog
from ivr.simulator.queue_endpoint import SimQueueEndpoint
from ivr.simulator.scenario import PressMethod, Step, parse_step
from ivr.simulator.virtual import VirtualTimeLoop
from ivr.sip.endpoint import EndReason
from ivr.sip.errors import SipError
from ivr.sip.uri import SipURI

__all__ = ["IvrLab", "SimulatedCall", "StepFailed"]

log = structlog.get_logger("ivr.simulator")

POLL = 0.1
"""How often (on the call's clock) an expectation looks at what has been heard."""
QUIET = 0.1
"""No audio for this long after a prompt's frames: the prompt has stopped (ended early or barged into)."""
TRAILING_FRAMES = 30
"""This many frames after a prompt that belong to no prompt or word (a ringback, an agent): the prompt is over.
More than the silence between a prompt and the words read out after it."""


class StepFailed(Exception):
    """An expectation was not met (the message says what was expected and what happened)."""


class _SwitchHttp:
    """The daemon's HTTP client: the current call's fixtures."""

    def __init__(self) -> None:
        self.current = FixtureHttpClient()

    async def request(
        self, method: str, url: str, *, json: Any, headers: Mapping[str, str], timeout: float
    ) -> HttpResult:
        return await self.current.request(method, url, json=json, headers=headers, timeout=timeout)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class IvrLab:
    """A daemon to call: ``config`` (a daemon config file, its routes decide which flow answers) or ``flow`` (one
    flow file answering every number). Use as ``async with IvrLab(...) as lab``."""

    def __init__(self, *, config: Path | None = None, flow: Path | None = None, live_http: bool = False) -> None:
        """``live_http``: http nodes reach the network (the daemon's own aiohttp client) instead of the fixtures
        given to :meth:`call`."""
        if (config is None) == (flow is None):
            raise ValueError("give a daemon config or a flow file (one of them)")
        self.config_path = config
        self.flow_path = flow
        self.server: IvrServer | None = None
        self.trees: dict[Path, FlowTree] = {}
        self._catalogs: dict[Path, PromptCatalog] = {}
        self._http = _SwitchHttp()
        self._live_http = AiohttpClient() if live_http else None
        self._clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
        self._sink: list[TraceEvent] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._factory: Callable[[int, int], socket.socket] = socket.socket
        self.queue_endpoints: list[SimQueueEndpoint] = []
        """A simulated ACD at each configured queue's address (bridged handoffs reach it)."""

    async def __aenter__(self) -> IvrLab:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _config(self, workdir: Path, virtual: bool) -> IvrConfig:
        overrides: dict[str, Any] = {
            "admin.listen": None,
            "cdr.url": f"sqlite:///{workdir / 'cdr.db'}",
            "flows.watch": False,
            "calls.max_calls_per_second": 1000,
            "calls.recordings_dir": str(workdir / "recordings"),
        }
        if virtual:
            overrides["sip.listen"] = "127.0.0.1:5060"
            # The virtual network carries datagrams only; a TCP listener would be a real socket on the machine's
            # port 5060 (two labs, or a running daemon, would collide).
            overrides["sip.transports"] = ["udp"]
            overrides["media.rtp_ports"] = "20000-20999"
        else:
            overrides["sip.listen"] = f"127.0.0.1:{_free_port()}"
            base = max(20000, min(_free_port() & ~1, 60000))
            overrides["media.rtp_ports"] = f"{base}-{base + 20}"
        if self.flow_path is not None:
            flow = self.flow_path.resolve()
            overrides["routes"] = [{"client": "lab", "numbers": ["*"], "flow": str(flow)}]
            overrides["flows.prompt_cache"] = str(Path(tempfile.gettempdir()) / "ivr-prompt-cache")
        path = self.config_path.resolve() if self.config_path is not None else None
        return load_config(path, overrides)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        virtual = isinstance(loop, VirtualTimeLoop)
        if isinstance(loop, VirtualTimeLoop):
            self._factory = loop.network.socket_factory
        self._tmp = tempfile.TemporaryDirectory(prefix="ivr-lab-")
        config = self._config(Path(self._tmp.name), virtual)
        server = IvrServer(
            config,
            http=self._live_http if self._live_http is not None else self._http,
            now=lambda: self._clock(),
            trace=lambda event: self._sink.append(event),
            socket_factory=self._factory,
        )
        try:
            await server.start()
        except BaseException:
            self._tmp.cleanup()
            raise
        self.server = server
        if not server.routes.routes:
            await self.close()
            raise FlowError(
                [Problem(str(self.config_path), 1, 1, "the config routes no calls to a flow", "add routes:")]
            )
        # A simulated ACD at each queue's address (over real UDP too, when the address is free on this machine).
        for host, port in sorted({_host_port(q.sip_uri) for q in server.queues}):
            queue_endpoint = SimQueueEndpoint(host, port, socket_factory=self._factory, clock=server.clock)
            try:
                await queue_endpoint.start()
            except OSError as exc:
                log.warning("no simulated queue endpoint: its address is taken", address=f"{host}:{port}",
                            error=str(exc))  # fmt: skip
                continue
            self.queue_endpoints.append(queue_endpoint)
        for route in server.routes.routes:
            self.trees.setdefault(route.path, route.engine.tree)
            if route.path not in self._catalogs:
                self._catalogs[route.path] = PromptCatalog(server.library, route.engine.audio_parts())

    async def close(self) -> None:
        for queue_endpoint in self.queue_endpoints:
            await queue_endpoint.close()
        self.queue_endpoints = []
        if self.server is not None:
            await self.server.close()
            self.server = None
        if self._live_http is not None:
            await self._live_http.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def route(self, dialled: str) -> FlowRoute:
        server = self._require_server()
        matched = server.routes.match(dialled)
        if matched is None:
            raise StepFailed(f"no route in the config takes dialled number {dialled!r}")
        return matched

    async def call(
        self,
        dialled: str,
        caller: str = "0888123456",
        *,
        at: dt.datetime | None = None,
        http: Mapping[str, FixtureResponse | Mapping[str, Any]] | None = None,
        codec: str = "PCMU",
        timeout: float = 30.0,
        queue_status: int = 200,
    ) -> SimulatedCall:
        """Call ``dialled`` from ``caller``; ``at`` is the wall clock when the call starts (naive: in the flow's
        time zone), ``http`` the answers the flow's lookups get, ``queue_status`` how queues answer a handoff
        (200; 486 busy...: by REFER, the caller's final NOTIFY; bridged, the simulated ACD's answer). Raises
        :class:`StepFailed` if the call is not answered."""
        server = self._require_server()
        route = self.route(dialled)
        sim = SimCaller(socket_factory=self._factory, transfer_result=queue_status, clock=server.clock)
        for queue_endpoint in self.queue_endpoints:
            queue_endpoint.answer = queue_status
        call = await self._simulated_call(sim, route, at=at, http=http, codec=codec, timeout=timeout)
        host, port = server.config.sip.host, server.config.sip.port
        try:
            await sim.dial(f"sip:{dialled}@{host}:{port}", caller, codecs=(codec,))
        except CallFailed as exc:
            await sim.close()
            raise StepFailed(f"the call was not answered: {exc}") from None
        return call

    async def answer_call(
        self,
        number: str = "0888123456",
        *,
        flow_number: str | None = None,
        caller_id: str = "024001234",
        variables: Mapping[str, Any] | None = None,
        at: dt.datetime | None = None,
        http: Mapping[str, FixtureResponse | Mapping[str, Any]] | None = None,
        answer: int = 200,
        codec: str = "PCMU",
        timeout: float = 30.0,
    ) -> tuple[DialOutcome, SimulatedCall]:
        """The daemon places a call to ``number``, a simulated phone on the lab's network that answers with
        ``answer`` (200, or 486, 603...), and runs the flow routed for ``flow_number`` (default: ``number``) with
        ``variables``. Returns how the call turned out and the phone's side of it (driven like :meth:`call`'s)."""
        server = self._require_server()
        route = self.route(flow_number or number)
        phone = SimCaller(socket_factory=self._factory, clock=server.clock)
        phone.answers = answer
        call = await self._simulated_call(phone, route, at=at, http=http, codec=codec, timeout=timeout)
        host, port = phone.sip_address
        placed = server.place_call(f"sip:{number}@{host}:{port}", flow=route, caller_id=caller_id,
                                   variables=dict(variables or {}), answer_timeout=timeout)  # fmt: skip
        outcome = await placed.outcome
        if outcome.result == "answered":
            await phone.wait_call(timeout)
        return outcome, call

    async def _simulated_call(
        self,
        sim: SimCaller,
        route: FlowRoute,
        *,
        at: dt.datetime | None,
        http: Mapping[str, FixtureResponse | Mapping[str, Any]] | None,
        codec: str,
        timeout: float,
    ) -> SimulatedCall:
        """What a call needs before it starts, either way: the wall clock ``at`` (naive: in the flow's time zone),
        the HTTP fixtures, a fresh trace, the simulated phone started, and its :class:`SimulatedCall`."""
        server = self._require_server()
        start = at or dt.datetime.now(dt.UTC)
        if start.tzinfo is None:
            start = start.replace(tzinfo=ZoneInfo(route.engine.tree.root.flow.timezone))
        self._clock = loop_wall_clock(start)
        self._http.current = FixtureHttpClient(http or {})
        self._sink = []
        await sim.start()
        call = SimulatedCall(sim, self._catalogs[route.path], codec=codec, timeout=timeout)
        call.trace = self._sink
        call._server = server
        call._lab = self
        call._bridged_from = [len(q.calls) for q in self.queue_endpoints]
        return call

    def resolve(self, transfer: ObservedTransfer) -> ObservedTransfer:
        """Name the queue a transfer went to (by its URI) and read its data as that queue's headers say."""
        server = self._require_server()
        try:
            target = SipURI.parse(transfer.target)
        except SipError:
            return transfer
        for queue in server.queues:
            uri = queue.sip_uri
            if (uri.user, uri.host.lower(), uri.port or 5060) != (
                target.user,
                target.host.lower(),
                target.port or 5060,
            ):
                continue
            data = dict(transfer.data)
            if queue.headers is not None:
                by_name = {name.lower(): value for name, value in transfer.headers}
                for name, key in queue.headers.items():
                    if name.lower() in by_name:
                        data[key] = by_name[name.lower()]
            return replace(transfer, queue=queue.name, data=data)
        return transfer

    def _require_server(self) -> IvrServer:
        if self.server is None:
            raise RuntimeError("the lab is not started: use 'async with IvrLab(...) as lab'")
        return self.server


class SimulatedCall:
    """One call from a simulated caller to the lab's daemon, driven step by step like a scenario case.

    Each method is a scenario step (``await call.press("2")`` is ``press 2``); :meth:`step` takes the step's text.
    Expectations raise :class:`StepFailed` saying what was expected and what was heard."""

    def __init__(
        self, caller: SimCaller, catalog: PromptCatalog, *, codec: str = "PCMU", timeout: float = 30.0
    ) -> None:
        self.caller = caller
        self.catalog = catalog
        self.default_codec = codec
        self.timeout = timeout
        self.trace: list[TraceEvent] = []
        """The flow engine's trace of this call (complete once the call has ended and the flow finished)."""
        self._server: IvrServer | None = None
        self._lab: IvrLab | None = None
        self._bridged_from: list[int] = []
        self.cursor = 0
        self.consumed: list[Heard] = []
        self._barged: str | None = None  # the prompt a key press cut short: its tail, heard after, is passed over
        self.final_heard: list[Heard] = []
        """Everything heard, once :meth:`finish` has run."""
        self._speech: dict[tuple[str, str, str], Prompt] = {}

    @property
    def codec(self) -> str:
        media = self.caller.media
        return media.codec.name if media is not None else self.default_codec

    def pending(self) -> list[Heard]:
        return self.catalog.heard(self.caller.heard_frames[self.cursor :], self.codec, offset=self.cursor)

    def skip_heard(self) -> None:
        """The caller acts now (a key, a word): what it heard so far and did not expect is passed over, as a
        caller who barges into a prompt has heard its start."""
        skipped = self.pending()
        self.consumed.extend(skipped)
        self.cursor = len(self.caller.heard_frames)
        if skipped and not self.finished(skipped[-1:]):
            self._barged = skipped[-1].name

    def skip_interrupted(self) -> None:
        """After a key press: a prompt that started before it and was cut short (barge-in) by the next one is
        passed over too."""
        pressed_until = len(self.caller.heard_frames)
        heard = self.pending()
        while len(heard) > 1 and not heard[0].complete and heard[0].start < pressed_until:
            first = heard.pop(0)
            self.consumed.append(first)
            self.cursor = first.end

    def all_heard(self) -> list[Heard]:
        return [*self.consumed, *self.pending()]

    def finished(self, heard: list[Heard]) -> bool:
        first = heard[0]
        # Not on ``complete`` alone: words read out right after a prompt (an account number) belong to it.
        if len(heard) > 1 or self.caller.end is not None:
            return True
        after = len(self.caller.heard_frames) - first.end
        if after > TRAILING_FRAMES:
            return True  # other audio follows it (ringback, an agent, music): the prompt is over
        loop = asyncio.get_running_loop()
        return loop.time() - self.caller.last_audio_at >= QUIET  # the audio stopped (a beep may have followed)

    async def next_heard(self, what: str) -> Heard:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            heard = self.pending()
            if heard and self.finished(heard):
                first = heard[0]
                self.cursor = first.end
                self.consumed.append(first)
                if self._barged is not None and first.name == self._barged and not first.complete:
                    continue  # the rest of the prompt a key press cut short, sent before the daemon stopped it
                self._barged = None
                return first
            if self.caller.end is not None and not heard:
                raise StepFailed(f"expected {what}; the call ended first ({_end_text(self.caller)})")
            if loop.time() >= deadline:
                if heard:
                    raise StepFailed(f"expected {what}; {heard[0].describe()} was still playing after "
                                     f"{self.timeout:g} s")  # fmt: skip
                raise StepFailed(f"expected {what}; heard nothing for {self.timeout:g} s")
            await asyncio.sleep(POLL)

    async def speech(self, text: str, language: str, voice: str | None = None) -> Prompt:
        key = (text, language, voice or "")
        found = self._speech.get(key)
        if found is None:
            found = self._speech[key] = await asyncio.get_running_loop().run_in_executor(
                None, _synthesise, text, language, voice
            )
        return found

    def transfers(self) -> list[ObservedTransfer]:
        """Handoffs of this call so far: REFERs this caller got, then INVITEs the simulated ACDs got."""
        found = list(self.caller.transfers)
        lab = self._lab
        if lab is not None:
            for queue_endpoint, start in zip(lab.queue_endpoints, self._bridged_from, strict=False):
                found.extend(queue_endpoint.calls[start:])
            found = [lab.resolve(t) for t in found]
        return found

    # ---- steps, as methods ----

    async def step(self, text: str) -> None:
        """Run one step written as in a scenario file (``"press 2"``, ``"expect prompt main-menu in en"``)."""
        await self.run_step(parse_step(text))

    async def run_step(self, step: Step) -> None:
        await _STEPS[step.kind](self, step)

    async def expect_prompt(self, *names: str, language: str | None = None, saying: str | None = None) -> None:
        await self.run_step(Step("expect_prompt", f"expect prompt {', '.join(names)}", 0, 0, names=names,
                                 language=language, saying=saying))  # fmt: skip

    async def press(self, keys: str, method: PressMethod = "rfc4733") -> None:
        await self.run_step(Step("press", f"press {keys}", 0, 0, keys=keys, method=method))

    async def say(self, text: str, language: str = "en", voice: str | None = None) -> None:
        await self.run_step(Step("say", f'say "{text}"', 0, 0, say_text=text, language=language, voice=voice))

    async def silence(self, seconds: float) -> None:
        await self.run_step(Step("silence", f"silence {seconds:g}s", 0, 0, seconds=seconds))

    async def expect_transfer(self, queue: str, **data: str) -> None:
        await self.run_step(Step("expect_transfer", f"expect transfer {queue}", 0, 0, queue=queue,
                                 data=tuple(data.items())))  # fmt: skip

    async def expect_hangup(self, within: float = 0.0) -> None:
        await self.run_step(Step("expect_hangup", "expect hangup", 0, 0, seconds=within))

    async def hang_up(self) -> None:
        await self.run_step(Step("hangup", "hangup", 0, 0))

    async def finish(self) -> None:
        """Hang up if the call is still up, wait for the daemon's flow to finish (the trace is then complete)
        and release the caller."""
        caller = self.caller
        if caller.end is None and caller.leg is not None:
            with contextlib.suppress(TimeoutError, SimCallerError):
                await caller.hangup()
        if self._server is not None:
            await _flow_finished(self._server)
        self.final_heard = self.all_heard()
        await caller.close()


def _host_port(uri: SipURI) -> tuple[str, int]:
    return uri.host.lower(), uri.port or 5060


def _end_text(caller: SimCaller) -> str:
    end = caller.end
    if end is None:
        return "still up"
    if end.reason is EndReason.REMOTE_BYE:
        return "the daemon hung up"
    return f"{end.reason.value}" + (f", status {end.status}" if end.status else "")


def _synthesise(text: str, language: str, voice: str | None = None) -> Prompt:
    """``text`` spoken by espeak-ng in ``language`` (or by flite, which speaks English only), cached on disk."""
    digest = hashlib.sha256(f"{language}\0{voice}\0{text}".encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "ivr-simulator-speech"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.wav"
    if not path.exists():
        import subprocess

        part = path.with_suffix(".part.wav")
        if voice == "flite":
            if not language.startswith("en"):
                raise PromptError(f"flite speaks English only, not {language!r}")
            argv = ["flite", "-t", text, "-o", str(part)]
        else:
            argv = espeak_argv(PromptSource("say", language, language, "text", text=text), part)
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            raise PromptError(f"{argv[0]} could not say {text!r} in {language!r}: {exc}") from None
        part.replace(path)
    return load_prompt(f"say:{text}", path)


# ---- steps ------------------------------------------------------------------------------------------------------


async def _expect_prompt(state: SimulatedCall, step: Step) -> None:
    for i, name in enumerate(step.names):
        what = f"prompt {name}" + (f" in {step.language}" if step.language else "")
        heard = await state.next_heard(what)
        if heard.name != name:
            got = heard.describe() if heard.name else f'words "{" ".join(heard.words)}"'
            raise StepFailed(f"expected {what}, heard {got}")
        if step.language is not None and heard.language != step.language:
            raise StepFailed(f"expected {what}, heard it in {heard.language}")
        if step.saying is not None and i == len(step.names) - 1:
            said = " ".join(heard.words)
            if _norm(said) != _norm(step.saying):
                raise StepFailed(f'expected {what} saying "{step.saying}", it said "{said}"')


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


async def _press(state: SimulatedCall, step: Step) -> None:
    if state.caller.end is not None:
        raise StepFailed(f"cannot press {step.keys}: the call has ended ({_end_text(state.caller)})")
    state.skip_heard()
    await state.caller.press(step.keys, method=step.method)
    state.skip_interrupted()


async def _say(state: SimulatedCall, step: Step) -> None:
    caller = state.caller
    stream = caller.stream
    if stream is None or caller.end is not None:
        raise StepFailed(f"cannot speak: the call has ended ({_end_text(caller)})")
    state.skip_heard()
    if step.say_file is not None:
        prompt = load_prompt(step.say_file.stem, step.say_file)
    else:
        assert step.say_text is not None
        prompt = await state.speech(step.say_text, step.language or "en", step.voice)
    tail = Prompt("tail", np.zeros(8000 * 3 // 10, dtype=np.int16))  # 300 ms of silence: the end of the utterance
    frames = prompt.frames(stream.codec) + tail.frames(stream.codec)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    stream.play(frames, on_done=finished)
    await asyncio.wait_for(done, len(frames) * stream.clock.ptime + 2.0)


async def _silence(state: SimulatedCall, step: Step) -> None:
    await asyncio.sleep(step.seconds)


async def _expect_silence(state: SimulatedCall, step: Step) -> None:
    before = len(state.caller.heard_frames)
    pending_before = state.pending()
    await asyncio.sleep(step.seconds)
    heard = state.pending()
    if len(heard) > len(pending_before) or (len(state.caller.heard_frames) > before and heard):
        new = heard[len(pending_before)] if len(heard) > len(pending_before) else heard[-1]
        raise StepFailed(f"expected {step.seconds:g} s of silence, heard {new.describe()}")


async def _expect_transfer(state: SimulatedCall, step: Step) -> None:
    caller = state.caller
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.timeout
    while not state.transfers() and caller.end is None and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(POLL)
    transfers = state.transfers()
    if not transfers:
        why = f"the call ended ({_end_text(caller)})" if caller.end is not None else f"none in {state.timeout:g} s"
        raise StepFailed(f"expected a transfer to {step.queue}; {why}")
    transfer = transfers[0]
    if transfer.queue != step.queue:
        raise StepFailed(f"expected a transfer to {step.queue}, it went to {transfer.queue or transfer.target}")
    for key, value in step.data:
        got = transfer.data.get(key)
        if got != value:
            shown = "nothing" if got is None else repr(got)
            raise StepFailed(f"expected {key}={value} with the transfer to {step.queue}, it carried {shown} "
                             f"(all: {dict(transfer.data)})")  # fmt: skip


async def _expect_hangup(state: SimulatedCall, step: Step) -> None:
    caller = state.caller
    timeout = step.seconds or state.timeout
    try:
        await caller.wait_hangup(timeout)
    except TimeoutError:
        raise StepFailed(f"expected the daemon to hang up within {timeout:g} s; the call is still up") from None
    if caller.end is not None and caller.end.reason is not EndReason.REMOTE_BYE:
        raise StepFailed(f"expected the daemon to hang up; the call ended otherwise ({_end_text(caller)})")


async def _hangup(state: SimulatedCall, step: Step) -> None:
    if state.caller.end is not None:
        raise StepFailed(f"cannot hang up: the call has already ended ({_end_text(state.caller)})")
    await state.caller.hangup()


_STEPS: dict[str, Callable[[SimulatedCall, Step], Awaitable[None]]] = {
    "expect_prompt": _expect_prompt,
    "press": _press,
    "say": _say,
    "silence": _silence,
    "expect_silence": _expect_silence,
    "expect_transfer": _expect_transfer,
    "expect_hangup": _expect_hangup,
    "hangup": _hangup,
}


async def _flow_finished(server: IvrServer, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while server.calls and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(POLL)
    await asyncio.sleep(0)  # let the flow's task write its last trace events
