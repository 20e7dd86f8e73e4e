"""SDP (RFC 4566) parsing and serialization, and RFC 3264 offer/answer for a G.711 telephone endpoint.

Sans-I/O: bytes or text in, data classes and bytes out. No sockets, no clock reads.

Parsing is tolerant where real peers are sloppy and strict where the RFC matters:

* accepted: LF-only line endings, trailing whitespace, blank lines, session-level lines out of RFC order,
  unknown attributes and unknown line types (kept, RFC 4566 section 5 says to ignore them), ``a=`` lines with
  and without values, several ``c=`` lines in one media section, ``s=`` with an empty name, a missing ``t=``,
  bodies that are not UTF-8 (decoded as ISO-8859-1, as ``a=charset`` allows);
* rejected with ``SdpError(400)``: a first line other than ``v=0``; a line that is not ``<letter>=<value>``;
  NUL or a bare CR inside a line; a missing, repeated or malformed ``o=`` or ``s=``; a malformed ``c=``,
  ``t=``, ``b=``, ``m=`` or ``a=rtpmap``; a port outside 0-65535; an RTP payload type outside 0-127; ``v=``,
  ``o=``, ``s=`` or ``t=`` inside a media section; an accepted media stream (port not 0) with no ``c=``
  address at media or session level (RFC 4566 section 5.7).

A dynamic payload type (96-127) with no ``a=rtpmap`` is not an error: it is simply not recognised as any
codec, so it can never be negotiated. The static payload types of RFC 3551 (0 PCMU, 8 PCMA, 18 G729, ...)
are recognised without an ``a=rtpmap``. Encoding names compare case-insensitively.

``parse`` normalises only one thing: lines kept verbatim in ``extra_lines`` are stably sorted into RFC 4566
order, so that ``serialize`` can emit them where the RFC wants them and ``parse(serialize(sd)) == sd`` holds
for every ``sd`` that ``parse`` returns.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "DIRECTIONS",
    "PCMA",
    "PCMU",
    "STATIC_PAYLOAD_TYPES",
    "Codec",
    "MediaDescription",
    "NegotiatedMedia",
    "SdpError",
    "SessionDescription",
    "answer_offer",
    "build_offer",
    "parse_answer",
]

#: The four RFC 3264 stream directions; an absent direction attribute means "sendrecv".
DIRECTIONS: tuple[str, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")

#: RFC 3264 section 6.1: the direction an answerer gives a stream offered with a given direction. It is also
#: how the offerer reads the answer: our direction is the answerer's direction seen from the other end.
_REVERSED_DIRECTION: dict[str, str] = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}

#: RFC 3551 tables 4 and 5: static RTP payload types -> (encoding name, clock rate, channels).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("nv", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}

_TELEPHONE_EVENT = "telephone-event"
_DEFAULT_PTIME = 20
_MAX_REASON = 300
_DIGITS = re.compile(r"[0-9]{1,64}")
_RTPMAP = re.compile(r"([0-9]{1,3})\s+([^\s/]+)/([0-9]{1,10})(?:/(\S+))?")
_PTIME = re.compile(r"([0-9]{1,6})(?:\.[0-9]*)?")
_LINE_TYPES = frozenset(string.ascii_letters)

# RFC 4566 section 5 order of the lines that ``extra_lines`` may hold, per section. Types not listed here sort
# last. "c" is listed for the media level because a media section may carry several c= lines (multicast).
_SESSION_ORDER = {"i": 1, "u": 2, "e": 3, "p": 4, "r": 8, "z": 9, "k": 10}
_MEDIA_ORDER = {"i": 1, "c": 2, "k": 4}
_UNKNOWN_RANK = 99


class SdpError(Exception):
    """An SDP body we cannot use, and the SIP status to answer it with.

    ``status`` is 400 for malformed SDP and 488 (Not Acceptable Here) for well-formed SDP we cannot accept
    (no common codec, no audio stream). ``reason`` is made safe to put inside a quoted SIP Warning or Reason
    header: no double quotes, backslashes or control characters, and at most 300 characters.
    """

    status: int
    reason: str

    def __init__(self, status: int, reason: str) -> None:
        safe = "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in reason)
        safe = safe.replace('"', "'").replace("\\", "/")
        if len(safe) > _MAX_REASON:
            safe = safe[: _MAX_REASON - 3] + "..."
        super().__init__(f"{status} {safe}")
        self.status = status
        self.reason = safe

    def __reduce__(self) -> tuple[type[SdpError], tuple[int, str]]:
        return (SdpError, (self.status, self.reason))


def _show(text: str) -> str:
    """A peer-supplied value, shortened, for an error message."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _uint(text: str, what: str, where: str, maximum: int | None = None) -> int:
    if _DIGITS.fullmatch(text) is None:
        raise SdpError(400, f"{where}: {what} must be a decimal integer, got {_show(text)}")
    value = int(text)
    if maximum is not None and value > maximum:
        raise SdpError(400, f"{where}: {what} must be at most {maximum}, got {value}")
    return value


def _small_int(text: str, max_digits: int) -> int | None:
    """``text`` as an int if it is 1 to ``max_digits`` ASCII digits, else None."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def _is_rtp(proto: str) -> bool:
    """Whether an m= line's formats are RTP payload types (RTP/AVP, RTP/SAVP, UDP/TLS/RTP/SAVPF, ...)."""
    return "RTP/" in proto.upper()


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _is_unspecified(address: str) -> bool:
    """c=0.0.0.0 (RFC 2543 hold, RFC 3264 section 8.4), or its IPv6 twin ``::``: send nothing there."""
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _parse_rtpmap(value: str) -> tuple[int, str, int, int] | None:
    """``"96 telephone-event/8000"`` -> (96, "telephone-event", 8000, 1); None if malformed."""
    match = _RTPMAP.fullmatch(value)
    if match is None:
        return None
    pt = int(match.group(1))
    if pt > 127:
        return None
    params = match.group(4)
    channels = _small_int(params, 10) if params is not None else None
    return pt, match.group(2), int(match.group(3)), channels if channels is not None else 1


def _ptime_in(attributes: Sequence[tuple[str, str | None]]) -> int | None:
    for name, value in attributes:
        if name.lower() == "ptime" and value is not None:
            match = _PTIME.fullmatch(value.strip())
            if match is not None and int(match.group(1)) > 0:
                return int(match.group(1))
    return None


def _direction_in(attributes: Sequence[tuple[str, str | None]]) -> str | None:
    for name, _value in attributes:
        lowered = name.lower()
        if lowered in DIRECTIONS:
            return lowered
    return None


def _attribute_line(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


def _connection_line(nettype: str, addrtype: str | None, address: str) -> str:
    return f"c={nettype} {addrtype or _addrtype(address)} {address}"


@dataclass
class MediaDescription:
    """One media section: an ``m=`` line and the lines after it up to the next ``m=``."""

    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    #: ``m=audio 49170/2 ...``: the number of ports, or None when the m= line gives none.
    port_count: int | None = None
    connection_nettype: str = "IN"
    #: None: "IP6" if the address contains a colon, else "IP4".
    connection_addrtype: str | None = None
    #: ``b=AS:64`` -> ("AS", 64), in order.
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    #: Lines kept verbatim as (type, value): i=, k=, further c= lines, and line types we do not know.
    extra_lines: list[tuple[str, str]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name:value`` (name compared case-insensitively), or None."""
        lowered = name.lower()
        for attr, value in self.attributes:
            if attr.lower() == lowered:
                return value
        return None

    def rtpmap(self) -> dict[int, tuple[str, int, int]]:
        """Payload type -> (encoding name as written, clock rate, channels).

        From the ``a=rtpmap`` lines (the first one wins for a payload type), plus the RFC 3551 static
        assignment for each static payload type in the m= line that has no ``a=rtpmap``. Channels is 1 when
        the rtpmap gives none.
        """
        result: dict[int, tuple[str, int, int]] = {}
        for name, value in self.attributes:
            if name.lower() != "rtpmap" or value is None:
                continue
            parsed = _parse_rtpmap(value)
            if parsed is not None and parsed[0] not in result:
                result[parsed[0]] = parsed[1:]
        if _is_rtp(self.proto):
            for fmt in self.formats:
                pt = _small_int(fmt, 3)
                if pt is not None and pt not in result and pt in STATIC_PAYLOAD_TYPES:
                    result[pt] = STATIC_PAYLOAD_TYPES[pt]
        return result

    def fmtp(self) -> dict[int, str]:
        """Payload type -> format parameters, from ``a=fmtp:<pt> <params>`` (first one wins)."""
        result: dict[int, str] = {}
        for name, value in self.attributes:
            if name.lower() != "fmtp" or value is None:
                continue
            pt_text, _sep, params = value.partition(" ")
            pt = _small_int(pt_text, 3)
            if pt is not None:
                result.setdefault(pt, params.strip())
        return result

    @property
    def direction(self) -> str:
        """The media-level direction attribute, "sendrecv" if there is none.

        A session-level direction attribute applies to media sections that have none of their own; use
        ``SessionDescription.direction_of(media)`` to take it into account.
        """
        return _direction_in(self.attributes) or "sendrecv"

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in whole milliseconds (a fraction is dropped), None if absent or unusable."""
        return _ptime_in(self.attributes)

    def _lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        lines = [f"m={' '.join([self.media, port, self.proto, *self.formats])}"]
        ranked = sorted(self.extra_lines, key=lambda line: _MEDIA_ORDER.get(line[0], _UNKNOWN_RANK))
        lines += [f"{kind}={value}" for kind, value in ranked if _MEDIA_ORDER.get(kind, _UNKNOWN_RANK) < 2]
        if self.connection is not None:
            lines.append(_connection_line(self.connection_nettype, self.connection_addrtype, self.connection))
        lines += [f"{kind}={value}" for kind, value in ranked if _MEDIA_ORDER.get(kind, _UNKNOWN_RANK) == 2]
        lines += [f"b={kind}:{value}" for kind, value in self.bandwidths]
        lines += [f"{kind}={value}" for kind, value in ranked if 2 < _MEDIA_ORDER.get(kind, _UNKNOWN_RANK) < 5]
        lines += [_attribute_line(name, value) for name, value in self.attributes]
        lines += [f"{kind}={value}" for kind, value in ranked if _MEDIA_ORDER.get(kind, _UNKNOWN_RANK) >= 5]
        return lines


@dataclass
class SessionDescription:
    """A whole SDP body (RFC 4566). ``parse`` reads one, ``serialize`` writes one."""

    version: int = 0
    # o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>
    username: str = "-"
    session_id: int = 0
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"
    session_name: str = "-"
    #: Session-level c= address, or None.
    connection: str | None = None
    connection_nettype: str = "IN"
    #: None: "IP6" if the address contains a colon, else "IP4".
    connection_addrtype: str | None = None
    #: t= lines as (start, stop); RFC 3264 sessions use [(0, 0)].
    timing: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    #: Lines kept verbatim as (type, value): i=, u=, e=, p=, r=, z=, k= and line types we do not know.
    extra_lines: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse an SDP body; raise ``SdpError(400, ...)`` naming the broken rule if it is malformed."""
        if isinstance(data, str):
            text = data
        elif isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("iso-8859-1")
        else:
            raise TypeError(f"SDP must be bytes or str, not {type(data).__name__}")
        return _Parser(text).parse()

    def serialize(self) -> bytes:
        """The SDP body, CRLF line endings, UTF-8. ValueError if a field would break the line structure."""
        lines = self._lines()
        for media in self.media:
            lines += media._lines()
        for line in lines:
            if "\r" in line or "\n" in line or "\x00" in line:
                raise ValueError(f"SDP line {line!r} contains CR, LF or NUL")
        return "".join(line + "\r\n" for line in lines).encode("utf-8")

    def connection_of(self, media: MediaDescription) -> str | None:
        """Where a media stream's RTP goes: its own c= address, else the session-level one."""
        return media.connection if media.connection is not None else self.connection

    def direction_of(self, media: MediaDescription) -> str:
        """A media stream's direction: its own attribute, else the session-level one, else "sendrecv"."""
        return _direction_in(media.attributes) or _direction_in(self.attributes) or "sendrecv"

    def ptime_of(self, media: MediaDescription) -> int | None:
        """A media stream's ``a=ptime``, falling back to a (non-standard) session-level one."""
        return _ptime_in(media.attributes) or _ptime_in(self.attributes)

    def attribute(self, name: str) -> str | None:
        """The value of the first session-level ``a=name:value`` (case-insensitive name), or None."""
        lowered = name.lower()
        for attr, value in self.attributes:
            if attr.lower() == lowered:
                return value
        return None

    def _lines(self) -> list[str]:
        ranked = sorted(self.extra_lines, key=lambda line: _SESSION_ORDER.get(line[0], _UNKNOWN_RANK))

        def extras(low: int, high: int) -> list[str]:
            return [
                f"{kind}={value}" for kind, value in ranked if low <= _SESSION_ORDER.get(kind, _UNKNOWN_RANK) < high
            ]

        lines = [
            f"v={self.version}",
            f"o={self.username} {self.session_id} {self.session_version} {self.nettype} {self.addrtype} {self.address}",
            # RFC 4566 section 5.3: an empty session name is written as a single space.
            f"s={self.session_name or ' '}",
        ]
        lines += extras(0, 5)
        if self.connection is not None:
            lines.append(_connection_line(self.connection_nettype, self.connection_addrtype, self.connection))
        lines += [f"b={kind}:{value}" for kind, value in self.bandwidths]
        lines += [f"t={start} {stop}" for start, stop in self.timing]
        lines += extras(5, 11)
        lines += [_attribute_line(name, value) for name, value in self.attributes]
        lines += extras(11, _UNKNOWN_RANK + 1)
        return lines


class _Parser:
    """One pass over the lines of an SDP body."""

    def __init__(self, text: str) -> None:
        self.text = text

    def parse(self) -> SessionDescription:
        lines = self._split()
        if not lines:
            raise SdpError(400, "empty SDP body")
        first_no, first = lines[0]
        if first != "v=0":
            raise SdpError(400, f"line {first_no}: an SDP body must start with v=0 (RFC 4566 section 5.1)")
        sd = SessionDescription(timing=[], session_name="")
        seen_origin = seen_name = seen_connection = False
        session_extra: list[tuple[str, str]] = []
        media: MediaDescription | None = None
        media_extra: list[tuple[str, str]] = []
        for lineno, line in lines[1:]:
            kind, value = line[0], line[2:]
            where = f"line {lineno}"
            if kind == "m":
                if media is not None:
                    media.extra_lines = _ranked(media_extra, _MEDIA_ORDER)
                media = self._media(value, where)
                media_extra = []
                sd.media.append(media)
            elif kind in "vost" and (media is not None or kind == "v"):
                if kind == "v":
                    raise SdpError(400, f"{where}: v= may appear only once, as the first line")
                raise SdpError(400, f"{where}: {kind}= is a session-level line and cannot follow an m= line")
            elif media is not None:
                if kind == "c":
                    if media.connection is None:
                        media.connection_nettype, media.connection_addrtype, media.connection = self._connection(
                            value, where
                        )
                    else:
                        self._connection(value, where)
                        media_extra.append((kind, value))
                elif kind == "b":
                    media.bandwidths.append(self._bandwidth(value, where))
                elif kind == "a":
                    media.attributes.append(self._attribute(value, where))
                else:
                    media_extra.append((kind, value))
            elif kind == "o":
                if seen_origin:
                    raise SdpError(400, f"{where}: more than one o= line")
                seen_origin = True
                self._origin(sd, value, where)
            elif kind == "s":
                if seen_name:
                    raise SdpError(400, f"{where}: more than one s= line")
                seen_name = True
                sd.session_name = value
            elif kind == "c":
                if seen_connection:
                    raise SdpError(400, f"{where}: more than one session-level c= line (RFC 4566 section 5.7)")
                seen_connection = True
                sd.connection_nettype, sd.connection_addrtype, sd.connection = self._connection(value, where)
            elif kind == "b":
                sd.bandwidths.append(self._bandwidth(value, where))
            elif kind == "t":
                sd.timing.append(self._timing(value, where))
            elif kind == "a":
                sd.attributes.append(self._attribute(value, where))
            else:
                session_extra.append((kind, value))
        if media is not None:
            media.extra_lines = _ranked(media_extra, _MEDIA_ORDER)
        sd.extra_lines = _ranked(session_extra, _SESSION_ORDER)
        if not seen_origin:
            raise SdpError(400, "no o= line (RFC 4566 section 5.2)")
        if not seen_name:
            raise SdpError(400, "no s= line (RFC 4566 section 5.3)")
        for index, description in enumerate(sd.media, 1):
            self._check_media(sd, description, index)
        return sd

    def _split(self) -> list[tuple[int, str]]:
        result: list[tuple[int, str]] = []
        for lineno, raw in enumerate(self.text.split("\n"), 1):
            line = raw.rstrip()
            if not line:
                continue
            if "\r" in line:
                raise SdpError(400, f"line {lineno}: bare CR inside a line")
            if "\x00" in line:
                raise SdpError(400, f"line {lineno}: NUL character")
            if len(line) < 2 or line[1] != "=" or line[0] not in _LINE_TYPES:
                raise SdpError(400, f"line {lineno}: expected <type>=<value> (RFC 4566 section 5), got {_show(line)}")
            result.append((lineno, line))
        return result

    @staticmethod
    def _origin(sd: SessionDescription, value: str, where: str) -> None:
        fields = value.split()
        if len(fields) != 6:
            raise SdpError(
                400,
                f"{where}: o= needs <username> <sess-id> <sess-version> <nettype> <addrtype> <address> "
                f"(RFC 4566 section 5.2), got {len(fields)} fields",
            )
        sd.username = fields[0]
        sd.session_id = _uint(fields[1], "o= sess-id", where)
        sd.session_version = _uint(fields[2], "o= sess-version", where)
        sd.nettype, sd.addrtype, sd.address = fields[3], fields[4], fields[5]

    @staticmethod
    def _connection(value: str, where: str) -> tuple[str, str, str]:
        fields = value.split()
        if len(fields) != 3:
            raise SdpError(
                400, f"{where}: c= needs <nettype> <addrtype> <address> (RFC 4566 section 5.7), got {_show(value)}"
            )
        return fields[0], fields[1], fields[2]

    @staticmethod
    def _bandwidth(value: str, where: str) -> tuple[str, int]:
        kind, sep, amount = value.partition(":")
        if not sep or not kind or " " in kind:
            raise SdpError(400, f"{where}: b= needs <bwtype>:<bandwidth> (RFC 4566 section 5.8), got {_show(value)}")
        return kind, _uint(amount.strip(), "b= bandwidth", where)

    @staticmethod
    def _timing(value: str, where: str) -> tuple[int, int]:
        fields = value.split()
        if len(fields) != 2:
            raise SdpError(400, f"{where}: t= needs <start-time> <stop-time> (RFC 4566 section 5.9)")
        return _uint(fields[0], "t= start time", where), _uint(fields[1], "t= stop time", where)

    @staticmethod
    def _attribute(value: str, where: str) -> tuple[str, str | None]:
        name, sep, attr_value = value.partition(":")
        if not name:
            raise SdpError(400, f"{where}: a= line with no attribute name (RFC 4566 section 5.13)")
        return name, attr_value if sep else None

    @staticmethod
    def _media(value: str, where: str) -> MediaDescription:
        fields = value.split()
        if len(fields) < 4:
            raise SdpError(
                400,
                f"{where}: m= needs <media> <port> <proto> <fmt> ... (RFC 4566 section 5.14), got {_show(value)}",
            )
        kind, port_text, proto, formats = fields[0], fields[1], fields[2], fields[3:]
        port_text, slash, count_text = port_text.partition("/")
        port = _uint(port_text, "m= port", where, 65535)
        port_count: int | None = None
        if slash:
            port_count = _uint(count_text, "m= number of ports", where, 65535)
        if _is_rtp(proto):
            for fmt in formats:
                _uint(fmt, f"RTP payload type in m= ({proto})", where, 127)
        return MediaDescription(media=kind, port=port, proto=proto, formats=formats, port_count=port_count)

    @staticmethod
    def _check_media(sd: SessionDescription, media: MediaDescription, index: int) -> None:
        if media.port != 0 and sd.connection_of(media) is None:
            raise SdpError(
                400,
                f"media stream {index} ({media.media} port {media.port}) has no c= address at media or "
                "session level (RFC 4566 section 5.7)",
            )
        for name, value in media.attributes:
            if name.lower() == "rtpmap" and (value is None or _parse_rtpmap(value) is None):
                raise SdpError(
                    400,
                    f"media stream {index}: malformed a=rtpmap {_show(value or '')}, expected "
                    "<payload type> <encoding name>/<clock rate>[/<channels>] (RFC 4566 section 6)",
                )


def _ranked(lines: list[tuple[str, str]], order: dict[str, int]) -> list[tuple[str, str]]:
    return sorted(lines, key=lambda line: order.get(line[0], _UNKNOWN_RANK))


# --------------------------------------------------------------------------------------------------------------
# Offer / answer (RFC 3264)


@dataclass(frozen=True)
class Codec:
    """An audio codec as negotiated: name, RTP payload type, RTP clock rate."""

    name: str
    payload_type: int
    clock_rate: int = 8000

    def matches(self, name: str, clock_rate: int, channels: int = 1) -> bool:
        """Whether an rtpmap entry names this codec (encoding names are case-insensitive; mono only)."""
        return name.casefold() == self.name.casefold() and clock_rate == self.clock_rate and channels == 1

    def __str__(self) -> str:
        return f"{self.name}/{self.clock_rate}"


PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)


@dataclass(frozen=True)
class NegotiatedMedia:
    """What an offer/answer exchange settled for the audio stream, seen from our side.

    ``codec`` is the one we send; ``codecs`` lists every codec the answer allows (chosen one first), so the
    receive path must decode any of them by payload type. Payload types are the ones the remote side uses.

    ``direction`` is OUR direction for the stream (RFC 3264 section 6.1): "recvonly" when the remote side is
    sendonly, "sendonly" when it is recvonly, "inactive" when it is inactive, else "sendrecv".

    ``on_hold`` is True when the remote side does not want our media: its direction is sendonly or inactive
    (RFC 3264 section 8.4), or its connection address is 0.0.0.0 (or ``::``), the RFC 2543 form, which RFC
    3264 section 8.4 says means "send neither RTP nor RTCP". A remote a=recvonly is NOT hold: that side still
    wants our audio (it just will not send any), so we answer sendonly and keep playing. ``sends`` tells the
    media layer whether to transmit at all.
    """

    codec: Codec
    telephone_event_pt: int | None
    remote_address: str
    remote_port: int
    ptime: int
    direction: str
    on_hold: bool
    codecs: tuple[Codec, ...] = ()

    def __post_init__(self) -> None:
        if not self.codecs:
            object.__setattr__(self, "codecs", (self.codec,))

    @property
    def sends(self) -> bool:
        """Whether we should transmit RTP to the remote side."""
        return self.direction in ("sendrecv", "sendonly") and not self.on_hold

    @property
    def receives(self) -> bool:
        """Whether the remote side may send us RTP."""
        return self.direction in ("sendrecv", "recvonly")


def _is_usable_audio(media: MediaDescription) -> bool:
    return media.media.lower() == "audio" and media.port != 0 and media.proto.upper() == "RTP/AVP"


def _pick(media: MediaDescription, wanted: Sequence[Codec]) -> tuple[list[Codec], int | None]:
    """The codecs of ``wanted`` that ``media`` lists, in ``media``'s order and with its payload types, and
    its telephone-event/8000 payload type."""
    rtpmap = media.rtpmap()
    common: list[Codec] = []
    telephone_event: int | None = None
    seen: set[int] = set()
    for fmt in media.formats:
        pt = _small_int(fmt, 3)
        entry = rtpmap.get(pt) if pt is not None else None
        if pt is None or entry is None or pt in seen:
            continue
        seen.add(pt)
        name, rate, channels = entry
        if name.casefold() == _TELEPHONE_EVENT:
            if rate == 8000 and telephone_event is None:
                telephone_event = pt
            continue
        for codec in wanted:
            if codec.matches(name, rate, channels):
                common.append(Codec(codec.name, pt, codec.clock_rate))
                break
    return common, telephone_event


def _describe(media: MediaDescription) -> str:
    rtpmap = media.rtpmap()
    names = []
    for fmt in media.formats:
        pt = _small_int(fmt, 3)
        entry = rtpmap.get(pt) if pt is not None else None
        names.append(f"{entry[0]}/{entry[1]}" if entry is not None else f"PT {fmt}")
    where = f"{media.media} {media.proto}"
    if media.port == 0:
        where += " port 0"
    return f"{where} ({', '.join(names)})"


def _no_common_codec(offer: SessionDescription, supported: Sequence[Codec]) -> SdpError:
    offered = "; ".join(_describe(media) for media in offer.media)
    ours = ", ".join(str(codec) for codec in supported)
    return SdpError(488, f"no common codec: offered {offered}; we accept audio RTP/AVP with {ours}")


def _check_local(local_address: str, local_port: int, username: str) -> None:
    if not local_address or any(ch.isspace() for ch in local_address):
        raise ValueError(f"local_address {local_address!r} is not an address")
    if not 1 <= local_port <= 65535:
        raise ValueError(f"local_port {local_port} is not in 1-65535")
    if not username or any(ch.isspace() for ch in username):
        raise ValueError(f"username {username!r} must be a non-empty token without whitespace")


def _remote(sd: SessionDescription, media: MediaDescription) -> str:
    address = sd.connection_of(media)
    if address is None:
        raise SdpError(400, f"no c= address for the {media.media} stream (RFC 4566 section 5.7)")
    return address


def _local_session(
    *, local_address: str, session_id: int, session_version: int, username: str, timing: list[tuple[int, int]]
) -> SessionDescription:
    return SessionDescription(
        version=0,
        username=username,
        session_id=session_id,
        session_version=session_version,
        nettype="IN",
        addrtype=_addrtype(local_address),
        address=local_address,
        session_name="-",
        connection=local_address,
        connection_addrtype=_addrtype(local_address),
        timing=timing,
    )


def answer_offer(
    offer: SessionDescription,
    *,
    local_address: str,
    local_port: int,
    supported: Sequence[Codec] = (PCMU, PCMA),
    session_id: int,
    session_version: int,
    username: str = "ivr",
    single_codec: bool = False,
    ptime: int | None = None,
) -> tuple[SessionDescription, NegotiatedMedia]:
    """Answer an offer as RFC 3264 section 6 says, accepting one audio stream.

    ``single_codec=True`` answers with only the chosen codec (plus telephone-event): the daemon's media path
    sends and decodes one codec per call, and an answer listing several would let the caller switch mid-call
    (RFC 3264 section 6.1 allows either). ``ptime`` is the packet time we send and ask for (``a=ptime``);
    ``None`` echoes the offer's.

    The answer has the offer's m-lines in the same order. The first audio m-line (RTP/AVP, port not 0) that
    lists a codec in ``supported`` is accepted: the answer lists the common codecs in the OFFER's order with
    the offer's payload types (the caller's preference wins), then telephone-event with the offer's payload
    type and ``a=fmtp:<pt> 0-15`` if offered, echoes ``a=ptime``, and gives the direction of the RFC 3264
    table (sendonly -> recvonly, recvonly -> sendonly, inactive -> inactive). Every other m-line is rejected
    with port 0 and its formats copied. The t= line is copied from the offer (RFC 3264 section 6).

    Raises ``SdpError(488)`` when no audio m-line is acceptable, including an offer with no m-lines.
    """
    if not supported:
        raise ValueError("supported must name at least one codec")
    _check_local(local_address, local_port, username)
    if not offer.media:
        raise SdpError(488, "offer has no media streams (no m= lines); we need an audio stream")
    accepted: int | None = None
    common: list[Codec] = []
    telephone_event: int | None = None
    for index, media in enumerate(offer.media):
        if _is_usable_audio(media):
            common, telephone_event = _pick(media, supported)
            if common:
                accepted = index
                break
    if accepted is None:
        raise _no_common_codec(offer, supported)
    offered = offer.media[accepted]
    remote_address = _remote(offer, offered)
    offered_direction = offer.direction_of(offered)
    offered_ptime = offer.ptime_of(offered)
    if single_codec:
        common = common[:1]
    if ptime is None:
        ptime = offered_ptime

    attributes: list[tuple[str, str | None]] = [
        ("rtpmap", f"{codec.payload_type} {codec.name}/{codec.clock_rate}") for codec in common
    ]
    formats = [str(codec.payload_type) for codec in common]
    if telephone_event is not None:
        formats.append(str(telephone_event))
        attributes.append(("rtpmap", f"{telephone_event} {_TELEPHONE_EVENT}/8000"))
        attributes.append(("fmtp", f"{telephone_event} 0-15"))
    if ptime is not None:
        attributes.append(("ptime", str(ptime)))
    our_direction = _REVERSED_DIRECTION[offered_direction]
    attributes.append((our_direction, None))

    answer = _local_session(
        local_address=local_address,
        session_id=session_id,
        session_version=session_version,
        username=username,
        timing=list(offer.timing) or [(0, 0)],
    )
    for index, media in enumerate(offer.media):
        if index == accepted:
            answer.media.append(
                MediaDescription(
                    media=media.media, port=local_port, proto=media.proto, formats=formats, attributes=attributes
                )
            )
        else:
            answer.media.append(
                MediaDescription(media=media.media, port=0, proto=media.proto, formats=list(media.formats))
            )
    negotiated = NegotiatedMedia(
        codec=common[0],
        telephone_event_pt=telephone_event,
        remote_address=remote_address,
        remote_port=offered.port,
        ptime=offered_ptime if offered_ptime is not None else _DEFAULT_PTIME,
        direction=our_direction,
        on_hold=offered_direction in ("sendonly", "inactive") or _is_unspecified(remote_address),
        codecs=tuple(common),
    )
    return answer, negotiated


def build_offer(
    *,
    local_address: str,
    local_port: int,
    codecs: Sequence[Codec] = (PCMU, PCMA),
    telephone_event_pt: int | None = 101,
    ptime: int = 20,
    session_id: int,
    session_version: int,
    username: str = "ivr",
    direction: str = "sendrecv",
) -> SessionDescription:
    """An offer with one audio RTP/AVP stream: ``codecs`` in order of preference, then telephone-event
    (``a=fmtp:<pt> 0-15``) unless ``telephone_event_pt`` is None, ``a=ptime`` and the direction attribute."""
    _check_local(local_address, local_port, username)
    if not codecs:
        raise ValueError("codecs must name at least one codec")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    if ptime <= 0:
        raise ValueError(f"ptime {ptime} must be positive")
    payload_types = [codec.payload_type for codec in codecs]
    if telephone_event_pt is not None:
        if not 96 <= telephone_event_pt <= 127:
            raise ValueError(f"telephone_event_pt {telephone_event_pt} is not a dynamic payload type (96-127)")
        payload_types.append(telephone_event_pt)
    if any(not 0 <= pt <= 127 for pt in payload_types) or len(set(payload_types)) != len(payload_types):
        raise ValueError(f"payload types {payload_types} must be distinct and in 0-127")
    attributes: list[tuple[str, str | None]] = [
        ("rtpmap", f"{codec.payload_type} {codec.name}/{codec.clock_rate}") for codec in codecs
    ]
    if telephone_event_pt is not None:
        attributes.append(("rtpmap", f"{telephone_event_pt} {_TELEPHONE_EVENT}/8000"))
        attributes.append(("fmtp", f"{telephone_event_pt} 0-15"))
    attributes.append(("ptime", str(ptime)))
    attributes.append((direction, None))
    offer = _local_session(
        local_address=local_address,
        session_id=session_id,
        session_version=session_version,
        username=username,
        timing=[(0, 0)],
    )
    offer.media.append(
        MediaDescription(
            media="audio",
            port=local_port,
            proto="RTP/AVP",
            formats=[str(pt) for pt in payload_types],
            attributes=attributes,
        )
    )
    return offer


def parse_answer(answer: SessionDescription, offered: Sequence[Codec]) -> NegotiatedMedia:
    """Read the answer to an offer WE made (one audio stream, as ``build_offer`` makes).

    The first audio m-line (RTP/AVP, port not 0) is the stream. The codec is the first format of the answer
    that names one of ``offered`` (the answerer's preference), with the answer's payload type, which is the
    one to send with. Raises ``SdpError(488)`` if the answer rejected the audio stream or picked nothing we
    offered.
    """
    if not offered:
        raise ValueError("offered must name at least one codec")
    media = next((m for m in answer.media if _is_usable_audio(m)), None)
    if media is None:
        raise SdpError(488, "the answer accepted no audio stream (no audio RTP/AVP m= line with a port)")
    common, telephone_event = _pick(media, offered)
    if not common:
        ours = ", ".join(str(codec) for codec in offered)
        raise SdpError(488, f"the answer picked no codec we offered: answered {_describe(media)}; offered {ours}")
    remote_address = _remote(answer, media)
    answered_direction = answer.direction_of(media)
    ptime = answer.ptime_of(media)
    return NegotiatedMedia(
        codec=common[0],
        telephone_event_pt=telephone_event,
        remote_address=remote_address,
        remote_port=media.port,
        ptime=ptime if ptime is not None else _DEFAULT_PTIME,
        direction=_REVERSED_DIRECTION[answered_direction],
        on_hold=answered_direction in ("sendonly", "inactive") or _is_unspecified(remote_address),
        codecs=tuple(common),
    )
