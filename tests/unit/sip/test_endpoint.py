"""The UAS core, sans-I/O: literal SIP in, bytes / timers / call events out, timers fired on a fake clock through the
driver interface (datagrams_to_send, get_timer, handle_timer, next_event)."""

from __future__ import annotations

import re

import pytest

from ivr.sip.endpoint import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallProgress,
    DigitInfo,
    EndpointConfig,
    EndReason,
    IncomingCall,
    Leg,
    Peer,
    ReInvite,
    SipEndpoint,
)
from ivr.sip.errors import SipError
from ivr.sip.message import Request, Response, parse_message

CALLER = Peer("127.0.0.1", 5070, "udp")
SDP = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class Harness:
    """Drives a SipEndpoint as its driver does, on a fake clock: after every input, verb (then :meth:`pump`) and
    timer, the bytes it sends (with the time) and the events it raises are collected."""

    def __init__(self, accepting: bool = True) -> None:
        self.ep = SipEndpoint(EndpointConfig(host="127.0.0.1", port=5060))
        self.ep.accepting = accepting
        self.now = 0.0
        self.sent: list[tuple[float, Response | Request, Peer]] = []
        self.events: list[object] = []

    def pump(self) -> None:
        for out in self.ep.datagrams_to_send(self.now):
            try:
                msg = parse_message(out.data)
            except SipError as exc:  # e.g. a 400 that copies the request's malformed CSeq, as it must
                assert isinstance(exc.partial, Response | Request)
                msg = exc.partial
            self.sent.append((self.now, msg, out.peer))
        while (event := self.ep.next_event()) is not None:
            self.events.append(event)

    def feed(self, text: str | bytes, peer: Peer = CALLER) -> None:
        data = text if isinstance(text, bytes) else text.replace("\n", "\r\n").encode()
        self.ep.receive(data, peer, self.now)
        self.pump()

    def advance(self, seconds: float) -> None:
        """Move the clock forward, firing due timers at their deadlines."""
        end = self.now + seconds
        while (deadline := self.ep.get_timer()) is not None and deadline <= end:
            self.now = deadline
            self.ep.handle_timer(deadline)
            self.pump()
        self.now = end

    def take(self) -> list[Response | Request]:
        out = [m for _, m, _ in self.sent]
        self.sent.clear()
        return out

    def statuses(self) -> list[int]:
        return [m.status for m in self.take() if isinstance(m, Response)]

    def event(self, kind: type) -> object:
        matches = [e for e in self.events if isinstance(e, kind)]
        assert matches, f"no {kind.__name__} in {self.events}"
        return matches[-1]


def invite(
    branch: str = "z9hG4bK-1",
    cseq: int = 1,
    call_id: str = "call-1",
    body: bytes = SDP,
    extra: str = "",
    from_tag: str = "caller-tag",
    content_type: str = "application/sdp",
) -> bytes:
    head = (
        f"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n"
        f"Max-Forwards: 70\r\n"
        f'From: "Alice" <sip:alice@127.0.0.1:5070>;tag={from_tag}\r\n'
        f"To: <sip:service@127.0.0.1:5060>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} INVITE\r\n"
        f"Contact: <sip:alice@127.0.0.1:5070>\r\n"
        f"{extra}"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def in_dialog(
    method: str,
    to_tag: str,
    cseq: int,
    branch: str,
    call_id: str = "call-1",
    body: bytes = b"",
    cseq_method: str | None = None,
) -> bytes:
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} sip:service@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n"
        f"Max-Forwards: 70\r\n"
        f'From: "Alice" <sip:alice@127.0.0.1:5070>;tag=caller-tag\r\n'
        f"To: <sip:service@127.0.0.1:5060>;tag={to_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        f"Contact: <sip:alice@127.0.0.1:5070>\r\n"
        f"{ctype}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def answered_call(h: Harness) -> tuple[Leg, str]:
    h.feed(invite())
    leg = h.event(IncomingCall).leg  # type: ignore[attr-defined]
    h.ep.answer(leg, b"v=0\r\n")
    h.pump()
    ok = next(m for m in h.take() if isinstance(m, Response) and m.status == 200)
    return leg, ok.to.tag or ""


def test_invite_gets_100_trying_at_once_and_raises_incoming_call() -> None:
    h = Harness()
    h.feed(invite())
    assert h.statuses() == [100]
    leg = h.event(IncomingCall).leg  # type: ignore[attr-defined]
    assert leg.call_id == "call-1"
    assert leg.offer == SDP


def test_answer_sends_200_with_sdp_contact_and_to_tag_then_ack_confirms() -> None:
    h = Harness()
    leg, tag = answered_call(h)
    assert tag == leg.local_tag
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    assert isinstance(h.event(CallConfirmed), CallConfirmed)
    h.advance(40)
    assert h.take() == []  # the ACK stopped the 2xx retransmissions


def test_200_carries_contact_allow_and_body() -> None:
    h = Harness()
    h.feed(invite())
    leg = h.event(IncomingCall).leg  # type: ignore[attr-defined]
    h.ep.answer(leg, b"v=0\r\n")
    h.pump()
    ok = h.take()[-1]
    assert isinstance(ok, Response) and ok.status == 200
    assert ok.headers.get("Contact") == "<sip:ivr@127.0.0.1:5060>"
    assert "INVITE" in (ok.headers.get("Allow") or "")
    assert ok.content_type == "application/sdp" and ok.body == b"v=0\r\n"


def test_lost_ack_retransmits_2xx_doubling_to_t2_then_sends_bye() -> None:
    h = Harness()
    _leg, tag = answered_call(h)
    h.advance(40)
    sent = [(t, m) for t, m, _ in h.sent]
    retransmit_times = [t for t, m in sent if isinstance(m, Response) and m.status == 200]
    assert retransmit_times[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert all(t < 32.0 + 1e-9 for t in retransmit_times)
    bye_times = [t for t, m in sent if isinstance(m, Request) and m.method == "BYE"]
    byes = [m for _, m in sent if isinstance(m, Request) and m.method == "BYE"]
    assert bye_times[0] == 32.0  # timer L = 64*T1, then BYE (RFC 3261 13.3.1.4)
    assert len({b.top_via.branch for b in byes}) == 1  # one BYE transaction, retransmitted by timer E
    ended = h.event(CallEnded)
    assert ended.reason is EndReason.ACK_TIMEOUT  # type: ignore[attr-defined]
    bye = byes[0]
    assert bye.uri == "sip:alice@127.0.0.1:5070"
    assert bye.to.tag == "caller-tag" and bye.from_.tag == tag
    assert bye.call_id == "call-1"


def test_hangup_sends_bye_to_remote_target_and_200_completes_it() -> None:
    h = Harness()
    leg, tag = answered_call(h)
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    h.ep.hangup(leg)
    h.pump()
    ((_, bye, peer),) = h.sent
    h.sent.clear()
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert (peer.host, peer.port) == ("127.0.0.1", 5070)
    assert bye.cseq.number >= 1 and bye.cseq.method == "BYE"
    assert h.event(CallEnded).reason is EndReason.LOCAL_BYE  # type: ignore[attr-defined]
    ok = Response(200, headers=bye.headers.copy())
    h.feed(ok.to_bytes())
    assert not h.ep.busy
    h.advance(60)
    assert h.take() == []  # no BYE retransmissions after the 200


def test_hangup_before_ack_waits_for_the_ack() -> None:
    h = Harness()
    leg, tag = answered_call(h)
    h.ep.hangup(leg)
    h.pump()
    assert h.take() == []
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    assert [m.method for m in h.take() if isinstance(m, Request)] == ["BYE"]


def test_remote_bye_gets_200_and_ends_the_call_retransmission_absorbed() -> None:
    h = Harness()
    _leg, tag = answered_call(h)
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    h.feed(in_dialog("BYE", tag, 2, "z9hG4bK-bye"))
    assert h.statuses() == [200]
    assert h.event(CallEnded).reason is EndReason.REMOTE_BYE  # type: ignore[attr-defined]
    h.feed(in_dialog("BYE", tag, 2, "z9hG4bK-bye"))
    assert h.statuses() == [200]
    assert len([e for e in h.events if isinstance(e, CallEnded)]) == 1


def test_cancel_gets_200_and_the_invite_487() -> None:
    h = Harness()
    h.feed(invite())
    h.take()
    cancel = invite().replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
    cancel = re.sub(rb"Content-Type:.*\r\n", b"", cancel.split(b"Content-Length")[0]) + b"Content-Length: 0\r\n\r\n"
    h.feed(cancel)
    msgs = h.take()
    by_method = {(m.cseq.method, m.status) for m in msgs if isinstance(m, Response)}
    assert by_method == {("CANCEL", 200), ("INVITE", 487)}
    assert h.event(CallEnded).reason is EndReason.CANCELLED  # type: ignore[attr-defined]


def test_cancel_for_unknown_invite_is_481() -> None:
    h = Harness()
    cancel = (
        "CANCEL sip:service@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-x\n"
        "From: <sip:a@b>;tag=1\nTo: <sip:service@127.0.0.1>\nCall-ID: nope\nCSeq: 1 CANCEL\nContent-Length: 0\n\n"
    )
    h.feed(cancel)
    assert h.statuses() == [481]


def test_options_answered_with_capabilities() -> None:
    h = Harness()
    h.feed(
        "OPTIONS sip:ivr@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-o\n"
        "From: <sip:a@b>;tag=1\nTo: <sip:ivr@127.0.0.1>\nCall-ID: o1\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"
    )
    (resp,) = h.take()
    assert isinstance(resp, Response) and resp.status == 200
    assert resp.headers.get("Allow") == "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"
    assert resp.headers.get("Accept") == "application/sdp"
    assert "Supported" in resp.headers
    assert resp.to.tag


@pytest.mark.parametrize(("method", "status"), [("SUBSCRIBE", 405), ("REGISTER", 405), ("FROBNICATE", 501)])
def test_unsupported_methods_get_405_or_501_with_allow(method: str, status: int) -> None:
    h = Harness()
    h.feed(
        f"{method} sip:ivr@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-m\n"
        f"From: <sip:a@b>;tag=1\nTo: <sip:ivr@127.0.0.1>\nCall-ID: m1\nCSeq: 1 {method}\nContent-Length: 0\n\n"
    )
    (resp,) = h.take()
    assert isinstance(resp, Response) and resp.status == status
    assert resp.headers.get("Allow") == "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"


def test_in_dialog_request_for_unknown_dialog_is_481() -> None:
    h = Harness()
    h.feed(in_dialog("BYE", "no-such-tag", 2, "z9hG4bK-b"))
    assert h.statuses() == [481]


def test_out_of_order_cseq_in_dialog_is_500() -> None:
    h = Harness()
    _leg, tag = answered_call(h)
    h.feed(in_dialog("ACK", tag, 5, "z9hG4bK-ack"))  # an ACK with another CSeq does not confirm
    h.feed(in_dialog("OPTIONS", tag, 3, "z9hG4bK-o1"))
    assert h.statuses()[-1] == 200
    h.feed(in_dialog("OPTIONS", tag, 2, "z9hG4bK-o2"))
    assert h.statuses() == [500]


def test_unknown_require_gets_420_with_unsupported() -> None:
    h = Harness()
    h.feed(invite(extra="Require: 100rel\r\n"))
    msgs = h.take()
    final = msgs[-1]
    assert isinstance(final, Response) and final.status == 420
    assert final.headers.get("Unsupported") == "100rel"
    assert not [e for e in h.events if isinstance(e, IncomingCall)]


def test_non_sdp_body_gets_415_with_accept() -> None:
    h = Harness()
    h.feed(invite(body=b"hello", content_type="text/plain"))
    final = h.take()[-1]
    assert isinstance(final, Response) and final.status == 415
    assert final.headers.get("Accept") == "application/sdp"


def test_malformed_request_with_usable_headers_gets_400_with_warning() -> None:
    h = Harness()
    h.feed(invite().replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE"))
    (resp,) = h.take()
    assert isinstance(resp, Response) and resp.status == 400
    assert "CSeq" in (resp.headers.get("Warning") or "")


def test_garbage_is_dropped_silently() -> None:
    h = Harness()
    h.feed(b"\x00\x01 not sip at all")
    h.feed(b"SIP/2.0 200 OK\r\n\r\n")
    assert h.take() == [] and h.events == []


def test_unsupported_uri_scheme_is_416_and_version_is_505() -> None:
    h = Harness()
    h.feed(invite().replace(b"INVITE sip:service@127.0.0.1:5060 SIP/2.0", b"INVITE mailto:x@y.z SIP/2.0"))
    assert h.statuses()[-1] == 416
    h.feed(invite(branch="z9hG4bK-2").replace(b"SIP/2.0\r\nVia", b"SIP/7.0\r\nVia", 1))
    assert h.statuses() == [505]


def test_rport_response_goes_to_source_with_received_and_rport() -> None:
    h = Harness()
    natted = Peer("203.0.113.9", 40000, "udp")
    h.feed(invite().replace(b";branch=z9hG4bK-1", b";rport;branch=z9hG4bK-1"), peer=natted)
    ((_, resp, peer),) = h.sent
    assert (peer.host, peer.port) == ("203.0.113.9", 40000)
    via = resp.top_via
    assert via.params["rport"] == "40000" and via.params["received"] == "203.0.113.9"


def test_merged_request_is_482() -> None:
    h = Harness()
    h.feed(invite(branch="z9hG4bK-a"))
    h.take()
    h.feed(invite(branch="z9hG4bK-b"))
    assert h.statuses() == [100, 482]


def test_draining_endpoint_answers_invite_and_options_503() -> None:
    h = Harness(accepting=False)
    h.feed(invite())
    final = h.take()[-1]
    assert isinstance(final, Response) and final.status == 503 and final.headers.get("Retry-After")
    h.feed(
        "OPTIONS sip:ivr@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-o\n"
        "From: <sip:a@b>;tag=1\nTo: <sip:ivr@127.0.0.1>\nCall-ID: o1\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"
    )
    assert h.statuses() == [503]


def test_reinvite_raises_event_and_is_answered() -> None:
    h = Harness()
    leg, tag = answered_call(h)
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    hold = SDP.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 0.0.0.0")
    h.feed(in_dialog("INVITE", tag, 2, "z9hG4bK-re", body=hold))
    event = h.event(ReInvite)
    assert event.request.body == hold  # type: ignore[attr-defined]
    assert h.statuses() == [100]
    request = event.request  # type: ignore[attr-defined]
    h.ep.respond(leg, 200, request=request, body=b"v=0\r\n", content_type="application/sdp")
    h.pump()
    assert h.statuses() == [200]
    h.feed(in_dialog("ACK", tag, 2, "z9hG4bK-ack2"))
    h.advance(40)
    assert h.take() == []


def test_reject_sends_final_and_absorbs_ack() -> None:
    h = Harness()
    h.feed(invite())
    leg = h.event(IncomingCall).leg  # type: ignore[attr-defined]
    h.take()
    h.ep.reject(leg, 488, "no common codec")
    h.pump()
    (resp,) = h.take()
    assert (
        isinstance(resp, Response) and resp.status == 488 and "no common codec" in (resp.headers.get("Warning") or "")
    )
    ack = in_dialog("ACK", resp.to.tag or "", 1, "z9hG4bK-1", cseq_method="ACK")
    h.feed(ack)
    h.advance(40)
    assert h.take() == []  # the ACK stopped the 488 retransmissions


def test_shutdown_hangs_up_every_call() -> None:
    h = Harness()
    _leg, tag = answered_call(h)
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    h.feed(invite(branch="z9hG4bK-2", call_id="call-2", from_tag="t2"))
    h.take()
    h.ep.shutdown()
    h.pump()
    msgs = h.take()
    assert [m.method for m in msgs if isinstance(m, Request)] == ["BYE"]
    assert [m.status for m in msgs if isinstance(m, Response)] == [480]
    assert {e.reason for e in h.events if isinstance(e, CallEnded)} >= {EndReason.SHUTDOWN}  # type: ignore[attr-defined]


def test_rfc4475_badinv01_with_unparseable_via_is_answered_400_to_the_source() -> None:
    from pathlib import Path

    vector = Path(__file__).parent / "vectors" / "rfc4475" / "badinv01.sip"
    h = Harness()
    src = Peer("192.0.2.7", 5099, "udp")
    h.feed(vector.read_bytes(), peer=src)
    ((_, resp, peer),) = h.sent
    assert isinstance(resp, Response) and resp.status == 400
    assert (peer.host, peer.port) == ("192.0.2.7", 5099)


@pytest.mark.parametrize("name", ["unkscm", "novelsc"])
def test_rfc4475_unknown_scheme_requests_get_416(name: str) -> None:
    from pathlib import Path

    vector = Path(__file__).parent / "vectors" / "rfc4475" / f"{name}.sip"
    h = Harness()
    h.feed(vector.read_bytes())
    assert h.statuses()[-1] == 416


@pytest.mark.parametrize(("name", "status"), [("bext01", 420), ("invut", 415), ("unksm2", 405), ("regaut01", 405)])
def test_rfc4475_vectors_the_ua_core_answers(name: str, status: int) -> None:
    from pathlib import Path

    vector = Path(__file__).parent / "vectors" / "rfc4475" / f"{name}.sip"
    h = Harness()
    h.feed(vector.read_bytes())
    assert h.statuses()[-1] == status


def info(tag: str, cseq: int, content_type: str, body: bytes) -> bytes:
    ctype = f"Content-Type: {content_type}\r\n" if content_type else ""
    return (
        f"INFO sip:service@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-info{cseq}\r\n"
        f"From: <sip:alice@127.0.0.1:5070>;tag=caller-tag\r\nTo: <sip:service@127.0.0.1:5060>;tag={tag}\r\n"
        f"Call-ID: call-1\r\nCSeq: {cseq} INFO\r\n{ctype}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize(
    ("content_type", "body", "key", "duration"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5", 160),
        ("application/dtmf-relay", b"Signal= #\nDuration= 250\n", "#", 250),
        ("application/dtmf-relay", b"signal=11\r\n", "#", 100),
        ("application/dtmf", b"*", "*", 100),
    ],
)
def test_info_dtmf_is_answered_200_and_delivered_once(content_type: str, body: bytes, key: str, duration: int) -> None:
    h = Harness()
    _leg, tag = answered_call(h)
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    h.feed(info(tag, 2, content_type, body))
    assert h.statuses() == [200]
    h.feed(info(tag, 2, content_type, body))  # a retransmission: absorbed by the transaction, not a second key
    digits = [e for e in h.events if isinstance(e, DigitInfo)]
    assert [(d.key, d.duration_ms) for d in digits] == [(key, duration)]


def test_info_with_unknown_body_is_415_with_accept() -> None:
    h = Harness()
    _leg, tag = answered_call(h)
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    h.feed(info(tag, 2, "application/x-foo", b"hello"))
    (resp,) = h.take()
    assert isinstance(resp, Response) and resp.status == 415
    assert resp.headers.get("Accept") == "application/dtmf-relay, application/dtmf"


def test_info_with_bad_signal_is_400_and_empty_info_is_200() -> None:
    h = Harness()
    _leg, tag = answered_call(h)
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    h.feed(info(tag, 2, "application/dtmf-relay", b"Signal=X\r\n"))
    h.feed(info(tag, 3, "", b""))
    assert h.statuses() == [400, 200]
    assert not [e for e in h.events if isinstance(e, DigitInfo)]


def test_info_outside_a_dialog_is_481() -> None:
    h = Harness()
    h.feed(info("nope", 1, "application/dtmf", b"1").replace(b";tag=nope", b""))
    assert h.statuses() == [481]


# ---- the UAC role --------------------------------------------------------------------------------------------------

QUEUE = Peer("127.0.0.1", 5080, "udp")


def place_call(h: Harness) -> tuple[Leg, Request]:
    leg = h.ep.call(
        request_uri="sip:billing@127.0.0.1:5080",
        from_uri="sip:ivr@127.0.0.1:5060",
        to_uri="sip:billing@127.0.0.1:5080",
        peer=QUEUE,
        sdp=SDP,
        display_name="IVR",
    )
    h.pump()
    ((_, invite, peer),) = h.sent
    h.sent.clear()
    assert isinstance(invite, Request) and invite.method == "INVITE" and peer == QUEUE
    return leg, invite


def reply(invite: Request, status: int, to_tag: str | None = "callee", body: bytes = b"") -> bytes:
    headers = "".join(f"{n}: {v}\r\n" for n, v in invite.headers if n in ("Via", "From", "Call-ID", "CSeq"))
    to = invite.headers.get("To") or ""
    if to_tag and status > 100:
        to += f";tag={to_tag}"
    contact = "Contact: <sip:billing@127.0.0.1:5080>\r\n" if status < 300 else ""
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"SIP/2.0 {status} X\r\n{headers}To: {to}\r\n{contact}{ctype}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_outgoing_call_is_answered_acked_and_reacked_on_a_retransmitted_200() -> None:
    h = Harness()
    leg, invite = place_call(h)
    assert invite.from_.tag == leg.local_tag and invite.from_.display == "IVR"
    assert invite.content_type == "application/sdp" and invite.body == SDP
    h.feed(reply(invite, 180), peer=QUEUE)
    assert isinstance(h.event(CallProgress), CallProgress)
    h.feed(reply(invite, 200, body=SDP), peer=QUEUE)
    answered = h.event(CallAnswered)
    assert answered.response.body == SDP  # type: ignore[attr-defined]
    (ack,) = h.take()
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.cseq.number == 1
    assert ack.uri == "sip:billing@127.0.0.1:5080" and ack.to.tag == "callee"
    h.feed(reply(invite, 200, body=SDP), peer=QUEUE)
    assert [m.method for m in h.take() if isinstance(m, Request)] == ["ACK"]
    assert len([e for e in h.events if isinstance(e, CallAnswered)]) == 1
    h.ep.hangup(leg)
    h.pump()
    (bye,) = h.take()
    assert isinstance(bye, Request) and bye.method == "BYE"
    h.feed(Response(200, headers=bye.headers.copy()).to_bytes(), peer=QUEUE)
    assert not h.ep.busy  # the INVITE transaction waiting out timer M does not keep a shutdown waiting


def test_outgoing_call_busy_ends_failed_and_the_transaction_acks_it() -> None:
    h = Harness()
    _leg, invite = place_call(h)
    h.feed(reply(invite, 486), peer=QUEUE)
    ended = h.event(CallEnded)
    assert ended.reason is EndReason.FAILED and ended.status == 486  # type: ignore[attr-defined]
    (ack,) = h.take()
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.top_via.branch == invite.top_via.branch


def test_cancel_waits_for_a_provisional_then_487_ends_cancelled() -> None:
    h = Harness()
    leg, invite = place_call(h)
    h.ep.cancel(leg)
    h.pump()
    assert h.take() == []  # RFC 3261 9.1: no CANCEL before a provisional response
    h.feed(reply(invite, 100, to_tag=None), peer=QUEUE)
    (cancel,) = h.take()
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert cancel.top_via.branch == invite.top_via.branch and cancel.cseq.number == 1
    h.feed(reply(invite, 487), peer=QUEUE)
    assert h.event(CallEnded).reason is EndReason.CANCELLED  # type: ignore[attr-defined]


def test_200_racing_a_cancel_is_acked_then_ended_with_bye() -> None:
    h = Harness()
    leg, invite = place_call(h)
    h.feed(reply(invite, 180), peer=QUEUE)
    h.ep.cancel(leg)
    h.pump()
    h.take()
    h.feed(reply(invite, 200, body=SDP), peer=QUEUE)
    assert [m.method for m in h.take() if isinstance(m, Request)] == ["ACK", "BYE"]
    assert not [e for e in h.events if isinstance(e, CallAnswered)]


def test_unanswered_invite_times_out_with_408() -> None:
    h = Harness()
    place_call(h)
    h.advance(40)
    ended = h.event(CallEnded)
    assert ended.reason is EndReason.TIMEOUT and ended.status == 408  # type: ignore[attr-defined]
    invites = [m for m in h.take() if isinstance(m, Request) and m.method == "INVITE"]
    assert len(invites) == 6  # timer A: 0.5, 1, 2, 4, 8, 16 s retransmissions before timer B at 32 s


def test_outgoing_leg_sends_info_digits_and_hears_the_callees_bye() -> None:
    h = Harness()
    leg, invite = place_call(h)
    h.feed(reply(invite, 200, body=SDP), peer=QUEUE)
    h.take()
    h.ep.send_info_digit(leg, "7", 120)
    h.pump()
    (info_req,) = h.take()
    assert isinstance(info_req, Request) and info_req.method == "INFO" and info_req.cseq.number == 2
    assert info_req.body == b"Signal=7\r\nDuration=120\r\n"
    bye = (
        f"BYE sip:ivr@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-qbye\r\n"
        f"From: <sip:billing@127.0.0.1:5080>;tag=callee\r\nTo: {invite.headers.get('From')}\r\n"
        f"Call-ID: {invite.call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    h.feed(bye, peer=QUEUE)
    assert [m.status for m in h.take() if isinstance(m, Response)] == [200]
    assert h.event(CallEnded).reason is EndReason.REMOTE_BYE  # type: ignore[attr-defined]


def test_untrusted_sources_get_403_without_any_state_or_nothing_when_dropping() -> None:
    from ipaddress import ip_network

    h = Harness()
    h.ep.config.trusted = (ip_network("10.0.0.0/8"), ip_network("127.0.0.1/32"))
    scanner = Peer("203.0.113.50", 5060, "udp")
    h.feed(invite(), peer=scanner)
    ((_, resp, peer),) = h.sent
    assert isinstance(resp, Response) and resp.status == 403 and peer.host == "203.0.113.50"
    assert h.events == [] and h.ep.get_timer() is None  # no transaction, no call
    h.sent.clear()
    h.ep.config.untrusted_action = "drop"
    h.feed(invite(branch="z9hG4bK-9"), peer=scanner)
    assert h.sent == [] and h.ep.untrusted_messages == 2
    h.feed(invite(branch="z9hG4bK-10"))  # 127.0.0.1 is trusted
    assert h.statuses() == [100]
