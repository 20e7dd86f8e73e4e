"""RTP packet parsing and serialisation (RFC 3550 section 5.1)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr.media.rtp import RtpError, RtpHeaderWriter, RtpPacket, parse_header

# PCMU packet as sent by SIPp's g711a.pcap player style peers: V=2, M=1, PT=0, seq 0x1234, ts 0x01020304.
SIMPLE = bytes.fromhex("80801234 01020304 deadbeef") + b"\xff" * 160


def test_parses_fixed_header_and_payload() -> None:
    packet = RtpPacket.parse(SIMPLE)
    assert packet == RtpPacket(
        payload_type=0,
        sequence=0x1234,
        timestamp=0x01020304,
        ssrc=0xDEADBEEF,
        payload=b"\xff" * 160,
        marker=True,
    )
    assert packet.serialize() == SIMPLE


def test_csrc_list_is_skipped_not_rejected() -> None:
    data = bytes.fromhex("82000001 00000002 00000003 0000000a 0000000b") + b"audio"
    packet = RtpPacket.parse(data)
    assert packet.csrc == (10, 11)
    assert packet.payload == b"audio"
    assert packet.serialize() == data


def test_header_extension_is_skipped_not_rejected() -> None:
    # RFC 8285 one-byte header extension block: profile 0xBEDE, 1 word.
    data = bytes.fromhex("90080001 00000002 00000003 bede0001 10ff0000") + b"pcma"
    packet = RtpPacket.parse(data)
    assert packet.payload_type == 8
    assert packet.extension == (0xBEDE, bytes.fromhex("10ff0000"))
    assert packet.payload == b"pcma"
    assert packet.serialize() == data


def test_padding_is_removed_and_remembered() -> None:
    data = bytes.fromhex("a0000001 00000002 00000003") + b"abcd" + b"\x00\x00\x03"
    packet = RtpPacket.parse(data)
    assert packet.payload == b"abcd"
    assert packet.padding == 3
    assert packet.serialize() == data


def test_csrc_extension_and_padding_together() -> None:
    packet = RtpPacket(96, 7, 8, 9, b"x" * 5, marker=True, csrc=(1, 2, 3), extension=(0x1000, b"\x01" * 8), padding=4)
    assert RtpPacket.parse(packet.serialize()) == packet


@pytest.mark.parametrize("version", [0, 1, 3])
def test_rtp_version_other_than_2_is_rejected(version: int) -> None:
    data = bytes([version << 6]) + SIMPLE[1:]
    with pytest.raises(RtpError, match="version must be 2"):
        RtpPacket.parse(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (SIMPLE[:11], "truncated"),
        (bytes.fromhex("83000001 00000002 00000003 00000004"), "truncated"),  # 3 CSRCs announced, 1 there
        (bytes.fromhex("90000001 00000002 00000003 bede"), "extension"),  # extension header cut
        (bytes.fromhex("90000001 00000002 00000003 bede0002 00000000"), "truncated"),  # 2 words, 1 there
        (bytes.fromhex("a0000001 00000002 00000003 00"), "padding"),  # pad count 0
        (bytes.fromhex("a0000001 00000002 00000003 0005"), "padding"),  # 5 pad bytes, 2 there
        (bytes.fromhex("a0000001 00000002 00000003"), "padding"),  # padding bit, nothing after header
    ],
)
def test_truncated_or_inconsistent_packets_raise_rtp_error(data: bytes, reason: str) -> None:
    with pytest.raises(RtpError, match=reason):
        RtpPacket.parse(data)


def test_parse_header_honours_the_length_of_a_reused_buffer() -> None:
    buf = bytearray(2048)
    buf[: len(SIMPLE)] = SIMPLE
    assert parse_header(buf, len(SIMPLE)) == (0, True, 0x1234, 0x01020304, 0xDEADBEEF, 12, 172)
    with pytest.raises(RtpError):
        parse_header(buf, 11)


@pytest.mark.parametrize(
    "packet",
    [
        RtpPacket(128, 0, 0, 0, b""),
        RtpPacket(0, 65536, 0, 0, b""),
        RtpPacket(0, 0, 2**32, 0, b""),
        RtpPacket(0, 0, 0, -1, b""),
        RtpPacket(0, 0, 0, 0, b"", csrc=tuple(range(16))),
        RtpPacket(0, 0, 0, 0, b"", extension=(1, b"abc")),
        RtpPacket(0, 0, 0, 0, b"", padding=256),
    ],
)
def test_serialize_rejects_fields_out_of_range(packet: RtpPacket) -> None:
    with pytest.raises(RtpError):
        packet.serialize()


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none() | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b[: len(b) // 4 * 4])),
    padding=st.integers(0, 255),
)


@given(packets)
def test_serialize_then_parse_round_trips(packet: RtpPacket) -> None:
    assert RtpPacket.parse(packet.serialize()) == packet


@given(st.binary(max_size=120))
def test_arbitrary_bytes_either_parse_or_raise_rtp_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    assert len(packet.payload) + packet.padding <= len(data) - 12


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.booleans(), st.binary(min_size=160, max_size=160))
def test_header_writer_writes_what_the_parser_reads(seq: int, ts: int, marker: bool, payload: bytes) -> None:
    writer = RtpHeaderWriter(payload_type=8, ssrc=0x01020304, payload_size=160)
    packet = RtpPacket.parse(writer.write(seq, ts, marker, payload))
    assert packet == RtpPacket(8, seq, ts, 0x01020304, payload, marker=marker)


def test_header_writer_reuses_one_buffer_and_clears_the_marker() -> None:
    writer = RtpHeaderWriter(payload_type=0, ssrc=5, payload_size=160)
    first = writer.write(1, 160, True, b"\x01" * 160)
    second = writer.write(2, 320, False, b"\x02" * 160)
    assert first is second is writer.buffer
    assert len(second) == 172
    assert struct.unpack_from("!BBHII", second) == (0x80, 0x00, 2, 320, 5)
