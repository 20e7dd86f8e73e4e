"""RTP packets (RFC 3550 section 5.1), sans-I/O.

``RtpPacket`` is the complete, general form: parse and serialize with CSRC lists, header extensions and
padding. The media hot paths use the two lean helpers instead:

* ``parse_header`` reads the fixed header and the payload bounds straight out of a receive buffer, without
  copying the payload;
* ``RtpHeaderWriter`` keeps one preallocated packet buffer per stream and rewrites header and payload in place
  with one ``struct.pack_into``, so sending a frame allocates nothing but what ``sendto`` itself needs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "HEADER_SIZE",
    "RTP_VERSION",
    "RtpError",
    "RtpHeaderWriter",
    "RtpPacket",
    "parse_header",
]

RTP_VERSION: Final = 2
HEADER_SIZE: Final = 12

_FIXED: Final = struct.Struct("!BBHII")
_EXT_HEADER: Final = struct.Struct("!HH")


class RtpError(Exception):
    """A datagram that is not a well-formed RTP packet; the message names what is wrong."""


def parse_header(
    data: bytes | bytearray | memoryview, length: int | None = None
) -> tuple[int, bool, int, int, int, int, int]:
    """Validate an RTP packet held in ``data[:length]`` and locate its payload.

    Returns ``(payload_type, marker, sequence, timestamp, ssrc, payload_start, payload_end)``. The CSRC list
    and the header extension are skipped, padding is removed. Raises ``RtpError`` for a version other than 2,
    a packet shorter than its header says, or an impossible padding length.
    """
    end = len(data) if length is None else length
    if end < HEADER_SIZE:
        raise RtpError(f"truncated RTP packet: {end} bytes, the fixed header alone is {HEADER_SIZE}")
    b0, b1, sequence, timestamp, ssrc = _FIXED.unpack_from(data, 0)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version must be 2, got {b0 >> 6}")
    start = HEADER_SIZE + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if end < start + 4:
            raise RtpError("truncated RTP packet: header extension announced but missing")
        _profile, words = _EXT_HEADER.unpack_from(data, start)
        start += 4 + 4 * words
    if end < start:
        raise RtpError(f"truncated RTP packet: {end} bytes, the header (CSRC list, extension) needs {start}")
    if b0 & 0x20:
        if end == start:
            raise RtpError("RTP padding bit set but there is no padding")
        pad = data[end - 1]
        if pad == 0 or pad > end - start:
            raise RtpError(f"RTP padding length {pad} does not fit the {end - start} bytes after the header")
        end -= pad
    return b1 & 0x7F, bool(b1 & 0x80), sequence, timestamp, ssrc, start, end


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet. ``extension`` is ``(profile, data)`` with ``len(data)`` a multiple of 4;
    ``padding`` is the total number of padding octets (including the count octet), 0 for none."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        """Parse a datagram; raises ``RtpError`` if it is not a valid RTP packet."""
        payload_type, marker, sequence, timestamp, ssrc, start, end = parse_header(data)
        b0 = data[0]
        count = b0 & 0x0F
        csrc = struct.unpack_from(f"!{count}I", data, HEADER_SIZE) if count else ()
        extension: tuple[int, bytes] | None = None
        if b0 & 0x10:
            offset = HEADER_SIZE + 4 * count
            profile, words = _EXT_HEADER.unpack_from(data, offset)
            extension = (profile, bytes(data[offset + 4 : offset + 4 + 4 * words]))
        return cls(
            payload_type=payload_type,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[start:end]),
            marker=marker,
            csrc=tuple(csrc),
            extension=extension,
            padding=len(data) - end,
        )

    def serialize(self) -> bytes:
        """The packet as bytes; raises ``RtpError`` for a field out of range."""
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} out of range 0..127")
        if not 0 <= self.sequence <= 0xFFFF:
            raise RtpError(f"sequence number {self.sequence} out of range 0..65535")
        for name, value in (("timestamp", self.timestamp), ("SSRC", self.ssrc), *(("CSRC", c) for c in self.csrc)):
            if not 0 <= value <= 0xFFFFFFFF:
                raise RtpError(f"{name} {value} out of range 0..2**32-1")
        if len(self.csrc) > 15:
            raise RtpError(f"at most 15 CSRCs fit an RTP header, got {len(self.csrc)}")
        if not 0 <= self.padding <= 255:
            raise RtpError(f"padding {self.padding} out of range 0..255")
        b0 = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = self.payload_type | (0x80 if self.marker else 0)
        parts = [_FIXED.pack(b0, b1, self.sequence, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            profile, ext = self.extension
            if len(ext) % 4 or len(ext) > 4 * 0xFFFF or not 0 <= profile <= 0xFFFF:
                raise RtpError("header extension data must be a multiple of 4 bytes with a 16-bit profile")
            parts.append(_EXT_HEADER.pack(profile, len(ext) // 4))
            parts.append(ext)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


class RtpHeaderWriter:
    """A reusable packet buffer for one outgoing stream: a fixed SSRC and payload type, a fixed payload size.

    ``write()`` rewrites marker, sequence number and timestamp and copies the payload behind the header with a
    single ``struct.pack_into``; it returns the same ``bytearray`` every time, ready for ``sendto`` and valid
    until the next ``write()``. Nothing is allocated per packet. A hot loop may skip the method call by binding
    ``pack_into`` and calling ``pack_into(buffer, 1, byte1, sequence, timestamp, ssrc, payload)`` itself, with
    ``byte1`` = ``payload_type``, or ``payload_type | 0x80`` for the marker bit.
    """

    __slots__ = ("buffer", "pack_into", "payload_size", "payload_type", "ssrc")

    def __init__(self, payload_type: int, ssrc: int, payload_size: int) -> None:
        if not 0 <= payload_type <= 127:
            raise RtpError(f"payload type {payload_type} out of range 0..127")
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise RtpError(f"SSRC {ssrc} out of range 0..2**32-1")
        if payload_size < 0:
            raise RtpError(f"payload size {payload_size} is negative")
        self.payload_type = payload_type
        self.payload_size = payload_size
        self.ssrc = ssrc
        self.buffer = bytearray(HEADER_SIZE + payload_size)
        self.buffer[0] = RTP_VERSION << 6
        # Bytes 1..: marker|PT, sequence, timestamp, SSRC, payload. Byte 0 (V=2, no P/X/CC) never changes.
        self.pack_into = struct.Struct(f"!BHII{payload_size}s").pack_into
        self.pack_into(self.buffer, 1, payload_type, 0, 0, ssrc, b"")

    def write(self, sequence: int, timestamp: int, marker: bool, payload: bytes) -> bytearray:
        """Fill the buffer with one packet. ``payload`` must be exactly ``payload_size`` bytes long (the caller
        checks once, e.g. when a playback starts, not per packet: a shorter one would be zero-padded)."""
        byte1 = self.payload_type | 0x80 if marker else self.payload_type
        self.pack_into(self.buffer, 1, byte1, sequence, timestamp, self.ssrc, payload)
        return self.buffer
