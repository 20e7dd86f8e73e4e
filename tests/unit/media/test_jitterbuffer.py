"""The inbound audio path: RFC 3550 reception statistics and the jitter buffer (reorder, duplicates, loss, framing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.media import g711
from ivr.media.jitterbuffer import JitterBuffer, ReceptionStats

SIPP_PCAP = Path("/usr/share/sip-tester/g711a.pcap")


def speech_like(samples: int, seed: int = 1) -> npt.NDArray[np.int16]:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 8000
    signal = 6000 * np.sin(2 * np.pi * 310 * t) + 2000 * rng.standard_normal(samples)
    return np.clip(signal, -32768, 32767).astype(np.int16)


def packets(codec: str, pcm: npt.NDArray[np.int16], size: int = 160, seq0: int = 1000, ts0: int = 50_000):
    """(sequence, timestamp, payload) of ``pcm`` cut into packets of ``size`` samples."""
    data = g711.encode(codec, pcm)
    return [
        ((seq0 + i) & 0xFFFF, (ts0 + i * size) & 0xFFFFFFFF, data[i * size : (i + 1) * size])
        for i in range(len(data) // size)
    ]


def run(buffer: JitterBuffer, items, ssrc: int = 7) -> npt.NDArray[np.int16]:
    frames = []
    for seq, ts, payload in items:
        out = buffer.push(seq, ts, payload, ssrc)
        assert all(len(f) == 160 for f in out)
        frames.extend(out)
    frames.extend(buffer.flush())
    return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)


def decoded(codec: str, pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    return g711.decode(codec, g711.encode(codec, pcm))


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_packets_in_order_come_out_at_once_as_the_decoded_audio(codec: str) -> None:
    pcm = speech_like(1600)
    buffer = JitterBuffer(codec)
    for seq, ts, payload in packets(codec, pcm):
        frames = buffer.push(seq, ts, payload, 7)
        assert len(frames) == 1 and np.array_equal(frames[0], g711.decode(codec, payload))
        assert not frames[0].flags.writeable
    assert buffer.held == 0 and buffer.stats.frames == 10


def test_reordered_packets_are_put_back_in_order() -> None:
    pcm = speech_like(1600)
    items = packets("PCMU", pcm)
    order = [0, 2, 1, 3, 6, 4, 5, 7, 9, 8]
    buffer = JitterBuffer("PCMU")
    assert np.array_equal(run(buffer, [items[i] for i in order]), decoded("PCMU", pcm))
    assert buffer.stats.reordered == 4 and buffer.stats.lost == 0 and buffer.stats.filled_samples == 0


def test_a_packet_behind_a_gap_waits_only_for_max_reorder_newer_packets() -> None:
    items = packets("PCMU", speech_like(1600))
    buffer = JitterBuffer("PCMU", max_reorder=3)
    assert len(buffer.push(*items[0], 7)) == 1
    for i in (2, 3):
        assert buffer.push(*items[i], 7) == ()  # held: packet 1 may still come
    assert buffer.held == 2
    released = buffer.push(*items[4], 7)  # 3 newer than the gap: packet 1 is lost
    assert len(released) == 4 and buffer.held == 0
    assert not released[0].any()  # the lost packet's 20 ms are silence
    assert buffer.stats.lost == 1 and buffer.stats.filled_samples == 160


def test_lost_packets_are_concealed_with_silence_of_their_length() -> None:
    pcm = speech_like(3200)
    items = packets("PCMA", pcm)
    kept = [p for i, p in enumerate(items) if i not in (5, 6, 12)]
    out = run(JitterBuffer("PCMA"), kept)
    expected = decoded("PCMA", pcm).copy()
    expected[5 * 160 : 7 * 160] = 0
    expected[12 * 160 : 13 * 160] = 0
    assert np.array_equal(out, expected)


def test_a_packet_arriving_after_its_place_was_given_up_is_dropped_as_late() -> None:
    items = packets("PCMU", speech_like(1600))
    buffer = JitterBuffer("PCMU", max_reorder=2)
    run_items = [items[0], items[2], items[3], items[1], items[4]]
    out = run(buffer, run_items)
    assert len(out) == 5 * 160 and not out[160:320].any()
    assert buffer.stats.late == 1 and buffer.stats.lost == 1


def test_duplicates_are_dropped_whether_held_or_already_played() -> None:
    pcm = speech_like(1600)
    items = packets("PCMU", pcm)
    sequence = [items[0], items[0], items[2], items[2], items[1], items[1], *items[3:]]
    buffer = JitterBuffer("PCMU")
    assert np.array_equal(run(buffer, sequence), decoded("PCMU", pcm))
    assert buffer.stats.duplicates == 3


@pytest.mark.parametrize("size", [80, 240, 400])
def test_packets_of_any_size_are_cut_into_20ms_frames(size: int) -> None:
    pcm = speech_like(2400)
    buffer = JitterBuffer("PCMU")
    out = run(buffer, packets("PCMU", pcm, size=size))
    assert np.array_equal(out, decoded("PCMU", pcm))
    assert buffer.stats.frames == 15


@pytest.mark.skipif(not SIPP_PCAP.exists(), reason="SIPp (Debian sip-tester) is not installed")
def test_sipp_g711a_capture_of_30ms_packets_becomes_contiguous_20ms_frames() -> None:
    import struct

    data = SIPP_PCAP.read_bytes()
    offset, items, payloads = 24, [], []
    while offset < len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, offset)
        rtp = data[offset + 16 + 14 + 20 + 8 : offset + 16 + incl]
        offset += 16 + incl
        seq, ts = struct.unpack_from("!HI", rtp, 2)
        items.append((seq, ts, rtp[12:]))
        payloads.append(rtp[12:])
    assert {len(p) for p in payloads} == {240}
    buffer = JitterBuffer("PCMA")
    out = run(buffer, items)
    reference = g711.alaw_decode(b"".join(payloads))
    assert np.array_equal(out[: len(reference)], reference)
    assert buffer.stats.lost == 0 and buffer.stats.filled_samples == 0


def test_silence_suppression_gap_is_filled_with_silence() -> None:
    pcm = speech_like(800)
    first = packets("PCMU", pcm, seq0=10, ts0=1000)
    later = packets("PCMU", pcm, seq0=15, ts0=1000 + 800 + 4000)  # 0.5 s without packets, sequence goes on
    buffer = JitterBuffer("PCMU")
    out = run(buffer, first + later)
    assert len(out) == 800 + 4000 + 800
    assert not out[800:4800].any() and buffer.stats.filled_samples == 4000 and buffer.stats.lost == 0


def test_gap_longer_than_max_gap_is_skipped_not_filled() -> None:
    pcm = speech_like(800)
    buffer = JitterBuffer("PCMU", max_gap=1.0)
    out = run(buffer, packets("PCMU", pcm, seq0=10, ts0=0) + packets("PCMU", pcm, seq0=15, ts0=800 + 80_000))
    assert len(out) == 1600 and buffer.stats.skipped_gaps == 1


def test_telephone_event_packets_hold_their_sequence_numbers_and_the_time_becomes_silence() -> None:
    pcm = speech_like(1600)
    items = packets("PCMU", pcm)
    buffer = JitterBuffer("PCMU")
    frames = []
    for i, (seq, ts, payload) in enumerate(items):
        if 3 <= i < 6:
            frames += buffer.push(seq, items[3][1], None, 7)  # events all carry their start's timestamp
        else:
            frames += buffer.push(seq, ts, payload, 7)
    out = np.concatenate(frames)
    assert len(out) == 1600 and not out[480:960].any()
    assert buffer.stats.lost == 0 and buffer.held == 0


def test_sequence_numbers_wrap_around_in_order() -> None:
    pcm = speech_like(1600)
    buffer = JitterBuffer("PCMA")
    assert np.array_equal(run(buffer, packets("PCMA", pcm, seq0=65531, ts0=0xFFFFFFFF - 300)), decoded("PCMA", pcm))
    assert buffer.stats.lost == 0 and buffer.stats.filled_samples == 0


def test_a_new_ssrc_releases_what_was_held_and_starts_a_new_timeline() -> None:
    pcm = speech_like(1600)
    items = packets("PCMU", pcm)
    buffer = JitterBuffer("PCMU")
    buffer.push(*items[0], 7)
    buffer.push(*items[2], 7)  # held behind missing 1
    frames = buffer.push(5, 123_456, items[3][2], 8)  # another source
    # Packet 2 (with silence for lost packet 1), then the new source's first packet, with no gap between.
    assert len(frames) == 3 and not frames[0].any() and buffer.stats.filled_samples == 160
    assert np.array_equal(frames[2], g711.ulaw_decode(items[3][2]))
    assert buffer.stats.resyncs == 1 and buffer.held == 0 and buffer.stats.skipped_gaps == 0


def test_flush_completes_the_last_frame_with_silence() -> None:
    buffer = JitterBuffer("PCMU")
    assert len(buffer.push(1, 0, g711.ulaw_encode(speech_like(100)), 7)) == 0
    frames = buffer.flush()
    assert len(frames) == 1 and len(frames[0]) == 160 and not frames[0][100:].any()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 2), min_size=30, max_size=30),
    st.lists(st.integers(0, 29), max_size=6),
    st.integers(0, 0xFFFF),
)
def test_any_local_reordering_and_duplication_gives_back_the_exact_audio(
    shifts: list[int], dupes: list[int], seq0: int
) -> None:
    pcm = speech_like(30 * 160, seed=3)
    items = packets("PCMU", pcm, seq0=seq0)
    # Each packet but the first (which starts the stream) is delayed by up to 2 places (less than
    # max_reorder=3); some arrive twice.
    shifts[0] = 0
    order = sorted(range(30), key=lambda i: i + shifts[i] + 0.5 * (shifts[i] > 0))
    arrivals = [items[i] for i in order] + [items[i] for i in dupes]
    buffer = JitterBuffer("PCMU", max_reorder=3)
    assert np.array_equal(run(buffer, arrivals)[: 30 * 160], decoded("PCMU", pcm))
    assert buffer.stats.lost == 0 and buffer.stats.duplicates == len(dupes)


# -- RFC 3550 reception statistics ---------------------------------------------------------------------------------


def test_expected_received_and_lost_follow_rfc3550_a3() -> None:
    stats = ReceptionStats()
    for seq in [100, 101, 103, 104, 104, 107]:  # 102, 105, 106 lost; 104 duplicated
        stats.update(9, seq, seq * 160, seq * 160, True)
    assert stats.expected == 8 and stats.received == 6 and stats.lost == 2  # a duplicate counts as received
    record = stats.as_record()
    assert record["rtp_packets_expected"] == 8 and record["rtp_loss_fraction"] == 0.25


def test_sequence_wrap_counts_a_cycle() -> None:
    stats = ReceptionStats()
    for i in range(10):
        stats.update(9, (65530 + i) & 0xFFFF, i * 160, i * 160, True)
    assert stats.extended_highest_sequence == 65536 + 3 and stats.expected == 10 and stats.lost == 0


def test_interarrival_jitter_is_the_a8_estimate() -> None:
    rng = np.random.default_rng(5)
    arrivals = (np.arange(500) * 160 + rng.integers(-80, 80, 500)).tolist()
    stats = ReceptionStats()
    reference = 0.0
    for i, arrival in enumerate(arrivals):
        stats.update(9, i, i * 160 + 12345, arrival + 777, True)
        if i:
            d = abs((arrival - i * 160) - (arrivals[i - 1] - (i - 1) * 160))
            reference += (d - reference) / 16
    assert stats.jitter == pytest.approx(reference)
    assert stats.jitter_ms == pytest.approx(reference / 8)
    assert 5 < stats.jitter_ms < 10  # uniform +-10 ms arrival noise


def test_steady_packets_have_no_jitter_even_across_timestamp_wrap() -> None:
    stats = ReceptionStats()
    for i in range(100):
        stats.update(9, i, (0xFFFFFFFF - 1000 + i * 160) & 0xFFFFFFFF, 10**9 + i * 160, True)
    assert stats.jitter == 0.0 and stats.max_jitter == 0.0


def test_telephone_event_packets_count_but_do_not_move_the_jitter() -> None:
    stats = ReceptionStats()
    for i in range(10):
        stats.update(9, i, i * 160, i * 160, True)
    for i in range(10, 20):
        stats.update(9, i, 10 * 160, i * 160, False)  # all with the event's timestamp
    assert stats.received == 20 and stats.jitter == 0.0


def test_a_stray_packet_far_off_is_not_counted_but_two_in_a_row_restart_the_count() -> None:
    stats = ReceptionStats()
    for seq in range(10):
        stats.update(9, seq, seq * 160, seq * 160, True)
    stats.update(9, 30_000, 0, 0, True)
    assert stats.stray == 1 and stats.received == 10
    stats.update(9, 40_000, 0, 0, True)
    stats.update(9, 40_001, 160, 160, True)  # the sender restarted its sequence numbers
    assert stats.restarts == 1 and stats.received == 11 and stats.expected == 11


def test_a_new_ssrc_keeps_the_totals_of_the_old_one() -> None:
    stats = ReceptionStats()
    for seq in (1, 2, 4):
        stats.update(1, seq, seq * 160, seq * 160, True)
    for seq in (500, 501):
        stats.update(2, seq, 0, 0, True)
    assert stats.sources == 2 and stats.expected == 6 and stats.received == 5 and stats.lost == 1
