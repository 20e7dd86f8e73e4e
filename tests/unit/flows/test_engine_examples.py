"""The example flows of configs/flows walked by scripted callers on virtual time: several paths in Bulgarian and
English, the billing account with read-back, closed hours on a public holiday, the operator, the subflow line, and a
long call that must run far faster than real time."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fake_call import FakeCall, FakeHandoff, FakeRecorder, OnPrompt, Press, Rig
from virtual_loop import run_virtual

from ivr.flows.engine import CallOutcome
from ivr.flows.loader import load_flow_tree
from ivr.flows.runtime import loop_wall_clock

FLOWS = Path(__file__).resolve().parents[3] / "configs" / "flows"
MAIN = load_flow_tree(FLOWS / "main.yaml")
SUPPORT = load_flow_tree(FLOWS / "support-line.yaml")
SOFIA = ZoneInfo("Europe/Sofia")
THURSDAY_10 = dt.datetime(2027, 3, 4, 10, 0, tzinfo=SOFIA)
LIBERATION_DAY = dt.datetime(2027, 3, 3, 10, 0, tzinfo=SOFIA)  # 3 March: a Bulgarian public holiday (Wednesday)
THURSDAY_21 = dt.datetime(2027, 3, 4, 21, 0, tzinfo=SOFIA)


def call_main(
    script: list[Any], *, when: dt.datetime = THURSDAY_10, handoff: FakeHandoff | None = None, **kwargs: Any
) -> tuple[CallOutcome, FakeCall, Rig]:
    r = Rig(MAIN, now=loop_wall_clock(when), handoff=handoff or FakeHandoff(), **kwargs)
    call = FakeCall(script)
    return run_virtual(lambda: r.run(call, client="vitosha")), call, r


def languages_of(call: FakeCall, prompt: str) -> list[str]:
    return [p.source.language for pl in call.played for p in pl.audio.parts
            if p.kind == "prompt" and p.source is not None and p.source.name == prompt]  # fmt: skip


def test_english_caller_gives_an_account_hears_it_read_back_confirms_and_reaches_billing() -> None:
    script = [
        OnPrompt("press-2-english", press="2"),
        OnPrompt("main-menu", press="1", after=1.5),
        OnPrompt("enter-account", press="0888123#", after=2.0),
        OnPrompt("confirm-account", press="1", after=0.5),
    ]
    outcome, call, r = call_main(script)
    assert (outcome.kind, outcome.queue) == ("queued", "billing")
    assert outcome.data == {"account": "0888123", "language": "en", "intent": "billing"}
    readback = call.played[-2]
    assert readback.audio.prompts == ["you-entered", "confirm-account"]
    assert readback.audio.words == ["zero", "eight", "eight", "eight", "one", "two", "three"]
    assert languages_of(call, "main-menu") == ["en"] and languages_of(call, "connecting") == ["en"]
    assert r.trace.nodes() == ["hours", "welcome", "choose-language", "speak-english", "main-menu",
                               "billing-account", "to-billing"]  # fmt: skip
    assert r.trace.events[-1].detail["client"] == "vitosha"


def test_bulgarian_caller_who_knows_the_menu_presses_during_the_greeting_and_reaches_support() -> None:
    script = [Press("1", at=0.7), OnPrompt("main-menu", press="2", after=3.0)]
    outcome, call, _r = call_main(script)
    assert (call.played[0].names, call.played[0].result) == (["welcome"], "barged_in")
    assert call.played[1].result == "barged_in" and call.played[1].start == call.played[1].end  # skipped: key waiting
    assert (outcome.queue, outcome.data["language"]) == ("support", "bg")
    assert languages_of(call, "main-menu") == ["bg"]


def test_a_caller_who_says_operator_reaches_the_operator() -> None:
    outcome, _call, _r = call_main([OnPrompt("press-2-english", press="2"), OnPrompt("main-menu", say="operator")])
    assert (outcome.queue, outcome.data) == ("operator", {"language": "en", "intent": "operator"})


def test_silence_keeps_the_caller_in_bulgarian_and_three_silences_reach_the_operator() -> None:
    outcome, call, r = call_main([])
    assert outcome.queue == "operator" and outcome.language == "bg"
    timers = [(round(e.t - call.t0, 3), e.node) for e in r.trace.of("timer")]
    # welcome 0-2; language menu 2-6 (two prompts) + 4 s; again 10-14 + 4 s -> Bulgarian;
    # main menu 18-20 + 5 s; "no input" + short menu 25-29 + 5 s; again 34-38 + 5 s -> operator
    assert timers == [(10.0, "choose-language"), (18.0, "choose-language"), (25.0, "main-menu"),
                      (34.0, "main-menu"), (43.0, "main-menu")]  # fmt: skip
    assert call.played[4].names == ["no-input", "main-menu-short"]


def test_a_short_account_is_a_no_match_and_no_to_the_read_back_asks_again() -> None:
    script = [
        OnPrompt("main-menu", press="1"),
        OnPrompt("enter-account", press="1234#"),  # too short
        OnPrompt("enter-account-short", nth=1, press="7654321#"),
        OnPrompt("confirm-account", nth=1, press="2"),  # no: type it again
        OnPrompt("enter-account-short", nth=2, press="7654322#"),
        OnPrompt("confirm-account", nth=2, press="1"),
    ]
    outcome, call, _r = call_main([Press("1", at=0.5), *script])
    assert outcome.data["account"] == "7654322" and outcome.data["language"] == "bg"
    retries = [p.names for p in call.played if "enter-account-short" in p.names]
    assert retries == [["invalid-account", "enter-account-short"], ["enter-account-short"]]


def test_agents_busy_offers_a_message_and_the_caller_declines() -> None:
    script = [Press("1", at=0.5), OnPrompt("main-menu", press="3"), OnPrompt("offer-message", press="2")]
    outcome, call, r = call_main(script, handoff=FakeHandoff({"sales": "all agents busy"}))
    assert (outcome.kind, outcome.node) == ("hangup", "goodbye")
    assert outcome.variables["queue_error"] == "all agents busy"
    assert [p.names for p in call.played][-3:] == [["agents-busy"], ["offer-message"], ["goodbye"]]
    assert r.handoff.transfers == [("sales", {"language": "bg", "intent": "sales"})]


def test_on_3_march_2027_a_public_holiday_the_caller_hears_so_in_both_languages_and_leaves_a_message() -> None:
    script = [OnPrompt("offer-message", press="1")]
    outcome, call, r = call_main(script, when=LIBERATION_DAY, recorder=FakeRecorder(speak_seconds=20.0))
    assert r.trace.nodes()[:3] == ["hours", "holiday", "offer-message"]
    holiday = call.played[0]
    assert holiday.names == ["holiday", "opening-hours", "holiday", "opening-hours"]
    assert [p.language for p in holiday.audio.parts] == ["bg", "bg", "", "en", "en"]  # "" is the 500 ms pause
    assert (
        outcome.variables["voicemail"] == "/var/spool/ivr/call-1.wav" and outcome.variables["voicemail_seconds"] == 20
    )
    assert r.recorder.calls == [{"max_seconds": 120.0, "beep": True, "stop_keys": "#", "silence_seconds": 5.0}]
    assert (outcome.kind, call.played[-1].names) == ("hangup", ["message-saved"])
    hours = next(e.detail for e in r.trace.of("input") if e.node == "hours")
    assert hours["result"] == "closed" and hours["reason"] == "holiday" and hours["holiday"]


def test_closed_in_the_evening_plays_the_closed_message_and_silence_says_goodbye() -> None:
    outcome, call, r = call_main([], when=THURSDAY_21)
    assert r.trace.nodes() == ["hours", "closed", "offer-message", "goodbye"]
    assert call.played[0].names == ["closed", "opening-hours", "closed", "opening-hours"]
    assert outcome.kind == "hangup" and call.hung_up_at is not None


EGN = "7501020018"


def call_support(script: list[Any]) -> tuple[CallOutcome, FakeCall, Rig]:
    r = Rig(SUPPORT, now=loop_wall_clock(THURSDAY_10))
    call = FakeCall(script)
    return run_virtual(lambda: r.run(call)), call, r


def test_support_line_identifies_the_caller_in_a_subflow_and_queues_with_priority() -> None:
    outcome, _call, r = call_support([OnPrompt("enter-egn", press=EGN, after=1.0)])
    assert (outcome.queue, outcome.data) == ("support-priority", {"egn": EGN, "language": "bg", "verified": "yes"})
    assert r.trace.nodes() == ["greet", "identify", "ask-egn", "verified", "thank-caller", "done", "route",
                               "priority-queue"]  # fmt: skip
    assert EGN not in repr([e.as_dict() for e in r.trace.events])


def test_support_line_after_three_wrong_numbers_goes_to_the_general_queue() -> None:
    script = [OnPrompt("enter-egn", press="1234567890"), OnPrompt("invalid-egn", nth=1, press="1111111111"),
              OnPrompt("invalid-egn", nth=2, press="7501020019")]  # fmt: skip
    outcome, _call, r = call_support(script)
    assert (outcome.queue, outcome.data) == ("support", {"language": "bg", "verified": "no"})
    problems = [e.detail.get("problem") for e in r.trace.of("input") if "ended_by" in e.detail]
    assert problems == ["fails the egn check"] * 3


@pytest.mark.parametrize("flow", [MAIN, SUPPORT], ids=["main", "support"])
def test_every_prompt_and_number_word_of_the_examples_is_known_at_load(flow: Any) -> None:
    r = Rig(flow)
    parts = r.engine().audio_parts()
    prompts = {(p.source.name, p.source.language) for p in parts if p.kind == "prompt" and p.source is not None}
    requested = {(p.source.name, p.source.requested) for p in parts if p.kind == "prompt" and p.source is not None}
    declared = {name for loaded in flow.flows.values() for name in loaded.flow.prompts}
    assert {name for name, _language in prompts} == declared
    for loaded in flow.flows.values():  # every prompt in every language a caller can be in (fallback applied)
        for name, definition in loaded.flow.prompts.items():
            if definition is not None and loaded.flow.fallback_language in definition:
                assert {(name, "bg"), (name, "en")} <= requested
    if flow is MAIN:
        words = {(p.language, p.word) for p in parts if p.kind == "word"}
        assert {("bg", "нула"), ("en", "zero"), ("en", "hash")} <= words
        assert ("press-2-english", "en") in prompts  # only ever played as {prompt: press-2-english, language: en}
        assert {p.voice for p in parts if p.kind == "word" and p.language == "en"} == {"en-gb"}


def test_a_two_minute_call_runs_in_well_under_a_second() -> None:
    slow = 3.5  # seconds between keys: a slow typist
    script = [
        OnPrompt("main-menu-short", nth=2, press="1", after=1.0),  # after two silences at the main menu
        OnPrompt("enter-account-short", nth=1, press="1234567#", gap=slow),  # after one silence at the account
        OnPrompt("confirm-account", nth=1, press="2"),
        OnPrompt("enter-account-short", nth=2, press="12345678#", gap=slow),
        OnPrompt("confirm-account", nth=2, press="1"),
        OnPrompt("offer-message", press="1"),
    ]
    started = time.perf_counter()
    outcome, call, r = call_main(script, handoff=FakeHandoff({"billing": "busy"}), recorder=FakeRecorder(45.0))
    real = time.perf_counter() - started
    print(f"\n{outcome.duration:.1f} s of call ({len(r.trace.events)} trace events, {len(call.played)} prompts) "
          f"ran in {real * 1000:.1f} ms of real time: {outcome.duration / real:,.0f}x real time")  # fmt: skip
    assert outcome.kind == "hangup" and outcome.variables["account"] == "12345678"
    assert outcome.duration >= 120.0
    assert real < 2.0
