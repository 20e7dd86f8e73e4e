"""Attached data written byte for byte: X-IVR-* headers, RFC 7433 User-to-User, Refer-To URI headers."""

from __future__ import annotations

import textwrap

from hypothesis import given
from hypothesis import strategies as st

from ivr.handoff.config import QueueEndpoint, UuiSettings, load_queues_text
from ivr.handoff.data import attach, decode_uui, encode_uui, escape_header_value, escape_uri_header, refer_to
from ivr.sip.refer import parse_refer_to


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
