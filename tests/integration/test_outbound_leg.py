"""The call controller places a call leg with a flow attached, on virtual time against a simulated phone.

The daemon dials the phone (an INVITE with our offer), the phone answers, and the flow runs exactly as for a caller
who phoned in: with the variables the dialler gave (and ``direction``, ``dialled_number``, ``caller_id``), prompts the
phone hears byte for byte, a key the phone presses, and a call record. A phone that is busy or refuses is an outcome
with its SIP status, and nobody's flow runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from ivr.daemon.calls import DialOutcome, dial_result
from ivr.simulator.lab import IvrLab
from ivr.simulator.virtual import run_virtual

FLOW = """
name: reminder
languages: [en]
language: en
timezone: Europe/Sofia
start: who
variables: {amount: "0", direction: inbound}

prompts:
  reminder: {en: "This is a payment reminder from the shop."}
  inbound: {en: "Thank you for calling the shop."}
  you-owe: {en: "You owe"}
  menu: {en: "To pay now press one. To hear it again press two."}
  thanks: {en: "Thank you. Goodbye."}
  bye: {en: "Goodbye."}

nodes:
  who:
    type: branch
    cases:
      - {vars: {direction: outbound}, next: reminder}
    else: inbound
  inbound:
    type: hangup
    prompt: inbound
  reminder:
    type: play
    prompt: [reminder, you-owe, {say: "{{ amount }}", as: number}]
    next: menu
  menu:
    type: menu
    prompt: menu
    options:
      - {key: "1", next: thanks}
      - {key: "2", next: reminder}
    timeout: 3s
    no_input: {tries: 1}
    no_match: {tries: 1}
    failure: bye
  thanks:
    type: hangup
    prompt: thanks
  bye:
    type: hangup
    prompt: bye
"""

AT = dt.datetime(2026, 11, 24, 10, 0)


def _flow(tmp_path: Path) -> Path:
    path = tmp_path / "reminder.yaml"
    path.write_text(FLOW)
    return path


def test_a_placed_call_runs_its_flow_with_the_dialler_variables(tmp_path: Path) -> None:
    flow = _flow(tmp_path)

    async def main() -> tuple[DialOutcome, list[str], list[str], dict[str, object], str]:
        async with IvrLab(flow=flow) as lab:
            outcome, call = await lab.answer_call(
                "0888555123", caller_id="024001234", variables={"amount": "42"}, at=AT
            )
            await call.expect_prompt("reminder")
            await call.expect_prompt("you-owe", saying="forty two")
            await call.expect_prompt("menu")
            await call.press("1")
            await call.expect_prompt("thanks")
            await call.expect_hangup()
            await call.finish()
            server = lab.server
            assert server is not None and server.cdr is not None
            (record,) = [r for r in await server.cdr.fetch() if r.call_id == outcome.call_id]
            entered = [e.node or "" for e in call.trace if e.kind == "node"]
            return outcome, [h.describe() for h in call.final_heard], entered, record.extra, record.caller

    outcome, heard, nodes, extra, caller = run_virtual(main)
    assert outcome.result == "answered" and outcome.status == 200
    assert nodes == ["who", "reminder", "menu", "thanks"]
    assert [h.split(" ")[0] for h in heard] == ["reminder", "you-owe", "menu", "thanks"]
    assert extra["direction"] == "outbound"
    assert caller == "024001234"


def test_a_busy_phone_is_an_outcome_and_runs_no_flow(tmp_path: Path) -> None:
    flow = _flow(tmp_path)

    async def main() -> tuple[DialOutcome, DialOutcome, int]:
        async with IvrLab(flow=flow) as lab:
            busy, call = await lab.answer_call("0888555123", answer=486, at=AT)
            await call.finish()
            declined, call = await lab.answer_call("0888555124", answer=603, at=AT)
            await call.finish()
            server = lab.server
            assert server is not None
            return busy, declined, server.calls_total

    busy, declined, calls = run_virtual(main)
    assert (busy.result, busy.status) == ("busy", 486)
    assert (declined.result, declined.status) == ("rejected", 603)
    assert calls == 0


def test_a_phone_that_never_answers_is_cancelled_after_the_answer_timeout(tmp_path: Path) -> None:
    flow = _flow(tmp_path)

    async def main() -> tuple[DialOutcome, float, float]:
        async with IvrLab(flow=flow) as lab:
            server = lab.server
            assert server is not None
            loop_time = server.loop.time
            started = loop_time()
            # Nobody listens at this address: the INVITE is retransmitted until the answer timeout cancels it.
            placed = server.place_call("sip:0888555125@127.0.0.9:5099", flow=lab.route("x"), answer_timeout=10.0)
            outcome = await placed.outcome
            waited = loop_time() - started
            # No 1xx came, so there is nothing to CANCEL yet (RFC 3261 9.1): the INVITE transaction times out
            # (timer B, 64*T1) and only then is the leg's RTP port free again.
            while server.ports.in_use and loop_time() - started < 40:  # noqa: ASYNC110 (a pool has no event)
                await asyncio.sleep(0.5)
            return outcome, waited, loop_time() - started

    outcome, waited, freed = run_virtual(main)
    assert outcome.result == "no_answer" and outcome.status == 408
    assert 10.0 <= waited < 10.5
    assert freed < 33.0


def test_each_final_status_of_a_placed_call_has_one_outcome() -> None:
    assert [dial_result(s) for s in (486, 600)] == ["busy", "busy"]
    assert [dial_result(s) for s in (408, 480, 487)] == ["no_answer"] * 3
    assert [dial_result(s) for s in (403, 603, 607, 608)] == ["rejected"] * 4
    assert [dial_result(s) for s in (None, 404, 484, 500, 503, 488)] == ["failed"] * 6
