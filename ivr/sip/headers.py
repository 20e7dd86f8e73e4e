"""SIP header fields: a case-insensitive ordered multi-map, compact forms, and the structured headers the core reads.

Header names are normalised to their canonical spelling on the way in (``i`` -> ``Call-ID``, ``cseq`` -> ``CSeq``), so
that every lookup and every serialised message uses one spelling; values are kept as written (unfolded, trimmed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ivr.sip.errors import SipParseError
from ivr.sip.uri import format_params, is_digits, is_token, parse_header_params, parse_host_port

# RFC 3261 section 7.3.3 and later RFCs' compact forms.
COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID",
    "m": "Contact",
    "f": "From",
    "t": "To",
    "v": "Via",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "e": "Content-Encoding",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}

_CANONICAL = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
    "Content-Encoding", "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Event",
    "Expires", "From", "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires",
    "Organization", "P-Asserted-Identity", "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require",
    "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "Server", "Session-Expires", "SIP-ETag",
    "SIP-If-Match", "Subject", "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent",
    "User-to-User", "Via", "Warning", "WWW-Authenticate",
]
_CANONICAL_BY_LOWER = {name.lower(): name for name in _CANONICAL}

# Headers whose values may be comma-separated lists (RFC 3261 section 7.3.1). Authentication headers and others with
# commas inside single values are excluded on purpose.
LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events", "Call-Info", "Contact",
        "Content-Encoding", "Content-Language", "Error-Info", "In-Reply-To", "Proxy-Require", "Reason",
        "Record-Route", "Require", "Route", "Supported", "Unsupported", "Via", "Warning",
    )
)


# Every name a peer may write, lowercased -> canonical spelling (long names and compact forms).
_LOOKUP: dict[str, str] = {**COMPACT_FORMS, **_CANONICAL_BY_LOWER}
# Memo of name-as-written -> (canonical name, lowercase key). Bounded so that a peer sending ever-new header names
# cannot grow it without limit; past the bound names are simply computed each time.
_NAME_CACHE: dict[str, tuple[str, str]] = {}
_NAME_CACHE_MAX = 4096


def _names(name: str) -> tuple[str, str]:
    hit = _NAME_CACHE.get(name)
    if hit is None:
        canon = _LOOKUP.get(name.lower(), name)
        hit = (canon, canon.lower())
        if len(_NAME_CACHE) < _NAME_CACHE_MAX:
            _NAME_CACHE[name] = hit
    return hit


def canonical_name(name: str) -> str:
    """Canonical spelling of a header name; compact forms expanded; unknown names kept as written."""
    return _names(name)[0]


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quoted strings and <uri> brackets."""
    if "," not in value:
        stripped = value.strip()
        if '"' in stripped:
            _check_quotes_balanced(stripped)
        return [stripped] if stripped else []
    parts: list[str] = []
    depth = 0
    in_quote = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            part = value[start:i].strip()
            if part:
                parts.append(part)
            start = i + 1
        i += 1
    if in_quote:
        raise SipParseError(f"unterminated quoted string in {value[:80]!r}")
    last = value[start:].strip()
    if last:
        parts.append(last)
    return parts


def _check_quotes_balanced(value: str) -> None:
    i = 0
    n = len(value)
    in_quote = False
    while i < n:
        c = value[i]
        if in_quote and c == "\\":
            i += 2
            continue
        if c == '"':
            in_quote = not in_quote
        i += 1
    if in_quote:
        raise SipParseError(f"unterminated quoted string in {value[:80]!r}")


def _check_field(name: str, value: str) -> None:
    if not is_token(name):
        raise ValueError(f"header name {name!r} is not an RFC 3261 token")
    if "\r" in value or "\n" in value:
        raise ValueError(f"header value for {name} contains CR or LF (header injection): {value[:60]!r}")


class Headers:
    """Ordered, case-insensitive multi-map of header fields.

    Names are stored in their canonical spelling (``i`` -> ``Call-ID``); values as written. ``add``/``set``/
    ``prepend`` refuse a non-token name or a value with CR/LF, so no caller can inject header lines.
    """

    __slots__ = ("_fields",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # (lowercase key, canonical name, value)
        self._fields: list[tuple[str, str, str]] = []
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_parsed(cls, fields: list[tuple[str, str, str]]) -> Headers:
        """Adopt fields the parser already validated (token names, unfolded values) without re-checking them."""
        h = cls.__new__(cls)
        h._fields = fields
        return h

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n, v) for _, n, v in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _names(name)[1]
        return any(k == key for k, _, _ in self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._fields == other._fields

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        return Headers._from_parsed(list(self._fields))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field's value."""
        key = _names(name)[1]
        for k, _, v in self._fields:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every field value of this name, in order, as written (not split at commas)."""
        key = _names(name)[1]
        return [v for k, _, v in self._fields if k == key]

    def count(self, name: str) -> int:
        """How many fields of this name there are (``Call-ID`` twice is a 400; RFC 4475 ``multi01``)."""
        key = _names(name)[1]
        return sum(1 for k, _, _ in self._fields if k == key)

    def field_counts(self) -> dict[str, int]:
        """Lowercase canonical name -> number of fields, in one pass (for presence and uniqueness checks)."""
        counts: dict[str, int] = {}
        for key, _, _ in self._fields:
            counts[key] = counts.get(key, 0) + 1
        return counts

    def values(self, name: str) -> list[str]:
        """Every element of a list header across all its fields (``Via: a, b`` + ``Via: c`` -> [a, b, c])."""
        key = _names(name)[1]
        if key not in LIST_HEADERS:
            return self.get_all(name)
        out: list[str] = []
        for k, _, v in self._fields:
            if k == key:
                out.extend(split_list(v))
        return out

    def add(self, name: str, value: str) -> None:
        _check_field(name, value)
        canon, key = _names(name)
        self._fields.append((key, canon, value))

    def prepend(self, name: str, value: str) -> None:
        _check_field(name, value)
        canon, key = _names(name)
        self._fields.insert(0, (key, canon, value))

    def set(self, name: str, value: str) -> None:
        """Replace every field of this name with one field, kept at the first one's position."""
        _check_field(name, value)
        canon, key = _names(name)
        out: list[tuple[str, str, str]] = []
        placed = False
        for field_ in self._fields:
            if field_[0] == key:
                if not placed:
                    out.append((key, canon, value))
                    placed = True
            else:
                out.append(field_)
        if not placed:
            out.append((key, canon, value))
        self._fields = out

    def remove(self, name: str) -> None:
        key = _names(name)[1]
        self._fields = [f for f in self._fields if f[0] != key]


_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
# sent-protocol = protocol-name SLASH protocol-version SLASH transport, SLASH = SWS "/" SWS, then LWS sent-by.
_VIA_RE = re.compile(
    rf"[ \t]*(?P<name>{_TOKEN})[ \t]*/[ \t]*(?P<version>{_TOKEN})[ \t]*/[ \t]*(?P<transport>{_TOKEN})"
    r"[ \t]+(?P<rest>.*)",
    re.S,
)


@dataclass
class Via:
    """One Via header element: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport;received=1.2.3.4``."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse ``sent-protocol LWS sent-by *(SEMI via-params)``; blanks are allowed around ``/``, ``:``, ``;`` and
        ``=`` as the grammar's SLASH/COLON/SEMI/EQUAL allow (RFC 4475 ``wsinv``)."""
        m = _VIA_RE.fullmatch(text)
        if m is None:
            raise SipParseError(f"bad Via (expected 'SIP/2.0/transport host[:port]'): {text[:80]!r}")
        rest = m.group("rest")
        semi = rest.find(";")
        sent_by = (rest if semi < 0 else rest[:semi]).strip(" \t")
        host, port = _parse_sent_by(sent_by)
        params = parse_header_params(rest[semi:]) if semi >= 0 else {}
        rport = params.get("rport")
        if rport is not None and (not is_digits(rport) or len(rport) > 5 or int(rport) > 65535):
            raise SipParseError(f"bad rport value {rport[:20]!r}")
        ttl = params.get("ttl")
        if ttl is not None and (not is_digits(ttl) or len(ttl) > 3 or int(ttl) > 255):
            raise SipParseError(f"bad Via ttl {ttl[:20]!r}")
        if "branch" in params and (params["branch"] is None or not is_token(params["branch"] or "")):
            raise SipParseError(f"bad Via branch {params['branch']!r}")
        return cls(
            transport=m.group("transport").upper(),
            host=host,
            port=port,
            params=params,
            protocol=f"{m.group('name').upper()}/{m.group('version')}",
        )

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"


def _parse_sent_by(sent_by: str) -> tuple[str, int | None]:
    """``host [COLON port]`` where COLON = SWS ":" SWS."""
    if not sent_by:
        raise SipParseError("Via without sent-by host")
    if sent_by.startswith("["):
        end = sent_by.find("]")
        if end < 0:
            raise SipParseError(f"bad Via sent-by {sent_by[:60]!r}")
        host, after = sent_by[: end + 1], sent_by[end + 1 :].lstrip(" \t")
    else:
        colon = sent_by.find(":")
        host, after = (sent_by, "") if colon < 0 else (sent_by[:colon].rstrip(" \t"), sent_by[colon:])
    if after:
        if after[0] != ":":
            raise SipParseError(f"bad Via sent-by {sent_by[:60]!r}")
        return parse_host_port(host + ":" + after[1:].strip(" \t"))
    return parse_host_port(host)


@dataclass(frozen=True)
class CSeq:
    """``CSeq: 314159 INVITE``; the number is a 32-bit unsigned integer below 2**31 (RFC 3261 section 8.1.1.5)."""

    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2:
            raise SipParseError(f"CSeq must be '<number> <method>', got {text[:80]!r}")
        number_text, method = parts
        digits = number_text.lstrip("0") or "0"
        if not is_digits(number_text) or len(digits) > 10 or int(digits) >= 2**31:
            raise SipParseError(f"CSeq number {number_text[:20]!r} is not an integer below 2**31")
        if not is_token(method):
            raise SipParseError(f"bad CSeq method {method[:30]!r}")
        return cls(int(digits), method)

    def __str__(self) -> str:
        return f"{self.number} {self.method}"
