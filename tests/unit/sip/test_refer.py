"""Refer-To, sipfrag, Event and Subscription-State, read and written (RFC 3515, RFC 3420, RFC 6665)."""

from __future__ import annotations

import pytest

from ivr.sip.errors import SipError
from ivr.sip.refer import (
    format_sipfrag,
    parse_event,
    parse_refer_to,
    parse_sipfrag,
    parse_subscription_state,
)


def test_refer_to_with_embedded_headers_is_unescaped_rfc3261_19_1_1() -> None:
    # RFC 7433 4.1's example of UUI in a Refer-To, plus an escaped space and CRLF in another header.
    target = parse_refer_to(
        "<sip:alice@atlanta.example.com?User-to-User=56a390f3d2b7310023a2%3Bencoding%3Dhex&X-IVR-Name=A%20B%250D>"
    )
    assert target.uri == "sip:alice@atlanta.example.com"
    assert target.headers == (("User-to-User", "56a390f3d2b7310023a2;encoding=hex"), ("X-IVR-Name", "A B%0D"))
    assert target.method == "INVITE"


def test_refer_to_addr_spec_and_method_parameter() -> None:
    assert parse_refer_to("sip:bob@biloxi.example.com").uri == "sip:bob@biloxi.example.com"
    target = parse_refer_to("<sip:bob@biloxi.example.com;method=BYE>")
    assert target.method == "BYE" and target.uri == "sip:bob@biloxi.example.com"


def test_unreadable_refer_to_is_a_400_parse_error() -> None:
    with pytest.raises(SipError) as caught:
        parse_refer_to("<sip:>")
    assert caught.value.status == 400


def test_sipfrag_round_trip_and_rfc3515_examples() -> None:
    assert format_sipfrag(100) == b"SIP/2.0 100 Trying\r\n"
    assert format_sipfrag(503, "Service Unavailable") == b"SIP/2.0 503 Service Unavailable\r\n"
    assert parse_sipfrag(b"SIP/2.0 200 OK\r\n") == (200, "OK")
    assert parse_sipfrag(b"SIP/2.0 603 Declined\r\nContent-Length: 0\r\n\r\n") == (603, "Declined")
    with pytest.raises(SipError):
        parse_sipfrag(b"INVITE sip:x@y SIP/2.0\r\n")
    with pytest.raises(ValueError):
        format_sipfrag(99)


def test_event_and_subscription_state_headers() -> None:
    assert parse_event("refer;id=93809824") == ("refer", "93809824")
    assert parse_event("Refer") == ("refer", None)
    assert parse_event(None) == ("", None)
    state = parse_subscription_state("terminated;reason=noresource")
    assert state.terminated and state.reason == "noresource"
    active = parse_subscription_state("active;expires=60")
    assert not active.terminated and active.expires == 60
    assert parse_subscription_state(None).state == "active"
