"""Scenario steps and files: what ops write, and the errors they get (file:line:column with a hint)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.flows.loader import FlowError
from ivr.simulator.scenario import load_scenario, parse_duration, parse_step


@pytest.mark.parametrize(
    ("text", "seconds"), [("6s", 6.0), ("500ms", 0.5), ("2m", 120.0), ("1.5", 1.5), (" 3 s ", 3.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_steps_parse_into_their_parts() -> None:
    step = parse_step('expect prompt you-entered in en saying "one two"')
    assert (step.kind, step.names, step.language, step.saying) == ("expect_prompt", ("you-entered",), "en", "one two")
    assert parse_step("expect prompts a, b,c").names == ("a", "b", "c")
    press = parse_step("press 12345678# by info")
    assert (press.kind, press.keys, press.method) == ("press", "12345678#", "info")
    assert parse_step('say "billing" in en').say_text == "billing"
    assert parse_step("say hello.wav", base=Path("/x")).say_file == Path("/x/hello.wav")
    assert parse_step("silence 6s").seconds == 6.0
    assert parse_step("wait 500ms").kind == "silence"
    assert parse_step("expect silence 2s").kind == "expect_silence"
    transfer = parse_step("expect transfer billing with account=12345678, language=en")
    assert (transfer.queue, transfer.data) == ("billing", (("account", "12345678"), ("language", "en")))
    assert parse_step("expect hangup within 10s").seconds == 10.0
    assert parse_step("hangup").kind == "hangup"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("presss 1", "unknown step"),
        ("press", "press what?"),
        ("press 12x", "is not a sequence of keys"),
        ("press 1 by smoke", "by rfc4733"),
        ('say "unclosed', "close the quotes"),
        ("silence soon", "is not a duration"),
        ("expect prompt", "expect which prompt?"),
        ("expect transfer billing with account", "is not key=value"),
        ("expect miracle", "is not something to expect"),
    ],
)
def test_bad_steps_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_step(text)


def test_file_errors_carry_file_line_and_column(tmp_path: Path) -> None:
    flow = tmp_path / "f.yaml"
    flow.write_text("name: f\n")
    path = tmp_path / "f.test.yaml"
    path.write_text(
        "flow: f.yaml\n"
        "colour: blue\n"
        "at: yesterday\n"
        "cases:\n"
        "  - name: a\n"
        "    steps:\n"
        "      - press 1\n"
        "      - expect prompt\n"
        "  - name: a\n"
        "    steps: []\n"
    )
    with pytest.raises(FlowError) as exc:
        load_scenario(path)
    shown = [str(p) for p in exc.value.problems]
    assert any(s.startswith(f"{path}:2:1: error: unknown key `colour`") for s in shown), shown
    assert any(s.startswith(f"{path}:3:5: error: 'yesterday' is not a date and time") for s in shown), shown
    assert any(s.startswith(f"{path}:8:9: error: expect which prompt?") for s in shown), shown
    assert any("two cases named 'a'" in s and "the first is on line 5" in s for s in shown), shown
    assert any(":10:12: error: case 'a' has no steps" in s for s in shown), shown


def test_a_file_must_name_what_it_tests(tmp_path: Path) -> None:
    path = tmp_path / "x.test.yaml"
    path.write_text("cases:\n  - name: a\n    steps: [hangup]\n")
    with pytest.raises(FlowError, match="name what the scenarios test"):
        load_scenario(path)
    path.write_text("flow: missing.yaml\ncases:\n  - name: a\n    steps: [hangup]\n")
    with pytest.raises(FlowError, match=r"missing\.yaml does not exist"):
        load_scenario(path)


def test_at_takes_a_zone_name_or_an_offset(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text("name: f\n")
    path = tmp_path / "t.test.yaml"
    path.write_text(
        "flow: f.yaml\nat: 2026-11-24 10:00 Europe/Sofia\ncases:\n"
        "  - name: a\n    steps: [hangup]\n"
        "  - name: b\n    at: 2026-11-24T10:00+00:00\n    steps: [hangup]\n"
    )
    scenario = load_scenario(path)
    a, b = scenario.cases
    assert a.at is not None and a.at.utcoffset() is not None and a.at.utcoffset().total_seconds() == 7200
    assert b.at is not None and b.at.utcoffset() is not None and b.at.utcoffset().total_seconds() == 0
