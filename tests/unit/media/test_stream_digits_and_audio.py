"""MediaStream: digits (RFC 4733 in and out, in-band, modes), the opt-in decoded audio path, reception statistics
and wait audio, on virtual time with a fake socket."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from ivr.media import g711
from ivr.media.clock import MediaClock
from ivr.media.digits import DigitEvent
from ivr.media.dtmf_inband import dtmf_tone
from ivr.media.prompts import Prompt, wait_audio
from ivr.media.rtp import RtpPacket
from ivr.media.stream import MediaStream
from ivr.media.telephone_event import EventCounter, TelephoneEvent, key_press_events
from tests.unit.media.conftest import FRAMES, REMOTE


def rtp(pt: int, seq: int, ts: int, payload: bytes, *, marker: bool = False, ssrc: int = 0x1111) -> bytes:
    return RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload, marker=marker).serialize()


def deliver(fake_loop: Any, sock: Any, *datagrams: bytes) -> None:
    sock.inbox.extend((d, REMOTE) for d in datagrams)
    fake_loop.readers[sock.fileno()]()


def press_packets(key: str, pt: int, seq: int, ts: int, *, duration: int = 800, volume: int = 10) -> list[bytes]:
    reports = key_press_events(key, duration=duration, volume=volume)
    return [rtp(pt, seq + i, ts, r.serialize(), marker=i == 0) for i, r in enumerate(reports)]


def tone_packets(keys: str, codec: str = "PCMU", *, seq: int = 1, ts: int = 0) -> list[bytes]:
    """In-band: each key 60 ms on, 60 ms off, as 20 ms audio packets."""
    parts = [np.zeros(800)]
    for key in keys:
        parts += [dtmf_tone(key, 0.06), np.zeros(480)]
    pcm = np.clip(np.rint(np.concatenate([*parts, np.zeros(800)])), -32768, 32767).astype(np.int16)
    data = g711.encode(codec, pcm[: len(pcm) - len(pcm) % 160])
    pt = 0 if codec == "PCMU" else 8
    return [rtp(pt, seq + i, ts + i * 160, data[i * 160 : (i + 1) * 160]) for i in range(len(data) // 160)]


def sent_packets(sock: Any) -> list[RtpPacket]:
    return [RtpPacket.parse(data) for _, data, _ in sock.sent]


# -- RFC 4733 in -----------------------------------------------------------------------------------------------


def test_digit_event_is_delivered_at_the_start_and_its_end_with_duration(fake_loop: Any, new_stream: Any) -> None:
    keys: list[str] = []
    starts: list[DigitEvent] = []
    ends: list[DigitEvent] = []
    stream, sock = new_stream(
        telephone_event_pt=101, on_digit=keys.append, on_digit_event=starts.append, on_digit_end=ends.append
    )
    packets = press_packets("#", 101, 10, 8000, duration=1280, volume=12)
    deliver(fake_loop, sock, packets[0])
    fake_loop.advance(0)
    assert keys == ["#"] and len(starts) == 1 and ends == []
    digit = starts[0]
    assert (digit.key, digit.source, digit.volume, digit.ended) == ("#", "rfc4733", 12, False)
    deliver(fake_loop, sock, *packets[1:])
    fake_loop.advance(0)
    assert ends == [digit] and digit.ended and digit.duration_ms == 160
    assert keys == ["#"] and stream.stats.dtmf_digits == 1


def test_events_use_the_negotiated_payload_type_only(fake_loop: Any, new_stream: Any) -> None:
    keys: list[str] = []
    stream, sock = new_stream(telephone_event_pt=96, on_digit=keys.append)
    deliver(fake_loop, sock, *press_packets("1", 101, 10, 800), *press_packets("2", 96, 20, 8800))
    fake_loop.advance(0)
    assert keys == ["2"] and stream.stats.ignored_payload_type == 7


def test_renegotiated_payload_type_is_followed(fake_loop: Any, new_stream: Any) -> None:
    keys: list[str] = []
    stream, sock = new_stream(telephone_event_pt=101, on_digit=keys.append)
    stream.telephone_event_pt = 97  # re-INVITE
    deliver(fake_loop, sock, *press_packets("1", 101, 10, 800), *press_packets("3", 97, 20, 8800))
    fake_loop.advance(0)
    assert keys == ["3"] and stream.dtmf_source == "rfc4733"


def test_a_press_still_down_when_the_stream_closes_is_ended(fake_loop: Any, new_stream: Any) -> None:
    ends: list[DigitEvent] = []
    stream, sock = new_stream(telephone_event_pt=101, on_digit_end=ends.append)
    deliver(fake_loop, sock, *press_packets("5", 101, 10, 800)[:3])
    stream.close()
    fake_loop.advance(0)
    assert len(ends) == 1 and ends[0].key == "5" and ends[0].duration_ms == 60


# -- modes and in-band ------------------------------------------------------------------------------------------


def test_without_telephone_event_auto_mode_listens_in_band(fake_loop: Any, new_stream: Any) -> None:
    starts: list[DigitEvent] = []
    keys: list[str] = []
    stream, sock = new_stream(on_digit=keys.append, on_digit_event=starts.append)
    assert stream.dtmf_source == "inband" and stream.jitter_buffer is not None
    deliver(fake_loop, sock, *tone_packets("19#"))
    fake_loop.advance(0)
    assert keys == ["1", "9", "#"] and {d.source for d in starts} == {"inband"}
    assert all(d.ended and 50 <= d.duration_ms <= 70 for d in starts)


def test_with_telephone_event_auto_mode_decodes_nothing(fake_loop: Any, new_stream: Any) -> None:
    keys: list[str] = []
    stream, sock = new_stream(telephone_event_pt=101, on_digit=keys.append)
    assert stream.dtmf_source == "rfc4733" and stream.jitter_buffer is None  # calls without listeners pay nothing
    deliver(fake_loop, sock, *tone_packets("5"))
    fake_loop.advance(0)
    assert keys == []


@pytest.mark.parametrize(("mode", "expected"), [("inband", "7"), ("rfc4733", "4"), ("none", ""), ("auto", "4")])
def test_forced_mode_hears_only_its_own_kind(fake_loop: Any, new_stream: Any, mode: str, expected: str) -> None:
    keys: list[str] = []
    _, sock = new_stream(telephone_event_pt=101, dtmf_mode=mode, on_digit=keys.append)
    deliver(fake_loop, sock, *tone_packets("7", seq=1), *press_packets("4", 101, 500, 900_000))
    fake_loop.advance(0)
    assert "".join(keys) == expected


def test_bad_mode_is_refused(new_stream: Any) -> None:
    with pytest.raises(ValueError, match="dtmf_mode"):
        new_stream(dtmf_mode="info")


def test_in_band_digits_survive_a_lost_and_reordered_packet(fake_loop: Any, new_stream: Any) -> None:
    keys: list[str] = []
    _, sock = new_stream(codec="PCMA", payload_type=8, on_digit=keys.append)
    packets = tone_packets("2580", "PCMA")
    packets[7], packets[8] = packets[8], packets[7]
    del packets[20]
    deliver(fake_loop, sock, *packets)
    fake_loop.advance(0)
    assert keys == list("2580")


# -- decoded audio ----------------------------------------------------------------------------------------------


def test_audio_consumers_get_ordered_decoded_frames_and_removing_the_last_stops_decoding(
    fake_loop: Any, new_stream: Any
) -> None:
    frames: list[np.ndarray] = []
    stream, sock = new_stream(telephone_event_pt=101)
    assert stream.jitter_buffer is None
    stream.add_audio_consumer(frames.append)
    payloads = [bytes([0x10 + i]) * 160 for i in range(6)]
    order = [0, 2, 1, 3, 5, 4]
    deliver(fake_loop, sock, *(rtp(0, 100 + i, 1600 + 160 * i, payloads[i]) for i in order))
    stream.close()  # the last held frame comes out too
    assert [int(f[0]) for f in frames] == [int(g711.ulaw_decode(p)[0]) for p in payloads]
    assert all(len(f) == 160 and f.dtype == np.int16 for f in frames)


def test_removing_the_last_consumer_turns_decoding_off(fake_loop: Any, new_stream: Any) -> None:
    frames: list[np.ndarray] = []
    stream, sock = new_stream(telephone_event_pt=101)
    stream.add_audio_consumer(frames.append)
    deliver(fake_loop, sock, rtp(0, 1, 160, b"\xff" * 160))
    stream.remove_audio_consumer(frames.append)
    stream.remove_audio_consumer(frames.append)  # no-op
    deliver(fake_loop, sock, rtp(0, 2, 320, b"\xff" * 160))
    assert len(frames) == 1 and stream.jitter_buffer is None


def test_telephone_events_in_the_audio_stream_are_not_counted_as_loss(fake_loop: Any, new_stream: Any) -> None:
    frames: list[np.ndarray] = []
    stream, sock = new_stream(telephone_event_pt=101)
    stream.add_audio_consumer(frames.append)
    audio = [rtp(0, i, i * 160, b"\x55" * 160) for i in range(1, 4)]
    events = press_packets("1", 101, 4, 4 * 160, duration=640)  # 3 updates, 3 ends: sequence 4..9
    assert len(events) == 6
    after = [rtp(0, 10 + i, (4 + 6 + i) * 160, b"\x55" * 160) for i in range(3)]
    deliver(fake_loop, sock, *audio, *events, *after)
    jitter = stream.jitter_buffer
    assert jitter is not None and jitter.stats.lost == 0 and jitter.held == 0
    assert len(frames) == 3 + 6 + 3  # the event's 120 ms come out as silence
    assert stream.reception.lost == 0 and stream.reception.expected == 12


def test_a_failing_consumer_does_not_stop_the_others(fake_loop: Any, new_stream: Any) -> None:
    def broken(frame: np.ndarray) -> None:
        raise RuntimeError("consumer bug")

    frames: list[np.ndarray] = []
    stream, sock = new_stream(telephone_event_pt=101)
    stream.add_audio_consumer(broken)
    stream.add_audio_consumer(frames.append)
    deliver(fake_loop, sock, rtp(0, 1, 160, b"\xff" * 160), rtp(0, 2, 320, b"\xff" * 160))
    assert len(frames) == 2 and len(fake_loop.errors) == 2


# -- reception statistics -------------------------------------------------------------------------------------------


def test_reception_statistics_count_loss_and_jitter_for_the_call_record(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream(telephone_event_pt=101)
    for seq in (1, 2, 3, 5, 6):  # 4 is lost
        deliver(fake_loop, sock, rtp(0, seq, seq * 160, b"\xff" * 160))
        fake_loop.advance(0.020 if seq != 3 else 0.045)  # one packet comes 5 ms late
    record = stream.call_record()
    assert record["rtp_packets_expected"] == 6 and record["rtp_packets_received"] == 5
    assert record["rtp_packets_lost"] == 1
    assert 0 < float(record["rtp_jitter_ms"]) < 5 and record["dtmf_heard"] == "rfc4733"
    assert "jitter_buffer_lost" not in record  # no decoded audio path on this call


# -- RFC 4733 out ---------------------------------------------------------------------------------------------------


def test_send_digit_sends_a_marked_start_updates_and_three_end_packets(
    fake_loop: Any, clock: MediaClock, new_stream: Any
) -> None:
    stream, sock = new_stream(telephone_event_pt=101)
    stream.send_digit("7", duration_ms=100, volume=9)
    assert stream.sending_digits
    fake_loop.advance(1.0)
    packets = sent_packets(sock)
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert {p.payload_type for p in packets} == {101} and {p.ssrc for p in packets} == {stream.ssrc}
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert len({p.timestamp for p in packets}) == 1
    assert [(e.duration, e.end) for e in events] == [(160, False), (320, False), (480, False), (640, False)] + [
        (800, True)
    ] * 3
    assert {(e.event, e.volume) for e in events} == {(7, 9)}
    assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in itertools.pairwise(packets))
    times = [t for t, _, _ in sock.sent]
    assert all(b - a == pytest.approx(0.020) for a, b in itertools.pairwise(times))  # one per tick
    assert len(clock) == 0 and not stream.sending_digits and stream.stats.dtmf_digits_sent == 1


def test_sent_digits_are_counted_once_each_by_a_receiver(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream(telephone_event_pt=101)
    for key in "0888#":
        stream.send_digit(key, duration_ms=60)
    fake_loop.advance(3.0)
    counter = EventCounter()
    heard = []
    for p in sent_packets(sock):
        started, _ = counter.feed_event(
            p.timestamp, TelephoneEvent.parse(p.payload), marker=p.marker, ssrc=p.ssrc, sequence=p.sequence
        )
        if started is not None:
            heard.append(started)
    assert [d.key for d in heard] == list("0888#")
    assert all(d.ended and d.duration_ms == 60 for d in heard)


def test_the_prompt_pauses_while_a_digit_is_sent_and_goes_on_after(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream(telephone_event_pt=101)
    done: list[float] = []
    stream.play(FRAMES, on_done=lambda: done.append(fake_loop.time()))
    fake_loop.advance(0.050)  # frames 0, 1 sent
    stream.send_digit("1", duration_ms=40)  # one update, then the end 3 times: 4 ticks
    fake_loop.advance(1.0)
    packets = sent_packets(sock)
    kinds = ["E" if p.payload_type == 101 else str(p.payload[0]) for p in packets]
    assert kinds == ["0", "1", "E", "E", "E", "E", "2", "3", "4", "5", "6", "7", "8", "9"]
    resumed = packets[6]
    assert resumed.marker and (resumed.timestamp - packets[1].timestamp) & 0xFFFFFFFF == 5 * 160
    assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in itertools.pairwise(packets))
    assert len(done) == 1


def test_stopping_the_prompt_does_not_cut_a_digit_being_sent(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream(telephone_event_pt=101)
    stream.play(FRAMES, loop=True)
    stream.send_digit("9", duration_ms=60)
    fake_loop.advance(0.030)
    stream.stop_playback()
    fake_loop.advance(1.0)
    packets = sent_packets(sock)
    assert [p.payload_type for p in packets] == [101] * 5  # 2 updates, 3 ends
    assert TelephoneEvent.parse(packets[-1].payload).end


def test_send_digit_needs_a_negotiated_payload_type_and_a_real_key(new_stream: Any) -> None:
    stream, _ = new_stream()
    with pytest.raises(RuntimeError, match="telephone-event"):
        stream.send_digit("1")
    stream.telephone_event_pt = 101
    for bad in ({"key": "E"}, {"key": "1", "duration_ms": 0}, {"key": "1", "volume": 64}):
        with pytest.raises(ValueError):
            stream.send_digit(**bad)  # type: ignore[arg-type]


def test_digits_sent_by_one_stream_are_heard_by_another(fake_loop: Any, clock: MediaClock, make_socket: Any) -> None:
    keys: list[str] = []
    sender = MediaStream(
        fake_loop, make_socket(), codec="PCMU", payload_type=0, remote=REMOTE, telephone_event_pt=100, clock=clock
    )
    receiver_sock = make_socket()
    MediaStream(
        fake_loop,
        receiver_sock,
        codec="PCMU",
        payload_type=0,
        remote=REMOTE,
        telephone_event_pt=100,
        clock=clock,
        on_digit=keys.append,
    )
    sender.send_digit("A")
    sender.send_digit("5")
    fake_loop.advance(1.0)
    receiver_sock.inbox.extend((data, REMOTE) for _, data, _ in sender._sock.sent)
    fake_loop.readers[receiver_sock.fileno()]()
    fake_loop.advance(0)
    assert keys == ["A", "5"]


# -- wait audio -----------------------------------------------------------------------------------------------------


def test_switching_from_wait_audio_to_a_prompt_and_back_keeps_one_talk_spurt(fake_loop: Any, new_stream: Any) -> None:
    tones = [Prompt(f"p{i}", np.full(160 * (i + 1), 1000 * (i + 1), dtype=np.int16)) for i in range(2)]
    music = wait_audio("moh", tones, gap=0.04)
    assert len(music.frames("PCMU")) == 1 + 2 + 2 + 2  # p0, gap, p1, gap
    announcement = Prompt("ann", np.full(320, -5000, dtype=np.int16))
    stream, sock = new_stream()

    def back_to_music() -> None:
        stream.play(music.frames("PCMU"), loop=True)

    back_to_music()
    fake_loop.advance(0.170)  # 8 frames of music: one loop and a frame
    stream.play(announcement.frames("PCMU"), on_done=back_to_music)
    fake_loop.advance(0.200)
    packets = sent_packets(sock)
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    assert all((b.timestamp - a.timestamp) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(packets))
    loop_frames = music.frames("PCMU")
    payloads = [p.payload for p in packets]
    assert payloads[:8] == [*loop_frames, loop_frames[0]]
    assert payloads[8:10] == list(announcement.frames("PCMU"))
    assert payloads[10:12] == list(loop_frames[:2])  # the music starts again from its beginning


def test_wait_audio_needs_prompts() -> None:
    with pytest.raises(ValueError):
        wait_audio("moh", [])


def test_a_consumer_leaving_during_a_frame_does_not_make_another_miss_it(fake_loop: Any, new_stream: Any) -> None:
    stream, sock = new_stream(telephone_event_pt=101)
    second: list[np.ndarray] = []

    def once(frame: np.ndarray) -> None:
        stream.remove_audio_consumer(once)

    stream.add_audio_consumer(once)
    stream.add_audio_consumer(second.append)
    deliver(fake_loop, sock, rtp(0, 1, 160, b"\xff" * 160), rtp(0, 2, 320, b"\xff" * 160))
    assert len(second) == 2


def test_consumers_get_20ms_frames_whatever_the_streams_own_ptime(fake_loop: Any, make_socket: Any) -> None:
    clock = MediaClock(fake_loop, ptime=0.030)
    keys: list[str] = []
    stream = MediaStream(
        fake_loop, make_socket(), codec="PCMU", payload_type=0, remote=REMOTE, clock=clock, on_digit=keys.append
    )
    frames: list[np.ndarray] = []
    stream.add_audio_consumer(frames.append)
    sock = stream._sock
    pcm = np.clip(np.rint(np.concatenate([dtmf_tone("3", 0.12), np.zeros(960)])), -32768, 32767).astype(np.int16)
    data = g711.ulaw_encode(pcm)
    deliver(fake_loop, sock, *(rtp(0, i, i * 240, data[i * 240 : (i + 1) * 240]) for i in range(len(data) // 240)))
    fake_loop.advance(0)
    assert {len(f) for f in frames} == {160} and len(frames) == len(data) // 160
    assert keys == ["3"]
