"""REFER and its implicit subscription (RFC 3515, RFC 3892 Referred-By, RFC 6665 Subscription-State), sans-I/O.

What both sides of a blind transfer need besides the endpoint's transactions: reading a Refer-To (the target and the
headers embedded in it, RFC 3261 19.1.1 escaping undone), writing and reading the ``message/sipfrag`` bodies of the
NOTIFYs (RFC 3420), and reading Event / Subscription-State.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ivr.sip.errors import SipError, SipParseError
from ivr.sip.message import REASON_PHRASES
from ivr.sip.uri import NameAddr, SipURI, unescape

__all__ = [
    "REFER_EVENT",
    "SIPFRAG",
    "ReferTarget",
    "SubscriptionState",
    "format_sipfrag",
    "parse_event",
    "parse_refer_to",
    "parse_sipfrag",
    "parse_subscription_state",
]

REFER_EVENT = "refer"
SIPFRAG = "message/sipfrag;version=2.0"
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6][0-9]{2})(?: (.*))?$")


@dataclass(frozen=True)
class ReferTarget:
    """A Refer-To: where to send the INVITE (``uri``, without ``?headers``), the headers to put in it (unescaped,
    in order), and the method (``INVITE`` unless the URI says ``method=``)."""

    uri: str
    headers: tuple[tuple[str, str], ...]
    method: str = "INVITE"


def parse_refer_to(value: str) -> ReferTarget:
    """Read a Refer-To header value (RFC 3515 2.1: a name-addr or addr-spec). Raises :class:`SipParseError` (400)."""
    try:
        address = NameAddr.parse(value)
    except SipError as exc:
        raise SipParseError(f"RFC 3515 2.1: unreadable Refer-To: {exc.reason}") from None
    uri = address.uri
    if not isinstance(uri, SipURI):
        return ReferTarget(str(uri), ())
    headers = tuple((unescape(name), unescape(val)) for name, val in uri.headers.items())
    method = uri.params.get("method") or "INVITE"
    bare = SipURI(uri.host, uri.user, uri.password, uri.port, uri.scheme,
                  {k: v for k, v in uri.params.items() if k != "method"}, {})  # fmt: skip
    return ReferTarget(str(bare), headers, method.upper())


def format_sipfrag(status: int, reason: str | None = None) -> bytes:
    """A ``message/sipfrag`` body of one status line (RFC 3515 2.4.5), e.g. ``SIP/2.0 200 OK``."""
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} is not a SIP status")
    text = reason if reason else REASON_PHRASES.get(status, "Unknown")
    return f"SIP/2.0 {status} {text}\r\n".encode()


def parse_sipfrag(body: bytes) -> tuple[int, str]:
    """The status code and reason of a sipfrag's status line. Raises :class:`SipParseError` (400)."""
    line = body.decode("utf-8", "replace").split("\n", 1)[0].rstrip("\r")
    match = _STATUS_LINE.match(line)
    if match is None:
        raise SipParseError(f"RFC 3515 2.4.5: the sipfrag does not start with a status line: {line[:60]!r}")
    return int(match.group(1)), match.group(2) or ""


def parse_event(value: str | None) -> tuple[str, str | None]:
    """The event package and its ``id`` parameter (RFC 6665 8.2.1), e.g. ``refer;id=93809824`` ->
    ``("refer", "93809824")``; ``("", None)`` when there is no Event header."""
    if not value:
        return "", None
    package, *params = (part.strip() for part in value.split(";"))
    event_id = next((p.partition("=")[2].strip() for p in params if p.lower().startswith("id=")), None)
    return package.lower(), event_id


@dataclass(frozen=True)
class SubscriptionState:
    state: str  # active | pending | terminated
    reason: str | None = None
    expires: int | None = None

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"


def parse_subscription_state(value: str | None) -> SubscriptionState:
    """Read Subscription-State (RFC 6665 8.2.3). Missing: ``active`` (RFC 3515 NOTIFYs must carry it, but a missing
    one is no reason to fail a transfer)."""
    if not value:
        return SubscriptionState("active")
    state, *params = (part.strip() for part in value.split(";"))
    found = {name.strip().lower(): val.strip() for name, _, val in (p.partition("=") for p in params)}
    expires = found.get("expires")
    return SubscriptionState(
        state.lower(), found.get("reason"), int(expires) if expires and expires.isdigit() else None
    )
