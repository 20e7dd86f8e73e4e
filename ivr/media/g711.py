"""G.711 µ-law (PCMU) and A-law (PCMA) codecs as numpy lookup tables (sans-I/O).

Encoding looks each 16-bit sample up in a 65536-entry table indexed by the sample's bits viewed as uint16;
decoding looks each code up in a 256-entry table. The tables are built once at import with the classic
Sun/CCITT reference algorithm (the one CPython's ``audioop`` implements), so encode and decode are two
vectorised gathers with no Python loop per sample.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALAW_DECODE_TABLE",
    "ALAW_ENCODE_TABLE",
    "CLOCK_RATE",
    "FRAME_SAMPLES",
    "SILENCE",
    "STATIC_PAYLOAD_TYPES",
    "ULAW_DECODE_TABLE",
    "ULAW_ENCODE_TABLE",
    "UnsupportedCodec",
    "alaw_decode",
    "alaw_encode",
    "codec_key",
    "decode",
    "encode",
    "ulaw_decode",
    "ulaw_encode",
]

CLOCK_RATE: Final = 8000
"""G.711 sample rate and RTP clock rate (Hz)."""

FRAME_SAMPLES: Final = 160
"""Samples (and bytes) in one 20 ms G.711 frame."""

STATIC_PAYLOAD_TYPES: Final = {"PCMU": 0, "PCMA": 8}
"""RFC 3551 static RTP payload types."""


class UnsupportedCodec(ValueError):
    """The codec name is not PCMU or PCMA."""


def _build_ulaw_encode_table() -> npt.NDArray[np.uint8]:
    # Input: every int16 value; the reference encoder works on the 14-bit magnitude (sample >> 2).
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + 33  # clip, then add the bias (0x84 >> 2)
    # Segment: index of the first end point (0x3F, 0x7F, ..., 0x1FFF) the biased magnitude does not exceed.
    seg = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), mag, side="left")
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0x0F))
    table = (code ^ mask).astype(np.uint8)
    # Reorder from "int16 value order" to "uint16 bit pattern order": index i holds the code of int16(i).
    return np.ascontiguousarray(np.roll(table, 32768))


def _build_alaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]), mag, side="left")
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> shift) & 0x0F))
    table = (code ^ mask).astype(np.uint8)
    return np.ascontiguousarray(np.roll(table, 32768))


def _build_ulaw_decode_table() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _build_alaw_decode_table() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


ULAW_ENCODE_TABLE: Final = _build_ulaw_encode_table()
ALAW_ENCODE_TABLE: Final = _build_alaw_encode_table()
ULAW_DECODE_TABLE: Final = _build_ulaw_decode_table()
ALAW_DECODE_TABLE: Final = _build_alaw_decode_table()
for _table in (ULAW_ENCODE_TABLE, ALAW_ENCODE_TABLE, ULAW_DECODE_TABLE, ALAW_DECODE_TABLE):
    _table.flags.writeable = False

SILENCE: Final = {
    "PCMU": bytes([int(ULAW_ENCODE_TABLE[0])]) * FRAME_SAMPLES,  # b"\xff" * 160
    "PCMA": bytes([int(ALAW_ENCODE_TABLE[0])]) * FRAME_SAMPLES,  # b"\xd5" * 160
}
"""One 20 ms frame of digital silence (linear 0) per codec."""


def _as_uint16(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.uint16]:
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise TypeError(f"G.711 encoders take int16 samples, got {arr.dtype}")
    return arr.reshape(-1).view(np.uint16)


def ulaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 linear samples to µ-law bytes (one byte per sample)."""
    return ULAW_ENCODE_TABLE[_as_uint16(pcm)].tobytes()


def alaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 linear samples to A-law bytes (one byte per sample)."""
    return ALAW_ENCODE_TABLE[_as_uint16(pcm)].tobytes()


def ulaw_decode(data: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """Decode µ-law bytes to int16 linear samples."""
    return ULAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """Decode A-law bytes to int16 linear samples."""
    return ALAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


def codec_key(codec_name: str) -> str:
    """Canonical codec name ("PCMU"/"PCMA"); SDP encoding names are case-insensitive."""
    key = codec_name.upper()
    if key not in STATIC_PAYLOAD_TYPES:
        raise UnsupportedCodec(f"unsupported codec {codec_name!r}: only PCMU and PCMA are implemented")
    return key


def encode(codec_name: str, pcm: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 samples with the named codec ("PCMU" or "PCMA", any case)."""
    return ulaw_encode(pcm) if codec_key(codec_name) == "PCMU" else alaw_encode(pcm)


def decode(codec_name: str, data: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """Decode bytes of the named codec ("PCMU" or "PCMA", any case) to int16 samples."""
    return ulaw_decode(data) if codec_key(codec_name) == "PCMU" else alaw_decode(data)
