"""The pytest plugin (registered as ``pytest11`` entry point ``ivr``): scenario files are tests, and fixtures give
a daemon to call from Python.

* Every ``*.test.yaml`` pytest is pointed at (``pytest configs/flows``) is collected: one test per case, run on
  virtual time; a failure shows the step (file:line), what was expected and what was heard.
* ``ivr_virtual``: runs an async function on a fresh virtual-time loop (``ivr_virtual(main)`` returns what
  ``main()`` returns). Inside it, ``IvrLab`` puts the daemon on the virtual network::

      def test_billing(ivr_virtual):
          async def main():
              async with IvrLab(config=Path("configs/ivr.yaml")) as lab:
                  call = await lab.call("2000", at=dt.datetime(2026, 11, 24, 10, 0))
                  await call.expect_prompt("welcome")
                  await call.press("2")
                  await call.expect_prompt("main-menu", language="en")
                  await call.finish()
          ivr_virtual(main)

* ``ivr_lab`` (with pytest-asyncio): an ``IvrLab`` on the test's own event loop, over UDP on 127.0.0.1 in real
  time; say what it runs by overriding the ``ivr_lab_options`` fixture (``{"config": path}`` or ``{"flow": path}``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ivr.flows.loader import FlowError
from ivr.simulator.lab import IvrLab
from ivr.simulator.scenario import Case, ScenarioFile, load_scenario
from ivr.simulator.virtual import VirtualTimeLoop, run_virtual

__all__ = ["ScenarioCaseItem", "ScenarioFileCollector"]


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.name.endswith((".test.yaml", ".test.yml")):
        collector: ScenarioFileCollector = ScenarioFileCollector.from_parent(parent, path=file_path)
        return collector
    return None


class ScenarioError(Exception):
    pass


class ScenarioFileCollector(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        try:
            scenario = load_scenario(self.path)
        except FlowError as exc:
            raise self.CollectError("\n".join(str(p) for p in exc.problems)) from None
        for case in scenario.cases:
            yield ScenarioCaseItem.from_parent(self, name=case.name, scenario=scenario, case=case)


class ScenarioCaseItem(pytest.Item):
    def __init__(self, *, scenario: ScenarioFile, case: Case, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.case = case

    def runtest(self) -> None:
        only = ScenarioFile(self.scenario.path, self.scenario.config, self.scenario.flow, [self.case])
        import asyncio

        from ivr.simulator.runner import FileResult, _run_file

        async def main() -> FileResult:
            result = FileResult(only.path)
            await _run_file(only, result, {}, realtime=False)
            return result

        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            result = runner.run(main())
        if result.error:
            raise ScenarioError(result.error)
        (case_result,) = result.cases
        if not case_result.passed:
            raise ScenarioError(case_result.describe())

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.case.line - 1, f"scenario: {self.case.name}"


@pytest.fixture
def ivr_virtual() -> Callable[[Callable[[], Any]], Any]:
    """Run an async function on a fresh virtual-time loop and return its result."""
    return run_virtual


@pytest.fixture
def ivr_lab_options() -> dict[str, Any]:
    """What ``ivr_lab`` runs: override with ``{"config": Path(...)}`` or ``{"flow": Path(...)}``."""
    return {"config": Path("configs/ivr.yaml")}


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the real-time fixture needs pytest-asyncio
    pass
else:

    @pytest_asyncio.fixture
    async def ivr_lab(ivr_lab_options: dict[str, Any]) -> AsyncIterator[IvrLab]:
        """A daemon on 127.0.0.1 (free ports), called over real UDP in real time."""
        async with IvrLab(**ivr_lab_options) as lab:
            yield lab
