"""SIP and SIPS URIs (RFC 3261 section 19.1) and the name-addr form used in From/To/Contact/Route.

Parsing keeps escaped characters as they were written (``%40`` stays ``%40`` in ``user``) so that serialising a parsed
URI gives back what the peer sent; ``unescape`` is there for comparisons and display.

Every parser here raises :class:`~ivr.sip.errors.SipParseError` (a 400) for any malformed input, whatever the input:
no ``IndexError``/``ValueError`` escapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from ivr.sip.errors import SipParseError

# RFC 3261 section 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
# RFC 3986 scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# hostname / IPv4address / IPv6reference. "_" is not in the RFC 3261 hostname grammar but container and SRV-style
# names carry it in the wild; accepting it costs nothing and a host is never interpreted as anything else.
_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+")
# Characters that can never appear in a URI as it is written in a SIP message: whitespace, controls, and the
# delimiters of the surrounding name-addr / quoted-string syntax (RFC 3261 section 25.1, RFC 3986 section 2).
_URI_FORBIDDEN_RE = re.compile(r'[\x00-\x20\x7f<>"]')
# display-name = *(token LWS) / quoted-string: the unquoted form is a run of tokens and blanks before "<".
_UNQUOTED_DISPLAY_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~ \t]*")
_BLANKS = " \t"


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 3261 ``token``."""
    return _TOKEN_RE.fullmatch(text) is not None


def is_digits(text: str) -> bool:
    """True when ``text`` is one or more ASCII digits (``str.isdigit`` also accepts "²" and "٣", which ``int``
    rejects or reads differently)."""
    return text.isascii() and text.isdigit()


def unescape(text: str) -> str:
    """Decode %XX escapes (RFC 3261 section 19.1.2)."""
    return unquote(text)


def _split_params(text: str, whole: str) -> dict[str, str | None]:
    """URI parameters after the first ";": ``name[=value]`` separated by ";", names case-insensitive."""
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if not name:
            raise SipParseError(f"empty URI parameter in {whole[:80]!r}")
        params[name.lower()] = value if eq else None
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
        """Parse ``sip:[user[:password]@]host[:port][;params][?headers]`` (RFC 3261 section 25.1 SIP-URI).

        The userinfo ends at the first "@" (``@`` is legal nowhere else unescaped), so user parts full of ``?;/,``
        (RFC 4475 ``intmeth``, ``semiuri``) parse as the grammar says.
        """
        text = text.strip(_BLANKS)
        scheme, colon, rest = text.partition(":")
        lower = scheme.lower()
        if not colon or (lower != "sip" and lower != "sips"):
            raise SipParseError(f"not a sip: or sips: URI: {text[:80]!r}")
        if not rest:
            raise SipParseError("empty SIP URI")
        if _URI_FORBIDDEN_RE.search(rest) is not None:
            raise SipParseError(f"illegal character (space, control, < > or \") in SIP URI {text[:80]!r}")
        user = password = None
        at = rest.find("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, has_pw, pw = userinfo.partition(":")
            if not user:
                raise SipParseError(f"empty user part in SIP URI {text[:80]!r}")
            password = pw if has_pw else None
        hostport, q, hdrs = rest.partition("?")
        hostport, semi, params_text = hostport.partition(";")
        host, port = _parse_hostport(hostport, text)
        headers: dict[str, str] = {}
        if q:
            if not hdrs:
                raise SipParseError(f"empty URI headers after '?' in {text[:80]!r}")
            for part in hdrs.split("&"):
                name, eq, value = part.partition("=")
                if not name or not eq:
                    raise SipParseError(f"malformed URI header {part[:40]!r} in {text[:80]!r}")
                headers[name] = value
        return cls(
            host=host,
            user=user,
            password=password,
            port=port,
            scheme=lower,
            params=_split_params(params_text, text) if semi else {},
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
        """Parse ``scheme:anything`` (RFC 3261 absoluteURI): a valid scheme, a non-empty rest, no blanks/controls."""
        scheme, colon, rest = text.strip(_BLANKS).partition(":")
        if not colon or _SCHEME_RE.fullmatch(scheme) is None:
            raise SipParseError(f"not an absolute URI: {text[:80]!r}")
        if not rest:
            raise SipParseError(f"empty URI after scheme {scheme[:20]!r}")
        if _URI_FORBIDDEN_RE.search(rest) is not None:
            raise SipParseError(f"illegal character (space, control, < > or \") in URI {text[:80]!r}")
        return cls(scheme.lower(), rest)

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


URI = SipURI | AbsoluteURI


def parse_uri(text: str) -> URI:
    """Parse any URI: ``sip``/``sips`` into :class:`SipURI`, other schemes into :class:`AbsoluteURI`."""
    scheme = text.strip(_BLANKS).partition(":")[0].lower()
    if scheme == "sip" or scheme == "sips":
        return SipURI.parse(text)
    return AbsoluteURI.parse(text)


def _parse_port(port_text: str, whole: str) -> int:
    if not is_digits(port_text) or len(port_text) > 5:
        raise SipParseError(f"bad port {port_text[:20]!r} in {whole[:80]!r}")
    port = int(port_text)
    if port > 65535:
        raise SipParseError(f"port {port} out of range in {whole[:80]!r}")
    return port


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
    if not host or _HOST_RE.fullmatch(host) is None:
        raise SipParseError(f"bad host {host[:60]!r} in {whole[:80]!r}")
    return host, (_parse_port(port_text, whole) if port_text is not None else None)


def parse_host_port(text: str) -> tuple[str, int | None]:
    """Parse ``host[:port]`` (IPv6 in brackets), as in a Via sent-by; raises :class:`SipParseError`."""
    return _parse_hostport(text, text)


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted-string starting at ``text[start] == '"'``; return (unescaped content, index after it)."""
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        # Copy runs of ordinary characters at C speed; stop at the next quote or backslash.
        j = i
        while j < n and text[j] != '"' and text[j] != "\\":
            j += 1
        if j > i:
            out.append(text[i:j])
        if j >= n:
            break
        if text[j] == '"':
            return "".join(out), j + 1
        if j + 1 >= n:  # a backslash as the very last character escapes nothing
            break
        out.append(text[j + 1])
        i = j + 2
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
        """Parse ``(name-addr / addr-spec) *(SEMI param)`` (RFC 3261 section 20.10 and 25.1).

        name-addr is ``[display-name] LAQUOT addr-spec RAQUOT``: the display name is a quoted-string or a run of
        tokens (``caller<sip:...>`` without a space is accepted, RFC 4475 ``lwsdisp``); an unquoted name with other
        characters (``Bell, Alexander <sip:...>``) and blanks inside ``< >`` are errors. In the addr-spec form the
        parameters after the URI are header parameters, so the URI itself cannot carry ``;``, ``?`` or ``,``.
        """
        text = text.strip(_BLANKS)
        if not text:
            raise SipParseError("empty address")
        display: str | None = None
        if text[0] == '"':
            display, i = _read_quoted(text, 0)
            while i < len(text) and text[i] in _BLANKS:
                i += 1
            if i >= len(text) or text[i] != "<":
                raise SipParseError(f"quoted display name without <uri> in {text[:80]!r}")
            lt = i
        else:
            m = _UNQUOTED_DISPLAY_RE.match(text)
            end = m.end() if m is not None else 0
            if end < len(text) and text[end] == "<":
                lt = end
                name = text[:end].strip(_BLANKS)
                display = name or None
            else:
                lt = -1
        if lt >= 0:
            gt = text.find(">", lt + 1)
            if gt < 0:
                raise SipParseError(f"unterminated <uri> in {text[:80]!r}")
            inner = text[lt + 1 : gt]
            if not inner or inner[0] in _BLANKS or inner[-1] in _BLANKS:
                raise SipParseError(f"blank inside <> around the URI (RFC 3261 addr-spec has no LWS): {text[:80]!r}")
            uri = parse_uri(inner)
            return cls(uri=uri, display=display, params=_parse_header_params(text[gt + 1 :]), bracketed=True)
        # addr-spec: parameters after the URI belong to the header, and the URI can have no params or headers.
        semi = text.find(";")
        uri_text = (text if semi < 0 else text[:semi]).rstrip(_BLANKS)
        if "<" in uri_text:
            raise SipParseError(f"display name with non-token characters must be quoted: {text[:80]!r}")
        if any(c in uri_text for c in " \t?,"):
            raise SipParseError(f"addr-spec with blanks, headers or commas must be in <>: {text[:80]!r}")
        uri = parse_uri(uri_text)
        params = _parse_header_params(text[semi:]) if semi >= 0 else {}
        return cls(uri=uri, display=None, params=params, bracketed=False)

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
    """Parse ``*(SEMI generic-param)``: ``;name=value;flag;name="quoted"``, blanks allowed around ``;`` and ``=``
    (RFC 3261 SEMI/EQUAL are SWS-delimited). Quoted values keep their quotes; names are lowercased."""
    params: dict[str, str | None] = {}
    i = 0
    n = len(text)
    while i < n:
        while i < n and text[i] in _BLANKS:
            i += 1
        if i >= n:
            break
        if text[i] != ";":
            raise SipParseError(f"expected ';' before parameter in {text[:80]!r}")
        i += 1
        j = i
        while j < n and text[j] != "=" and text[j] != ";":
            j += 1
        name = text[i:j].strip(_BLANKS)
        if not is_token(name):
            raise SipParseError(f"bad or empty parameter name {name[:40]!r} in {text[:80]!r}")
        value: str | None = None
        if j < n and text[j] == "=":
            j += 1
            while j < n and text[j] in _BLANKS:
                j += 1
            if j < n and text[j] == '"':
                _, end = _read_quoted(text, j)
                value = text[j:end]
                j = end
            else:
                k = text.find(";", j)
                if k < 0:
                    k = n
                value = text[j:k].strip(_BLANKS)
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
