"""A request with control characters in its headers, as `ivr serve` met it on loopback: the endpoint answers 400
with a Warning that names the header, and the 400 carries none of the bad bytes back."""

from __future__ import annotations

import pytest

from ivr.sip.endpoint import EndpointConfig, IncomingCall, Peer, SipEndpoint

CALLER = Peer("127.0.0.1", 5070, "udp")
INVITE = (
    "INVITE sip:2000@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-ctl-1;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:caller@127.0.0.1:5070>;tag=ctl1\r\n"
    "To: <sip:2000@127.0.0.1:5060>\r\n"
    "Call-ID: ctl-call@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:caller@127.0.0.1:5070>\r\n"
    "User-Agent: attacker\r\n"
    "Content-Length: 0\r\n\r\n"
)


@pytest.mark.parametrize(
    ("header", "old", "new"),
    [
        ("User-Agent", "User-Agent: attacker", "User-Agent: att\x00acker\x1b[31m"),
        ("Call-ID", "Call-ID: ctl-call@", "Call-ID: ctl\x00\x07call@"),
        ("From", "tag=ctl1", "tag=ctl1\x00"),
        ("To", "To: <sip:2000@127.0.0.1:5060>", 'To: "\x7f" <sip:2000@127.0.0.1:5060>'),
    ],
)
def test_control_characters_are_refused_with_a_400_that_does_not_echo_them(header: str, old: str, new: str) -> None:
    endpoint = SipEndpoint(EndpointConfig(host="127.0.0.1", port=5060))
    data = INVITE.replace(old, new).encode()
    endpoint.receive(data, CALLER, 0.0)
    sent = endpoint.datagrams_to_send(0.0)
    assert len(sent) == 1 and sent[0].peer.port == 5070
    out = sent[0].data
    assert out.startswith(b"SIP/2.0 400 ")
    head = out.partition(b"\r\n\r\n")[0].replace(b"\r\n", b"\n")
    assert not any((byte < 0x20 and byte not in (0x09, 0x0A)) or byte == 0x7F for byte in head), head
    warning = next(line for line in head.split(b"\n") if line.startswith(b"Warning:"))
    assert f"{header} header has control character".encode() in warning
    assert b"CSeq: 1 INVITE" in head and b"branch=z9hG4bK-ctl-1" in head
    assert not any(isinstance(event, IncomingCall) for event in iter(endpoint.next_event, None))
