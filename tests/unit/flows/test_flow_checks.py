"""The static checks: each one fires on the mistake it is for, and stays quiet on the correct form."""

from __future__ import annotations

from pathlib import Path

from ivr.flows.checks import check_flow
from ivr.flows.loader import load_flow
from tests.unit.flows.flowtext import HEADER, flow_text, lines, messages, problems_of, write

BYE = "z: {type: hangup, prompt: bye}\n"


def check(tmp_path: Path, nodes: str, **kwargs: object) -> list[str]:
    """Problems of a flow (all severities) as line:column: severity: message (hint), leaving out the warning that
    the header's prompt `hello` is never played (many of these small flows do not play it)."""
    problems = problems_of(write(tmp_path, flow_text(nodes + BYE, start="a")), **kwargs)
    return [line for line in lines(problems) if line != UNUSED_HELLO]


UNUSED_HELLO = "6:3: warning: prompt `hello` is never played (delete it or play it)"


def test_clean_flow_has_no_problems(tmp_path: Path) -> None:
    nodes = """
    a: {type: menu, prompt: hello, options: [{key: "1", next: z}], failure: z}
    """
    assert check(tmp_path, nodes) == []


# ---- targets and reachability -----------------------------------------------------------------------------------


def test_unknown_target_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    assert check(tmp_path, "a: {type: play, prompt: hello, next: zz-to}\nzz-top: {type: hangup}\n") == [
        "9:40: error: node `a`: `zz-to` is not a node in this flow (did you mean `zz-top`?)",
        "10:3: warning: node `zz-top` is never reached from the start node `a` "
        "(link to it from another node, or delete it)",
        "11:3: warning: node `z` is never reached from the start node `a` (link to it from another node, or delete it)",
    ]


def test_unknown_start_node(tmp_path: Path) -> None:
    path = write(tmp_path, flow_text(BYE, start="begin"))
    assert (
        lines(problems_of(path))[0]
        == "4:8: error: start node `begin` does not exist (name one of the nodes under nodes:)"
    )


def test_unreachable_node_is_a_warning_and_reachable_ones_are_not(tmp_path: Path) -> None:
    nodes = "a: {type: play, prompt: hello, next: z}\nlost: {type: play, prompt: hello, next: z}\n"
    assert check(tmp_path, nodes) == [
        "10:3: warning: node `lost` is never reached from the start node `a` "
        "(link to it from another node, or delete it)"
    ]


# ---- loops --------------------------------------------------------------------------------------------------------


def test_set_branch_set_loop_without_exit_is_an_error(tmp_path: Path) -> None:
    nodes = """
    a: {type: play, prompt: hello, next: count}
    count: {type: set, vars: {n: "{{ n|default(0)|int + 1 }}"}, next: test}
    test: {type: branch, cases: [{vars: {n: {gt: 3}}, next: count}], else: count}
    """
    assert check(tmp_path, nodes)[0] == (
        "10:3: error: endless loop count -> test -> count: no node in it waits for the caller, and none leads out "
        "(make one of them a menu or collect, or give a branch a way out of the loop)"
    )


def test_counted_retry_loop_with_an_exit_is_fine(tmp_path: Path) -> None:
    nodes = """
    a: {type: set, vars: {n: 0}, next: count}
    count: {type: set, vars: {n: "{{ n|int + 1 }}"}, next: test}
    test: {type: branch, cases: [{vars: {n: {lt: 3}}, next: count}], else: z}
    """
    assert check(tmp_path, nodes) == []


def test_loop_whose_only_exit_is_the_clock_is_a_warning(tmp_path: Path) -> None:
    nodes = """
    a: {type: play, prompt: hello, next: test}
    test: {type: branch, cases: [{time: "09:00-18:00", next: z}], else: a}
    """
    (warning,) = check(tmp_path, nodes)
    assert warning.startswith(
        "9:3: warning: loop a -> test -> a waits for no input, and nothing in it changes a variable"
    )


def test_loop_through_a_menu_is_not_endless(tmp_path: Path) -> None:
    nodes = """
    a: {type: menu, prompt: hello, options: [{key: "1", next: again}, {key: "2", next: z}], failure: z}
    again: {type: play, prompt: hello, next: a}
    """
    assert check(tmp_path, nodes) == []


def test_self_loop_is_found(tmp_path: Path) -> None:
    assert check(tmp_path, "a: {type: play, prompt: hello, next: a}\n")[0].startswith("9:3: error: endless loop a -> a")


# ---- menus --------------------------------------------------------------------------------------------------------


def test_duplicate_key_written_once_as_number_once_as_text(tmp_path: Path) -> None:
    nodes = """
    a:
      type: menu
      prompt: hello
      options:
        - {key: 1, next: z}
        - {key: "1", next: z}
      failure: z
    """
    assert check(tmp_path, nodes) == [
        "14:15: error: menu `a`: key `1` is used twice (first on line 13) (give each option its own key)"
    ]


def test_duplicate_keyword_per_language_ignores_case_and_spaces(tmp_path: Path) -> None:
    nodes = """
    a:
      type: menu
      prompt: hello
      options:
        - {key: "1", next: z, words: {en: [Technical  Support], bg: [поддръжка]}}
        - {key: "2", next: z, words: {en: [technical support]}}
        - {key: "3", next: z, words: {bg: [support], en: [поддръжка]}}
      failure: z
    """
    assert check(tmp_path, nodes) == [
        "14:42: error: menu `a`: the en word `technical support` belongs to two options (first on line 13) "
        "(each spoken word may lead to one option only)"
    ]


def test_menu_without_failure_path(tmp_path: Path) -> None:
    nodes = 'a: {type: menu, prompt: hello, options: [{key: "1", next: z}], no_input: {next: z}}\n'
    assert check(tmp_path, nodes) == [
        "9:3: error: menu `a` has no failure path: after the last no match the call has nowhere to go "
        "(add failure: <node id>, e.g. an operator queue or a polite goodbye)"
    ]


def test_menu_with_both_retry_targets_needs_no_failure(tmp_path: Path) -> None:
    nodes = 'a: {type: menu, prompt: hello, options: [{key: "1", next: z}], no_input: {next: z}, no_match: {next: z}}\n'
    assert check(tmp_path, nodes) == []


def test_keywords_in_an_undeclared_language(tmp_path: Path) -> None:
    nodes = 'a: {type: menu, prompt: hello, options: [{key: "1", next: z, words: {de: [rechnung]}}], failure: z}\n'
    assert check(tmp_path, nodes) == [
        "9:72: error: `de` is not one of this flow's languages (bg, en) (add it to languages: [bg, en, de])"
    ]


# ---- collect timers and lengths ---------------------------------------------------------------------------------

COLLECT = "a: {{type: collect, prompt: hello, into: n, failure: z, next: z, {settings}}}\n"


def test_collect_with_sensible_settings_is_clean(tmp_path: Path) -> None:
    settings = 'min_digits: 6, max_digits: 10, first_digit: 7s, inter_digit: 4s, total: 30s, terminator: "#"'
    assert check(tmp_path, COLLECT.format(settings=settings)) == []


def test_inter_digit_longer_than_total(tmp_path: Path) -> None:
    assert check(tmp_path, COLLECT.format(settings="inter_digit: 5s, total: 4s, first_digit: 2s")) == [
        "9:80: error: collect `a`: inter_digit 5s is longer than total 4s "
        "(raise total or lower inter_digit: the total must leave room for a pause between digits)"
    ]


def test_first_digit_longer_than_total_is_a_warning_naming_the_default(tmp_path: Path) -> None:
    assert check(tmp_path, COLLECT.format(settings="inter_digit: 1s, total: 4s")) == [
        "9:6: warning: collect `a`: first_digit 5s (the default) can never run out: total 4s ends the wait first "
        "(lower first_digit or raise total)"
    ]


def test_min_digits_above_max_digits(tmp_path: Path) -> None:
    (error,) = check(tmp_path, COLLECT.format(settings="min_digits: 8, max_digits: 6"))
    assert error == "9:79: error: collect `a`: min_digits 8 is more than max_digits 6 (make min_digits <= max_digits)"


def test_terminator_that_is_also_an_allowed_digit(tmp_path: Path) -> None:
    (error,) = check(tmp_path, COLLECT.format(settings='allowed: "0123456789*", terminator: "*"'))
    assert error.startswith("9:103: error: collect `a`: the terminator `*` is also an allowed digit")
    assert check(tmp_path, COLLECT.format(settings='allowed: "0123456789*"')) == []  # the default # is fine


def test_checksum_length_outside_the_limits(tmp_path: Path) -> None:
    (error,) = check(tmp_path, COLLECT.format(settings="check: egn, min_digits: 6, max_digits: 8"))
    assert error == (
        "9:74: error: collect `a`: egn numbers have 10 digits, but min_digits/max_digits allow 6-8 "
        "(set min_digits and max_digits to allow 10 digits)"
    )
    assert check(tmp_path, COLLECT.format(settings="check: egn, min_digits: 10, max_digits: 10")) == []


def test_confirm_with_the_same_yes_and_no_key(tmp_path: Path) -> None:
    settings = 'confirm: {prompt: hello, yes: "1", no: 1}'
    (error,) = check(tmp_path, COLLECT.format(settings=settings))
    assert error.startswith("9:106: error: collect `a`: confirm uses `1` for both yes and no")


def test_collect_without_failure_path(tmp_path: Path) -> None:
    (error,) = check(tmp_path, "a: {type: collect, prompt: hello, into: n, next: z}\n")
    assert error.startswith("9:3: error: collect `a` has no failure path: after the last no input or no match")


def test_record_silence_not_shorter_than_max_length(tmp_path: Path) -> None:
    nodes = "a: {type: record, max_length: 10s, silence: 10s, next: z}\n"
    (warning,) = check(tmp_path, nodes)
    assert warning.startswith("9:47: warning: record `a`: silence 10s is not shorter than max_length 10s")


# ---- prompts ------------------------------------------------------------------------------------------------------


def test_undeclared_prompt_suggests_the_declared_one(tmp_path: Path) -> None:
    assert check(tmp_path, "a: {type: play, prompt: [helo], next: z}\n") == [
        "9:28: error: prompt `helo` is not declared under prompts: (did you mean `hello`?)",
    ]


def test_prompt_missing_in_a_language_falls_back_with_a_warning_listing_the_gap(tmp_path: Path) -> None:
    header = HEADER.format(start="a").replace("hello: {bg: Здравейте, en: Hello}", "hello: {bg: Здравейте}")
    path = write(tmp_path, flow_text("a: {type: play, prompt: hello, next: z}\n" + BYE, header=header))
    assert lines(problems_of(path)) == [
        "6:3: warning: prompt `hello` is missing in en: those callers hear it in bg "
        "(add en: <text> or record prompts/en/hello.wav)"
    ]


def test_prompt_missing_in_the_fallback_language_is_an_error(tmp_path: Path) -> None:
    header = HEADER.format(start="a").replace("hello: {bg: Здравейте, en: Hello}", "hello: {en: Hello}")
    path = write(tmp_path, flow_text("a: {type: play, prompt: hello, next: z}\n" + BYE, header=header))
    assert lines(problems_of(path)) == [
        "6:3: error: prompt `hello` has no recording or text in bg: callers would hear nothing "
        "(add bg: <text> under it, or record prompts/bg/hello.wav)"
    ]


def test_recording_beside_the_flow_fills_the_gap(tmp_path: Path) -> None:
    header = HEADER.format(start="a").replace("hello: {bg: Здравейте, en: Hello}", "hello:")
    path = write(tmp_path, flow_text("a: {type: play, prompt: hello, next: z}\n" + BYE, header=header))
    assert len([p for p in problems_of(path) if p.severity == "error"]) == 2  # nothing in bg, nothing in en
    for lang in ("bg", "en"):
        (tmp_path / "prompts" / lang).mkdir(parents=True)
        (tmp_path / "prompts" / lang / "hello.wav").write_bytes(b"RIFF")
    assert problems_of(path) == []


def test_prompt_played_only_in_a_fixed_language_needs_only_that_language(tmp_path: Path) -> None:
    header = HEADER.format(start="a").replace("hello: {bg: Здравейте, en: Hello}", "hello: {en: Hello}")
    nodes = "a: {type: play, prompt: [{prompt: hello, language: en}], next: z}\n" + BYE
    assert problems_of(write(tmp_path, flow_text(nodes, header=header))) == []


def test_explicit_prompt_file_that_does_not_exist(tmp_path: Path) -> None:
    header = HEADER.format(start="a").replace("hello: {bg: Здравейте, en: Hello}", "hello: {bg: {file: a.wav}, en: Hi}")
    path = write(tmp_path, flow_text("a: {type: play, prompt: hello, next: z}\n" + BYE, header=header))
    assert lines([p for p in problems_of(path) if p.severity == "error"]) == [
        "6:3: error: prompt `hello` has no recording or text in bg: callers would hear nothing "
        "(add bg: <text> under it, or record prompts/bg/hello.wav)",
        f"6:22: error: prompt `hello` (bg): no such file a.wav (the path is relative to {tmp_path})",
    ]


def test_template_in_prompt_text_is_an_error(tmp_path: Path) -> None:
    header = HEADER.format(start="a").replace("Hello}", "'Hello {{ name }}'}")
    path = write(tmp_path, flow_text("a: {type: play, prompt: hello, next: z}\n" + BYE, header=header))
    (error,) = [p for p in problems_of(path) if p.severity == "error"]
    assert str(error).split(":", 1)[1].startswith("6:30: error: prompt `hello` (en): text prompts are synthesised once")


# ---- names from the daemon: queues and calendars ----------------------------------------------------------------


def test_unknown_queue_checked_only_when_queues_are_known(tmp_path: Path) -> None:
    nodes = "a: {type: queue, queue: biling, failure: z}\n"
    assert check(tmp_path, nodes) == []
    assert check(tmp_path, nodes, known_queues={"billing", "sales"}) == [
        "9:27: error: node `a`: there is no queue called `biling` (did you mean `billing`?)"
    ]
    assert check(tmp_path, nodes, known_queues={"biling"}) == []


def test_unknown_calendar_checked_against_the_flow_and_the_daemon(tmp_path: Path) -> None:
    nodes = "a: {type: hours, calendar: ofice, open: z, closed: z}\n"
    assert check(tmp_path, nodes) == []  # known_calendars=None: the daemon may define it
    assert check(tmp_path, nodes, known_calendars={"office"}) == [
        "9:30: error: node `a`: there is no calendar called `ofice` (did you mean `office`?)"
    ]
    extra = "calendars:\n  ofice: {hours: {mon-fri: 09:00-18:00}}\n"
    path = write(tmp_path, flow_text(nodes + BYE, extra=extra))
    assert [p for p in lines(problems_of(path, known_calendars={"office"})) if p != UNUSED_HELLO] == []


# ---- languages and variables -----------------------------------------------------------------------------------


def test_default_and_fallback_language_must_be_declared(tmp_path: Path) -> None:
    header = HEADER.format(start="a").replace("language: bg\n", "language: de\nfallback: ru\n")
    path = write(tmp_path, flow_text("a: {type: hangup}\n", header=header))
    assert [m.split(" (")[0] for m in lines(problems_of(path)) if "error" in m] == [
        "3:11: error: `de` is not one of this flow's languages",
        "4:11: error: `ru` is not one of this flow's languages",
    ]


def test_language_node_to_undeclared_language(tmp_path: Path) -> None:
    (error,) = check(tmp_path, "a: {type: language, language: eng, next: z}\n")
    assert error == "9:33: error: `eng` is not one of this flow's languages (bg, en) (did you mean `en`?)"


def test_template_reading_an_unset_variable_is_a_warning(tmp_path: Path) -> None:
    nodes = """
    a: {type: collect, prompt: hello, into: account, failure: z, next: q}
    q: {type: queue, queue: billing, data: {account: "{{ acount }}", who: "{{ caller }}"}}
    """
    assert check(tmp_path, nodes) == [
        "10:52: warning: `acount` is read here but no node sets it (did you mean `account`?)"
    ]


def test_setting_a_builtin_name_is_an_error(tmp_path: Path) -> None:
    (error,) = check(tmp_path, "a: {type: set, vars: {language: en}, next: z}\n")
    assert error == "9:25: error: `language` is a built-in name and cannot be set (use a node with type: language)"


def test_subflow_file_that_does_not_exist(tmp_path: Path) -> None:
    write(tmp_path, "name: x\n", "identify.yaml")
    (error,) = check(tmp_path, "a: {type: subflow, flow: identfy.yaml, next: z}\n")
    assert error == "9:28: error: node `a`: no flow file identfy.yaml (did you mean `identify.yaml`?)"


def test_check_flow_can_run_on_an_unchecked_load(tmp_path: Path) -> None:
    path = write(tmp_path, flow_text("a: {type: play, prompt: hello, next: nowhere}\n" + BYE))
    loaded = load_flow(path, check=False)
    assert "`nowhere` is not a node in this flow" in messages(check_flow(loaded), "error")
