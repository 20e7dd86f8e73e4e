"""RFC 4733 telephone-event payloads (DTMF carried in RTP), sans-I/O.

A key press is sent as a run of RTP packets that all carry the RTP timestamp of the moment the key went down:
a first packet (normally with the marker bit), updates with a growing duration, then the final packet with the
E (end) bit, usually sent three times. Any of them may be lost, duplicated or reordered. ``EventCounter`` turns
that packet sequence back into distinct key presses: a press is identified by (SSRC, RTP timestamp), so a
start without the marker bit, the repeated end packets and retransmissions all count once.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

from ivr.media.rtp import RtpError

__all__ = [
    "DTMF_KEYS",
    "PAYLOAD_SIZE",
    "EventCounter",
    "TelephoneEvent",
    "event_code",
    "key_press_events",
]

DTMF_KEYS: Final = "0123456789*#ABCD"
"""Event codes 0..15 (RFC 4733 section 3.2) are the DTMF keys, in this order."""

PAYLOAD_SIZE: Final = 4
MAX_DURATION: Final = 0xFFFF

_EVENT: Final = struct.Struct("!BBH")


def event_code(key: str) -> int:
    """The RFC 4733 event code of a DTMF key ("0"-"9", "*", "#", "A"-"D", any case)."""
    index = DTMF_KEYS.find(key.upper()) if len(key) == 1 else -1
    if index < 0:
        raise ValueError(f"{key!r} is not a DTMF key (one of {DTMF_KEYS})")
    return index


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 event report: ``event`` code 0..255, ``end`` bit, ``volume`` 0..63 (in -dBm0, so 0 is
    loudest), ``duration`` in RTP timestamp units (0..65535) since the event's timestamp."""

    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview, offset: int = 0, end: int | None = None) -> TelephoneEvent:
        """Parse the event report at ``data[offset:end]``; raises ``RtpError`` if it is shorter than 4 bytes.
        Further bytes (RFC 4733 allows several reports in one packet with redundancy) are ignored."""
        stop = len(data) if end is None else end
        if stop - offset < PAYLOAD_SIZE:
            raise RtpError(f"telephone-event payload must be at least 4 bytes, got {stop - offset}")
        event, flags, duration = _EVENT.unpack_from(data, offset)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    @property
    def key(self) -> str | None:
        """The DTMF key this event is, or None for the other events (flash, tones)."""
        return DTMF_KEYS[self.event] if self.event < len(DTMF_KEYS) else None

    def serialize(self) -> bytes:
        if not 0 <= self.event <= 255:
            raise RtpError(f"event code {self.event} out of range 0..255")
        if not 0 <= self.volume <= 63:
            raise RtpError(f"volume {self.volume} out of range 0..63")
        if not 0 <= self.duration <= MAX_DURATION:
            raise RtpError(f"duration {self.duration} out of range 0..65535")
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


def key_press_events(
    key: str, *, duration: int = 800, interval: int = 160, volume: int = 10, end_repeats: int = 3
) -> list[TelephoneEvent]:
    """The event reports a sender emits for one key press of ``duration`` timestamp units (800 = 100 ms at
    8 kHz), one every ``interval`` units, the final one repeated ``end_repeats`` times. All of them go out with
    the same RTP timestamp; the first one with the marker bit."""
    if duration <= 0 or interval <= 0 or end_repeats <= 0 or duration > MAX_DURATION:
        raise ValueError("duration (1..65535), interval and end_repeats must be positive")
    code = event_code(key)
    reports = [TelephoneEvent(code, False, volume, d) for d in range(interval, duration, interval)]
    reports += [TelephoneEvent(code, True, volume, duration)] * end_repeats
    return reports


class _Press:
    __slots__ = ("duration", "ended", "event", "ssrc", "timestamp")

    def __init__(self, ssrc: int, timestamp: int, event: int, duration: int, ended: bool) -> None:
        self.ssrc = ssrc
        self.timestamp = timestamp
        self.event = event
        self.duration = duration
        self.ended = ended


class EventCounter:
    """Counts distinct DTMF key presses in a stream of telephone-event packets.

    ``feed()`` returns the key ("0".."9", "*", "#", "A".."D") the first time a packet of a new press arrives,
    whether or not that packet has the marker bit, and None for every further packet of the same press
    (updates, the repeated end packets, retransmissions, late reordered packets). An event longer than the
    16-bit duration field is sent as segments (RFC 4733 section 2.5.1.3) with new timestamps; a segment that
    continues the current unfinished press exactly where it left off is not a new press. Events that are not
    DTMF keys (flash, tones) are ignored.
    """

    __slots__ = ("_current", "_memory", "_recent", "_recent_order", "presses")

    def __init__(self, memory: int = 16) -> None:
        self.presses = 0
        self._current: _Press | None = None
        self._recent: set[tuple[int, int]] = set()
        self._recent_order: deque[tuple[int, int]] = deque()
        self._memory = memory

    def feed(self, timestamp: int, report: TelephoneEvent, *, marker: bool = False, ssrc: int = 0) -> str | None:
        key = report.key
        if key is None:
            return None
        ident = (ssrc, timestamp)
        current = self._current
        if current is not None and current.ssrc == ssrc and current.timestamp == timestamp:
            if report.event == current.event:
                current.duration = max(current.duration, report.duration)
                current.ended = current.ended or report.end
            return None
        if ident in self._recent:
            return None  # a late packet of an earlier press
        continuation = (
            current is not None
            and not marker
            and not current.ended
            and current.ssrc == ssrc
            and current.event == report.event
            and (timestamp - current.timestamp) & 0xFFFFFFFF in (current.duration, MAX_DURATION)
        )
        self._remember(ident)
        self._current = _Press(ssrc, timestamp, report.event, report.duration, report.end)
        if continuation:
            return None
        self.presses += 1
        return key

    def _remember(self, ident: tuple[int, int]) -> None:
        self._recent.add(ident)
        self._recent_order.append(ident)
        if len(self._recent_order) > self._memory:
            self._recent.discard(self._recent_order.popleft())
