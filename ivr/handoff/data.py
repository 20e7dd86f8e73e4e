"""Attached data: what the IVR learned, written the way a contact centre reads it.

- SIP headers (``X-IVR-Account: 1234567``): values are UTF-8 text; control characters (CR, LF, ...) and ``%`` are
  percent-encoded so no value can end a header or start another one (header injection).
- ``User-to-User`` (RFC 7433): ``key=value&key=value`` (form-encoded, in the configured key order) as hex, with
  ``;encoding=hex``. Keys that do not fit in ``max_bytes`` (of the unencoded data) are left out, and said so.
- Refer-To with the data as URI headers (RFC 3261 19.1.1): every character outside ``unreserved`` and
  ``hnv-unreserved`` is %-escaped, so the transferee's INVITE carries exactly the header values above.
"""

from __future__ import annotations

import binascii
import string
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ivr.handoff.config import QueueEndpoint, UuiSettings
from ivr.sip.uri import SipURI

__all__ = [
    "AttachedData",
    "attach",
    "decode_uui",
    "encode_uui",
    "escape_header_value",
    "escape_uri_header",
    "refer_to",
]

# RFC 3261 25.1: hvalue = *( hnv-unreserved / unreserved / escaped ); the same set for hname.
_URI_HEADER_SAFE = frozenset(string.ascii_letters + string.digits + "-_.!~*'()" + "[]/?:+$")


def escape_header_value(value: str) -> str:
    """A header value safe to write: C0 controls, DEL and ``%`` become %XX (UTF-8); everything else is kept."""
    out: list[str] = []
    for char in value:
        code = ord(char)
        if code < 0x20 or code == 0x7F or char == "%":
            out.append(f"%{code:02X}")
        else:
            out.append(char)
    return "".join(out).strip(" ")


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
    """The data one handoff carries: SIP headers (in order, User-to-User last) and the keys the UUI left out."""

    headers: tuple[tuple[str, str], ...]
    uui_dropped: tuple[str, ...] = ()

    @property
    def uui(self) -> str | None:
        return next((value for name, value in self.headers if name == "User-to-User"), None)


def attach(queue: QueueEndpoint, data: Mapping[str, str]) -> AttachedData:
    """The headers ``queue`` gets for ``data``: its configured (or X-IVR-<Key>) headers, then User-to-User.
    Empty values are not sent."""
    headers: list[tuple[str, str]] = []
    if queue.headers is None:
        for key, value in data.items():
            name = queue.header_for(key)
            if name is not None and value != "":
                headers.append((name, escape_header_value(value)))
    else:
        for name, key in queue.headers.items():
            value = data.get(key, "")
            if value != "":
                headers.append((name, escape_header_value(value)))
    uui, dropped = encode_uui(data, queue.uui)
    if uui is not None:
        headers.append(("User-to-User", uui))
    return AttachedData(tuple(headers), tuple(dropped))


def refer_to(uri: SipURI | str, headers: Sequence[tuple[str, str]]) -> str:
    """The Refer-To value: ``<uri?Name=value&...>`` with every name and value escaped (RFC 3261 19.1.1)."""
    base = str(uri).partition("?")[0]
    if not headers:
        return f"<{base}>"
    query = "&".join(f"{escape_uri_header(name)}={escape_uri_header(value)}" for name, value in headers)
    return f"<{base}?{query}>"
