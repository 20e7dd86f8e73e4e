"""RFC 4028 session timers in the sans-I/O endpoint: literal SIP in, bytes and events out, on a fake clock.

The INVITEs are shaped after RFC 4028's own: ``Supported: timer`` with ``Session-Expires`` (with or without a
``refresher``), one below the UAS's ``Min-SE`` (8.1: 422), one from a UAC without timer support."""

from __future__ import annotations

import pytest

from ivr.sip.endpoint import (
    CallAnswered,
    CallEnded,
    EndpointConfig,
    EndReason,
    IncomingCall,
    Leg,
    ReInvite,
    SipEndpoint,
)
from ivr.sip.message import Request, Response, parse_message
from ivr.sip.session_timer import SessionExpires, SessionTimer, uas_decision
from tests.unit.sip.test_endpoint import QUEUE, SDP, Harness, in_dialog, invite

ANSWER_SDP = b"v=0\r\no=ivr 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n"


class TimerHarness(Harness):
    def __init__(self, session_expires: int = 1800, min_se: int = 90) -> None:
        super().__init__()
        self.ep = SipEndpoint(
            EndpointConfig(host="127.0.0.1", port=5060, session_expires=session_expires, min_se=min_se)
        )


def timer_invite(headers: str) -> bytes:
    return invite(extra=headers.replace("\n", "\r\n"))


def answer(h: TimerHarness, headers: str) -> tuple[Leg, Response]:
    """The caller's INVITE with ``headers``, answered 200 by us and ACKed at t=0."""
    h.feed(timer_invite(headers))
    leg = h.event(IncomingCall).leg  # type: ignore[attr-defined]
    h.ep.answer(leg, ANSWER_SDP)
    h.pump()
    ok = next(m for m in h.take() if isinstance(m, Response) and m.status == 200)
    h.feed(in_dialog("ACK", ok.to.tag or "", 1, "z9hG4bK-ack"))
    h.take()
    return leg, ok


def requests(h: TimerHarness, method: str) -> list[tuple[float, Request]]:
    return [(t, m) for t, m, _p in h.sent if isinstance(m, Request) and m.method == method]


def first_at(h: TimerHarness, method: str) -> float | None:
    """When the first ``method`` went out (UDP retransmissions of it follow)."""
    sent = requests(h, method)
    return sent[0][0] if sent else None


def ended(h: TimerHarness) -> list[CallEnded]:
    return [e for e in h.events if isinstance(e, CallEnded)]


# ---- the rules (pure) ----


def test_session_expires_parses_with_and_without_refresher() -> None:
    assert SessionExpires.parse("4000;refresher=uac") == SessionExpires(4000, "uac")
    assert SessionExpires.parse(" 1800 ") == SessionExpires(1800, None)
    assert str(SessionExpires(90, "uas")) == "90;refresher=uas"


def test_refresh_at_half_and_expiry_at_interval_less_min_32_or_a_third() -> None:
    assert SessionTimer(1800, "uas", True).refresh_after == 900
    assert SessionTimer(1800, "uac", False).expire_after == 1768  # 1800 - 32
    assert SessionTimer(90, "uac", False).expire_after == 60  # 90 - 30


# ---- UAS ----


def test_session_expires_below_min_se_gets_422_with_min_se() -> None:
    h = TimerHarness(min_se=120)
    h.feed(timer_invite("Supported: timer\nSession-Expires: 100\n"))
    final = [m for m in h.take() if isinstance(m, Response) and m.status >= 200]
    assert [m.status for m in final] == [422]
    assert final[0].headers.get("Min-SE") == "120"
    assert not any(isinstance(e, IncomingCall) for e in h.events)


def test_timers_off_accept_any_session_expires_and_add_nothing() -> None:
    h = Harness()  # session_expires 0: no timer support at all
    h.feed(timer_invite("Supported: timer\nSession-Expires: 60\n"))
    leg = h.event(IncomingCall).leg  # type: ignore[attr-defined]
    h.ep.answer(leg, ANSWER_SDP)
    h.pump()
    ok = next(m for m in h.take() if isinstance(m, Response) and m.status == 200)
    assert ok.headers.get("Session-Expires") is None and ok.headers.get("Require") is None


def test_200_carries_session_expires_with_the_uacs_refresher_and_require_timer() -> None:
    h = TimerHarness()
    _leg, ok = answer(h, "Supported: timer\nSession-Expires: 1800;refresher=uas\n")
    assert ok.headers.get("Session-Expires") == "1800;refresher=uas"
    assert ok.headers.get("Require") == "timer"
    assert "timer" in (ok.headers.get("Supported") or "")
    assert "UPDATE" in (ok.headers.get("Allow") or "")


def test_no_refresher_asked_the_uac_refreshes() -> None:
    """RFC 4028 9: the UAS picks when the request names no refresher; we pick the UAC."""
    h = TimerHarness()
    _leg, ok = answer(h, "Supported: timer\nSession-Expires: 4000\n")
    assert ok.headers.get("Session-Expires") == "1800;refresher=uac"  # lowered to ours (9), not below Min-SE


def test_supported_timer_without_session_expires_gets_our_interval_refreshed_by_us() -> None:
    h = TimerHarness(session_expires=600)
    _leg, ok = answer(h, "Supported: timer\n")
    assert ok.headers.get("Session-Expires") == "600;refresher=uas"
    assert ok.headers.get("Require") == "timer"


def test_a_uac_without_timer_support_gets_no_session_timer() -> None:
    h = TimerHarness()
    leg, ok = answer(h, "")
    assert ok.headers.get("Session-Expires") is None and ok.headers.get("Require") is None
    assert leg.session_timer is None
    h.advance(100_000)
    assert not requests(h, "INVITE") and not requests(h, "BYE")


def test_a_proxy_inserted_session_expires_makes_the_uas_refresh_without_require() -> None:
    """RFC 4028 9: the UAC does not support timers (a proxy put Session-Expires in): refresher=uas, no Require."""
    decision = uas_decision(_req("Session-Expires: 1800\n"), session_expires=1800, min_se=90)
    assert decision.headers == (("Session-Expires", "1800;refresher=uas"),)
    assert decision.timer == SessionTimer(1800, "uas", True)


def _req(headers: str) -> Request:
    msg = parse_message(timer_invite(headers))
    assert isinstance(msg, Request)
    return msg


def test_the_refresher_sends_a_reinvite_with_the_same_sdp_at_half_the_interval() -> None:
    h = TimerHarness()
    leg, _ok = answer(h, "Supported: timer\nSession-Expires: 1800;refresher=uas\n")
    h.advance(899.9)
    assert not requests(h, "INVITE")
    h.advance(0.2)
    ((at, reinvite),) = requests(h, "INVITE")
    assert at == 900.0
    assert reinvite.body == ANSWER_SDP  # RFC 3264 8: the same session description
    assert reinvite.headers.get("Session-Expires") == "1800;refresher=uac"  # we send it: we are its UAC
    assert "timer" in (reinvite.headers.get("Supported") or "")
    assert reinvite.to.tag == "caller-tag" and reinvite.cseq.number == 1  # in the dialog, our first request
    # The caller answers 200 with the timer: we ACK, and the next refresh is at half the interval from now.
    h.sent.clear()
    h.now = 901.0
    h.feed(_response_to(reinvite, 200, "Session-Expires: 1800;refresher=uac\nRequire: timer\n"))
    (ack,) = [m for m in h.take() if isinstance(m, Request)]
    assert ack.method == "ACK" and ack.cseq.number == 1
    h.advance(900.5)
    assert first_at(h, "INVITE") == 1801.0
    assert leg.state.value == "confirmed" and not ended(h)


def test_the_refreshers_reinvite_unanswered_ends_the_call_with_bye_session_expired() -> None:
    h = TimerHarness()
    answer(h, "Supported: timer\nSession-Expires: 1800;refresher=uas\n")
    h.advance(900.0 + 32.0)  # the re-INVITE at 900, retransmitted, timer B (64*T1 = 32 s)
    byes = requests(h, "BYE")
    assert [t for t, _m in byes] == [932.0]
    (end,) = ended(h)
    assert end.reason is EndReason.SESSION_EXPIRED


@pytest.mark.parametrize("status", [408, 481])
def test_a_refresh_answered_408_or_481_ends_the_call(status: int) -> None:
    h = TimerHarness()
    answer(h, "Supported: timer\nSession-Expires: 1800;refresher=uas\n")
    h.advance(900.0)
    ((_at, reinvite),) = requests(h, "INVITE")
    h.feed(_response_to(reinvite, status, ""))
    assert requests(h, "BYE")
    assert ended(h)[0].reason is EndReason.SESSION_EXPIRED


def test_no_refresh_from_the_uac_refresher_ends_the_call_at_interval_less_32() -> None:
    h = TimerHarness()
    answer(h, "Supported: timer\nSession-Expires: 1800;refresher=uac\n")
    h.advance(1767.9)
    assert not requests(h, "BYE") and not ended(h)
    h.advance(0.2)
    assert first_at(h, "BYE") == 1768.0
    assert not requests(h, "INVITE")  # we are not the refresher
    assert ended(h)[0].reason is EndReason.SESSION_EXPIRED


def test_short_interval_expires_at_two_thirds() -> None:
    h = TimerHarness()
    answer(h, "Supported: timer\nSession-Expires: 90;refresher=uac\n")
    h.advance(61.0)
    assert first_at(h, "BYE") == 60.0


def test_an_incoming_reinvite_refresh_restarts_the_timer_and_its_200_carries_session_expires() -> None:
    h = TimerHarness()
    leg, ok = answer(h, "Supported: timer\nSession-Expires: 1800;refresher=uac\n")
    tag = ok.to.tag or ""
    h.now = 1000.0
    h.feed(_with_headers(in_dialog("INVITE", tag, 2, "z9hG4bK-re1", body=SDP), "Supported: timer\r\n"
                         "Session-Expires: 1800;refresher=uac\r\n"))  # fmt: skip
    reinvite = h.event(ReInvite)
    h.ep.respond(leg, 200, request=reinvite.request, body=ANSWER_SDP, content_type="application/sdp")  # type: ignore[attr-defined]
    h.pump()
    ok2 = next(m for m in h.take() if isinstance(m, Response) and m.status == 200)
    assert ok2.headers.get("Session-Expires") == "1800;refresher=uac"
    assert ok2.headers.get("Require") == "timer"
    h.feed(in_dialog("ACK", tag, 2, "z9hG4bK-ack2"))
    h.advance(1767.0)  # past the first expiry (1768): restarted at 1000, it is due at 2768
    assert not requests(h, "BYE")
    h.advance(1.5)
    assert first_at(h, "BYE") == 2768.0


def test_an_update_without_body_is_a_refresh_answered_by_the_endpoint() -> None:
    h = TimerHarness()
    _leg, ok = answer(h, "Supported: timer\nSession-Expires: 1800;refresher=uac\n")
    tag = ok.to.tag or ""
    h.now = 1500.0
    h.feed(_with_headers(in_dialog("UPDATE", tag, 2, "z9hG4bK-up1"), "Session-Expires: 1800;refresher=uac\r\n"
                         "Supported: timer\r\n"))  # fmt: skip
    ok2 = next(m for m in h.take() if isinstance(m, Response))
    assert ok2.status == 200 and ok2.headers.get("Session-Expires") == "1800;refresher=uac"
    h.advance(1767.0)
    assert not requests(h, "BYE")
    h.advance(1.5)
    assert first_at(h, "BYE") == 3268.0


def test_a_refresh_below_min_se_is_422_and_does_not_restart() -> None:
    h = TimerHarness()
    _leg, ok = answer(h, "Supported: timer\nSession-Expires: 1800;refresher=uac\n")
    h.now = 100.0
    h.feed(_with_headers(in_dialog("INVITE", ok.to.tag or "", 2, "z9hG4bK-re2", body=SDP),
                         "Supported: timer\r\nSession-Expires: 30\r\n"))  # fmt: skip
    assert [m.status for m in h.take() if isinstance(m, Response) and m.status >= 200] == [422]
    h.advance(1700.0)
    assert first_at(h, "BYE") == 1768.0


def test_a_reinvite_while_our_refresh_is_pending_gets_491() -> None:
    h = TimerHarness()
    _leg, ok = answer(h, "Supported: timer\nSession-Expires: 1800;refresher=uas\n")
    h.advance(900.0)
    h.sent.clear()
    h.feed(in_dialog("INVITE", ok.to.tag or "", 2, "z9hG4bK-glare", body=SDP))
    assert [m.status for m in h.take() if isinstance(m, Response) and m.status >= 200] == [491]


def test_the_session_timer_stops_when_the_call_ends() -> None:
    h = TimerHarness()
    leg, ok = answer(h, "Supported: timer\nSession-Expires: 1800;refresher=uac\n")
    h.feed(in_dialog("BYE", ok.to.tag or "", 2, "z9hG4bK-bye"))
    assert ended(h)[0].reason is EndReason.REMOTE_BYE
    h.take()
    h.advance(10_000)
    assert not requests(h, "BYE") and leg.timer_owner not in h.ep._session_legs


# ---- UAC ----


def _place(h: TimerHarness) -> tuple[Leg, Request]:
    leg = h.ep.call(request_uri="sip:q@127.0.0.1:5080", from_uri="sip:ivr@127.0.0.1:5060",
                    to_uri="sip:q@127.0.0.1:5080", peer=QUEUE, sdp=SDP)  # fmt: skip
    h.pump()
    ((_t, inv),) = requests(h, "INVITE")
    h.sent.clear()
    return leg, inv


def test_our_invite_offers_a_session_timer() -> None:
    h = TimerHarness()
    _leg, inv = _place(h)
    assert inv.headers.get("Supported") == "timer"
    assert inv.headers.get("Session-Expires") == "1800;refresher=uac"
    assert inv.headers.get("Min-SE") == "90"


def test_as_uac_we_refresh_when_the_2xx_names_us() -> None:
    h = TimerHarness()
    leg, inv = _place(h)
    h.feed(_response_to(inv, 200, "Session-Expires: 1800;refresher=uac\nRequire: timer\n", to_tag="callee",
                        body=ANSWER_SDP))  # fmt: skip
    assert isinstance(h.event(CallAnswered), CallAnswered)
    h.advance(900.0)
    ((at, reinvite),) = requests(h, "INVITE")
    assert at == 900.0 and reinvite.body == SDP and reinvite.cseq.number == 2
    assert leg.session_timer == SessionTimer(1800, "uac", True)


def test_as_uac_we_wait_for_the_uas_refresh_then_bye() -> None:
    h = TimerHarness()
    _leg, inv = _place(h)
    h.feed(_response_to(inv, 200, "Session-Expires: 1800;refresher=uas\n", to_tag="callee", body=ANSWER_SDP))
    h.advance(1800.0)
    assert not requests(h, "INVITE")
    assert first_at(h, "BYE") == 1768.0
    assert ended(h)[0].reason is EndReason.SESSION_EXPIRED


def test_as_uac_a_2xx_without_session_expires_means_no_timer() -> None:
    h = TimerHarness()
    leg, inv = _place(h)
    h.feed(_response_to(inv, 200, "", to_tag="callee", body=ANSWER_SDP))
    h.advance(10_000.0)
    assert not requests(h, "INVITE") and not requests(h, "BYE") and leg.session_timer is None


def test_as_uac_a_422_is_retried_with_the_min_se_asked() -> None:
    """RFC 4028 7.4 (its example: 422 with Min-SE: 3600, the INVITE again with Session-Expires: 3600)."""
    h = TimerHarness()
    leg, inv = _place(h)
    h.feed(_response_to(inv, 422, "Min-SE: 3600\n", to_tag="callee"))
    invites = [m for m in h.take() if isinstance(m, Request) and m.method == "INVITE"]
    assert len(invites) == 1
    again = invites[0]
    assert again.cseq.number == 2 and again.call_id == inv.call_id
    assert again.headers.get("Session-Expires") == "3600;refresher=uac"
    assert again.top_via.branch != inv.top_via.branch
    assert leg.state.value == "incoming" and not ended(h)
    h.feed(_response_to(again, 200, "Session-Expires: 3600;refresher=uas\n", to_tag="callee", body=ANSWER_SDP))
    assert isinstance(h.event(CallAnswered), CallAnswered)


# ---- helpers ----


def _with_headers(message: bytes, headers: str) -> bytes:
    head, _, body = message.partition(b"\r\n\r\n")
    return head + b"\r\n" + headers.encode().rstrip(b"\r\n") + b"\r\n\r\n" + body


def _response_to(request: Request, status: int, headers: str, *, to_tag: str | None = None, body: bytes = b"") -> bytes:
    """The peer's response to a request we sent: its Via, From, To (with ``to_tag`` when it has none), Call-ID, CSeq."""
    to = request.headers.get("To") or ""
    if to_tag is not None and ";tag=" not in to:
        to += f";tag={to_tag}"
    lines = [
        f"SIP/2.0 {status} Whatever",
        *(f"Via: {v}" for v in request.headers.values("Via")),
        f"From: {request.headers.get('From')}",
        f"To: {to}",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.cseq}",
        "Contact: <sip:peer@127.0.0.1:5080>",
        *[line for line in headers.splitlines() if line],
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_settings_default_on_and_refuse_an_interval_below_min_se() -> None:
    from pydantic import ValidationError

    from ivr.config import SipSettings

    sip = SipSettings()
    assert (sip.session_expires, sip.min_se) == (1800, 90)
    assert SipSettings(session_expires=0).session_expires == 0  # off
    with pytest.raises(ValidationError, match="below min_se"):
        SipSettings(session_expires=100, min_se=120)
    with pytest.raises(ValidationError):
        SipSettings(min_se=60)  # RFC 4028 4: never below 90
