"""Running scenario files: the daemon and a simulated caller, on virtual time (default) or over loopback UDP.

For each scenario file the runner starts an :class:`~ivr.daemon.server.IvrServer` with the file's config (or one route
to its flow) and, case after case, places a call with a :class:`~ivr.simulator.caller.SimCaller`, plays the steps,
and checks every expectation against what the caller *received*: prompts identified from the audio
(:mod:`ivr.simulator.catalog`), the transfer it was asked to make, the BYE. The flow engine's trace of each call
feeds the coverage of the flow graph (:mod:`ivr.simulator.coverage`).

On virtual time (:mod:`ivr.simulator.virtual`) the daemon, the caller and every timer share one clock that jumps
over waits: a two-minute call takes a fraction of a second. ``realtime=True`` runs the same cases on the ordinary
event loop over real UDP sockets on 127.0.0.1, at the speed of a phone call; both give the same results.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ivr.flows.loader import FlowError, FlowTree, Problem
from ivr.flows.runtime import TraceEvent
from ivr.media.prompts import PromptError
from ivr.simulator.caller import SimCallerError
from ivr.simulator.catalog import Heard
from ivr.simulator.coverage import FlowCoverage
from ivr.simulator.lab import IvrLab, StepFailed
from ivr.simulator.scenario import Case, ScenarioFile, Step, load_scenario
from ivr.simulator.virtual import VirtualTimeLoop

__all__ = ["CaseResult", "FileResult", "SuiteResult", "find_scenarios", "run_files", "run_suite"]


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
    languages: dict[str, bool] = {}
    for path in paths:
        result = FileResult(path)
        results.append(result)
        try:
            scenario = load_scenario(path)
        except FlowError as exc:
            result.problems = exc.problems
            continue
        try:
            await _run_file(scenario, result, trees, realtime=realtime, languages=languages)
        except (FlowError, PromptError, OSError, ValueError) as exc:
            result.error = str(exc)
        traces.extend(case.trace for case in result.cases)
    coverage = FlowCoverage(trees.values(), recognised=lambda language: languages.get(language, False))
    for trace in traces:
        coverage.add_trace(trace)
    return SuiteResult(results, coverage, time.perf_counter() - started)


async def _run_file(
    scenario: ScenarioFile,
    result: FileResult,
    trees: dict[Path, FlowTree],
    *,
    realtime: bool,
    languages: dict[str, bool] | None = None,
) -> None:
    async with IvrLab(config=scenario.config, flow=scenario.flow) as lab:
        for path, tree in lab.trees.items():
            trees.setdefault(path, tree)
            if languages is not None and lab.server is not None:
                engine = lab.server.speech.engine
                for loaded in tree.flows.values():
                    for language in loaded.flow.languages:
                        heard = engine is not None and engine.supports(language)
                        languages[language] = languages.get(language, False) or heard
        for case in scenario.cases:
            result.cases.append(await _run_case(lab, case, scenario))


async def _run_case(lab: IvrLab, case: Case, scenario: ScenarioFile) -> CaseResult:
    loop = asyncio.get_running_loop()
    real_start = time.perf_counter()
    call_start = loop.time()
    result = CaseResult(scenario.file, case, True)
    try:
        call = await lab.call(case.dialled, case.caller, at=case.at, http=case.http, codec=case.codec,
                              timeout=case.timeout, queue_status=case.queue_status)  # fmt: skip
    except StepFailed as exc:
        result.passed = False
        result.message = str(exc)
        return result
    try:
        for step in case.steps:
            try:
                await call.run_step(step)
            except StepFailed as exc:
                result.passed, result.failed_step, result.message = False, step, str(exc)
                break
            except (SimCallerError, TimeoutError) as exc:
                result.passed, result.failed_step = False, step
                result.message = f"{type(exc).__name__}: {exc}"
                break
    finally:
        await call.finish()
    result.heard = call.final_heard
    result.trace = call.trace
    result.call_seconds = loop.time() - call_start
    result.real_seconds = time.perf_counter() - real_start
    return result
