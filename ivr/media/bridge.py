"""``MediaBridge``: two call legs' audio relayed both ways through the daemon, paced by the media clock.

Each leg's ``MediaStream`` keeps receiving (source checks, reception statistics) and hands every packet of its codec
to the bridge (``on_audio``). The payload is cut into 20 ms frames and queued for the other leg; on every clock tick
the bridge sends at most one queued frame per direction, with the other leg's SSRC and a sequence number and
timestamp that continue where that leg's stream left off (the caller hears one RTP stream from the IVR, prompts
then agent). When the legs use different codecs the frame is transcoded on the way (PCMU <-> PCMA by a 256-byte
table: A-law and mu-law are both 8-bit companded samples). The queue of a direction is bounded: after a burst the
oldest frames are dropped so the delay never grows past ``max_delay_frames``; an empty queue sends nothing (the next
frame starts a talk-spurt, with the marker bit).

Key presses cross too. A press one leg's stream hears (RFC 4733, or in-band tones on a leg without telephone-event)
and a press that came by SIP INFO (:meth:`MediaBridge.digit_from_a` / :meth:`~MediaBridge.digit_from_b`) is queued
for the other leg. When that leg negotiated telephone-event it goes out as RFC 4733 with that leg's payload type, on
the bridge's own sequence numbers and clock: the press's packets all carry the timestamp of the tick its first
packet (marker bit) went out on, an update every tick carries the duration the source reported so far (an in-band
press: the time elapsed; an INFO press is played out over its ``Duration``), and the end packet goes out three
times with the final duration; a press longer than 0xFFFF units continues in a new segment (RFC 4733 2.5.1.3). The
direction's audio is muted while the press is sent (the key is carried once, not as a tone as well), and the
audio after it starts a new talk-spurt. A leg without telephone-event gets the press by SIP INFO (``send_info_a`` /
``send_info_b``) once it has ended, with its duration. A press the source never ends (its end packets lost) ends
after ``STALL_TICKS`` ticks without news. With no press in flight a tick costs one extra truthiness test.
"""

from __future__ import annotations

import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from ivr.media import g711
from ivr.media.clock import MediaClock
from ivr.media.digits import DigitEvent
from ivr.media.stream import MediaStream
from ivr.media.telephone_event import MAX_DURATION, event_code

__all__ = ["END_REPEATS", "MAX_PENDING_DIGITS", "STALL_TICKS", "BridgeStats", "InfoSender", "MediaBridge",
           "transcode_table"]  # fmt: skip

FRAME_BYTES: Final = 160  # 20 ms of G.711 at 8 kHz
END_REPEATS: Final = 3  # RFC 4733 2.5.1.4: the end packet is sent three times
STALL_TICKS: Final = 15
"""A relayed press whose source reported nothing new for this many ticks (300 ms) is ended by the bridge (its end
packets were lost); an in-band or INFO press, whose length only its end tells, gets ``MAX_PRESS_TICKS``."""
MAX_PRESS_TICKS: Final = 500  # 10 s
MAX_PENDING_DIGITS: Final = 16
"""Presses waiting to be sent on one leg; more are dropped (counted), so a flood cannot mute a leg for long."""

InfoSender = Callable[[str, int], None]
"""Sends a key (``"0"``-``"9"``, ``"*"``, ``"#"``, ``"A"``-``"D"``) with its duration in ms by SIP INFO on one leg.
Called from the media clock's tick: it must be quick and must not raise (schedule the SIP work)."""

_EVENT_PACKET: Final = struct.Struct("!BBHIIBBH")  # RTP header + one RFC 4733 event report


def transcode_table(source: str, target: str) -> bytes | None:
    """A ``bytes.translate`` table from ``source`` to ``target`` G.711 (None when they are the same codec)."""
    source, target = g711.codec_key(source), g711.codec_key(target)
    if source == target:
        return None
    pcm = g711.decode(source, bytes(range(256)))
    return g711.encode(target, np.asarray(pcm, dtype=np.int16))


@dataclass(slots=True)
class BridgeStats:
    """Frames per direction: ``a_to_b`` came from leg A and went to leg B."""

    received_a: int = 0
    received_b: int = 0
    sent_a_to_b: int = 0
    sent_b_to_a: int = 0
    dropped_a_to_b: int = 0
    dropped_b_to_a: int = 0
    send_errors: int = 0
    digits_a_to_b: int = 0
    """Key presses relayed (RFC 4733 or SIP INFO) from leg A to leg B."""
    digits_b_to_a: int = 0
    digits_dropped: int = 0
    """Presses not relayed: too many waiting, or the other leg has neither telephone-event nor INFO."""
    muted_frames: int = 0
    """Audio frames left out because a key press was being sent in their place."""


class _Press:
    """One key press being relayed onto a leg (see the module docstring)."""

    __slots__ = ("base", "code", "digit", "ends_left", "final", "idle", "live", "sent", "ticks", "timestamp")

    def __init__(self, digit: DigitEvent) -> None:
        self.digit = digit
        self.code = event_code(digit.key)
        self.ticks = 0  # ticks since the press started going out
        self.sent = 0  # packets of it (sent or, on hold, not)
        self.timestamp = 0  # RTP timestamp of the current segment on the target leg
        self.base = 0  # duration units in the earlier segments
        self.live = -1  # the source's duration (units) at the last tick
        self.idle = 0  # ticks since that last grew
        self.ends_left = 0
        self.final = 0


class _Direction:
    __slots__ = ("byte1", "digits", "dropped", "event_buffer", "max_frames", "muted", "next_tick", "pack",
                 "partial", "presses", "queue", "send_info", "sent", "sequence", "sock", "ssrc", "table", "target",
                 "timestamp_base")  # fmt: skip

    def __init__(
        self,
        target: MediaStream,
        sock: socket.socket,
        table: bytes | None,
        max_frames: int,
        send_info: InfoSender | None,
    ) -> None:
        self.target = target
        self.send_info = send_info
        self.presses: deque[_Press] = deque()  # key presses to send on the target leg; the first is in flight
        self.digits = 0  # presses relayed
        self.muted = 0
        self.event_buffer = bytearray(_EVENT_PACKET.size)
        self.sock = sock
        self.table = table
        self.queue: deque[bytes] = deque()
        self.partial = bytearray()
        self.max_frames = max_frames
        self.byte1 = target.payload_type
        self.ssrc = target.ssrc
        self.sequence = target.sequence
        self.timestamp_base = target.timestamp_for(0)
        self.next_tick = -1
        self.sent = 0
        self.dropped = 0
        self.pack = struct.Struct(f"!BBHII{FRAME_BYTES}s").pack_into

    def feed(self, payload: bytes) -> None:
        if len(payload) == FRAME_BYTES and not self.partial:
            self.queue.append(payload if self.table is None else payload.translate(self.table))
        else:  # another packet time (10, 30, 40 ms ...): cut into 20 ms frames
            self.partial += payload
            while len(self.partial) >= FRAME_BYTES:
                frame = bytes(self.partial[:FRAME_BYTES])
                del self.partial[:FRAME_BYTES]
                self.queue.append(frame if self.table is None else frame.translate(self.table))
        if len(self.queue) > self.max_frames:
            while len(self.queue) > 2:
                self.queue.popleft()
                self.dropped += 1


class MediaBridge:
    """Relay audio and key presses between legs ``a`` and ``b`` (their streams and the sockets they send from).
    Start with :meth:`start`; :meth:`stop` leaves the clock and hands the streams back (they are not closed).

    ``send_info_a`` / ``send_info_b`` send a key by SIP INFO on leg a / b (see ``InfoSender``); they are used for a
    leg without a telephone-event payload type (without one, a press for such a leg is dropped and counted)."""

    def __init__(
        self,
        clock: MediaClock,
        a: MediaStream,
        a_sock: socket.socket,
        b: MediaStream,
        b_sock: socket.socket,
        *,
        max_delay_frames: int = 8,
        send_info_a: InfoSender | None = None,
        send_info_b: InfoSender | None = None,
    ) -> None:
        self.clock = clock
        self.a = a
        self.b = b
        self._a_to_b = _Direction(b, b_sock, transcode_table(a.codec, b.codec), max_delay_frames, send_info_b)
        self._b_to_a = _Direction(a, a_sock, transcode_table(b.codec, a.codec), max_delay_frames, send_info_a)
        self._buffer = bytearray(12 + FRAME_BYTES)
        self._received_a = 0
        self._received_b = 0
        self._send_errors = 0
        self._digits_dropped = 0
        self._a_digit: Callable[[DigitEvent], None] | None = None  # the streams' own listeners, called first
        self._b_digit: Callable[[DigitEvent], None] | None = None
        self.running = False

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        self.a.stop_playback()
        self.b.stop_playback()
        self.a.on_audio = self._from_a
        self.b.on_audio = self._from_b
        self._a_digit = self.a.on_digit_event
        self._b_digit = self.b.on_digit_event
        self.a.on_digit_event = self._digit_heard_a
        self.b.on_digit_event = self._digit_heard_b
        self.clock.add(self)

    def stop(self) -> None:
        """Leave the clock; a press being sent is cut short (the streams are handed back as they were)."""
        if not self.running:
            return
        self.running = False
        self.clock.discard(self)
        self.a.on_audio = None
        self.b.on_audio = None
        if self.a.on_digit_event == self._digit_heard_a:
            self.a.on_digit_event = self._a_digit
        if self.b.on_digit_event == self._digit_heard_b:
            self.b.on_digit_event = self._b_digit
        self._a_digit = self._b_digit = None
        self._a_to_b.presses.clear()
        self._b_to_a.presses.clear()

    @property
    def stats(self) -> BridgeStats:
        return BridgeStats(
            received_a=self._received_a,
            received_b=self._received_b,
            sent_a_to_b=self._a_to_b.sent,
            sent_b_to_a=self._b_to_a.sent,
            dropped_a_to_b=self._a_to_b.dropped,
            dropped_b_to_a=self._b_to_a.dropped,
            send_errors=self._send_errors,
            digits_a_to_b=self._a_to_b.digits,
            digits_b_to_a=self._b_to_a.digits,
            digits_dropped=self._digits_dropped,
            muted_frames=self._a_to_b.muted + self._b_to_a.muted,
        )

    @property
    def sending_digits(self) -> bool:
        """True while a key press is being relayed (or waits to be) in either direction."""
        return bool(self._a_to_b.presses or self._b_to_a.presses)

    # -- key presses in -------------------------------------------------------------------------------------

    def digit_from_a(self, digit: DigitEvent) -> None:
        """Relay a key press that leg A made to leg B. ``digit`` may still be going on (RFC 4733, in-band): it is
        read on every tick until it ``ended``. A SIP INFO press comes complete (``ended=True``, ``duration_ms``)."""
        self._queue_digit(self._a_to_b, digit)

    def digit_from_b(self, digit: DigitEvent) -> None:
        """Relay a key press that leg B made to leg A (see :meth:`digit_from_a`)."""
        self._queue_digit(self._b_to_a, digit)

    def _digit_heard_a(self, digit: DigitEvent) -> None:
        if self._a_digit is not None:
            self._a_digit(digit)
        self._queue_digit(self._a_to_b, digit)

    def _digit_heard_b(self, digit: DigitEvent) -> None:
        if self._b_digit is not None:
            self._b_digit(digit)
        self._queue_digit(self._b_to_a, digit)

    def _queue_digit(self, d: _Direction, digit: DigitEvent) -> None:
        if not self.running or len(d.presses) >= MAX_PENDING_DIGITS:
            self._digits_dropped += 1
            return
        if d.target.telephone_event_pt is None and d.send_info is None:
            self._digits_dropped += 1
            return
        d.presses.append(_Press(digit))

    # -- audio in ---------------------------------------------------------------------------------------------

    def _from_a(self, _sequence: int, _timestamp: int, payload: bytes) -> None:
        self._received_a += 1
        self._a_to_b.feed(payload)

    def _from_b(self, _sequence: int, _timestamp: int, payload: bytes) -> None:
        self._received_b += 1
        self._b_to_a.feed(payload)

    # -- sending (called by the clock) ------------------------------------------------------------------------

    def send_tick(self, tick: int) -> None:
        """One frame (or key press packet) per direction, if one is queued (called by the clock)."""
        self._send(self._a_to_b, tick)
        self._send(self._b_to_a, tick)

    def _send(self, d: _Direction, tick: int) -> None:
        if d.presses:
            self._send_press(d, tick)
            return
        if not d.queue:
            return
        frame = d.queue.popleft()
        byte1 = d.byte1 if tick == d.next_tick else d.byte1 | 0x80
        timestamp = (d.timestamp_base + tick * FRAME_BYTES) & 0xFFFFFFFF
        d.pack(self._buffer, 0, 0x80, byte1, d.sequence, timestamp, d.ssrc, frame)
        d.sequence = (d.sequence + 1) & 0xFFFF
        d.next_tick = tick + 1
        if d.target.muted:  # on hold, or awaiting its first RTP (send_after_first_packet)
            return
        try:
            d.sock.sendto(self._buffer, d.target.remote)
            d.sent += 1
        except OSError:
            self._send_errors += 1

    def _send_press(self, d: _Direction, tick: int) -> None:
        """This tick's part of the press in flight, in place of an audio frame."""
        if d.queue:
            d.queue.popleft()  # the source's audio meanwhile (the tone itself, or silence) is not relayed
            d.muted += 1
        d.next_tick = -1  # the audio after the press starts a new talk-spurt
        press = d.presses[0]
        digit = press.digit
        press.ticks += 1
        elapsed = press.ticks * FRAME_BYTES
        pt = d.target.telephone_event_pt
        if press.ends_left == 0:
            if digit.source == "rfc4733":
                live = digit.duration_ms * 8  # the sender's own figure, as far as it has come
                if live > press.live:
                    press.live = live
                    press.idle = 0
                else:
                    press.idle += 1
                stalled = press.idle >= STALL_TICKS
            else:
                live = elapsed  # in-band: known at its end; INFO: played out over its duration
                stalled = press.ticks > MAX_PRESS_TICKS
            if digit.ended and not (digit.source == "info" and pt is not None and elapsed < digit.duration_ms * 8):
                press.final = max(digit.duration_ms * 8, FRAME_BYTES if press.sent == 0 else 0, press.live)
                press.ends_left = END_REPEATS
            elif stalled:
                press.final = max(press.live, elapsed if digit.source != "rfc4733" else 0, FRAME_BYTES)
                press.ends_left = END_REPEATS
            elif pt is not None:
                self._send_event(d, press, pt, tick, live, False)
                return
            else:
                return  # SIP INFO goes once the press is over
        if pt is None:
            d.presses.popleft()
            if d.send_info is None:  # the leg lost its telephone-event (re-INVITE) while the press was waiting
                self._digits_dropped += 1
                return
            d.digits += 1
            d.send_info(digit.key, max(1, press.final // 8))
            return
        self._send_event(d, press, pt, tick, press.final, True)
        if press.ends_left == END_REPEATS:
            d.digits += 1  # the far end has the whole press with this first end packet
        press.ends_left -= 1
        if press.ends_left == 0:
            d.presses.popleft()

    def _send_event(self, d: _Direction, press: _Press, pt: int, tick: int, duration: int, end: bool) -> None:
        if press.sent == 0:
            press.timestamp = (d.timestamp_base + tick * FRAME_BYTES) & 0xFFFFFFFF
            byte1 = pt | 0x80
        else:
            byte1 = pt
        units = duration - press.base
        if units > MAX_DURATION and not end:
            # RFC 4733 2.5.1.3: this segment ends at the longest duration; the next starts 0xFFFF units later.
            units = MAX_DURATION
            press.base += MAX_DURATION
            next_timestamp = (press.timestamp + MAX_DURATION) & 0xFFFFFFFF
        else:
            units = min(max(units, 0), MAX_DURATION)
            next_timestamp = press.timestamp
        volume = press.digit.volume
        flags = (0x80 if end else 0) | (10 if volume is None else min(max(volume, 0), 63))
        _EVENT_PACKET.pack_into(d.event_buffer, 0, 0x80, byte1, d.sequence, press.timestamp, d.ssrc, press.code,
                                flags, units)  # fmt: skip
        press.timestamp = next_timestamp
        press.sent += 1
        d.sequence = (d.sequence + 1) & 0xFFFF
        if d.target.muted:
            return
        try:
            d.sock.sendto(d.event_buffer, d.target.remote)
        except OSError:
            self._send_errors += 1
