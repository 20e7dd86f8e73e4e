"""Defects the daemon fuzzer (tests/fuzz) found, each as the minimised messages that showed it, replayed on a fresh
daemon on virtual time with every invariant of the fuzzer checked (see tests/fuzz/fuzz_harness.py)."""

from __future__ import annotations

from tests.fuzz.fuzz_harness import Options, replay

LATE_OFFER_INVITE = (
    b"INVITE sip:2000@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKfz1x59;rport\r\n"
    b"From: <sip:late@127.0.0.1:5070>;tag=ft3b\r\n"
    b"To: <sip:2000@127.0.0.1:5060>\r\n"
    b"Call-ID: fz1-59@127.0.0.1\r\n"
    b"CSeq: 20 INVITE\r\n"
    b"Contact: <sip:late@127.0.0.1:5070>\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_a_late_offer_call_whose_ack_brings_no_answer_is_no_longer_counted_active() -> None:
    """The ACK to our offer carried no SDP: the daemon hangs up (right), but the call stayed counted in
    ivr_active_calls forever and its record stayed open (the 200 had opened both)."""
    ack = (
        b"ACK sip:ivr@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKfz1x78\r\n"
        b"From: sipp <sip:sipp@127.0.0.1:5070>;tag=ft3b\r\n"
        b"To: 2000 <sip:2000@127.0.0.1:5060>;tag=@@TTAG:fz1-59@127.0.0.1@@\r\n"
        b"Call-ID: fz1-59@127.0.0.1\r\n"
        b"CSeq: 20 ACK\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert replay([("sip", LATE_OFFER_INVITE), ("sip", ack)], Options()) == []


def _invite(n: int) -> bytes:
    sdp = (
        b"v=0\r\no=user1 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    return (
        f"INVITE sip:2000@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKfz1x{n}\r\n"
        f"From: <sip:0888123456@127.0.0.1:5070>;tag=ft{n}\r\n"
        f"To: <sip:2000@127.0.0.1:5060>\r\n"
        f"Call-ID: fz1-{n}@127.0.0.1\r\n"
        f"CSeq: 13 INVITE\r\n"
        f"Contact: <sip:0888123456@127.0.0.1:5070>\r\n"
        f"Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n"
    ).encode() + sdp


def test_an_ack_with_another_calls_invite_branch_leaves_no_call_up_for_good() -> None:
    """The ACK of the second call carries the branch of the first call's INVITE: the first call's 2xx stopped
    being retransmitted and its ACK timeout was off, so it stayed up (and held its RTP port) past max_call_seconds,
    until shutdown."""
    ack = (
        b"ACK sip:ivr@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKfz1x2042\r\n"
        b"From: <sip:0888123456@127.0.0.1:5070>;tag=ft2048\r\n"
        b"To: <sip:2000@127.0.0.1:5060>;tag=@@TTAG:fz1-2048@127.0.0.1@@\r\n"
        b"Call-ID: fz1-2048@127.0.0.1\r\n"
        b"CSeq: 13 ACK\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert replay([("sip", _invite(2042)), ("sip", _invite(2048)), ("sip", ack)], Options()) == []
