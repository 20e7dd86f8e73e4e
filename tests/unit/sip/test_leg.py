"""The call leg's state machine (ivr.sip.leg): the transition table, the one function that applies it, and the
states a leg goes through in the endpoint (literal SIP, virtual clock)."""

from __future__ import annotations

import pytest

from ivr.sip.endpoint import CallEnded, EndReason, IncomingCall, Peer
from ivr.sip.leg import LEG_TRANSITIONS, Leg, LegEvent, LegState, LegStateError, next_leg_state
from ivr.sip.message import Request, Response, parse_message
from tests.unit.sip.test_endpoint import QUEUE, SDP, Harness, answered_call, in_dialog, invite, place_call, reply

S = LegState
E = LegEvent

# Written out again here, not read from the module: a move added to or dropped from the table must show up as a diff
# in this test as well.
LEGAL = {
    (S.INCOMING, E.ANSWER_SENT): S.ANSWERED,
    (S.INCOMING, E.ANSWER_RECEIVED): S.CONFIRMED,
    (S.INCOMING, E.NOT_ANSWERED): S.ENDED,
    (S.ANSWERED, E.ACK_RECEIVED): S.CONFIRMED,
    (S.ANSWERED, E.BYE_SENT): S.ENDING,
    (S.ANSWERED, E.BYE_RECEIVED): S.ENDED,
    (S.CONFIRMED, E.BYE_SENT): S.ENDING,
    (S.CONFIRMED, E.BYE_RECEIVED): S.ENDED,
    (S.ENDING, E.BYE_RECEIVED): S.ENDED,
    (S.ENDING, E.BYE_DONE): S.ENDED,
    (S.ENDED, E.BYE_DONE): S.ENDED,
}
ILLEGAL = [(state, event) for state in LegState for event in LegEvent if (state, event) not in LEGAL]


def test_the_table_holds_exactly_the_legal_moves() -> None:
    assert dict(LEG_TRANSITIONS) == LEGAL


@pytest.mark.parametrize(("state", "event"), list(LEGAL), ids=lambda x: x.name)
def test_each_legal_move(state: LegState, event: LegEvent) -> None:
    assert next_leg_state(state, event) is LEGAL[state, event]


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=lambda x: x.name)
def test_every_other_move_is_refused_naming_the_state_and_the_event(state: LegState, event: LegEvent) -> None:
    with pytest.raises(LegStateError) as info:
        next_leg_state(state, event)
    assert info.value.reason == f"a leg in state {state.value!r} cannot take {event.name} ({event.value})"
    assert info.value.status == 500  # a bug of the endpoint, not of the peer


def test_nothing_leaves_ended() -> None:
    assert {after for (state, _event), after in LEGAL.items() if state is S.ENDED} == {S.ENDED}


def _leg() -> Leg:
    request = parse_message(invite())
    assert isinstance(request, Request)
    return Leg(invite=request, peer=Peer("127.0.0.1", 5070), local_tag="ours")


def test_advance_moves_the_leg_and_returns_the_state_left() -> None:
    leg = _leg()
    assert leg.state is S.INCOMING
    assert leg.advance(E.ANSWER_SENT) is S.INCOMING
    assert leg.state is S.ANSWERED
    assert leg.advance(E.ACK_RECEIVED) is S.ANSWERED
    assert leg.state is S.CONFIRMED


def test_an_illegal_advance_raises_and_leaves_the_leg_as_it_was() -> None:
    leg = _leg()
    leg.advance(E.ANSWER_SENT)
    with pytest.raises(LegStateError, match=r"state 'answered' cannot take ANSWER_RECEIVED"):
        leg.advance(E.ANSWER_RECEIVED)
    assert leg.state is S.ANSWERED


# ---- the states a leg goes through in the endpoint ----------------------------------------------------------------


def _bye_ok(h: Harness, peer: Peer | None = None) -> None:
    """Answer 200 to the one BYE the endpoint sent."""
    (bye,) = [m for m in h.take() if isinstance(m, Request) and m.method == "BYE"]
    if peer is None:
        h.feed(Response(200, headers=bye.headers.copy()).to_bytes())
    else:
        h.feed(Response(200, headers=bye.headers.copy()).to_bytes(), peer=peer)


def test_uas_answered_acked_hung_up_and_bye_answered() -> None:
    h = Harness()
    h.feed(invite())
    leg: Leg = h.event(IncomingCall).leg  # type: ignore[attr-defined]
    assert leg.state is S.INCOMING
    h.ep.answer(leg, b"v=0\r\n")
    h.pump()
    assert leg.state is S.ANSWERED
    tag = leg.local_tag
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    assert leg.state is S.CONFIRMED
    h.take()
    h.ep.hangup(leg)
    h.pump()
    assert leg.state is S.ENDING
    _bye_ok(h)
    assert leg.state is S.ENDED


def test_uas_hangup_before_the_ack_stays_answered_then_the_ack_sends_the_bye() -> None:
    h = Harness()
    leg, tag = answered_call(h)
    h.ep.hangup(leg, reason=EndReason.SHUTDOWN)
    h.pump()
    assert leg.state is S.ANSWERED and leg.bye_pending
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    assert leg.state is S.ENDING
    assert h.event(CallEnded).reason is EndReason.SHUTDOWN  # type: ignore[attr-defined]


def test_uas_without_ack_sends_bye_from_answered_and_ends_when_the_bye_times_out() -> None:
    h = Harness()
    leg, _tag = answered_call(h)
    h.advance(33)  # timer L
    assert leg.state is S.ENDING
    h.advance(40)  # timer F of the unanswered BYE
    assert leg.state is S.ENDED


@pytest.mark.parametrize("acked", [False, True])
def test_uas_remote_bye_ends_the_leg(acked: bool) -> None:
    h = Harness()
    leg, tag = answered_call(h)
    if acked:
        h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    h.feed(in_dialog("BYE", tag, 2, "z9hG4bK-bye"))
    assert leg.state is S.ENDED
    assert h.event(CallEnded).reason is EndReason.REMOTE_BYE  # type: ignore[attr-defined]


def test_crossing_byes_end_the_leg_once() -> None:
    h = Harness()
    leg, tag = answered_call(h)
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    h.ep.hangup(leg)
    h.pump()
    assert leg.state is S.ENDING
    (our_bye,) = [m for m in h.take() if isinstance(m, Request) and m.method == "BYE"]
    h.feed(in_dialog("BYE", tag, 2, "z9hG4bK-bye"))
    assert leg.state is S.ENDED
    h.feed(Response(200, headers=our_bye.headers.copy()).to_bytes())  # BYE_DONE in ENDED
    assert leg.state is S.ENDED
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == [EndReason.LOCAL_BYE]


def test_uas_rejected_ends_unanswered() -> None:
    h = Harness()
    h.feed(invite())
    leg: Leg = h.event(IncomingCall).leg  # type: ignore[attr-defined]
    h.ep.reject(leg, 486)
    h.pump()
    assert leg.state is S.ENDED and leg.end_reason is EndReason.REJECTED


def test_uac_answered_then_remote_bye() -> None:
    h = Harness()
    leg, sent = place_call(h)
    assert leg.state is S.INCOMING
    h.feed(reply(sent, 180), peer=QUEUE)
    assert leg.state is S.INCOMING
    h.feed(reply(sent, 200, body=SDP), peer=QUEUE)
    assert leg.state is S.CONFIRMED
    h.ep.hangup(leg)
    h.pump()
    assert leg.state is S.ENDING
    _bye_ok(h, QUEUE)
    assert leg.state is S.ENDED


@pytest.mark.parametrize("status", [486, 487])
def test_uac_final_failure_ends_unanswered(status: int) -> None:
    h = Harness()
    leg, sent = place_call(h)
    h.feed(reply(sent, status), peer=QUEUE)
    assert leg.state is S.ENDED


def test_uac_2xx_racing_our_cancel_is_confirmed_then_byed() -> None:
    h = Harness()
    leg, sent = place_call(h)
    h.feed(reply(sent, 180), peer=QUEUE)
    h.ep.cancel(leg)
    h.pump()
    h.take()
    h.feed(reply(sent, 200, body=SDP), peer=QUEUE)
    assert leg.state is S.ENDING
    _bye_ok(h, QUEUE)
    assert leg.state is S.ENDED
