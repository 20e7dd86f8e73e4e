"""Errors raised by the sans-I/O SIP core.

Every error carries the SIP status a server should answer with, so the transport layer can turn any malformed input
into a response (or a silent drop where RFC 3261 says so) without knowing which rule was broken.
"""

from __future__ import annotations


class SipError(Exception):
    """A SIP protocol error that maps to a response status.

    ``status`` is the status code to answer (400, 416, 481, 505 ...), ``reason`` a short human text naming the rule
    that was broken; it is sent in a ``Warning`` header (code 399) so a peer's engineer can read why.
    """

    status: int = 400

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if status is not None:
            self.status = status
        # The message as far as it parsed (start line and header fields), so that a server can still answer a
        # request whose Via/From/To/Call-ID/CSeq are usable. Set by the parser; ``None`` when nothing usable parsed.
        self.partial: object | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.reason!r})"


class SipParseError(SipError):
    """Bytes that are not a well-formed SIP message (RFC 3261 section 25 grammar, section 18.3 framing)."""

    status = 400


class MessageTooLarge(SipParseError):
    """A message over the configured size cap (answered 513 Message Too Large when a response is possible)."""

    status = 513
