"""The pytest plugin: scenario files collected as tests, and the fixtures for writing the same tests in Python."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HERE = Path(__file__).parent / "scenarios"


def test_scenario_cases_are_collected_as_tests_and_a_failure_names_the_step(pytester: pytest.Pytester) -> None:
    shutil.copy(HERE / "shop.yaml", pytester.path / "shop.yaml")
    text = (HERE / "shop.test.yaml").read_text()
    cases = text.split("\n  - name: ")
    kept = [cases[0], *(c for c in cases[1:] if c.startswith(("opening hours", "closed in the evening")))]
    (pytester.path / "shop.test.yaml").write_text("\n  - name: ".join(kept).replace("press 2", "press 1"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "shop.test.yaml")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*FAIL opening hours*",
            "*shop.test.yaml:*: step `expect prompts hours-info, bye`",
            "*expected prompt hours-info, heard order (en)*",
        ]
    )


def test_python_tests_call_a_flow_on_virtual_time_through_the_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        f"""
        import datetime as dt
        from pathlib import Path

        from ivr.simulator.lab import IvrLab, StepFailed

        FLOW = Path({str(HERE / "shop.yaml")!r})

        def test_opening_hours(ivr_virtual):
            async def main():
                async with IvrLab(flow=FLOW) as lab:
                    call = await lab.call("100", at=dt.datetime(2026, 11, 24, 10, 0))
                    await call.expect_prompt("hello", "menu")
                    await call.press("2")
                    await call.step("expect prompts hours-info, bye")
                    await call.expect_hangup()
                    await call.finish()
                    return [e.node for e in call.trace if e.kind == "node"]
            assert ivr_virtual(main) == ["hours", "hello", "menu", "hours-info", "bye"]

        def test_a_wrong_expectation_raises(ivr_virtual):
            async def main():
                async with IvrLab(flow=FLOW) as lab:
                    call = await lab.call("100", at=dt.datetime(2026, 11, 24, 20, 0))
                    try:
                        await call.expect_prompt("hello")
                    except StepFailed as exc:
                        return str(exc)
                    finally:
                        await call.finish()
            assert ivr_virtual(main) == "expected prompt hello, heard closed (en)"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_ivr_lab_fixture_runs_the_daemon_over_loopback_udp(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makepyfile(
        f"""
        import asyncio
        import datetime as dt
        from pathlib import Path

        import pytest

        from ivr.simulator.virtual import VirtualTimeLoop

        @pytest.fixture
        def ivr_lab_options():
            return {{"flow": Path({str(HERE / "shop.yaml")!r})}}

        async def test_closed(ivr_lab):
            assert not isinstance(asyncio.get_running_loop(), VirtualTimeLoop)
            assert ivr_lab.server.config.sip.port != 5060
            call = await ivr_lab.call("100", at=dt.datetime(2026, 11, 24, 20, 0))
            await call.expect_prompt("closed")
            await call.expect_hangup()
            await call.finish()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
