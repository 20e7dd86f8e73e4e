"""SIP messages: parse bytes into Request / Response and serialise them back (RFC 3261 sections 7, 18.3, 25).

Sans-I/O: ``parse_message`` takes one datagram (or one framed stream message) and returns a message or raises a
:class:`~ivr.sip.errors.SipError` carrying the status to answer. Whatever the bytes, nothing else escapes: no
``IndexError``, ``ValueError`` or ``UnicodeError``. A message that ``parse_message`` returns has every structured
header the core reads already checked, so its typed accessors (``from_``, ``to``, ``cseq``, ``vias``, ``top_via``,
``contacts``, ``call_id``, ``parsed_uri``, ``max_forwards``, ``expires``) do not raise.

When the start line and header fields parsed but something else is wrong, the error's ``partial`` is the message as
far as it parsed; :func:`answerable_request` says whether a response can be sent (a 400/416/505/513 to a request) or
the input must be dropped silently (anything that is a response, an ACK, or not recognisably SIP).

:class:`StreamFramer` cuts a TCP byte stream into messages by the empty line and Content-Length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ivr.sip.errors import MessageTooLarge, SipError, SipParseError
from ivr.sip.headers import CSeq, Headers, Via, _names
from ivr.sip.uri import URI, NameAddr, SipURI, is_digits, is_token, parse_uri

SIP_VERSION = "SIP/2.0"
MAX_MESSAGE_SIZE = 65535
MAX_HEADERS = 256
# Longest first line a stream may carry before we decide it is not SIP (a Request-URI of several KB is legal but
# nothing real sends one).
MAX_START_LINE = 8192
MAX_DELTA_SECONDS = 2**32 - 1

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}  # fmt: skip

REQUIRED_REQUEST_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")
# Header fields that must appear at most once (RFC 3261 section 7.3.1: only list headers may repeat).
SINGLE_VALUE_HEADERS = ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Type")

_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
# rfc1123-date (RFC 3261 section 20.17): the only time zone allowed is GMT (RFC 4475 3.1.2.12 baddate).
_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
    re.IGNORECASE,
)
# message-header = field-name HCOLON field-value, HCOLON = *( SP / HTAB ) ":" SWS (RFC 3261 section 25.1).
_FIELD_RE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:(.*)", re.DOTALL)
_TOKEN_BYTES_RE = re.compile(rb"[A-Za-z0-9\-.!%*_+`'~]+")
# The control characters RFC 3261's grammar allows nowhere in a header section: every CTL but HTAB, and CR and LF
# (which are only line ends and folding: _split_lines and _parse_fields take them out of every line and value).
_CTL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A first line that can begin a SIP message: a status line, or a method, something, and a SIP version (blanks are
# not checked here: a request line with extra blanks is parse_message's 400 to answer, not a framing failure).
_STREAM_START_RE = re.compile(
    rb"SIP/[0-9]+\.[0-9]+ [0-9]{3}.*|[A-Za-z0-9\-.!%*_+`'~]+[ \t]+\S.*[ \t]SIP/[0-9]+\.[0-9]+[ \t]*",
    re.IGNORECASE | re.DOTALL,
)


@dataclass
class _Message:
    headers: Headers
    body: bytes
    version: str

    # ---- typed views of the headers every layer reads -------------------------------------------------------------
    @property
    def call_id(self) -> str:
        value = self.headers.get("Call-ID")
        if value is None:
            raise SipParseError("missing Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        value = self.headers.get("CSeq")
        if value is None:
            raise SipParseError("missing CSeq")
        return CSeq.parse(value)

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.values("Via")]

    @property
    def top_via(self) -> Via:
        values = self.headers.values("Via")
        if not values:
            raise SipParseError("missing Via")
        return Via.parse(values[0])

    @property
    def from_(self) -> NameAddr:
        value = self.headers.get("From")
        if value is None:
            raise SipParseError("missing From")
        return NameAddr.parse(value)

    @property
    def to(self) -> NameAddr:
        value = self.headers.get("To")
        if value is None:
            raise SipParseError("missing To")
        return NameAddr.parse(value)

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact addresses; ``Contact: *`` (REGISTER's remove-all) gives an empty list."""
        values = self.headers.values("Contact")
        if values == ["*"]:
            return []
        return [NameAddr.parse(v) for v in values]

    @property
    def max_forwards(self) -> int | None:
        """The Max-Forwards value (0-255), ``None`` when absent (RFC 2543 peers omit it)."""
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        return _max_forwards(value)

    @property
    def expires(self) -> int | None:
        """The Expires delta-seconds, ``None`` when absent; values past 2**32-1 (RFC 4475 ``scalar02``) are clamped
        to 2**32-1 rather than handed on as 100-digit integers."""
        value = self.headers.get("Expires")
        if value is None:
            return None
        return _expires(value)

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return value.split(";")[0].strip().lower() if value else None

    def _start_line(self) -> str:
        raise NotImplementedError  # pragma: no cover - defined by subclasses

    def _head_lines(self) -> list[str]:
        return [self._start_line()]

    def to_bytes(self) -> bytes:
        """Serialise with CRLF line ends and a Content-Length equal to the body's length.

        The Content-Length field keeps its position (duplicates are dropped); one is appended when there was none.
        """
        lines = self._head_lines()
        body_length = len(self.body)
        length_done = False
        for name, value in self.headers:
            if name == "Content-Length":
                if length_done:
                    continue
                value = str(body_length)
                length_done = True
            lines.append(f"{name}: {value}" if value else f"{name}:")
        if not length_done:
            lines.append(f"Content-Length: {body_length}")
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


@dataclass
class Request(_Message):
    method: str = ""
    uri: str = ""
    _uri_cache: tuple[str, URI] | None = field(default=None, init=False, repr=False, compare=False)

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        self.method = method
        self.uri = uri
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.version = version
        self._uri_cache = None

    @property
    def parsed_uri(self) -> URI:
        """The Request-URI parsed (cached while ``uri`` is unchanged)."""
        cache = self._uri_cache
        if cache is not None and cache[0] == self.uri:
            return cache[1]
        parsed = parse_uri(self.uri)
        self._uri_cache = (self.uri, parsed)
        return parsed

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


@dataclass
class Response(_Message):
    status: int = 0
    reason: str = ""

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        self.status = status
        self.reason = reason if reason is not None else REASON_PHRASES.get(status, "Unknown")
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.version = version

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


Message = Request | Response


# ---- parsing ------------------------------------------------------------------------------------------------------


def _find_head_end(data: bytes | bytearray, start: int = 0) -> tuple[int, int]:
    """Where the header section ends and the body starts; (-1, -1) without an empty line.

    CRLF is the rule (RFC 3261 section 7); a bare LF is tolerated as real peers send it, so the empty line is the first
    ``\\r?\\n\\r?\\n``. The common all-CRLF case is found with one ``find`` and two counts.
    """
    i = data.find(b"\r\n\r\n", start)
    if i >= 0 and data.count(b"\n", start, i) == data.count(b"\r\n", start, i):
        return i, i + 4
    m = _HEAD_END_RE.search(data, start)
    if m is None:
        return -1, -1
    return m.start(), m.end()


def _split_lines(text: str) -> tuple[list[str], SipError | None]:
    crlf = text.count("\r\n")
    if text.count("\n") == crlf and text.count("\r") == crlf:
        return text.split("\r\n"), None
    error: SipError | None = None
    text = text.replace("\r\n", "\n")
    if "\r" in text:
        error = SipParseError("bare CR in the header section (RFC 3261 section 7: lines end with CRLF)")
        text = text.replace("\r", " ")
    return text.split("\n"), error


def _parse_fields(lines: list[str]) -> tuple[list[tuple[str, str, str]], SipError | None]:
    """Unfold continuation lines and split ``name HCOLON value`` (RFC 3261 sections 7.3.1 and 25.1)."""
    logical: list[str] = []
    error: SipError | None = None
    for line in lines:
        if line and (line[0] == " " or line[0] == "\t"):
            if not logical:
                error = error or SipParseError("the start line cannot be folded (line 2 starts with a blank)")
                continue
            logical[-1] = logical[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            logical.append(line)
    if len(logical) > MAX_HEADERS:
        error = SipParseError(f"more than {MAX_HEADERS} header fields")
        del logical[MAX_HEADERS:]
    fields: list[tuple[str, str, str]] = []
    match = _FIELD_RE.match
    for line in logical:
        m = match(line)
        if m is None:
            error = error or SipParseError(f"malformed header line {line[:60]!r} (expected 'Name: value')")
            continue
        canon, key = _names(m.group(1))
        fields.append((key, canon, m.group(2).strip(" \t")))
    return fields, error


def _check_request_uri(uri: str) -> tuple[URI | None, SipError | None]:
    try:
        parsed = parse_uri(uri)
    except SipParseError as exc:
        return None, SipParseError(f"bad Request-URI: {exc.reason}")
    if isinstance(parsed, SipURI) and parsed.headers:
        return None, SipParseError("a SIP Request-URI must not carry headers ('?...'; RFC 3261 section 19.1.1)")
    return parsed, None


def _parse_start_line(line: str, headers: Headers) -> tuple[Message | None, SipError | None]:
    """Parse the Request-Line / Status-Line. A request line broken in a way a server can still answer (extra blanks,
    bad Request-URI, another SIP version) gives the request *and* the error, so the caller can attach the headers."""
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        code_text, _, reason = rest.partition(" ")
        if version.upper() != SIP_VERSION:
            return None, SipParseError(f"response with unsupported version {version[:20]!r}")
        if len(code_text) != 3 or not is_digits(code_text) or not 100 <= int(code_text) <= 699:
            return None, SipParseError(f"bad status code {code_text[:20]!r} (must be 100-699)")
        return Response(int(code_text), reason, headers), None
    parts = line.split(" ")
    clean = len(parts) == 3 and all(parts)
    if clean:
        method, uri, version = parts
    else:
        words = line.split()
        if len(words) < 3:
            return None, SipParseError(f"malformed start line {line[:80]!r}")
        method, uri, version = words[0], " ".join(words[1:-1]), words[-1]
    if not is_token(method):
        return None, SipParseError(f"bad method {method[:30]!r} in start line")
    upper_version = version.upper()
    if upper_version != SIP_VERSION and _VERSION_RE.fullmatch(version) is None:
        return None, SipParseError(f"not a SIP request line (version {version[:20]!r})")
    request = Request(method, uri, headers)
    if not clean:
        return request, SipParseError(
            "Request-Line must be 'Method SP Request-URI SP SIP-Version' with single spaces (RFC 3261 section 7.1)"
        )
    if upper_version != SIP_VERSION:
        return request, SipError(f"SIP version {version[:20]!r} is not supported", status=505)
    parsed, error = _check_request_uri(uri)
    if parsed is not None:
        request._uri_cache = (uri, parsed)
    return request, error


def _parse_head(head: bytes) -> tuple[Message | None, SipError | None]:
    """Parse the start line and header fields; return the message as far as it parsed and the first error."""
    try:
        text = head.decode("utf-8")
        decode_error: SipError | None = None
    except UnicodeDecodeError as exc:
        text = head.decode("utf-8", "replace")
        decode_error = SipParseError(f"header section is not valid UTF-8 (byte {exc.start})")
    lines, split_error = _split_lines(text)
    if lines[0][:1] in (" ", "\t"):
        return None, SipParseError("message starts with whitespace")
    fields, field_error = _parse_fields(lines[1:])
    ctl_error = _control_characters(text, lines[0], fields)
    msg, start_error = _parse_start_line(lines[0], Headers._from_parsed(fields))
    return msg, start_error or ctl_error or decode_error or split_error or field_error


def _control_characters(text: str, start_line: str, fields: list[tuple[str, str, str]]) -> SipError | None:
    """The error for a control character (NUL, ESC, DEL ...; any CTL but HTAB) in the start line or a header value,
    naming the first header that has one. RFC 3261 section 25.1 allows a CTL in a header value only as a
    quoted-pair inside a quoted-string (``"NUL:\\<NUL>"``, RFC 4475 ``intmeth``), nowhere else. Each refused value in
    ``fields`` is rewritten with its CTLs %-escaped, so a 400 built from the partial message (which copies Via,
    From, To, Call-ID and CSeq) never sends the bad bytes back. One search of the section when there is none; a CTL
    elsewhere (in a header name, or a line that is not ``Name: value``) is already a malformed line."""
    if _CTL_RE.search(text) is None:
        return None
    error: SipError | None = None
    match = _CTL_RE.search(start_line)
    if match is not None:
        error = SipParseError(f"control character 0x{ord(match.group()):02X} in the start line")
    for i, (key, canon, value) in enumerate(fields):
        match = _CTL_RE.search(value)
        if match is None:
            continue
        # Call-ID = word ["@" word]: '"' and '\\' are word characters there, not a quoted-string and its escapes.
        bad = match.group() if key == "call-id" else _bare_control(value)
        if bad is None:
            continue
        if error is None:
            error = SipParseError(
                f"{canon} header has control character 0x{ord(bad):02X} "
                "(RFC 3261 section 25.1: none in a header value but HTAB, or escaped in a quoted-string)"
            )
        fields[i] = (key, canon, _CTL_RE.sub(lambda m: f"%{ord(m.group()):02X}", value))
    return error


def _bare_control(value: str) -> str | None:
    """The first control character of ``value`` that is not a quoted-pair inside a quoted-string, or None."""
    in_quote = False
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if in_quote and c == "\\":
            i += 2  # quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F): the escaped character may be a CTL
            continue
        if c == '"':
            in_quote = not in_quote
        elif c != "\t" and (c < " " or c == "\x7f"):
            return c
        i += 1
    return None


def parse_message(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE, stream: bool = False) -> Message:
    """Parse one SIP message.

    ``stream=False`` (UDP): a body longer than Content-Length is cut to it and the rest of the datagram discarded
    (RFC 3261 section 18.3); a shorter one is a 400; without Content-Length the body is the rest of the datagram.
    ``stream=True`` (TCP, already framed by :class:`StreamFramer`): Content-Length is mandatory.

    Raises :class:`SipError` (status 400, 505 or 513) for anything malformed, with ``partial`` set when the start line
    and header fields parsed.
    """
    if not isinstance(data, bytes):
        data = bytes(data)  # a bytearray/memoryview from the transport: the body must come out as bytes
    if data[:1] in (b"\r", b"\n"):
        # RFC 3261 section 7.5: ignore CRLFs before the start line (keep-alives).
        data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message (a CRLF keep-alive carries no SIP message)")
    head_end, body_start = _find_head_end(data)
    truncated: SipError | None = None
    if head_end < 0:
        # A datagram without the empty line: accept its end as the end of the header section when the last line is
        # complete; a cut-off line (or a stream message without it) is a truncated message.
        last_eol = data.rfind(b"\n")
        if stream or last_eol != len(data) - 1:
            truncated = SipParseError("header section is not terminated by an empty line (truncated message)")
        head_end = last_eol
        if head_end > 0 and data[head_end - 1 : head_end] == b"\r":
            head_end -= 1
        body_start = len(data)
        if head_end <= 0:
            raise truncated or SipParseError("no complete line in message")
    if len(data) > max_size:
        too_large = MessageTooLarge(f"message of {len(data)} bytes exceeds the {max_size}-byte limit")
        if head_end <= max_size:
            too_large.partial = _parse_head(data[:head_end])[0]
        raise too_large
    msg, error = _parse_head(data[:head_end])
    error = error or truncated
    if error is not None:
        error.partial = msg
        raise error
    if msg is None:  # pragma: no cover - _parse_head always returns an error when it returns no message
        raise SipParseError("unparseable message")
    error = _frame(msg, data[body_start:], stream) or _check(msg)
    if error is not None:
        error.partial = msg
        raise error
    return msg


def _content_length(values: list[str]) -> int | SipError:
    lengths: set[int] = set()
    for value in values:
        text = value.strip(" \t")
        digits = text.lstrip("0") or "0"
        if not is_digits(text) or len(digits) > 9:
            return SipParseError(f"Content-Length {text[:20]!r} is not a non-negative integer")
        lengths.add(int(digits))
    if len(lengths) > 1:
        return SipParseError("conflicting Content-Length values (RFC 4475 section 3.3.9)")
    return lengths.pop()


def _frame(msg: Message, body: bytes, stream: bool) -> SipError | None:
    """Apply Content-Length framing (RFC 3261 section 18.3) and set ``msg.body``."""
    values = msg.headers.get_all("Content-Length")
    msg.body = body
    if not values:
        if stream:
            return SipParseError("Content-Length is mandatory over stream transports (RFC 3261 section 18.3)")
        return None
    length = _content_length(values)
    if isinstance(length, SipError):
        return length
    if length > len(body):
        return SipParseError(f"body is {len(body)} bytes but Content-Length says {length} (truncated message)")
    if length < len(body):
        msg.body = body[:length]
    return None


def _max_forwards(value: str) -> int:
    text = value.strip(" \t")
    digits = text.lstrip("0") or "0"
    if not is_digits(text) or len(digits) > 3 or int(digits) > 255:
        raise SipParseError(f"Max-Forwards {text[:20]!r} is not an integer 0-255")
    return int(digits)


def _expires(value: str) -> int:
    text = value.strip(" \t")
    if not is_digits(text):
        raise SipParseError(f"Expires {text[:20]!r} is not a non-negative integer")
    digits = text.lstrip("0") or "0"
    return MAX_DELTA_SECONDS if len(digits) > 10 else min(int(digits), MAX_DELTA_SECONDS)


def _check(msg: Message) -> SipError | None:
    """The checks that make every typed accessor safe on a message we return (RFC 3261 sections 8.1.1, 20, 25)."""
    headers = msg.headers
    counts = headers.field_counts()
    for name in REQUIRED_REQUEST_HEADERS:
        if name.lower() not in counts:
            return SipParseError(f"missing {name} header")
    for name in SINGLE_VALUE_HEADERS:
        if counts.get(name.lower(), 0) > 1:
            return SipParseError(f"more than one {name} header")
    try:
        cseq = msg.cseq
        msg.from_  # noqa: B018
        msg.to  # noqa: B018
        if not msg.vias:
            return SipParseError("empty Via header")
        call_id = msg.call_id
        if not call_id or any(c in call_id for c in " \t"):
            return SipParseError(f"Call-ID {call_id[:60]!r} is empty or has blanks")
        if "contact" in counts:
            msg.contacts  # noqa: B018
        for name in ("Record-Route", "Route"):
            if name.lower() in counts:
                for value in headers.values(name):
                    NameAddr.parse(value)
        if "max-forwards" in counts:
            msg.max_forwards  # noqa: B018
        if "expires" in counts:
            msg.expires  # noqa: B018
        date = headers.get("Date") if "date" in counts else None
        if date is not None and _DATE_RE.fullmatch(date) is None:
            return SipParseError(f"Date {date[:40]!r} is not an RFC 1123 date in GMT (RFC 3261 section 20.17)")
    except SipParseError as exc:
        return exc
    if isinstance(msg, Request) and cseq.method != msg.method:
        return SipParseError(f"CSeq method {cseq.method} does not match request method {msg.method}")
    return None


def answerable_request(error: SipError) -> Request | None:
    """The request a server may answer ``error`` for (with :func:`error_response`), or ``None`` to drop silently.

    ``None`` when nothing recognisable parsed, when the input was a response (never answered, RFC 4475 ``bigcode``,
    ``scalarlg``), for an ACK (never answered), or without any Via to send the response along. The top Via itself may
    still be malformed (RFC 4475 ``badinv01``): then send the 400 to the packet's source address.
    """
    partial = error.partial
    if not isinstance(partial, Request) or partial.method == "ACK":
        return None
    if not partial.headers.get_all("Via"):
        return None
    return partial


# ---- stream framing -----------------------------------------------------------------------------------------------


@dataclass
class StreamFramer:
    """Cuts a TCP byte stream into SIP messages by the empty line and Content-Length (RFC 3261 section 18.3)."""

    max_size: int = MAX_MESSAGE_SIZE
    _buffer: bytearray = field(default_factory=bytearray)
    # Where the empty-line search resumes, and the current message's total length once its head is known.
    _scanned: int = field(default=0, repr=False)
    _total: int = field(default=-1, repr=False)
    _start_checked: bool = field(default=False, repr=False)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every complete message now available (raw bytes, to give to parse_message).

        Raises :class:`SipParseError` when the stream cannot be framed (not SIP, no or bad Content-Length, oversize):
        the connection must then be closed, as the next message boundary is unknown.
        """
        buf = self._buffer
        buf += data
        out: list[bytes] = []
        while True:
            if self._total < 0:
                # Skip keep-alive CRLFs between messages (RFC 5626 section 3.5.1).
                skip = 0
                while skip < len(buf) and buf[skip] in (13, 10):
                    skip += 1
                if skip:
                    del buf[:skip]
                if not buf:
                    return out
                if not self._start_checked:
                    self._check_start_line()
                head_end, body_start = _find_head_end(buf, max(0, self._scanned - 3))
                if head_end < 0:
                    self._scanned = len(buf)
                    if len(buf) > self.max_size:
                        raise MessageTooLarge("header section exceeds the size limit")
                    return out
                total = body_start + _stream_content_length(bytes(buf[:head_end]))
                if total > self.max_size:
                    raise MessageTooLarge(f"message of {total} bytes exceeds the {self.max_size}-byte limit")
                self._total = total
            if len(buf) < self._total:
                return out
            out.append(bytes(buf[: self._total]))
            del buf[: self._total]
            self._total = -1
            self._scanned = 0
            self._start_checked = False

    def _check_start_line(self) -> None:
        """Fail fast on a stream that is not SIP (TLS or HTTP on the SIP port, binary garbage)."""
        buf = self._buffer
        eol = buf.find(b"\n")
        line = bytes(buf[:eol] if eol >= 0 else buf[:MAX_START_LINE + 1]).rstrip(b"\r")
        if eol < 0:
            if len(buf) > MAX_START_LINE:
                raise SipParseError(f"no line end in the first {MAX_START_LINE} bytes: not a SIP stream")
            # Incomplete first line: it must at least begin like a method token or "SIP/".
            if line[:4].upper() != b"SIP/"[: len(line[:4])]:
                word = line.split(b" ", 1)[0]
                if word and _TOKEN_BYTES_RE.fullmatch(word) is None:
                    raise SipParseError(f"stream does not start with a SIP start line: {line[:40]!r}")
            return
        if _STREAM_START_RE.fullmatch(line) is None:
            raise SipParseError(f"stream does not start with a SIP start line: {line[:60]!r}")
        self._start_checked = True


def _stream_content_length(head: bytes) -> int:
    """Content-Length of a framed head (compact ``l``, any case, folded lines); mandatory and unambiguous."""
    lines, _ = _split_lines(head.decode("latin-1"))
    fields, _ = _parse_fields(lines[1:])
    values = [value for key, _, value in fields if key == "content-length"]
    if not values:
        raise SipParseError("Content-Length is mandatory over stream transports (RFC 3261 section 18.3)")
    length = _content_length(values)
    if isinstance(length, SipError):
        raise SipParseError(length.reason)
    return length


# ---- building responses -------------------------------------------------------------------------------------------


_DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE"})


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """A response to ``request`` per RFC 3261 section 8.2.6: Via, From, Call-ID, CSeq copied; To copied with a tag
    added when ``to_tag`` is given and the request's To has none (never for 100 Trying); for a 101-299 to an
    INVITE (or SUBSCRIBE), every Record-Route in order (section 12.1.1).

    Works on a partial request from a :class:`SipError` too: headers the request lacks are left out, and a To that
    does not parse is copied unchanged.
    """
    headers = Headers()
    for value in request.headers.get_all("Via"):
        headers.add("Via", value)
    from_value = request.headers.get("From")
    if from_value is not None:
        headers.add("From", from_value)
    to_value = request.headers.get("To")
    if to_value is not None:
        if to_tag and status > 100:
            try:
                to = NameAddr.parse(to_value)
            except SipParseError:
                to = None
            if to is not None and to.tag is None:
                # Append rather than re-serialise, so the To is byte-for-byte the request's plus the tag.
                to_value = f"{to_value};tag={to_tag}"
        headers.add("To", to_value)
    for name in ("Call-ID", "CSeq"):
        copied = request.headers.get(name)
        if copied is not None:
            headers.add(name, copied)
    if request.method in _DIALOG_CREATING and 101 <= status <= 299:
        # RFC 3261 12.1.1: a response that may establish a dialog carries every Record-Route of the request, in
        # order, so the caller's ACK and BYE go back through the proxies that asked to stay on the path.
        for value in request.headers.get_all("Record-Route"):
            headers.add("Record-Route", value)
    timestamp = request.headers.get("Timestamp")
    if status == 100 and timestamp is not None:
        headers.add("Timestamp", timestamp)
    for name, value in extra or ():
        headers.add(name, value)
    if body and content_type:
        headers.add("Content-Type", content_type)
    return Response(status, reason, headers, body)


def error_response(request: Request, error: SipError, *, to_tag: str | None = None) -> Response:
    """The response that answers ``error`` for a request that parsed far enough to be answered."""
    return make_response(
        request, error.status, to_tag=to_tag, extra=[("Warning", f'399 ivr "{_warning_text(error.reason)}"')]
    )


def _warning_text(text: str) -> str:
    # A Warning's text is a quoted-string: no raw quotes, backslashes or control characters.
    cleaned = "".join(c if c >= " " and c != "\x7f" else " " for c in text)
    return cleaned.replace("\\", "\\\\").replace('"', "'")[:200]


def warning_header(text: str) -> tuple[str, str]:
    return ("Warning", f'399 ivr "{_warning_text(text)}"')
