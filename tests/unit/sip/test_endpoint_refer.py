"""Blind transfer in the endpoint, sans-I/O, both roles (RFC 3515 REFER, RFC 3892 Referred-By, RFC 6665 NOTIFY):
the daemon as transferor (REFER in the caller's dialog, 202, NOTIFY sipfrag answered 200, the subscription ended)
and a phone as transferee (ReferReceived, 202, NOTIFY 100 Trying ... 200 OK terminated). Literal SIP text."""

from __future__ import annotations

import pytest

from ivr.sip.endpoint import (
    CallAnswered,
    EndReason,
    Leg,
    ReferReceived,
    TransferProgress,
)
from ivr.sip.errors import SipError
from ivr.sip.message import Request, Response
from ivr.sip.refer import parse_refer_to
from tests.unit.sip.test_endpoint import QUEUE, SDP, Harness, answered_call, in_dialog, place_call, reply

REFER_TO = "<sip:billing@10.0.0.5:5090?X-IVR-Account=42&User-to-User=3432%3Bencoding%3Dhex>"
REFERRED_BY = "<sip:ivr@127.0.0.1:5060>"


def confirmed_call(h: Harness) -> tuple[Leg, str]:
    leg, tag = answered_call(h)
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    h.take()
    return leg, tag


def send_refer(h: Harness) -> tuple[Leg, str, Request]:
    leg, tag = confirmed_call(h)
    h.ep.refer(leg, REFER_TO, referred_by=REFERRED_BY)
    h.pump()
    (refer,) = h.take()
    assert isinstance(refer, Request)
    return leg, tag, refer


def answer(request: Request, status: int) -> bytes:
    return Response(status, headers=request.headers.copy()).to_bytes()


def notify(tag: str, cseq: int, branch: str, frag: str, state: str, *, ctype: str = "message/sipfrag") -> bytes:
    body = frag.encode()
    return (
        f"NOTIFY sip:ivr@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n"
        f"Max-Forwards: 70\r\n"
        f'From: "Alice" <sip:alice@127.0.0.1:5070>;tag=caller-tag\r\n'
        f"To: <sip:service@127.0.0.1:5060>;tag={tag}\r\n"
        f"Call-ID: call-1\r\n"
        f"CSeq: {cseq} NOTIFY\r\n"
        f"Contact: <sip:alice@127.0.0.1:5070>\r\n"
        f"Event: refer\r\n"
        f"Subscription-State: {state}\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def progress(h: Harness) -> list[tuple[int, str, bool]]:
    return [(e.status, e.source, e.final) for e in h.events if isinstance(e, TransferProgress)]


# ---- the daemon as transferor ----------------------------------------------------------------------------------


def test_refer_goes_in_the_callers_dialog_with_refer_to_referred_by_and_contact() -> None:
    h = Harness()
    _leg, tag, refer = send_refer(h)
    assert refer.method == "REFER" and refer.uri == "sip:alice@127.0.0.1:5070"  # the caller's Contact
    assert refer.from_.tag == tag and refer.to.tag == "caller-tag" and refer.call_id == "call-1"
    assert str(refer.cseq) == "1 REFER"  # the UAS's first request in the dialog
    assert refer.headers.get("Refer-To") == REFER_TO
    assert refer.headers.get("Referred-By") == REFERRED_BY
    assert refer.headers.get("Contact") == "<sip:ivr@127.0.0.1:5060>"


def test_202_then_sipfrag_notifies_are_answered_200_and_the_2xx_sipfrag_ends_the_transfer() -> None:
    h = Harness()
    leg, tag, refer = send_refer(h)
    h.feed(answer(refer, 202))
    h.feed(notify(tag, 2, "z9hG4bK-n1", "SIP/2.0 100 Trying\r\n", "active;expires=60"))
    h.feed(notify(tag, 3, "z9hG4bK-n2", "SIP/2.0 180 Ringing\r\n", "active;expires=59"))
    h.feed(notify(tag, 4, "z9hG4bK-n3", "SIP/2.0 200 OK\r\n", "terminated;reason=noresource"))
    assert h.statuses() == [200, 200, 200]
    assert progress(h) == [(202, "refer", False), (100, "notify", False), (180, "notify", False), (200, "notify", True)]
    assert leg.transfer is None  # the implicit subscription is over
    h.feed(notify(tag, 5, "z9hG4bK-n4", "SIP/2.0 200 OK\r\n", "terminated"))
    assert h.statuses() == [481]  # RFC 6665: nothing left to notify about


def test_notify_that_overtakes_the_202_is_taken_in_order_of_arrival() -> None:
    h = Harness()
    _leg, tag, refer = send_refer(h)
    h.feed(notify(tag, 2, "z9hG4bK-n1", "SIP/2.0 100 Trying\r\n", "active;expires=60"))
    h.feed(answer(refer, 202))
    assert progress(h) == [(100, "notify", False), (202, "refer", False)]


def test_failed_call_in_sipfrag_is_a_final_failure_with_its_reason() -> None:
    h = Harness()
    _leg, tag, refer = send_refer(h)
    h.feed(answer(refer, 202))
    h.feed(notify(tag, 2, "z9hG4bK-n1", "SIP/2.0 486 Busy Here\r\n", "terminated;reason=noresource"))
    (last,) = [e for e in h.events if isinstance(e, TransferProgress) and e.final]
    assert (last.status, last.reason, last.transfer.result) == (486, "Busy Here", 486)


@pytest.mark.parametrize("status", [405, 501, 603])
def test_refer_refused_by_the_caller_ends_the_transfer_at_once(status: int) -> None:
    h = Harness()
    leg, _tag, refer = send_refer(h)
    h.feed(answer(refer, status))
    assert progress(h) == [(status, "refer", True)]
    assert leg.transfer is None
    h.ep.refer(leg, REFER_TO)  # another attempt (or the bridge's INVITE) may follow
    h.pump()
    assert [m.method for m in h.take() if isinstance(m, Request)] == ["REFER"]


def test_refer_without_any_answer_times_out_as_408_after_64_t1() -> None:
    h = Harness()
    _leg, _tag, _refer = send_refer(h)
    h.advance(31.9)
    assert progress(h) == []
    h.advance(0.2)
    assert progress(h) == [(408, "timeout", True)]


def test_subscription_terminated_without_a_final_sipfrag_is_a_failure() -> None:
    h = Harness()
    _leg, tag, refer = send_refer(h)
    h.feed(answer(refer, 202))
    h.feed(notify(tag, 2, "z9hG4bK-n1", "SIP/2.0 100 Trying\r\n", "terminated;reason=timeout"))
    assert progress(h)[-1] == (487, "notify", True)


def test_bad_notifies_are_refused_and_change_nothing() -> None:
    h = Harness()
    leg, tag, refer = send_refer(h)
    h.feed(answer(refer, 202))
    h.feed(notify(tag, 2, "z9hG4bK-n1", "SIP/2.0 200 OK\r\n", "active", ctype="text/plain"))
    h.feed(notify(tag, 3, "z9hG4bK-n2", "200 OK\r\n", "active"))
    h.feed(notify(tag, 4, "z9hG4bK-n3", "SIP/2.0 200 OK\r\n", "active").replace(b"Event: refer", b"Event: dialog"))
    assert h.statuses() == [415, 400, 481]
    assert leg.transfer is not None and not leg.transfer.done


def test_notify_with_no_subscription_is_481() -> None:
    h = Harness()
    _leg, tag = confirmed_call(h)
    h.feed(notify(tag, 2, "z9hG4bK-n1", "SIP/2.0 200 OK\r\n", "terminated"))
    assert h.statuses() == [481]


def test_refer_needs_a_confirmed_dialog_and_one_transfer_at_a_time() -> None:
    h = Harness()
    leg, _tag = answered_call(h)  # no ACK yet
    with pytest.raises(SipError):
        h.ep.refer(leg, REFER_TO)
    h.feed(in_dialog("ACK", leg.local_tag, 1, "z9hG4bK-ack"))
    h.ep.refer(leg, REFER_TO)
    with pytest.raises(SipError):
        h.ep.refer(leg, REFER_TO)


# ---- a caller's own REFER to the daemon ------------------------------------------------------------------------


def caller_refer(tag: str, cseq: int = 2, refer_to: str = "<sip:premium@198.51.100.7>") -> bytes:
    return in_dialog("REFER", tag, cseq, f"z9hG4bK-r{cseq}").replace(
        b"Content-Length: 0", f"Refer-To: {refer_to}\r\nContent-Length: 0".encode()
    )


def test_a_callers_refer_to_the_daemon_is_403_with_a_reason_and_nothing_is_dialled() -> None:
    h = Harness()
    _leg, tag = confirmed_call(h)
    h.feed(caller_refer(tag))
    (resp,) = h.take()
    assert isinstance(resp, Response) and resp.status == 403
    assert "REFER" in (resp.headers.get("Warning") or "")
    assert not [e for e in h.events if isinstance(e, ReferReceived)]
    assert resp.headers.get("Allow") is None


def test_a_refer_outside_any_dialog_is_403() -> None:
    h = Harness()
    h.feed(caller_refer("x").replace(b";tag=x", b""))
    assert h.statuses() == [403]


# ---- a phone as transferee --------------------------------------------------------------------------------------


def transferee_call() -> tuple[Harness, Leg, Request]:
    h = Harness()
    h.ep.config.transferee = True
    leg, invite = place_call(h)
    h.feed(reply(invite, 200, body=SDP), peer=QUEUE)
    assert isinstance(h.event(CallAnswered), CallAnswered)
    h.take()
    return h, leg, invite


def refer_from_ivr(invite: Request, cseq: int = 1, refer_to: str = REFER_TO, extra: str = "") -> bytes:
    return (
        f"REFER sip:ivr@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-refer{cseq}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:billing@127.0.0.1:5080>;tag=callee\r\n"
        f"To: {invite.headers.get('From')}\r\n"
        f"Call-ID: {invite.call_id}\r\n"
        f"CSeq: {cseq} REFER\r\n"
        f"Contact: <sip:billing@127.0.0.1:5080>\r\n"
        f"Refer-To: {refer_to}\r\n"
        f"Referred-By: {REFERRED_BY}\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def test_transferee_hears_refer_accepts_it_and_notifies_trying_then_ok_ending_the_subscription() -> None:
    h, leg, invite = transferee_call()
    h.feed(refer_from_ivr(invite, cseq=7), peer=QUEUE)
    event = h.event(ReferReceived)
    assert isinstance(event, ReferReceived) and event.leg is leg
    assert event.refer_to == REFER_TO and event.referred_by == REFERRED_BY
    target = parse_refer_to(event.refer_to)
    assert target.uri == "sip:billing@10.0.0.5:5090"
    assert target.headers == (("X-IVR-Account", "42"), ("User-to-User", "3432;encoding=hex"))
    h.ep.accept_refer(leg, event.request)
    h.pump()
    accepted, trying = h.take()
    assert isinstance(accepted, Response) and accepted.status == 202 and str(accepted.cseq) == "7 REFER"
    assert isinstance(trying, Request) and trying.method == "NOTIFY"
    assert trying.body == b"SIP/2.0 100 Trying\r\n"
    assert trying.headers.get("Content-Type") == "message/sipfrag;version=2.0"
    assert trying.headers.get("Event") == "refer;id=7"
    assert trying.headers.get("Subscription-State") == "active;expires=60"
    assert trying.uri == "sip:billing@127.0.0.1:5080" and trying.to.tag == "callee"
    h.feed(Response(200, headers=trying.headers.copy()).to_bytes(), peer=QUEUE)
    h.ep.notify_refer(leg, event.request, 200)
    h.pump()
    (done,) = h.take()
    assert isinstance(done, Request) and done.body == b"SIP/2.0 200 OK\r\n"
    assert done.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert done.cseq.number == trying.cseq.number + 1
    with pytest.raises(SipError):
        h.ep.notify_refer(leg, event.request, 200)  # the subscription is over


def test_transferee_reports_a_failed_target_and_may_refuse_a_refer() -> None:
    h, leg, invite = transferee_call()
    h.feed(refer_from_ivr(invite, cseq=1), peer=QUEUE)
    first = h.event(ReferReceived)
    assert isinstance(first, ReferReceived)
    h.ep.accept_refer(leg, first.request)
    h.ep.notify_refer(leg, first.request, 486, "Busy Here")
    h.pump()
    _accepted, _trying, failed = h.take()
    assert isinstance(failed, Request) and failed.body == b"SIP/2.0 486 Busy Here\r\n"
    assert (failed.headers.get("Subscription-State") or "").startswith("terminated")
    h.feed(refer_from_ivr(invite, cseq=2), peer=QUEUE)
    second = h.event(ReferReceived)
    assert isinstance(second, ReferReceived)
    h.ep.reject_refer(leg, second.request, 603, "the user declined the transfer")
    h.pump()
    (declined,) = h.take()
    assert isinstance(declined, Response) and declined.status == 603
    assert "declined" in (declined.headers.get("Warning") or "")
    assert leg.end_reason is None  # refusing a transfer does not end the call


def test_transferee_refuses_refer_without_exactly_one_refer_to_as_400() -> None:
    h, _leg, invite = transferee_call()
    h.feed(refer_from_ivr(invite, cseq=1).replace(b"Refer-To: " + REFER_TO.encode() + b"\r\n", b""), peer=QUEUE)
    h.feed(refer_from_ivr(invite, cseq=2, extra="Refer-To: <sip:other@10.0.0.6>\r\n"), peer=QUEUE)
    assert h.statuses() == [400, 400]
    assert not [e for e in h.events if isinstance(e, ReferReceived)]


def test_transferee_advertises_refer_and_notify_in_allow() -> None:
    h, leg, _invite = transferee_call()
    assert "REFER" in h.ep.config.allowed_methods and "NOTIFY" in h.ep.config.allowed_methods
    h.ep.hangup(leg)
    h.pump()
    (bye,) = h.take()
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert leg.end_reason is EndReason.LOCAL_BYE
