"""Attached data written byte for byte: X-IVR-* headers, RFC 7433 User-to-User, Refer-To URI headers."""

from __future__ import annotations

import re
import textwrap

from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from ivr.handoff.config import QueueEndpoint, UuiSettings, load_queues_text
from ivr.handoff.data import (
    MAX_ATTACHED_HEADERS,
    MAX_FROM_USER,
    MAX_HEADER_VALUE,
    attach,
    decode_uui,
    encode_uui,
    escape_header_value,
    escape_uri_header,
    escape_user,
    refer_to,
)
from ivr.handoff.service import from_user
from ivr.sip.refer import parse_refer_to
from ivr.sip.uri import SipURI


def queue(extra: str = "") -> QueueEndpoint:
    text = textwrap.dedent(
        """
        queues:
          billing:
            uri: sip:billing@10.0.0.5:5090
            headers: {X-IVR-Account: account, X-IVR-Language: language}
            uui: {keys: [account, language, intent]}
        """
    )
    found = load_queues_text(text + extra).get("billing")
    assert found is not None
    return found


def test_headers_and_uui_for_the_billing_example_exactly() -> None:
    data = attach(queue(), {"account": "1234567", "language": "bg", "intent": "billing"})
    assert data.headers == (
        ("X-IVR-Account", "1234567"),
        ("X-IVR-Language", "bg"),
        # account=1234567&language=bg&intent=billing in hex
        ("User-to-User", "6163636f756e743d31323334353637266c616e67756167653d626726696e74656e743d62696c6c696e67"
                         ";encoding=hex"),
    )  # fmt: skip


def test_default_header_names_cover_every_key_and_empty_values_are_not_sent() -> None:
    endpoint = QueueEndpoint(uri="sip:q@10.0.0.5", uui=UuiSettings(enabled=False))
    data = attach(endpoint, {"account": "", "customer_tier": "gold"})
    assert data.headers == (("X-IVR-Customer-Tier", "gold"),)


def test_header_values_cannot_inject_headers() -> None:
    assert escape_header_value("42\r\nX-Evil: 1") == "42%0D%0AX-Evil: 1"
    assert escape_header_value("100%") == "100%25"
    assert escape_header_value("Иван Петров") == "Иван Петров"  # UTF-8 text is allowed in header values


def test_uui_keeps_keys_in_order_and_leaves_out_what_does_not_fit() -> None:
    settings = UuiSettings(keys=("account", "name", "language"), max_bytes=28)
    value, dropped = encode_uui({"account": "1234567", "name": "Very Long Name", "language": "bg"}, settings)
    assert value is not None and decode_uui(value) == {"account": "1234567", "language": "bg"}
    assert dropped == ["name"]
    assert len(bytes.fromhex(value.split(";")[0])) <= 28
    purpose = UuiSettings(purpose="isdn-interwork")
    assert (encode_uui({"a": "1"}, purpose)[0] or "").endswith(";encoding=hex;purpose=isdn-interwork")
    assert encode_uui({"a": "1"}, UuiSettings(enabled=False)) == (None, [])


def test_refer_to_escapes_every_header_value_per_rfc3261_19_1_1() -> None:
    data = attach(queue(), {"account": "12 34&x=1", "language": "bg", "intent": "billing"})
    text = refer_to(queue().sip_uri, data.headers)
    assert text.startswith("<sip:billing@10.0.0.5:5090?X-IVR-Account=12%2034%26x%3D1&X-IVR-Language=bg&")
    assert "%3Bencoding%3Dhex>" in text
    assert parse_refer_to(text).headers == data.headers
    assert escape_uri_header("a;b=c?d") == "a%3Bb%3Dc?d"
    assert refer_to("sip:q@10.0.0.5", ()) == "<sip:q@10.0.0.5>"


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), st.text(max_size=20), max_size=4))
def test_any_values_survive_refer_to_and_uui_unchanged(values: dict[str, str]) -> None:
    endpoint = QueueEndpoint(uri="sip:q@10.0.0.5", uui=UuiSettings(max_bytes=4096))
    data = attach(endpoint, values)
    target = parse_refer_to(refer_to(endpoint.sip_uri, data.headers))
    assert target.headers == data.headers and target.uri == "sip:q@10.0.0.5"
    for name, value in data.headers:
        assert "\r" not in value and "\n" not in value, name
    if data.uui is not None:
        assert decode_uui(data.uui) == {k: v for k, v in values.items() if v != ""}


# ---- what a caller can make long or strange is bounded and escaped -------------------------------------------------


def test_escape_user_keeps_a_number_and_escapes_the_rest_per_rfc3261_25_1() -> None:
    assert escape_user("+359888123456") == ("+359888123456", False)
    assert escape_user("a-b_c.d!e~f*g'h(i)j&k=l+m$n,o;p?q/r") == ("a-b_c.d!e~f*g'h(i)j&k=l+m$n,o;p?q/r", False)
    assert escape_user("Иван") == ("%D0%98%D0%B2%D0%B0%D0%BD", False)
    assert escape_user('a b@c:d<e>"f\\g#h\x00') == ("a%20b%40c%3Ad%3Ce%3E%22f%5Cg%23h%00", False)
    assert escape_user("%2B359%zz%") == ("%2B359%25zz%25", False)  # an escape as written is kept, a bare % is not


def test_escape_user_is_capped_between_escapes() -> None:
    user, cut = escape_user("9" * 3000)
    assert (user, cut) == ("9" * MAX_FROM_USER, True) and MAX_FROM_USER == 64
    user, cut = escape_user("1" * 62 + "Я")  # "Я" is %D0%AF: six characters that do not fit after 62
    assert (user, cut) == ("1" * 62, True)


@given(st.text(max_size=400))
def test_escaped_user_is_always_a_short_valid_sip_user(text: str) -> None:
    user, cut = escape_user(text)
    assert len(user) <= MAX_FROM_USER and cut == (len(user) < len(escape_user(text, 10**6)[0]))
    assert re.fullmatch(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})*", user)
    uri = SipURI.parse(f"sip:{user}@10.0.0.5") if user else None
    assert uri is None or uri.user == user


def test_from_user_of_the_queue_invite_is_escaped_capped_and_logged() -> None:
    endpoint = QueueEndpoint(uri="sip:q@10.0.0.5", name="billing")
    with capture_logs() as logs:
        user = from_user(endpoint, "Ω" * 3000)
    assert user == "%CE%A9" * 10 and len(user) <= MAX_FROM_USER
    assert logs == [{"event": "handoff From user cut", "log_level": "warning", "queue": "billing", "length": 3000,
                     "kept": 60, "limit": 64}]  # fmt: skip
    assert from_user(endpoint, "") == "ivr"
    assert from_user(endpoint, "0888123456") == "0888123456"
    assert from_user(QueueEndpoint(uri="sip:q@10.0.0.5", from_user="ivr line"), "0888") == "ivr%20line"


def test_long_header_values_are_cut_and_too_many_headers_left_out_with_a_log_never_an_error() -> None:
    endpoint = QueueEndpoint(uri="sip:q@10.0.0.5", name="billing", uui=UuiSettings(max_bytes=64))
    values = {"lang": "bg", "note": "x" * 5000, "pct": "%" * 200, **{f"k{i}": "v" * 250 for i in range(40)}}
    with capture_logs() as logs:
        data = attach(endpoint, values)
    named = dict(data.headers)
    assert named["X-IVR-Note"] == "x" * MAX_HEADER_VALUE
    assert named["X-IVR-Pct"] == "%25" * (MAX_HEADER_VALUE // 3)  # cut between escapes
    assert data.headers_cut == ("X-IVR-Note", "X-IVR-Pct")
    assert data.headers_dropped and sum(len(n) + 2 + len(v) for n, v in data.headers[:-1]) <= MAX_ATTACHED_HEADERS
    assert set(data.headers_dropped).isdisjoint(named)
    assert data.uui is not None and decode_uui(data.uui) == {"lang": "bg"}  # the UUI keeps its own bound, max_bytes
    events = [entry["event"] for entry in logs]
    assert events.count("handoff header value cut") == 2
    assert events.count("handoff header left out: the attached headers are full") == len(data.headers_dropped)
    assert all("x" * 20 not in str(entry) for entry in logs)  # lengths are logged, never the caller's data
