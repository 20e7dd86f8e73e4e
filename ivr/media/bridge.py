"""``MediaBridge``: two call legs' audio relayed both ways through the daemon, paced by the media clock.

Each leg's ``MediaStream`` keeps receiving (source checks, reception statistics) and hands every packet of its codec
to the bridge (``on_audio``). The payload is cut into 20 ms frames and queued for the other leg; on every clock tick
the bridge sends at most one queued frame per direction, with the other leg's SSRC and a sequence number and
timestamp that continue where that leg's stream left off (the caller hears one RTP stream from the IVR, prompts
then agent). When the legs use different codecs the frame is transcoded on the way (PCMU <-> PCMA by a 256-byte
table: A-law and mu-law are both 8-bit companded samples). The queue of a direction is bounded: after a burst the
oldest frames are dropped so the delay never grows past ``max_delay_frames``; an empty queue sends nothing (the next
frame starts a talk-spurt, with the marker bit).
"""

from __future__ import annotations

import socket
import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np

from ivr.media import g711
from ivr.media.clock import MediaClock
from ivr.media.stream import MediaStream

__all__ = ["BridgeStats", "MediaBridge", "transcode_table"]

FRAME_BYTES: Final = 160  # 20 ms of G.711 at 8 kHz


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


class _Direction:
    __slots__ = ("byte1", "dropped", "max_frames", "next_tick", "pack", "partial", "queue", "sent",
                 "sequence", "sock", "ssrc", "table", "target", "timestamp_base")  # fmt: skip

    def __init__(self, target: MediaStream, sock: socket.socket, table: bytes | None, max_frames: int) -> None:
        self.target = target
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
    """Relay audio between legs ``a`` and ``b`` (their streams and the sockets they send from). Start with
    :meth:`start`; :meth:`stop` leaves the clock and hands the streams back (they are not closed)."""

    def __init__(
        self,
        clock: MediaClock,
        a: MediaStream,
        a_sock: socket.socket,
        b: MediaStream,
        b_sock: socket.socket,
        *,
        max_delay_frames: int = 8,
    ) -> None:
        self.clock = clock
        self.a = a
        self.b = b
        self._a_to_b = _Direction(b, b_sock, transcode_table(a.codec, b.codec), max_delay_frames)
        self._b_to_a = _Direction(a, a_sock, transcode_table(b.codec, a.codec), max_delay_frames)
        self._buffer = bytearray(12 + FRAME_BYTES)
        self._received_a = 0
        self._received_b = 0
        self._send_errors = 0
        self.running = False

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        self.a.stop_playback()
        self.b.stop_playback()
        self.a.on_audio = self._from_a
        self.b.on_audio = self._from_b
        self.clock.add(self)

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        self.clock.discard(self)
        self.a.on_audio = None
        self.b.on_audio = None

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
        )

    def _from_a(self, _sequence: int, _timestamp: int, payload: bytes) -> None:
        self._received_a += 1
        self._a_to_b.feed(payload)

    def _from_b(self, _sequence: int, _timestamp: int, payload: bytes) -> None:
        self._received_b += 1
        self._b_to_a.feed(payload)

    def send_tick(self, tick: int) -> None:
        """One frame per direction, if one is queued (called by the clock)."""
        self._send(self._a_to_b, tick)
        self._send(self._b_to_a, tick)

    def _send(self, d: _Direction, tick: int) -> None:
        if not d.queue:
            return
        frame = d.queue.popleft()
        byte1 = d.byte1 if tick == d.next_tick else d.byte1 | 0x80
        timestamp = (d.timestamp_base + tick * FRAME_BYTES) & 0xFFFFFFFF
        d.pack(self._buffer, 0, 0x80, byte1, d.sequence, timestamp, d.ssrc, frame)
        d.sequence = (d.sequence + 1) & 0xFFFF
        d.next_tick = tick + 1
        if d.target.on_hold:
            return
        try:
            d.sock.sendto(self._buffer, d.target.remote)
            d.sent += 1
        except OSError:
            self._send_errors += 1
