"""DTMF in SIP INFO bodies, as real PBXs and gateways send them."""

from __future__ import annotations

import pytest

from ivr.sip.errors import SipError
from ivr.sip.info import InfoDigit, parse_dtmf_info


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/dtmf-relay", b"Signal=1\r\nDuration=160\r\n", InfoDigit("1", 160)),  # Cisco
        ("application/dtmf-relay", b"Signal= *\nDuration= 100\n", InfoDigit("*", 100)),  # Asterisk
        ("application/dtmf-relay", b"Signal=10\r\nDuration=250\r\n", InfoDigit("*", 250)),  # numeric * from gateways
        ("application/dtmf-relay", b"Signal=d\r\n", InfoDigit("D", 100)),
        ("application/dtmf-relay", b"Signal=9\r\nDuration=abc\r\n", InfoDigit("9", 100)),
        ("application/dtmf", b"#\r\n", InfoDigit("#", 100)),
    ],
)
def test_dtmf_bodies_give_their_key_and_duration(content_type: str, body: bytes, expected: InfoDigit) -> None:
    assert parse_dtmf_info(content_type, body) == expected


def test_empty_info_is_a_keepalive() -> None:
    assert parse_dtmf_info(None, b"") is None
    assert parse_dtmf_info("application/dtmf-relay", b"\r\n") is None


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/json", b"{}", 415),
        (None, b"Signal=1", 415),
        ("application/dtmf-relay", b"Signal=Z\r\n", 400),
        ("application/dtmf-relay", b"Duration=100\r\n", 400),
        ("application/dtmf", b"99", 400),
        ("application/dtmf", "\u0431".encode(), 400),
    ],
)
def test_bad_bodies_are_typed_errors(content_type: str | None, body: bytes, status: int) -> None:
    with pytest.raises(SipError) as info:
        parse_dtmf_info(content_type, body)
    assert info.value.status == status
