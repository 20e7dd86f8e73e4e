"""Every node kind run by the engine against a scripted caller on virtual time (prompts last 2 s each)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from enginetext import flow_file, flow_tree
from fake_call import FakeCall, FakeHandoff, FakePlayer, FakeRecorder, HangUp, OnPrompt, Press, Rig, Say
from virtual_loop import run_virtual

from ivr.flows.engine import MAX_UNATTENDED_STEPS, CallOutcome
from ivr.flows.loader import load_flow_tree
from ivr.flows.runtime import FixtureHttpClient, FixtureResponse, loop_wall_clock

SOFIA = ZoneInfo("Europe/Sofia")
THURSDAY_10 = dt.datetime(2027, 3, 4, 10, 0, tzinfo=SOFIA)


def go(r: Rig, script: list[Any] | None = None, **kwargs: Any) -> tuple[CallOutcome, FakeCall]:
    call = FakeCall(script or [])
    outcome = run_virtual(lambda: r.run(call, **kwargs))
    return outcome, call


def variables_traced(r: Rig) -> list[tuple[str, Any]]:
    return [(e.detail["name"], e.detail["value"]) for e in r.trace.of("variable")]


# ---- play -------------------------------------------------------------------------------------------------------

PLAY_THEN_MENU = """
a: {{type: play, prompt: [hello, {{pause: 500ms}}, bye], barge_in: {barge}, next: m}}
m:
  type: menu
  prompt: menu
  options: [{{key: "1", next: one}}]
  failure: end
one: {{type: hangup, prompt: thanks}}
end: {{type: hangup}}
"""


def test_play_without_barge_in_is_heard_whole_and_a_key_meanwhile_is_the_next_menus_input(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, PLAY_THEN_MENU.format(barge="false")))
    outcome, call = go(r, [Press("1", at=1.0)])
    assert (call.played[0].result, call.played[0].end) == ("completed", 4.5)  # 2 s + 0.5 s pause + 2 s
    assert call.played[1].names == ["menu"] and call.played[1].result == "barged_in"  # skipped: a key is waiting
    assert call.played[1].start == call.played[1].end == 4.5
    assert outcome.node == "one"


def test_play_with_barge_in_stops_at_a_key_and_the_key_is_kept(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, PLAY_THEN_MENU.format(barge="true")))
    outcome, call = go(r, [Press("1", at=1.0)])
    assert (call.played[0].result, call.played[0].end) == ("barged_in", 1.0)
    assert outcome.node == "one"


# ---- menu -------------------------------------------------------------------------------------------------------

WORD_MENU = """
a:
  type: menu
  prompt: menu
  options:
    - {key: "1", next: billing, words: {en: [billing, invoice], bg: [сметка]}}
    - {key: "2", next: support, words: {en: [technical support], bg: [поддръжка]}}
    - {words: {en: [agent]}, next: operator}
  no_match: {prompt: invalid, tries: 2}
  failure: operator
billing: {type: hangup, prompt: thanks}
support: {type: hangup, prompt: thanks}
operator: {type: hangup, prompt: bye}
"""


@pytest.mark.parametrize(
    ("language", "said", "node"),
    [
        ("en", "Billing", "billing"),
        ("en", "I need technical support please", "support"),
        ("en", "agent", "operator"),
        ("bg", "сметка", "billing"),
        ("bg", "ПОДДРЪЖКА!", "support"),
    ],
)
def test_menu_accepts_a_spoken_word_in_the_callers_language(
    tmp_path: Path, language: str, said: str, node: str
) -> None:
    r = Rig(flow_tree(tmp_path, WORD_MENU))
    outcome, call = go(r, [Say(said, at=0.5)], language=language)
    assert outcome.node == node
    heard = [e.detail for e in r.trace.of("input") if e.detail.get("result") == "choice"]
    assert heard == [{"word": said, "result": "choice", "next": node}]
    assert call.words_expected[0][0] == language and call.words_expected[-1] == (language, ())


def test_menu_word_of_another_menu_language_is_accepted_and_an_unknown_word_is_a_no_match(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, WORD_MENU))
    outcome, _call = go(r, [Say("invoice", at=0.5)], language="bg")  # callers mix in English words
    assert outcome.node == "billing"
    r = Rig(flow_tree(tmp_path, WORD_MENU))
    outcome, _call = go(r, [Say("фактура", at=0.5), OnPrompt("invalid", say="сметка")], language="bg")
    results = [e.detail["result"] for e in r.trace.of("input") if "count" not in e.detail]
    assert results == ["no_match", "choice"] and outcome.node == "billing"


class EnglishOnlyCall(FakeCall):
    """A call whose recogniser knows English only (the bundled model)."""

    def recognises(self, language: str) -> bool:
        return language == "en"


def test_without_a_recogniser_for_the_callers_language_the_menu_listens_for_its_words_in_another(
    tmp_path: Path,
) -> None:
    r = Rig(flow_tree(tmp_path, WORD_MENU))
    call = EnglishOnlyCall([Say("technical support", at=0.5)])
    outcome = run_virtual(lambda: r.run(call, language="bg"))
    assert call.words_expected[0] == ("en", ("billing", "invoice", "technical support", "agent"))
    assert outcome.node == "support"


def test_menu_words_for_the_recognizer_are_those_of_the_current_language(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, WORD_MENU))
    _outcome, call = go(r, [Press("1", at=0.5)], language="en")
    assert call.words_expected[0] == ("en", ("billing", "invoice", "technical support", "agent"))


# ---- collect ----------------------------------------------------------------------------------------------------

CARD = """
a:
  type: collect
  prompt: enter
  into: card
  min_digits: 11
  max_digits: 19
  check: luhn
  pattern: "7[0-9]*"
  no_match: {prompt: invalid, tries: 3}
  failure: failed
  next: ok
ok: {type: hangup, prompt: thanks}
failed: {type: hangup, prompt: bye}
"""


def test_collect_checks_the_pattern_and_the_checksum(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, CARD))
    script = [Press("79927398710#", at=3.0, gap=0.1),  # fails Luhn
              OnPrompt("invalid", nth=1, press="49927398716#", gap=0.1),  # Luhn but not ^7
              OnPrompt("invalid", nth=2, press="79927398713#", gap=0.1)]  # fmt: skip
    outcome, _call = go(r, script)
    problems = [e.detail.get("problem") for e in r.trace.of("input") if "ended_by" in e.detail]
    assert problems == ["fails the luhn check", "does not match the pattern", None]
    assert outcome.variables["card"] == "79927398713" and outcome.node == "ok"


SECRET = """
a:
  type: collect
  prompt: enter
  into: egn
  min_digits: 10
  max_digits: 10
  check: egn
  sensitive: true
  confirm: {prompt: [you-entered, {say: "{{ egn }}", as: digits}, confirm]}
  failure: failed
  next: copy
copy: {type: set, vars: {last4: "{{ egn | last(4) }}", shown: plain}, next: to-q}
to-q:
  type: queue
  queue: q
  data: {egn: "{{ egn }}", tail: "{{ last4 }}", what: "{{ shown }}"}
  failure: failed
failed: {type: hangup, prompt: bye}
"""


def test_sensitive_digits_are_masked_in_the_trace_but_handed_over_whole(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, SECRET))
    outcome, call = go(r, [Press("7501020018", at=3.0, gap=0.2), OnPrompt("confirm", press="1", after=0.1)])
    assert outcome.kind == "queued" and outcome.data == {"egn": "7501020018", "tail": "0018", "what": "plain"}
    assert outcome.sensitive == {"egn", "last4"}
    trace_text = repr([e.as_dict() for e in r.trace.events])
    assert "7501020018" not in trace_text and "0018" not in trace_text
    assert ("egn", "xxxxxxxxxx") in variables_traced(r) and ("shown", "plain") in variables_traced(r)
    readback = [e.detail["items"] for e in r.trace.of("prompt")][1]
    assert readback == ["you-entered", "say digits xxxxxxxxxx", "confirm"]
    assert call.played[1].audio.words[:3] == ["седем", "пет", "нула"]  # the caller hears the real digits
    queue = next(e.detail for e in r.trace.of("input") if e.detail.get("result") == "queue")
    assert queue["data"] == {"egn": "xxxxxxxxxx", "tail": "xxxx", "what": "plain"}


def test_a_terminator_right_after_a_full_entry_is_not_taken_as_the_confirm_answer(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, SECRET))
    # Ten digits end the entry by themselves; the caller presses # out of habit 0.3 s later, during the read-back.
    script = [Press("7501020018#", at=3.0, gap=0.3), OnPrompt("confirm", nth=2, press="1", after=0.1)]
    outcome, call = go(r, script)
    assert outcome.kind == "queued"
    assert [p.result for p in call.played[1:3]] == ["barged_in", "barged_in"]  # stray # cut it: played again
    ignored = [e.detail for e in r.trace.of("input") if e.detail.get("result") == "ignored"]
    assert ignored and ignored[0]["key"] == "#"


def test_a_confirm_no_puts_the_variable_back(tmp_path: Path) -> None:
    r = Rig(
        flow_tree(
            tmp_path,
            SECRET.replace("failure: failed\n  next: copy", "no_match: {tries: 1}\n  failure: failed\n  next: copy"),
        )
    )
    outcome, _call = go(r, [Press("7501020018", at=3.0, gap=0.2), OnPrompt("confirm", press="2", after=0.1)])
    assert outcome.node == "failed" and "egn" not in outcome.variables


# ---- branch, set, language --------------------------------------------------------------------------------------

BRANCH = """
a:
  type: branch
  cases:
    - {caller: "+3592*", next: sofia}
    - {expr: "missing_var > 3", next: never}
    - {days: mon-fri, time: "09:00-18:00", next: office-time}
  else: other
sofia: {type: hangup, prompt: hello}
never: {type: hangup, prompt: hello}
office-time: {type: hangup, prompt: hello}
other: {type: hangup, prompt: bye}
"""


@pytest.mark.parametrize(
    ("caller", "when", "node"),
    [
        ("+35929001234", THURSDAY_10, "sofia"),
        ("+359888123456", THURSDAY_10, "office-time"),
        ("+359888123456", dt.datetime(2027, 3, 4, 19, 0, tzinfo=SOFIA), "other"),
        ("+359888123456", dt.datetime(2027, 3, 6, 10, 0, tzinfo=SOFIA), "other"),  # Saturday
    ],
)
def test_branch_on_caller_expression_and_time(tmp_path: Path, caller: str, when: dt.datetime, node: str) -> None:
    r = Rig(flow_tree(tmp_path, BRANCH), now=lambda: when)
    call = FakeCall(caller=caller)
    outcome = run_virtual(lambda: r.run(call))
    assert outcome.node == node
    if node != "sofia":  # the case whose expression reads an unset variable is skipped, and the trace says why
        assert any("missing_var" in e.detail["error"] for e in r.trace.of("error"))


SET_AND_LANGUAGE = """
a: {type: set, vars: {tries: "{{ tries|default(0)|int + 1 }}", twice: "{{ tries|int * 2 }}", vip: true}, next: b}
b: {type: language, language: en, next: c}
c: {type: play, prompt: [hello, only-bg, {say: "{{ twice }}", as: number}, {say: "{{ amount }}", as: amount}], next: d}
d: {type: hangup}
"""


def test_set_renders_templates_in_order_and_language_switches_prompts_and_numbers(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, SET_AND_LANGUAGE, top="variables: {amount: '12.50'}\n"))
    outcome, call = go(r, variables={"tries": 2})
    assert outcome.variables["tries"] == "3" and outcome.variables["twice"] == "6" and outcome.variables["vip"] is True
    assert outcome.language == "en"
    played = call.played[0]
    assert played.audio.prompts == ["hello", "only-bg"]
    assert played.names[:2] == ["hello", "only-bg@bg"]  # missing in English: the fallback language, never silence
    assert played.audio.words == ["six", "twelve", "euros", "and", "fifty", "cents"]
    assert {p.language for p in played.audio.parts if p.kind == "word"} == {"en"}


def test_numbers_are_spoken_in_bulgarian_with_the_right_gender(tmp_path: Path) -> None:
    nodes = """
    a:
      type: play
      prompt: [{say: "{{ n }}", as: number, gender: f}, {say: "1.01", as: amount, currency: BGN}]
      next: d
    d: {type: hangup}
    """
    r = Rig(flow_tree(tmp_path, nodes, top="variables: {n: 2}\n"))
    _outcome, call = go(r)
    assert call.played[0].audio.words == ["две", "един", "лев", "и", "една", "стотинка"]


def test_a_say_item_that_cannot_be_spoken_is_left_out_and_the_rest_plays(tmp_path: Path) -> None:
    nodes = """
    a: {type: play, prompt: [balance, {say: "{{ balance }}", as: amount}, thanks], next: d}
    d: {type: hangup}
    """
    r = Rig(flow_tree(tmp_path, nodes, top="variables: {balance: n/a}\n"))
    outcome, call = go(r)
    assert call.played[0].audio.prompts == ["balance", "thanks"] and outcome.kind == "hangup"
    assert "left out" in r.trace.of("error")[0].detail["error"]


# ---- hours ------------------------------------------------------------------------------------------------------

HOURS = """
a: {type: hours, calendar: office, open: open, closed: closed, holiday: holiday}
open: {type: hangup, prompt: hello}
closed: {type: hangup, prompt: closed}
holiday: {type: hangup, prompt: holiday}
"""
OFFICE = """
calendars:
  office:
    holidays: BG
    hours: {mon-fri: 08:00-20:00}
    overrides: {2027-03-05: closed}
"""


@pytest.mark.parametrize(
    ("when", "node"),
    [
        (THURSDAY_10, "open"),
        (dt.datetime(2027, 3, 4, 21, 0, tzinfo=SOFIA), "closed"),
        (dt.datetime(2027, 3, 3, 10, 0, tzinfo=SOFIA), "holiday"),  # Liberation Day
        (dt.datetime(2027, 3, 5, 10, 0, tzinfo=SOFIA), "holiday"),  # closed by an override
        (dt.datetime(2027, 3, 4, 7, 30, tzinfo=dt.UTC), "open"),  # 09:30 in Sofia
    ],
)
def test_hours_open_closed_and_holiday(tmp_path: Path, when: dt.datetime, node: str) -> None:
    r = Rig(flow_tree(tmp_path, HOURS, top=OFFICE), now=lambda: when)
    outcome, _call = go(r)
    assert outcome.node == node


def test_hours_follow_the_loop_clock(tmp_path: Path) -> None:
    nodes = """
    a: {type: play, prompt: hello, next: wait}
    wait:
      type: menu
      prompt: menu
      timeout: 30m
      options: [{key: "1", next: h}]
      no_input: {tries: 1, next: h}
      failure: h
    h: {type: hours, calendar: office, open: open, closed: closed}
    open: {type: hangup, prompt: hello}
    closed: {type: hangup, prompt: closed}
    """
    # 19:45 at the start; the caller is silent for 30 minutes: it is 20:19 when the hours are checked.
    start = dt.datetime(2027, 3, 4, 19, 45, tzinfo=SOFIA)
    r = Rig(flow_tree(tmp_path, nodes, top=OFFICE), now=loop_wall_clock(start))
    outcome, _call = go(r)
    assert outcome.node == "closed"


# ---- http -------------------------------------------------------------------------------------------------------

HTTP = """
a:
  type: http
  method: POST
  url: "https://crm.example.bg/api/accounts/{{ account }}"
  query: {lang: "{{ language }}"}
  headers: {Authorization: "Bearer {{ token }}"}
  json: {account: "{{ account }}", tags: ["{{ language }}", ivr]}
  timeout: 3s
  map: {customer: customer.name, balance: account.balance, first: orders.0.id}
  next: ok
  failure: failed
ok: {type: play, prompt: [balance, {say: "{{ balance }}", as: amount}], next: bye}
failed: {type: hangup, prompt: busy}
bye: {type: hangup}
"""
HTTP_TOP = "variables: {account: '123456', token: s3cret, customer: '', balance: '0', first: ''}\n"
ANSWER = {"customer": {"name": "Иван"}, "account": {"balance": 12.5, "id": "{account}"}, "orders": [{"id": 7}]}


def test_http_maps_the_json_answer_to_variables(tmp_path: Path) -> None:
    http = FixtureHttpClient({"POST https://crm.example.bg/api/accounts/{account}": {"json": ANSWER, "delay": "1s"}})
    r = Rig(flow_tree(tmp_path, HTTP, top=HTTP_TOP), http=http)
    outcome, call = go(r)
    assert outcome.node == "bye"
    assert (outcome.variables["customer"], outcome.variables["balance"], outcome.variables["first"]) == (
        "Иван",
        12.5,
        7,
    )
    assert outcome.variables["http_status"] == 200 and outcome.variables["http_error"] == ""
    request = http.requests[0]
    assert request.url == "https://crm.example.bg/api/accounts/123456?lang=bg"
    assert request.json == {"account": "123456", "tags": ["bg", "ivr"]}
    assert request.headers == {"Authorization": "Bearer s3cret"} and request.timeout == 3.0
    assert call.played[0].start == 1.0  # the lookup took 1 s of the loop's clock
    assert call.played[0].audio.words == ["дванадесет", "евро", "и", "петдесет", "цента"]


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (FixtureResponse(json=ANSWER, delay=5.0), "no answer within 3s"),
        (FixtureResponse(status=503, json={}), "HTTP status 503"),
        (FixtureResponse(json={"customer": {"name": "x"}}), "the answer has no account.balance"),
        (FixtureResponse(error="connection refused"), "connection refused"),
    ],
)
def test_http_failure_goes_to_the_failure_path_with_the_reason(
    tmp_path: Path, response: FixtureResponse, error: str
) -> None:
    http = FixtureHttpClient({"POST https://crm.example.bg/api/accounts/{id}": response})
    r = Rig(flow_tree(tmp_path, HTTP, top=HTTP_TOP), http=http)
    outcome, call = go(r)
    assert outcome.node == "failed" and outcome.variables["http_error"] == error
    assert outcome.variables["customer"] == ""  # nothing mapped from a failed lookup
    if response.delay:
        assert call.played[0].start == 3.0  # the node's timeout, on the loop's clock


class HangingHttp:
    """A client that ignores its timeout: the engine's own timeout still ends the wait."""

    async def request(self, method: str, url: str, *, json: Any, headers: Any, timeout: float) -> Any:
        import asyncio

        await asyncio.sleep(3600)


def test_http_timeout_is_enforced_by_the_engine_too(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, HTTP, top=HTTP_TOP), http=HangingHttp())  # type: ignore[arg-type]
    outcome, call = go(r)
    assert outcome.node == "failed" and call.played[0].start == 3.0


# ---- queue ------------------------------------------------------------------------------------------------------

QUEUE = """
a:
  type: queue
  queue: billing
  prompt: connecting
  data: {account: "{{ account }}", language: "{{ language }}", vip: true, none: null}
  failure: sorry
sorry: {type: play, prompt: [busy], next: bye}
bye: {type: hangup, prompt: bye}
"""


def test_queue_hands_the_call_over_with_its_data(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, QUEUE, top="variables: {account: '42'}\n"))
    outcome, call = go(r, language="en")
    assert (outcome.kind, outcome.queue) == ("queued", "billing")
    assert outcome.data == {"account": "42", "language": "en", "vip": "true", "none": ""}
    assert r.handoff.transfers == [("billing", dict(outcome.data))]
    assert call.played[0].names == ["connecting"] and call.hung_up_at is None  # the queue owns the call now


def test_queue_failure_goes_to_the_failure_path_with_the_reason_in_a_variable(tmp_path: Path) -> None:
    r = Rig(
        flow_tree(tmp_path, QUEUE, top="variables: {account: '42'}\n"), handoff=FakeHandoff({"billing": "503 busy"})
    )
    outcome, call = go(r)
    assert (outcome.kind, outcome.node) == ("hangup", "bye")
    assert outcome.variables["queue_error"] == "503 busy"
    assert [p.names for p in call.played] == [["connecting"], ["busy"], ["bye"]]


def test_queue_failure_without_a_failure_path_says_goodbye_and_hangs_up(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, "a: {type: queue, queue: q}\n"), handoff=FakeHandoff({"q": "no agents"}))
    outcome, call = go(r)
    assert outcome.kind == "hangup" and "no agents" in outcome.reason
    assert call.played[-1].names == ["goodbye"] and call.hung_up_at is not None


# ---- record -----------------------------------------------------------------------------------------------------

RECORD = """
a: {type: record, prompt: leave-message, beep: true, max_length: 1m, silence: 4s, terminator: "#", into: msg, next: b}
b: {type: hangup, prompt: thanks}
"""


def test_record_puts_the_result_in_variables(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, RECORD), recorder=FakeRecorder(speak_seconds=15.0))
    outcome, call = go(r)
    assert r.recorder.calls == [{"max_seconds": 60.0, "beep": True, "stop_keys": "#", "silence_seconds": 4.0}]
    assert outcome.variables["msg"] == "/var/spool/ivr/call-1.wav"
    assert (outcome.variables["msg_seconds"], outcome.variables["msg_reason"]) == (15.0, "silence")
    assert call.played[1].start == 17.0 and outcome.kind == "hangup"


def test_caller_hanging_up_while_recording_keeps_the_message(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, RECORD), recorder=FakeRecorder(speak_seconds=30.0))
    outcome, call = go(r, [HangUp(at=12.0)])
    assert outcome.kind == "caller_hangup"
    assert outcome.variables["msg_seconds"] == 10.0 and outcome.variables["msg_reason"] == "hangup"
    assert call.hung_up_at is None


# ---- goto, subflow, return, hangup ------------------------------------------------------------------------------


def test_subflow_shares_variables_and_returns_to_next(tmp_path: Path) -> None:
    flow_file(tmp_path, """
    s1: {type: set, vars: {found: "yes-{{ seed }}"}, next: s2}
    s2: {type: play, prompt: hello, next: back}
    back: {type: return}
    """, start="s1", name="sub", file="sub/identify.yaml",
              top="variables: {found: '', seed: sub-default, extra: 'x'}\n")  # fmt: skip
    main = flow_file(tmp_path, """
    a: {type: subflow, flow: sub/identify.yaml, next: b}
    b: {type: hangup, prompt: bye}
    """, top="variables: {found: '', seed: main}\n")  # fmt: skip
    r = Rig(load_flow_tree(main))
    outcome, call = go(r)
    assert outcome.variables["found"] == "yes-main"  # the caller's value wins over the subflow's default
    assert outcome.variables["extra"] == "x"  # a subflow default for a variable nobody set
    assert r.trace.nodes() == ["a", "s1", "s2", "back", "b"]
    assert [e.flow for e in r.trace.of("node")] == ["t", "sub", "sub", "sub", "t"]
    assert call.played[-1].names == ["bye"] and outcome.flow == "t"


def test_goto_moves_to_a_node_of_another_flow_for_good(tmp_path: Path) -> None:
    flow_file(tmp_path, """
    x: {type: play, prompt: hello, next: y}
    y: {type: hangup, prompt: thanks}
    """, start="x", name="other", file="other.yaml")  # fmt: skip
    main = flow_file(tmp_path, "a: {type: goto, flow: other.yaml, node: y}\n")
    r = Rig(load_flow_tree(main))
    outcome, call = go(r)
    assert r.trace.nodes() == ["a", "y"] and outcome.flow == "other" and call.played[0].names == ["thanks"]


def test_return_in_the_top_flow_hangs_up(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, "a: {type: play, prompt: hello, next: b}\nb: {type: return}\n"))
    outcome, call = go(r)
    assert (outcome.kind, outcome.reason) == ("hangup", "return in the top flow")
    assert call.hung_up_at == 2.0


def test_hangup_node_says_goodbye_then_hangs_up(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, "a: {type: hangup, prompt: bye}\n"))
    outcome, call = go(r)
    assert (outcome.kind, call.played[0].names, call.played[0].result, call.hung_up_at) == (
        "hangup", ["bye"], "completed", 2.0,
    )  # fmt: skip
    assert r.trace.events[-1].kind == "outcome" and r.trace.events[-1].detail["outcome"] == "hangup"


# ---- hang-ups and errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("at", [0.5, 2.5, 3.5, 7.5])
def test_caller_hang_up_at_any_point_ends_the_run_cleanly(tmp_path: Path, at: float) -> None:
    nodes = """
    a: {type: play, prompt: hello, next: b}
    b:
      type: collect
      prompt: enter
      into: n
      max_digits: 4
      confirm: {prompt: confirm}
      failure: c
      next: c
    c: {type: hangup, prompt: bye}
    """
    r = Rig(flow_tree(tmp_path, nodes))
    # prompt 0-2, collect prompt 2-4 (barged in at 3), keys 3-3.9, read-back 3.9-5.9, then waiting for yes/no
    outcome, call = go(r, [Press("1234", at=3.0), HangUp(at=at)])
    assert outcome.kind == "caller_hangup" and call.hung_up_at is None
    assert r.trace.events[-1].detail["outcome"] == "caller_hangup"


def test_an_error_in_a_node_is_traced_and_the_call_ends_politely(tmp_path: Path) -> None:
    nodes = """
    a: {type: set, vars: {x: "{{ nobody_set_this }}"}, next: b}
    b: {type: hangup}
    """
    r = Rig(flow_tree(tmp_path, nodes))
    outcome, call = go(r)
    assert outcome.kind == "error" and "nobody_set_this" in outcome.reason
    assert call.played[0].names == ["goodbye"] and call.hung_up_at == 2.0
    assert r.trace.of("error")[0].detail["error"] == outcome.reason


class BrokenPlayer(FakePlayer):
    def compose(self, parts: Any) -> Any:
        if any(p.kind == "prompt" and p.source.name == "menu" for p in parts):
            raise KeyError("no audio loaded for menu")
        return super().compose(parts)


def test_a_player_that_fails_ends_the_call_politely_without_a_crash(tmp_path: Path) -> None:
    r = Rig(flow_tree(tmp_path, PLAY_THEN_MENU.format(barge="true")), player=BrokenPlayer())
    outcome, call = go(r)
    assert outcome.kind == "error" and "no audio loaded for menu" in outcome.reason
    assert [p.names for p in call.played] == [["hello", "bye"], ["goodbye"]] and call.hung_up_at is not None


def test_without_a_goodbye_prompt_an_error_just_hangs_up(tmp_path: Path) -> None:
    nodes = 'a: {type: set, vars: {x: "{{ 1 / 0 }}"}, next: b}\nb: {type: hangup}\n'
    r = Rig(flow_tree(tmp_path, nodes, goodbye=False))
    outcome, call = go(r)
    assert outcome.kind == "error" and call.played == [] and call.hung_up_at == 0.0


def test_an_endless_loop_without_input_is_stopped(tmp_path: Path) -> None:
    nodes = """
    a: {type: set, vars: {n: "{{ n|int + 1 }}"}, next: b}
    b:
      type: branch
      cases: [{expr: "now.year < 1000", next: c}]
      else: a
    c: {type: hangup}
    """
    r = Rig(flow_tree(tmp_path, nodes, top="variables: {n: 0}\n"))
    outcome, _call = go(r)
    assert outcome.kind == "error" and "without waiting for the caller" in outcome.reason
    assert int(outcome.variables["n"]) == MAX_UNATTENDED_STEPS // 2


def test_a_failing_trace_sink_does_not_end_the_call(tmp_path: Path) -> None:
    def sink(event: Any) -> None:
        raise RuntimeError("log disk full")

    r = Rig(flow_tree(tmp_path, "a: {type: hangup, prompt: bye}\n"))
    call = FakeCall()
    outcome = run_virtual(lambda: r.run(call, trace=sink))
    assert outcome.kind == "hangup"


def test_a_key_looked_at_after_a_full_entry_still_skips_the_next_barge_in_prompt(tmp_path: Path) -> None:
    nodes = """
    a: {type: collect, prompt: enter, into: n, min_digits: 4, max_digits: 4, failure: m, next: b}
    b: {type: play, prompt: thanks, barge_in: true, next: m}
    m:
      type: menu
      prompt: menu
      options: [{key: "1", next: one}]
      failure: end
    one: {type: hangup, prompt: thanks}
    end: {type: hangup}
    """
    r = Rig(flow_tree(tmp_path, nodes))
    # The entry ends at the 4th key (3.9 s); "1" at 4.5 s stops "thanks" and is the menu's choice at once.
    outcome, call = go(r, [Press("1234", at=3.0), Press("1", at=4.5)])
    assert [(p.names, p.result, p.start, p.end) for p in call.played] == [
        (["enter"], "completed", 0.0, 2.0),
        (["thanks"], "barged_in", 3.9, 4.5),
        (["thanks"], "completed", 4.5, 6.5),  # the hangup node's: the menu prompt was skipped
    ]
    menu = [e.detail["result"] for e in r.trace.of("prompt") if e.node == "m"]
    assert menu == ["skipped"] and outcome.node == "one"


def test_variables_the_engine_sets_are_known_to_the_validator_and_readable(tmp_path: Path) -> None:
    nodes = """
    a: {type: http, url: "https://crm.example.bg/x", next: q, failure: q}
    q: {type: queue, queue: billing, failure: r}
    r: {type: record, into: msg, next: s}
    s:
      type: set
      vars: {why: "{{ queue_error }} / {{ http_status }} {{ http_error }} / {{ msg_seconds }} {{ msg_reason }}"}
      next: t
    t: {type: hangup}
    """
    tree = flow_tree(tmp_path, nodes)
    assert not [w for w in tree.warnings if "no node sets it" in w.message]
    r = Rig(tree, handoff=FakeHandoff({"billing": "no agents"}), recorder=FakeRecorder(speak_seconds=3.0))
    outcome, _call = go(r)
    assert outcome.variables["why"] == "no agents / 404 HTTP status 404 / 3.0 silence"
