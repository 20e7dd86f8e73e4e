"""MediaClock pacing and MediaStream sending/receiving, on virtual time with a fake socket (no real I/O)."""

from __future__ import annotations

import errno
import itertools
from typing import Any

import pytest

from ivr.media.clock import MediaClock
from ivr.media.rtp import RtpPacket
from ivr.media.stream import MAX_DATAGRAMS_PER_WAKEUP, MediaStream
from ivr.media.telephone_event import key_press_events
from tests.unit.media.conftest import FRAMES, REMOTE


def sent_packets(sock: Any) -> list[RtpPacket]:
    return [RtpPacket.parse(data) for _, data, _ in sock.sent]


def assert_one_talk_spurt(packets: list[RtpPacket]) -> None:
    assert packets[0].marker
    assert not any(p.marker for p in packets[1:])
    for a, b in itertools.pairwise(packets):
        assert (b.sequence - a.sequence) & 0xFFFF == 1
        assert (b.timestamp - a.timestamp) & 0xFFFFFFFF == 160


# -- pacing ----------------------------------------------------------------------------------------------------


def test_frames_go_out_one_per_tick_on_absolute_deadlines(fake_loop: Any, clock: MediaClock, new_stream: Any) -> None:
    stream, sock = new_stream()
    fake_loop.advance(0.013)
    stream.play(FRAMES)
    fake_loop.advance(1.0)
    times = [t for t, _, _ in sock.sent]
    first_tick = clock.tick_at(times[0])
    assert times == [pytest.approx(clock.deadline(first_tick + i), abs=1e-9) for i in range(10)]
    assert times[0] - (clock.t0 + 0.013) <= 0.020  # starts on the next tick after play()
    packets = sent_packets(sock)
    assert [p.payload for p in packets] == list(FRAMES)
    assert_one_talk_spurt(packets)
    assert {addr for _, _, addr in sock.sent} == {REMOTE}
    assert stream.stats.packets_sent == 10 and stream.stats.octets_sent == 1600


def test_late_timers_do_not_make_the_clock_drift(fake_loop: Any, clock: MediaClock, new_stream: Any) -> None:
    fake_loop.jitter = lambda: 0.004  # every timer runs 4 ms late
    stream, _ = new_stream()
    stream.play(FRAMES * 20, loop=True)
    scheduled: list[float] = []
    original = fake_loop.call_at

    def spy(when: float, callback: Any, *args: Any) -> Any:
        scheduled.append(when)
        return original(when, callback, *args)

    fake_loop.call_at = spy
    fake_loop.advance(10.0)
    assert len(scheduled) >= 499
    ticks = [(when - clock.t0) / 0.020 for when in scheduled]
    assert all(abs(t - round(t)) < 1e-6 for t in ticks)  # still exactly on the 20 ms grid after 10 s
    assert [round(b - a) for a, b in itertools.pairwise(ticks)] == [1] * (len(ticks) - 1)
    assert clock.stats.late_ticks == 0 and clock.stats.max_lateness == pytest.approx(0.004)


def test_a_stalled_loop_sends_the_due_frames_with_wall_clock_timestamps(
    fake_loop: Any, clock: MediaClock, new_stream: Any
) -> None:
    stream, sock = new_stream()
    stream.play(FRAMES)
    fake_loop.advance(0.045)  # two frames out
    assert len(sock.sent) == 2
    fake_loop.stall(0.070)  # the loop is blocked until 5 ms before the 6th deadline
    fake_loop.advance(0.001)
    assert len(sock.sent) == 5  # the late timer sends the 3 frames that are due, in one burst
    assert sock.sent[4][0] == sock.sent[2][0]
    fake_loop.advance(1.0)
    assert_one_talk_spurt(sent_packets(sock))
    assert clock.stats.catch_up_ticks == 2 and clock.stats.skipped_ticks == 0
    assert clock.stats.late_ticks == 1 and clock.stats.max_lateness > 0.05


def test_catch_up_is_bounded_and_skipped_periods_leave_a_timestamp_gap(
    fake_loop: Any, clock: MediaClock, new_stream: Any
) -> None:
    stream, sock = new_stream()
    stream.play(FRAMES)
    fake_loop.advance(0.025)
    assert len(sock.sent) == 1
    fake_loop.stall(0.200)  # 10 periods missed
    fake_loop.advance(0.0)
    assert len(sock.sent) == 1 + clock.max_catch_up
    assert clock.stats.skipped_ticks > 0
    fake_loop.advance(1.0)
    packets = sent_packets(sock)
    assert [p.payload for p in packets] == list(FRAMES)  # no audio dropped, only delayed
    gaps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)]
    assert gaps[0] == 160 * (1 + clock.stats.skipped_ticks) and set(gaps[1:]) == {160}
    assert [p.marker for p in packets] == [True, True] + [False] * 8  # the packet after the gap is marked
    assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in itertools.pairwise(packets))
    # Timestamps are true to the wall clock: packet timestamp differences equal tick differences * 160.
    ticks = [clock.tick_at(t) for t, _, _ in sock.sent]
    assert ticks[-1] - ticks[0] == ((packets[-1].timestamp - packets[0].timestamp) & 0xFFFFFFFF) // 160


def test_on_done_runs_from_call_soon_after_the_last_frame(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream()
    calls: list[tuple[int, bool]] = []
    stream.play(FRAMES[:3], on_done=lambda: calls.append((len(sock.sent), fake_loop.in_timer)))
    fake_loop.advance(0.5)
    assert calls == [(3, False)]
    assert not stream.playing


def test_idle_clock_schedules_no_timer(fake_loop: Any, clock: MediaClock, new_stream: Any) -> None:
    stream, _ = new_stream()
    assert fake_loop.pending_timers() == []
    stream.play(FRAMES[:2])
    assert len(fake_loop.pending_timers()) == 1
    fake_loop.advance(0.5)
    assert fake_loop.pending_timers() == [] and len(clock) == 0


def test_timestamps_advance_in_real_time_while_idle_and_a_new_talk_spurt_is_marked(
    fake_loop: Any, clock: MediaClock, new_stream: Any
) -> None:
    stream, sock = new_stream()
    stream.play(FRAMES[:2])
    fake_loop.advance(1.0)
    stream.play(FRAMES[:2])
    fake_loop.advance(1.0)
    packets = sent_packets(sock)
    (t1, _, _), (t2, _, _) = sock.sent[1], sock.sent[2]
    assert [p.marker for p in packets] == [True, False, True, False]
    assert [(b.sequence - a.sequence) & 0xFFFF for a, b in itertools.pairwise(packets)] == [1, 1, 1]
    gap = (packets[2].timestamp - packets[1].timestamp) & 0xFFFFFFFF
    assert gap == round((t2 - t1) / 0.020) * 160 and gap > 40 * 160


def test_play_during_playback_continues_the_talk_spurt(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream()
    first_done: list[int] = []
    stream.play(FRAMES, on_done=lambda: first_done.append(1))
    fake_loop.advance(0.05)
    stream.play(FRAMES[5:7])
    fake_loop.advance(1.0)
    packets = sent_packets(sock)
    assert [p.payload[0] for p in packets] == [0, 1, 5, 6]
    assert_one_talk_spurt(packets)
    assert first_done == []  # replaced, not finished


def test_on_done_can_start_the_next_prompt_without_a_gap(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream()
    stream.play(FRAMES[:2], on_done=lambda: stream.play(FRAMES[2:4]))
    fake_loop.advance(1.0)
    packets = sent_packets(sock)
    assert [p.payload[0] for p in packets] == [0, 1, 2, 3]
    assert_one_talk_spurt(packets)


def test_looping_playback_repeats_until_stopped(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream()
    done: list[int] = []
    stream.play(FRAMES[:3], loop=True, on_done=lambda: done.append(1))
    fake_loop.advance(0.2)
    stream.stop_playback()
    count = len(sock.sent)
    fake_loop.advance(1.0)
    assert len(sock.sent) == count >= 9
    assert [p.payload[0] for p in sent_packets(sock)][:7] == [0, 1, 2, 0, 1, 2, 0]
    assert done == [] and not stream.playing


def test_hold_sends_nothing_while_playback_and_timestamps_go_on(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream()
    done: list[float] = []
    stream.play(FRAMES, on_done=lambda: done.append(fake_loop.time()))
    fake_loop.advance(0.05)
    stream.set_hold(True)
    assert stream.on_hold
    fake_loop.advance(0.1)
    stream.set_hold(False)
    fake_loop.advance(1.0)
    packets = sent_packets(sock)
    assert [p.payload[0] for p in packets] == [0, 1, 7, 8, 9]  # frames 2..6 fell in the hold
    assert [p.marker for p in packets] == [True, False, True, False, False]
    assert (packets[2].timestamp - packets[1].timestamp) & 0xFFFFFFFF == 6 * 160
    assert (packets[2].sequence - packets[1].sequence) & 0xFFFF == 1
    assert len(done) == 1


def test_send_errors_are_counted_never_raised(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream()
    stream.play(FRAMES, loop=True)
    fake_loop.advance(0.030)  # one packet out, mid-period now
    for error in (
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        OSError(errno.ENOBUFS, "no buffers"),
        BlockingIOError(errno.EAGAIN, "again"),
    ):
        sock.send_error = error
        fake_loop.advance(0.020)
    sock.send_error = None
    fake_loop.advance(0.020)
    assert stream.stats.send_errors == 3 and stream.stats.packets_sent == 2
    first, last = sent_packets(sock)
    assert (last.sequence - first.sequence) & 0xFFFF == 4  # lost packets used their sequence numbers
    assert not last.marker


def test_ssrc_is_fixed_and_sequence_and_timestamp_start_at_random(new_stream: Any, fake_loop: Any) -> None:
    streams = [new_stream() for _ in range(3)]
    for stream, _ in streams:
        stream.play(FRAMES[:3])
    fake_loop.advance(0.5)
    firsts = [sent_packets(sock) for _, sock in streams]
    for (stream, _), packets in zip(streams, firsts, strict=True):
        assert {p.ssrc for p in packets} == {stream.ssrc}
    assert len({p[0].sequence for p in firsts}) == 3 or len({p[0].timestamp for p in firsts}) == 3
    fixed, sock = new_stream(ssrc=0xCAFE)
    fixed.play(FRAMES[:1])
    fake_loop.advance(0.1)
    assert sent_packets(sock)[0].ssrc == 0xCAFE


def test_sequence_and_timestamp_wrap_around(fake_loop: Any, clock: MediaClock, new_stream: Any) -> None:
    stream, sock = new_stream()
    stream._sequence = 0xFFFE
    first_tick = clock.tick_at(fake_loop.time()) + 1
    stream._timestamp_base = (0xFFFFFFFF - 159 - first_tick * 160) & 0xFFFFFFFF  # 2nd frame wraps
    stream.play(FRAMES[:3])
    fake_loop.advance(0.5)
    packets = sent_packets(sock)
    assert [p.sequence for p in packets] == [0xFFFE, 0xFFFF, 0]
    assert [p.timestamp for p in packets] == [0xFFFFFFFF - 159, 0, 160]


def test_streams_finishing_at_different_ticks_leave_the_others_playing(
    fake_loop: Any, clock: MediaClock, new_stream: Any
) -> None:
    pairs = [new_stream() for _ in range(4)]
    for n, (stream, _) in enumerate(pairs, start=1):
        stream.play(FRAMES[:n])
    fake_loop.advance(1.0)
    assert [len(sock.sent) for _, sock in pairs] == [1, 2, 3, 4]
    assert len(clock) == 0


def test_play_rejects_frames_of_the_wrong_size(new_stream: Any) -> None:
    stream, _ = new_stream()
    with pytest.raises(ValueError, match="160 bytes"):
        stream.play([b"\xff" * 160, b"\xff" * 80])
    assert not stream.playing


def test_playing_nothing_ends_at_once(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream()
    done: list[int] = []
    stream.play((), on_done=lambda: done.append(1))
    fake_loop.advance(0.1)
    assert done == [1] and sock.sent == []


def test_a_30ms_clock_sends_240_byte_frames_with_240_timestamp_steps(fake_loop: Any, make_socket: Any) -> None:
    clock = MediaClock(fake_loop, ptime=0.030)
    clock.start()
    sock = make_socket()
    stream = MediaStream(fake_loop, sock, codec="PCMA", payload_type=8, remote=REMOTE, clock=clock)
    with pytest.raises(ValueError, match="240 bytes"):
        stream.play(FRAMES)
    stream.play([b"\xd5" * 240] * 3)
    fake_loop.advance(1.0)
    packets = sent_packets(sock)
    assert [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)] == [240] * 2
    assert sock.sent[1][0] - sock.sent[0][0] == pytest.approx(0.030)


def test_stopped_clock_resumes_with_wall_clock_timestamps(fake_loop: Any, clock: MediaClock, new_stream: Any) -> None:
    stream, sock = new_stream()
    stream.play(FRAMES)
    fake_loop.advance(0.05)
    clock.stop()
    fake_loop.advance(0.2)
    assert len(sock.sent) == 2 and stream.playing
    clock.start()
    fake_loop.advance(1.0)
    packets = sent_packets(sock)
    assert len(packets) == 10 and packets[2].marker
    assert (packets[2].timestamp - packets[1].timestamp) & 0xFFFFFFFF == 11 * 160


def test_a_stream_is_given_its_clock_and_there_is_no_per_loop_fallback(
    fake_loop: Any, make_socket: Any, clock: MediaClock
) -> None:
    stream = MediaStream(fake_loop, make_socket(), codec="PCMU", payload_type=0, remote=REMOTE, clock=clock)
    other = MediaStream(fake_loop, make_socket(), codec="PCMU", payload_type=0, remote=REMOTE, clock=clock)
    assert stream.clock is other.clock is clock
    with pytest.raises(TypeError, match="clock"):
        MediaStream(fake_loop, make_socket(), codec="PCMU", payload_type=0, remote=REMOTE)  # type: ignore[call-arg]
    assert not hasattr(MediaClock, "for_loop")


def test_close_leaves_the_clock_stops_reading_and_closes_the_socket(
    fake_loop: Any, clock: MediaClock, new_stream: Any
) -> None:
    stream, sock = new_stream()
    fd = sock.fileno()
    stream.play(FRAMES, loop=True)
    fake_loop.advance(0.05)
    stream.close()
    stream.close()
    assert sock.closed and fd not in fake_loop.readers and stream not in clock and stream.closed
    fake_loop.advance(0.5)
    with pytest.raises(RuntimeError):
        stream.play(FRAMES)


def test_a_failing_stream_does_not_stop_the_clock(fake_loop: Any, clock: MediaClock, new_stream: Any) -> None:
    class Broken:
        def send_tick(self, tick: int) -> None:
            raise RuntimeError("bug")

    stream, _sock = new_stream()
    stream.play(FRAMES)
    clock.add(Broken())
    with pytest.raises(RuntimeError):
        fake_loop.advance(0.05)
    assert len(fake_loop.pending_timers()) == 1  # rescheduled anyway


# -- receiving ---------------------------------------------------------------------------------------------


def rtp(
    pt: int = 0,
    seq: int = 1,
    ts: int = 160,
    payload: bytes = b"\xff" * 160,
    *,
    marker: bool = False,
    ssrc: int = 0x1111,
) -> bytes:
    return RtpPacket(pt, seq, ts, ssrc, payload, marker=marker).serialize()


def deliver(fake_loop: Any, sock: Any, *datagrams: tuple[bytes, tuple[str, int]]) -> None:
    sock.inbox.extend(datagrams)
    fake_loop.readers[sock.fileno()]()


def test_packets_from_the_remote_are_counted(fake_loop: Any, new_stream: Any) -> None:
    audio: list[tuple[int, int, bytes]] = []
    stream, sock = new_stream(on_audio=lambda *a: audio.append(a))
    deliver(fake_loop, sock, (rtp(seq=1), REMOTE), (rtp(seq=2, payload=b"\x00" * 80), REMOTE))
    assert stream.stats.packets_received == 2 and stream.stats.octets_received == 240
    assert audio == [(1, 160, b"\xff" * 160), (2, 160, b"\x00" * 80)]
    assert sock.blocking is False


def test_packets_from_another_source_are_dropped(fake_loop: Any, new_stream: Any) -> None:
    audio: list[Any] = []
    stream, sock = new_stream(on_audio=lambda *a: audio.append(a))
    deliver(fake_loop, sock, (rtp(), ("192.0.2.66", 30000)), (rtp(), ("192.0.2.10", 30002)), (rtp(), REMOTE))
    assert stream.stats.dropped_wrong_source == 2 and stream.stats.packets_received == 1 and len(audio) == 1


def test_malformed_packets_are_counted_and_dropped(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream(telephone_event_pt=101)
    deliver(
        fake_loop,
        sock,
        (b"\x80\x00", REMOTE),
        (b"\x40" + rtp()[1:], REMOTE),
        (b"\x00" * 3000, REMOTE),
        (rtp(pt=101, payload=b"\x01\x02"), REMOTE),
        (rtp(), REMOTE),
    )
    assert stream.stats.dropped_malformed == 4 and stream.stats.packets_received == 1


def test_nat_relatch_moves_the_remote_once(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream(allow_relatch=True)
    nat = ("198.51.100.7", 41000)
    deliver(fake_loop, sock, (b"garbage", nat), (rtp(pt=13, payload=b"\x40"), nat), (rtp(), nat))
    assert stream.remote == nat and stream.stats.relatched == 1
    assert stream.stats.dropped_malformed == 1 and stream.stats.dropped_wrong_source == 1
    deliver(fake_loop, sock, (rtp(), ("198.51.100.8", 41000)), (rtp(), REMOTE), (rtp(), nat))
    assert stream.remote == nat and stream.stats.relatched == 1 and stream.stats.dropped_wrong_source == 3
    stream.play(FRAMES[:1])
    fake_loop.advance(0.1)
    assert sock.sent[-1][2] == nat  # symmetric RTP: we answer where the caller really is


def test_no_relatch_once_the_signalled_address_has_sent(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream(allow_relatch=True)
    deliver(fake_loop, sock, (rtp(), REMOTE), (rtp(), ("198.51.100.7", 41000)))
    assert stream.remote == REMOTE and stream.stats.dropped_wrong_source == 1


def test_set_remote_moves_sending_and_receiving(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream()
    moved = ("203.0.113.5", 5004)
    stream.set_remote(moved)
    deliver(fake_loop, sock, (rtp(), REMOTE), (rtp(), moved))
    assert stream.stats.dropped_wrong_source == 1 and stream.stats.packets_received == 1
    stream.play(FRAMES[:1])
    fake_loop.advance(0.1)
    assert sock.sent[0][2] == moved
    with pytest.raises(ValueError, match="IP address literal"):
        stream.set_remote(("pbx.example.com", 5004))
    with pytest.raises(ValueError, match="IPv6"):
        stream.set_remote(("2001:db8::1", 5004))  # the socket is IPv4
    with pytest.raises(ValueError, match="port"):
        stream.set_remote(("203.0.113.5", 0))
    assert stream.remote == moved


def test_rfc4733_key_presses_are_counted_once_each(fake_loop: Any, new_stream: Any) -> None:
    digits: list[str] = []
    stream, sock = new_stream(telephone_event_pt=101, on_digit=digits.append)
    seq = 100
    for n, key in enumerate("19#"):
        for i, report in enumerate(key_press_events(key)):
            seq += 1
            marker = i == 0 and key != "9"  # "9" arrives without a marked start
            deliver(fake_loop, sock, (rtp(101, seq, 8000 * (n + 1), report.serialize(), marker=marker), REMOTE))
    assert stream.stats.dtmf_digits == 3
    assert digits == []  # on_digit goes through call_soon
    fake_loop.advance(0)
    assert digits == ["1", "9", "#"]


def test_other_payload_types_are_counted_as_ignored(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream()
    deliver(fake_loop, sock, (rtp(pt=13, payload=b"\x40"), REMOTE), (rtp(pt=101, payload=b"\x01\x8a\x00\xa0"), REMOTE))
    assert stream.stats.ignored_payload_type == 2 and stream.stats.dtmf_digits == 0


def test_a_wake_up_drains_a_bounded_number_of_datagrams(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream()
    sock.inbox.extend([(rtp(), REMOTE)] * (MAX_DATAGRAMS_PER_WAKEUP + 10))
    fake_loop.readers[sock.fileno()]()
    assert stream.stats.packets_received == MAX_DATAGRAMS_PER_WAKEUP
    fake_loop.readers[sock.fileno()]()
    assert stream.stats.packets_received == MAX_DATAGRAMS_PER_WAKEUP + 10


def test_receive_errors_and_listener_bugs_do_not_raise(fake_loop: Any, new_stream: Any) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("listener bug")

    stream, sock = new_stream(on_audio=broken)
    deliver(fake_loop, sock, ConnectionRefusedError(errno.ECONNREFUSED, "icmp"))
    deliver(fake_loop, sock, (rtp(), REMOTE), (rtp(), REMOTE))
    assert stream.stats.receive_errors == 1 and stream.stats.packets_received == 2
    assert len(fake_loop.errors) == 2


def test_an_empty_datagram_in_the_queue_is_read_on_the_next_wake_up(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream()
    sock.inbox.extend([(rtp(), REMOTE), (b"", REMOTE), (rtp(), REMOTE)])
    fake_loop.readers[sock.fileno()]()
    assert stream.stats.packets_received == 1 and len(sock.inbox) == 2  # FIONREAD said 0 bytes: stop here
    fake_loop.readers[sock.fileno()]()
    assert stream.stats.packets_received == 2 and stream.stats.dropped_malformed == 1 and not sock.inbox
