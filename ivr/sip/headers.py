"""SIP header fields: a case-insensitive ordered multi-map, compact forms, and the structured headers the core reads.

Header names are normalised to their canonical spelling on the way in (``i`` -> ``Call-ID``, ``cseq`` -> ``CSeq``), so
that every lookup and every serialised message uses one spelling; values are kept as written (unfolded, trimmed).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ivr.sip.errors import SipParseError
from ivr.sip.uri import format_params, is_token, parse_header_params

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


def canonical_name(name: str) -> str:
    """Canonical spelling of a header name; compact forms expanded; unknown names kept as written."""
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return _CANONICAL_BY_LOWER.get(lower, name)


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quoted strings and <uri> brackets."""
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


class Headers:
    """Ordered, case-insensitive multi-map of header fields."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name).lower()
        return any(n.lower() == key for n, _ in self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field's value."""
        key = canonical_name(name).lower()
        for n, v in self._items:
            if n.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every field value of this name, in order, as written (not split at commas)."""
        key = canonical_name(name).lower()
        return [v for n, v in self._items if n.lower() == key]

    def values(self, name: str) -> list[str]:
        """Every element of a list header across all its fields (``Via: a, b`` + ``Via: c`` -> [a, b, c])."""
        key = canonical_name(name).lower()
        out: list[str] = []
        for v in self.get_all(name):
            out.extend(split_list(v) if key in LIST_HEADERS else [v])
        return out

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        self._items.insert(0, (canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every field of this name with one field, kept at the first one's position."""
        canon = canonical_name(name)
        key = canon.lower()
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self._items:
            if n.lower() == key:
                if not placed:
                    out.append((canon, value))
                    placed = True
            else:
                out.append((n, v))
        if not placed:
            out.append((canon, value))
        self._items = out

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._items = [(n, v) for n, v in self._items if n.lower() != key]


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
        text = text.strip()
        proto, sep, rest = _split_ws(text)
        if not sep:
            raise SipParseError(f"Via without sent-by: {text[:80]!r}")
        parts = [p.strip() for p in proto.split("/")]
        if len(parts) != 3 or not all(is_token(p) for p in parts):
            raise SipParseError(f"bad Via protocol {proto!r}")
        semi = rest.find(";")
        sent_by = (rest if semi < 0 else rest[:semi]).strip()
        params_text = "" if semi < 0 else rest[semi:]
        host, port = _parse_sent_by(sent_by)
        params = parse_header_params(params_text)
        if "rport" in params and params["rport"] is not None:
            rport = params["rport"] or ""
            if not rport.isdigit() or int(rport) > 65535:
                raise SipParseError(f"bad rport value {rport!r}")
        return cls(
            transport=parts[2].upper(),
            host=host,
            port=port,
            params=params,
            protocol=f"{parts[0].upper()}/{parts[1]}",
        )

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"


def _split_ws(text: str) -> tuple[str, bool, str]:
    for i, c in enumerate(text):
        if c in " \t":
            return text[:i], True, text[i:].lstrip(" \t")
    return text, False, ""


def _parse_sent_by(sent_by: str) -> tuple[str, int | None]:
    sent_by = sent_by.replace(" ", "").replace("\t", "")
    if sent_by.startswith("["):
        end = sent_by.find("]")
        if end < 0:
            raise SipParseError(f"bad Via sent-by {sent_by!r}")
        host, after = sent_by[: end + 1], sent_by[end + 1 :]
        port_text = after[1:] if after.startswith(":") else None
        if after and port_text is None:
            raise SipParseError(f"bad Via sent-by {sent_by!r}")
    else:
        host, has_port, port_part = sent_by.partition(":")
        port_text = port_part if has_port else None
    if not host or any(c in host for c in "<>\"@;,"):
        raise SipParseError(f"bad Via host {host!r}")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
            raise SipParseError(f"bad Via port {port_text!r}")
        port = int(port_text)
    return host, port


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
        if not number_text.isdigit() or len(number_text) > 10 or int(number_text) >= 2**31:
            raise SipParseError(f"CSeq number {number_text[:20]!r} is not an integer below 2**31")
        if not is_token(method):
            raise SipParseError(f"bad CSeq method {method!r}")
        return cls(int(number_text), method)

    def __str__(self) -> str:
        return f"{self.number} {self.method}"
