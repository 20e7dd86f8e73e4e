"""SIP and SIPS URIs (RFC 3261 section 19.1) and the name-addr form used in From/To/Contact/Route.

Parsing keeps escaped characters as they were written (``%40`` stays ``%40`` in ``user``) so that serialising a parsed
URI gives back what the peer sent; ``unescape`` is there for comparisons and display.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from ivr.sip.errors import SipParseError

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*$")
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)$")
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 3261 ``token``."""
    return bool(text) and all(c in _TOKEN_CHARS for c in text)


def unescape(text: str) -> str:
    """Decode %XX escapes (RFC 3261 section 19.1.2)."""
    return unquote(text)


def _split_params(text: str, sep: str = ";") -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for part in text.split(sep):
        if not part:
            continue
        if "=" in part:
            name, _, value = part.partition("=")
            params[name.strip().lower()] = value.strip()
        else:
            params[part.strip().lower()] = None
    return params


def format_params(params: dict[str, str | None], sep: str = ";") -> str:
    """Serialise a parameter dict as ``;name=value;flag``."""
    return "".join(f"{sep}{k}" if v is None else f"{sep}{k}={v}" for k, v in params.items())


@dataclass
class SipURI:
    """``sip:`` / ``sips:`` URI. Other schemes (tel:, urn:) are represented by :class:`AbsoluteURI`."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SipURI:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        if not colon or scheme.lower() not in ("sip", "sips"):
            raise SipParseError(f"not a sip: or sips: URI: {text[:80]!r}")
        if not rest:
            raise SipParseError("empty SIP URI")
        if any(c in rest for c in " \t\r\n<>\""):
            raise SipParseError(f"illegal character in SIP URI {text[:80]!r}")
        rest, _, hdrs = rest.partition("?")
        userinfo: str | None = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            if not userinfo:
                raise SipParseError(f"empty user part in SIP URI {text[:80]!r}")
        hostport, _, params_text = rest.partition(";")
        user = password = None
        if userinfo is not None:
            user, has_pw, pw = userinfo.partition(":")
            password = pw if has_pw else None
        host, port = _parse_hostport(hostport, text)
        headers: dict[str, str] = {}
        if hdrs:
            for part in hdrs.split("&"):
                name, eq, value = part.partition("=")
                if not name or not eq:
                    raise SipParseError(f"malformed URI header {part!r} in {text[:80]!r}")
                headers[name] = value
        return cls(
            host=host,
            user=user,
            password=password,
            port=port,
            scheme=scheme.lower(),
            params=_split_params(params_text),
            headers=headers,
        )

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    @property
    def transport(self) -> str:
        """The ``transport`` URI parameter, lowercase, ``udp`` when absent."""
        value = self.params.get("transport")
        return (value or "udp").lower()

    def host_port(self, default_port: int = 5060) -> tuple[str, int]:
        """Host (IPv6 brackets removed) and port, with the scheme's default port when absent."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return host, self.port if self.port is not None else default_port


@dataclass
class AbsoluteURI:
    """A URI of a scheme we do not interpret (``tel:``, ``urn:``, ``http:``); kept verbatim."""

    scheme: str
    rest: str

    @classmethod
    def parse(cls, text: str) -> AbsoluteURI:
        scheme, colon, rest = text.strip().partition(":")
        if not colon or not _SCHEME_RE.match(scheme):
            raise SipParseError(f"not an absolute URI: {text[:80]!r}")
        if any(c in rest for c in " \t\r\n<>"):
            raise SipParseError(f"illegal character in URI {text[:80]!r}")
        return cls(scheme.lower(), rest)

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


URI = SipURI | AbsoluteURI


def parse_uri(text: str) -> URI:
    """Parse any URI: ``sip``/``sips`` into :class:`SipURI`, other schemes into :class:`AbsoluteURI`."""
    scheme = text.strip().partition(":")[0].lower()
    if scheme in ("sip", "sips"):
        return SipURI.parse(text)
    return AbsoluteURI.parse(text)


def _parse_hostport(hostport: str, whole: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {whole[:80]!r}")
        host, after = hostport[: end + 1], hostport[end + 1 :]
        if after and not after.startswith(":"):
            raise SipParseError(f"junk after IPv6 reference in {whole[:80]!r}")
        port_text = after[1:] if after else None
    else:
        host, has_port, port_part = hostport.partition(":")
        port_text = port_part if has_port else None
    if not host or not _HOST_RE.match(host):
        raise SipParseError(f"bad host {host!r} in {whole[:80]!r}")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
            raise SipParseError(f"bad port {port_text!r} in {whole[:80]!r}")
        port = int(port_text)
    return host, port


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted-string starting at ``text[start] == '"'``; return (unescaped content, index after it)."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text):
                break
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise SipParseError(f"unterminated quoted string in {text[:80]!r}")


def quote(text: str) -> str:
    """Quote a display name or parameter value (RFC 3261 quoted-string with quoted-pair escapes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class NameAddr:
    """``"Display" <uri>;tag=x`` or ``uri;tag=x`` (From, To, Contact, Route, Record-Route, Refer-To)."""

    uri: URI
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    bracketed: bool = True

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        if not text:
            raise SipParseError("empty address")
        display: str | None = None
        i = 0
        if text.startswith('"'):
            display, i = _read_quoted(text, 0)
            while i < len(text) and text[i] in " \t":
                i += 1
            if i >= len(text) or text[i] != "<":
                raise SipParseError(f"quoted display name without <uri> in {text[:80]!r}")
        lt = text.find("<", i)
        if lt >= 0:
            if display is None:
                name = text[i:lt].strip()
                display = name or None
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError(f"unterminated <uri> in {text[:80]!r}")
            uri = parse_uri(text[lt + 1 : gt])
            rest = text[gt + 1 :].strip()
            if rest and not rest.startswith(";"):
                raise SipParseError(f"junk after <uri> in {text[:80]!r}")
            return cls(uri=uri, display=display, params=_parse_header_params(rest), bracketed=True)
        # addr-spec: parameters after the URI belong to the header, and the URI can have no params or headers.
        uri_text, _, rest = text.partition(";")
        if " " in uri_text.strip() or "?" in uri_text:
            raise SipParseError(f"addr-spec with spaces or headers must be in <>: {text[:80]!r}")
        uri = parse_uri(uri_text)
        return cls(uri=uri, display=None, params=_parse_header_params(";" + rest if rest else ""), bracketed=False)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        uri_text = str(self.uri)
        needs_brackets = self.bracketed or self.display is not None or any(c in uri_text for c in ";,?")
        if needs_brackets:
            head = f"{quote(self.display)} <{uri_text}>" if self.display is not None else f"<{uri_text}>"
        else:
            head = uri_text
        return head + format_header_params(self.params)


def _parse_header_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag;name="quoted"`` keeping quoted values with their quotes."""
    params: dict[str, str | None] = {}
    i = 0
    n = len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            break
        if text[i] != ";":
            raise SipParseError(f"expected ';' before parameter in {text[:80]!r}")
        i += 1
        j = i
        while j < n and text[j] not in "=;":
            j += 1
        name = text[i:j].strip()
        if not is_token(name):
            raise SipParseError(f"bad parameter name {name!r}")
        value: str | None = None
        if j < n and text[j] == "=":
            j += 1
            while j < n and text[j] in " \t":
                j += 1
            if j < n and text[j] == '"':
                _, end = _read_quoted(text, j)
                value = text[j:end]
                j = end
            else:
                k = j
                while k < n and text[k] != ";":
                    k += 1
                value = text[j:k].strip()
                if not value:
                    raise SipParseError(f"empty value for parameter {name!r}")
                j = k
        params[name.lower()] = value
        i = j
    return params


def format_header_params(params: dict[str, str | None]) -> str:
    return format_params(params)


parse_header_params = _parse_header_params
read_quoted = _read_quoted
