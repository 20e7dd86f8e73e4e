"""The interop harness proves itself against real peers that exist today.

Every helper in peers.py is run here against software nobody here wrote: SIPp's built-in UAS/UAC, a SIPp
stand-in for the ivr daemon (scenarios/uas_prompt_bye.xml: answers, plays SIPp's own A-law speech
recording as "the prompt", then hangs up), two baresip softphones, sipsak and tshark. If these pass, a
failure in test_daemon_interop.py is the daemon's, not the harness's.
"""

from __future__ import annotations

import socket
import textwrap
import time
from pathlib import Path

import pytest
from peers import (
    LOCALHOST,
    SCENARIOS,
    SIPP_SHARE,
    WELCOME_PROMPT,
    Baresip,
    IvrDaemon,
    PeerError,
    Sipp,
    TsharkCapture,
    alaw_to_linear,
    envelope,
    envelope_similarity,
    free_port_block,
    free_udp_port,
    parse_kv,
    parse_rtp_streams,
    percentile,
    rtp_payload_audio,
    sequence_breaks,
    sip_options_ping,
    sipsak_options,
    sound_file_samples,
    wav_samples,
)

pytestmark = pytest.mark.interop

# SIPp's recordings, as tshark sees them (see scenarios/uac_pcap_dtmf.xml)
SPEECH_SSRC = 0xDEE0EE8F
DIGITS_SSRC = 0x0E05384E
SPEECH_PACKETS = 236  # 7.05 s of 30 ms A-law packets
DIGIT_PACKETS = 10  # per digit: 7 updates + 3 end packets


def _ok(result: object, text: str) -> str:
    return f"{text}\n{getattr(result, 'describe', lambda: '')()}"


# ----------------------------------------------------------------------------------------------------------
# no peer needed: parsing and ports


TSHARK_4_0_STREAMS = """\
========================= RTP Streams ========================
   Start time      End time     Src IP addr  Port    Dest IP addr  Port       SSRC          Payload  Pkts         Lost   Min Delta(ms)  Mean Delta(ms)   Max Delta(ms)  Min Jitter(ms) Mean Jitter(ms)  Max Jitter(ms) Problems?
     0.121260      3.083376       127.0.0.1 18000       127.0.0.1 17000 0xCA110001            g711U   149     0 (0.0%)           0.004          20.014          36.182           0.013           0.797           2.410
     0.300000      1.100000       127.0.0.1 18004       127.0.0.1 17000 0x0E05384E         rtpevent    30   -3 (-11.1%)           0.010          20.000          61.000          -1.000           0.500           1.000 X
==============================================================
"""  # noqa: E501 - literal tshark output


def test_rtp_streams_parser_reads_tshark_4_0_table() -> None:
    streams = parse_rtp_streams(TSHARK_4_0_STREAMS)
    assert len(streams) == 2
    first, second = streams
    assert (first.src_port, first.dst_port, first.ssrc, first.payload) == (18000, 17000, 0xCA110001, "g711U")
    assert (first.packets, first.lost, first.max_delta_ms, first.problems) == (149, 0, 36.182, False)
    assert (second.payload, second.lost, second.lost_pct, second.problems) == ("rtpevent", -3, -11.1, True)
    assert second.mean_jitter_ms == 0.5


def test_rtp_streams_parser_rejects_a_changed_table() -> None:
    with pytest.raises(PeerError, match="header changed"):
        parse_rtp_streams("=== RTP Streams ===\n Start time  Src  Dst  Packets\n")
    with pytest.raises(PeerError, match="no 'RTP Streams'"):
        parse_rtp_streams("tshark: nothing here\n")


def test_structlog_key_values_are_read_through_colour_codes() -> None:
    line = (
        "2026-01-01 [info     ] \x1b[1mcall_ended\x1b[0m  \x1b[36mcall_id\x1b[0m=\x1b[35mabc\x1b[0m "
        "\x1b[36mrtp_packets_received\x1b[0m=\x1b[35m236\x1b[0m dtmf_digits=3 reason='remote bye'"
    )
    kv = parse_kv(line)
    assert kv["rtp_packets_received"] == "236"
    assert kv["dtmf_digits"] == "3"
    assert kv["call_id"] == "abc"
    assert kv["reason"] == "remote bye"


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 99) == 5.0
    assert percentile(list(map(float, range(1, 101))), 99) == 99.0
    assert percentile([20.0], 50) == 20.0


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = {free_udp_port(also_tcp=True) for _ in range(20)}
    assert len(ports) == 20
    lo, hi = free_port_block(40)
    assert lo % 2 == 0 and hi - lo + 1 == 40
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCALHOST, lo))
    assert not ports & set(range(lo, hi + 1))


def test_options_ping_returns_none_when_nobody_answers() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCALHOST, 0))
        started = time.monotonic()
        assert sip_options_ping(LOCALHOST, silent.getsockname()[1], timeout=0.6) is None
        assert time.monotonic() - started < 1.5
        request = silent.recv(4096).decode()
    assert request.startswith("OPTIONS sip:ivr@127.0.0.1:")
    assert "\r\nCSeq: 1 OPTIONS\r\n" in request and request.endswith("\r\n\r\n")


# ----------------------------------------------------------------------------------------------------------
# the daemon wrapper, run on a stand-in module that speaks just enough SIP

FAKE_DAEMON = textwrap.dedent(
    '''
    """Stand-in for `python -m ivr serve`: answers OPTIONS, logs like structlog, drains on SIGTERM."""
    import argparse, signal, socket, sys
    from ruamel.yaml import YAML

    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("--config")
    ap.add_argument("--listen")
    ap.add_argument("--rtp-ports")
    ap.add_argument("--hold-calls", action="store_true")
    a, _rest = ap.parse_known_args()  # options the stand-in does not need (--admin-listen, --cdr ...)
    cfg = YAML(typ="safe").load(open(a.config))
    host, port = a.listen.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, int(port)))
    s.settimeout(0.1)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print(f"started prompt={cfg['calls']['welcome_prompt']} rtp={a.rtp_ports} hold={a.hold_calls}",
          file=sys.stderr, flush=True)
    while not stop:
        try:
            data, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        text = data.decode()
        if text.startswith("OPTIONS "):
            keep = ("Via", "From", "To", "Call-ID", "CSeq")
            head = [l for l in text.split("\\r\\n") if l.split(":")[0] in keep]
            reply = "SIP/2.0 200 OK\\r\\n" + "\\r\\n".join(head) + "\\r\\nContent-Length: 0\\r\\n\\r\\n"
            s.sendto(reply.encode(), addr)
    print("\\x1b[1mcall_ended\\x1b[0m call_id=x rtp_packets_received=12 dtmf_digits=2", file=sys.stderr, flush=True)
    sys.exit(0)
    '''
)


def test_ivr_daemon_wrapper_waits_for_options_and_collects_stderr(tmp_path: Path) -> None:
    pkg = tmp_path / "fake_ivr"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(FAKE_DAEMON)
    daemon = IvrDaemon(
        module="fake_ivr", python_path=[tmp_path], hold_calls=True, overrides={"calls": {"hangup_after_prompt": False}}
    )
    with daemon:
        assert sip_options_ping(LOCALHOST, daemon.sip_port, 2.0) == 200
        started = daemon.stderr_text()
        assert f"rtp={daemon.rtp_lo}-{daemon.rtp_hi} hold=True" in started
        # the temp config points at the repo's prompt by absolute path
        prompt = started.split("prompt=")[1].split()[0]
        assert Path(prompt).is_absolute() and Path(prompt).exists()
        assert daemon.terminate() == 0
    assert daemon.call_end_records() == [{"call_id": "x", "rtp_packets_received": "12", "dtmf_digits": "2"}]


def test_ivr_daemon_wrapper_reports_a_daemon_that_dies(tmp_path: Path) -> None:
    pkg = tmp_path / "dead_ivr"
    pkg.mkdir()
    (pkg / "__main__.py").write_text("import sys\nprint('boom: no such config', file=sys.stderr)\nsys.exit(3)\n")
    daemon = IvrDaemon(module="dead_ivr", python_path=[tmp_path], ready_timeout=5)
    started = time.monotonic()
    with pytest.raises(PeerError, match="boom: no such config"):
        daemon.start()
    assert time.monotonic() - started < 4
    assert daemon.returncode == 3


# ----------------------------------------------------------------------------------------------------------
# SIPp against SIPp


@pytest.mark.usefixtures("need_sipp")
def test_options_ping_and_sipsak_get_200_from_sipp_auto_answer(need_sipsak: None) -> None:
    # -aa answers OPTIONS out of any call; each one counts as a "call" against -m
    with Sipp("uas", calls=3, extra_args=["-aa"], timeout=30) as uas:
        uas.start()
        time.sleep(0.3)
        assert sip_options_ping(LOCALHOST, uas.local_port, 2.0) == 200
        sipsak = sipsak_options(uas.local_port)
        assert (sipsak.returncode, sipsak.status) == (0, 200), sipsak.output
        opt = Sipp("uac_options.xml", f"{LOCALHOST}:{uas.local_port}", calls=1, timeout=20).run()
        assert opt.returncode == 0, opt.describe()
        time.sleep(1.2)  # SIPp dumps its counters every second
        result = uas.stop()  # auto-answered OPTIONS never end SIPp by themselves
    assert result.stats is not None and result.stats.auto_answered == 3, result.describe()


@pytest.mark.usefixtures("need_sipp")
def test_sipp_uac_against_sipp_uas_counts_every_call() -> None:
    with Sipp("uas", calls=20, timeout=30) as uas:
        uas.start()
        time.sleep(0.3)
        uac = Sipp("uac", f"{LOCALHOST}:{uas.local_port}", calls=20, rate=20, limit=20, timeout=30).run()
        callee = uas.wait(15)
    assert uac.returncode == 0, uac.describe()
    assert uac.stats is not None
    assert (uac.stats.created, uac.stats.successful, uac.stats.failed) == (20, 20, 0)
    assert uac.stats.retransmissions == 0 and uac.stats.dead_call == 0 and uac.stats.out_of_call == 0
    assert callee.returncode == 0, callee.describe()
    assert callee.stats is not None and callee.stats.successful == 20


@pytest.mark.usefixtures("need_sipp")
def test_sipp_stats_count_failed_calls_and_retransmissions() -> None:
    # a callee that reads nothing: INVITEs are retransmitted, then every call times out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCALHOST, 0))
        port = silent.getsockname()[1]
        result = Sipp(
            "uac", f"{LOCALHOST}:{port}", calls=2, rate=10, timeout=30, extra_args=["-recv_timeout", "1200"]
        ).run()
    assert result.returncode == 1, result.describe()
    assert result.stats is not None
    assert (result.stats.successful, result.stats.failed, result.stats.timeouts) == (0, 2, 2)
    assert result.stats.retransmissions >= 2  # T1 = 500 ms: at least one per call within 1.2 s


@pytest.mark.usefixtures("need_sipp")
def test_caller_hold_scenario_hangs_up_first_against_sipp_uas() -> None:
    with Sipp("uas", calls=5, timeout=30) as uas:
        uas.start()
        time.sleep(0.3)
        uac = Sipp(
            "uac_hold_bye.xml", f"{LOCALHOST}:{uas.local_port}", calls=5, rate=10, limit=5, duration_ms=1000, timeout=30
        ).run()
        uas.wait(10)
    assert uac.returncode == 0, uac.describe()
    assert uac.stats is not None and uac.stats.successful == 5
    # the calls really were held: SIPp's CallLength is cumulative mean "hh:mm:ss:micro"
    assert uac.stats.raw["CallLength(C)"] >= "00:00:01:000000", uac.stats.raw["CallLength(C)"]


@pytest.mark.usefixtures("need_pcap_play")
def test_caller_hold_scenario_fails_when_the_callee_hangs_up_first() -> None:
    # the stand-in hangs up 7.5 s into the call; a caller holding 9 s must see that as a failure
    with Sipp("uas_prompt_bye.xml", calls=1, timeout=30) as uas:
        uas.start()
        time.sleep(0.3)
        uac = Sipp("uac_hold_bye.xml", f"{LOCALHOST}:{uas.local_port}", calls=1, duration_ms=9000, timeout=30).run()
        uas.wait(10)
    assert uac.returncode == 1, uac.describe()
    assert uac.stats is not None and uac.stats.unexpected == 1, uac.describe()


# ----------------------------------------------------------------------------------------------------------
# pcap audio + RFC 2833 digits, measured by tshark


def _rtp(ssrc: int, seq: int, pt: int = 0) -> bytes:
    return (
        bytes([0x80, pt])
        + seq.to_bytes(2, "big")
        + (seq * 160).to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + (b"\xff" * 160)
    )


@pytest.mark.usefixtures("need_tshark")
def test_tshark_capture_keeps_our_even_ports_and_sees_a_gap_as_loss() -> None:
    lo, hi = free_port_block(8)
    stranger, _ = free_port_block(2)
    capture = TsharkCapture(lo, hi, peer_ports=(lo, hi))
    socks = {}
    try:
        with capture:
            for port in (lo, lo + 1, lo + 4, stranger):
                socks[port] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks[port].bind((LOCALHOST, port))
            for seq in range(100, 105):
                socks[lo].sendto(_rtp(1, seq), (LOCALHOST, lo + 2))  # even -> even: kept
                socks[lo + 1].sendto(_rtp(2, seq), (LOCALHOST, lo + 3))  # RTCP's odd ports: dropped
                socks[stranger].sendto(_rtp(3, seq), (LOCALHOST, lo + 2))  # someone else's stream: dropped
                time.sleep(0.02)
            for seq in (7, 8, 10, 11):  # one packet missing
                socks[lo + 4].sendto(_rtp(4, seq), (LOCALHOST, lo + 2))
                time.sleep(0.02)
        packets = capture.packets()
        streams = {s.ssrc: s for s in capture.streams()}
    finally:
        for s in socks.values():
            s.close()
        capture.cleanup()
    assert sorted({p.ssrc for p in packets}) == [1, 4]
    assert [p.seq for p in packets if p.ssrc == 1] == [100, 101, 102, 103, 104]
    assert sequence_breaks(packets) == {(lo, 1): [], (lo + 4, 4): [(8, 10)]}
    assert (streams[1].packets, streams[1].lost, streams[1].payload) == (5, 0, "g711U")
    assert (streams[4].packets, streams[4].lost) == (4, 1)


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_pcap_play", "need_tshark")
def test_pcap_dtmf_caller_against_hanging_up_callee_and_tshark_stream_stats() -> None:
    lo, hi = free_port_block(16)
    callee_media, caller_media = lo, lo + 8
    capture = TsharkCapture(lo, hi, peer_ports=(lo, hi))
    assert capture.capture_filter() == (
        f"udp and ((src portrange {lo}-{hi} and udp[0:2] & 1 = 0 and dst portrange {lo}-{hi}) or "
        f"(dst portrange {lo}-{hi} and udp[2:2] & 1 = 0 and src portrange {lo}-{hi}))"
    )
    try:
        with capture, Sipp("uas_prompt_bye.xml", calls=1, media_port=callee_media, timeout=40) as uas:
            uas.start()
            time.sleep(0.3)
            uac = Sipp(
                "uac_pcap_dtmf.xml", f"{LOCALHOST}:{uas.local_port}", calls=1, media_port=caller_media, timeout=40
            ).run()
            callee = uas.wait(10)
        assert uac.returncode == 0, uac.describe()
        assert callee.returncode == 0, callee.describe()
        streams = capture.streams()
        packets = capture.packets()
    finally:
        capture.cleanup()

    assert capture.summary is not None and capture.summary.dropped == 0
    by_key = {(s.src_port, s.ssrc): s for s in streams}
    # the stand-in's "prompt": the whole 7 s recording, every packet, 30 ms apart
    prompt = by_key[(callee_media, SPEECH_SSRC)]
    assert (prompt.dst_port, prompt.payload, prompt.packets, prompt.lost) == (caller_media, "g711A", SPEECH_PACKETS, 0)
    # (SIPp's replay thread is not a precise clock: single gaps of 80 ms were seen on this 2-core machine)
    assert 29.0 < prompt.mean_delta_ms < 31.0 and prompt.max_delta_ms < 200.0
    # the caller's three digits (1, 5, #): one stream, 10 packets each
    digits = by_key[(caller_media, DIGITS_SSRC)]
    assert (digits.packets, digits.payload) == (3 * DIGIT_PACKETS, "rtpevent")
    events = {p.timestamp for p in packets if p.ssrc == DIGITS_SSRC}
    assert len(events) == 3
    # the caller's speech was cut by the callee's BYE at 7.5 s (started ~0.9 s in)
    speech = by_key[(caller_media, SPEECH_SSRC)]
    assert speech.payload == "g711A" and 150 < speech.packets < SPEECH_PACKETS and speech.lost == 0
    # the packet list agrees with tshark's own stream table
    assert sequence_breaks([p for p in packets if p.src_port == callee_media])[(callee_media, SPEECH_SSRC)] == []


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_pcap_play")
def test_pcap_dtmf_caller_hangs_up_itself_when_the_callee_holds() -> None:
    with Sipp("uas", calls=1, timeout=40) as uas:
        uas.start()
        time.sleep(0.3)
        started = time.monotonic()
        uac = Sipp("uac_pcap_dtmf.xml", f"{LOCALHOST}:{uas.local_port}", calls=1, timeout=40).run()
        held = time.monotonic() - started
        callee = uas.wait(10)
    assert uac.returncode == 0, uac.describe()
    assert callee.returncode == 0, callee.describe()
    assert 10.0 < held < 15.0  # 0.9 s of digits, then the 10 s wait for a BYE that never comes


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_pcap_play")
def test_wait_bye_caller_succeeds_when_the_callee_hangs_up() -> None:
    with Sipp("uas_prompt_bye.xml", calls=2, timeout=40) as uas:
        uas.start()
        time.sleep(0.3)
        uac = Sipp("uac_wait_bye.xml", f"{LOCALHOST}:{uas.local_port}", calls=2, limit=2, timeout=40).run()
        uas.wait(10)
    assert uac.returncode == 0, uac.describe()
    assert uac.stats is not None and uac.stats.successful == 2


# ----------------------------------------------------------------------------------------------------------
# baresip


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_baresip")
def test_baresip_calls_baresip_hears_its_sine_and_sends_rfc4733_digits() -> None:
    with Baresip(user="callee", answermode="auto", sine_hz=600) as callee, Baresip(user="caller") as caller:
        caller.dial(callee.uri)
        caller.wait_event("CALL_ESTABLISHED", 10)
        callee.wait_event("CALL_ESTABLISHED", 10)
        time.sleep(0.5)
        caller.send_digit("7")
        dtmf = callee.wait_event("CALL_DTMF_START", 5)
        time.sleep(2.0)
        caller.hangup()
        closed = callee.wait_event("CALL_CLOSED", 5)
        caller.wait_event("CALL_CLOSED", 5)
        time.sleep(0.3)
        heard = caller.heard()
    assert dtmf.param == "7"
    assert closed.peer_uri is not None and closed.peer_uri.startswith("sip:caller@")
    assert 2.0 < heard.seconds < 4.5, heard
    assert heard.active_seconds > 2.0 and heard.rms_dbfs > -30, heard
    assert abs(heard.dominant_hz - 600) < 15, heard


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_baresip", "need_pcap_play")
def test_baresip_hears_the_stand_in_prompt_and_sees_its_bye() -> None:
    with Sipp("uas_prompt_bye.xml", calls=1, timeout=40) as uas, Baresip() as phone:
        uas.start()
        time.sleep(0.3)
        phone.dial(f"sip:ivr@{LOCALHOST}:{uas.local_port}")
        phone.wait_event("CALL_ESTABLISHED", 10)
        closed = phone.wait_event("CALL_CLOSED", 15)
        callee = uas.wait(10)
        heard = phone.heard()
        heard_env = envelope(*wav_samples(heard.path))
    assert callee.returncode == 0, callee.describe()
    assert closed.param == "Connection reset by peer", closed  # a BYE from the far end ("...by user": ours)
    # the whole 7.05 s recording arrived, and it is speech, not silence
    assert 6.5 < heard.seconds < 7.6, heard
    assert heard.active_seconds > 4.0 and heard.rms_dbfs > -35, heard
    # and it is *that* speech: its loudness contour matches the recording's, and not other speech
    played = alaw_to_linear(rtp_payload_audio(SIPP_SHARE / "g711a.pcap", 0, 65535, SPEECH_SSRC))
    assert envelope_similarity(heard_env, envelope(played, 8000)) > 0.9
    assert envelope_similarity(heard_env, envelope(*sound_file_samples(WELCOME_PROMPT))) < 0.8


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_baresip", "need_pcap_play")
def test_baresip_hangs_up_first_and_the_stand_in_answers_its_bye() -> None:
    with Sipp("uas_prompt_bye.xml", calls=1, timeout=40) as uas, Baresip() as phone:
        uas.start()
        time.sleep(0.3)
        phone.dial(f"sip:ivr@{LOCALHOST}:{uas.local_port}")
        phone.wait_event("CALL_ESTABLISHED", 10)
        phone.wait_event("CALL_RTPESTAB", 5)  # first RTP packet from the far end arrived
        time.sleep(1.5)
        phone.hangup()
        closed = phone.wait_event("CALL_CLOSED", 5)
        callee = uas.wait(10)
        heard = phone.heard()
    assert callee.returncode == 0, callee.describe()
    assert callee.stats is not None and callee.stats.successful == 1
    assert closed.param == "Connection reset by user", closed
    assert 1.0 < heard.seconds < 2.5, heard


def test_scenarios_are_all_here() -> None:
    names = {p.name for p in SCENARIOS.glob("*.xml")}
    assert {
        "uac_pcap_dtmf.xml",
        "uac_hold_bye.xml",
        "uac_wait_bye.xml",
        "uac_rtp_hold.xml",
        "uac_options.xml",
        "uas_prompt_bye.xml",
    } <= names
