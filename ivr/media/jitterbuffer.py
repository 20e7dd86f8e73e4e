"""The inbound audio path, sans-I/O: RFC 3550 reception statistics and a jitter buffer that turns RTP packets
back into clean 20 ms PCM frames.

``ReceptionStats`` is what RTCP would report about a source (RFC 3550 appendix A.1, A.3, A.8): packets expected
(from the extended highest sequence number), received, lost, and the interarrival jitter. It is cheap enough to
run on every packet of every call, and its figures go into the call record.

``JitterBuffer`` is for the consumers of decoded audio (in-band DTMF, VAD and speech, recording). It puts packets
back in sequence order, drops duplicates, decodes G.711 and cuts the samples into frames of exactly
``frame_samples`` (160 = 20 ms), whatever the sender's packet size. Gaps in the timestamps (lost packets, silence
suppression, the time a telephone-event took) are filled with digital silence, so the frames are contiguous in
time; a gap longer than ``max_gap`` seconds (a new sender, a long hold) is skipped instead.

It has no clock: a packet that arrives in order is released at once (no added delay); packets behind a missing
one are held until it arrives or until ``max_reorder`` newer packets show that it is lost, and ``flush()``
releases everything at the end. Frames are read-only int16 arrays; a consumer may keep them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from ivr.media import g711

__all__ = [
    "JitterBuffer",
    "JitterBufferStats",
    "Pcm",
    "ReceptionStats",
]

Pcm = npt.NDArray[np.int16]

MAX_DROPOUT: Final = 3000
"""RFC 3550 A.1: a forward sequence jump up to this size is a loss, beyond it a possible restart."""
MAX_MISORDER: Final = 100
"""RFC 3550 A.1: a backward sequence jump up to this size is a late (misordered or duplicate) packet."""


def _signed16(value: int) -> int:
    return ((value + 0x8000) & 0xFFFF) - 0x8000


def _signed32(value: int) -> int:
    return ((value + 0x80000000) & 0xFFFFFFFF) - 0x80000000


class ReceptionStats:
    """RFC 3550 reception statistics of one RTP stream (all packets of the remote, audio and telephone-event).

    ``update()`` runs the sequence number bookkeeping of appendix A.1 (no probation: the stream is negotiated)
    and, for audio packets, the interarrival jitter estimate of appendix A.8, with ``arrival`` read from any
    monotonic clock (the event loop's) in timestamp units. Telephone-event packets share the sequence space but
    all carry the timestamp of their event's start, so they are not used for jitter. A new SSRC, or a sequence
    restart (two packets in a row far from the expected number, A.1), starts a new count; the totals of earlier
    ones are kept.
    """

    __slots__ = (
        "_bad_seq",
        "_base_seq",
        "_cycles",
        "_have_transit",
        "_max_seq",
        "_prior_expected",
        "_prior_received",
        "_received",
        "_transit",
        "clock_rate",
        "jitter",
        "max_jitter",
        "restarts",
        "sources",
        "ssrc",
        "stray",
    )

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.ssrc: int | None = None
        self.jitter = 0.0
        """Interarrival jitter in timestamp units (A.8), of the current source."""
        self.max_jitter = 0.0
        self.sources = 0
        self.restarts = 0
        self.stray = 0
        """Packets far from the expected sequence number, not counted (A.1 ``bad_seq``)."""
        self._prior_expected = 0
        self._prior_received = 0
        self._base_seq = 0
        self._max_seq = 0
        self._cycles = 0
        self._bad_seq = -1
        self._received = 0
        self._transit = 0
        self._have_transit = False

    def _start(self, sequence: int) -> None:
        if self.ssrc is not None:
            self._prior_expected += self._cycles + self._max_seq - self._base_seq + 1
            self._prior_received += self._received
        self._base_seq = self._max_seq = sequence
        self._cycles = 0
        self._bad_seq = -1
        self._received = 0

    def update(self, ssrc: int, sequence: int, timestamp: int, arrival: int, audio: bool) -> None:
        """Count one packet. ``arrival`` is the time it arrived in timestamp units (seconds times the clock
        rate, as in A.8); ``audio`` is False for packets whose timestamp does not follow the media clock."""
        if ssrc == self.ssrc:
            max_seq = self._max_seq
            udelta = (sequence - max_seq) & 0xFFFF
            if udelta < MAX_DROPOUT:
                if sequence < max_seq:
                    self._cycles += 0x10000
                self._max_seq = sequence
            elif udelta <= 0x10000 - MAX_MISORDER:
                if sequence != self._bad_seq:
                    self._bad_seq = (sequence + 1) & 0xFFFF
                    self.stray += 1
                    return
                self._start(sequence)  # two sequential packets: the sender restarted its sequence numbers
                self.restarts += 1
                self._have_transit = False
            # else: a duplicate or a misordered packet, counted as received (A.3)
        else:
            self._start(sequence)
            self.ssrc = ssrc
            self.sources += 1
            self._have_transit = False
        self._received += 1
        if audio:
            transit = arrival - timestamp
            if self._have_transit:
                d = ((transit - self._transit + 0x80000000) & 0xFFFFFFFF) - 0x80000000  # timestamps wrap
                if d < 0:
                    d = -d
                jitter = self.jitter + (d - self.jitter) * 0.0625
                self.jitter = jitter
                if jitter > self.max_jitter:
                    self.max_jitter = jitter
            else:
                self._have_transit = True
            self._transit = transit

    @property
    def received(self) -> int:
        """Packets counted as received, including duplicates and late ones (A.3), over all sources."""
        return self._prior_received + self._received

    @property
    def expected(self) -> int:
        """Packets the sequence numbers say were sent (A.3), over all sources."""
        if self.ssrc is None:
            return 0
        return self._prior_expected + self._cycles + self._max_seq - self._base_seq + 1

    @property
    def lost(self) -> int:
        """``expected - received``, floored at 0 (RFC 3550 lets duplicates make it negative)."""
        return max(0, self.expected - self.received)

    @property
    def extended_highest_sequence(self) -> int:
        return self._cycles + self._max_seq

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000.0 / self.clock_rate

    @property
    def max_jitter_ms(self) -> float:
        return self.max_jitter * 1000.0 / self.clock_rate

    def as_record(self) -> dict[str, int | float]:
        """The figures for a call record."""
        expected = self.expected
        lost = self.lost
        return {
            "rtp_packets_expected": expected,
            "rtp_packets_received": self.received,
            "rtp_packets_lost": lost,
            "rtp_loss_fraction": round(lost / expected, 6) if expected else 0.0,
            "rtp_jitter_ms": round(self.jitter_ms, 3),
            "rtp_max_jitter_ms": round(self.max_jitter_ms, 3),
            "rtp_sources": self.sources,
            "rtp_sequence_restarts": self.restarts,
            "rtp_stray_packets": self.stray,
        }


@dataclass(slots=True)
class JitterBufferStats:
    packets: int = 0
    """Packets pushed (audio and others)."""
    duplicates: int = 0
    late: int = 0
    """Packets that came after their place had been given up as lost (dropped)."""
    reordered: int = 0
    """Packets that came out of order but in time, and were put back in place."""
    lost: int = 0
    """Sequence numbers given up on."""
    frames: int = 0
    """Frames handed out."""
    filled_samples: int = 0
    """Samples of silence put in timestamp gaps (loss, silence suppression, telephone-events)."""
    skipped_gaps: int = 0
    """Timestamp jumps longer than ``max_gap`` (not filled) and jumps backwards (resynchronised)."""
    resyncs: int = 0
    """Restarts of the sequence order (a new SSRC, a sequence jump)."""


_NO_FRAMES: Final[tuple[Pcm, ...]] = ()


class JitterBuffer:
    """Reorders, de-duplicates and decodes one RTP stream's G.711 packets into contiguous PCM frames.

    ``push(sequence, timestamp, payload)`` takes every packet of the stream, in arrival order: audio packets with
    their ``payload`` (the codec's bytes), other packets of the same sequence space (telephone-event, comfort
    noise) with ``payload=None`` so that their sequence numbers do not look lost. It returns the frames that became
    ready (often one, often none), oldest first.
    """

    __slots__ = (
        "_decode",
        "_frame",
        "_held",
        "_highest",
        "_max_gap",
        "_max_reorder",
        "_next",
        "_play_ts",
        "_recent",
        "_silence",
        "_ssrc",
        "_staged",
        "_staging",
        "codec",
        "frame_samples",
        "stats",
    )

    def __init__(
        self,
        codec: str,
        *,
        frame_samples: int = g711.FRAME_SAMPLES,
        max_reorder: int = 3,
        max_gap: float = 5.0,
        clock_rate: int = g711.CLOCK_RATE,
    ) -> None:
        key = g711.codec_key(codec)
        if frame_samples <= 0 or max_reorder < 1 or max_gap < 0:
            raise ValueError("frame_samples and max_reorder must be positive, max_gap not negative")
        self.codec = key
        self.frame_samples = frame_samples
        self.stats = JitterBufferStats()
        self._decode = g711.ULAW_DECODE_TABLE if key == "PCMU" else g711.ALAW_DECODE_TABLE
        self._max_reorder = max_reorder
        self._max_gap = round(max_gap * clock_rate)
        self._frame = frame_samples
        silence = np.zeros(frame_samples, dtype=np.int16)
        silence.flags.writeable = False
        self._silence = silence
        self._held: dict[int, tuple[int, bytes | None]] = {}
        self._next = -1  # extended sequence number of the next packet to play out; -1 before the first
        self._highest = -1
        self._ssrc: int | None = None
        self._recent = [-1] * 64  # extended sequence numbers recently played out, by ext & 63 (duplicates)
        self._play_ts: int | None = None  # timestamp of the next sample to hand out
        self._staging: list[Pcm] = []  # samples of the frame being assembled
        self._staged = 0

    @property
    def held(self) -> int:
        """Packets waiting behind a missing one."""
        return len(self._held)

    def push(self, sequence: int, timestamp: int, payload: bytes | None, ssrc: int | None = None) -> Sequence[Pcm]:
        stats = self.stats
        stats.packets += 1
        nxt = self._next
        out: list[Pcm] | None = None
        if ssrc != self._ssrc or nxt < 0:
            if nxt >= 0:
                stats.resyncs += 1
                out = self._drain_all()
                self._play_ts = None  # a new source has its own timeline
            self._ssrc = ssrc
            self._next = nxt = sequence
            self._highest = sequence - 1
        ext = nxt + _signed16(sequence - nxt)
        if ext < nxt:
            if nxt - ext > MAX_MISORDER:
                out = self._restart(sequence, out)
                ext = nxt = sequence
            elif self._recent[ext & 63] == ext:
                stats.duplicates += 1
                return out or _NO_FRAMES
            else:
                stats.late += 1
                return out or _NO_FRAMES
        elif ext - nxt > MAX_DROPOUT:
            out = self._restart(sequence, out)
            ext = nxt = sequence
        if ext == nxt and not self._held:
            # In order: play it out at once.
            self._next = ext + 1
            self._recent[ext & 63] = ext
            if ext > self._highest:
                self._highest = ext
            if payload is None:
                return out or _NO_FRAMES
            frames = self._play(timestamp, payload)
            if out:
                out.extend(frames)
                return out
            return frames or _NO_FRAMES
        if ext in self._held:
            stats.duplicates += 1
            return out or _NO_FRAMES
        if ext < self._highest:
            stats.reordered += 1
        else:
            self._highest = ext
        self._held[ext] = (timestamp, payload)
        frames_out = out if out is not None else []
        self._release(frames_out, force=False)
        return frames_out or _NO_FRAMES

    def flush(self) -> list[Pcm]:
        """Everything held, in order (gaps given up), then the last partial frame completed with silence."""
        out = self._drain_all()
        if self._staged:
            pad = self._frame - self._staged
            out.extend(self._add(self._silence[:pad]))
            self.stats.filled_samples += pad
            if self._play_ts is not None:
                self._play_ts = (self._play_ts + pad) & 0xFFFFFFFF
        return out

    # -- internals ------------------------------------------------------------------------------------------

    def _restart(self, sequence: int, out: list[Pcm] | None) -> list[Pcm]:
        frames = out if out is not None else []
        frames.extend(self._drain_all())
        self.stats.resyncs += 1
        self._next = sequence
        self._highest = sequence - 1
        return frames

    def _drain_all(self) -> list[Pcm]:
        out: list[Pcm] = []
        self._release(out, force=True)
        return out

    def _release(self, out: list[Pcm], *, force: bool) -> None:
        held = self._held
        while held:
            nxt = self._next
            entry = held.pop(nxt, None)
            if entry is None:
                if not force and self._highest - nxt < self._max_reorder:
                    return  # wait for the missing packet a little longer
                self.stats.lost += 1
                self._next = nxt + 1
                continue
            self._next = nxt + 1
            self._recent[nxt & 63] = nxt
            timestamp, payload = entry
            if payload is not None:
                out.extend(self._play(timestamp, payload))

    def _play(self, timestamp: int, payload: bytes) -> list[Pcm]:
        samples = self._decode[np.frombuffer(payload, dtype=np.uint8)]
        play_ts = self._play_ts
        n = len(samples)
        if play_ts is None or timestamp == play_ts:
            if not self._staged and n == self._frame:
                samples.flags.writeable = False
                self._play_ts = (timestamp + n) & 0xFFFFFFFF
                self.stats.frames += 1
                return [samples]
            self._play_ts = (timestamp + n) & 0xFFFFFFFF
            return self._add(samples)
        delta = _signed32(timestamp - play_ts)
        out: list[Pcm] = []
        if delta > 0:
            if delta <= self._max_gap:
                self.stats.filled_samples += delta
                while delta > 0:  # silence for the gap, one frame's worth at a time
                    chunk = min(delta, self._frame - self._staged)
                    out.extend(self._add(self._silence[:chunk]))
                    delta -= chunk
            else:
                self.stats.skipped_gaps += 1
        elif -delta < n:
            samples = samples[-delta:]  # overlaps what was played: keep the new part
        elif -delta > self._max_gap:
            self.stats.skipped_gaps += 1  # timestamps went far back: a new timeline
        else:
            return out  # entirely in the past
        self._play_ts = (timestamp + n) & 0xFFFFFFFF
        out.extend(self._add(samples))
        return out

    def _add(self, samples: Pcm) -> list[Pcm]:
        """Append samples to the frame being assembled; the frames that became complete."""
        frame = self._frame
        staging = self._staging
        out: list[Pcm] = []
        offset = 0
        n = len(samples)
        while offset < n:
            take = min(frame - self._staged, n - offset)
            part = samples[offset : offset + take]
            offset += take
            if not self._staged and take == frame:
                part.flags.writeable = False
                out.append(part)
                self.stats.frames += 1
                continue
            staging.append(part)
            self._staged += take
            if self._staged == frame:
                whole = np.concatenate(staging)
                whole.flags.writeable = False
                out.append(whole)
                self.stats.frames += 1
                staging.clear()
                self._staged = 0
        return out
