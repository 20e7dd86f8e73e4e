"""``ivr test``: run scenario files on virtual time, print each case and the flow coverage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ivr.simulator.runner import SuiteResult, find_scenarios, run_suite

__all__ = ["run_tests"]

Echo = Callable[[str], None]


def run_tests(
    paths: Sequence[Path],
    *,
    min_coverage: float | None = None,
    realtime: bool = False,
    show_coverage: bool = True,
    echo: Echo = print,
) -> int:
    """Run the scenarios under ``paths``; return the exit code (0 all passed and coverage reached, 1 otherwise)."""
    files = find_scenarios(paths)
    if not files:
        echo("no scenario files (*.test.yaml) found")
        return 1
    missing = [p for p in files if not p.exists()]
    for path in missing:
        echo(f"{path}: no such file")
    if missing:
        return 1
    result = run_suite(files, realtime=realtime)
    return report(result, min_coverage=min_coverage, show_coverage=show_coverage, echo=echo)


def report(result: SuiteResult, *, min_coverage: float | None, show_coverage: bool, echo: Echo) -> int:
    failed = 0
    for file in result.files:
        echo(f"{file.path}")
        for problem in file.problems:
            echo(f"  {problem}")
        if file.error:
            echo(f"  error: {file.error}")
        for case in file.cases:
            for line in case.describe().splitlines():
                echo(f"  {line}")
        if not file.passed:
            failed += 1
    cases = result.cases
    passed = sum(1 for c in cases if c.passed)
    call_seconds = sum(c.call_seconds for c in cases)
    echo(
        f"{passed}/{len(cases)} cases passed in {len(result.files)} files "
        f"({call_seconds:.0f} s of calls in {result.real_seconds:.1f} s)"
    )
    code = 0 if result.passed else 1
    if show_coverage:
        echo("coverage of the flow graphs:")
        for line in result.coverage.report().splitlines():
            echo(f"  {line}")
    percent = result.coverage.percent()
    if min_coverage is not None and percent + 1e-9 < min_coverage:
        echo(f"coverage {percent:.1f}% is below --min-coverage {min_coverage:g}%")
        code = 1
    return code
