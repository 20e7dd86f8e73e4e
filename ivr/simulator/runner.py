"""Running scenario files: the daemon and a simulated caller, on virtual time (default) or over loopback UDP.

For each scenario file the runner starts an :class:`~ivr.server.IvrServer` with the file's config (or one route to
its flow) and, case after case, places a call with a :class:`~ivr.simulator.caller.SimCaller`, plays the steps,
and checks every expectation against what the caller *received*: prompts identified from the audio
(:mod:`ivr.simulator.catalog`), the transfer it was asked to make, the BYE. The flow engine's trace of each call
feeds the coverage of the flow graph (:mod:`ivr.simulator.coverage`).

On virtual time (:mod:`ivr.simulator.virtual`) the daemon, the caller and every timer share one clock that jumps
over waits: a two-minute call takes a fraction of a second. ``realtime=True`` runs the same cases on the ordinary
event loop over real UDP sockets on 127.0.0.1, at the speed of a phone call; both give the same results.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ivr.config import IvrConfig, load_config
from ivr.flows.loader import FlowError, FlowTree, Problem
from ivr.flows.prompts import PromptSource, espeak_argv
from ivr.flows.runtime import FixtureHttpClient, HttpResult, TraceEvent, loop_wall_clock
from ivr.media.prompts import Prompt, PromptError, load_prompt
from ivr.server import IvrServer
from ivr.simulator.caller import CallFailed, SimCaller, SimCallerError
from ivr.simulator.catalog import Heard, PromptCatalog
from ivr.simulator.coverage import FlowCoverage
from ivr.simulator.scenario import Case, ScenarioFile, Step, load_scenario
from ivr.simulator.virtual import VirtualTimeLoop
from ivr.sip.endpoint import EndReason

__all__ = ["CaseResult", "FileResult", "SuiteResult", "find_scenarios", "run_files", "run_suite"]

POLL = 0.1
"""How often (on the call's clock) an expectation looks at what has been heard."""
QUIET = 0.1
"""No audio for this long after a prompt's frames: the prompt has stopped (ended early or barged into)."""


@dataclass(slots=True)
class CaseResult:
    file: str
    case: Case
    passed: bool
    failed_step: Step | None = None
    message: str = ""
    heard: list[Heard] = field(default_factory=list)
    call_seconds: float = 0.0
    """How long the call lasted on its own clock."""
    real_seconds: float = 0.0
    outcome: str = ""
    trace: list[TraceEvent] = field(default_factory=list)

    def describe(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        head = f"{status} {self.case.name} ({self.call_seconds:.1f} s of call in {self.real_seconds:.2f} s)"
        if self.passed:
            return head
        lines = [head]
        if self.failed_step is not None:
            lines.append(f"  {self.file}:{self.failed_step.line}:{self.failed_step.column}: step `{self.failed_step}`")
        lines.append(f"  {self.message}")
        if self.heard:
            lines.append("  heard: " + ", ".join(h.describe() for h in self.heard))
        return "\n".join(lines)


@dataclass(slots=True)
class FileResult:
    path: Path
    cases: list[CaseResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.problems and not self.error and all(c.passed for c in self.cases)


@dataclass(slots=True)
class SuiteResult:
    files: list[FileResult]
    coverage: FlowCoverage
    real_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.files)

    @property
    def cases(self) -> list[CaseResult]:
        return [c for f in self.files for c in f.cases]


class StepFailed(Exception):
    pass


def find_scenarios(paths: Sequence[Path]) -> list[Path]:
    """Scenario files named, and ``*.test.yaml`` files under folders named."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.test.yaml") if p.is_file()))
        else:
            found.append(path)
    return found


def run_suite(paths: Sequence[Path], *, realtime: bool = False) -> SuiteResult:
    """Load and run every scenario under ``paths`` (blocking: it runs its own event loop)."""
    files = find_scenarios(paths)
    if realtime:
        return asyncio.run(run_files(files, realtime=True))
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(run_files(files))


async def run_files(paths: Sequence[Path], *, realtime: bool = False) -> SuiteResult:
    started = time.perf_counter()
    results: list[FileResult] = []
    trees: dict[Path, FlowTree] = {}
    traces: list[list[TraceEvent]] = []
    for path in paths:
        result = FileResult(path)
        results.append(result)
        try:
            scenario = load_scenario(path)
        except FlowError as exc:
            result.problems = exc.problems
            continue
        try:
            await _run_file(scenario, result, trees, realtime=realtime)
        except (FlowError, PromptError, OSError, ValueError) as exc:
            result.error = str(exc)
        traces.extend(case.trace for case in result.cases)
    coverage = FlowCoverage(trees.values())
    for trace in traces:
        coverage.add_trace(trace)
    return SuiteResult(results, coverage, time.perf_counter() - started)


class _SwitchHttp:
    """The daemon's HTTP client: the current case's fixtures."""

    def __init__(self) -> None:
        self.current = FixtureHttpClient()

    async def request(
        self, method: str, url: str, *, json: Any, headers: Mapping[str, str], timeout: float
    ) -> HttpResult:
        return await self.current.request(method, url, json=json, headers=headers, timeout=timeout)


def _config_for(scenario: ScenarioFile, workdir: Path, *, realtime: bool) -> IvrConfig:
    overrides: dict[str, Any] = {
        "admin.listen": None,
        "cdr.url": f"sqlite:///{workdir / 'cdr.db'}",
        "flows.watch": False,
        "calls.max_calls_per_second": 1000,
        "calls.recordings_dir": str(workdir / "recordings"),
    }
    if realtime:
        overrides["sip.listen"] = f"127.0.0.1:{_free_port()}"
        base = _free_port() & ~1
        base = max(20000, min(base, 60000))
        overrides["media.rtp_ports"] = f"{base}-{base + 20}"
    else:
        overrides["sip.listen"] = "127.0.0.1:5060"
        overrides["media.rtp_ports"] = "20000-20999"
    if scenario.flow is not None:
        overrides["routes"] = [{"client": "scenario", "numbers": ["*"], "flow": str(scenario.flow.resolve())}]
        cache = Path(tempfile.gettempdir()) / "ivr-prompt-cache"
        overrides["flows.prompt_cache"] = str(cache)
    config_path = scenario.config.resolve() if scenario.config is not None else None
    return load_config(config_path, overrides)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run_file(scenario: ScenarioFile, result: FileResult, trees: dict[Path, FlowTree], *, realtime: bool) -> None:
    loop = asyncio.get_running_loop()
    network = loop.network if isinstance(loop, VirtualTimeLoop) else None
    with tempfile.TemporaryDirectory(prefix="ivr-test-") as tmp:
        workdir = Path(tmp)
        config = _config_for(scenario, workdir, realtime=realtime)
        http = _SwitchHttp()
        clock: list[Callable[[], dt.datetime]] = [lambda: dt.datetime.now(dt.UTC)]
        sink: list[list[TraceEvent]] = [[]]
        server = IvrServer(
            config,
            http=http,
            now=lambda: clock[0](),
            trace=lambda event: sink[0].append(event),
            socket_factory=network.socket_factory if network is not None else socket.socket,
        )
        await server.start()
        try:
            if not server.routes.routes:
                raise FlowError([Problem(scenario.file, 1, 1, "the config routes no calls to a flow", "add routes:")])
            catalogs: dict[Path, PromptCatalog] = {}
            for route in server.routes.routes:
                trees.setdefault(route.path, route.engine.tree)
                if route.path not in catalogs:
                    catalogs[route.path] = PromptCatalog(server.library, route.engine.audio_parts())
            for case in scenario.cases:
                matched = server.routes.match(case.dialled)
                if matched is None:
                    why = f"no route in the config takes dialled number {case.dialled!r}"
                    result.cases.append(CaseResult(scenario.file, case, False, None, why))
                    continue
                route = matched
                zone = route.engine.tree.root.flow.timezone
                start = case.at or dt.datetime.now(dt.UTC)
                if start.tzinfo is None:
                    start = start.replace(tzinfo=_zone(zone))
                clock[0] = loop_wall_clock(start)
                http.current = FixtureHttpClient(case.http)
                trace: list[TraceEvent] = []
                sink[0] = trace
                case_result = await _run_case(server, case, catalogs[route.path], scenario, network is not None)
                case_result.trace = trace
                result.cases.append(case_result)
        finally:
            await server.close()


def _zone(name: str) -> dt.tzinfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


async def _run_case(
    server: IvrServer, case: Case, catalog: PromptCatalog, scenario: ScenarioFile, virtual: bool
) -> CaseResult:
    loop = asyncio.get_running_loop()
    real_start = time.perf_counter()
    call_start = loop.time()
    network = loop.network if isinstance(loop, VirtualTimeLoop) else None
    caller = SimCaller(socket_factory=network.socket_factory if network is not None else socket.socket)
    await caller.start()
    host, port = server.config.sip.host, server.config.sip.port
    state = _CaseState(caller, catalog, case)
    result = CaseResult(scenario.file, case, True)
    try:
        try:
            await caller.dial(f"sip:{case.dialled}@{host}:{port}", case.caller, codecs=(case.codec,))
        except CallFailed as exc:
            raise StepFailed(f"the call was not answered: {exc}") from None
        for step in case.steps:
            try:
                await _STEPS[step.kind](state, step)
            except StepFailed as exc:
                result.passed = False
                result.failed_step = step
                result.message = str(exc)
                break
            except (SimCallerError, TimeoutError) as exc:
                result.passed = False
                result.failed_step = step
                result.message = f"{type(exc).__name__}: {exc}"
                break
    except StepFailed as exc:
        result.passed = False
        result.message = str(exc)
    finally:
        if caller.end is None and caller.leg is not None:
            with contextlib.suppress(TimeoutError, SimCallerError):
                await caller.hangup()
        await _flow_finished(server)
        result.heard = state.all_heard()
        await caller.close()
    result.call_seconds = loop.time() - call_start
    result.real_seconds = time.perf_counter() - real_start
    return result


async def _flow_finished(server: IvrServer, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while server.calls and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(POLL)
    await asyncio.sleep(0)  # let the flow's task write its last trace events


class _CaseState:
    def __init__(self, caller: SimCaller, catalog: PromptCatalog, case: Case) -> None:
        self.caller = caller
        self.catalog = catalog
        self.case = case
        self.cursor = 0
        self.consumed: list[Heard] = []
        self._speech: dict[tuple[str, str], Prompt] = {}

    @property
    def codec(self) -> str:
        media = self.caller.media
        return media.codec.name if media is not None else self.case.codec

    def pending(self) -> list[Heard]:
        return self.catalog.heard(self.caller.heard_frames[self.cursor :], self.codec, offset=self.cursor)

    def skip_heard(self) -> None:
        """The caller acts now (a key, a word): what it heard so far and did not expect is passed over, as a
        caller who barges into a prompt has heard its start."""
        skipped = self.pending()
        self.consumed.extend(skipped)
        self.cursor = len(self.caller.heard_frames)

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
        loop = asyncio.get_running_loop()
        return loop.time() - self.caller.last_audio_at >= QUIET and len(self.caller.heard_frames) <= first.end + 2

    async def next_heard(self, what: str) -> Heard:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.case.timeout
        while True:
            heard = self.pending()
            if heard and self.finished(heard):
                first = heard[0]
                self.cursor = first.end
                self.consumed.append(first)
                return first
            if self.caller.end is not None and not heard:
                raise StepFailed(f"expected {what}; the call ended first ({_end_text(self.caller)})")
            if loop.time() >= deadline:
                if heard:
                    raise StepFailed(f"expected {what}; {heard[0].describe()} was still playing after "
                                     f"{self.case.timeout:g} s")  # fmt: skip
                raise StepFailed(f"expected {what}; heard nothing for {self.case.timeout:g} s")
            await asyncio.sleep(POLL)

    async def speech(self, text: str, language: str) -> Prompt:
        key = (text, language)
        found = self._speech.get(key)
        if found is None:
            found = self._speech[key] = await asyncio.get_running_loop().run_in_executor(
                None, _synthesise, text, language
            )
        return found


def _end_text(caller: SimCaller) -> str:
    end = caller.end
    if end is None:
        return "still up"
    if end.reason is EndReason.REMOTE_BYE:
        return "the daemon hung up"
    return f"{end.reason.value}" + (f", status {end.status}" if end.status else "")


def _synthesise(text: str, language: str) -> Prompt:
    digest = hashlib.sha256(f"{language}\0{text}".encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "ivr-simulator-speech"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.wav"
    if not path.exists():
        import subprocess

        part = path.with_suffix(".part.wav")
        argv = espeak_argv(PromptSource("say", language, language, "text", text=text), part)
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            raise PromptError(f"espeak-ng could not say {text!r} in {language!r}: {exc}") from None
        part.replace(path)
    return load_prompt(f"say:{text}", path)


# ---- steps ------------------------------------------------------------------------------------------------------


async def _expect_prompt(state: _CaseState, step: Step) -> None:
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


async def _press(state: _CaseState, step: Step) -> None:
    if state.caller.end is not None:
        raise StepFailed(f"cannot press {step.keys}: the call has ended ({_end_text(state.caller)})")
    state.skip_heard()
    await state.caller.press(step.keys, method=step.method)
    state.skip_interrupted()


async def _say(state: _CaseState, step: Step) -> None:
    caller = state.caller
    stream = caller.stream
    if stream is None or caller.end is not None:
        raise StepFailed(f"cannot speak: the call has ended ({_end_text(caller)})")
    state.skip_heard()
    if step.say_file is not None:
        prompt = load_prompt(step.say_file.stem, step.say_file)
    else:
        assert step.say_text is not None
        prompt = await state.speech(step.say_text, step.language or "en")
    tail = Prompt("tail", np.zeros(8000 * 3 // 10, dtype=np.int16))  # 300 ms of silence: the end of the utterance
    frames = prompt.frames(stream.codec) + tail.frames(stream.codec)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    stream.play(frames, on_done=finished)
    await asyncio.wait_for(done, len(frames) * stream.clock.ptime + 2.0)


async def _silence(state: _CaseState, step: Step) -> None:
    await asyncio.sleep(step.seconds)


async def _expect_silence(state: _CaseState, step: Step) -> None:
    before = len(state.caller.heard_frames)
    pending_before = state.pending()
    await asyncio.sleep(step.seconds)
    heard = state.pending()
    if len(heard) > len(pending_before) or (len(state.caller.heard_frames) > before and heard):
        new = heard[len(pending_before)] if len(heard) > len(pending_before) else heard[-1]
        raise StepFailed(f"expected {step.seconds:g} s of silence, heard {new.describe()}")


async def _expect_transfer(state: _CaseState, step: Step) -> None:
    caller = state.caller
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.case.timeout
    while not caller.transfers and caller.end is None and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(POLL)
    if not caller.transfers:
        why = f"the call ended ({_end_text(caller)})" if caller.end is not None else f"none in {state.case.timeout:g} s"
        raise StepFailed(f"expected a transfer to {step.queue}; {why}")
    transfer = caller.transfers[0]
    if transfer.queue != step.queue:
        raise StepFailed(f"expected a transfer to {step.queue}, it went to {transfer.queue or transfer.target}")
    for key, value in step.data:
        got = transfer.data.get(key)
        if got != value:
            shown = "nothing" if got is None else repr(got)
            raise StepFailed(f"expected {key}={value} with the transfer to {step.queue}, it carried {shown} "
                             f"(all: {dict(transfer.data)})")  # fmt: skip


async def _expect_hangup(state: _CaseState, step: Step) -> None:
    caller = state.caller
    timeout = step.seconds or state.case.timeout
    try:
        await caller.wait_hangup(timeout)
    except TimeoutError:
        raise StepFailed(f"expected the daemon to hang up within {timeout:g} s; the call is still up") from None
    if caller.end is not None and caller.end.reason is not EndReason.REMOTE_BYE:
        raise StepFailed(f"expected the daemon to hang up; the call ended otherwise ({_end_text(caller)})")


async def _hangup(state: _CaseState, step: Step) -> None:
    if state.caller.end is not None:
        raise StepFailed(f"cannot hang up: the call has already ended ({_end_text(state.caller)})")
    await state.caller.hangup()


_STEPS: dict[str, Callable[[_CaseState, Step], Awaitable[None]]] = {
    "expect_prompt": _expect_prompt,
    "press": _press,
    "say": _say,
    "silence": _silence,
    "expect_silence": _expect_silence,
    "expect_transfer": _expect_transfer,
    "expect_hangup": _expect_hangup,
    "hangup": _hangup,
}
