"""SIP message parsing and serialisation: RFC 3261 section 24 call flow, real peers' INVITEs, UDP/TCP framing, size
caps, typed errors with a partial message to answer, and the TCP stream framer."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.sip.errors import MessageTooLarge, SipError, SipParseError
from ivr.sip.headers import CSeq, Headers
from ivr.sip.message import (
    MAX_HEADERS,
    MAX_START_LINE,
    Request,
    Response,
    StreamFramer,
    answerable_request,
    error_response,
    make_response,
    parse_message,
    warning_header,
)
from ivr.sip.uri import SipURI

PEERS = Path(__file__).parent / "vectors" / "peers"

# RFC 3261 elides the session descriptions ("(Alice's SDP not shown)"); these bodies have exactly the Content-Length
# the RFC's messages state (142 and 131 octets), so the messages below are the RFC's text with a real body.
ALICE_SDP = (
    "v=0\r\no=alice 2890844526 2890844526 IN IP4 pc33.atlanta.com\r\ns=Talk\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 49172 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
BOB_SDP = (
    "v=0\r\no=bob 2890844527 2890844527 IN IP4 192.0.2.4\r\ns=Bob\r\nc=IN IP4 192.0.2.4\r\nt=0 0\r\n"
    "m=audio 3456 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)

# RFC 3261 section 24.2, the session setup between Alice and Bob through atlanta.com and biloxi.com.
RFC3261_FLOW = {
    "F1": """INVITE sip:bob@biloxi.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8
Max-Forwards: 70
To: Bob <sip:bob@biloxi.com>
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.com>
Content-Type: application/sdp
Content-Length: 142

{ALICE}""",
    "F2": """SIP/2.0 100 Trying
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1
To: Bob <sip:bob@biloxi.com>
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 314159 INVITE
Content-Length: 0

""",
    "F3": """INVITE sip:bob@biloxi.com SIP/2.0
Via: SIP/2.0/UDP bigbox3.site3.atlanta.com;branch=z9hG4bK77ef4c2312983.1
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1
Max-Forwards: 69
To: Bob <sip:bob@biloxi.com>
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.com>
Content-Type: application/sdp
Content-Length: 142

{ALICE}""",
    "F5": """INVITE sip:bob@192.0.2.4 SIP/2.0
Via: SIP/2.0/UDP server10.biloxi.com;branch=z9hG4bK4b43c2ff8.1
Via: SIP/2.0/UDP bigbox3.site3.atlanta.com;branch=z9hG4bK77ef4c2312983.1;received=192.0.2.2
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1
Max-Forwards: 68
To: Bob <sip:bob@biloxi.com>
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.com>
Content-Type: application/sdp
Content-Length: 142

{ALICE}""",
    "F6": """SIP/2.0 180 Ringing
Via: SIP/2.0/UDP server10.biloxi.com;branch=z9hG4bK4b43c2ff8.1;received=192.0.2.3
Via: SIP/2.0/UDP bigbox3.site3.atlanta.com;branch=z9hG4bK77ef4c2312983.1;received=192.0.2.2
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1
To: Bob <sip:bob@biloxi.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
Contact: <sip:bob@192.0.2.4>
CSeq: 314159 INVITE
Content-Length: 0

""",
    "F9": """SIP/2.0 200 OK
Via: SIP/2.0/UDP server10.biloxi.com;branch=z9hG4bK4b43c2ff8.1;received=192.0.2.3
Via: SIP/2.0/UDP bigbox3.site3.atlanta.com;branch=z9hG4bK77ef4c2312983.1;received=192.0.2.2
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1
To: Bob <sip:bob@biloxi.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 314159 INVITE
Contact: <sip:bob@192.0.2.4>
Content-Type: application/sdp
Content-Length: 131

{BOB}""",
    "F11": """SIP/2.0 200 OK
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1
To: Bob <sip:bob@biloxi.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 314159 INVITE
Contact: <sip:bob@192.0.2.4>
Content-Type: application/sdp
Content-Length: 131

{BOB}""",
    "F12": """ACK sip:bob@192.0.2.4 SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds9
Max-Forwards: 70
To: Bob <sip:bob@biloxi.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 314159 ACK
Content-Length: 0

""",
    "F13": """BYE sip:alice@pc33.atlanta.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds10
Max-Forwards: 70
From: Bob <sip:bob@biloxi.com>;tag=a6c85cf
To: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 231 BYE
Content-Length: 0

""",
    "F14": """SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds10
From: Bob <sip:bob@biloxi.com>;tag=a6c85cf
To: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 231 BYE
Content-Length: 0

""",
    # RFC 3261 section 24.1, registration.
    "REGISTER": """REGISTER sip:registrar.biloxi.com SIP/2.0
Via: SIP/2.0/UDP bobspc.biloxi.com:5060;branch=z9hG4bKnashds7
Max-Forwards: 70
To: Bob <sip:bob@biloxi.com>
From: Bob <sip:bob@biloxi.com>;tag=456248
Call-ID: 843817637684230@998sdasdh09
CSeq: 1826 REGISTER
Contact: <sip:bob@192.0.2.4>
Expires: 7200
Content-Length: 0

""",
    "REGISTER-200": """SIP/2.0 200 OK
Via: SIP/2.0/UDP bobspc.biloxi.com:5060;branch=z9hG4bKnashds7;received=192.0.2.4
To: Bob <sip:bob@biloxi.com>;tag=2493k59kd
From: Bob <sip:bob@biloxi.com>;tag=456248
Call-ID: 843817637684230@998sdasdh09
CSeq: 1826 REGISTER
Contact: <sip:bob@192.0.2.4>
Expires: 7200
Content-Length: 0

""",
}


def wire(text: str) -> bytes:
    """RFC text (LF) as it is on the wire (CRLF), with the elided SDP filled in."""
    head, _, body = text.partition("\n\n")
    body = body.replace("{ALICE}", ALICE_SDP).replace("{BOB}", BOB_SDP)
    return (head.replace("\n", "\r\n") + "\r\n\r\n" + body).encode()


def flow(name: str) -> Request | Response:
    return parse_message(wire(RFC3261_FLOW[name]))


def req(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


BASIC = """OPTIONS sip:ivr@192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK776asdhds
Max-Forwards: 70
To: <sip:ivr@192.0.2.10>
From: "Caller" <sip:caller@192.0.2.20>;tag=1928301774
Call-ID: a84b4c76e66710@192.0.2.20
CSeq: 1 OPTIONS
Content-Length: 0

"""


def basic(**replace: str) -> bytes:
    """BASIC with whole header lines replaced: ``basic(Content_Length="Content-Length: 5")``."""
    lines = BASIC.split("\n")
    for field_name, new in replace.items():
        prefix = field_name.replace("_", "-") + ":"
        lines = [new.replace("\r\n", "\n") if line.startswith(prefix) else line for line in lines]
    return req("\n".join(lines))


# ---- RFC 3261 section 24 --------------------------------------------------------------------------------------------


def test_rfc3261_sdp_bodies_have_the_lengths_the_rfc_states() -> None:
    assert (len(ALICE_SDP), len(BOB_SDP)) == (142, 131)


@pytest.mark.parametrize("name", sorted(RFC3261_FLOW))
def test_rfc3261_example_parses_and_round_trips(name: str) -> None:
    msg = flow(name)
    again = parse_message(msg.to_bytes())
    assert list(again.headers) == list(msg.headers) and again.body == msg.body
    assert msg.to_bytes() == wire(RFC3261_FLOW[name])  # already canonical: serialising gives the RFC's bytes back


def test_rfc3261_invite_from_alice() -> None:
    f1 = flow("F1")
    assert isinstance(f1, Request) and f1.method == "INVITE" and f1.uri == "sip:bob@biloxi.com"
    assert f1.top_via.branch == "z9hG4bKnashds8" and f1.top_via.host == "pc33.atlanta.com"
    assert f1.max_forwards == 70
    assert f1.to.display == "Bob" and f1.to.tag is None
    assert f1.from_.display == "Alice" and f1.from_.tag == "1928301774"
    assert f1.call_id == "a84b4c76e66710" and f1.cseq == CSeq(314159, "INVITE")
    assert str(f1.contacts[0].uri) == "sip:alice@pc33.atlanta.com"
    assert f1.content_type == "application/sdp" and f1.body == ALICE_SDP.encode()
    parsed = f1.parsed_uri
    assert isinstance(parsed, SipURI) and (parsed.user, parsed.host) == ("bob", "biloxi.com")


def test_rfc3261_proxies_add_vias_and_responses_carry_them_back() -> None:
    assert [v.branch for v in flow("F3").vias] == ["z9hG4bK77ef4c2312983.1", "z9hG4bKnashds8"]
    f5 = flow("F5")
    assert [v.host for v in f5.vias] == ["server10.biloxi.com", "bigbox3.site3.atlanta.com", "pc33.atlanta.com"]
    assert f5.max_forwards == 68
    f6 = flow("F6")
    assert isinstance(f6, Response) and (f6.status, f6.reason) == (180, "Ringing")
    assert [v.params.get("received") for v in f6.vias] == ["192.0.2.3", "192.0.2.2", "192.0.2.1"]
    assert f6.to.tag == "a6c85cf"
    f2 = flow("F2")
    assert isinstance(f2, Response) and f2.status == 100 and f2.to.tag is None


def test_bobs_ringing_built_from_f5_matches_the_rfc() -> None:
    f5 = flow("F5")
    assert isinstance(f5, Request)
    ringing = make_response(f5, 180, to_tag="a6c85cf", extra=[("Contact", "<sip:bob@192.0.2.4>")])
    f6 = flow("F6")
    for name in ("To", "From", "Call-ID", "CSeq"):
        assert ringing.headers.get(name) == f6.headers.get(name)
    assert ringing.headers.get_all("Via") == f5.headers.get_all("Via")
    ok = make_response(f5, 200, to_tag="a6c85cf", body=BOB_SDP.encode(), content_type="application/sdp")
    again = parse_message(ok.to_bytes())
    assert isinstance(again, Response) and again.status == 200 and again.body == BOB_SDP.encode()
    assert again.headers.get("Content-Length") == "131"


def test_rfc3261_ack_and_bye_close_the_dialog() -> None:
    f12 = flow("F12")
    assert isinstance(f12, Request) and f12.method == "ACK" and f12.cseq == CSeq(314159, "ACK")
    assert f12.top_via.branch == "z9hG4bKnashds9"  # a 2xx ACK is a new transaction
    f13 = flow("F13")
    assert isinstance(f13, Request) and f13.cseq == CSeq(231, "BYE")
    assert (f13.from_.tag, f13.to.tag) == ("a6c85cf", "1928301774")  # swapped: Bob sends it
    f14 = flow("F14")
    assert isinstance(f14, Response) and f14.cseq.method == "BYE"


def test_rfc3261_registration() -> None:
    register = flow("REGISTER")
    assert isinstance(register, Request) and register.method == "REGISTER"
    assert register.top_via.port == 5060 and register.headers.get("Expires") == "7200"
    ok = flow("REGISTER-200")
    assert isinstance(ok, Response) and ok.to.tag == "2493k59kd"


# ---- real peers ----------------------------------------------------------------------------------------------------


def test_sipp_uac_invite() -> None:
    """``sipp -sn uac`` (SIPp 3.6.1) captured on loopback: addr-spec Contact, Content-Length with extra blanks."""
    msg = parse_message((PEERS / "sipp_uac_invite.sip").read_bytes())
    assert isinstance(msg, Request) and msg.method == "INVITE"
    assert msg.from_.display == "sipp" and msg.from_.tag is not None
    assert msg.to.display == "service" and msg.to.tag is None
    (contact,) = msg.contacts
    assert not contact.bracketed and isinstance(contact.uri, SipURI) and contact.uri.user == "sipp"
    assert msg.headers.get("Content-Length") == "129" and len(msg.body) == 129
    assert msg.body.startswith(b"v=0\r\n") and msg.headers.get("Subject") == "Performance Test"
    assert msg.top_via.branch is not None and msg.top_via.branch.startswith("z9hG4bK")


def test_baresip_invite() -> None:
    """baresip 1.0.0 captured on loopback: rport flag, an empty ``Supported:``, a list-valued Allow."""
    msg = parse_message((PEERS / "baresip_invite.sip").read_bytes())
    assert isinstance(msg, Request) and msg.method == "INVITE"
    assert msg.top_via.params["rport"] is None
    assert msg.headers.get("Supported") == "" and msg.headers.values("Supported") == []
    assert "REFER" in msg.headers.values("Allow")
    assert len(msg.body) == 321 and b"telephone-event/8000" in msg.body


@pytest.mark.parametrize("name", ["sipp_uac_invite", "baresip_invite"])
def test_peer_invites_serialise_back_to_the_same_bytes_modulo_content_length_spacing(name: str) -> None:
    data = (PEERS / f"{name}.sip").read_bytes()
    msg = parse_message(data)
    assert msg.to_bytes() == data.replace(b"Content-Length:   ", b"Content-Length: ")


# ---- UDP framing (RFC 3261 section 18.3) ----------------------------------------------------------------------------


def test_body_shorter_than_content_length_is_a_400_with_the_request_to_answer() -> None:
    data = basic(Content_Length="Content-Length: 10") + b"short"
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == 400 and "truncated" in info.value.reason
    request = answerable_request(info.value)
    assert request is not None and request.call_id == "a84b4c76e66710@192.0.2.20"


def test_octets_beyond_content_length_in_a_datagram_are_discarded() -> None:
    msg = parse_message(basic(Content_Length="Content-Length: 4") + b"bodyGARBAGE")
    assert msg.body == b"body"
    assert msg.to_bytes().endswith(b"Content-Length: 4\r\n\r\nbody")


def test_datagram_without_content_length_takes_the_rest_as_body_but_a_stream_may_not() -> None:
    data = basic(Content_Length="X-Nothing: 1") + b"hello"
    assert parse_message(data).body == b"hello"
    with pytest.raises(SipParseError):
        parse_message(data, stream=True)


@pytest.mark.parametrize("value", ["five", "-1", "1.0", "0x10", "", "²", "1 2", "9" * 5000, "1234567890"])
def test_bad_content_length_values_are_400_never_value_error(value: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(basic(Content_Length=f"Content-Length: {value}"))
    assert info.value.status == 400 and info.value.partial is not None


def test_repeated_content_length_must_agree_and_leading_zeros_are_fine() -> None:
    msg = parse_message(basic(Content_Length="l: 0002\r\nContent-Length: 2") + b"ok")
    assert msg.body == b"ok"
    assert msg.to_bytes().count(b"Content-Length") == 1
    with pytest.raises(SipParseError):
        parse_message(basic(Content_Length="l: 2\r\nContent-Length: 3") + b"okk")


# ---- start line ----------------------------------------------------------------------------------------------------


def test_unsupported_sip_version_is_505_with_the_request_to_answer() -> None:
    with pytest.raises(SipError) as info:
        parse_message(basic().replace(b" SIP/2.0\r\n", b" SIP/2.1\r\n", 1))
    assert info.value.status == 505
    request = answerable_request(info.value)
    assert request is not None
    response = error_response(request, info.value)
    assert response.status == 505 and response.reason == "Version Not Supported"


def test_version_is_case_insensitive() -> None:
    msg = parse_message(basic().replace(b" SIP/2.0\r\n", b" sip/2.0\r\n", 1))
    assert isinstance(msg, Request) and msg.to_bytes().startswith(b"OPTIONS sip:ivr@192.0.2.10 SIP/2.0\r\n")


@pytest.mark.parametrize(
    "start",
    [
        b"GET / HTTP/1.1",
        b"OPTIONS sip:ivr@192.0.2.10",
        b"OPTIONS",
        b"OPT<IONS sip:a@b SIP/2.0",
        b"\x16\x03\x01 a SIP/2.0",
    ],
)
def test_a_start_line_that_is_not_sip_is_dropped(start: bytes) -> None:
    data = start + basic()[basic().index(b"\r\n") :]
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert answerable_request(info.value) is None


def test_responses_status_line_forms() -> None:
    head = b"\r\n".join(basic().split(b"\r\n")[1:])
    ok = parse_message(b"SIP/2.0 200\r\n" + head)  # no reason phrase and no space: liberal
    assert isinstance(ok, Response) and (ok.status, ok.reason) == (200, "")
    custom = parse_message(b"SIP/2.0 486 Busy Here Really  \r\n" + head)
    assert isinstance(custom, Response) and custom.reason == "Busy Here Really  "
    for bad in (b"SIP/2.0 99 Low", b"SIP/2.0 700 High", b"SIP/2.0 2OO OK", b"SIP/3.0 200 OK", b"SIP/2.0"):
        with pytest.raises(SipParseError) as info:
            parse_message(bad + b"\r\n" + head)
        assert answerable_request(info.value) is None  # a response is never answered


def test_an_error_in_a_response_or_an_ack_is_never_answered() -> None:
    ack = basic().replace(b"OPTIONS", b"ACK").replace(b"Max-Forwards: 70", b"Max-Forwards: 999")
    with pytest.raises(SipParseError) as info:
        parse_message(ack)
    assert isinstance(info.value.partial, Request) and answerable_request(info.value) is None


# ---- header section --------------------------------------------------------------------------------------------------


def test_folded_lines_compact_names_and_blank_values() -> None:
    data = req(
        """INVITE sip:ivr@h SIP/2.0
v: SIP/2.0/UDP h1;branch=z9hG4bK1,
\tSIP/2.0/TCP h2;branch=z9hG4bK2
t: <sip:ivr@h>
f: "A \\"quoted\\" name"
  <sip:a@h>;tag=1
i: c1@h
CSeq: 5
 INVITE
m: <sip:a@h1>, <sip:a@h2>;q=0.5
k: 100rel, timer
s:
c: application/sdp
l: 0

"""
    )
    msg = parse_message(data)
    assert [v.host for v in msg.vias] == ["h1", "h2"]
    assert msg.from_.display == 'A "quoted" name' and msg.from_.tag == "1"
    assert msg.cseq == CSeq(5, "INVITE")
    assert [c.params for c in msg.contacts] == [{}, {"q": "0.5"}]
    assert msg.headers.values("Supported") == ["100rel", "timer"]
    assert msg.headers.get("Subject") == "" and msg.content_type == "application/sdp"
    assert [name for name, _ in msg.headers] == [
        "Via", "To", "From", "Call-ID", "CSeq", "Contact", "Supported", "Subject", "Content-Type", "Content-Length",
    ]  # fmt: skip


def test_bare_lf_line_ends_are_tolerated_bare_cr_is_not() -> None:
    lf = basic().replace(b"\r\n", b"\n")
    assert parse_message(lf).call_id == "a84b4c76e66710@192.0.2.20"
    mixed = basic().replace(b"\r\nTo:", b"\nTo:")
    assert parse_message(mixed).to.tag is None
    with pytest.raises(SipParseError) as info:
        parse_message(basic().replace(b"\r\nTo:", b"\rTo:"))
    assert answerable_request(info.value) is not None


def test_leading_crlf_keepalives_are_ignored_and_a_bare_keepalive_is_no_message() -> None:
    assert parse_message(b"\r\n\r\n" + basic()).call_id == "a84b4c76e66710@192.0.2.20"
    for keepalive in (b"\r\n\r\n", b"\r\n", b""):
        with pytest.raises(SipParseError) as info:
            parse_message(keepalive)
        assert info.value.partial is None


def test_datagram_without_the_empty_line() -> None:
    complete_lines = basic().rstrip(b"\r\n") + b"\r\n"
    assert parse_message(complete_lines).body == b""  # RFC 4475 baddn's shape: accepted as the end of the head
    with pytest.raises(SipParseError) as info:
        parse_message(basic().rstrip(b"\r\n")[:-3])  # cut in the middle of a line
    assert "truncated" in info.value.reason and answerable_request(info.value) is not None
    with pytest.raises(SipParseError):
        parse_message(complete_lines, stream=True)


@pytest.mark.parametrize(
    "line",
    [b"No colon here", b"Bad Name: x", b": novalue", b"\xc3(: x", b"Via\x00: x", b"  folded-start: x"],
)
def test_malformed_header_lines_are_400_with_the_rest_as_partial(line: bytes) -> None:
    data = basic().replace(b"Max-Forwards: 70", line)
    if line.startswith(b" "):  # a continuation of the start line
        data = basic().replace(b"\r\nVia:", b"\r\n folded\r\nVia:")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == 400
    request = answerable_request(info.value)
    assert request is not None and request.headers.get("Call-ID") == "a84b4c76e66710@192.0.2.20"


def test_invalid_utf8_in_the_header_section_is_a_400_that_can_still_be_answered() -> None:
    data = basic().replace(b'"Caller"', b'"Caf\xe9"')
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert "UTF-8" in info.value.reason
    request = answerable_request(info.value)
    assert request is not None and request.cseq == CSeq(1, "OPTIONS")


CONTROL_CHARACTERS = [chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)] + ["\x7f"]


@pytest.mark.parametrize("ctl", CONTROL_CHARACTERS, ids=[f"0x{ord(c):02X}" for c in CONTROL_CHARACTERS])
@pytest.mark.parametrize(
    ("field", "line"),
    [
        ("Call-ID", "Call-ID: a84b4c76{}e66710@192.0.2.20"),
        ("From", 'From: "Cal{}ler" <sip:caller@192.0.2.20>;tag=1928301774'),
        ("To", "To: <sip:ivr@192.0.2.10>;x=a{}b"),
        ("Via", "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK776{}asdhds"),
        ("Subject", "Subject: hello{}world"),
    ],
)
def test_a_control_character_in_a_header_value_is_a_400_naming_the_header(ctl: str, field: str, line: str) -> None:
    if field == "Subject":
        data = basic(Content_Length=line.format(ctl) + "\nContent-Length: 0")
    else:
        data = basic(**{field.replace("-", "_"): line.format(ctl)})
    assert ctl.encode() in data
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == 400
    assert info.value.reason.startswith(f"{field} header has control character 0x{ord(ctl):02X}")
    request = answerable_request(info.value)
    assert request is not None  # answerable: a 400, not a silent drop
    out = error_response(request, info.value, to_tag="t").to_bytes()
    head = out.partition(b"\r\n\r\n")[0]
    assert ctl.encode() not in head.replace(b"\r\n", b"")  # the 400 does not echo the bad bytes
    assert f"%{ord(ctl):02X}".encode() in head or field == "Subject"  # the copied headers have it escaped
    assert field.encode() in (error_response(request, info.value).headers.get("Warning") or "").encode()


def test_a_control_character_in_the_call_id_is_refused_even_after_a_quote() -> None:
    # '"' and '\\' are word characters in a Call-ID, so '"\\<NUL>' is no quoted-pair there.
    with pytest.raises(SipParseError, match=r"^Call-ID header"):
        parse_message(basic(Call_ID='Call-ID: a"\\\x00"@192.0.2.20'))


def test_a_control_character_escaped_in_a_quoted_string_is_valid() -> None:
    # RFC 3261 25.1 quoted-pair = "\\" (%x00-09 / %x0B-0C / %x0E-7F); RFC 4475 intmeth has "BEL:\\<BEL>".
    msg = parse_message(basic(From='From: "NUL:\\\x00 DEL:\\\x7f" <sip:caller@192.0.2.20>;tag=1'))
    assert msg.from_.display == "NUL:\x00 DEL:\x7f"
    with pytest.raises(SipParseError, match=r"^From header has control character 0x00"):
        parse_message(basic(From='From: "NUL:\\\x00" <sip:caller@192.0.2.20>;tag=1;x=\x00'))


def test_htab_and_folding_are_not_control_characters() -> None:
    msg = parse_message(basic(Content_Length="Subject: a\tb\n\tc\nContent-Length: 0"))
    assert msg.headers.get("Subject") == "a\tb c"


def test_a_control_character_in_the_start_line_is_a_400() -> None:
    nul_in_uri = BASIC.replace("OPTIONS sip:ivr@", "OPTIONS sip:i\x00vr@")
    esc_after_version = BASIC.replace("SIP/2.0\n", "SIP/2.0\x1b\n", 1)
    for data in (nul_in_uri, esc_after_version):
        with pytest.raises(SipParseError):
            parse_message(req(data))


def test_a_response_with_a_control_character_is_refused_and_never_answered() -> None:
    data = req(BASIC).replace(b"OPTIONS sip:ivr@192.0.2.10 SIP/2.0", b"SIP/2.0 200 OK")
    with pytest.raises(SipParseError) as info:
        parse_message(data.replace(b"Max-Forwards: 70", b"Subject: \x00"))
    assert answerable_request(info.value) is None


def test_message_starting_with_whitespace_is_dropped() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(b" " + basic())
    assert info.value.partial is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Max-Forwards", "256"),
        ("Max-Forwards", "-1"),
        ("Max-Forwards", "9" * 5000),
        ("Call-ID", "two words"),
        ("Call-ID", ""),
        ("CSeq", "1 INVITE"),  # does not match the OPTIONS method
        ("CSeq", "4294967296 OPTIONS"),
        ("To", '"unterminated <sip:ivr@192.0.2.10>'),
        ("From", "sip:caller@192.0.2.20;tag=1;;"),
        ("Via", "SIP/2.0/UDP"),
        ("Via", ""),
    ],
)
def test_bad_structured_header_values_are_400(field: str, value: str) -> None:
    data = basic(**{field.replace("-", "_"): f"{field}: {value}"})
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == 400 and info.value.partial is not None


@pytest.mark.parametrize(
    ("extra", "ok"),
    [
        ("Contact: *", True),
        ("Contact: *, <sip:a@b>", False),
        ("Contact: <sip:a@b>;expires=0, sip:c@d", True),
        ("Record-Route: <sip:p1@h;lr>, <sip:p2@h;lr>", True),
        ("Route: sip:p1@h;lr", True),
        ("Route: <sip:p1@h;lr", False),
        ("Expires: 3600", True),
        ("Expires: soon", False),
        ("Date: Sat, 13 Nov 2010 23:29:00 GMT", True),
        ("Date: Fri, 01 Jan 2010 16:00:00 EST", False),
        ("Content-Type: a/b\r\nContent-Type: c/d", False),
        ("Call-ID: other", False),
        ("To: <sip:x@y>", False),
    ],
)
def test_optional_structured_headers_are_checked_when_present(extra: str, ok: bool) -> None:
    data = basic(Content_Length=f"{extra}\r\nContent-Length: 0")
    if ok:
        msg = parse_message(data)
        msg.contacts  # noqa: B018
    else:
        with pytest.raises(SipParseError):
            parse_message(data)


def test_expires_is_delta_seconds_clamped_to_32_bits() -> None:
    assert parse_message(basic()).expires is None
    assert parse_message(basic(Content_Length="Expires: 0300\r\nContent-Length: 0")).expires == 300
    huge = parse_message(basic(Content_Length="Expires: " + "1" * 5000 + "\r\nContent-Length: 0"))
    assert huge.expires == 2**32 - 1


def test_bytearray_input_gives_a_bytes_body() -> None:
    msg = parse_message(bytearray(basic(Content_Length="Content-Length: 2") + b"ok"))
    assert type(msg.body) is bytes and msg.body == b"ok"


def test_contact_star_means_no_contacts() -> None:
    msg = parse_message(basic(Content_Length="Contact: *\r\nContent-Length: 0"))
    assert msg.contacts == []


def test_missing_required_headers_give_400_and_the_response_omits_what_is_missing() -> None:
    data = basic(To="X-Was-To:", From="X-Was-From:")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert "missing To" in info.value.reason
    request = answerable_request(info.value)
    assert request is not None
    response = error_response(request, info.value, to_tag="abc")
    names = [name for name, _ in response.headers]
    assert "To" not in names and "From" not in names and names[0] == "Via"
    assert parse_message(response.to_bytes().replace(b"Via:", b"To: <sip:x@y>\r\nFrom: <sip:y@z>;tag=1\r\nVia:"))


def test_too_many_header_fields() -> None:
    data = basic(Content_Length="X-A: 1\r\n" * (MAX_HEADERS + 1) + "Content-Length: 0")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert "header fields" in info.value.reason and answerable_request(info.value) is not None


# ---- size cap --------------------------------------------------------------------------------------------------------


def test_oversize_message_is_513_with_the_head_to_answer_from() -> None:
    data = basic(Content_Length="Content-Length: 70000") + b"x" * 70000
    with pytest.raises(MessageTooLarge) as info:
        parse_message(data)
    assert info.value.status == 513
    request = answerable_request(info.value)
    assert request is not None and error_response(request, info.value).status == 513
    assert parse_message(basic(), max_size=len(basic())).call_id
    with pytest.raises(MessageTooLarge):
        parse_message(basic(), max_size=len(basic()) - 1)


# ---- serialising ---------------------------------------------------------------------------------------------------


def test_serialising_a_built_request_and_response() -> None:
    request = Request("INVITE", "sip:bob@biloxi.com", Headers([("v", "SIP/2.0/UDP h;branch=z9hG4bK1")]), b"hi")
    request.headers.add("From", "<sip:a@h>;tag=1")
    data = request.to_bytes()
    assert data == (
        b"INVITE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
        b"Content-Length: 2\r\n\r\nhi"
    )
    assert bytes(request) == data
    assert Response(404).to_bytes() == b"SIP/2.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert Response(299).reason == "Unknown"


def test_content_length_keeps_its_position_and_tracks_the_body() -> None:
    msg = parse_message(basic(Content_Length="Content-Length: 0\r\nX-After: 1\r\nl: 0"))
    msg.body = b"abc"
    data = msg.to_bytes()
    assert data.endswith(b"Content-Length: 3\r\nX-After: 1\r\n\r\nabc")


def test_parsed_uri_follows_changes_to_the_uri() -> None:
    msg = flow("F1")
    assert isinstance(msg, Request)
    assert isinstance(msg.parsed_uri, SipURI) and msg.parsed_uri.host == "biloxi.com"
    msg.uri = "sip:bob@192.0.2.4"
    assert isinstance(msg.parsed_uri, SipURI) and msg.parsed_uri.host == "192.0.2.4"


def test_make_response_tags_and_timestamp() -> None:
    request = parse_message(basic(Content_Length="Timestamp: 54\r\nContent-Length: 0"))
    assert isinstance(request, Request)
    trying = make_response(request, 100, to_tag="t1")
    assert trying.to.tag is None and trying.headers.get("Timestamp") == "54"
    ok = make_response(request, 200, to_tag="t1")
    assert ok.to.tag == "t1" and "Timestamp" not in ok.headers
    already = parse_message(basic(To="To: <sip:ivr@192.0.2.10>;tag=t1"))
    assert isinstance(already, Request)
    tagged = make_response(already, 486, to_tag="t2")
    assert tagged.to.tag == "t1"  # an existing tag is kept


def test_error_response_warning_text_is_a_safe_quoted_string() -> None:
    request = parse_message(basic())
    assert isinstance(request, Request)
    response = error_response(request, SipParseError('bad "thing" \\ here\x00\r\n'))
    warning = response.headers.get("Warning")
    assert warning == "399 ivr \"bad 'thing' \\\\ here   \""
    assert parse_message(response.to_bytes())
    assert warning_header("x") == ("Warning", '399 ivr "x"')


# ---- TCP stream framing ----------------------------------------------------------------------------------------------


def stream_messages() -> list[bytes]:
    return [wire(RFC3261_FLOW["F1"]), (PEERS / "baresip_invite.sip").read_bytes(), wire(RFC3261_FLOW["F12"])]


def test_stream_framer_cuts_messages_by_content_length() -> None:
    messages = stream_messages()
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n" + messages[0] + b"\r\n" + messages[1] + messages[2][:10]) == messages[:2]
    assert framer.feed(messages[2][10:]) == [messages[2]]
    assert [parse_message(m, stream=True).call_id for m in messages]


def test_stream_framer_reassembles_a_message_split_at_every_byte() -> None:
    data = b"".join(stream_messages())
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(data)):
        out += framer.feed(data[i : i + 1])
    assert out == stream_messages()


def test_stream_framer_reads_compact_and_folded_content_length() -> None:
    msg = basic(Content_Length="l:\r\n 3") + b"abc"
    assert StreamFramer().feed(msg + msg) == [msg, msg]


@pytest.mark.parametrize(
    "data",
    [
        basic(Content_Length="X-No-Length: 1"),  # no Content-Length
        basic(Content_Length="Content-Length: 1\r\nContent-Length: 2"),
        basic(Content_Length="Content-Length: -5"),
        b"GET / HTTP/1.1\r\nHost: ivr\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the SIP port
        b"\x00\x00\x00",
        b"hello there world\r\n",  # no SIP version, no status line
    ],
)
def test_stream_framer_raises_on_what_cannot_be_framed(data: bytes) -> None:
    with pytest.raises(SipParseError):
        StreamFramer().feed(data)


def test_stream_framer_size_limits() -> None:
    with pytest.raises(MessageTooLarge):
        StreamFramer(max_size=1000).feed(basic(Content_Length="Content-Length: 5000"))
    with pytest.raises(MessageTooLarge):
        StreamFramer(max_size=100).feed(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 30)
    with pytest.raises(SipParseError):
        StreamFramer().feed(b"OPTIONS " + b"a" * (MAX_START_LINE + 10))
