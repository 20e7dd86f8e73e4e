"""RFC 3261 12.1.1: a UAS copies the INVITE's Record-Route into responses that may establish the dialog.

Found by the Kamailio scale-out test: without it, the caller's ACK and BYE reached the proxy with no Route and got
404 Not Here."""

from __future__ import annotations

from ivr.sip.message import Request, make_response, parse_message

INVITE = (
    b"INVITE sip:2000@10.0.0.5:5060 SIP/2.0\r\n"
    b"Record-Route: <sip:10.0.0.1;lr;ftag=abc>\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1.1\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKcaller\r\n"
    b"Record-Route: <sip:10.0.0.2;lr>, <sip:edge.example.com;lr;transport=tcp>\r\n"
    b"From: <sip:0888@example.com>;tag=f1\r\n"
    b"To: <sip:2000@example.com>\r\n"
    b"Call-ID: rr-1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Max-Forwards: 69\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _invite() -> Request:
    message = parse_message(INVITE)
    assert isinstance(message, Request)
    return message


def test_180_and_200_to_an_invite_carry_every_record_route_in_order() -> None:
    for status in (180, 183, 200):
        response = make_response(_invite(), status, to_tag="t1")
        assert response.headers.get_all("Record-Route") == [
            "<sip:10.0.0.1;lr;ftag=abc>",
            "<sip:10.0.0.2;lr>, <sip:edge.example.com;lr;transport=tcp>",
        ]
        text = bytes(response)
        assert text.index(b"Record-Route: <sip:10.0.0.1;lr;ftag=abc>") < text.index(b"Record-Route: <sip:10.0.0.2;lr>")


def test_failures_trying_and_other_methods_carry_none() -> None:
    assert make_response(_invite(), 100).headers.get_all("Record-Route") == []
    assert make_response(_invite(), 486, to_tag="t1").headers.get_all("Record-Route") == []
    options = parse_message(INVITE.replace(b"INVITE sip", b"OPTIONS sip").replace(b"1 INVITE", b"1 OPTIONS"))
    assert isinstance(options, Request)
    assert make_response(options, 200, to_tag="t1").headers.get_all("Record-Route") == []
