"""``send_after_first_packet``: a stream sends nothing until the caller's first valid RTP packet, then sends to its
source; on virtual time with the fake loop and socket (see conftest)."""

from __future__ import annotations

from typing import Any

from ivr.media.clock import MediaClock
from ivr.media.rtp import RtpPacket
from tests.unit.media.conftest import FRAMES, REMOTE
from tests.unit.media.test_clock_and_stream import deliver, rtp, sent_packets

NAT = ("198.51.100.7", 41000)


def test_off_by_default_sends_to_the_signalled_address_at_once(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream()
    assert not stream.send_after_first_packet and not stream.awaiting_first_packet and not stream.muted
    stream.play(FRAMES)
    fake_loop.advance(0.5)
    assert len(sock.sent) == 10 and {addr for _, _, addr in sock.sent} == {REMOTE}
    record = stream.call_record()
    assert record["rtp_send_latch"] == "off"
    assert record["rtp_frames_not_sent_waiting"] == 0 and record["rtp_digit_packets_not_sent_waiting"] == 0


def test_nothing_is_sent_before_the_first_packet(fake_loop: Any, clock: MediaClock, new_stream: Any) -> None:
    stream, sock = new_stream(send_after_first_packet=True)
    assert stream.awaiting_first_packet and stream.muted and not stream.on_hold
    done: list[float] = []
    stream.play(FRAMES * 50, on_done=lambda: done.append(fake_loop.now))
    fake_loop.advance(12.0)  # the whole 10 s prompt's time, and more: the caller never sends
    assert sock.sent == [] and stream.stats.packets_sent == 0
    assert stream.stats.frames_not_sent_waiting == 500
    assert done == [clock.deadline(500)]  # the prompt ended on the clock, as it would have if heard
    assert stream.call_record()["rtp_send_latch"] == "waiting"
    assert stream.call_record()["rtp_frames_not_sent_waiting"] == 500
    assert clock.stats.ticks >= 500 and stream not in clock


def test_sending_starts_at_the_first_packet_mid_prompt_on_the_clock(
    fake_loop: Any, clock: MediaClock, new_stream: Any
) -> None:
    stream, sock = new_stream(send_after_first_packet=True)
    done: list[float] = []
    stream.play(FRAMES, on_done=lambda: done.append(fake_loop.now))
    fake_loop.advance(0.1)  # ticks 1..5 are due: their frames are dropped, the prompt keeps its place
    assert sock.sent == [] and stream.stats.frames_not_sent_waiting == 5
    deliver(fake_loop, sock, (b"\x80", REMOTE), (rtp(pt=0, payload=b""), ("192.0.2.99", 1)))
    assert stream.awaiting_first_packet  # neither a malformed packet nor a stranger's starts sending
    deliver(fake_loop, sock, (rtp(), REMOTE))
    assert not stream.awaiting_first_packet and not stream.muted
    fake_loop.advance(0.2)
    packets = sent_packets(sock)
    assert [p.payload for p in packets] == list(FRAMES[5:])
    assert packets[0].marker and not any(p.marker for p in packets[1:])  # a talk-spurt starts
    assert packets[0].timestamp == stream.timestamp_for(6)  # the timestamp of its tick: time was not lost
    assert {addr for _, _, addr in sock.sent} == {REMOTE}
    assert done == [clock.deadline(10)]
    assert stream.stats.frames_not_sent_waiting == 5 and stream.call_record()["rtp_send_latch"] == "latched"


def test_with_relatch_sending_starts_to_the_first_packets_source(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream(send_after_first_packet=True, allow_relatch=True)
    stream.play(FRAMES, loop=True)
    fake_loop.advance(0.1)
    deliver(fake_loop, sock, (rtp(pt=13, payload=b"\x40"), NAT))  # comfort noise from a new source: not latched
    assert stream.awaiting_first_packet and stream.remote == REMOTE
    deliver(fake_loop, sock, (rtp(), NAT))
    assert stream.remote == NAT and stream.stats.relatched == 1 and not stream.awaiting_first_packet
    fake_loop.advance(0.1)
    assert len(sock.sent) == 5 and {addr for _, _, addr in sock.sent} == {NAT}  # never the signalled address


def test_without_relatch_only_the_signalled_address_starts_sending(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream(send_after_first_packet=True)
    stream.play(FRAMES, loop=True)
    deliver(fake_loop, sock, (rtp(), NAT))
    fake_loop.advance(0.1)
    assert sock.sent == [] and stream.stats.dropped_wrong_source == 1 and stream.remote == REMOTE
    deliver(fake_loop, sock, (rtp(pt=13, payload=b"\x40"), REMOTE))  # any valid RTP from the remote will do
    fake_loop.advance(0.1)
    assert len(sock.sent) == 5 and {addr for _, _, addr in sock.sent} == {REMOTE}


def test_key_presses_wait_too(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream(send_after_first_packet=True, telephone_event_pt=101)
    stream.send_digit("5", duration_ms=100)
    fake_loop.advance(0.5)
    assert sock.sent == [] and stream.stats.dtmf_digits_sent == 1
    assert stream.stats.digit_packets_not_sent_waiting == 7  # four updates, then the end report three times
    deliver(fake_loop, sock, (rtp(), REMOTE))
    stream.send_digit("6", duration_ms=100)
    fake_loop.advance(0.5)
    assert [RtpPacket.parse(d).payload_type for _, d, _ in sock.sent] == [101] * 7


def test_hold_and_waiting_combine(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream(send_after_first_packet=True)
    stream.set_hold(True)
    stream.play(FRAMES, loop=True)
    fake_loop.advance(0.1)
    assert stream.stats.frames_not_sent_waiting == 0  # on hold nothing would have been sent anyway
    deliver(fake_loop, sock, (rtp(), REMOTE))
    fake_loop.advance(0.1)
    assert sock.sent == [] and stream.muted  # still on hold
    stream.set_hold(False)
    assert not stream.muted
    stream.set_hold(True)
    stream.set_hold(False)
    fake_loop.advance(0.1)
    assert len(sock.sent) == 5


def test_a_new_address_waits_again_the_same_one_does_not(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream(send_after_first_packet=True)
    stream.play(FRAMES, loop=True)
    deliver(fake_loop, sock, (rtp(), REMOTE))
    fake_loop.advance(0.1)
    assert len(sock.sent) == 5
    stream.set_remote(REMOTE)  # a session refresh: no pause
    fake_loop.advance(0.1)
    assert len(sock.sent) == 10
    victim = ("203.0.113.5", 5004)
    stream.set_remote(victim)  # a re-INVITE cannot aim the stream at a third party either
    assert stream.awaiting_first_packet
    fake_loop.advance(0.1)
    assert len(sock.sent) == 10 and stream.stats.frames_not_sent_waiting == 5
    deliver(fake_loop, sock, (rtp(), victim))
    fake_loop.advance(0.1)
    assert len(sock.sent) == 15 and sock.sent[-1][2] == victim
