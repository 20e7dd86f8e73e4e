"""RFC 4733 telephone-event payloads and counting key presses."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr.media.digits import DigitEvent
from ivr.media.rtp import RtpError, RtpPacket
from ivr.media.telephone_event import DTMF_KEYS, EventCounter, TelephoneEvent, event_code, key_press_events

SIPP_DTMF = Path("/usr/share/sip-tester")


def test_parses_rfc_4733_payload() -> None:
    # Event 5, E bit, R bit (reserved, ignored), volume 10, duration 800.
    event = TelephoneEvent.parse(bytes([5, 0x80 | 0x40 | 10]) + struct.pack("!H", 800))
    assert event == TelephoneEvent(event=5, end=True, volume=10, duration=800)
    assert event.key == "5"


def test_payload_shorter_than_4_bytes_is_rejected() -> None:
    with pytest.raises(RtpError, match="at least 4 bytes"):
        TelephoneEvent.parse(b"\x01\x0a\x00")


def test_parse_reads_inside_a_larger_buffer() -> None:
    buf = bytearray(b"\x00" * 12 + bytes([11, 10, 0, 160]) + b"\x00" * 10)
    assert TelephoneEvent.parse(buf, 12, 16) == TelephoneEvent(11, False, 10, 160)
    with pytest.raises(RtpError):
        TelephoneEvent.parse(buf, 12, 15)


@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF))
def test_serialize_then_parse_round_trips(code: int, end: bool, volume: int, duration: int) -> None:
    event = TelephoneEvent(code, end, volume, duration)
    assert TelephoneEvent.parse(event.serialize()) == event


@pytest.mark.parametrize(
    "event", [TelephoneEvent(256, False, 0, 0), TelephoneEvent(1, False, 64, 0), TelephoneEvent(1, False, 0, 65536)]
)
def test_serialize_rejects_out_of_range_fields(event: TelephoneEvent) -> None:
    with pytest.raises(RtpError):
        event.serialize()


def test_keys_map_to_event_codes_0_to_15() -> None:
    assert [event_code(k) for k in "0123456789*#ABCD"] == list(range(16))
    assert event_code("a") == 12
    assert TelephoneEvent(16, False, 0, 0).key is None  # flash is not a key
    with pytest.raises(ValueError):
        event_code("E")
    with pytest.raises(ValueError):
        event_code("12")


def test_key_press_events_are_updates_then_three_end_reports() -> None:
    reports = key_press_events("#", duration=800, interval=160)
    assert [(r.duration, r.end) for r in reports] == [
        (160, False),
        (320, False),
        (480, False),
        (640, False),
        (800, True),
        (800, True),
        (800, True),
    ]
    assert {r.event for r in reports} == {11}


def feed(
    counter: EventCounter, reports: list[TelephoneEvent], timestamp: int, *, first_marker: bool = True, ssrc: int = 1
) -> list[str | None]:
    return [counter.feed(timestamp, r, marker=first_marker and i == 0, ssrc=ssrc) for i, r in enumerate(reports)]


def test_one_press_with_marker_and_three_end_packets_counts_once() -> None:
    counter = EventCounter()
    assert feed(counter, key_press_events("7"), 1000) == ["7"] + [None] * 6
    assert counter.presses == 1


def test_press_whose_marked_start_was_lost_counts_once() -> None:
    counter = EventCounter()
    assert feed(counter, key_press_events("3")[2:], 1000, first_marker=False) == ["3", None, None, None, None]


def test_press_seen_only_through_its_end_packets_counts_once() -> None:
    counter = EventCounter()
    ends = [r for r in key_press_events("9") if r.end]
    assert feed(counter, ends, 5000, first_marker=False) == ["9", None, None]


def test_retransmissions_of_a_whole_press_count_once() -> None:
    counter = EventCounter()
    reports = key_press_events("1")
    feed(counter, reports, 2000)
    assert feed(counter, reports, 2000) == [None] * len(reports)
    assert counter.presses == 1


def test_same_key_pressed_twice_counts_twice() -> None:
    counter = EventCounter()
    feed(counter, key_press_events("5"), 1000)
    feed(counter, key_press_events("5"), 1000 + 8000)
    assert counter.presses == 2


def test_late_end_packet_of_previous_press_does_not_count_again() -> None:
    counter = EventCounter()
    first = key_press_events("1")
    feed(counter, first[:-1], 1000)
    assert counter.feed(4000, key_press_events("2")[0], marker=True, ssrc=1) == "2"
    assert counter.feed(1000, first[-1], ssrc=1) is None  # reordered: arrives after "2" started
    assert counter.presses == 2


def test_same_timestamp_from_another_ssrc_is_another_press() -> None:
    counter = EventCounter()
    feed(counter, key_press_events("4"), 1000, ssrc=1)
    feed(counter, key_press_events("4"), 1000, ssrc=2)
    assert counter.presses == 2


def test_long_event_segments_are_one_press() -> None:
    # RFC 4733 2.5.1.3: a press longer than 0xFFFF units continues in a new segment with a later timestamp.
    counter = EventCounter()
    code = event_code("0")
    first = [TelephoneEvent(code, False, 10, d) for d in range(160, 0xFFFF, 160)] + [
        TelephoneEvent(code, False, 10, 0xFFFF)
    ]
    assert feed(counter, first, 100)[0] == "0"
    second = [TelephoneEvent(code, False, 10, d) for d in (160, 320)] + [TelephoneEvent(code, True, 10, 480)] * 3
    assert feed(counter, second, 100 + 0xFFFF, first_marker=False) == [None] * 5
    assert counter.presses == 1


def test_events_that_are_not_keys_are_ignored() -> None:
    counter = EventCounter()
    assert counter.feed(100, TelephoneEvent(16, False, 10, 160), marker=True) is None  # flash
    assert counter.presses == 0


@st.composite
def press_sequences(draw: st.DrawFn) -> tuple[list[str], list[tuple[int, TelephoneEvent, bool]]]:
    """Packets of several presses, with random loss (never of a whole press), duplicates and local reorder."""
    keys = draw(st.lists(st.sampled_from(DTMF_KEYS), min_size=1, max_size=8))
    packets: list[tuple[int, TelephoneEvent, bool]] = []
    timestamp = draw(st.integers(0, 0xFFFFFFFF))
    for key in keys:
        reports = key_press_events(key, duration=draw(st.integers(1, 8)) * 160)
        kept = [(timestamp, r, i == 0) for i, r in enumerate(reports) if draw(st.integers(0, 3)) > 0]
        if not kept:
            kept = [(timestamp, reports[-1], False)]
        dupes = [p for p in kept if draw(st.integers(0, 4)) == 0]
        packets += kept + dupes
        timestamp = (timestamp + draw(st.integers(1600, 16000))) & 0xFFFFFFFF
    for _ in range(draw(st.integers(0, 5))):
        i = draw(st.integers(0, len(packets) - 1))
        j = min(i + 1, len(packets) - 1)
        packets[i], packets[j] = packets[j], packets[i]
    return keys, packets


@given(press_sequences())
def test_lossy_duplicated_reordered_presses_each_count_once(case: tuple[list[str], list]) -> None:
    keys, packets = case
    counter = EventCounter()
    seen = [k for ts, report, marker in packets if (k := counter.feed(ts, report, marker=marker)) is not None]
    assert counter.presses == len(keys)
    assert sorted(seen) == sorted(keys)


def read_pcap_rtp(path: Path) -> list[RtpPacket]:
    """RTP payloads of a classic pcap file of Ethernet/IPv4/UDP frames."""
    data = path.read_bytes()
    assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4
    offset, packets = 24, []
    while offset < len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        ihl = (frame[14] & 0x0F) * 4
        packets.append(RtpPacket.parse(frame[14 + ihl + 8 :]))
    return packets


@pytest.mark.skipif(not SIPP_DTMF.is_dir(), reason="SIPp (Debian sip-tester) is not installed")
def test_sipp_rfc2833_captures_count_one_press_each() -> None:
    names = [*"0123456789", "star", "pound"]
    counter = EventCounter()
    keys = []
    for index, name in enumerate(names):
        packets = read_pcap_rtp(SIPP_DTMF / f"dtmf_2833_{name}.pcap")
        assert packets[0].marker and sum(TelephoneEvent.parse(p.payload).end for p in packets) == 3
        for packet in packets * 2:  # each capture twice: the replay is a retransmission
            # All captures share one timestamp; shift each one as a sender would for a later press.
            key = counter.feed(
                packet.timestamp + index * 8000,
                TelephoneEvent.parse(packet.payload),
                marker=packet.marker,
                ssrc=packet.ssrc,
            )
            if key is not None:
                keys.append(key)
    assert "".join(keys) == "0123456789*#"


# -- DigitEvent: duration, volume, end -------------------------------------------------------------------------


def feed_events(
    counter: EventCounter,
    reports: list[TelephoneEvent],
    timestamp: int,
    *,
    first_sequence: int = 100,
    first_marker: bool = True,
    ssrc: int = 1,
) -> list[tuple[DigitEvent | None, DigitEvent | None]]:
    return [
        counter.feed_event(timestamp, r, marker=first_marker and i == 0, ssrc=ssrc, sequence=first_sequence + i)
        for i, r in enumerate(reports)
    ]


def test_press_is_announced_at_its_first_packet_and_ends_with_duration_and_volume() -> None:
    counter = EventCounter()
    reports = key_press_events("8", duration=1200, volume=7)
    (started, ended), *_ = feed_events(counter, reports[:1], 5000)
    assert started is not None and ended is None
    assert (started.key, started.source, started.volume) == ("8", "rfc4733", 7)
    assert started.duration_ms == 20 and not started.ended  # the first update says 160 units
    results = feed_events(counter, reports[1:], 5000, first_sequence=101, first_marker=False)
    assert all(r == (None, None) for r in results[:-3])
    assert results[-3] == (None, started)  # the first end packet ends it
    assert results[-2:] == [(None, None), (None, None)]
    assert started.ended and started.duration_ms == 150  # 1200 units at 8 kHz


def test_duration_grows_in_place_while_the_key_is_down() -> None:
    counter = EventCounter()
    reports = key_press_events("2", duration=1600)
    digit, _ = counter.feed_event(0, reports[0], marker=True)
    assert digit is not None
    seen = []
    for report in reports[1:5]:
        counter.feed_event(0, report)
        seen.append(digit.duration_ms)
    assert seen == [40, 60, 80, 100] and not digit.ended


def test_press_whose_end_packets_were_all_lost_ends_when_the_next_press_starts() -> None:
    counter = EventCounter()
    first = key_press_events("1", duration=800)
    feed_events(counter, first[:-3], 1000)  # no end packet arrives
    earlier = counter.current
    assert earlier is not None and not earlier.ended
    started, ended = counter.feed_event(9000, key_press_events("2")[0], marker=True, ssrc=1)
    assert started is not None and started.key == "2"
    assert ended is earlier and earlier.ended and earlier.duration_ms == 80


def test_reordered_packets_never_shorten_the_duration() -> None:
    counter = EventCounter()
    reports = key_press_events("4", duration=960)
    order = [0, 2, 1, 5, 3, 4, 6, 7]
    digits = [counter.feed_event(300, reports[i], marker=i == 0, sequence=10 + i)[0] for i in order]
    assert [d.key for d in digits if d is not None] == ["4"]
    assert counter.current is not None and counter.current.duration_ms == 120 and counter.current.ended


def test_long_event_segments_add_up_to_one_duration() -> None:
    counter = EventCounter()
    code = event_code("0")
    first = [TelephoneEvent(code, False, 10, d) for d in (160, 32000, 0xFFFF)]
    second = [TelephoneEvent(code, False, 10, 160), TelephoneEvent(code, True, 10, 800)]
    results = feed_events(counter, first, 100) + feed_events(
        counter, second, 100 + 0xFFFF, first_sequence=200, first_marker=False
    )
    started = [s for s, _ in results if s is not None]
    assert len(started) == 1
    assert started[0].ended and started[0].duration_ms == (0xFFFF + 800) // 8


def test_same_key_again_with_a_reused_timestamp_is_a_new_press_when_sequence_numbers_say_so() -> None:
    # Some senders reuse the timestamp of the previous event when no audio flowed in between.
    counter = EventCounter()
    reports = key_press_events("5", duration=480)
    feed_events(counter, reports, 7000, first_sequence=10)
    again = feed_events(counter, reports, 7000, first_sequence=10 + len(reports))
    assert [s.key for s, _ in again if s is not None] == ["5"]
    assert counter.presses == 2


def test_duplicated_packets_of_a_finished_press_with_old_sequence_numbers_do_not_count() -> None:
    counter = EventCounter()
    reports = key_press_events("5", duration=480)
    feed_events(counter, reports, 7000, first_sequence=10)
    replay = feed_events(counter, reports, 7000, first_sequence=10)  # the network duplicated every packet
    assert replay == [(None, None)] * len(reports) and counter.presses == 1


def test_a_different_key_with_the_same_timestamp_is_a_new_press() -> None:
    counter = EventCounter()
    feed_events(counter, key_press_events("1", duration=320), 4000, first_sequence=1)
    results = feed_events(counter, key_press_events("2", duration=320), 4000, first_sequence=20)
    assert [s.key for s, _ in results if s is not None] == ["2"]


@pytest.mark.parametrize("key", list(DTMF_KEYS))
def test_every_key_0_9_star_pound_a_d_is_heard(key: str) -> None:
    counter = EventCounter()
    started, _ = counter.feed_event(1, key_press_events(key)[0], marker=True)
    assert started is not None and started.key == key
