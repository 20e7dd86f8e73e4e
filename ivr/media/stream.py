"""``MediaStream``: the RTP side of one call leg (one UDP socket, one remote address).

Receiving: the socket is watched with ``loop.add_reader``; each wake-up drains the queued datagrams with
``recvfrom_into`` into one reusable buffer (no asyncio callback or ``bytes`` object per packet; FIONREAD, not a
``BlockingIOError``, tells when the queue is empty). Packets from a
source other than the remote are dropped and counted, except that with ``allow_relatch`` the first valid RTP
packet from another source, arriving before any from the signalled address, moves the remote there (symmetric
RTP behind NAT). Malformed packets are counted and dropped; nothing raises into the loop. Every packet from the
remote feeds the RFC 3550 reception statistics (``reception``: expected, lost, jitter), kept for the call record.

Sending only to a source that has sent (``send_after_first_packet``): the address in a caller's SDP is only a
claim, and an unauthenticated INVITE naming a third party would otherwise make the stream send a whole prompt there.
With the option on, the stream sends nothing until the first valid RTP packet is accepted from the remote (the
same packet that ``allow_relatch`` may latch onto from another source); from then on it sends to where that packet
came from. The two combine: latch alone waits for RTP from the signalled address itself; latch with
``allow_relatch`` waits for the first valid RTP from any source and sends there (symmetric RTP, what callers behind
NAT need); relatch alone sends to the signalled address at once and moves on the first packet from elsewhere.
While it waits the stream stays on the media clock exactly as on hold: each frame due is dropped (counted in
``StreamStats.frames_not_sent_waiting``, key press reports in ``digit_packets_not_sent_waiting``), the playback
keeps its place and ends (``on_done``) at the time it would have, and the first packet sent is a talk-spurt start
with the timestamp of its tick. A prompt is not held back until media begins: the flow's timing (no-input timers,
``on_done``) stays on the clock whether or not the caller sends, and a caller that never sends RTP hears nothing
and is ended by the call's own timers (``media.rtp_timeout``). ``set_remote`` to a new address (re-INVITE) waits
again for RTP from there. The hot path pays nothing for it: ``send_tick`` tests one flag (``_silent``: on hold or
waiting) where it tested the hold flag before.

Digits: RFC 4733 packets with the negotiated payload type, or in-band tones, as ``dtmf_mode`` says (``auto``:
RFC 4733 when a telephone-event payload type was negotiated, in-band otherwise). A press is announced once, at its
start, through ``on_digit(key)`` and ``on_digit_event(DigitEvent)`` (both via ``loop.call_soon``, so a barge-in
can stop the prompt before the next tick); ``on_digit_end(DigitEvent)`` follows when the key is released.

Decoded audio: ``add_audio_consumer(callback)`` turns on the inbound audio path (a ``JitterBuffer`` that reorders,
drops duplicates, decodes and fills gaps with silence) and hands every consumer contiguous 20 ms int16 frames.
Nothing is decoded while nobody listens (and the in-band detector is off).

Sending: ``play()`` registers the stream with the ``MediaClock``, which calls ``send_tick()`` every 20 ms; the
stream sends one frame per tick through a preallocated packet buffer (``RtpHeaderWriter``) with
``sock.sendto``; errors are counted, never raised. Sequence numbers start at random and go up by one per packet
sent; timestamps are ``random base + tick * 160`` and so advance in real time while the stream is idle (nothing
is sent while idle: silence suppression) or on hold. The first packet after a gap (start of a talk-spurt) has
the marker bit. ``send_digit()`` sends an RFC 4733 key press on the same clock (the prompt pauses meanwhile).
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import secrets
import socket
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from termios import FIONREAD
from typing import Final, get_args

from ivr.media import g711
from ivr.media.clock import MediaClock
from ivr.media.digits import DigitEvent, DtmfMode, normalize_key
from ivr.media.dtmf_inband import InbandDtmfDetector
from ivr.media.jitterbuffer import JitterBuffer, Pcm, ReceptionStats
from ivr.media.rtp import RtpError, RtpHeaderWriter, parse_header
from ivr.media.telephone_event import MAX_DURATION, EventCounter, TelephoneEvent, key_press_events

__all__ = [
    "MAX_DATAGRAMS_PER_WAKEUP",
    "RECEIVE_BUFFER_SIZE",
    "AudioConsumer",
    "MediaStream",
    "StreamStats",
]

AudioConsumer = Callable[[Pcm], None]
"""Called with each 20 ms frame of the caller's audio (read-only int16, 160 samples at 8 kHz), in order."""

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
    frames_not_sent_waiting: int = 0
    """Prompt frames not sent because no RTP had come from the caller yet (``send_after_first_packet``)."""
    digit_packets_not_sent_waiting: int = 0
    """RFC 4733 reports of our key presses not sent for the same reason."""
    dtmf_digits: int = 0
    """Key presses heard in the media (RFC 4733 or in-band, as ``dtmf_mode`` says)."""
    dtmf_digits_sent: int = 0


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


class _DigitSend:
    """An RFC 4733 key press being sent: one serialized report per tick, all with the timestamp of the first."""

    __slots__ = ("key", "payloads", "position", "timestamp")

    def __init__(self, key: str, payloads: list[bytes]) -> None:
        self.key = key
        self.payloads = payloads
        self.position = 0
        self.timestamp = 0


class MediaStream:
    """RTP for one call leg, sent on ``clock`` (the process's media clock: a stream is always given it).

    ``on_digit(key)`` and ``on_digit_event(event)`` are called (via ``loop.call_soon``) once per key press, at its
    start; ``on_digit_end(event)`` when it ends (see ``DigitEvent``). ``on_audio(sequence, timestamp, payload)``
    is called directly for every accepted packet of the negotiated codec, undecoded and in arrival order (leave
    it None when nobody listens, it costs a copy per packet); ``add_audio_consumer`` gives decoded, ordered frames.

    ``send_after_first_packet``: send nothing until the first valid RTP packet is accepted from the remote, then
    send to its source (see the module docstring). With ``allow_relatch`` that packet may come from any source (the
    stream latches onto it: symmetric RTP); without, only from ``remote``, which it then confirms.
    """

    __slots__ = (
        "_buffer",
        "_clock",
        "_closed",
        "_consumers",
        "_contiguous_tick",
        "_count",
        "_dtmf_mode",
        "_event_writer",
        "_fd",
        "_frames",
        "_hold",
        "_inband",
        "_jitter",
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
        "_reception",
        "_relatch_armed",
        "_remote",
        "_rfc4733",
        "_send_after_first_packet",
        "_sendto",
        "_sequence",
        "_silent",
        "_sock",
        "_spt",
        "_stats",
        "_telephone_event_pt",
        "_timestamp_base",
        "_tx_digits",
        "_waiting",
        "_writer",
        "allow_relatch",
        "codec",
        "dtmf",
        "on_audio",
        "on_digit",
        "on_digit_end",
        "on_digit_event",
        "payload_type",
        "ssrc",
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
        send_after_first_packet: bool = False,
        clock: MediaClock,
        on_digit: Callable[[str], None] | None = None,
        on_audio: Callable[[int, int, bytes], None] | None = None,
        on_digit_event: Callable[[DigitEvent], None] | None = None,
        on_digit_end: Callable[[DigitEvent], None] | None = None,
        dtmf_mode: DtmfMode = "auto",
    ) -> None:
        self.codec = g711.codec_key(codec)
        self.payload_type = payload_type
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self.allow_relatch = allow_relatch
        self.on_digit = on_digit
        self.on_digit_event = on_digit_event
        self.on_digit_end = on_digit_end
        self.on_audio = on_audio
        self._stats = StreamStats()
        self._reception = ReceptionStats()
        self.dtmf = EventCounter()
        self._loop = loop
        self._clock = clock
        self._sock = sock
        self._sendto = sock.sendto
        self._remote = _normalize(remote, sock.family)
        self._relatch_armed = allow_relatch
        self._send_after_first_packet = send_after_first_packet
        self._waiting = send_after_first_packet  # no valid RTP accepted from the remote yet: nothing is sent
        self._hold = False
        self._silent = send_after_first_packet  # on hold or waiting: the one flag send_tick tests
        self._spt = self._clock.samples_per_tick  # samples (= G.711 bytes) per frame and timestamp step
        self._writer = RtpHeaderWriter(payload_type, self.ssrc, self._spt)
        self._buffer = self._writer.buffer
        self._pack_packet = self._writer.pack_into
        self._event_writer: RtpHeaderWriter | None = None
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
        self._tx_digits: deque[_DigitSend] = deque()
        self._closed = False
        self._consumers: tuple[AudioConsumer, ...] = ()  # replaced, never mutated: safe to iterate while one leaves
        self._jitter: JitterBuffer | None = None
        self._inband: InbandDtmfDetector | None = None
        self._rfc4733 = False
        self._telephone_event_pt = telephone_event_pt
        if dtmf_mode not in get_args(DtmfMode):
            raise ValueError(f"dtmf_mode must be one of {get_args(DtmfMode)}, got {dtmf_mode!r}")
        self._dtmf_mode: DtmfMode = dtmf_mode
        self._apply_dtmf_mode()
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
    def reception(self) -> ReceptionStats:
        """RFC 3550 reception statistics of what the remote sent (expected, received, lost, jitter)."""
        return self._reception

    @property
    def jitter_buffer(self) -> JitterBuffer | None:
        """The inbound audio path's buffer while someone listens (consumers or the in-band detector)."""
        return self._jitter

    def call_record(self) -> dict[str, int | float | str]:
        """Media figures for the call detail record: packets both ways, loss, jitter, digits, buffer counters."""
        stats = self.stats
        record: dict[str, int | float | str] = {
            "codec": self.codec,
            "dtmf_mode": self._dtmf_mode,
            "dtmf_heard": self.dtmf_source or "none",
            "rtp_packets_sent": stats.packets_sent,
            "rtp_octets_sent": stats.octets_sent,
            "rtp_send_errors": stats.send_errors,
            "rtp_octets_received": stats.octets_received,
            "rtp_dropped_wrong_source": stats.dropped_wrong_source,
            "rtp_dropped_malformed": stats.dropped_malformed,
            "rtp_ignored_payload_type": stats.ignored_payload_type,
            "rtp_relatched": stats.relatched,
            "rtp_send_latch": (
                ("waiting" if self._waiting else "latched") if self._send_after_first_packet else "off"
            ),
            "rtp_frames_not_sent_waiting": stats.frames_not_sent_waiting,
            "rtp_digit_packets_not_sent_waiting": stats.digit_packets_not_sent_waiting,
            "dtmf_digits": stats.dtmf_digits,
            "dtmf_digits_sent": stats.dtmf_digits_sent,
        }
        record.update(self._reception.as_record())
        if self._jitter is not None:
            for name, value in asdict(self._jitter.stats).items():
                record[f"jitter_buffer_{name}"] = value
        return record

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
    def sending_digits(self) -> bool:
        return bool(self._tx_digits)

    @property
    def on_hold(self) -> bool:
        return self._hold

    @property
    def send_after_first_packet(self) -> bool:
        """Whether this stream waits for the remote's first RTP packet before it sends (fixed at creation)."""
        return self._send_after_first_packet

    @property
    def awaiting_first_packet(self) -> bool:
        """True while ``send_after_first_packet`` holds sending back: no valid RTP accepted from the remote yet."""
        return self._waiting

    @property
    def muted(self) -> bool:
        """Nothing may be sent to the remote now: on hold, or awaiting its first packet. Anything else sending on
        this stream's behalf (a bridge) should test this rather than ``on_hold``."""
        return self._silent

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

    # -- digits ---------------------------------------------------------------------------------------------

    @property
    def telephone_event_pt(self) -> int | None:
        """The negotiated telephone-event payload type (None: not negotiated). Setting it (re-INVITE) applies
        ``dtmf_mode`` again."""
        return self._telephone_event_pt

    @telephone_event_pt.setter
    def telephone_event_pt(self, pt: int | None) -> None:
        self._telephone_event_pt = pt
        self._apply_dtmf_mode()

    @property
    def dtmf_mode(self) -> DtmfMode:
        return self._dtmf_mode

    @dtmf_mode.setter
    def dtmf_mode(self, mode: DtmfMode) -> None:
        if mode not in get_args(DtmfMode):
            raise ValueError(f"dtmf_mode must be one of {get_args(DtmfMode)}, got {mode!r}")
        self._dtmf_mode = mode
        self._apply_dtmf_mode()

    @property
    def dtmf_source(self) -> str | None:
        """What the stream listens to for digits now: "rfc4733", "inband" or None."""
        if self._rfc4733:
            return "rfc4733"
        return "inband" if self._inband is not None else None

    def _apply_dtmf_mode(self) -> None:
        mode = self._dtmf_mode
        if mode == "auto":
            mode = "rfc4733" if self._telephone_event_pt is not None else "inband"
        self._rfc4733 = mode == "rfc4733" and self._telephone_event_pt is not None
        if mode == "inband":
            if self._inband is None:
                self._inband = InbandDtmfDetector()
        elif self._inband is not None:
            ended = self._inband.flush()
            self._inband = None
            if ended is not None:
                self._digit_ended(ended)
        self._update_audio_path()

    def _digit_started(self, digit: DigitEvent) -> None:
        self._stats.dtmf_digits += 1
        call_soon = self._loop.call_soon
        if self.on_digit is not None:
            call_soon(self.on_digit, digit.key)
        if self.on_digit_event is not None:
            call_soon(self.on_digit_event, digit)

    def _digit_ended(self, digit: DigitEvent) -> None:
        if self.on_digit_end is not None:
            self._loop.call_soon(self.on_digit_end, digit)

    def _deliver(self, started: DigitEvent | None, ended: DigitEvent | None) -> None:
        if ended is not None and ended is not started:
            self._digit_ended(ended)
        if started is not None:
            self._digit_started(started)
            if started.ended:
                self._digit_ended(started)

    def send_digit(self, key: str, duration_ms: int = 100, volume: int = 10) -> None:
        """Send one RFC 4733 key press on the media clock: from the next tick on, a first report with the marker
        bit, an update every tick (all with the timestamp of the first), then the end report three times. The
        prompt playing (if any) pauses meanwhile and goes on afterwards; presses queued one after another follow
        each other (each with its own timestamp). ``volume`` is in -dBm0 (0..63). On hold nothing is sent, but
        the press takes its time as if it were."""
        if self._closed:
            raise RuntimeError("send_digit() on a closed MediaStream")
        pt = self._telephone_event_pt
        if pt is None:
            raise RuntimeError("no telephone-event payload type was negotiated: RFC 4733 digits cannot be sent")
        key = normalize_key(key)
        units = duration_ms * 8  # the telephone-event clock is 8 kHz
        if not 0 < units <= MAX_DURATION:
            raise ValueError(f"duration_ms must be 1..{MAX_DURATION // 8}, got {duration_ms}")
        if not 0 <= volume <= 63:
            raise ValueError(f"volume is 0..63 (-dBm0), got {volume}")
        reports = key_press_events(key, duration=units, interval=self._spt, volume=volume)
        if self._event_writer is None or self._event_writer.payload_type != pt:
            self._event_writer = RtpHeaderWriter(pt, self.ssrc, 4)
        self._tx_digits.append(_DigitSend(key, [report.serialize() for report in reports]))
        self._clock.add(self)

    def _send_digit_tick(self, tick: int) -> None:
        send = self._tx_digits[0]
        writer = self._event_writer
        assert writer is not None  # created by send_digit
        position = send.position
        if position == 0:
            send.timestamp = (self._timestamp_base + tick * self._spt) & 0xFFFFFFFF
        if not self._silent:
            byte1 = writer.payload_type | 0x80 if position == 0 else writer.payload_type
            payload = send.payloads[position]
            writer.pack_into(writer.buffer, 1, byte1, self._sequence, send.timestamp, self.ssrc, payload)
            try:
                self._sendto(writer.buffer, self._remote)
                self._packets_sent += 1
            except OSError:
                self._stats.send_errors += 1
            self._sequence = (self._sequence + 1) & 0xFFFF
        elif not self._hold:
            self._stats.digit_packets_not_sent_waiting += 1
        self._contiguous_tick = -1  # the audio after the press starts a new talk-spurt (marker bit)
        position += 1
        if position < len(send.payloads):
            send.position = position
            return
        self._tx_digits.popleft()
        self._stats.dtmf_digits_sent += 1
        if not self._tx_digits and not self._count:
            self._clock.discard(self)

    # -- decoded audio ----------------------------------------------------------------------------------------

    def add_audio_consumer(self, consumer: AudioConsumer) -> None:
        """Hand ``consumer`` every 20 ms frame of the caller's audio from now on (see ``AudioConsumer``). It is
        called directly from the receive path: it must be quick and must not block (queue heavy work)."""
        self._consumers = (*self._consumers, consumer)
        self._update_audio_path()

    def remove_audio_consumer(self, consumer: AudioConsumer) -> None:
        """Stop handing frames to ``consumer`` (no-op if it is not one)."""
        if consumer not in self._consumers:
            return
        remaining = list(self._consumers)
        remaining.remove(consumer)
        self._consumers = tuple(remaining)
        self._update_audio_path()

    def _update_audio_path(self) -> None:
        if self._consumers or self._inband is not None:
            if self._jitter is None:
                self._jitter = JitterBuffer(self.codec)  # 20 ms frames, whatever our own ptime
        else:
            self._jitter = None

    def _audio_frames(self, frames: Sequence[Pcm]) -> None:
        inband = self._inband
        for frame in frames:
            if inband is not None:
                started, ended = inband.feed(frame)
                if started is not None or ended is not None:
                    self._deliver(started, ended)
            for consumer in self._consumers:
                try:
                    consumer(frame)
                except Exception as exc:  # a consumer's bug must not stop the receive path
                    self._loop.call_exception_handler(
                        {"message": "MediaStream audio consumer failed", "exception": exc}
                    )

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
        """Stop sending now (``on_done`` is not called). The next ``play()`` starts a new talk-spurt. Key
        presses being sent (``send_digit``) go on."""
        self._count = 0
        self._frames = ()
        self._on_done = None
        if not self._tx_digits:
            self._clock.discard(self)

    def set_remote(self, addr: tuple[str, int]) -> None:
        """Send to and accept from ``addr`` from now on (re-INVITE); re-arms the NAT re-latch if allowed. With
        ``send_after_first_packet``, a new address (one other than the current remote) is not sent to before RTP
        has come from it (or, with ``allow_relatch``, from the source it latches onto); the same address goes on
        as it was, so a session refresh does not pause the prompt."""
        remote = _normalize(addr, self._sock.family)
        if self._send_after_first_packet and remote != self._remote:
            self._waiting = True
            self._silent = True
        self._remote = remote
        self._relatch_armed = self.allow_relatch

    def set_hold(self, hold: bool) -> None:
        """On hold nothing is sent; a playback keeps running silently (it ends and calls ``on_done`` at the
        same time as it would have), timestamps keep advancing, and the first packet after hold is marked."""
        self._hold = hold
        self._silent = hold or self._waiting

    def close(self) -> None:
        """Stop playback and digit sending, leave the clock, stop reading and close the socket (idempotent). The
        audio still held in the jitter buffer goes to the consumers, and a key press in progress ends. The RTP
        port goes back to its pool with ``RtpPortPool.release``, which is the caller's job."""
        if self._closed:
            return
        self._closed = True
        self._tx_digits.clear()
        self.stop_playback()
        self._loop.remove_reader(self._fd)
        self._sock.close()
        if self._jitter is not None:
            self._audio_frames(self._jitter.flush())
        if self._inband is not None:
            ended = self._inband.flush()
            if ended is not None:
                self._digit_ended(ended)
        current = self.dtmf.current
        if current is not None and not current.ended:
            current.ended = True
            self._digit_ended(current)

    # -- sending (called by the clock) ------------------------------------------------------------------------

    def send_tick(self, tick: int) -> None:
        """Send the next frame for clock tick ``tick``. Allocates nothing but the ``sendto`` call's own work."""
        if self._tx_digits:
            self._send_digit_tick(tick)  # the prompt waits while a key press is sent
            return
        # Bound methods held in slots are read into locals first: a call like ``self._sendto(...)`` does not
        # specialise in CPython 3.11 (LOAD_METHOD on an instance slot) and costs a generic descriptor lookup.
        position = self._position
        if not self._silent:  # on hold, or awaiting the remote's first packet (send_after_first_packet)
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
        elif not self._hold:
            self._stats.frames_not_sent_waiting += 1
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
        # One clock reading per wake-up (the datagrams drained here arrived together), in RTP timestamp units.
        arrival = int(self._loop.time() * g711.CLOCK_RATE)
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
                event = (
                    TelephoneEvent.parse(buf, start, end) if payload_type == self._telephone_event_pt else None
                )
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
            if self._waiting:  # the first valid packet: send from now on, to where it came from
                self._waiting = False
                self._silent = self._hold
            stats.packets_received += 1
            stats.octets_received += end - start
            if payload_type == self.payload_type:
                self._reception.update(ssrc, sequence, timestamp, arrival, True)
                jitter = self._jitter
                if jitter is not None:
                    frames = jitter.push(sequence, timestamp, bytes(buf[start:end]), ssrc)
                    if frames:
                        self._audio_frames(frames)
                on_audio = self.on_audio
                if on_audio is not None:
                    try:
                        on_audio(sequence, timestamp, bytes(buf[start:end]))
                    except Exception as exc:  # a listener's bug must not stop the receive path
                        self._loop.call_exception_handler(
                            {"message": "MediaStream on_audio callback failed", "exception": exc}
                        )
                continue
            self._reception.update(ssrc, sequence, timestamp, arrival, False)
            jitter = self._jitter
            if jitter is not None:
                jitter.push(sequence, timestamp, None, ssrc)  # keeps its place in the sequence
            if event is not None:
                if self._rfc4733:
                    started, ended = self.dtmf.feed_event(
                        timestamp, event, marker=marker, ssrc=ssrc, sequence=sequence
                    )
                    if started is not None or ended is not None:
                        self._deliver(started, ended)
            else:
                stats.ignored_payload_type += 1
