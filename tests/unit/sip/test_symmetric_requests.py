"""Where our in-dialog requests go. A caller nobody vouched for (no trusted source, no digest) gets them where its
INVITE came from, whatever its Contact says: a Contact naming another host or a TCP port must not make the daemon
resolve names or open connections for an unauthenticated request. A trusted caller's Contact is followed
(RFC 3261 12.2.1.1)."""

from __future__ import annotations

import ipaddress

from ivr.sip.endpoint import EndpointConfig, IncomingCall, Leg, Peer, SipEndpoint
from ivr.sip.message import Request, Response
from tests.unit.sip.test_endpoint import SDP, Harness, in_dialog, invite

SOURCE = Peer("192.0.2.10", 5062, "udp")
ELSEWHERE = "Contact: <sip:alice@reflect.example.com:690;transport=tcp>\r\n"


def _answered(h: Harness, *, trusted: bool | None = None) -> tuple[Leg, str]:
    data = invite().replace(b"Contact: <sip:alice@127.0.0.1:5070>\r\n", ELSEWHERE.encode())
    h.ep.receive(data, SOURCE, h.now, trusted=trusted)
    h.pump()
    leg = h.event(IncomingCall).leg  # type: ignore[attr-defined]
    h.ep.answer(leg, SDP)
    h.pump()
    ok = next(m for m in h.take() if isinstance(m, Response) and m.status == 200)
    to_tag = ok.to.tag or ""
    h.ep.receive(in_dialog("ACK", to_tag, 1, "z9hG4bK-ack"), SOURCE, h.now, trusted=trusted)
    h.pump()
    return leg, to_tag


def _bye_peer(h: Harness, leg: Leg) -> Peer:
    h.sent.clear()
    h.ep.hangup(leg)
    h.pump()
    (peer,) = [p for _, m, p in h.sent if isinstance(m, Request) and m.method == "BYE"]
    return peer


def test_an_unvouched_callers_bye_goes_back_where_its_invite_came_from() -> None:
    h = Harness()
    leg, _ = _answered(h)
    assert not leg.vouched
    assert _bye_peer(h, leg) == SOURCE


def test_a_trusted_callers_contact_is_followed() -> None:
    h = Harness()
    h.ep = SipEndpoint(EndpointConfig(host="127.0.0.1", port=5060, trusted=(ipaddress.ip_network("192.0.2.0/24"),)))
    leg, _ = _answered(h, trusted=True)
    assert leg.vouched
    assert _bye_peer(h, leg) == Peer("reflect.example.com", 690, "tcp")


def _response_peers(h: Harness, *, trusted: bool | None) -> set[Peer]:
    data = invite().replace(b"Via: SIP/2.0/UDP 127.0.0.1:5070;", b"Via: SIP/2.0/UDP 192.0.2.10:7777;")
    h.ep.receive(data, SOURCE, h.now, trusted=trusted)
    h.pump()
    return {p for _, m, p in h.sent if isinstance(m, Response)}


def test_a_response_to_an_untrusted_source_goes_to_its_address_and_port_not_the_via_port() -> None:
    assert _response_peers(Harness(), trusted=None) == {SOURCE}


def test_a_trusted_source_is_answered_as_rfc_3261_18_2_2_says_at_its_via_port() -> None:
    h = Harness()
    h.ep = SipEndpoint(EndpointConfig(host="127.0.0.1", port=5060, trusted=(ipaddress.ip_network("192.0.2.0/24"),)))
    assert _response_peers(h, trusted=True) == {Peer("192.0.2.10", 7777, "udp")}
