"""Attached data: what the IVR learned, written the way a contact centre reads it.

- SIP headers (``X-IVR-Account: 1234567``): values are UTF-8 text; control characters (CR, LF, ...) and ``%`` are
  percent-encoded so no value can end a header or start another one (header injection).
- ``User-to-User`` (RFC 7433): ``key=value&key=value`` (form-encoded, in the configured key order) as hex, with
  ``;encoding=hex``. Keys that do not fit in ``max_bytes`` (of the unencoded data) are left out, and said so.
- Refer-To with the data as URI headers (RFC 3261 19.1.1): every character outside ``unreserved`` and
  ``hnv-unreserved`` is %-escaped, so the transferee's INVITE carries exactly the header values above.
- The user part of the queue INVITE's From (the caller's number, as the caller sent it): %-escaped as an RFC 3261
  ``user`` (:func:`escape_user`) and at most :data:`MAX_FROM_USER` characters.

What a caller can make long is bounded: a header value at :data:`MAX_HEADER_VALUE` characters (escaped), the
attached headers together at :data:`MAX_ATTACHED_HEADERS` characters (a header past it is left out). Cutting or
leaving out is logged (names and lengths, never the caller's data) and said in :class:`AttachedData`, never raised.
"""

from __future__ import annotations

import binascii
import string
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from ivr.handoff.config import QueueEndpoint, UuiSettings
from ivr.sip.uri import SipURI

__all__ = [
    "MAX_ATTACHED_HEADERS",
    "MAX_FROM_USER",
    "MAX_HEADER_VALUE",
    "AttachedData",
    "attach",
    "decode_uui",
    "encode_uui",
    "escape_header_value",
    "escape_uri_header",
    "escape_user",
    "refer_to",
]

log = structlog.get_logger("ivr.handoff")

MAX_FROM_USER = 64
"""Characters (escaped) of the user part of the From we send a queue: a telephone number with room to spare."""
MAX_HEADER_VALUE = 256
"""Characters (escaped) of one attached header's value."""
MAX_ATTACHED_HEADERS = 4096
"""Characters of all attached headers together (``Name: value``, User-to-User not counted: ``uui.max_bytes``)."""

# RFC 3261 25.1: hvalue = *( hnv-unreserved / unreserved / escaped ); the same set for hname.
_URI_HEADER_SAFE = frozenset(string.ascii_letters + string.digits + "-_.!~*'()" + "[]/?:+$")
# RFC 3261 25.1: user = 1*( unreserved / escaped / user-unreserved ), user-unreserved = & = + $ , ; ? /
_USER_SAFE = frozenset(string.ascii_letters + string.digits + "-_.!~*'()" + "&=+$,;?/")
_HEX = frozenset(string.hexdigits)


def _percent(char: str) -> str:
    """``char`` as %XX escapes of its UTF-8 octets (a lone surrogate, which has none, as ``?``)."""
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "replace"))


def _user_pieces(text: str) -> list[str]:
    pieces: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "%" and i + 2 < n and text[i + 1] in _HEX and text[i + 2] in _HEX:
            pieces.append(text[i : i + 3])  # already escaped (the caller's From as written): kept, not escaped twice
            i += 3
            continue
        pieces.append(char if char in _USER_SAFE else _percent(char))
        i += 1
    return pieces


def _cut(pieces: list[str], limit: int) -> tuple[str, bool]:
    """The pieces joined up to ``limit`` characters, never cutting a piece (an escape) in two; and whether any was
    left out."""
    size = 0
    for index, piece in enumerate(pieces):
        if size + len(piece) > limit:
            return "".join(pieces[:index]), True
        size += len(piece)
    return "".join(pieces), False


def escape_user(text: str, limit: int = MAX_FROM_USER) -> tuple[str, bool]:
    """``text`` as the user part of a SIP URI (RFC 3261 25.1: ``unreserved``, ``user-unreserved`` and ``escaped``;
    everything else %-escaped as UTF-8 octets, an escape already there kept) and at most ``limit`` characters,
    cut between escapes; and whether it was cut."""
    return _cut(_user_pieces(text), limit)


def _header_value_pieces(value: str) -> list[str]:
    out: list[str] = []
    for char in value.strip(" "):
        code = ord(char)
        if code < 0x20 or code == 0x7F or char == "%":
            out.append(f"%{code:02X}")
        else:
            out.append(char)
    return out


def escape_header_value(value: str) -> str:
    """A header value safe to write: C0 controls, DEL and ``%`` become %XX (UTF-8); everything else is kept."""
    return "".join(_header_value_pieces(value)).strip(" ")


def escape_uri_header(text: str) -> str:
    """RFC 3261 19.1.1: %-escape (UTF-8 octets) every character of a URI header name or value outside
    ``unreserved`` and ``hnv-unreserved``."""
    out: list[str] = []
    for char in text:
        if char in _URI_HEADER_SAFE:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def encode_uui(data: Mapping[str, str], settings: UuiSettings) -> tuple[str | None, list[str]]:
    """The User-to-User header value for ``data`` (None when nothing is carried) and the keys left out because
    they did not fit in ``settings.max_bytes``."""
    if not settings.enabled:
        return None, []
    keys = settings.keys if settings.keys is not None else tuple(data)
    parts: list[str] = []
    size = 0
    dropped: list[str] = []
    for key in keys:
        value = data.get(key)
        if value is None or value == "":
            continue
        part = f"{urllib.parse.quote(key, safe='')}={urllib.parse.quote(value, safe='')}"
        added = len(part) + (1 if parts else 0)
        if size + added > settings.max_bytes:
            dropped.append(key)
            continue
        parts.append(part)
        size += added
    if not parts:
        return None, dropped
    payload = "&".join(parts).encode("ascii")
    value = f"{binascii.hexlify(payload).decode('ascii')};encoding=hex"
    if settings.purpose:
        value += f";purpose={settings.purpose}"
    return value, dropped


def decode_uui(header: str) -> dict[str, str]:
    """Read back a User-to-User value written by :func:`encode_uui` (what a queue endpoint does with it)."""
    data, *params = header.split(";")
    encoding = next((p.split("=", 1)[1].strip().lower() for p in params if p.strip().startswith("encoding=")), None)
    if encoding != "hex":
        raise ValueError(f"User-to-User without encoding=hex: {header!r}")
    payload = binascii.unhexlify(data.strip()).decode("utf-8")
    return dict(urllib.parse.parse_qsl(payload, keep_blank_values=True, strict_parsing=True))


@dataclass(frozen=True)
class AttachedData:
    """The data one handoff carries: SIP headers (in order, User-to-User last), the keys the UUI left out, the
    headers whose values were cut at :data:`MAX_HEADER_VALUE` and those left out past :data:`MAX_ATTACHED_HEADERS`."""

    headers: tuple[tuple[str, str], ...]
    uui_dropped: tuple[str, ...] = ()
    headers_cut: tuple[str, ...] = ()
    headers_dropped: tuple[str, ...] = ()

    @property
    def uui(self) -> str | None:
        return next((value for name, value in self.headers if name == "User-to-User"), None)


def attach(queue: QueueEndpoint, data: Mapping[str, str]) -> AttachedData:
    """The headers ``queue`` gets for ``data``: its configured (or X-IVR-<Key>) headers, then User-to-User.
    Empty values are not sent."""
    wanted: list[tuple[str, str, str]] = []  # (header name, data key, value)
    if queue.headers is None:
        for key, value in data.items():
            name = queue.header_for(key)
            if name is not None and value != "":
                wanted.append((name, key, value))
    else:
        for name, key in queue.headers.items():
            value = data.get(key, "")
            if value != "":
                wanted.append((name, key, value))
    headers: list[tuple[str, str]] = []
    cut: list[str] = []
    left_out: list[str] = []
    total = 0
    for name, key, value in wanted:
        written, was_cut = _cut(_header_value_pieces(value), MAX_HEADER_VALUE)
        written = written.strip(" ")
        if was_cut:
            cut.append(name)
            log.warning("handoff header value cut", queue=queue.name, header=name, key=key, length=len(value),
                        kept=len(written), limit=MAX_HEADER_VALUE)  # fmt: skip
        if not written:
            continue
        size = len(name) + 2 + len(written)
        if total + size > MAX_ATTACHED_HEADERS:
            left_out.append(name)
            log.warning("handoff header left out: the attached headers are full", queue=queue.name, header=name,
                        key=key, size=size, limit=MAX_ATTACHED_HEADERS)  # fmt: skip
            continue
        total += size
        headers.append((name, written))
    uui, dropped = encode_uui(data, queue.uui)
    if dropped:
        log.info("handoff UUI keys left out: over uui.max_bytes", queue=queue.name, keys=list(dropped),
                 limit=queue.uui.max_bytes)  # fmt: skip
    if uui is not None:
        headers.append(("User-to-User", uui))
    return AttachedData(tuple(headers), tuple(dropped), tuple(cut), tuple(left_out))


def refer_to(uri: SipURI | str, headers: Sequence[tuple[str, str]]) -> str:
    """The Refer-To value: ``<uri?Name=value&...>`` with every name and value escaped (RFC 3261 19.1.1)."""
    base = str(uri).partition("?")[0]
    if not headers:
        return f"<{base}>"
    query = "&".join(f"{escape_uri_header(name)}={escape_uri_header(value)}" for name, value in headers)
    return f"<{base}?{query}>"
