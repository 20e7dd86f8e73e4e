"""RFC 4733 telephone-event payloads (DTMF carried in RTP), sans-I/O.

A key press is sent as a run of RTP packets that all carry the RTP timestamp of the moment the key went down:
a first packet (normally with the marker bit), updates with a growing duration, then the final packet with the
E (end) bit, usually sent three times. Any of them may be lost, duplicated or reordered. ``EventCounter`` turns
that packet sequence back into distinct key presses (``DigitEvent``, with duration and volume): a press is
identified by (SSRC, RTP timestamp, event code), so a start without the marker bit, the repeated end packets and
retransmissions all count once, and a new press of the same key (a new timestamp) counts again.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

from ivr.media.digits import DTMF_KEYS, DigitEvent
from ivr.media.rtp import RtpError

__all__ = [
    "DTMF_KEYS",
    "PAYLOAD_SIZE",
    "DigitEvent",
    "EventCounter",
    "TelephoneEvent",
    "event_code",
    "key_press_events",
]

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
    __slots__ = ("base", "digit", "event", "last_sequence", "segment", "ssrc", "timestamp")

    def __init__(self, ssrc: int, timestamp: int, event: int, digit: DigitEvent, sequence: int | None) -> None:
        self.ssrc = ssrc
        self.timestamp = timestamp  # of the current segment
        self.event = event
        self.base = 0  # timestamp units of the earlier segments of a long event
        self.segment = 0  # the longest duration seen in the current segment
        self.digit = digit
        self.last_sequence = sequence


_NOTHING: Final[tuple[None, None]] = (None, None)


def _newer(sequence: int, than: int) -> bool:
    return 0 < (sequence - than) & 0xFFFF < 0x8000


class EventCounter:
    """Turns telephone-event packets into distinct DTMF key presses (``DigitEvent``).

    ``feed_event()`` gives ``(started, ended)``: ``started`` is a new ``DigitEvent`` the first time a packet of a
    new press arrives, whether or not that packet has the marker bit (so a press whose first packets were lost
    still counts, once); ``ended`` is the press that finished with this packet: its first end packet, or an
    unfinished press that a new one replaced (its end packets were all lost). Further packets of a press
    (updates, the repeated end packets, retransmissions, late reordered packets) give ``(None, None)`` and only
    bring the press's ``duration_ms`` up to date. A press is identified by (SSRC, RTP timestamp, event code).

    Long events (RFC 4733 section 2.5.1.3) arrive as segments with new timestamps; a segment that continues the
    current unfinished press exactly where it left off is the same press, and its duration adds up. A sender
    that wrongly reuses the timestamp of a finished press for the next press of the same key is heard when the
    RTP ``sequence`` is given: a non-end packet newer than every packet of the finished press is a new press.
    Events that are not DTMF keys (flash, tones) are ignored. ``feed()`` is the key-only form.
    """

    __slots__ = ("_current", "_memory", "_recent", "_recent_order", "clock_rate", "presses")

    def __init__(self, memory: int = 16, *, clock_rate: int = 8000) -> None:
        self.presses = 0
        self.clock_rate = clock_rate
        self._current: _Press | None = None
        self._recent: set[tuple[int, int, int]] = set()
        self._recent_order: deque[tuple[int, int, int]] = deque()
        self._memory = memory

    @property
    def current(self) -> DigitEvent | None:
        """The latest press (ended or not), None before the first."""
        return None if self._current is None else self._current.digit

    def feed(self, timestamp: int, report: TelephoneEvent, *, marker: bool = False, ssrc: int = 0) -> str | None:
        """The key of a press that starts with this packet, else None (see ``feed_event``)."""
        started, _ = self.feed_event(timestamp, report, marker=marker, ssrc=ssrc)
        return None if started is None else started.key

    def feed_event(
        self,
        timestamp: int,
        report: TelephoneEvent,
        *,
        marker: bool = False,
        ssrc: int = 0,
        sequence: int | None = None,
    ) -> tuple[DigitEvent | None, DigitEvent | None]:
        key = report.key
        if key is None:
            return _NOTHING
        code = report.event
        ident = (ssrc, timestamp, code)
        current = self._current
        if current is not None and current.ssrc == ssrc and current.timestamp == timestamp and current.event == code:
            digit = current.digit
            repress = (
                digit.ended
                and not report.end
                and sequence is not None
                and current.last_sequence is not None
                and _newer(sequence, current.last_sequence)
            )
            if not repress:
                return self._update(current, report, sequence)
        elif ident in self._recent:
            return _NOTHING  # a late packet of an earlier press
        elif (
            current is not None
            and not marker
            and not current.digit.ended
            and current.ssrc == ssrc
            and current.event == code
            and (timestamp - current.timestamp) & 0xFFFFFFFF in (current.segment, MAX_DURATION)
        ):
            # The next segment of a long event.
            current.base += (timestamp - current.timestamp) & 0xFFFFFFFF
            current.timestamp = timestamp
            current.segment = 0
            self._remember(ident)
            return self._update(current, report, sequence)
        ended: DigitEvent | None = None
        if current is not None and not current.digit.ended:
            current.digit.ended = True
            ended = current.digit
        digit = DigitEvent(key, "rfc4733", report.volume)
        press = _Press(ssrc, timestamp, code, digit, sequence)
        self._current = press
        self._remember(ident)
        self.presses += 1
        self._update(press, report, sequence)
        return digit, ended

    def _update(
        self, press: _Press, report: TelephoneEvent, sequence: int | None
    ) -> tuple[DigitEvent | None, DigitEvent | None]:
        if report.duration > press.segment:
            press.segment = report.duration
            press.digit.duration_ms = (press.base + report.duration) * 1000 // self.clock_rate
        if sequence is not None and (press.last_sequence is None or _newer(sequence, press.last_sequence)):
            press.last_sequence = sequence
        digit = press.digit
        if report.end and not digit.ended:
            digit.ended = True
            return None, digit
        return _NOTHING

    def _remember(self, ident: tuple[int, int, int]) -> None:
        if ident in self._recent:
            return
        self._recent.add(ident)
        self._recent_order.append(ident)
        if len(self._recent_order) > self._memory:
            self._recent.discard(self._recent_order.popleft())
