"""Every timer rule of docs/flows.md section 5, run by the engine against a scripted caller on virtual time.

Prompts last 2 s each (FakePlayer), calls start at virtual 0; times below are seconds from the start.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from enginetext import flow_tree
from fake_call import FakeCall, OnPrompt, Press, Rig
from virtual_loop import run_virtual

from ivr.flows.engine import CallOutcome
from ivr.flows.runtime import TraceEvent

MENU = """
a:
  type: menu
  prompt: menu
  retry_prompt: menu-short
  options:
    - {key: "1", next: chosen}
  timeout: 5s
  no_input: {prompt: no-input, tries: 2, next: silent}
  no_match: {prompt: invalid, tries: 2}
  failure: failed
chosen: {type: hangup, prompt: thanks}
silent: {type: hangup, prompt: no-input}
failed: {type: hangup, prompt: bye}
"""

COLLECT = """
a:
  type: collect
  prompt: enter
  retry_prompt: enter-short
  into: account
  min_digits: 6
  max_digits: 10
  first_digit: 7s
  inter_digit: 4s
  total: 30s
  no_input: {prompt: no-input, tries: 2}
  no_match: {prompt: invalid, tries: 2}
  failure: failed
  next: got-it
got-it: {type: hangup, prompt: thanks}
failed: {type: hangup, prompt: bye}
"""


def run(tmp_path: Path, nodes: str, script: list[object], **collect: str) -> tuple[CallOutcome, FakeCall, Rig]:
    for key, value in collect.items():  # change a setting of the collect node
        nodes = re.sub(rf"(?m)^  {key}: .*$", f"  {key}: {value}", nodes)
    r = Rig(flow_tree(tmp_path, nodes))
    call = FakeCall(script)  # type: ignore[arg-type]
    outcome = run_virtual(lambda: r.run(call))
    return outcome, call, r


def at(call: FakeCall, event: TraceEvent) -> float:
    return round(event.t - call.t0, 6)


def inputs(r: Rig) -> list[dict[str, object]]:
    return [dict(e.detail) for e in r.trace.of("input")]


# ---- menu -------------------------------------------------------------------------------------------------------


def test_menu_no_input_timer_starts_when_the_prompt_ends(tmp_path: Path) -> None:
    outcome, call, r = run(tmp_path, MENU, [])
    timers = r.trace.of("timer")
    assert [at(call, e) for e in timers] == [7.0, 16.0]  # prompt 0-2 + 5 s; retry (no-input + menu-short) 7-11 + 5 s
    assert [p.start for p in call.played] == [0.0, 7.0, 16.0]
    assert call.played[1].names == ["no-input", "menu-short"]  # retry prompt, then the short menu
    assert (outcome.kind, outcome.node) == ("hangup", "silent")  # after the last no-input: no_input.next


def test_menu_key_during_a_barge_in_prompt_is_the_choice(tmp_path: Path) -> None:
    outcome, call, r = run(tmp_path, MENU, [Press("1", at=0.8)])
    assert call.played[0].result == "barged_in" and call.played[0].end == 0.8
    assert outcome.node == "chosen"
    assert inputs(r)[0] == {"key": "1", "result": "choice", "next": "chosen"}


def test_menu_key_a_moment_before_the_timeout_is_still_the_choice(tmp_path: Path) -> None:
    outcome, _call, r = run(tmp_path, MENU, [Press("1", at=6.99)])
    assert outcome.node == "chosen" and r.trace.of("timer") == []


def test_menu_counts_no_input_and_no_match_apart(tmp_path: Path) -> None:
    # One silence, then one wrong key: each counter is at 1 of its 2 tries, so the caller is still asked again.
    script = [OnPrompt("menu-short", nth=1, press="7", after=0.5), OnPrompt("menu-short", nth=2, press="1", after=0.5)]
    outcome, _call, r = run(tmp_path, MENU, script)
    counted = [(d["result"], d["count"]) for d in inputs(r) if "count" in d]
    assert counted == [("no_input", 1), ("no_match", 1)]
    assert outcome.node == "chosen"


def test_menu_failure_after_the_last_no_match(tmp_path: Path) -> None:
    outcome, call, r = run(tmp_path, MENU, [Press("9", at=0.5), OnPrompt("menu-short", press="8", after=0.2)])
    counted = [(d["result"], d["count"], d["then"]) for d in inputs(r) if "count" in d]
    assert counted == [("no_match", 1, "retry"), ("no_match", 2, "failed")]
    assert call.played[1].names == ["invalid", "menu-short"]
    assert outcome.node == "failed"


def test_menu_counters_start_again_when_the_menu_is_entered_again(tmp_path: Path) -> None:
    nodes = """
    a:
      type: menu
      prompt: menu
      options:
        - {key: "1", next: chosen}
        - {key: "9", next: a}
      no_match: {prompt: invalid, tries: 2}
      failure: failed
    chosen: {type: hangup, prompt: thanks}
    failed: {type: hangup, prompt: bye}
    """
    # wrong, "9" (hear it again), wrong, right: two wrong keys in all, but never two in one visit.
    script = [Press("7", at=0.5), OnPrompt("invalid", nth=1, press="9"), OnPrompt("menu", nth=3, press="7"),
              OnPrompt("invalid", nth=2, press="1")]  # fmt: skip
    outcome, _call, _r = run(tmp_path, nodes, script)
    assert outcome.node == "chosen"


# ---- collect ----------------------------------------------------------------------------------------------------


def entry_of(r: Rig) -> list[dict[str, object]]:
    return [d for d in inputs(r) if d.get("result") in ("entry", "no_match", "no_input") and "ended_by" in d]


def test_collect_no_key_before_first_digit_is_a_no_input(tmp_path: Path) -> None:
    _outcome, call, r = run(tmp_path, COLLECT, [OnPrompt("enter-short", press="123456#")])
    timer = r.trace.of("timer")[0]
    assert (at(call, timer), timer.detail["timer"]) == (9.0, "first_digit")  # prompt end 2 + 7
    assert entry_of(r)[0]["result"] == "no_input"


def test_collect_inter_digit_pause_ends_the_entry_and_what_was_typed_is_judged(tmp_path: Path) -> None:
    _outcome, call, r = run(tmp_path, COLLECT, [Press("1234", at=3.0, gap=1.0)])
    timer = r.trace.of("timer")[0]
    assert (at(call, timer), timer.detail["timer"]) == (10.0, "inter_digit")  # last key at 6 + 4
    first = entry_of(r)[0]
    assert (first["result"], first["entry"], first["problem"]) == (
        "no_match",
        "1234",
        "too short: 4 of at least 6 digits",
    )


def test_collect_inter_digit_overrides_the_total_while_keys_are_coming(tmp_path: Path) -> None:
    # The docs' timeline, from the prompt's end at 2 s: keys every 3.5 s, the 9th one after the 30 s total.
    times = [3.0, 6.5, 10.0, 13.5, 17.0, 20.5, 24.0, 27.5, 31.0]
    script = [Press(k, at=2.0 + t) for t, k in zip(times, "123456789", strict=True)]
    outcome, call, r = run(tmp_path, COLLECT, script)  # type: ignore[arg-type]
    timer = r.trace.of("timer")[0]
    assert (at(call, timer), timer.detail["timer"]) == (36.0, "total")  # never later than total + inter_digit
    assert entry_of(r)[0] == {"result": "entry", "entry": "123456789", "ended_by": "total"}
    assert outcome.variables["account"] == "123456789" and outcome.node == "got-it"


def test_collect_total_caps_the_wait_for_the_first_digit(tmp_path: Path) -> None:
    _outcome, call, r = run(tmp_path, COLLECT, [], total="5s", inter_digit="2s")
    timer = r.trace.of("timer")[0]
    assert (at(call, timer), timer.detail["timer"]) == (7.0, "total")
    assert entry_of(r)[0]["result"] == "no_input"


def test_collect_terminator_and_max_digits_end_the_entry_at_once(tmp_path: Path) -> None:
    outcome, call, r = run(tmp_path, COLLECT, [Press("1234567#", at=3.0, gap=0.5)])
    assert entry_of(r)[0] == {"result": "entry", "entry": "1234567", "ended_by": "terminator"}
    assert call.played[1].start == 6.5 and outcome.variables["account"] == "1234567"
    outcome, call, r = run(tmp_path / "max", COLLECT, [Press("0123456789", at=3.0, gap=0.5)])
    assert entry_of(r)[0] == {"result": "entry", "entry": "0123456789", "ended_by": "max_digits"}
    assert call.played[1].start == 7.5


def test_collect_terminator_alone_is_a_no_match(tmp_path: Path) -> None:
    _outcome, _call, r = run(tmp_path, COLLECT, [Press("#", at=3.0)])
    assert entry_of(r)[0]["result"] == "no_match" and entry_of(r)[0]["entry"] == ""


def test_collect_keys_typed_during_the_prompt_are_never_lost(tmp_path: Path) -> None:
    outcome, call, _r = run(tmp_path, COLLECT, [Press("123456#", at=0.5, gap=0.2)])
    assert call.played[0].result == "barged_in" and call.played[0].end == 0.5
    assert outcome.variables["account"] == "123456"


def test_collect_keys_typed_during_a_prompt_without_barge_in_count_after_it(tmp_path: Path) -> None:
    outcome, call, _r = run(tmp_path, COLLECT.replace("  into: account", "  into: account\n  barge_in: false"),
                            [Press("123456#", at=0.5, gap=0.2)])  # fmt: skip
    assert call.played[0].result == "completed" and call.played[0].end == 2.0
    assert outcome.variables["account"] == "123456"


def test_collect_no_input_and_no_match_counted_apart_then_failure_after_the_last_try(tmp_path: Path) -> None:
    # no input, too short, no input (2nd: the limit) -> failure, although only one no-match happened.
    script = [OnPrompt("enter-short", nth=1, press="12#")]
    outcome, _call, r = run(tmp_path, COLLECT, script)  # type: ignore[arg-type]
    counted = [(d["result"], d["count"], d["then"]) for d in inputs(r) if "count" in d]
    assert counted == [("no_input", 1, "retry"), ("no_match", 1, "retry"), ("no_input", 2, "failed")]
    assert outcome.node == "failed"


def test_collect_retry_plays_the_retry_prompt_then_the_short_prompt(tmp_path: Path) -> None:
    _outcome, call, _r = run(tmp_path, COLLECT, [Press("12#", at=3.0)])
    assert call.played[1].names == ["invalid", "enter-short"]


@pytest.mark.parametrize(("answer", "kind"), [("2", "no"), ("5", "other"), ("", "timeout")])
def test_confirm_no_other_key_or_silence_asks_again_and_counts_one_no_match(
    tmp_path: Path, answer: str, kind: str
) -> None:
    nodes = COLLECT.replace(
        "  next: got-it",
        "  confirm: {prompt: [you-entered, {say: '{{ account }}', as: digits}, confirm], timeout: 4s}\n  next: got-it",
    )
    script: list[object] = [Press("123456#", at=3.0, gap=0.2), OnPrompt("enter-short", press="654321#")]
    if answer:
        script.append(OnPrompt("confirm", nth=1, press=answer, after=0.1))
    script.append(OnPrompt("confirm", nth=2, press="1", after=0.1))
    outcome, call, r = run(tmp_path, nodes, script)
    counted = [(d["result"], d["count"]) for d in inputs(r) if "count" in d]
    assert counted == [("no_match", 1)]
    assert outcome.variables["account"] == "654321" and outcome.node == "got-it"
    retry = call.played[2]
    # "No" asked to type again: no "invalid" prompt; another key or silence: the no-match prompt first.
    assert retry.names == (["enter-short"] if kind == "no" else ["invalid", "enter-short"])
    if kind == "timeout":
        timer = next(e for e in r.trace.of("timer") if e.detail["timer"] == "confirm")
        assert timer.detail["after"] == 4.0
