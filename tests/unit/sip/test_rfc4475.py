"""RFC 4475 (SIP torture test messages) as parser test vectors.

Every message of the RFC is a literal file under ``vectors/rfc4475/NAME.sip``: the bytes of the RFC's message with CRLF
line ends, its ``<hex>`` notation expanded (``intmeth``'s NUL/BEL/DEL and UTF-8, ``unreason``'s UTF-8 reason,
``noreason``'s and ``trws``'s trailing spaces, ``mpart01``'s binary S/MIME part with its NUL and bare CR octets) and
``<allOneLine>`` lines joined. As in the RFC's archive, ``baddn`` ends without the empty line and ``dblreq`` carries a
second request after the first one's body.

``OUTCOMES`` says, for each message, what the parser must do and why (the RFC's words, shortened). Where the RFC
leaves a check to a layer above the parser (unknown Request-URI scheme -> 416, Require -> 420, Max-Forwards 0 at a
proxy -> 483 ...), the parser accepts the message and ``core`` names what the UA core / transaction layer must do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from ivr.sip.errors import SipError
from ivr.sip.headers import Headers
from ivr.sip.message import Request, Response, answerable_request, error_response, parse_message
from ivr.sip.uri import SipURI

VECTORS = Path(__file__).parent / "vectors" / "rfc4475"


@dataclass(frozen=True)
class Outcome:
    section: str
    title: str
    status: int | None  # None: parse_message accepts it; else the SipError status
    rfc: str  # what RFC 4475 says about it
    answered: bool = True  # for an error: a response can be sent (False: drop silently, e.g. a bad response)
    core: str = ""  # for an accepted message: what the layer above the parser must still do


ACCEPT = None

OUTCOMES: dict[str, Outcome] = {
    # ---- 3.1.1 valid messages: the parser must accept every one --------------------------------------------------
    "wsinv": Outcome("3.1.1.1", "A Short Tortuous INVITE", ACCEPT,
                     "All elements should treat this as a well-formed request."),
    "intmeth": Outcome("3.1.1.2", "Wide Range of Valid Characters", ACCEPT,
                       "Well formed; % is not an escape in a method, Call-ID or token.",
                       core="unknown method: an endpoint answers 501 with Allow"),
    "esc01": Outcome("3.1.1.3", "Valid Use of the % Escaping Mechanism", ACCEPT,
                     "A parser must accept this as a well-formed message."),
    "escnull": Outcome("3.1.1.4", "Escaped Nulls in URIs", ACCEPT,
                       "Parsers must accept this message; unescaping must not shorten the user name.",
                       core="REGISTER: compare AORs unescaped without truncating at %00"),
    "esc02": Outcome("3.1.1.5", "Use of % When It Is Not an Escape", ACCEPT,
                     "A parser should accept this message as well formed (RE%47IST%45R is not REGISTER).",
                     core="unknown method: an endpoint answers 501"),
    "lwsdisp": Outcome("3.1.1.6", "Message with No LWS between Display Name and <", ACCEPT,
                       "Elements should accept this request as well formed."),
    "longreq": Outcome("3.1.1.7", "Long Values in Header Fields", ACCEPT,
                       "Well-formed request with many and very long header field values."),
    "dblreq": Outcome("3.1.1.8", "Extra Trailing Octets in a UDP Datagram", ACCEPT,
                      "Handle the REGISTER normally; the octets after its body are noise (RFC 3261 18.3)."),
    "semiuri": Outcome("3.1.1.9", "Semicolon-Separated Parameters in URI User Part", ACCEPT,
                       "Well formed; the user part is 'user;par=u@example.net'."),
    "transports": Outcome("3.1.1.10", "Varied and Unknown Transport Types", ACCEPT,
                          "Parsers must accept this message as well formed."),
    "mpart01": Outcome("3.1.1.11", "Multipart MIME Message", ACCEPT,
                       "Parsers must accept this message; receivers must frame the binary body properly."),
    "unreason": Outcome("3.1.1.12", "Unusual Reason Phrase", ACCEPT,
                        "This response is well formed. A parser must accept this message."),
    "noreason": Outcome("3.1.1.13", "Empty Reason Phrase", ACCEPT,
                        "This well-formed response contains no reason phrase. A parser must accept this message."),
    # ---- 3.1.2 invalid messages ------------------------------------------------------------------------------------
    "badinv01": Outcome("3.1.2.1", "Extraneous Header Field Separators", 400,
                        "Syntactically invalid; respond with a 400 Bad Request."),
    "clerr": Outcome("3.1.2.2", "Content Length Larger Than Message", 400,
                     "Over UDP, respond with a 400 Bad Request."),
    "ncl": Outcome("3.1.2.3", "Negative Content-Length", 400,
                   "Respond with an error; over TCP the framing error is unrecoverable: close the connection."),
    "scalar02": Outcome("3.1.2.4", "Request Scalar Fields with Overlarge Values", 400,
                        "Respond with a 400 Bad Request due to the CSeq error."),
    "scalarlg": Outcome("3.1.2.5", "Response Scalar Fields with Overlarge Values", 400,
                        "An element receiving this response will simply discard it.", answered=False),
    "quotbal": Outcome("3.1.2.6", "Unterminated Quoted String in Display Name", 400,
                       "An element receiving this request should return a 400 Bad Request error."),
    "ltgtruri": Outcome("3.1.2.7", "<> Enclosing Request-URI", 400,
                        "It is reasonable always to reject a request with this error with a 400 Bad Request."),
    "lwsruri": Outcome("3.1.2.8", "Malformed SIP Request-URI (embedded LWS)", 400,
                       "Respond with a 400 Bad Request."),
    "lwsstart": Outcome("3.1.2.9", "Multiple SP Separating Request-Line Elements", 400,
                        "It is acceptable to reject this request as malformed."),
    "trws": Outcome("3.1.2.10", "SP Characters at End of Request-Line", 400,
                    "It is acceptable to reject this request as malformed."),
    "escruri": Outcome("3.1.2.11", "Escaped Headers in SIP Request-URI", 400,
                       "It is acceptable for an element to reject this request with a 400 Bad Request."),
    "baddate": Outcome("3.1.2.12", "Invalid Time Zone in Date Header Field", 400,
                       "It is acceptable to reject this request as malformed (only GMT is allowed)."),
    "regbadct": Outcome("3.1.2.13", "Failure to Enclose name-addr URI in <>", 400,
                        "It is reasonable to respond with a 400 Bad Request."),
    "badaspec": Outcome("3.1.2.14", "Spaces within addr-spec", 400,
                        "It is reasonable to reject this request with a 400 Bad Request response."),
    "baddn": Outcome("3.1.2.15", "Non-token Characters in Display Name", 400,
                     "It is reasonable always to reject this kind of error with a 400 Bad Request response."),
    "badvers": Outcome("3.1.2.16", "Unknown Protocol Version", 505,
                       "The element should respond to the request with a 505 Version Not Supported error."),
    "mismatch01": Outcome("3.1.2.17", "Start Line and CSeq Method Mismatch", 400,
                          "Any element receiving this request will respond with a 400 Bad Request."),
    "mismatch02": Outcome("3.1.2.18", "Unknown Method with CSeq Method Mismatch", 400,
                          "Respond with a 501 Not Implemented; a 400 Bad Request is also acceptable (we send 400)."),
    "bigcode": Outcome("3.1.2.19", "Overlarge Response Code", 400,
                       "An element receiving this response should simply drop it.", answered=False),
    # ---- 3.2 transaction layer -------------------------------------------------------------------------------------
    "badbranch": Outcome("3.2.1", "Missing Transaction Identifier", ACCEPT,
                         "A parser must not break; the element may answer 400 or fall back to RFC 2543 matching.",
                         core="transaction layer: 'z9hG4bK' alone is no RFC 3261 branch (400 or 2543 matching)"),
    # ---- 3.3 application layer -------------------------------------------------------------------------------------
    "insuf": Outcome("3.3.1", "Missing Required Header Fields", 400,
                     "Must not break because of the missing information; ideally respond with a 400 Bad Request."),
    "unkscm": Outcome("3.3.2", "Request-URI with Unknown Scheme", ACCEPT,
                      "A parser must accept this as a well-formed SIP request.",
                      core="UA core answers 416 Unsupported URI Scheme"),
    "novelsc": Outcome("3.3.3", "Request-URI with Known but Atypical Scheme", ACCEPT,
                       "A parser must accept this as a well-formed SIP request.",
                       core="UA core answers 416 (or 404 for URIs of a scheme it may accept)"),
    "unksm2": Outcome("3.3.4", "Unknown URI Schemes in Header Fields", ACCEPT,
                      "Syntactically valid; parsers must not fail. A registrar rejects it with 400 (To is no AOR).",
                      core="REGISTER at the IVR: 405/501; a registrar would answer 400"),
    "bext01": Outcome("3.3.5", "Proxy-Require and Require", ACCEPT,
                      "Respond 420 Bad Extension with an Unsupported header field listing the option tags.",
                      core="UA core answers 420 with Unsupported: nothingSupportsThis, nothingSupportsThisEither"),
    "invut": Outcome("3.3.6", "Unknown Content-Type", ACCEPT,
                     "Syntactically valid; an endpoint rejects it with 415 Unsupported Media Type.",
                     core="UA core answers 415 with Accept: application/sdp"),
    "regaut01": Outcome("3.3.7", "Unknown Authorization Scheme", ACCEPT,
                        "Well formed; a parser must not fail. Registrars ignore it or challenge with 401.",
                        core="REGISTER at the IVR: 405 (or 401 with a scheme we understand)"),
    "multi01": Outcome("3.3.8", "Multiple Values in Single Value Required Fields", 400,
                       "An element receiving this request would respond with a 400 Bad Request error."),
    "mcl01": Outcome("3.3.9", "Multiple Content-Length Values", 400,
                     "Equivalent to an invalid Content-Length: respond with an error (close a TCP connection)."),
    "bcast": Outcome("3.3.10", "200 OK Response with Broadcast Via Header Field Value", ACCEPT,
                     "Well formed; parsers must not fail. Endpoints discard it; proxies should drop it.",
                     core="UAC: discard a response with more than one Via (RFC 3261 8.1.3.3)"),
    "zeromf": Outcome("3.3.11", "Max-Forwards of Zero", ACCEPT,
                      "Legal. A proxy answers 483 Too Many Hops; an endpoint processes it as if still positive.",
                      core="the IVR is an endpoint: process normally (483 only when acting as a proxy/B2BUA leg)"),
    "cparam01": Outcome("3.3.12", "REGISTER with a Contact Header Parameter", ACCEPT,
                        "'unknownparam' is a contact-param, not a url-param; the REGISTER should succeed."),
    "cparam02": Outcome("3.3.13", "REGISTER with a url-parameter", ACCEPT,
                        "'unknownparam' is a url-parameter of the bound URI."),
    "regescrt": Outcome("3.3.14", "REGISTER with a URL Escaped Header", ACCEPT,
                        "Well formed; a registrar must store the whole URI, headers included."),
    "sdp01": Outcome("3.3.15", "Unacceptable Accept Offering", ACCEPT,
                     "Respond 406 Not Acceptable (Warning 399) or 400: every INVITE UA supports application/sdp.",
                     core="UA core answers 406 (or 400): Accept lacks application/sdp"),
    # ---- 3.4 backward compatibility --------------------------------------------------------------------------------
    "inv2543": Outcome("3.4.1", "INVITE with RFC 2543 Syntax", ACCEPT,
                       "Legal RFC 2543 message; accept it to stay backwards compatible.",
                       core="no branch (2543 transaction matching), no From tag, no Max-Forwards, no Content-Length"),
}  # fmt: skip


def without_length(headers: Headers) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name != "Content-Length"]


def load(name: str) -> bytes:
    return (VECTORS / f"{name}.sip").read_bytes()


def test_every_rfc4475_message_has_a_vector_and_an_outcome() -> None:
    on_disk = sorted(p.stem for p in VECTORS.glob("*.sip"))
    assert on_disk == sorted(OUTCOMES)
    sections = [o.section for o in OUTCOMES.values()]
    assert len(set(sections)) == len(sections) == 49
    assert sum(s.startswith("3.1.1.") for s in sections) == 13
    assert sum(s.startswith("3.1.2.") for s in sections) == 19
    assert sum(s.startswith("3.3.") for s in sections) == 15


def test_vectors_are_crlf_wire_bytes() -> None:
    for name in OUTCOMES:
        data = load(name)
        head = data.split(b"\r\n\r\n", 1)[0]
        assert b"\n" not in head.replace(b"\r\n", b""), name


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_rfc4475_message_gets_the_outcome_the_rfc_names(name: str) -> None:
    outcome = OUTCOMES[name]
    data = load(name)
    if outcome.status is None:
        msg = parse_message(data)
        # Accepted messages are fully usable: no typed accessor may raise.
        msg.from_, msg.to, msg.cseq, msg.vias, msg.top_via, msg.contacts, msg.call_id  # noqa: B018
        msg.max_forwards, msg.expires  # noqa: B018
        if isinstance(msg, Request):
            msg.parsed_uri  # noqa: B018
        return
    with pytest.raises(SipError) as info:
        parse_message(data)
    error = info.value
    assert error.status == outcome.status, f"{name}: {error!r}"
    assert error.reason
    request = answerable_request(error)
    if not outcome.answered:
        assert request is None
        return
    assert request is not None, f"{name}: no partial request to answer ({error!r})"
    response = error_response(request, error, to_tag="ivr1")
    assert response.status == outcome.status
    wire = response.to_bytes()
    assert wire.startswith(f"SIP/2.0 {outcome.status} ".encode())
    assert b"Warning: 399 ivr " in wire
    # What we send back is itself a well-formed message carrying the request's Via and Call-ID.
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert response.headers.get("Call-ID") == request.headers.get("Call-ID")


@pytest.mark.parametrize("name", sorted(n for n, o in OUTCOMES.items() if o.status is None))
def test_accepted_rfc4475_message_round_trips(name: str) -> None:
    msg = parse_message(load(name))
    again = parse_message(msg.to_bytes())
    assert type(again) is type(msg)
    # Same fields in the same order; Content-Length always states the body (added when the datagram had none).
    assert without_length(again.headers) == without_length(msg.headers)
    assert again.headers.get_all("Content-Length") == [str(len(msg.body))]
    assert again.body == msg.body
    if isinstance(msg, Request):
        assert isinstance(again, Request)
        assert (again.method, again.uri, again.version) == (msg.method, msg.uri, msg.version)
    else:
        assert isinstance(again, Response) and isinstance(msg, Response)
        assert (again.status, again.reason) == (msg.status, msg.reason)


def test_wsinv_folding_compact_forms_and_lws_everywhere() -> None:
    msg = parse_message(load("wsinv"))
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert msg.to.tag == "1918181833n" and msg.to.display is None
    assert msg.from_.display == 'J Rosenberg \\"' and msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68
    assert (msg.cseq.number, msg.cseq.method) == (9, "INVITE")
    vias = msg.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""  # "s :" with an empty value
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = msg.contacts
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert msg.headers.values("Route") == ["<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"]
    assert len(msg.body) == 150 and msg.content_type == "application/sdp"


def test_intmeth_unusual_characters_and_binary_display_name() -> None:
    msg = parse_message(load("intmeth"))
    assert isinstance(msg, Request)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = msg.parsed_uri
    assert isinstance(uri, SipURI)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    assert msg.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.vias[0].branch == "z9hG4bK-.!%66*_+`'~"
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_escaping_is_kept_as_written_in_uris() -> None:
    esc01 = parse_message(load("esc01"))
    assert isinstance(esc01, Request)
    ruri = esc01.parsed_uri
    assert isinstance(ruri, SipURI) and ruri.user == "sips%3Auser%40example.com" and ruri.host == "example.net"
    contact_uri = esc01.contacts[0].uri
    assert isinstance(contact_uri, SipURI)
    assert contact_uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    assert esc01.headers.get("Content-Type") == "application/sdp"  # compact "C"
    escnull = parse_message(load("escnull"))
    users = [c.uri.user for c in escnull.contacts if isinstance(c.uri, SipURI)]
    assert users == ["%00", "%00%00"]


def test_esc02_percent_is_no_escape_in_method_display_name_or_header_name() -> None:
    msg = parse_message(load("esc02"))
    assert isinstance(msg, Request) and msg.method == "RE%47IST%45R"
    assert msg.to.display == "%Z%45"
    assert [str(c.uri) for c in msg.contacts] == ["sip:alias1@host1.example.com", "sip:alias3@host3.example.com"]
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_and_longreq() -> None:
    assert parse_message(load("lwsdisp")).from_.display == "caller"
    longreq = parse_message(load("longreq"))
    vias = longreq.vias
    assert len(vias) == 34
    assert [v.host for v in vias[:3]] == ["sip33.example.com", "sip32.example.com", "sip31.example.com"]
    assert vias[-1].params["received"] == "192.0.2.5"
    assert longreq.to.display is not None and longreq.to.display.endswith(" proportion")
    assert longreq.from_.tag is not None and len(longreq.from_.tag) == 155


def test_dblreq_discards_the_octets_after_content_length() -> None:
    msg = parse_message(load("dblreq"))
    assert isinstance(msg, Request) and msg.method == "REGISTER"
    assert msg.body == b""
    assert b"INVITE" not in msg.to_bytes()


def test_semiuri_user_part_keeps_its_semicolon_parameters() -> None:
    msg = parse_message(load("semiuri"))
    assert isinstance(msg, Request)
    uri = msg.parsed_uri
    assert isinstance(uri, SipURI) and uri.user == "user;par=u%40example.net" and uri.params == {}
    assert msg.headers.values("Accept") == [
        "application/sdp", "application/pkcs7-mime", "multipart/mixed", "multipart/signed", "message/sip",
        "message/sipfrag",
    ]  # fmt: skip


def test_transports_and_multipart_binary_body() -> None:
    assert [v.transport for v in parse_message(load("transports")).vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    msg = parse_message(load("mpart01"))
    assert len(msg.body) == 553
    assert b"\x00" in msg.body and b"\x0d\x01" in msg.body
    assert msg.body.endswith(b"--7a9cbec02ceef655--\r\n")
    assert msg.vias[0].params == {"branch": "z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-", "rport": None}


def test_reason_phrases_utf8_and_empty() -> None:
    unreason = parse_message(load("unreason"))
    assert isinstance(unreason, Response) and unreason.status == 200
    assert unreason.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    noreason = parse_message(load("noreason"))
    assert isinstance(noreason, Response) and (noreason.status, noreason.reason) == (100, "")
    assert noreason.to_bytes().startswith(b"SIP/2.0 100 \r\n")


def test_contact_parameters_belong_to_the_header_unless_bracketed() -> None:
    (c1,) = parse_message(load("cparam01")).contacts
    assert c1.params == {"unknownparam": None} and isinstance(c1.uri, SipURI) and c1.uri.params == {}
    (c2,) = parse_message(load("cparam02")).contacts
    assert c2.params == {} and isinstance(c2.uri, SipURI) and c2.uri.params == {"unknownparam": None}
    (c3,) = parse_message(load("regescrt")).contacts
    assert isinstance(c3.uri, SipURI) and c3.uri.headers == {"Route": "%3Csip:sip.example.com%3E"}


def test_application_layer_messages_parse_for_the_core_to_judge() -> None:
    unkscm = parse_message(load("unkscm"))
    assert isinstance(unkscm, Request) and unkscm.parsed_uri.scheme == "nobodyknowsthisscheme"
    novelsc = parse_message(load("novelsc"))
    assert isinstance(novelsc, Request) and novelsc.parsed_uri.scheme == "soap.beep"
    unksm2 = parse_message(load("unksm2"))
    assert (unksm2.to.uri.scheme, unksm2.from_.uri.scheme, unksm2.contacts[0].uri.scheme) == ("isbn", "http", "name")
    require = parse_message(load("bext01")).headers.values("Require")
    assert require == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert parse_message(load("zeromf")).max_forwards == 0
    assert len(parse_message(load("bcast")).vias) == 2
    inv2543 = parse_message(load("inv2543"))
    assert inv2543.top_via.branch is None and inv2543.from_.tag is None and inv2543.max_forwards is None
    assert inv2543.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")  # no Content-Length: the rest of the datagram
    assert parse_message(load("badbranch")).top_via.branch == "z9hG4bK"


def test_truncated_and_negative_content_length_over_a_stream_are_framing_errors() -> None:
    for name in ("clerr", "ncl", "mcl01"):
        with pytest.raises(SipError) as info:
            parse_message(load(name), stream=True)
        assert info.value.status == 400
