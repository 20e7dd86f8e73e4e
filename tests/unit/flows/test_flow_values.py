"""Templates in the sandbox, branch conditions, digit entries and checksums, prompt resolution."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ivr.flows.conditions import choose_branch, value_matches
from ivr.flows.entries import bulstat_valid, egn_birth_date, egn_valid, entry_problem, luhn_valid, mask
from ivr.flows.model import BranchNode, CollectNode, ValueTest
from ivr.flows.prompt_sources import PromptMissing, espeak_argv, resolve_prompt
from ivr.flows.templates import TemplateProblem, call_context, evaluate, plain_data, render, variables_in
from tests.unit.flows.flowtext import HEADER, flow_text, load_ok, write

SOFIA = ZoneInfo("Europe/Sofia")
NOW = dt.datetime(2027, 3, 5, 19, 30, tzinfo=SOFIA)  # a Friday evening


def context(**variables: object) -> dict[str, object]:
    return call_context(variables, caller="+359888123456", dialled="070010100", language="bg", now=NOW)


# ---- templates ----------------------------------------------------------------------------------------------------


def test_templates_read_variables_builtins_and_mapping_keys() -> None:
    ctx = context(account="0123456789", customer={"name": "Иван"})
    assert render("{{ account | last(4) }} {{ customer.name }} {{ now.weekday }} {{ caller }}", ctx) == (
        "6789 Иван fri +359888123456"
    )
    assert render("no template here {", ctx) == "no template here {"
    assert evaluate("account|length == 10 and now.hour >= 19", ctx) is True


@pytest.mark.parametrize(
    "source",
    [
        "{{ account.upper() }}",
        "{{ account.__class__ }}",
        "{{ customer.__class__.__mro__ }}",
        "{{ range(10) }}",
        "{{ lipsum() }}",
        "{{ undefined_name }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_sandbox_refuses_python_objects_and_undefined_names(source: str) -> None:
    with pytest.raises(TemplateProblem):
        render(source, context(account="1", customer={"name": "x"}))


def test_undefined_in_an_expression_is_an_error_unless_defaulted() -> None:
    with pytest.raises(TemplateProblem, match="'vip' is undefined"):
        evaluate("vip == 'yes'", context())
    assert evaluate("vip | default('no') == 'no'", context()) is True


def test_plain_data_rejects_objects() -> None:
    with pytest.raises(TypeError, match="not plain data"):
        plain_data({"x": object()})
    assert plain_data({"a": (1, 2.5, None, True)}) == {"a": [1, 2.5, None, True]}


def test_variables_in_templates_and_expressions() -> None:
    assert variables_in("{{ a }} {{ b.c | default(d) }}") == {"a", "b", "d"}
    assert variables_in("x < 3 and y", expression=True) == {"x", "y"}


# ---- branch conditions --------------------------------------------------------------------------------------------


def branch(cases: list[dict[str, object]]) -> BranchNode:
    return BranchNode.model_validate({"type": "branch", "cases": cases, "else": "default"})


def test_value_matches_globs_lists_numbers_bools_and_tests() -> None:
    assert value_matches("+3598*", "+359888123456")
    assert not value_matches("+3592*", "+359888123456")
    assert value_matches(["0700*", "+359700*"], "070010100")
    assert value_matches(3.0, "3")
    assert value_matches(True, "yes") and not value_matches(True, "no")
    assert value_matches(ValueTest(lt=3), "2") and not value_matches(ValueTest(lt=3), "abc")
    assert value_matches(ValueTest(empty=True), None) and value_matches(ValueTest(empty=False), "x")
    assert value_matches(ValueTest.model_validate({"not": ["0700*"]}), "0888")
    assert value_matches(ValueTest(regex=r"^\d{6,10}$"), "1234567")
    assert value_matches(ValueTest(equals=5), "5.0")


def test_branch_on_caller_dialled_vars_and_language() -> None:
    node = branch(
        [
            {"caller": "+3592*", "next": "sofia"},
            {"dialled": "070010100", "vars": {"tries": {"ge": 3}}, "next": "operator"},
            {"language": ["en"], "next": "english"},
        ]
    )
    assert choose_branch(node, context(tries=3), NOW, "Europe/Sofia").target == "operator"
    assert choose_branch(node, context(tries=1), NOW, "Europe/Sofia").target == "default"
    english = call_context({}, caller="x", dialled="y", language="en", now=NOW)
    assert choose_branch(node, english, NOW, "Europe/Sofia").target == "english"


def test_branch_on_days_and_time_including_past_midnight() -> None:
    node = branch([{"days": "fri", "time": "22:00-02:00", "next": "late"}, {"days": "mon-fri", "next": "weekday"}])
    assert choose_branch(node, context(), NOW, "Europe/Sofia").target == "weekday"  # Friday 19:30
    late_friday = dt.datetime(2027, 3, 6, 1, 0, tzinfo=SOFIA)  # Saturday 01:00 belongs to Friday's range
    assert choose_branch(node, context(), late_friday, "Europe/Sofia").target == "late"
    late_saturday = dt.datetime(2027, 3, 7, 1, 0, tzinfo=SOFIA)
    assert choose_branch(node, context(), late_saturday, "Europe/Sofia").target == "default"


def test_time_is_judged_in_the_flow_or_case_zone() -> None:
    node = branch([{"time": "09:00-10:00", "next": "morning"}])
    nine_utc = dt.datetime(2027, 3, 5, 9, 30, tzinfo=dt.UTC)  # 11:30 in Sofia
    assert choose_branch(node, context(), nine_utc, "Europe/Sofia").target == "default"
    assert choose_branch(node, context(), nine_utc, "UTC").target == "morning"


def test_branch_expression_that_fails_is_skipped_and_reported() -> None:
    node = branch([{"expr": "vip == 'yes'", "next": "vip"}, {"expr": "tries|int > 1", "next": "again"}])
    choice = choose_branch(node, context(tries="2"), NOW, "Europe/Sofia")
    assert choice.target == "again" and choice.case == 1
    assert choice.errors == ("case 1: \"vip == 'yes'\": 'vip' is undefined",)


# ---- digit entries ------------------------------------------------------------------------------------------------


def test_checksums_on_known_numbers() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert egn_valid("7501020018")  # born 2 January 1975
    assert not egn_valid("7501020017")  # wrong check digit
    assert not egn_valid("7513020018")  # month 13
    assert egn_valid("0543151230")  # born 15 March 2005 (month + 40); remainder 10 -> check digit 0
    assert egn_birth_date("0543151230") == dt.date(2005, 3, 15)
    assert egn_birth_date("7502300000") is None  # 30 February
    assert bulstat_valid("121759222") and not bulstat_valid("121759223")
    assert not bulstat_valid("12175922")


def collect(**settings: object) -> CollectNode:
    return CollectNode.model_validate({"type": "collect", "prompt": "p", "into": "n", "next": "x", **settings})


def test_entry_problems_name_what_is_wrong() -> None:
    node = collect(min_digits=6, max_digits=10, pattern=r"[1-9]\d*")
    assert entry_problem(node, "12345") == "too short: 5 of at least 6 digits"
    assert entry_problem(node, "12345678901") == "too long: 11 of at most 10 digits"
    assert entry_problem(node, "012345") == "does not match the pattern"
    assert entry_problem(node, "123456") is None
    assert entry_problem(collect(allowed="0123456789"), "12*") == "keys not allowed here: *"
    egn = collect(min_digits=10, max_digits=10, check="egn")
    assert entry_problem(egn, "7501020017") == "fails the egn check"
    assert entry_problem(egn, "7501020018") is None


def test_sensitive_digits_are_masked() -> None:
    assert mask("7501020018") == "xxxxxxxxxx"
    assert mask("123", sensitive=False) == "123"


# ---- prompt resolution --------------------------------------------------------------------------------------------


def test_resolve_prompt_prefers_file_then_recording_then_text_then_fallback(tmp_path: Path) -> None:
    header = HEADER.format(start="a").replace(
        "  hello: {bg: Здравейте, en: Hello}\n",
        "  hello: {bg: Здравейте, en: Hello}\n"
        "  only-bg: {bg: Само}\n"
        "  custom: {en: {file: rec/c.wav}, bg: {text: Т, voice: bg}}\n",
    )
    nodes = "a: {type: play, prompt: [hello, only-bg, custom], next: z}\nz: {type: hangup, prompt: bye}\n"
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "c.wav").write_bytes(b"RIFF")
    (tmp_path / "prompts" / "en").mkdir(parents=True)
    (tmp_path / "prompts" / "en" / "hello.flac").write_bytes(b"fLaC")
    flow = load_ok(write(tmp_path, flow_text(nodes, header=header)))

    recorded = resolve_prompt(flow, "hello", "en")
    assert (recorded.kind, recorded.path) == ("file", tmp_path / "prompts" / "en" / "hello.flac")
    text = resolve_prompt(flow, "hello", "bg")
    assert (text.kind, text.text, text.voice, text.fallback) == ("text", "Здравейте", "bg", False)
    fallback = resolve_prompt(flow, "only-bg", "en")
    assert (fallback.language, fallback.requested, fallback.fallback, fallback.text) == ("bg", "en", True, "Само")
    assert resolve_prompt(flow, "custom", "en").path == tmp_path / "rec" / "c.wav"
    with pytest.raises(PromptMissing):
        resolve_prompt(flow, "nope", "bg")
    assert espeak_argv(text, tmp_path / "out.wav") == ["espeak-ng", "-v", "bg", "-w", str(tmp_path / "out.wav"), "--",
                                                      "Здравейте"]  # fmt: skip
    with pytest.raises(ValueError, match="is a recording"):
        espeak_argv(recorded, tmp_path / "out.wav")
    assert text.cache_key != resolve_prompt(flow, "hello", "en").cache_key
