"""SIP URIs, name-addr / addr-spec, header parameters, Via, CSeq and the Headers multi-map (RFC 3261 19.1, 20, 25)."""

from __future__ import annotations

import pytest

from ivr.sip.errors import SipParseError
from ivr.sip.headers import COMPACT_FORMS, CSeq, Headers, Via, canonical_name, split_list
from ivr.sip.uri import AbsoluteURI, NameAddr, SipURI, is_token, parse_header_params, parse_uri, quote, unescape

# ---- SIP URIs ------------------------------------------------------------------------------------------------------


def test_sip_uri_with_every_component() -> None:
    uri = SipURI.parse("sips:alice:secret@atlanta.com:5061;transport=tcp;lr;maddr=239.255.255.1?subject=project&x=")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == ("sips", "alice", "secret", "atlanta.com", 5061)
    assert uri.params == {"transport": "tcp", "lr": None, "maddr": "239.255.255.1"}
    assert uri.headers == {"subject": "project", "x": ""}
    assert uri.transport == "tcp"
    assert str(uri) == "sips:alice:secret@atlanta.com:5061;transport=tcp;lr;maddr=239.255.255.1?subject=project&x="


def test_scheme_and_param_names_are_case_insensitive_values_are_kept() -> None:
    uri = SipURI.parse("SIP:ALICE@AtLanTa.CoM;Transport=UDP")
    assert uri.scheme == "sip" and uri.user == "ALICE" and uri.host == "AtLanTa.CoM"
    assert uri.params == {"transport": "UDP"} and uri.transport == "udp"


def test_userinfo_ends_at_the_first_at_sign_so_user_may_hold_reserved_characters() -> None:
    uri = SipURI.parse("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u%40example.net" and uri.host == "example.com" and uri.params == {}
    assert unescape(uri.user) == "user;par=u@example.net"
    odd = SipURI.parse("sip:a?b/c,d:p&w=1@h")
    assert (odd.user, odd.password, odd.host) == ("a?b/c,d", "p&w=1", "h")


def test_telephone_subscriber_user_and_escapes() -> None:
    uri = SipURI.parse("sip:+1-212-555-1212:1234@gateway.com;user=phone")
    assert uri.user == "+1-212-555-1212" and uri.password == "1234" and uri.params == {"user": "phone"}
    assert SipURI.parse("sip:%61lice@atlanta.com").user == "%61lice"


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::10]:5070", "[2001:db8::10]", 5070),
        ("sip:[2001:db8::10]", "[2001:db8::10]", None),
        ("sip:[2001:db8::10:5070]", "[2001:db8::10:5070]", None),  # RFC 5118 4.3: parses, port is inside
        ("sip:192.0.2.1:65535", "192.0.2.1", 65535),
        ("sip:my_host.example.com", "my_host.example.com", None),
    ],
)
def test_host_and_port_forms(text: str, host: str, port: int | None) -> None:
    uri = SipURI.parse(text)
    assert (uri.host, uri.port) == (host, port)


def test_host_port_strips_ipv6_brackets_and_defaults_the_port() -> None:
    assert SipURI.parse("sip:[::1]").host_port() == ("::1", 5060)
    assert SipURI.parse("sips:h:5071").host_port(5061) == ("h", 5071)


@pytest.mark.parametrize(
    "text",
    [
        "sip:",  # empty
        "tel:+1",  # wrong scheme for SipURI
        "sip:@host",  # empty user
        "sip:host:",  # empty port
        "sip:host:65536",
        "sip:host:5o60",
        "sip:host:²",  # str.isdigit() is True for it, int() is not
        "sip:host:" + "9" * 5000,  # would blow int()'s digit limit
        "sip:2001:db8::10",  # RFC 5118 4.2: IPv6 without brackets
        "sip:[2001:db8::10",
        "sip:[::1]x",
        "sip:user@example.com; lr",  # RFC 4475 lwsruri
        "sip:a b@host",
        "sip:host\x00",
        "sip:<host>",
        'sip:ho"st',
        "sip:host;;lr",
        "sip:host;=x",
        "sip:host?",
        "sip:host?novalue",
        "sip:ho$t",
    ],
)
def test_malformed_sip_uris_raise_sip_parse_error(text: str) -> None:
    with pytest.raises(SipParseError):
        SipURI.parse(text)


def test_parse_uri_dispatches_on_scheme_and_keeps_unknown_schemes_verbatim() -> None:
    assert isinstance(parse_uri("SIPS:bob@biloxi.com"), SipURI)
    tel = parse_uri("tel:+358-555-1234567;postd=pp22")
    assert isinstance(tel, AbsoluteURI) and tel.scheme == "tel" and tel.rest == "+358-555-1234567;postd=pp22"
    assert str(parse_uri("soap.beep://192.0.2.103:3002")) == "soap.beep://192.0.2.103:3002"
    for bad in ("<sip:user@example.com>", "1tel:+1", "tel:", "no-scheme", "tel:+1 2", ":x"):
        with pytest.raises(SipParseError):
            parse_uri(bad)


# ---- name-addr / addr-spec -----------------------------------------------------------------------------------------


def test_name_addr_with_quoted_display_name_and_escapes() -> None:
    na = NameAddr.parse(r'"Bob \"the builder\" \\o/" <sip:bob@biloxi.com>;tag=a6c85cf')
    assert na.display == 'Bob "the builder" \\o/'
    assert na.tag == "a6c85cf" and na.bracketed
    assert str(na) == r'"Bob \"the builder\" \\o/" <sip:bob@biloxi.com>;tag=a6c85cf'
    assert NameAddr.parse(str(na)) == na


def test_name_addr_token_display_names_with_and_without_space() -> None:
    assert NameAddr.parse("Bob <sip:bob@biloxi.com>").display == "Bob"
    assert NameAddr.parse("caller<sip:caller@example.com>;tag=323").display == "caller"
    assert NameAddr.parse("A. G. Bell <sip:agb@bell-telephone.com>").display == "A. G. Bell"
    assert NameAddr.parse("<sip:x@y>").display is None
    assert NameAddr.parse('"" <sip:x@y>').display == ""


def test_addr_spec_parameters_belong_to_the_header() -> None:
    na = NameAddr.parse("sip:+12125551212@server.phone2net.com;tag=887s;user=phone")
    assert not na.bracketed and na.display is None
    assert na.params == {"tag": "887s", "user": "phone"}
    assert isinstance(na.uri, SipURI) and na.uri.params == {}
    assert str(na) == "sip:+12125551212@server.phone2net.com;tag=887s;user=phone"


def test_name_addr_uri_parameters_stay_inside_the_brackets() -> None:
    na = NameAddr.parse("<sip:alice@pc33.atlanta.com;transport=tcp>;expires=60;q=0.7")
    assert isinstance(na.uri, SipURI) and na.uri.params == {"transport": "tcp"}
    assert na.params == {"expires": "60", "q": "0.7"}


def test_header_parameters_allow_blanks_around_separators_and_quoted_values() -> None:
    na = NameAddr.parse('<sip:a@b> ; tag = x1 ;  flag ; text="a;b\\"c" ')
    assert na.params == {"tag": "x1", "flag": None, "text": '"a;b\\"c"'}
    assert parse_header_params("") == {}
    assert parse_header_params(";Lr") == {"lr": None}


def test_absolute_uris_in_addresses() -> None:
    assert NameAddr.parse("isbn:2983792873").uri.scheme == "isbn"
    assert NameAddr.parse("<http://www.example.com>;tag=3234233").tag == "3234233"
    assert NameAddr.parse("<tel:+1-212-555-0101>").uri == AbsoluteURI("tel", "+1-212-555-0101")


@pytest.mark.parametrize(
    "text",
    [
        "",
        '"Mr. J. User <sip:j.user@example.com>',  # unterminated quote (RFC 4475 quotbal)
        '"Joe" sip:joe@example.org',  # quoted display name without <>
        "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",  # unquoted non-token display (baddn)
        '"Watson, Thomas" < sip:t.watson@example.org >',  # blanks inside <> (badaspec)
        "<sip:a@b",  # unterminated <
        "<>",
        "<sip:a@b> junk",
        "<sip:a@b>;;",  # empty parameter (badinv01)
        "<sip:a@b>;tag=",
        "<sip:a@b>;tag=\"x",
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # headers need <> (regbadct)
        "sip:a,b@host",
        "Ивáн <sip:a@b>",  # non-token characters in an unquoted display name
    ],
)
def test_malformed_addresses_raise_sip_parse_error(text: str) -> None:
    with pytest.raises(SipParseError):
        NameAddr.parse(text)


def test_quote_escapes_backslash_and_quote() -> None:
    assert quote('a"b\\c') == '"a\\"b\\\\c"'


def test_is_token() -> None:
    assert is_token("z9hG4bK-.!%*_+`'~") and not is_token("") and not is_token("a b") and not is_token("a/b")


# ---- Via ---------------------------------------------------------------------------------------------------------


def test_via_with_rport_received_and_ipv6() -> None:
    via = Via.parse("SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bKas3-111;rport;received=2001:db8::9:255")
    assert (via.protocol, via.transport, via.host, via.port) == ("SIP/2.0", "UDP", "[2001:db8::9:1]", 5060)
    assert via.params == {"branch": "z9hG4bKas3-111", "rport": None, "received": "2001:db8::9:255"}
    assert str(via) == "SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bKas3-111;rport;received=2001:db8::9:255"


def test_via_allows_lws_around_slashes_colon_semicolons_and_equals() -> None:
    via = Via.parse("SIP  /    2.0   / udp  192.168.255.111 :  5062 ; branch= z9hG4bK30239 ; rport = 5062")
    assert (via.protocol, via.transport, via.host, via.port) == ("SIP/2.0", "UDP", "192.168.255.111", 5062)
    assert via.params == {"branch": "z9hG4bK30239", "rport": "5062"}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP ;branch=z9hG4bKx",
        "SIP/2.0/UDP ho st",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP host;rport=x",
        "SIP/2.0/UDP host;rport=" + "1" * 5000,
        "SIP/2.0/UDP host;ttl=256",
        "SIP/2.0/UDP host;branch=\"quoted\"",
        "SIP/2.0/UDP [::1",
        "SIP/2.0/UDP <host>",
    ],
)
def test_malformed_vias_raise_sip_parse_error(text: str) -> None:
    with pytest.raises(SipParseError):
        Via.parse(text)


# ---- CSeq ----------------------------------------------------------------------------------------------------------


def test_cseq_with_leading_zeros_and_folded_whitespace() -> None:
    assert CSeq.parse("0009  INVITE") == CSeq(9, "INVITE")
    assert CSeq.parse("2147483647 ACK").number == 2**31 - 1
    assert CSeq.parse("0000000000000000001 BYE") == CSeq(1, "BYE")
    assert str(CSeq(314159, "INVITE")) == "314159 INVITE"


@pytest.mark.parametrize("text", ["", "1", "INVITE", "1 2 3", "-1 INVITE", "2147483648 INVITE", "x INVITE",
                                  "١٢ INVITE", "1 IN/VITE", "9" * 5000 + " INVITE"])  # fmt: skip
def test_malformed_cseq_raises_sip_parse_error(text: str) -> None:
    with pytest.raises(SipParseError):
        CSeq.parse(text)


# ---- Headers ---------------------------------------------------------------------------------------------------------


def test_compact_and_case_variant_names_map_to_one_canonical_name() -> None:
    assert {k: canonical_name(k) for k in "imftvlcks"} == {
        "i": "Call-ID", "m": "Contact", "f": "From", "t": "To", "v": "Via", "l": "Content-Length",
        "c": "Content-Type", "k": "Supported", "s": "Subject",
    }  # fmt: skip
    assert all(canonical_name(k.upper()) == v for k, v in COMPACT_FORMS.items())
    assert canonical_name("cAlL-iD") == "Call-ID" and canonical_name("WWW-authenticate") == "WWW-Authenticate"
    assert canonical_name("X-Custom-Thing") == "X-Custom-Thing"


def test_headers_lookup_is_case_insensitive_and_compact_aware() -> None:
    h = Headers([("v", "SIP/2.0/UDP a"), ("VIA", "SIP/2.0/UDP b, SIP/2.0/UDP c"), ("x-Foo", "1"), ("X-FOO", "2")])
    assert list(h) == [("Via", "SIP/2.0/UDP a"), ("Via", "SIP/2.0/UDP b, SIP/2.0/UDP c"), ("x-Foo", "1"),
                       ("X-FOO", "2")]  # fmt: skip
    assert h.get_all("via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b, SIP/2.0/UDP c"]
    assert h.values("v") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    assert h.get("X-foo") == "1" and h.get_all("x-foo") == ["1", "2"] and h.count("X-FOO") == 2
    assert "VIA" in h and "t" not in h and 3 not in h
    assert h.field_counts() == {"via": 2, "x-foo": 2}


def test_headers_set_prepend_remove_copy() -> None:
    h = Headers([("To", "a"), ("Via", "v1"), ("To", "b")])
    h.set("t", "c")
    assert list(h) == [("To", "c"), ("Via", "v1")]
    h.prepend("v", "v0")
    assert h.get_all("Via") == ["v0", "v1"]
    c = h.copy()
    c.remove("VIA")
    assert "Via" in h and "Via" not in c and len(c) == 1
    assert h != c and h == h.copy()


@pytest.mark.parametrize(("name", "value"), [("X-A", "a\r\nVia: evil"), ("X-A", "a\nb"), ("Bad Name", "v"),
                                             ("", "v"), ("X:Y", "v")])  # fmt: skip
def test_headers_refuse_header_injection(name: str, value: str) -> None:
    h = Headers()
    for op in (h.add, h.prepend, h.set):
        with pytest.raises(ValueError):
            op(name, value)
    with pytest.raises(ValueError):
        Headers([(name, value)])


def test_split_list_respects_quotes_and_angle_brackets() -> None:
    assert split_list('"Doe, John" <sip:a@b;x=1,2>, <sip:c@d> ,sip:e@f') == [
        '"Doe, John" <sip:a@b;x=1,2>', "<sip:c@d>", "sip:e@f"
    ]
    assert split_list('"a\\",b" <sip:x@y>') == ['"a\\",b" <sip:x@y>']
    assert split_list(" , ,") == [] and split_list("") == []
    for bad in ('"open, <sip:a@b>', '"open'):
        with pytest.raises(SipParseError):
            split_list(bad)
