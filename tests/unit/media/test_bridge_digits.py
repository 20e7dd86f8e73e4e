"""MediaBridge key presses: RFC 4733 events re-stamped onto the other leg (its payload type, the bridge's sequence
numbers and clock), SIP INFO and in-band presses converted, on virtual time with fake sockets (no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.media.bridge import END_REPEATS, MAX_PENDING_DIGITS, STALL_TICKS, MediaBridge
from ivr.media.clock import MediaClock
from ivr.media.digits import DigitEvent
from ivr.media.rtp import RtpPacket
from ivr.media.stream import MediaStream
from ivr.media.telephone_event import EventCounter, TelephoneEvent, key_press_events
from tests.unit.media.conftest import REMOTE, FakeLoop, FakeSocket, fake_ioctl
from tests.unit.media.test_stream_digits_and_audio import rtp, tone_packets

A_TE, B_TE = 101, 96  # each leg's own telephone-event payload type
AUDIO_A = bytes([0x11]) * 160


@dataclass
class Legs:
    loop: FakeLoop
    a: MediaStream
    a_sock: FakeSocket
    b: MediaStream
    b_sock: FakeSocket
    bridge: MediaBridge
    info_to_a: list[tuple[str, int]] = field(default_factory=list)
    info_to_b: list[tuple[str, int]] = field(default_factory=list)
    heard_a: list[DigitEvent] = field(default_factory=list)  # the stream's own listener (the server's, in the daemon)
    seq: int = 0
    ticks: int = 0

    def from_a(self, *datagrams: bytes) -> None:
        self.a_sock.inbox.extend((d, REMOTE) for d in datagrams)
        self.loop.readers[self.a_sock.fileno()]()

    def from_b(self, *datagrams: bytes) -> None:
        self.b_sock.inbox.extend((d, REMOTE) for d in datagrams)
        self.loop.readers[self.b_sock.fileno()]()

    def tick(self, count: int = 1) -> None:
        """Run the clock's next ``count`` ticks (to 1 ms past the last one: no float rounding at the edge)."""
        self.ticks += count
        self.loop.run_until(self.bridge.clock.deadline(self.first_tick + self.ticks - 1) + 0.001)

    @property
    def first_tick(self) -> int:
        return self.bridge.clock.tick_at(1000.0) + 1

    def audio_from_a(self, count: int) -> None:
        """``count`` 20 ms audio packets from leg A, one per tick."""
        for _ in range(count):
            self.from_a(rtp(0, self.seq, self.seq * 160, AUDIO_A, ssrc=0xA))
            self.seq += 1
            self.tick()

    def press_from_a(self, key: str, *, duration: int = 800, interval: int = 160, ts: int = 5000) -> None:
        """An RFC 4733 press from leg A, one report per tick, the end three times (with audio packets too)."""
        reports = key_press_events(key, duration=duration, interval=interval)
        for i, report in enumerate(reports):
            self.from_a(rtp(A_TE, self.seq, ts, report.serialize(), marker=i == 0, ssrc=0xA))
            self.seq += 1
            self.tick()


def make_legs(
    monkeypatch: Any,
    *,
    a_te: int | None = A_TE,
    b_te: int | None = B_TE,
    b_codec: str = "PCMA",
    info: bool = True,
) -> Legs:
    import ivr.media.stream

    monkeypatch.setattr(ivr.media.stream, "_ioctl", fake_ioctl)
    loop = FakeLoop()
    clock = MediaClock(loop)  # type: ignore[arg-type]
    clock.start()
    a_sock, b_sock = FakeSocket(loop), FakeSocket(loop)
    a = MediaStream(loop, a_sock, codec="PCMU", payload_type=0, remote=REMOTE, telephone_event_pt=a_te,  # type: ignore[arg-type]
                    clock=clock, ssrc=0xAAAA)  # fmt: skip
    b = MediaStream(loop, b_sock, codec=b_codec, payload_type=8 if b_codec == "PCMA" else 0, remote=REMOTE,  # type: ignore[arg-type]
                    telephone_event_pt=b_te, clock=clock, ssrc=0xBBBB, dtmf_mode="auto")  # fmt: skip
    info_to_a: list[tuple[str, int]] = []
    info_to_b: list[tuple[str, int]] = []
    bridge = MediaBridge(
        clock, a, a_sock, b, b_sock,  # type: ignore[arg-type]
        send_info_a=(lambda k, ms: info_to_a.append((k, ms))) if info else None,
        send_info_b=(lambda k, ms: info_to_b.append((k, ms))) if info else None,
    )  # fmt: skip
    legs = Legs(loop, a, a_sock, b, b_sock, bridge, info_to_a, info_to_b)
    a.on_digit_event = legs.heard_a.append
    bridge.start()
    return legs


def sent(sock: FakeSocket) -> list[RtpPacket]:
    return [RtpPacket.parse(data) for _, data, _ in sock.sent]


def events(packets: list[RtpPacket], pt: int) -> list[tuple[RtpPacket, TelephoneEvent]]:
    return [(p, TelephoneEvent.parse(p.payload)) for p in packets if p.payload_type == pt]


def decoded(packets: list[RtpPacket], pt: int) -> list[DigitEvent]:
    """What a receiver makes of the packets (our own counter, as the far end's MediaStream would)."""
    counter = EventCounter()
    presses: list[DigitEvent] = []
    for p in packets:
        if p.payload_type == pt:
            started, _ = counter.feed_event(p.timestamp, TelephoneEvent.parse(p.payload), marker=p.marker,
                                            ssrc=p.ssrc, sequence=p.sequence)  # fmt: skip
            if started is not None:
                presses.append(started)
    return presses


# -- RFC 4733 both ways -------------------------------------------------------------------------------------------


def test_a_press_from_a_goes_to_b_with_bs_payload_type_one_timestamp_and_three_end_packets(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch)
    legs.press_from_a("5", duration=800)
    legs.tick(5)
    packets = sent(legs.b_sock)
    relayed = events(packets, B_TE)
    assert relayed and not events(packets, A_TE)
    assert {p.timestamp for p, _ in relayed} == {relayed[0][0].timestamp}
    assert [p.marker for p, _ in relayed] == [True] + [False] * (len(relayed) - 1)
    assert {p.ssrc for p, _ in relayed} == {0xBBBB}
    ends = [e for _, e in relayed if e.end]
    assert len(ends) == 3 and relayed[-END_REPEATS:] == [(p, e) for p, e in relayed if e.end]
    assert {(e.event, e.duration) for e in ends} == {(5, 800)}
    (press,) = decoded(packets, B_TE)
    assert (press.key, press.duration_ms, press.ended) == ("5", 100, True)
    assert legs.bridge.stats.digits_a_to_b == 1
    assert [d.key for d in legs.heard_a] == ["5"]  # the stream's own listener still hears it


def test_a_press_from_b_goes_to_a_with_as_payload_type(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch)
    reports = key_press_events("#", duration=640)
    for i, report in enumerate(reports):
        legs.from_b(rtp(B_TE, 70 + i, 123456, report.serialize(), marker=i == 0, ssrc=0xB))
        legs.tick()
    legs.tick(5)
    packets = sent(legs.a_sock)
    assert not events(packets, B_TE)
    (press,) = decoded(packets, A_TE)
    assert (press.key, press.duration_ms) == ("#", 80)
    assert {p.ssrc for p, _ in events(packets, A_TE)} == {0xAAAA}
    assert legs.bridge.stats.digits_b_to_a == 1


def test_the_press_is_stamped_on_the_legs_own_clock_between_the_audio_around_it(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch)
    legs.audio_from_a(5)
    legs.press_from_a("1", duration=800)
    legs.audio_from_a(5)
    legs.tick(3)
    packets = sent(legs.b_sock)
    # One RTP stream: sequence numbers continue across audio, the press and audio again.
    assert all((q.sequence - p.sequence) & 0xFFFF == 1 for p, q in pairwise(packets))
    kinds = "".join("e" if p.payload_type == B_TE else "a" for p in packets)
    assert kinds.strip("a").count("a") == 0, kinds  # the audio meanwhile is muted, not interleaved
    first = kinds.index("e")
    last = kinds.rindex("e")
    event_ts = packets[first].timestamp
    before, after = packets[first - 1], packets[last + 1]
    base = legs.b.timestamp_for(0)
    assert (event_ts - base) % 160 == 0  # a tick of the leg's own media clock
    assert (event_ts - before.timestamp) & 0xFFFFFFFF == 160  # the tick right after the last audio frame
    assert 0 < (after.timestamp - event_ts) & 0xFFFFFFFF < 0x80000000
    assert after.marker and not packets[last + 2].marker  # the audio after the press is a new talk-spurt


def test_durations_of_the_source_are_kept(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch)
    reports = [TelephoneEvent(9, False, 7, d) for d in (0, 400, 800, 1200)] + [TelephoneEvent(9, True, 7, 1304)] * 3
    for i, report in enumerate(reports):
        legs.from_a(rtp(A_TE, i, 777, report.serialize(), marker=i == 0, ssrc=0xA))
        legs.tick()
    legs.tick(5)
    relayed = [e for _, e in events(sent(legs.b_sock), B_TE)]
    assert [e.duration for e in relayed if not e.end] == [0, 400, 800, 1200]
    assert [(e.duration, e.volume) for e in relayed if e.end] == [(1304, 7)] * END_REPEATS


def test_audio_sent_with_the_press_is_muted_and_counted(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch)
    legs.audio_from_a(2)
    for i, report in enumerate(key_press_events("2", duration=800)):
        legs.from_a(rtp(0, legs.seq, legs.seq * 160, AUDIO_A, ssrc=0xA),
                    rtp(A_TE, 200 + i, 4000, report.serialize(), marker=i == 0, ssrc=0xA))  # fmt: skip
        legs.seq += 1
        legs.tick()
    legs.audio_from_a(2)
    kinds = "".join("e" if p.payload_type == B_TE else "a" for p in sent(legs.b_sock))
    assert kinds == "aa" + "e" * 7 + "aa"  # the tone (or whatever came with the press) is not relayed as well
    assert legs.bridge.stats.muted_frames == 7


def test_two_presses_back_to_back_are_two_presses(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch)
    legs.press_from_a("4", ts=1000)
    legs.press_from_a("4", ts=2000)
    legs.tick(10)
    assert [d.key for d in decoded(sent(legs.b_sock), B_TE)] == ["4", "4"]
    assert legs.bridge.stats.digits_a_to_b == 2


def test_a_press_whose_end_packets_are_lost_is_ended_by_the_bridge(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch)
    for i, duration in enumerate((160, 320, 480)):
        legs.from_a(rtp(A_TE, i, 900, TelephoneEvent(3, False, 10, duration).serialize(), marker=i == 0, ssrc=0xA))
        legs.tick()
    legs.tick(STALL_TICKS + END_REPEATS + 2)
    relayed = [e for _, e in events(sent(legs.b_sock), B_TE)]
    assert [e.duration for e in relayed if e.end] == [480] * END_REPEATS
    assert not legs.bridge.sending_digits
    legs.audio_from_a(2)
    assert sent(legs.b_sock)[-1].payload_type == 8  # the audio flows again


def test_a_press_longer_than_the_duration_field_continues_in_a_new_segment(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch)
    legs.bridge.digit_from_a(DigitEvent("0", "info", None, 9000, True))
    legs.tick(9000 // 20 + 10)
    relayed = events(sent(legs.b_sock), B_TE)
    stamps = sorted({p.timestamp for p, _ in relayed}, key=lambda t: (t - relayed[0][0].timestamp) & 0xFFFFFFFF)
    assert len(stamps) == 2 and (stamps[1] - stamps[0]) & 0xFFFFFFFF == 0xFFFF
    assert max(e.duration for _, e in relayed) == 0xFFFF
    (press,) = decoded(sent(legs.b_sock), B_TE)
    assert (press.key, press.duration_ms) == ("0", 9000)


# -- conversions ----------------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(key=st.sampled_from("0123456789*#ABCD"), duration_ms=st.integers(min_value=1, max_value=3000))
def test_an_info_press_is_played_out_as_rfc4733_with_its_duration(key: str, duration_ms: int) -> None:
    from _pytest.monkeypatch import MonkeyPatch

    with MonkeyPatch.context() as mp:
        legs = make_legs(mp)
        legs.bridge.digit_from_a(DigitEvent(key, "info", None, duration_ms, True))
        legs.tick(duration_ms // 20 + 6)
        relayed = events(sent(legs.b_sock), B_TE)
        (press,) = decoded(sent(legs.b_sock), B_TE)
        assert (press.key, press.duration_ms, press.ended) == (key, max(duration_ms, 20), True)
        updates = [e.duration for _, e in relayed if not e.end]
        assert updates == list(range(160, max(duration_ms * 8, 160), 160))  # one per tick, as it goes on
        assert sum(e.end for _, e in relayed) == END_REPEATS


def test_a_press_for_a_leg_without_telephone_event_goes_by_sip_info_once_it_ends(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch, b_te=None)
    reports = key_press_events("8", duration=960)
    for i, report in enumerate(reports[:-3]):
        legs.from_a(rtp(A_TE, i, 3000, report.serialize(), marker=i == 0, ssrc=0xA))
        legs.tick()
    legs.tick(3)
    assert legs.info_to_b == []  # not before the key is released: INFO carries its duration
    legs.from_a(*(rtp(A_TE, 10 + i, 3000, r.serialize(), ssrc=0xA) for i, r in enumerate(reports[-3:])))
    legs.tick()
    assert legs.info_to_b == [("8", 120)]
    assert not [p for p in sent(legs.b_sock) if p.payload_type != 8]
    assert legs.bridge.stats.digits_a_to_b == 1


def test_an_info_press_goes_on_as_info_to_a_leg_without_telephone_event(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch, a_te=None)
    legs.bridge.digit_from_b(DigitEvent("*", "info", None, 250, True))
    legs.tick(2)
    assert legs.info_to_a == [("*", 250)]


def test_an_in_band_press_is_relayed_as_rfc4733(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch, a_te=None)
    for packet in tone_packets("3"):
        legs.from_a(packet)
        legs.tick()
    legs.tick(10)
    (press,) = decoded(sent(legs.b_sock), B_TE)
    assert press.key == "3" and 40 <= press.duration_ms <= 80
    assert legs.bridge.stats.muted_frames > 0  # the tone itself is (mostly) not relayed too


def test_a_press_for_a_leg_with_neither_telephone_event_nor_info_is_dropped_and_counted(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch, b_te=None, info=False)
    legs.press_from_a("1")
    legs.tick(5)
    assert legs.bridge.stats.digits_dropped == 1 and not legs.bridge.sending_digits


def test_a_flood_of_presses_is_bounded(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch)
    for _ in range(MAX_PENDING_DIGITS + 5):
        legs.bridge.digit_from_a(DigitEvent("1", "info", None, 40, True))
    assert legs.bridge.stats.digits_dropped == 5


# -- lifecycle and cost ---------------------------------------------------------------------------------------------


def test_stop_hands_the_streams_their_own_digit_listeners_back(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch)
    own: Callable[[DigitEvent], None] = legs.heard_a.append
    assert legs.a.on_digit_event != own and legs.b.on_digit_event is not None  # the bridge listens to both
    legs.bridge.stop()
    assert legs.a.on_digit_event == own and legs.b.on_digit_event is None
    legs.bridge.digit_from_a(DigitEvent("1", "info", None, 40, True))
    assert legs.bridge.stats.digits_dropped == 1


def test_on_hold_the_press_takes_its_time_but_nothing_is_sent(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch)
    legs.b.set_hold(True)
    sequence = len(sent(legs.b_sock))
    legs.bridge.digit_from_a(DigitEvent("6", "info", None, 100, True))
    legs.tick(10)
    assert len(sent(legs.b_sock)) == sequence and legs.bridge.stats.digits_a_to_b == 1


def test_audio_without_presses_is_relayed_unchanged(monkeypatch: Any) -> None:
    legs = make_legs(monkeypatch)
    legs.audio_from_a(10)
    packets = sent(legs.b_sock)
    assert len(packets) == 10 and {p.payload_type for p in packets} == {8}
    assert [p.marker for p in packets] == [True] + [False] * 9
    stats = legs.bridge.stats
    assert (stats.muted_frames, stats.digits_a_to_b, stats.digits_dropped) == (0, 0, 0)
