"""HTTP digest authentication for SIP (RFC 3261 section 22, RFC 7616, RFC 8760), sans-I/O.

Three parts:

* **Header syntax** - :func:`parse_auth_fields` reads ``WWW-Authenticate`` / ``Proxy-Authenticate`` (one or several
  challenges per header field, RFC 7235 section 4.1) and ``Authorization`` / ``Proxy-Authorization`` values into
  :class:`AuthField` objects (scheme, parameters, or a token68); :func:`format_challenge` and
  :func:`format_credentials` write them back with the quoting RFC 7616 prescribes for each parameter. Bad input raises
  :class:`AuthSyntaxError` (a 400) naming what is wrong and where.
* **UAS side** - :class:`DigestVerifier` issues challenges (one header per algorithm, SHA-256 before MD5 as RFC 8760
  section 2.4 asks, ``qop="auth"``, an ``opaque``) with *stateless* nonces: base64url of a millisecond timestamp, 8
  random bytes and a truncated HMAC-SHA-256 of both under a server secret, so that every node sharing the secret can
  verify a nonce another node issued. :meth:`DigestVerifier.verify` checks a request's credentials (realm, algorithm,
  qop, uri against the Request-URI, nonce MAC and age, opaque, the password or a stored HA1, nonce-count replay) and
  returns an :class:`AuthResult` that says why it failed and which status (400/401/403 or 407) answers it.
* **UAC side** - :class:`DigestClient` answers a 401/407: it picks, per realm, the strongest algorithm offered that it
  supports (SHA-512-256, SHA-256, MD5; ``-sess`` variants too), makes a cnonce, counts nc per nonce, and can re-use
  the last challenge of a realm pre-emptively (a REGISTER refresh then needs no extra round trip).

The ``-sess`` algorithms (HA1 = H(H(user:realm:password):nonce:cnonce)) are supported on both sides: they cost one
extra hash. The verifier offers them only when configured to. ``qop=auth-int`` (a hash of the body in HA2) is computed
by both sides; the verifier offers only ``auth`` by default. ``userhash`` (RFC 7616 section 3.4.4) is answered by the
client; the verifier never asks for it and refuses credentials that use it.

No clock is read here: the verifier's methods take ``now`` (seconds since the epoch: nodes sharing a secret must share
a clock, so the driver passes wall time, ``time.time()``, not the event loop's monotonic clock).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ivr.sip.errors import SipError
from ivr.sip.message import Request, Response
from ivr.sip.uri import SipURI, parse_uri

# ---- errors ---------------------------------------------------------------------------------------------------------


class AuthError(SipError):
    """Digest authentication cannot proceed (no usable challenge, unsupported algorithm, missing parameter)."""

    status = 400


class AuthSyntaxError(AuthError):
    """An authentication header that does not follow RFC 7235 / RFC 3261 section 25.1 syntax."""

    status = 400


# ---- header syntax --------------------------------------------------------------------------------------------------

_BLANKS = " \t"
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_TOKEN68_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# An unquoted parameter value: RFC 7235 says token, but real peers send base64 nonces and URIs unquoted; anything up
# to a blank or comma without quotes or control characters is accepted.
_BARE_VALUE_RE = re.compile(r'[^\x00-\x20\x7f",]+')


def _is_token(text: str) -> bool:
    return bool(text) and all(c in _TOKEN_CHARS for c in text)


@dataclass(frozen=True)
class AuthField:
    """One challenge (``WWW-Authenticate``) or one set of credentials (``Authorization``): a scheme and either
    auth-params (names lowercased, values unquoted and unescaped, in order) or a token68 (``Basic dXNlcg==``)."""

    scheme: str
    params: tuple[tuple[str, str], ...] = ()
    token68: str | None = None

    def get(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return value
        return None

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"


def _error(message: str, value: str, pos: int) -> AuthSyntaxError:
    return AuthSyntaxError(f"{message} at column {pos + 1} of {value[:120]!r}")


def _skip_blanks(value: str, pos: int) -> int:
    n = len(value)
    while pos < n and value[pos] in _BLANKS:
        pos += 1
    return pos


def _read_token(value: str, pos: int) -> int:
    n = len(value)
    while pos < n and value[pos] in _TOKEN_CHARS:
        pos += 1
    return pos


def _read_quoted_string(value: str, pos: int) -> tuple[str, int]:
    """``value[pos] == '"'``: the unescaped content and the index after the closing quote (RFC 3261 quoted-pair:
    a backslash escapes any character but CR and LF)."""
    out: list[str] = []
    i = pos + 1
    n = len(value)
    while i < n:
        c = value[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= n:
                break
            escaped = value[i + 1]
            if escaped in "\r\n":
                raise _error("CR or LF cannot be escaped in a quoted string", value, i)
            out.append(escaped)
            i += 2
            continue
        if c in "\r\n":
            raise _error("CR or LF inside a quoted string", value, i)
        out.append(c)
        i += 1
    raise _error("unterminated quoted string", value, pos)


def _end_of_element(value: str, pos: int) -> int:
    """After an element: blanks, then a comma or the end. Returns the index of the comma (or the end)."""
    pos = _skip_blanks(value, pos)
    if pos < len(value) and value[pos] != ",":
        raise _error("expected ',' or the end after a parameter", value, pos)
    return pos


def _read_param(value: str, pos: int) -> tuple[str, str, int]:
    """``name BWS "=" BWS (token / quoted-string)`` starting at ``pos``; returns name (lowercased), value, end."""
    end = _read_token(value, pos)
    if end == pos:
        raise _error("expected a parameter name", value, pos)
    name = value[pos:end].lower()
    pos = _skip_blanks(value, end)
    if pos >= len(value) or value[pos] != "=":
        raise _error(f"expected '=' after parameter {name!r}", value, pos)
    pos = _skip_blanks(value, pos + 1)
    if pos < len(value) and value[pos] == '"':
        text, pos = _read_quoted_string(value, pos)
        return name, text, pos
    m = _BARE_VALUE_RE.match(value, pos)
    if m is None:
        raise _error(f"expected a value for parameter {name!r}", value, pos)
    return name, m.group(), m.end()


class _FieldBuilder:
    __slots__ = ("names", "params", "scheme", "token68")

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self.params: list[tuple[str, str]] = []
        self.names: set[str] = set()
        self.token68: str | None = None

    def add(self, name: str, text: str, value: str, pos: int) -> None:
        if self.token68 is not None:
            raise _error(f"{self.scheme} has a token68 and cannot also take parameters", value, pos)
        if name in self.names:
            raise _error(f"parameter {name!r} appears twice in one {self.scheme} challenge or credentials", value, pos)
        self.names.add(name)
        self.params.append((name, text))

    def build(self) -> AuthField:
        return AuthField(self.scheme, tuple(self.params), self.token68)


def parse_auth_fields(value: str) -> list[AuthField]:
    """Parse a ``WWW-Authenticate`` / ``Proxy-Authenticate`` / ``Authorization`` / ``Proxy-Authorization`` value.

    The grammar is RFC 7235's ``1#challenge`` (RFC 3261 section 25.1 for SIP): a challenge is ``scheme [1*SP
    (token68 / #auth-param)]`` and challenges and their parameters are separated by commas alike, so a new challenge
    starts at an element that is a token followed by a blank and not by ``=``. Empty list elements are skipped.
    Raises :class:`AuthSyntaxError` for anything else (a parameter before any scheme, a duplicate parameter, an
    unterminated quoted string, a stray character), naming the column.
    """
    fields: list[AuthField] = []
    current: _FieldBuilder | None = None
    n = len(value)
    pos = 0
    while True:
        while pos < n and (value[pos] in _BLANKS or value[pos] == ","):
            pos += 1
        if pos >= n:
            break
        start = pos
        end = _read_token(value, pos)
        if end == pos:
            raise _error("expected an authentication scheme or a parameter", value, pos)
        after = _skip_blanks(value, end)
        if after < n and value[after] == "=":
            if current is None:
                raise _error("a parameter before any authentication scheme", value, start)
            name, text, pos = _read_param(value, start)
            current.add(name, text, value, start)
            pos = _end_of_element(value, pos)
            continue
        # A new challenge / credentials: the scheme, then nothing, a token68, or its first parameter.
        if current is not None:
            fields.append(current.build())
        current = _FieldBuilder(value[start:end])
        if after >= n or value[after] == ",":
            pos = after
            continue
        if after == end:
            raise _error(f"expected a blank after the scheme {value[start:end]!r}", value, end)
        # Digest never takes a token68 (RFC 7616): "Digest realm=" is a parameter without its value, not a token68.
        m = None if current.scheme.lower() == "digest" else _TOKEN68_RE.match(value, after)
        if m is not None and _end_or_comma(value, m.end()):
            current.token68 = m.group()
            pos = _end_of_element(value, m.end())
            continue
        name, text, pos = _read_param(value, after)
        current.add(name, text, value, after)
        pos = _end_of_element(value, pos)
    if current is not None:
        fields.append(current.build())
    if not fields:
        raise AuthSyntaxError(f"empty authentication header {value[:120]!r}")
    return fields


def _end_or_comma(value: str, pos: int) -> bool:
    pos = _skip_blanks(value, pos)
    return pos >= len(value) or value[pos] == ","


def parse_credentials(value: str) -> AuthField:
    """Parse an ``Authorization`` / ``Proxy-Authorization`` value: exactly one set of credentials."""
    fields = parse_auth_fields(value)
    if len(fields) != 1:
        raise AuthSyntaxError(
            f"an Authorization header carries one set of credentials, found {len(fields)} in {value[:120]!r}"
        )
    return fields[0]


def _quote(text: str) -> str:
    if "\r" in text or "\n" in text:
        raise ValueError(f"CR or LF in an authentication parameter: {text[:60]!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# RFC 7616 sections 3.3 and 3.4: which parameters are always quoted-strings and which are tokens.
_CHALLENGE_QUOTED = frozenset(("realm", "domain", "nonce", "opaque", "qop"))
_CREDENTIALS_QUOTED = frozenset(("username", "realm", "nonce", "uri", "response", "cnonce", "opaque"))


def _format(auth: AuthField, quoted: frozenset[str]) -> str:
    if not _is_token(auth.scheme):
        raise ValueError(f"authentication scheme {auth.scheme!r} is not a token")
    if auth.token68 is not None:
        if auth.params:
            raise ValueError("a token68 and parameters cannot be combined")
        if _TOKEN68_RE.fullmatch(auth.token68) is None:
            raise ValueError(f"{auth.token68!r} is not a token68")
        return f"{auth.scheme} {auth.token68}"
    parts: list[str] = []
    for name, value in auth.params:
        if not _is_token(name):
            raise ValueError(f"authentication parameter name {name!r} is not a token")
        if name in quoted or not _is_token(value):
            parts.append(f"{name}={_quote(value)}")
        else:
            parts.append(f"{name}={value}")
    return f"{auth.scheme} {', '.join(parts)}" if parts else auth.scheme


def format_challenge(auth: AuthField) -> str:
    """Serialise a challenge: realm, domain, nonce, opaque and qop quoted; algorithm and stale as tokens."""
    return _format(auth, _CHALLENGE_QUOTED)


def format_credentials(auth: AuthField) -> str:
    """Serialise credentials: username, realm, nonce, uri, response, cnonce, opaque quoted; algorithm, qop, nc
    as tokens (RFC 7616 section 3.4: some servers refuse a quoted qop or nc)."""
    return _format(auth, _CREDENTIALS_QUOTED)


# ---- algorithms -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestAlgorithm:
    """A digest algorithm name (RFC 7616 section 6.1 registry) and its hash."""

    name: str
    hash_name: str
    session: bool
    strength: int

    @property
    def base(self) -> str:
        """The name without ``-sess`` (the key under which a stored HA1 is found)."""
        return self.name[: -len("-sess")] if self.session else self.name

    def hash(self, data: str | bytes) -> str:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        return hashlib.new(self.hash_name, raw).hexdigest()


ALGORITHMS: dict[str, DigestAlgorithm] = {
    a.name.upper(): a
    for a in (
        DigestAlgorithm("MD5", "md5", False, 1),
        DigestAlgorithm("MD5-sess", "md5", True, 1),
        DigestAlgorithm("SHA-256", "sha256", False, 2),
        DigestAlgorithm("SHA-256-sess", "sha256", True, 2),
        DigestAlgorithm("SHA-512-256", "sha512_256", False, 3),
        DigestAlgorithm("SHA-512-256-sess", "sha512_256", True, 3),
    )
}


def algorithm(name: str | None) -> DigestAlgorithm:
    """The algorithm called ``name`` (case-insensitive); an absent algorithm parameter means MD5 (RFC 7616 3.3)."""
    found = ALGORITHMS.get((name or "MD5").upper())
    if found is None:
        raise AuthError(f"digest algorithm {name!r} is not supported (known: {', '.join(_names(ALGORITHMS))})")
    return found


def _names(algorithms: Mapping[str, DigestAlgorithm]) -> list[str]:
    return [a.name for a in algorithms.values()]


def compute_ha1(algo: str | DigestAlgorithm, username: str, realm: str, password: str) -> str:
    """H(username:realm:password), what a credential store may keep instead of the password (per algorithm)."""
    a = algo if isinstance(algo, DigestAlgorithm) else algorithm(algo)
    return a.hash(f"{username}:{realm}:{password}")


def digest_response(
    algo: str | DigestAlgorithm,
    *,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 section 3.4.1; RFC 2069 form without qop). ``ha1`` is H(user:realm:pw)
    of the base algorithm; for ``-sess`` it is extended with the nonce and cnonce here."""
    a = algo if isinstance(algo, DigestAlgorithm) else algorithm(algo)
    if a.session:
        if cnonce is None:
            raise AuthError(f"{a.name} needs a cnonce")
        ha1 = a.hash(f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        ha2 = a.hash(f"{method}:{uri}:{a.hash(body)}")
    elif qop in ("auth", None):
        ha2 = a.hash(f"{method}:{uri}")
    else:
        raise AuthError(f"qop {qop!r} is not supported (auth, auth-int)")
    if qop is None:
        return a.hash(f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise AuthError(f"qop={qop} needs nc and cnonce")
    return a.hash(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# ---- typed views of Digest challenges and credentials ---------------------------------------------------------------


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"


@dataclass(frozen=True)
class DigestChallenge:
    """A Digest challenge (RFC 7616 section 3.3). ``qop`` is the offered list, lowercased; empty for RFC 2069."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    userhash: bool = False
    charset: str | None = None

    @classmethod
    def from_field(cls, auth: AuthField) -> DigestChallenge:
        if not auth.is_digest:
            raise AuthError(f"not a Digest challenge: {auth.scheme}")
        realm = auth.get("realm")
        nonce = auth.get("nonce")
        if realm is None or nonce is None:
            missing = "realm" if realm is None else "nonce"
            raise AuthError(f"Digest challenge without {missing} (RFC 7616 section 3.3)")
        qop_text = auth.get("qop")
        qop = tuple(q.strip().lower() for q in qop_text.split(",") if q.strip()) if qop_text else ()
        algo = auth.get("algorithm")
        known = ALGORITHMS.get((algo or "MD5").upper())
        return cls(
            realm=realm,
            nonce=nonce,
            algorithm=known.name if known is not None else (algo or "MD5"),
            qop=qop,
            opaque=auth.get("opaque"),
            stale=_flag(auth.get("stale")),
            domain=auth.get("domain"),
            userhash=_flag(auth.get("userhash")),
            charset=auth.get("charset"),
        )

    @property
    def supported(self) -> bool:
        """Whether this side can answer it: a known algorithm and qop auth, auth-int or none (RFC 2069)."""
        return self.algorithm.upper() in ALGORITHMS and (not self.qop or bool({"auth", "auth-int"} & set(self.qop)))

    def to_field(self) -> AuthField:
        params: list[tuple[str, str]] = [("realm", self.realm)]
        if self.domain is not None:
            params.append(("domain", self.domain))
        if self.qop:
            params.append(("qop", ", ".join(self.qop)))
        params.append(("algorithm", self.algorithm))
        params.append(("nonce", self.nonce))
        if self.opaque is not None:
            params.append(("opaque", self.opaque))
        if self.stale:
            params.append(("stale", "true"))
        if self.charset is not None:
            params.append(("charset", self.charset))
        if self.userhash:
            params.append(("userhash", "true"))
        return AuthField("Digest", tuple(params))

    def __str__(self) -> str:
        return format_challenge(self.to_field())


@dataclass(frozen=True)
class DigestCredentials:
    """Digest credentials (RFC 7616 section 3.4) as carried in ``Authorization`` / ``Proxy-Authorization``."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    userhash: bool = False

    @classmethod
    def from_field(cls, auth: AuthField) -> DigestCredentials:
        if not auth.is_digest:
            raise AuthError(f"not Digest credentials: {auth.scheme}")
        values: dict[str, str] = {}
        for name in ("username", "realm", "nonce", "uri", "response"):
            value = auth.get(name)
            if value is None:
                raise AuthError(f"Digest credentials without {name} (RFC 7616 section 3.4)")
            values[name] = value
        qop = auth.get("qop")
        nc = auth.get("nc")
        cnonce = auth.get("cnonce")
        if qop is not None:
            qop = qop.strip().lower()
            if nc is None or cnonce is None:
                raise AuthError("Digest credentials with qop need nc and cnonce (RFC 7616 section 3.4)")
            if len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc):
                raise AuthError(f"nc {nc[:20]!r} is not 8 hexadecimal digits (RFC 7616 section 3.4)")
        algo = auth.get("algorithm")
        known = ALGORITHMS.get((algo or "MD5").upper())
        return cls(
            username=values["username"],
            realm=values["realm"],
            nonce=values["nonce"],
            uri=values["uri"],
            response=values["response"],
            algorithm=known.name if known is not None else (algo or "MD5"),
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            opaque=auth.get("opaque"),
            userhash=_flag(auth.get("userhash")),
        )

    @property
    def nonce_count(self) -> int | None:
        return int(self.nc, 16) if self.nc is not None else None

    def to_field(self) -> AuthField:
        params: list[tuple[str, str]] = [
            ("username", self.username),
            ("realm", self.realm),
            ("nonce", self.nonce),
            ("uri", self.uri),
            ("response", self.response),
            ("algorithm", self.algorithm),
        ]
        if self.qop is not None:
            assert self.nc is not None and self.cnonce is not None
            params += [("qop", self.qop), ("nc", self.nc), ("cnonce", self.cnonce)]
        if self.opaque is not None:
            params.append(("opaque", self.opaque))
        if self.userhash:
            params.append(("userhash", "true"))
        return AuthField("Digest", tuple(params))

    def __str__(self) -> str:
        return format_credentials(self.to_field())


# ---- header names per side ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthHeaders:
    """401 + WWW-Authenticate + Authorization (a UAS or registrar), or 407 + Proxy-* (a proxy)."""

    status: int
    challenge: str
    credentials: str


WWW = AuthHeaders(401, "WWW-Authenticate", "Authorization")
PROXY = AuthHeaders(407, "Proxy-Authenticate", "Proxy-Authorization")


def headers_for_status(status: int) -> AuthHeaders:
    if status == 401:
        return WWW
    if status == 407:
        return PROXY
    raise AuthError(f"status {status} carries no authentication challenge (401 or 407 do)")


# ---- UAS side -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """What the server knows about one user in one realm: the password, or HA1 values (``H(user:realm:password)``)
    per base algorithm name (``{"SHA-256": "...", "MD5": "..."}``), so that no password need be stored."""

    password: str | None = None
    ha1: Mapping[str, str] = field(default_factory=dict)

    def ha1_for(self, algo: DigestAlgorithm, username: str, realm: str) -> str | None:
        if self.password is not None:
            return compute_ha1(algo, username, realm, self.password)
        for name, value in self.ha1.items():
            if name.upper() == algo.base.upper():
                return value.lower()
        return None


CredentialLookup = Callable[[str, str], Credential | None]
"""``(username, realm) -> Credential`` or ``None`` for an unknown user."""


def static_credentials(users: Mapping[str, str | Credential]) -> CredentialLookup:
    """A lookup over a fixed mapping of user -> password (or :class:`Credential`), for every realm."""
    table = {name: (Credential(password=v) if isinstance(v, str) else v) for name, v in users.items()}

    def lookup(username: str, realm: str) -> Credential | None:
        return table.get(username)

    return lookup


class AuthOutcome(StrEnum):
    OK = "ok"
    MISSING = "missing"  # no Digest credentials for our realm
    MALFORMED = "malformed"  # credentials that do not parse or lack required parameters
    UNSUPPORTED = "unsupported"  # an algorithm or qop we did not offer
    URI_MISMATCH = "uri_mismatch"  # uri parameter differs from the Request-URI
    UNKNOWN_NONCE = "unknown_nonce"  # not a nonce we issued (bad MAC, other secret), or opaque differs
    STALE_NONCE = "stale_nonce"  # our nonce, right password, but too old (answer stale=true)
    REPLAYED = "replayed"  # a nonce-count already used with this nonce
    UNKNOWN_USER = "unknown_user"
    NO_CREDENTIAL = "no_credential"  # the user is known but has no HA1 for the algorithm used
    WRONG_PASSWORD = "wrong_password"


_STATUS: dict[AuthOutcome, int | None] = {
    AuthOutcome.OK: None,
    AuthOutcome.MISSING: 401,
    AuthOutcome.MALFORMED: 400,
    AuthOutcome.UNSUPPORTED: 401,
    AuthOutcome.URI_MISMATCH: 400,
    AuthOutcome.UNKNOWN_NONCE: 401,
    AuthOutcome.STALE_NONCE: 401,
    AuthOutcome.REPLAYED: 401,
    AuthOutcome.UNKNOWN_USER: 403,
    AuthOutcome.NO_CREDENTIAL: 403,
    AuthOutcome.WRONG_PASSWORD: 403,
}


@dataclass(frozen=True)
class AuthResult:
    """The verdict on one request. ``detail`` is for logs (it may name the user); :attr:`public_reason` is what may
    go in a Warning header: it never tells a caller whether the user exists or the password was wrong."""

    outcome: AuthOutcome
    detail: str
    username: str | None = None
    status_if_challenged: int = 401

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK

    @property
    def stale(self) -> bool:
        return self.outcome is AuthOutcome.STALE_NONCE

    @property
    def status(self) -> int | None:
        """The response status: ``None`` when authenticated, 401/407 (send a new challenge), 403 (bad credentials)
        or 400 (credentials that break the syntax or name another URI, RFC 7616 section 3.4.6)."""
        status = _STATUS[self.outcome]
        return self.status_if_challenged if status == 401 else status

    @property
    def challenge(self) -> bool:
        """Whether the response carries a fresh challenge (401/407)."""
        return _STATUS[self.outcome] == 401

    @property
    def public_reason(self) -> str:
        if self.outcome in (AuthOutcome.UNKNOWN_USER, AuthOutcome.NO_CREDENTIAL, AuthOutcome.WRONG_PASSWORD):
            return "authentication failed"
        return self.detail


@dataclass
class _NonceUse:
    """Nonce-counts seen for one nonce: the highest, and a 64-bit window below it (as IPsec's anti-replay window),
    so requests that overtake each other on UDP are still accepted once each."""

    issued_ms: int
    highest: int = 0
    window: int = 0

    def accept(self, nc: int) -> bool:
        if nc > self.highest:
            shift = nc - self.highest
            self.window = ((self.window << shift) | 1) & _WINDOW_MASK if shift < _WINDOW else 1
            self.highest = nc
            return True
        offset = self.highest - nc
        if offset >= _WINDOW or self.window & (1 << offset):
            return False
        self.window |= 1 << offset
        return True


_WINDOW = 64
_WINDOW_MASK = (1 << _WINDOW) - 1
_NONCE_RAW_LEN = 8 + 8 + 16


class DigestVerifier:
    """Challenges requests and verifies their Digest credentials for one realm (RFC 3261 22.2, RFC 7616, RFC 8760).

    Nonces are stateless: ``base64url(issued_ms[8] | random[8] | HMAC-SHA-256(secret, realm | issued_ms |
    random)[:16])``. Any verifier with the same ``secret`` and ``realm`` accepts them while younger than
    ``nonce_lifetime``; older ones get ``stale=true`` when the digest is otherwise right. Replay protection keeps,
    per nonce in use, the nonce-counts seen (a 64-wide window); at most ``max_tracked_nonces`` nonces are tracked:
    the one first used longest ago is dropped, and every nonce issued no later than a dropped one counts as stale
    from then on (the client simply retries with a fresh nonce), so a forgotten nonce can never be replayed. The
    window is per node: with several nodes sharing the secret, a request replayed to another node within the
    nonce's lifetime is accepted there once.
    """

    def __init__(
        self,
        *,
        realm: str,
        secret: bytes,
        credentials: CredentialLookup,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        qop: Sequence[str] = ("auth",),
        nonce_lifetime: float = 300.0,
        max_clock_skew: float = 30.0,
        proxy: bool = False,
        max_tracked_nonces: int = 10000,
        use_opaque: bool = True,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        if not algorithms:
            raise ValueError("offer at least one digest algorithm")
        if not set(qop) <= {"auth", "auth-int"} or not qop:
            raise ValueError(f"qop must be a non-empty subset of auth, auth-int, got {list(qop)}")
        if not nonce_lifetime > 0 or max_tracked_nonces < 1:
            raise ValueError("nonce_lifetime and max_tracked_nonces must be positive")
        self.realm = realm
        self.algorithms: tuple[DigestAlgorithm, ...] = tuple(algorithm(name) for name in algorithms)
        self.qop = tuple(qop)
        self.nonce_lifetime = nonce_lifetime
        self.max_clock_skew = max_clock_skew
        self.headers = PROXY if proxy else WWW
        self.max_tracked_nonces = max_tracked_nonces
        self._secret = secret
        self._lookup = credentials
        self._random = random_bytes
        self._realm_bytes = realm.encode("utf-8")
        self.opaque: str | None = (
            hmac.new(secret, b"ivr-digest-opaque\0" + self._realm_bytes, hashlib.sha256).hexdigest()[:16]
            if use_opaque
            else None
        )
        self._uses: OrderedDict[str, _NonceUse] = OrderedDict()
        self._forgotten_up_to_ms = -1

    # -- challenges -------------------------------------------------------------------------------------------------

    def new_nonce(self, now: float) -> str:
        issued = max(0, int(now * 1000)).to_bytes(8, "big")
        salt = self._random(8)
        if len(salt) != 8:
            raise ValueError("random_bytes(8) must return 8 bytes")
        raw = issued + salt + self._mac(issued + salt)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def challenges(self, now: float, *, stale: bool = False) -> list[DigestChallenge]:
        """One challenge per configured algorithm, in preference order, sharing one fresh nonce."""
        nonce = self.new_nonce(now)
        return [
            DigestChallenge(
                realm=self.realm, nonce=nonce, algorithm=a.name, qop=self.qop, opaque=self.opaque, stale=stale
            )
            for a in self.algorithms
        ]

    def challenge_headers(self, now: float, *, stale: bool = False) -> list[tuple[str, str]]:
        """``(WWW-Authenticate, value)`` pairs (``Proxy-Authenticate`` for a proxy) to add to a 401/407: one
        header field per algorithm, SHA-256 first (RFC 8760 section 2.4)."""
        return [(self.headers.challenge, str(c)) for c in self.challenges(now, stale=stale)]

    def response_headers(self, result: AuthResult, now: float) -> list[tuple[str, str]]:
        """The header fields for the response that answers ``result``: a fresh challenge (with ``stale=true`` for
        a stale nonce) when the status is 401/407, nothing otherwise."""
        if not result.challenge:
            return []
        return self.challenge_headers(now, stale=result.stale)

    # -- verification -----------------------------------------------------------------------------------------------

    def verify(self, request: Request, now: float) -> AuthResult:
        """Check ``request``'s ``Authorization`` (``Proxy-Authorization`` for a proxy) for this realm."""
        status = self.headers.status
        ours: list[DigestCredentials] = []
        other_realms: list[str] = []
        for value in request.headers.get_all(self.headers.credentials):
            try:
                auth = parse_credentials(value)
            except AuthSyntaxError as exc:
                return AuthResult(AuthOutcome.MALFORMED, exc.reason, status_if_challenged=status)
            if not auth.is_digest:
                continue
            realm = auth.get("realm")
            if realm != self.realm:
                other_realms.append(repr(realm))
                continue
            try:
                ours.append(DigestCredentials.from_field(auth))
            except AuthError as exc:
                return AuthResult(AuthOutcome.MALFORMED, exc.reason, status_if_challenged=status)
        if not ours:
            detail = f"no Digest credentials for realm {self.realm!r}"
            if other_realms:
                detail += f" (only for {', '.join(other_realms)})"
            return AuthResult(AuthOutcome.MISSING, detail, status_if_challenged=status)
        if len(ours) > 1:
            return AuthResult(
                AuthOutcome.MALFORMED, f"{len(ours)} sets of credentials for realm {self.realm!r}", None, status
            )
        return self._verify(ours[0], request, now, status)

    def _verify(self, cred: DigestCredentials, request: Request, now: float, status: int) -> AuthResult:
        user = cred.username

        def fail(outcome: AuthOutcome, detail: str) -> AuthResult:
            return AuthResult(outcome, detail, user, status)

        algo = next((a for a in self.algorithms if a.name.upper() == cred.algorithm.upper()), None)
        if algo is None:
            offered = ", ".join(a.name for a in self.algorithms)
            return fail(AuthOutcome.UNSUPPORTED, f"algorithm {cred.algorithm} was not offered ({offered})")
        if cred.qop is None:
            return fail(AuthOutcome.MALFORMED, "credentials without qop (RFC 7616 requires qop; RFC 2069 is refused)")
        if cred.qop not in self.qop:
            return fail(AuthOutcome.UNSUPPORTED, f"qop {cred.qop} was not offered ({', '.join(self.qop)})")
        if cred.userhash:
            return fail(AuthOutcome.UNSUPPORTED, "userhash was not offered")
        if not _same_uri(cred.uri, request.uri):
            return fail(AuthOutcome.URI_MISMATCH, f"uri {cred.uri!r} is not the Request-URI {request.uri!r}")
        issued_ms = self._check_nonce(cred.nonce)
        if issued_ms is None:
            return fail(AuthOutcome.UNKNOWN_NONCE, "the nonce was not issued with this realm and secret")
        if self.opaque is not None and cred.opaque != self.opaque:
            return fail(AuthOutcome.UNKNOWN_NONCE, "opaque differs from the one issued (RFC 7616 section 3.4)")
        now_ms = int(now * 1000)
        if issued_ms - now_ms > self.max_clock_skew * 1000:
            return fail(AuthOutcome.UNKNOWN_NONCE, "the nonce was issued in the future (clock skew between nodes?)")
        credential = self._lookup(user, self.realm)
        if credential is None:
            return fail(AuthOutcome.UNKNOWN_USER, f"unknown user {user!r} in realm {self.realm!r}")
        ha1 = credential.ha1_for(algo, user, self.realm)
        if ha1 is None:
            return fail(AuthOutcome.NO_CREDENTIAL, f"user {user!r} has no password or {algo.base} HA1")
        expected = digest_response(
            algo,
            ha1=ha1,
            nonce=cred.nonce,
            method=request.method,
            uri=cred.uri,
            qop=cred.qop,
            nc=cred.nc,
            cnonce=cred.cnonce,
            body=request.body,
        )
        if not hmac.compare_digest(expected, cred.response.lower()):
            return fail(AuthOutcome.WRONG_PASSWORD, f"wrong response digest for user {user!r} ({algo.name})")
        if now_ms - issued_ms > self.nonce_lifetime * 1000:
            return fail(AuthOutcome.STALE_NONCE, f"the nonce is {(now_ms - issued_ms) / 1000:.0f} s old")
        self._expire_uses(now_ms)
        nc = cred.nonce_count
        assert nc is not None
        if nc == 0:
            return fail(AuthOutcome.MALFORMED, "nc must start at 00000001")
        use = self._uses.get(cred.nonce)
        if use is None:
            if issued_ms <= self._forgotten_up_to_ms:
                return fail(AuthOutcome.STALE_NONCE, "the nonce's replay state was dropped (too many nonces in use)")
            use = self._track(cred.nonce, issued_ms)
        if not use.accept(nc):
            return fail(AuthOutcome.REPLAYED, f"nc {cred.nc} was already used with this nonce (replay?)")
        return AuthResult(AuthOutcome.OK, f"user {user!r} authenticated ({algo.name})", user, status)

    @property
    def tracked_nonces(self) -> int:
        return len(self._uses)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, b"ivr-digest-nonce\0" + self._realm_bytes + b"\0" + payload, "sha256").digest()[
            :16
        ]

    def _check_nonce(self, nonce: str) -> int | None:
        """The nonce's issue time in ms when this verifier (or one with the same secret and realm) issued it."""
        if len(nonce) != 43:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=")
        except (ValueError, TypeError):
            return None
        if len(raw) != _NONCE_RAW_LEN:
            return None
        if not hmac.compare_digest(raw[16:], self._mac(raw[:16])):
            return None
        return int.from_bytes(raw[:8], "big")

    def _track(self, nonce: str, issued_ms: int) -> _NonceUse:
        while len(self._uses) >= self.max_tracked_nonces:
            _, dropped = self._uses.popitem(last=False)
            self._forgotten_up_to_ms = max(self._forgotten_up_to_ms, dropped.issued_ms)
        use = _NonceUse(issued_ms)
        self._uses[nonce] = use
        return use

    def _expire_uses(self, now_ms: int) -> None:
        """Forget nonces past their lifetime: they are stale whatever their counts (first-used order is about
        issue order, so looking at the oldest few is enough)."""
        limit = now_ms - self.nonce_lifetime * 1000
        while self._uses:
            nonce, use = next(iter(self._uses.items()))
            if use.issued_ms >= limit:
                break
            del self._uses[nonce]


def _same_uri(credential_uri: str, request_uri: str) -> bool:
    """RFC 7616 section 3.4.6: the uri parameter names the Request-URI. Exact text, or the same SIP URI by RFC 3261
    section 19.1.4 for the parts that matter here (scheme, user, host case-insensitively, port, parameters)."""
    if credential_uri == request_uri:
        return True
    try:
        a = parse_uri(credential_uri)
        b = parse_uri(request_uri)
    except SipError:
        return False
    if not isinstance(a, SipURI) or not isinstance(b, SipURI):
        return False
    return (
        a.scheme == b.scheme
        and a.user == b.user
        and a.password == b.password
        and a.host.lower() == b.host.lower()
        and a.port == b.port
        and {k: (v.lower() if v else v) for k, v in a.params.items()}
        == {k: (v.lower() if v else v) for k, v in b.params.items()}
        and a.headers == b.headers
    )


# ---- UAC side -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Authorization:
    """A header to add to the retried request, with the challenge it answers."""

    name: str
    value: str
    challenge: DigestChallenge


class DigestClient:
    """Answers Digest challenges for one user (RFC 3261 22.2-22.3, RFC 7616 3.4, RFC 8760).

    ``algorithms`` is the preference order; the first one a realm offers is used. nc counts per nonce from
    00000001; the cnonce is fresh for every request. The last challenge of each realm is kept, so
    :meth:`preemptive` can authorize a later request (a REGISTER refresh) without waiting for a new 401.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        algorithms: Sequence[str] = (
            "SHA-512-256",
            "SHA-256",
            "MD5",
            "SHA-512-256-sess",
            "SHA-256-sess",
            "MD5-sess",
        ),
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        max_nonces: int = 32,
    ) -> None:
        self.username = username
        self.password = password
        self.algorithms = tuple(algorithm(name).name for name in algorithms)
        self._rank = {name.upper(): i for i, name in enumerate(self.algorithms)}
        self._random = random_bytes
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._max_nonces = max_nonces
        self._last: OrderedDict[tuple[str, str], DigestChallenge] = OrderedDict()

    def choose(self, response: Response) -> list[DigestChallenge]:
        """The challenges to answer in a 401/407: per realm, the one with the most preferred algorithm we support.
        Raises :class:`AuthError` when nothing in the response can be answered (no challenge, unknown algorithms,
        syntax errors), naming what was offered."""
        names = headers_for_status(response.status)
        best: dict[str, DigestChallenge] = {}
        offered: list[str] = []
        errors: list[str] = []
        for value in response.headers.get_all(names.challenge):
            try:
                fields = parse_auth_fields(value)
            except AuthSyntaxError as exc:
                errors.append(exc.reason)
                continue
            for auth in fields:
                if not auth.is_digest:
                    offered.append(auth.scheme)
                    continue
                try:
                    challenge = DigestChallenge.from_field(auth)
                except AuthError as exc:
                    errors.append(exc.reason)
                    continue
                offered.append(f"Digest {challenge.algorithm}")
                rank = self._rank.get(challenge.algorithm.upper())
                if rank is None or not challenge.supported:
                    continue
                current = best.get(challenge.realm)
                if current is None or rank < self._rank[current.algorithm.upper()]:
                    best[challenge.realm] = challenge
        if not best:
            what = ", ".join(offered) if offered else f"no {names.challenge} header"
            extra = f"; {'; '.join(errors)}" if errors else ""
            raise AuthError(f"no challenge in the {response.status} can be answered (offered: {what}){extra}")
        return list(best.values())

    def authorize(self, request: Request, response: Response) -> list[Authorization]:
        """The header fields that answer ``response``'s challenges for ``request`` (which is about to be re-sent
        with a new CSeq; its method, Request-URI and body enter the digest)."""
        names = headers_for_status(response.status)
        out: list[Authorization] = []
        for challenge in self.choose(response):
            self._remember(names.credentials, challenge)
            out.append(self.answer(challenge, request, header=names.credentials))
        return out

    def answer(self, challenge: DigestChallenge, request: Request, *, header: str = "Authorization") -> Authorization:
        """Credentials answering ``challenge`` for ``request``."""
        value = self.credentials(challenge, method=request.method, uri=request.uri, body=request.body)
        return Authorization(header, str(value), challenge)

    def credentials(
        self,
        challenge: DigestChallenge,
        *,
        method: str,
        uri: str,
        body: bytes = b"",
        cnonce: str | None = None,
    ) -> DigestCredentials:
        """Compute credentials for one request (``cnonce`` may be given for test vectors)."""
        if not challenge.supported:
            raise AuthError(f"cannot answer a challenge with algorithm {challenge.algorithm} and qop {challenge.qop}")
        algo = algorithm(challenge.algorithm)
        qop: str | None = None
        if challenge.qop:
            qop = "auth" if "auth" in challenge.qop else "auth-int"
        nc: str | None = None
        if qop is not None or algo.session:
            cnonce = cnonce if cnonce is not None else self._random(16).hex()
        if qop is not None:
            nc = f"{self._next_count(challenge.nonce):08x}"
        username = self.username
        if challenge.userhash:
            username = algo.hash(f"{self.username}:{challenge.realm}")
        response = digest_response(
            algo,
            ha1=compute_ha1(algo, self.username, challenge.realm, self.password),
            nonce=challenge.nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        return DigestCredentials(
            username=username,
            realm=challenge.realm,
            nonce=challenge.nonce,
            uri=uri,
            response=response,
            algorithm=algo.name,
            qop=qop,
            nc=nc,
            cnonce=cnonce if qop is not None else None,
            opaque=challenge.opaque,
            userhash=challenge.userhash,
        )

    def preemptive(self, request: Request) -> list[Authorization]:
        """Credentials for ``request`` from the last challenge of every realm seen (next nc), or nothing."""
        return [self.answer(challenge, request, header=header) for (header, _), challenge in self._last.items()]

    def forget(self) -> None:
        """Drop remembered challenges (after a failure, so the next request goes without credentials)."""
        self._last.clear()

    def _remember(self, header: str, challenge: DigestChallenge) -> None:
        key = (header, challenge.realm)
        self._last.pop(key, None)
        self._last[key] = challenge
        while len(self._last) > self._max_nonces:
            self._last.popitem(last=False)

    def _next_count(self, nonce: str) -> int:
        count = self._counts.pop(nonce, 0) + 1
        self._counts[nonce] = count
        while len(self._counts) > self._max_nonces:
            self._counts.popitem(last=False)
        return count


def authorization_nonces(request: Request) -> set[str]:
    """The nonces a request's Authorization / Proxy-Authorization headers answer (unparseable ones are skipped)."""
    nonces: set[str] = set()
    for name in (WWW.credentials, PROXY.credentials):
        for value in request.headers.get_all(name):
            try:
                nonce = parse_credentials(value).get("nonce")
            except AuthSyntaxError:
                continue
            if nonce is not None:
                nonces.add(nonce)
    return nonces


__all__ = [
    "ALGORITHMS",
    "PROXY",
    "WWW",
    "AuthError",
    "AuthField",
    "AuthHeaders",
    "AuthOutcome",
    "AuthResult",
    "AuthSyntaxError",
    "Authorization",
    "Credential",
    "CredentialLookup",
    "DigestAlgorithm",
    "DigestChallenge",
    "DigestClient",
    "DigestCredentials",
    "DigestVerifier",
    "algorithm",
    "authorization_nonces",
    "compute_ha1",
    "digest_response",
    "format_challenge",
    "format_credentials",
    "headers_for_status",
    "parse_auth_fields",
    "parse_credentials",
    "static_credentials",
]
