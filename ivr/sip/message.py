"""SIP messages: parse bytes into Request / Response and serialise them back (RFC 3261 sections 7, 18.3, 25).

Sans-I/O: ``parse_message`` takes one datagram (or one framed stream message) and returns a message or raises a
:class:`~ivr.sip.errors.SipError` carrying the status to answer. :class:`StreamFramer` cuts a TCP byte stream into
messages by Content-Length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ivr.sip.errors import MessageTooLarge, SipError, SipParseError
from ivr.sip.headers import CSeq, Headers, Via
from ivr.sip.uri import URI, NameAddr, is_token, parse_uri

SIP_VERSION = "SIP/2.0"
MAX_MESSAGE_SIZE = 65535
MAX_HEADERS = 256

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
}

REQUIRED_REQUEST_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")


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
        values = self.headers.values("Contact")
        if values == ["*"]:
            return []
        return [NameAddr.parse(v) for v in values]

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return value.split(";")[0].strip().lower() if value else None

    def _head_lines(self) -> list[str]:
        raise NotImplementedError  # pragma: no cover - defined by subclasses

    def to_bytes(self) -> bytes:
        """Serialise with CRLF line ends and a Content-Length equal to the body's length."""
        lines = self._head_lines()
        for name, value in self.headers:
            if name == "Content-Length":
                continue
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


@dataclass
class Request(_Message):
    method: str = ""
    uri: str = ""

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

    @cached_property
    def parsed_uri(self) -> URI:
        return parse_uri(self.uri)

    def _head_lines(self) -> list[str]:
        return [f"{self.method} {self.uri} {self.version}"]

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

    def _head_lines(self) -> list[str]:
        return [f"{self.version} {self.status} {self.reason}"]

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


Message = Request | Response


# ---- parsing ------------------------------------------------------------------------------------------------------


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split at the empty line; CRLF is the rule, a bare LF is tolerated as real peers send it."""
    idx = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if idx < 0 and lf < 0:
        # A datagram with no empty line: all head, no body.
        return data, b""
    if idx >= 0 and (lf < 0 or idx < lf):
        return data[:idx], data[idx + 4 :]
    return data[:lf], data[lf + 2 :]


def _unfold(head: str) -> list[str]:
    lines: list[str] = []
    for raw in head.replace("\r\n", "\n").split("\n"):
        line = raw.rstrip("\r")
        if line[:1] in (" ", "\t"):
            if not lines:
                raise SipParseError("message starts with whitespace")
            lines[-1] = lines[-1].rstrip() + " " + line.strip()
        else:
            lines.append(line)
    return lines


def parse_message(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE, stream: bool = False) -> Message:
    """Parse one SIP message.

    ``stream=False`` (UDP): a body longer than Content-Length is cut to it (RFC 3261 section 18.3), a shorter one is a
    400. ``stream=True`` (TCP, already framed by :class:`StreamFramer`): Content-Length is mandatory.
    """
    if len(data) > max_size:
        raise MessageTooLarge(f"message of {len(data)} bytes exceeds the {max_size}-byte limit")
    # RFC 3261 section 7.5: implementations should ignore CRLFs before the start line (keep-alives).
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    head_bytes, body = _split_head(data)
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"header section is not UTF-8 (byte {exc.start})") from None
    lines = _unfold(head)
    start = lines[0]
    headers = Headers()
    if len(lines) - 1 > MAX_HEADERS:
        raise SipParseError(f"more than {MAX_HEADERS} header fields")
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not is_token(name):
            raise SipParseError(f"malformed header line {line[:60]!r}")
        headers.add(name, value.strip(" \t"))

    msg: Message
    pending: SipError | None = None
    if start[:4].upper() == "SIP/":
        msg = _parse_status_line(start, headers)
    else:
        msg, pending = _parse_request_line(start, headers)
    try:
        _frame_and_check(msg, body, stream)
    except SipError as exc:
        exc.partial = msg
        raise
    if pending is not None:
        pending.partial = msg
        raise pending
    return msg


def _frame_and_check(msg: Message, body: bytes, stream: bool) -> None:
    headers = msg.headers

    # Content-Length framing.
    cl_values = headers.get_all("Content-Length")
    if len(cl_values) > 1 and len(set(cl_values)) > 1:
        raise SipParseError("conflicting Content-Length headers")
    if cl_values:
        text = cl_values[0].strip()
        if not text.isdigit() or len(text) > 9:
            raise SipParseError(f"Content-Length {text[:20]!r} is not a non-negative integer")
        length = int(text)
        if length > len(body):
            raise SipParseError(f"body is {len(body)} bytes but Content-Length says {length} (truncated message)")
        body = body[:length]
    elif stream:
        raise SipParseError("Content-Length is mandatory over stream transports")
    msg.body = body
    _check_required(msg)


def _parse_request_line(line: str, headers: Headers) -> tuple[Request, SipError | None]:
    """Parse the Request-Line. Errors a server can still answer (505, 416, bad URI) come back as the second item,
    so the caller can attach the parsed headers and let the server respond."""
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"malformed request line {line[:80]!r}")
    method, uri, version = parts
    if not is_token(method):
        raise SipParseError(f"bad method {method[:30]!r}")
    req = Request(method, uri, headers, version=SIP_VERSION)
    if version.upper() != SIP_VERSION:
        if version.upper().startswith("SIP/"):
            return req, SipError(f"SIP version {version[:20]!r} is not supported", status=505)
        raise SipParseError(f"bad SIP version {version[:20]!r}")
    if ":" not in uri:
        return req, SipParseError(f"Request-URI {uri[:60]!r} has no scheme")
    scheme = uri.partition(":")[0].lower()
    if scheme not in ("sip", "sips", "tel"):
        return req, SipError(f"URI scheme {scheme!r} is not supported", status=416)
    try:
        parse_uri(uri)
    except SipParseError as exc:
        return req, SipParseError(f"bad Request-URI: {exc.reason}")
    return req, None


def _parse_status_line(line: str, headers: Headers) -> Response:
    version, _, rest = line.partition(" ")
    code_text, _, reason = rest.partition(" ")
    if version.upper() != SIP_VERSION:
        raise SipParseError(f"bad SIP version in status line {line[:60]!r}")
    if len(code_text) != 3 or not code_text.isdigit() or not 100 <= int(code_text) <= 699:
        raise SipParseError(f"bad status code {code_text[:20]!r}")
    return Response(int(code_text), reason, headers, version=SIP_VERSION)


def _check_required(msg: Message) -> None:
    for name in REQUIRED_REQUEST_HEADERS:
        if name not in msg.headers:
            raise SipParseError(f"missing {name} header")
    for name in ("Call-ID", "CSeq", "From", "To"):
        if len(msg.headers.get_all(name)) > 1:
            raise SipParseError(f"more than one {name} header")
    cseq = msg.cseq
    # The structured headers must parse: a message we cannot route is a 400 now, not an exception later.
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    msg.vias  # noqa: B018
    if not msg.call_id.strip():
        raise SipParseError("empty Call-ID")
    if isinstance(msg, Request):
        if cseq.method != msg.method:
            raise SipParseError(f"CSeq method {cseq.method} does not match request method {msg.method}")
        mf = msg.headers.get("Max-Forwards")
        if mf is not None and (not mf.strip().isdigit() or int(mf) > 255):
            raise SipParseError(f"Max-Forwards {mf[:20]!r} is not an integer 0-255")
        for name in ("Contact", "Record-Route", "Route"):
            if name == "Contact" and msg.headers.values(name) == ["*"]:
                continue
            for value in msg.headers.values(name):
                NameAddr.parse(value)
        expires = msg.headers.get("Expires")
        if expires is not None and not expires.strip().isdigit():
            raise SipParseError("Expires is not a non-negative integer")


# ---- stream framing -----------------------------------------------------------------------------------------------


@dataclass
class StreamFramer:
    """Cuts a TCP byte stream into SIP messages by the empty line and Content-Length (RFC 3261 section 18.3)."""

    max_size: int = MAX_MESSAGE_SIZE
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every complete message now available (raw bytes, to give to parse_message).

        Raises :class:`SipParseError` when the stream cannot be framed (no Content-Length, oversize): the connection
        must then be closed, as the next message boundary is unknown.
        """
        self._buffer += data
        out: list[bytes] = []
        while True:
            # Skip keep-alive CRLFs between messages (RFC 5626 section 3.5.1).
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.max_size:
                    raise MessageTooLarge("header section exceeds the size limit")
                return out
            head = bytes(self._buffer[:end])
            length = _content_length_of(head)
            total = end + 4 + length
            if total > self.max_size:
                raise MessageTooLarge(f"message of {total} bytes exceeds the {self.max_size}-byte limit")
            if len(self._buffer) < total:
                return out
            out.append(bytes(self._buffer[:total]))
            del self._buffer[:total]


def _content_length_of(head: bytes) -> int:
    for raw in head.split(b"\r\n")[1:]:
        name, colon, value = raw.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            if not text.isdigit() or len(text) > 9:
                raise SipParseError(f"bad Content-Length {text[:20]!r}")
            return int(text)
    raise SipParseError("Content-Length is mandatory over stream transports")


# ---- building responses -------------------------------------------------------------------------------------------


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
    added when ``to_tag`` is given and the request's To has none (never for 100 Trying)."""
    headers = Headers()
    for value in request.headers.get_all("Via"):
        headers.add("Via", value)
    headers.add("From", request.headers.get("From") or "")
    to_value = request.headers.get("To") or ""
    if to_tag and status > 100:
        to = NameAddr.parse(to_value)
        if to.tag is None:
            to.params["tag"] = to_tag
            to_value = str(to)
    headers.add("To", to_value)
    headers.add("Call-ID", request.headers.get("Call-ID") or "")
    headers.add("CSeq", request.headers.get("CSeq") or "")
    if status == 100 and request.headers.get("Timestamp") is not None:
        headers.add("Timestamp", request.headers.get("Timestamp") or "")
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
    return text.replace("\\", "\\\\").replace('"', "'")[:200]


def warning_header(text: str) -> tuple[str, str]:
    return ("Warning", f'399 ivr "{_warning_text(text)}"')
