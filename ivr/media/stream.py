"""``MediaStream``: the RTP side of one call leg (one UDP socket, one remote address).

Receiving: the socket is watched with ``loop.add_reader``; each wake-up drains the queued datagrams with
``recvfrom_into`` into one reusable buffer (no asyncio callback or ``bytes`` object per packet; FIONREAD, not a
``BlockingIOError``, tells when the queue is empty). Packets from a
source other than the remote are dropped and counted, except that with ``allow_relatch`` the first valid RTP
packet from another source, arriving before any from the signalled address, moves the remote there (symmetric
RTP behind NAT). RFC 4733 packets with the negotiated payload type become key presses. Malformed packets are
counted and dropped; nothing raises into the loop.

Sending: ``play()`` registers the stream with the ``MediaClock``, which calls ``send_tick()`` every 20 ms; the
stream sends one frame per tick through a preallocated packet buffer (``RtpHeaderWriter``) with
``sock.sendto``; errors are counted, never raised. Sequence numbers start at random and go up by one per packet
sent; timestamps are ``random base + tick * 160`` and so advance in real time while the stream is idle (nothing
is sent while idle: silence suppression) or on hold. The first packet after a gap (start of a talk-spurt) has
the marker bit.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import secrets
import socket
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from termios import FIONREAD
from typing import Final

from ivr.media import g711
from ivr.media.clock import MediaClock
from ivr.media.rtp import RtpError, RtpHeaderWriter, parse_header
from ivr.media.telephone_event import EventCounter, TelephoneEvent

__all__ = ["MAX_DATAGRAMS_PER_WAKEUP", "RECEIVE_BUFFER_SIZE", "MediaStream", "StreamStats"]

RECEIVE_BUFFER_SIZE: Final = 2048
"""Larger datagrams are not G.711 or telephone-event RTP; they are counted as malformed."""

MAX_DATAGRAMS_PER_WAKEUP: Final = 256
"""A flood cannot hold the loop: the reader returns after this many and is called again on the next pass."""

_ioctl = fcntl.ioctl  # FIONREAD on the socket (the unit tests substitute it for their fake socket)


@dataclass(slots=True)
class StreamStats:
    packets_sent: int = 0
    octets_sent: int = 0
    """Payload octets, as in an RTCP sender report."""
    send_errors: int = 0
    """``sendto`` failures (ECONNREFUSED, ENOBUFS, EAGAIN, ...): the packet is lost, its sequence number used."""
    packets_received: int = 0
    """Valid RTP packets from the remote (any payload type)."""
    octets_received: int = 0
    """Payload octets of ``packets_received``."""
    dropped_wrong_source: int = 0
    dropped_malformed: int = 0
    ignored_payload_type: int = 0
    """Valid packets with a payload type that is neither the codec's nor telephone-event's (e.g. comfort noise)."""
    receive_errors: int = 0
    relatched: int = 0
    dtmf_digits: int = 0


def _normalize(addr: tuple[str, int], family: int) -> tuple[str, int]:
    """``addr`` with its host in the canonical text form ``recvfrom`` reports, so sources compare equal."""
    host, port = addr[0], addr[1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"RTP remote host must be an IP address literal, got {host!r}") from None
    if not 0 < port <= 65535:
        raise ValueError(f"RTP remote port {port} out of range 1..65535")
    if (ip.version == 6) != (family == socket.AF_INET6):
        raise ValueError(f"RTP remote {host} is IPv{ip.version}, the socket is not")
    return str(ip), port


class MediaStream:
    """RTP for one call leg. ``clock`` defaults to the shared ``MediaClock.for_loop(loop)``.

    ``on_digit(key)`` is called (via ``loop.call_soon``) once per RFC 4733 key press; ``on_audio(sequence,
    timestamp, payload)`` is called directly for every accepted packet of the negotiated codec (for DTMF
    detection in-band, VAD or recording; leave it None when nobody listens, it costs a copy per packet).
    """

    __slots__ = (
        "_buffer",
        "_clock",
        "_closed",
        "_contiguous_tick",
        "_count",
        "_fd",
        "_frames",
        "_hold",
        "_loop",
        "_looping",
        "_on_done",
        "_pack_packet",
        "_packets_sent",
        "_pending",
        "_position",
        "_pt",
        "_pt_marker",
        "_rbuf",
        "_relatch_armed",
        "_remote",
        "_sendto",
        "_sequence",
        "_sock",
        "_spt",
        "_stats",
        "_timestamp_base",
        "_writer",
        "allow_relatch",
        "codec",
        "dtmf",
        "on_audio",
        "on_digit",
        "payload_type",
        "ssrc",
        "telephone_event_pt",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        *,
        codec: str,
        payload_type: int,
        remote: tuple[str, int],
        telephone_event_pt: int | None = None,
        ssrc: int | None = None,
        allow_relatch: bool = False,
        clock: MediaClock | None = None,
        on_digit: Callable[[str], None] | None = None,
        on_audio: Callable[[int, int, bytes], None] | None = None,
    ) -> None:
        self.codec = g711.codec_key(codec)
        self.payload_type = payload_type
        self.telephone_event_pt = telephone_event_pt
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self.allow_relatch = allow_relatch
        self.on_digit = on_digit
        self.on_audio = on_audio
        self._stats = StreamStats()
        self.dtmf = EventCounter()
        self._loop = loop
        self._clock = clock if clock is not None else MediaClock.for_loop(loop)
        self._sock = sock
        self._sendto = sock.sendto
        self._remote = _normalize(remote, sock.family)
        self._relatch_armed = allow_relatch
        self._spt = self._clock.samples_per_tick  # samples (= G.711 bytes) per frame and timestamp step
        self._writer = RtpHeaderWriter(payload_type, self.ssrc, self._spt)
        self._buffer = self._writer.buffer
        self._pack_packet = self._writer.pack_into
        self._pt = payload_type
        self._pt_marker = payload_type | 0x80
        self._packets_sent = 0
        self._sequence = secrets.randbits(16)
        self._timestamp_base = secrets.randbits(32)
        self._contiguous_tick = -1  # the tick right after the last packet sent; another tick starts a talk-spurt
        self._frames: tuple[bytes, ...] = ()
        self._count = 0
        self._position = 0
        self._looping = False
        self._on_done: Callable[[], None] | None = None
        self._hold = False
        self._closed = False
        self._rbuf = bytearray(RECEIVE_BUFFER_SIZE)
        self._pending = array("i", [0])
        sock.setblocking(False)
        self._fd = sock.fileno()
        loop.add_reader(self._fd, self._on_readable)

    # -- properties -----------------------------------------------------------------------------------------

    @property
    def stats(self) -> StreamStats:
        """Live counters (the same object every time; the send counters are brought up to date on access)."""
        stats = self._stats
        stats.packets_sent = self._packets_sent
        stats.octets_sent = self._packets_sent * self._spt
        return stats

    @property
    def remote(self) -> tuple[str, int]:
        return self._remote

    @property
    def local_address(self) -> tuple[str, int]:
        name = self._sock.getsockname()
        return str(name[0]), int(name[1])

    @property
    def clock(self) -> MediaClock:
        return self._clock

    @property
    def playing(self) -> bool:
        return self._count > 0

    @property
    def on_hold(self) -> bool:
        return self._hold

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sequence(self) -> int:
        """The sequence number of the next packet to send."""
        return self._sequence

    def timestamp_for(self, tick: int) -> int:
        """The RTP timestamp of a frame sent on clock tick ``tick``."""
        return (self._timestamp_base + tick * self._spt) & 0xFFFFFFFF

    # -- control --------------------------------------------------------------------------------------------

    def play(self, frames: Sequence[bytes], *, loop: bool = False, on_done: Callable[[], None] | None = None) -> None:
        """Send ``frames`` (each exactly one ptime of the stream's codec, e.g. ``prompt.frames(codec)``), one per
        tick from the next tick on. Replaces a playback in progress without a gap (that one's ``on_done`` is
        not called). With ``loop`` the frames repeat until ``stop_playback()``; otherwise ``on_done`` is
        called (via ``loop.call_soon``) after the last frame is sent. Playing no frames ends at once."""
        if self._closed:
            raise RuntimeError("play() on a closed MediaStream")
        frames = tuple(frames)
        for frame in frames:
            if len(frame) != self._spt:
                raise ValueError(f"every frame must be {self._spt} bytes of {self.codec}, got {len(frame)}")
        if not frames:
            self.stop_playback()
            if on_done is not None:
                self._loop.call_soon(on_done)
            return
        self._frames = frames
        self._count = len(frames)
        self._position = 0
        self._looping = loop
        self._on_done = on_done
        self._clock.add(self)

    def stop_playback(self) -> None:
        """Stop sending now (``on_done`` is not called). The next ``play()`` starts a new talk-spurt."""
        self._count = 0
        self._frames = ()
        self._on_done = None
        self._clock.discard(self)

    def set_remote(self, addr: tuple[str, int]) -> None:
        """Send to and accept from ``addr`` from now on (re-INVITE); re-arms the NAT re-latch if allowed."""
        self._remote = _normalize(addr, self._sock.family)
        self._relatch_armed = self.allow_relatch

    def set_hold(self, hold: bool) -> None:
        """On hold nothing is sent; a playback keeps running silently (it ends and calls ``on_done`` at the
        same time as it would have), timestamps keep advancing, and the first packet after hold is marked."""
        self._hold = hold

    def close(self) -> None:
        """Stop playback, leave the clock, stop reading and close the socket (idempotent). The RTP port goes
        back to its pool with ``RtpPortPool.release``, which is the caller's job."""
        if self._closed:
            return
        self._closed = True
        self.stop_playback()
        self._loop.remove_reader(self._fd)
        self._sock.close()

    # -- sending (called by the clock) ------------------------------------------------------------------------

    def send_tick(self, tick: int) -> None:
        """Send the next frame for clock tick ``tick``. Allocates nothing but the ``sendto`` call's own work."""
        # Bound methods held in slots are read into locals first: a call like ``self._sendto(...)`` does not
        # specialise in CPython 3.11 (LOAD_METHOD on an instance slot) and costs a generic descriptor lookup.
        position = self._position
        if not self._hold:
            buf = self._buffer
            pack_packet = self._pack_packet
            pack_packet(
                buf,
                1,
                self._pt if tick == self._contiguous_tick else self._pt_marker,
                self._sequence,
                (self._timestamp_base + tick * self._spt) & 0xFFFFFFFF,
                self.ssrc,
                self._frames[position],
            )
            sendto = self._sendto
            try:
                sendto(buf, self._remote)
                self._packets_sent += 1
            except OSError:
                self._stats.send_errors += 1
            self._sequence = (self._sequence + 1) & 0xFFFF
            self._contiguous_tick = tick + 1
        position += 1
        if position < self._count:
            self._position = position
        elif self._looping:
            self._position = 0
        else:
            on_done = self._on_done
            self.stop_playback()
            if on_done is not None:
                self._loop.call_soon(on_done)

    # -- receiving ------------------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        recvfrom_into = self._sock.recvfrom_into
        buf = self._rbuf
        stats = self._stats
        pending = self._pending
        for count in range(MAX_DATAGRAMS_PER_WAKEUP):
            # After the first datagram, ask the kernel whether another one is queued (FIONREAD gives the size of
            # the next datagram) rather than calling recvfrom until it raises: raising BlockingIOError on every
            # wake-up costs more than the ioctl. A queued empty datagram or error is read on the next wake-up.
            if count and (self._closed or _ioctl(self._fd, FIONREAD, pending, True) or not pending[0]):
                return
            try:
                nbytes, addr = recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                stats.receive_errors += 1  # e.g. a queued ICMP error; datagrams behind it come next wake-up
                return
            remote = self._remote
            from_remote = addr[1] == remote[1] and addr[0] == remote[0]
            if not from_remote and not self._relatch_armed:
                stats.dropped_wrong_source += 1
                continue
            if nbytes >= RECEIVE_BUFFER_SIZE:
                stats.dropped_malformed += 1
                continue
            try:
                payload_type, marker, sequence, timestamp, ssrc, start, end = parse_header(buf, nbytes)
                event = TelephoneEvent.parse(buf, start, end) if payload_type == self.telephone_event_pt else None
            except RtpError:
                stats.dropped_malformed += 1
                continue
            if not from_remote:
                if payload_type != self.payload_type and event is None:
                    stats.dropped_wrong_source += 1
                    continue
                self._remote = (str(addr[0]), int(addr[1]))
                stats.relatched += 1
            self._relatch_armed = False
            stats.packets_received += 1
            stats.octets_received += end - start
            if event is not None:
                key = self.dtmf.feed(timestamp, event, marker=marker, ssrc=ssrc)
                if key is not None:
                    stats.dtmf_digits += 1
                    if self.on_digit is not None:
                        self._loop.call_soon(self.on_digit, key)
            elif payload_type == self.payload_type:
                on_audio = self.on_audio
                if on_audio is not None:
                    try:
                        on_audio(sequence, timestamp, bytes(buf[start:end]))
                    except Exception as exc:  # a listener's bug must not stop the receive path
                        self._loop.call_exception_handler(
                            {"message": "MediaStream on_audio callback failed", "exception": exc}
                        )
            else:
                stats.ignored_payload_type += 1
