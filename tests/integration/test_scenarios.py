"""Scenario files run end to end: the daemon and a simulated caller on virtual time, and over loopback UDP."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from typer.testing import CliRunner

from ivr.cli import app
from ivr.simulator.runner import run_suite

HERE = Path(__file__).parent / "scenarios"


def test_shop_scenarios_pass_on_virtual_time_and_cover_every_edge() -> None:
    started = time.perf_counter()
    result = run_suite([HERE / "shop.test.yaml"])
    assert result.passed, "\n".join(c.describe() for c in result.cases)
    assert len(result.cases) == 12
    assert result.coverage.percent() == 100.0, result.coverage.report()
    call_seconds = sum(c.call_seconds for c in result.cases)
    assert call_seconds > 60  # over a minute of calls (timeouts included) ...
    assert time.perf_counter() - started < call_seconds / 10  # ... far faster than real time


def test_a_swapped_key_fails_the_scenario_naming_the_step_what_was_expected_and_heard(tmp_path: Path) -> None:
    shutil.copy(HERE / "shop.test.yaml", tmp_path / "shop.test.yaml")
    flow = (HERE / "shop.yaml").read_text()
    broken = flow.replace('{key: "1", next: order,', '{key: "1", next: hours-info,')
    assert broken != flow
    (tmp_path / "shop.yaml").write_text(broken)
    result = run_suite([tmp_path / "shop.test.yaml"])
    failed = {c.case.name: c for c in result.cases if not c.passed}
    case = failed["order status is read back and found"]
    assert case.failed_step is not None
    assert case.failed_step.text == "expect prompt order"
    assert case.failed_step.line == 13
    assert case.message == "expected prompt order, heard hours-info (en)"
    assert "shop.test.yaml:13:9: step `expect prompt order`" in case.describe()
    assert result.coverage.percent() < 100.0


def test_loopback_udp_in_real_time_gives_the_same_results_as_virtual_time(tmp_path: Path) -> None:
    scenario = (HERE / "shop.test.yaml").read_text()
    cases = scenario.split("\ncases:\n")[1].split("\n  - name: ")
    # Spoken words over real RTP, and a closed-hours call, at the speed of real calls.
    keep = [c for c in cases if c.split("\n")[0] in ("the caller says what they want", "closed in the evening")]
    assert len(keep) == 2
    text = scenario.split("\ncases:\n")[0] + "\ncases:\n" + "".join("\n  - name: " + c for c in keep) + "\n"
    (tmp_path / "two.test.yaml").write_text(text.replace("flow: shop.yaml", f"flow: {HERE / 'shop.yaml'}"))
    virtual = run_suite([tmp_path / "two.test.yaml"])
    started = time.perf_counter()
    real = run_suite([tmp_path / "two.test.yaml"], realtime=True)
    elapsed = time.perf_counter() - started
    assert virtual.passed and real.passed, "\n".join(c.describe() for c in [*virtual.cases, *real.cases])
    assert [[h.describe() for h in c.heard] for c in virtual.cases] == [
        [h.describe() for h in c.heard] for c in real.cases
    ]
    assert [c.trace[-1].detail["outcome"] for c in virtual.cases] == [c.trace[-1].detail["outcome"] for c in real.cases]
    assert elapsed > 8.0  # it really ran at the speed of a call


def test_ivr_test_command_exit_codes_and_min_coverage(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["test", str(HERE / "shop.test.yaml"), "--min-coverage", "100"])
    assert ok.exit_code == 0, ok.output
    assert "12/12 cases passed" in ok.output
    assert "total: nodes 10/10, edges 18/18, 100.0%" in ok.output
    one = (HERE / "shop.test.yaml").read_text().split("\n  - name: opening hours")[0]
    (tmp_path / "one.test.yaml").write_text(one.replace("flow: shop.yaml", f"flow: {HERE / 'shop.yaml'}"))
    low = runner.invoke(app, ["test", str(tmp_path / "one.test.yaml"), "--min-coverage", "90"])
    assert low.exit_code == 1, low.output
    assert "is below --min-coverage 90%" in low.output
    (tmp_path / "bad.test.yaml").write_text(
        f"flow: {HERE / 'shop.yaml'}\ncases:\n  - name: x\n    steps:\n      - presss 1\n"
    )
    bad = runner.invoke(app, ["test", str(tmp_path / "bad.test.yaml")])
    assert bad.exit_code == 1
    assert f"{tmp_path / 'bad.test.yaml'}:5:9: error: unknown step 'presss 1'" in bad.output
