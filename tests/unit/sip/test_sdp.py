"""SDP parsing/serialization and RFC 3264 offer/answer, fed literal SDP from RFC 3264, RFC 4317 and real peers."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.sip.sdp import (
    PCMA,
    PCMU,
    Codec,
    MediaDescription,
    NegotiatedMedia,
    SdpError,
    SessionDescription,
    answer_offer,
    build_offer,
    parse_answer,
)


def sdp(*lines: str, eol: str = "\r\n") -> bytes:
    """An SDP body from its lines, each ended by ``eol``."""
    return "".join(line + eol for line in lines).encode("utf-8")


def answer(offer: bytes, **kwargs: object) -> tuple[SessionDescription, NegotiatedMedia]:
    params: dict[str, object] = {
        "local_address": "192.0.2.10",
        "local_port": 40000,
        "session_id": 7,
        "session_version": 1,
    }
    params.update(kwargs)
    return answer_offer(SessionDescription.parse(offer), **params)  # type: ignore[arg-type]


ILBC = Codec("iLBC", 97)

# ---------------------------------------------------------------------------------------------------------------
# Literal SDP. RFC 4317 says its s= lines hold a single space; RFC 3264 writes s= empty.

RFC3264_10_1_OFFER = sdp(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 host.anywhere.com",
    "s=",
    "c=IN IP4 host.anywhere.com",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
    "m=video 51372 RTP/AVP 31",
    "a=rtpmap:31 H261/90000",
    "m=video 53000 RTP/AVP 32",
    "a=rtpmap:32 MPV/90000",
)
RFC3264_10_1_ANSWER = sdp(
    "v=0",
    "o=bob 2890844730 2890844730 IN IP4 host.example.com",
    "s=",
    "c=IN IP4 host.example.com",
    "t=0 0",
    "m=audio 49920 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
    "m=video 0 RTP/AVP 31",
    "m=video 53000 RTP/AVP 32",
    "a=rtpmap:32 MPV/90000",
)
RFC3264_10_1_SECOND_OFFER = sdp(
    "v=0",
    "o=bob 2890844730 2890844731 IN IP4 host.example.com",
    "s=",
    "c=IN IP4 host.example.com",
    "t=0 0",
    "m=audio 65422 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
    "m=video 0 RTP/AVP 31",
    "m=video 53000 RTP/AVP 32",
    "a=rtpmap:32 MPV/90000",
    "m=audio 51434 RTP/AVP 110",
    "a=rtpmap:110 telephone-events/8000",
    "a=recvonly",
)
RFC3264_10_2_OFFER = sdp(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 host.anywhere.com",
    "s=",
    "c=IN IP4 host.anywhere.com",
    "t=0 0",
    "m=audio 62986 RTP/AVP 0 4 18",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:4 G723/8000",
    "a=rtpmap:18 G729/8000",
    "a=inactive",
)
RFC3264_10_2_ANSWER = sdp(
    "v=0",
    "o=bob 2890844730 2890844731 IN IP4 host.example.com",
    "s=",
    "c=IN IP4 host.example.com",
    "t=0 0",
    "m=audio 54344 RTP/AVP 0 4",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:4 G723/8000",
    "a=inactive",
)
RFC4317_2_1_OFFER = sdp(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com",
    "s= ",
    "c=IN IP4 host.atlanta.example.com",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0 8 97",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:97 iLBC/8000",
    "m=video 51372 RTP/AVP 31 32",
    "a=rtpmap:31 H261/90000",
    "a=rtpmap:32 MPV/90000",
)
RFC4317_2_1_ANSWER = sdp(
    "v=0",
    "o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com",
    "s= ",
    "c=IN IP4 host.biloxi.example.com",
    "t=0 0",
    "m=audio 49174 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
    "m=video 49170 RTP/AVP 32",
    "a=rtpmap:32 MPV/90000",
)
RFC4317_2_3_ANSWER = sdp(
    "v=0",
    "o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com",
    "s= ",
    "c=IN IP4 host.biloxi.example.com",
    "t=0 0",
    "m=audio 49172 RTP/AVP 99",
    "a=rtpmap:99 iLBC/8000",
    "m=video 51374 RTP/AVP 31",
    "a=rtpmap:31 H261/90000",
)
RFC4317_2_4_OFFER = sdp(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com",
    "s= ",
    "c=IN IP4 host.atlanta.example.com",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0 97",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:97 iLBC/8000",
    "m=audio 49172 RTP/AVP 98",
    "a=rtpmap:98 telephone-event/8000",
    "a=sendonly",
)
RFC4317_2_6_OFFER = sdp(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com",
    "s= ",
    "c=IN IP4 host.atlanta.example.com",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
    "m=audio 51372 RTP/AVP 97 101",
    "a=rtpmap:97 iLBC/8000",
    "a=rtpmap:101 telephone-event/8000",
)
RFC4317_2_8_ANSWER = sdp(
    "v=0",
    "o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com",
    "s= ",
    "c=IN IP4 host.biloxi.example.com",
    "t=0 0",
    "m=audio 49174 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
    "m=video 49172 RTP/AVP 32",
    "c=IN IP4 otherhost.biloxi.example.com",
    "a=rtpmap:32 MPV/90000",
)
RFC4317_3_1_ANSWER = sdp(
    "v=0",
    "o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com",
    "s= ",
    "c=IN IP4 placeholder.biloxi.example.com",
    "t=0 0",
    "m=audio 49172 RTP/AVP 97",
    "a=rtpmap:97 iLBC/8000",
    "a=sendonly",
)
RFC4317_3_2_SECOND_OFFER = sdp(
    "v=0",
    "o=bob 2808844564 2808844565 IN IP4 host.biloxi.example.com",
    "s= ",
    "c=IN IP4 host.biloxi.example.com",
    "t=0 0",
    "m=audio 49172 RTP/AVP 97",
    "a=rtpmap:97 iLBC/8000",
    "a=sendonly",
    "m=audio 49174 RTP/AVP 98",
    "a=rtpmap:98 telephone-event/8000",
    "a=recvonly",
)
RFC4317_4_1_SECOND_OFFER = sdp(
    "v=0",
    "o=bob 2808844564 2808844565 IN IP4 host.biloxi.example.com",
    "s= ",
    "c=IN IP4 host.biloxi.example.com",
    "t=0 0",
    "m=audio 49170 RTP/AVP 97",
    "a=rtpmap:97 iLBC/8000",
    "m=audio 48282 RTP/AVP 98",
    "c=IN IP4 mediaserver.biloxi.example.com",
    "a=rtpmap:98 telephone-event/8000",
    "a=recvonly",
)
RFC4317_5_1_OFFER = sdp(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com",
    "s= ",
    "c=IN IP4 host.atlanta.example.com",
    "t=0 0",
)
RFC4317_5_2_OFFER = sdp(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com",
    "s= ",
    "c=IN IP4 0.0.0.0",
    "t=0 0",
    "m=audio 23442 RTP/AVP 97",
    "a=rtpmap:97 iLBC/8000",
)
RFC4317_5_3_ANSWER = sdp(
    "v=0",
    "o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com",
    "s= ",
    "c=IN IP4 0.0.0.0",
    "t=0 0",
    "m=audio 9322 RTP/AVP 97",
    "a=rtpmap:97 iLBC/8000",
)
# SIPp 3.6 `-sn uac` built-in scenario.
SIPP_UAC_OFFER = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
# What a baresip softphone with g711 offers: PCMU, PCMA, telephone-event 101, ptime, sendrecv, and extras.
BARESIP_OFFER = sdp(
    "v=0",
    "o=- 1195863463 3211225329 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=audio 10078 RTP/AVP 0 8 101",
    "b=AS:64",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=rtcp-rsize",
    "a=ptime:20",
    "a=sendrecv",
    "a=label:1",
    "a=ssrc:1461041045 cname:fa8e2f5d-9d1a-4d0b-b1b4-7a83c1c2c2ab",
)
# Telephone-event on dynamic PT 96, LF-only line endings and trailing whitespace, as some gateways send.
TE96_OFFER = sdp(
    "v=0",
    "o=gw 1 1 IN IP4 198.51.100.7  ",
    "s=call",
    "c=IN IP4 198.51.100.7",
    "t=0 0",
    "m=audio 30000 RTP/AVP 8 0 96\t",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:96 telephone-event/8000",
    "a=fmtp:96 0-16",
    "a=ptime:30",
    eol="\n",
)
G729_ONLY_OFFER = sdp(
    "v=0",
    "o=phone 4 4 IN IP4 203.0.113.5",
    "s=-",
    "c=IN IP4 203.0.113.5",
    "t=0 0",
    "m=audio 16384 RTP/AVP 18 101",
    "a=rtpmap:18 G729/8000",
    "a=fmtp:18 annexb=no",
    "a=rtpmap:101 telephone-event/8000",
)
IPV6_OFFER = sdp(
    "v=0",
    "o=- 20518 0 IN IP6 2001:db8::1",
    "s=-",
    "c=IN IP6 2001:db8::1",
    "t=0 0",
    "m=audio 5004 RTP/AVP 8",
)

VALID_EXAMPLES = [
    pytest.param(RFC3264_10_1_OFFER, id="rfc3264-10.1-offer"),
    pytest.param(RFC3264_10_1_ANSWER, id="rfc3264-10.1-answer"),
    pytest.param(RFC3264_10_1_SECOND_OFFER, id="rfc3264-10.1-second-offer"),
    pytest.param(RFC3264_10_2_OFFER, id="rfc3264-10.2-offer"),
    pytest.param(RFC3264_10_2_ANSWER, id="rfc3264-10.2-answer"),
    pytest.param(RFC4317_2_1_OFFER, id="rfc4317-2.1-offer"),
    pytest.param(RFC4317_2_1_ANSWER, id="rfc4317-2.1-answer"),
    pytest.param(RFC4317_2_3_ANSWER, id="rfc4317-2.3-answer"),
    pytest.param(RFC4317_2_4_OFFER, id="rfc4317-2.4-offer"),
    pytest.param(RFC4317_2_6_OFFER, id="rfc4317-2.6-offer"),
    pytest.param(RFC4317_2_8_ANSWER, id="rfc4317-2.8-answer"),
    pytest.param(RFC4317_3_1_ANSWER, id="rfc4317-3.1-answer"),
    pytest.param(RFC4317_3_2_SECOND_OFFER, id="rfc4317-3.2-second-offer"),
    pytest.param(RFC4317_4_1_SECOND_OFFER, id="rfc4317-4.1-second-offer"),
    pytest.param(RFC4317_5_1_OFFER, id="rfc4317-5.1-offer-no-media"),
    pytest.param(RFC4317_5_2_OFFER, id="rfc4317-5.2-offer-black-hole"),
    pytest.param(RFC4317_5_3_ANSWER, id="rfc4317-5.3-answer-black-hole"),
    pytest.param(SIPP_UAC_OFFER, id="sipp-uac"),
    pytest.param(BARESIP_OFFER, id="baresip"),
    pytest.param(TE96_OFFER, id="te96-lf-only"),
    pytest.param(G729_ONLY_OFFER, id="g729-only"),
    pytest.param(IPV6_OFFER, id="ipv6"),
]


# ---------------------------------------------------------------------------------------------------------------
# Parsing


def test_parse_reads_every_field_of_the_sipp_uac_offer() -> None:
    sd = SessionDescription.parse(SIPP_UAC_OFFER)
    assert (sd.version, sd.username, sd.session_id, sd.session_version) == (0, "user1", 53655765, 2353687637)
    assert (sd.nettype, sd.addrtype, sd.address) == ("IN", "IP4", "127.0.0.1")
    assert sd.session_name == "-"
    assert sd.connection == "127.0.0.1"
    assert sd.timing == [(0, 0)]
    assert sd.attributes == []
    [audio] = sd.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == ("audio", 6000, "RTP/AVP", ["0"])
    assert audio.connection is None
    assert audio.attributes == [("rtpmap", "0 PCMU/8000")]
    assert audio.rtpmap() == {0: ("PCMU", 8000, 1)}
    assert audio.direction == "sendrecv"
    assert audio.ptime is None


def test_parse_keeps_attributes_in_order_with_and_without_values() -> None:
    audio = SessionDescription.parse(BARESIP_OFFER).media[0]
    assert audio.attributes == [
        ("rtpmap", "0 PCMU/8000"),
        ("rtpmap", "8 PCMA/8000"),
        ("rtpmap", "101 telephone-event/8000"),
        ("fmtp", "101 0-15"),
        ("rtcp-rsize", None),
        ("ptime", "20"),
        ("sendrecv", None),
        ("label", "1"),
        ("ssrc", "1461041045 cname:fa8e2f5d-9d1a-4d0b-b1b4-7a83c1c2c2ab"),
    ]
    assert audio.bandwidths == [("AS", 64)]
    assert audio.rtpmap() == {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1), 101: ("telephone-event", 8000, 1)}
    assert audio.fmtp() == {101: "0-15"}
    assert audio.ptime == 20
    assert audio.direction == "sendrecv"
    assert audio.attribute("ssrc") == "1461041045 cname:fa8e2f5d-9d1a-4d0b-b1b4-7a83c1c2c2ab"
    assert audio.attribute("missing") is None


def test_parse_accepts_lf_only_line_endings_and_trailing_whitespace() -> None:
    sd = SessionDescription.parse(TE96_OFFER)
    assert sd.address == "198.51.100.7"
    assert sd.media[0].formats == ["8", "0", "96"]
    assert sd.media[0].rtpmap()[96] == ("telephone-event", 8000, 1)
    assert sd.media[0].ptime == 30
    assert SessionDescription.parse(TE96_OFFER.replace(b"\n", b"\r\n")) == sd


def test_parse_accepts_str_as_well_as_bytes() -> None:
    assert SessionDescription.parse(SIPP_UAC_OFFER.decode()) == SessionDescription.parse(SIPP_UAC_OFFER)


def test_parse_recognises_static_payload_types_without_rtpmap() -> None:
    media = SessionDescription.parse(
        sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0", "m=audio 4000 RTP/AVP 8 0 18 96")
    ).media[0]
    # 96 is dynamic and has no a=rtpmap: it is not recognised as anything.
    assert media.rtpmap() == {8: ("PCMA", 8000, 1), 0: ("PCMU", 8000, 1), 18: ("G729", 8000, 1)}


def test_parse_reads_multiple_media_sections_and_media_level_connection() -> None:
    sd = SessionDescription.parse(RFC4317_2_8_ANSWER)
    audio, video = sd.media
    assert audio.connection is None
    assert sd.connection_of(audio) == "host.biloxi.example.com"
    assert video.connection == "otherhost.biloxi.example.com"
    assert sd.connection_of(video) == "otherhost.biloxi.example.com"
    assert (video.media, video.port, video.formats) == ("video", 49172, ["32"])
    assert video.rtpmap() == {32: ("MPV", 90000, 1)}


def test_parse_rfc3264_rejected_stream_keeps_port_zero_and_formats() -> None:
    sd = SessionDescription.parse(RFC3264_10_1_ANSWER)
    assert [(m.media, m.port, m.formats) for m in sd.media] == [
        ("audio", 49920, ["0"]),
        ("video", 0, ["31"]),
        ("video", 53000, ["32"]),
    ]
    assert sd.session_name == ""


def test_parse_reads_ipv6_connection() -> None:
    sd = SessionDescription.parse(IPV6_OFFER)
    assert (sd.addrtype, sd.address) == ("IP6", "2001:db8::1")
    assert (sd.connection_addrtype, sd.connection) == ("IP6", "2001:db8::1")


def test_parse_reads_port_count_and_multicast_style_connection() -> None:
    sd = SessionDescription.parse(
        sdp(
            "v=0",
            "o=- 1 1 IN IP4 10.0.0.1",
            "s=-",
            "c=IN IP4 224.2.1.1/127",
            "t=0 0",
            "m=audio 49170/2 RTP/AVP 0",
            "c=IN IP4 224.2.1.2/127",
            "c=IN IP4 224.2.1.3/127",
        )
    )
    media = sd.media[0]
    assert (media.port, media.port_count) == (49170, 2)
    assert media.connection == "224.2.1.2/127"
    assert media.extra_lines == [("c", "IN IP4 224.2.1.3/127")]
    assert SessionDescription.parse(sd.serialize()) == sd


def test_parse_keeps_unknown_line_types_and_informational_lines() -> None:
    sd = SessionDescription.parse(
        sdp(
            "v=0",
            "o=- 1 1 IN IP4 10.0.0.1",
            "s=Seminar",
            "x=vendor extension",
            "i=A session",
            "e=j.doe@example.com (Jane Doe)",
            "c=IN IP4 10.0.0.1",
            "t=0 0",
            "a=recvonly",
            "m=audio 4000 RTP/AVP 0",
            "i=audio stream",
            "y=",
            "k=prompt",
        )
    )
    # Kept, in RFC 4566 order (unknown types last).
    assert sd.extra_lines == [("i", "A session"), ("e", "j.doe@example.com (Jane Doe)"), ("x", "vendor extension")]
    assert sd.media[0].extra_lines == [("i", "audio stream"), ("k", "prompt"), ("y", "")]
    assert sd.attributes == [("recvonly", None)]
    text = sd.serialize().decode()
    assert text.index("i=A session") < text.index("e=j.doe") < text.index("c=IN") < text.index("x=vendor")
    assert text.index("x=vendor") < text.index("m=audio")


def test_parse_reads_session_level_direction_for_media_without_one() -> None:
    sd = SessionDescription.parse(
        sdp(
            "v=0",
            "o=- 1 1 IN IP4 10.0.0.1",
            "s=-",
            "c=IN IP4 10.0.0.1",
            "t=0 0",
            "a=sendonly",
            "m=audio 4000 RTP/AVP 0",
            "m=audio 4002 RTP/AVP 0",
            "a=inactive",
        )
    )
    assert sd.media[0].direction == "sendrecv"  # media-level view only
    assert sd.direction_of(sd.media[0]) == "sendonly"
    assert sd.direction_of(sd.media[1]) == "inactive"


def test_parse_falls_back_to_latin1_for_a_body_that_is_not_utf8() -> None:
    sd = SessionDescription.parse(b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=Caf\xe9\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n")
    assert sd.session_name == "Caf\u00e9"


def test_parse_allows_a_rejected_stream_without_any_connection_address() -> None:
    sd = SessionDescription.parse(
        sdp(
            "v=0",
            "o=- 1 1 IN IP4 10.0.0.1",
            "s=-",
            "t=0 0",
            "m=video 0 RTP/AVP 31",
            "m=audio 4000 RTP/AVP 0",
            "c=IN IP4 10.0.0.2",
        )
    )
    assert [m.port for m in sd.media] == [0, 4000]


MINIMAL_HEAD = ("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"\r\n\r\n", "empty", id="blank-lines-only"),
        pytest.param(sdp("o=- 1 1 IN IP4 10.0.0.1", "v=0", "s=-", "t=0 0"), "v=0", id="first-line-not-v"),
        pytest.param(sdp("v=1", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "t=0 0"), "v=0", id="version-1"),
        pytest.param(sdp("v=0", "s=-", "t=0 0"), "o=", id="no-origin"),
        pytest.param(sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "t=0 0"), "s=", id="no-session-name"),
        pytest.param(sdp("v=0", "o=- 1 IN IP4 10.0.0.1", "s=-"), "o=", id="origin-5-fields"),
        pytest.param(sdp("v=0", "o=- abc 1 IN IP4 10.0.0.1", "s=-"), "sess-id", id="origin-id-not-number"),
        pytest.param(sdp("v=0", "o=- \u0661 1 IN IP4 10.0.0.1", "s=-"), "sess-id", id="origin-id-arabic-digit"),
        pytest.param(sdp("v=0", "o=- 1 1 IN IP4 a", "o=- 1 1 IN IP4 a", "s=-"), "o=", id="two-origins"),
        pytest.param(sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "s=-"), "s=", id="two-session-names"),
        pytest.param(sdp(*MINIMAL_HEAD, "v=0"), "v=", id="second-v"),
        pytest.param(sdp(*MINIMAL_HEAD, "hello"), "<type>=<value>", id="line-without-equals"),
        pytest.param(sdp(*MINIMAL_HEAD, "ab=c"), "<type>=<value>", id="two-char-type"),
        pytest.param(sdp(*MINIMAL_HEAD, "1=c"), "<type>=<value>", id="digit-type"),
        pytest.param(sdp(*MINIMAL_HEAD, " a=sendrecv"), "<type>=<value>", id="leading-space"),
        pytest.param(sdp(*MINIMAL_HEAD, "a=x\x00y"), "NUL", id="nul"),
        pytest.param(sdp(*MINIMAL_HEAD, "a=x\ry"), "CR", id="bare-cr"),
        pytest.param(sdp(*MINIMAL_HEAD, "a="), "attribute name", id="empty-attribute"),
        pytest.param(sdp(*MINIMAL_HEAD, "a=:x"), "attribute name", id="attribute-without-name"),
        pytest.param(sdp(*MINIMAL_HEAD, "c=IN IP4 10.0.0.2"), "c=", id="two-session-connections"),
        pytest.param(sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "c=IN 10.0.0.1", "t=0 0"), "c=", id="connection-2-fields"),
        pytest.param(sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "c=IN IP4 a", "t=now"), "t=", id="timing-1-field"),
        pytest.param(sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "c=IN IP4 a", "t=0 x"), "stop", id="timing-not-number"),
        pytest.param(sdp(*MINIMAL_HEAD, "b=AS"), "b=", id="bandwidth-without-colon"),
        pytest.param(sdp(*MINIMAL_HEAD, "b=AS:lots"), "bandwidth", id="bandwidth-not-number"),
        pytest.param(sdp(*MINIMAL_HEAD, "m=audio 4000 RTP/AVP"), "m=", id="media-without-formats"),
        pytest.param(sdp(*MINIMAL_HEAD, "m=audio RTP/AVP 0"), "m=", id="media-without-port"),
        pytest.param(sdp(*MINIMAL_HEAD, "m=audio abc RTP/AVP 0"), "port", id="port-not-number"),
        pytest.param(sdp(*MINIMAL_HEAD, "m=audio -1 RTP/AVP 0"), "port", id="port-negative"),
        pytest.param(sdp(*MINIMAL_HEAD, "m=audio 65536 RTP/AVP 0"), "65535", id="port-too-big"),
        pytest.param(sdp(*MINIMAL_HEAD, "m=audio 4000/x RTP/AVP 0"), "number of ports", id="port-count-bad"),
        pytest.param(sdp(*MINIMAL_HEAD, "m=audio 4000 RTP/AVP 0 PCMA"), "payload type", id="format-not-number"),
        pytest.param(sdp(*MINIMAL_HEAD, "m=audio 4000 RTP/AVP 128"), "127", id="format-too-big"),
        pytest.param(
            sdp(*MINIMAL_HEAD, "m=audio 4000 RTP/AVP 0", "o=- 1 1 IN IP4 a"), "session-level", id="origin-in-media"
        ),
        pytest.param(sdp(*MINIMAL_HEAD, "m=audio 4000 RTP/AVP 0", "t=0 0"), "session-level", id="timing-in-media"),
        pytest.param(
            sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "t=0 0", "m=audio 4000 RTP/AVP 0"),
            "c= address",
            id="no-connection-for-accepted-stream",
        ),
        pytest.param(
            sdp(
                "v=0",
                "o=- 1 1 IN IP4 a",
                "s=-",
                "t=0 0",
                "m=audio 4000 RTP/AVP 0",
                "c=IN IP4 a",
                "m=audio 4002 RTP/AVP 0",
            ),
            "media stream 2",
            id="second-stream-without-connection",
        ),
        pytest.param(sdp(*MINIMAL_HEAD, "m=audio 4000 RTP/AVP 96", "a=rtpmap:96"), "rtpmap", id="rtpmap-no-value"),
        pytest.param(sdp(*MINIMAL_HEAD, "m=audio 4000 RTP/AVP 96", "a=rtpmap:96 opus"), "rtpmap", id="rtpmap-no-rate"),
        pytest.param(
            sdp(*MINIMAL_HEAD, "m=audio 4000 RTP/AVP 96", "a=rtpmap:x opus/48000"), "rtpmap", id="rtpmap-pt-not-number"
        ),
        pytest.param(
            sdp(*MINIMAL_HEAD, "m=audio 4000 RTP/AVP 96", "a=rtpmap:200 opus/48000"), "rtpmap", id="rtpmap-pt-too-big"
        ),
    ],
)
def test_malformed_sdp_raises_sdp_error_400(body: bytes, fragment: str) -> None:
    with pytest.raises(SdpError) as caught:
        SessionDescription.parse(body)
    assert caught.value.status == 400
    assert fragment in caught.value.reason


def test_sdp_error_reason_is_safe_inside_a_quoted_sip_header() -> None:
    error = SdpError(400, 'bad "value"\r\nInjected: yes \\ ' + "x" * 400)
    assert '"' not in error.reason
    assert "\\" not in error.reason
    assert "\r" not in error.reason and "\n" not in error.reason
    assert len(error.reason) <= 300
    assert str(error).startswith("400 bad 'value'")


def test_sdp_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(SdpError(488, "no common codec")))
    assert (error.status, error.reason) == (488, "no common codec")


# ---------------------------------------------------------------------------------------------------------------
# Serializing


@pytest.mark.parametrize("body", VALID_EXAMPLES)
def test_parse_serialize_parse_round_trips(body: bytes) -> None:
    parsed = SessionDescription.parse(body)
    text = parsed.serialize()
    assert SessionDescription.parse(text) == parsed
    assert text.endswith(b"\r\n")
    assert b"\n" not in text.replace(b"\r\n", b"")


def test_serialize_reproduces_a_crlf_body_in_rfc_order_byte_for_byte() -> None:
    assert SessionDescription.parse(BARESIP_OFFER).serialize() == BARESIP_OFFER
    assert SessionDescription.parse(SIPP_UAC_OFFER).serialize() == SIPP_UAC_OFFER
    assert SessionDescription.parse(RFC4317_2_8_ANSWER).serialize() == RFC4317_2_8_ANSWER


def test_serialize_writes_an_empty_session_name_as_a_single_space() -> None:
    assert b"\r\ns= \r\n" in SessionDescription.parse(RFC3264_10_1_OFFER).serialize()


def test_serialize_refuses_a_field_that_would_inject_a_line() -> None:
    sd = SessionDescription.parse(SIPP_UAC_OFFER)
    sd.session_name = "x\r\nm=video 1 RTP/AVP 31"
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        sd.serialize()


# ---------------------------------------------------------------------------------------------------------------
# Answering offers


def test_answer_to_sipp_uac_offer_is_exactly_pcmu_sendrecv() -> None:
    ans, neg = answer(SIPP_UAC_OFFER, local_address="127.0.0.1", local_port=40000, session_id=1, session_version=1)
    assert ans.serialize() == sdp(
        "v=0",
        "o=ivr 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=sendrecv",
    )
    assert neg == NegotiatedMedia(
        codec=PCMU,
        telephone_event_pt=None,
        remote_address="127.0.0.1",
        remote_port=6000,
        ptime=20,
        direction="sendrecv",
        on_hold=False,
    )
    assert neg.sends and neg.receives


def test_answer_to_baresip_offer_keeps_caller_order_and_telephone_event_101() -> None:
    ans, neg = answer(BARESIP_OFFER)
    assert neg.codec == PCMU
    assert neg.codecs == (PCMU, PCMA)
    assert neg.telephone_event_pt == 101
    assert (neg.remote_address, neg.remote_port, neg.ptime, neg.direction, neg.on_hold) == (
        "127.0.0.1",
        10078,
        20,
        "sendrecv",
        False,
    )
    [audio] = ans.media
    assert (audio.port, audio.proto, audio.formats) == (40000, "RTP/AVP", ["0", "8", "101"])
    assert audio.attributes == [
        ("rtpmap", "0 PCMU/8000"),
        ("rtpmap", "8 PCMA/8000"),
        ("rtpmap", "101 telephone-event/8000"),
        ("fmtp", "101 0-15"),
        ("ptime", "20"),
        ("sendrecv", None),
    ]
    assert (ans.username, ans.session_id, ans.session_version, ans.address) == ("ivr", 7, 1, "192.0.2.10")
    assert ans.connection == "192.0.2.10"


def test_answer_uses_the_offers_telephone_event_payload_type_96() -> None:
    ans, neg = answer(TE96_OFFER)
    assert neg.telephone_event_pt == 96
    assert ans.media[0].formats == ["8", "0", "96"]
    assert ans.media[0].fmtp() == {96: "0-15"}
    assert ans.media[0].rtpmap()[96] == ("telephone-event", 8000, 1)


def test_answer_chooses_pcma_when_the_caller_prefers_it() -> None:
    _ans, neg = answer(TE96_OFFER)
    assert neg.codec == PCMA
    assert neg.codecs == (PCMA, PCMU)


def test_answer_echoes_the_offers_ptime() -> None:
    ans, neg = answer(TE96_OFFER)
    assert neg.ptime == 30
    assert ans.media[0].ptime == 30


def test_answer_lists_only_codecs_we_support() -> None:
    ans, neg = answer(BARESIP_OFFER, supported=(PCMA,))
    assert neg.codec == PCMA
    assert ans.media[0].formats == ["8", "101"]


def test_answer_uses_the_offers_dynamic_payload_type_for_a_supported_codec() -> None:
    offer = sdp(
        *MINIMAL_HEAD, "m=audio 4000 RTP/AVP 96 97", "a=rtpmap:96 pcmu/8000", "a=rtpmap:97 TELEPHONE-EVENT/8000"
    )
    ans, neg = answer(offer)
    assert neg.codec == Codec("PCMU", 96)
    assert neg.telephone_event_pt == 97
    assert ans.media[0].attributes[:2] == [("rtpmap", "96 PCMU/8000"), ("rtpmap", "97 telephone-event/8000")]


def test_answer_ignores_telephone_event_at_another_clock_rate() -> None:
    offer = sdp(
        *MINIMAL_HEAD,
        "m=audio 4000 RTP/AVP 0 110 126",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:126 telephone-event/8000",
    )
    ans, neg = answer(offer)
    assert neg.telephone_event_pt == 126
    assert ans.media[0].formats == ["0", "126"]


def test_answer_does_not_guess_a_dynamic_payload_type_without_rtpmap() -> None:
    ans, neg = answer(sdp(*MINIMAL_HEAD, "m=audio 4000 RTP/AVP 0 101"))
    assert neg.telephone_event_pt is None
    assert ans.media[0].formats == ["0"]


def test_answer_rejects_g729_only_offer_with_488_naming_the_codec() -> None:
    with pytest.raises(SdpError) as caught:
        answer(G729_ONLY_OFFER)
    assert caught.value.status == 488
    assert caught.value.reason.startswith("no common codec: offered")
    assert "G729/8000" in caught.value.reason
    assert "PCMU/8000" in caught.value.reason


def test_answer_rejects_an_offer_without_media_with_488() -> None:
    with pytest.raises(SdpError) as caught:
        answer(RFC4317_5_1_OFFER)
    assert caught.value.status == 488


def test_answer_rejects_video_only_offer_with_488() -> None:
    with pytest.raises(SdpError) as caught:
        answer(sdp(*MINIMAL_HEAD, "m=video 5000 RTP/AVP 31", "a=rtpmap:31 H261/90000"))
    assert caught.value.status == 488
    assert "video RTP/AVP (H261/90000)" in caught.value.reason


def test_answer_rejects_audio_over_srtp_with_488() -> None:
    with pytest.raises(SdpError) as caught:
        answer(sdp(*MINIMAL_HEAD, "m=audio 5000 RTP/SAVP 0 8"))
    assert caught.value.status == 488
    assert "RTP/SAVP" in caught.value.reason


def test_answer_rejects_a_disabled_audio_stream_with_488() -> None:
    with pytest.raises(SdpError) as caught:
        answer(sdp(*MINIMAL_HEAD, "m=audio 0 RTP/AVP 0"))
    assert caught.value.status == 488


def test_answer_to_rfc3264_10_1_accepts_audio_and_rejects_both_video_streams() -> None:
    ans, neg = answer(RFC3264_10_1_OFFER)
    assert [(m.media, m.port, m.proto, m.formats) for m in ans.media] == [
        ("audio", 40000, "RTP/AVP", ["0"]),
        ("video", 0, "RTP/AVP", ["31"]),
        ("video", 0, "RTP/AVP", ["32"]),
    ]
    assert (neg.codec, neg.remote_address, neg.remote_port) == (PCMU, "host.anywhere.com", 49170)


def test_answer_to_rfc3264_10_1_second_offer_rejects_the_second_audio_stream() -> None:
    ans, neg = answer(RFC3264_10_1_SECOND_OFFER)
    assert [m.port for m in ans.media] == [40000, 0, 0, 0]
    assert ans.media[3].formats == ["110"]
    assert neg.remote_port == 65422
    # "telephone-events" (sic, RFC 3264) is not telephone-event, and it is in another m-line anyway.
    assert neg.telephone_event_pt is None


def test_answer_to_rfc3264_10_2_inactive_offer_is_inactive_and_held() -> None:
    ans, neg = answer(RFC3264_10_2_OFFER)
    assert ans.media[0].formats == ["0"]
    assert ans.media[0].direction == "inactive"
    assert (neg.direction, neg.on_hold, neg.sends, neg.receives) == ("inactive", True, False, False)


def test_answer_to_rfc4317_2_1_lists_pcmu_and_pcma_and_rejects_video() -> None:
    ans, neg = answer(RFC4317_2_1_OFFER)
    assert ans.media[0].formats == ["0", "8"]
    assert (ans.media[1].media, ans.media[1].port, ans.media[1].formats) == ("video", 0, ["31", "32"])
    assert neg.codec == PCMU
    assert ans.timing == [(0, 0)]


def test_answer_to_rfc4317_2_4_rejects_the_separate_telephone_event_stream() -> None:
    ans, neg = answer(RFC4317_2_4_OFFER)
    assert [(m.port, m.formats) for m in ans.media] == [(40000, ["0"]), (0, ["98"])]
    assert neg.telephone_event_pt is None
    assert neg.on_hold is False  # the sendonly belongs to the rejected stream


def test_answer_to_rfc4317_2_6_accepts_the_first_audio_stream_only() -> None:
    ans, neg = answer(RFC4317_2_6_OFFER)
    assert [(m.port, m.formats) for m in ans.media] == [(40000, ["0"]), (0, ["97", "101"])]
    assert neg.remote_port == 49170


def test_answer_accepts_the_first_audio_stream_with_a_common_codec() -> None:
    # RFC 4317 2.6 with the streams swapped: the iLBC stream comes first, and only the PCMU one is usable.
    offer = sdp(
        *MINIMAL_HEAD,
        "m=audio 51372 RTP/AVP 97 101",
        "a=rtpmap:97 iLBC/8000",
        "a=rtpmap:101 telephone-event/8000",
        "m=audio 49170 RTP/AVP 0",
    )
    ans, neg = answer(offer)
    assert [(m.port, m.formats) for m in ans.media] == [(0, ["97", "101"]), (40000, ["0"])]
    assert (neg.remote_port, neg.telephone_event_pt) == (49170, None)


def test_answer_accepts_any_supported_codec_such_as_ilbc() -> None:
    ans, neg = answer(RFC4317_2_4_OFFER, supported=(ILBC,))
    assert neg.codec == ILBC
    assert ans.media[0].formats == ["97"]


def test_answer_rejects_unknown_media_and_other_protocols_with_port_zero() -> None:
    offer = sdp(
        *MINIMAL_HEAD,
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "m=audio 4000 RTP/AVP 0",
        "m=image 4002 udptl t38",
        "m=text 4004 RTP/AVP 98",
        "a=rtpmap:98 t140/1000",
    )
    ans, _neg = answer(offer)
    assert [(m.media, m.port, m.proto, m.formats) for m in ans.media] == [
        ("application", 0, "UDP/DTLS/SCTP", ["webrtc-datachannel"]),
        ("audio", 40000, "RTP/AVP", ["0"]),
        ("image", 0, "udptl", ["t38"]),
        ("text", 0, "RTP/AVP", ["98"]),
    ]


def test_answer_copies_the_offers_timing() -> None:
    offer = sdp(
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "c=IN IP4 10.0.0.1",
        "t=3034423619 3042462419",
        "m=audio 4000 RTP/AVP 0",
    )
    assert answer(offer)[0].timing == [(3034423619, 3042462419)]


def test_answer_sends_to_the_media_level_address_over_the_session_level_one() -> None:
    offer = sdp(*MINIMAL_HEAD, "m=audio 4000 RTP/AVP 0", "c=IN IP4 10.9.9.9")
    assert answer(offer)[1].remote_address == "10.9.9.9"


def test_answer_to_ipv6_offer_from_ipv6_address() -> None:
    ans, neg = answer(IPV6_OFFER, local_address="2001:db8::2")
    assert (neg.remote_address, neg.remote_port, neg.codec) == ("2001:db8::1", 5004, PCMA)
    text = ans.serialize()
    assert b"o=ivr 7 1 IN IP6 2001:db8::2\r\n" in text
    assert b"c=IN IP6 2001:db8::2\r\n" in text


@pytest.mark.parametrize(
    ("offered", "ours", "on_hold"),
    [
        ("sendrecv", "sendrecv", False),
        ("sendonly", "recvonly", True),
        ("recvonly", "sendonly", False),
        ("inactive", "inactive", True),
    ],
)
def test_answer_direction_follows_the_rfc3264_table(offered: str, ours: str, on_hold: bool) -> None:
    ans, neg = answer(sdp(*MINIMAL_HEAD, "m=audio 4000 RTP/AVP 0", f"a={offered}"))
    assert ans.media[0].direction == ours
    assert neg.direction == ours
    assert neg.on_hold is on_hold


def test_hold_by_sendonly_lets_us_receive_music_but_not_send() -> None:
    # RFC 4317 3.2 second offer, answered by an iLBC-capable endpoint: the first stream is put on hold.
    ans, neg = answer(RFC4317_3_2_SECOND_OFFER, supported=(ILBC,))
    assert [m.port for m in ans.media] == [40000, 0]
    assert (neg.direction, neg.on_hold, neg.sends, neg.receives) == ("recvonly", True, False, True)


def test_hold_by_session_level_sendonly() -> None:
    offer = sdp(*MINIMAL_HEAD, "a=sendonly", "m=audio 4000 RTP/AVP 0")
    ans, neg = answer(offer)
    assert neg.on_hold is True
    assert ans.media[0].direction == "recvonly"


def test_hold_by_connection_address_0_0_0_0() -> None:
    # RFC 4317 5.2 (black-holed offer), answered by an iLBC-capable endpoint.
    ans, neg = answer(RFC4317_5_2_OFFER, supported=(ILBC,))
    assert neg.remote_address == "0.0.0.0"
    assert neg.on_hold is True
    assert neg.sends is False
    assert ans.media[0].direction == "sendrecv"


def test_hold_by_ipv6_unspecified_address() -> None:
    offer = sdp("v=0", "o=- 1 1 IN IP6 ::1", "s=-", "c=IN IP6 ::", "t=0 0", "m=audio 4000 RTP/AVP 0")
    assert answer(offer)[1].on_hold is True


def test_answer_argument_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        answer(SIPP_UAC_OFFER, supported=())
    with pytest.raises(ValueError):
        answer(SIPP_UAC_OFFER, local_port=0)
    with pytest.raises(ValueError):
        answer(SIPP_UAC_OFFER, username="a b")


def test_answer_parses_back_to_the_same_negotiation_from_the_callers_side() -> None:
    ans, neg = answer(BARESIP_OFFER)
    caller_view = parse_answer(SessionDescription.parse(ans.serialize()), offered=(PCMU, PCMA))
    assert (caller_view.codec, caller_view.telephone_event_pt) == (neg.codec, neg.telephone_event_pt)
    assert (caller_view.remote_address, caller_view.remote_port) == ("192.0.2.10", 40000)


# ---------------------------------------------------------------------------------------------------------------
# Our own offers, and the answers to them


def test_build_offer_writes_pcmu_pcma_telephone_event_ptime_and_direction() -> None:
    offer = build_offer(local_address="192.0.2.10", local_port=40000, session_id=5, session_version=6)
    assert offer.serialize() == sdp(
        "v=0",
        "o=ivr 5 6 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
        "a=sendrecv",
    )


def test_build_offer_options() -> None:
    offer = build_offer(
        local_address="::1",
        local_port=4000,
        codecs=(PCMA,),
        telephone_event_pt=None,
        ptime=30,
        session_id=1,
        session_version=2,
        username="sim",
        direction="sendonly",
    )
    text = offer.serialize()
    assert b"o=sim 1 2 IN IP6 ::1\r\n" in text
    assert b"m=audio 4000 RTP/AVP 8\r\n" in text
    assert b"telephone-event" not in text
    assert offer.media[0].ptime == 30
    assert offer.media[0].direction == "sendonly"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"codecs": ()},
        {"direction": "both"},
        {"telephone_event_pt": 8},
        {"telephone_event_pt": 128},
        {"codecs": (PCMU, Codec("X", 0))},
        {"ptime": 0},
        {"local_port": 70000},
        {"local_address": ""},
    ],
)
def test_build_offer_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    params: dict[str, object] = {"local_address": "10.0.0.1", "local_port": 4000, "session_id": 1, "session_version": 1}
    params.update(kwargs)
    with pytest.raises(ValueError):
        build_offer(**params)  # type: ignore[arg-type]


def test_our_offer_answered_by_ourselves_negotiates_pcmu_and_telephone_event() -> None:
    offer = build_offer(local_address="10.0.0.1", local_port=4000, session_id=1, session_version=1)
    ans, neg = answer_offer(
        SessionDescription.parse(offer.serialize()),
        local_address="10.0.0.2",
        local_port=5000,
        session_id=9,
        session_version=9,
    )
    assert (neg.codec, neg.telephone_event_pt, neg.remote_port) == (PCMU, 101, 4000)
    mine = parse_answer(SessionDescription.parse(ans.serialize()), offered=(PCMU, PCMA))
    assert (mine.codec, mine.telephone_event_pt, mine.remote_address, mine.remote_port) == (PCMU, 101, "10.0.0.2", 5000)


def test_parse_answer_reads_rfc4317_2_1_answer() -> None:
    neg = parse_answer(SessionDescription.parse(RFC4317_2_1_ANSWER), offered=(PCMU, PCMA, ILBC))
    assert (neg.codec, neg.remote_address, neg.remote_port) == (PCMU, "host.biloxi.example.com", 49174)
    assert (neg.direction, neg.on_hold, neg.ptime, neg.telephone_event_pt) == ("sendrecv", False, 20, None)


def test_parse_answer_uses_the_answerers_payload_type_and_preference() -> None:
    ans = sdp(*MINIMAL_HEAD, "m=audio 5000 RTP/AVP 8 0 100", "a=rtpmap:100 telephone-event/8000", "a=ptime:40")
    neg = parse_answer(SessionDescription.parse(ans), offered=(PCMU, PCMA))
    assert (neg.codec, neg.codecs, neg.telephone_event_pt, neg.ptime) == (PCMA, (PCMA, PCMU), 100, 40)


def test_parse_answer_sendonly_answer_puts_us_on_hold() -> None:
    # RFC 4317 3.1: Bob answers Alice's offer sendonly, holding her.
    neg = parse_answer(SessionDescription.parse(RFC4317_3_1_ANSWER), offered=(PCMU, ILBC))
    assert (neg.codec, neg.direction, neg.on_hold) == (ILBC, "recvonly", True)


def test_parse_answer_black_holed_answer_means_do_not_send() -> None:
    # RFC 4317 5.3: Bob answers with c=0.0.0.0.
    neg = parse_answer(SessionDescription.parse(RFC4317_5_3_ANSWER), offered=(ILBC,))
    assert (neg.direction, neg.on_hold, neg.sends) == ("sendrecv", True, False)


def test_parse_answer_recvonly_answer_means_we_only_send() -> None:
    ans = sdp(*MINIMAL_HEAD, "m=audio 5000 RTP/AVP 0", "a=recvonly")
    neg = parse_answer(SessionDescription.parse(ans), offered=(PCMU,))
    assert (neg.direction, neg.on_hold, neg.sends, neg.receives) == ("sendonly", False, True, False)


def test_parse_answer_picking_a_codec_we_did_not_offer_is_488() -> None:
    # RFC 4317 2.3: the answer picks iLBC, which we did not offer.
    with pytest.raises(SdpError) as caught:
        parse_answer(SessionDescription.parse(RFC4317_2_3_ANSWER), offered=(PCMU, PCMA))
    assert caught.value.status == 488
    assert "iLBC/8000" in caught.value.reason


def test_parse_answer_rejecting_the_audio_stream_is_488() -> None:
    ans = sdp(*MINIMAL_HEAD, "m=audio 0 RTP/AVP 0")
    with pytest.raises(SdpError) as caught:
        parse_answer(SessionDescription.parse(ans), offered=(PCMU,))
    assert caught.value.status == 488


def test_negotiated_media_defaults_codecs_to_the_chosen_codec() -> None:
    neg = NegotiatedMedia(PCMA, None, "10.0.0.1", 4000, 20, "sendrecv", False)
    assert neg.codecs == (PCMA,)


def test_media_description_can_be_built_positionally_and_serialized() -> None:
    sd = SessionDescription(connection="10.0.0.1", media=[MediaDescription("audio", 4000, "RTP/AVP", ["0"])])
    reparsed = SessionDescription.parse(sd.serialize())
    assert reparsed.serialize() == sd.serialize()
    assert reparsed.connection_addrtype == "IP4"  # inferred from the address when left None
    assert reparsed.media[0].rtpmap() == {0: ("PCMU", 8000, 1)}


# ---------------------------------------------------------------------------------------------------------------
# Properties

HEADS = [
    list(MINIMAL_HEAD),
    ["v=0", "o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com", "s= ", "c=IN IP6 ::1", "t=0 0"],
    ["v=0", "o=- 1 1 IN IP4 a", "s=-", "t=0 0"],  # no session-level c=
    ["v=0", "o=- 1 1 IN IP4 a", "s=-", "c=IN IP4 0.0.0.0"],  # no t=
]
SESSION_LINES = [
    "b=AS:64",
    "i=info",
    "k=clear:secret",
    "r=7d 1h 0 25h",
    "x=unknown",
    "a=sendonly",
    "a=foo:",
    "a=ptime:30",
    "e=j@example.com",
]
MEDIA_LINES = [
    "m=audio 49170 RTP/AVP 0 8 101",
    "m=audio 5004/2 RTP/AVP 96 97",
    "m=audio 6000 RTP/AVP 8 0 96",
    "m=audio 0 RTP/AVP 0",
    "m=audio 4000 RTP/SAVP 0",
    "m=audio 4000 RTP/AVP 18",
    "m=video 51372 RTP/AVP 31 32",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
]
MEDIA_ATTRIBUTE_LINES = [
    "c=IN IP4 10.0.0.1",
    "c=IN IP6 ::1",
    "c=IN IP4 0.0.0.0",
    "b=AS:64",
    "i=info",
    "x=unknown",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 pcma/8000",
    "a=rtpmap:96 telephone-event/8000",
    "a=rtpmap:96 PCMU/8000",
    "a=rtpmap:97 opus/48000/2",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:20",
    "a=ptime:abc",
    "a=sendrecv",
    "a=sendonly",
    "a=recvonly",
    "a=inactive",
    "a=rtcp-mux",
    "a=foo:",
]


@st.composite
def sdp_like_bodies(draw: st.DrawFn) -> bytes:
    """Mostly plausible SDP (a valid head, session lines, media sections) sprinkled with random lines."""
    random_line = st.builds(
        lambda kind, value: f"{kind}={value}",
        st.sampled_from("aaaaaaikxzbcmtvos"),
        st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=20),
    )

    def some(pool: list[str], max_size: int) -> list[str]:
        # About one line in ten is random: enough to reach the error paths, few enough to reach answer_offer.
        line = st.integers(0, 9).flatmap(lambda n: random_line if n == 0 else st.sampled_from(pool))
        return draw(st.lists(line, max_size=max_size))

    lines = list(draw(st.sampled_from(HEADS))) if draw(st.integers(0, 9)) else some(MINIMAL_HEAD_POOL, 5)
    lines += some(SESSION_LINES, 3)
    for _ in range(draw(st.integers(0, 3))):
        lines.append(draw(st.sampled_from(MEDIA_LINES)))
        lines += some(MEDIA_ATTRIBUTE_LINES, 6)
    eol = draw(st.sampled_from(["\r\n", "\n", " \r\n"]))
    return "".join(line + eol for line in lines).encode("utf-8", "surrogatepass")


MINIMAL_HEAD_POOL = [*MINIMAL_HEAD, "v=1", "o=- x 1 IN IP4 a", "s="]


def _parse_or_none(data: bytes) -> SessionDescription | None:
    try:
        return SessionDescription.parse(data)
    except SdpError as error:
        assert error.status == 400
        return None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_parse_to_a_description_or_sdp_error(data: bytes) -> None:
    _parse_or_none(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sdp_like_bodies())
def test_sdp_like_text_parses_round_trips_and_answers_or_fails_with_sdp_error(data: bytes) -> None:
    parsed = _parse_or_none(data)
    if parsed is None:
        return
    assert SessionDescription.parse(parsed.serialize()) == parsed
    try:
        ans, neg = answer_offer(parsed, local_address="10.0.0.1", local_port=4000, session_id=1, session_version=1)
    except SdpError as error:
        assert error.status == 488
        return
    assert len(ans.media) == len(parsed.media)
    [accepted] = [index for index, m in enumerate(ans.media) if m.port != 0]
    assert neg.codec.name in ("PCMU", "PCMA")
    assert str(neg.codec.payload_type) in parsed.media[accepted].formats
    assert ans.media[accepted].formats[0] == str(neg.codec.payload_type)
    assert SessionDescription.parse(ans.serialize()) == ans


def test_single_codec_answer_lists_only_the_chosen_codec_and_our_ptime() -> None:
    offer = SessionDescription.parse(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:30\r\n"
    )
    answer, media = answer_offer(
        offer,
        local_address="127.0.0.1",
        local_port=5000,
        session_id=1,
        session_version=1,
        single_codec=True,
        ptime=20,
    )
    assert answer.media[0].formats == ["8", "101"]
    assert answer.media[0].ptime == 20
    assert media.codec == PCMA and media.codecs == (PCMA,)
    assert media.ptime == 30  # what the caller asked for stays known
