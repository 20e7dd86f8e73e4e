"""The ivr daemon against real peers: SIPp, baresip, sipsak, and tshark watching its RTP.

Each test starts its own daemon (``python -m ivr serve``) on free ports with IvrDaemon. A missing peer
program skips the test; a daemon that does not start, or misbehaves, fails it. The harness these tests
stand on is proven against real peers in test_harness.py.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import numpy.typing as npt
import pytest
from peers import (
    LOCALHOST,
    WELCOME_PROMPT,
    AudioStats,
    Baresip,
    IvrDaemon,
    Sipp,
    TsharkCapture,
    UdpSink,
    envelope,
    envelope_similarity,
    free_port_block,
    sequence_breaks,
    sip_options_ping,
    sipsak_options,
    sound_file_samples,
    wav_samples,
)

pytestmark = pytest.mark.interop

DIGITS_SENT = 3  # scenarios/uac_pcap_dtmf.xml sends 1, 5, #
DIGIT_PACKETS = 10  # per digit in SIPp's dtmf_2833_*.pcap


def _records_text(ivr: IvrDaemon) -> str:
    return f"call-end records: {ivr.call_end_records()}\n{ivr.describe()}"


@pytest.mark.usefixtures("need_sipp")
def test_sipp_uac_50_calls_at_10_per_second_all_succeed_without_retransmissions() -> None:
    with IvrDaemon() as ivr:
        result = Sipp("uac", ivr.sip_target, calls=50, rate=10, duration_ms=1000, timeout=60).run()
        assert result.returncode == 0, result.describe() + "\n" + ivr.describe()
        assert ivr.terminate() == 0, ivr.describe()
    stats = result.stats
    assert stats is not None, result.describe()
    assert (stats.created, stats.successful, stats.failed) == (50, 50, 0), result.describe()
    # on loopback every request is answered at once: any retransmission means the daemon was late or silent
    assert stats.retransmissions == 0, result.describe()
    assert stats.out_of_call == 0 and stats.dead_call == 0, result.describe()
    assert len(ivr.call_end_records()) == 50, _records_text(ivr)


@pytest.mark.usefixtures("need_sipp")
def test_sipp_uac_over_tcp_succeeds() -> None:
    with IvrDaemon() as ivr:
        result = Sipp("uac", ivr.sip_target, calls=10, rate=10, duration_ms=500, transport="t1", timeout=60).run()
    assert result.returncode == 0, result.describe() + "\n" + ivr.describe()
    assert result.stats is not None and result.stats.successful == 10


@pytest.mark.usefixtures("need_pcap_play")
def test_pcap_speech_and_rfc2833_digits_reach_the_daemon() -> None:
    with IvrDaemon() as ivr:
        result = Sipp("uac_pcap_dtmf.xml", ivr.sip_target, calls=1, timeout=60).run()
        assert result.returncode == 0, result.describe() + "\n" + ivr.describe()
        assert ivr.terminate() == 0, ivr.describe()
    records = ivr.call_end_records()
    assert len(records) == 1, _records_text(ivr)
    assert int(records[0]["dtmf_digits"]) == DIGITS_SENT, _records_text(ivr)
    # every digit packet plus some of the A-law speech that follows them
    assert int(records[0]["rtp_packets_received"]) > DIGITS_SENT * DIGIT_PACKETS, _records_text(ivr)


@pytest.mark.usefixtures("need_sipp")
def test_sipp_info_digits_are_answered_and_counted_and_an_unknown_body_is_415() -> None:
    with IvrDaemon(hold_calls=True) as ivr:
        result = Sipp("uac_info_dtmf.xml", ivr.sip_target, calls=1, timeout=60).run()
        assert result.returncode == 0, result.describe() + "\n" + ivr.describe()
        assert ivr.terminate() == 0, ivr.describe()
    records = ivr.call_end_records()
    assert len(records) == 1, _records_text(ivr)
    assert int(records[0]["info_digits"]) == 3, _records_text(ivr)


def _assert_heard_the_prompt(heard: AudioStats, heard_env: npt.NDArray[np.float64], prompt: AudioStats) -> None:
    assert prompt.seconds * 0.9 - 0.3 < heard.seconds < prompt.seconds + 1.0, (heard, prompt)
    assert heard.rms_dbfs > -40 and heard.active_seconds > 0.7 * prompt.active_seconds, (heard, prompt)
    similarity = envelope_similarity(heard_env, envelope(*sound_file_samples(WELCOME_PROMPT)))
    assert similarity > 0.8, f"what baresip heard does not follow the prompt's contour ({similarity:.2f})"


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_baresip")
def test_baresip_hears_the_prompt_then_the_daemon_hangs_up(prompt: AudioStats) -> None:
    with IvrDaemon() as ivr, Baresip() as phone:
        phone.dial(ivr.uri)
        phone.wait_event("CALL_ESTABLISHED", 5)
        closed = phone.wait_event("CALL_CLOSED", prompt.seconds + 5)
        time.sleep(0.2)
        heard = phone.heard()
        heard_env = envelope(*wav_samples(heard.path))
        assert ivr.terminate() == 0, ivr.describe()
    assert closed.param == "Connection reset by peer", closed  # the daemon's BYE
    _assert_heard_the_prompt(heard, heard_env, prompt)
    assert len(ivr.call_end_records()) == 1, _records_text(ivr)


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_baresip")
def test_baresip_hangs_up_first_and_the_daemon_carries_on(prompt: AudioStats) -> None:
    with IvrDaemon() as ivr, Baresip() as phone:
        phone.dial(ivr.uri)
        phone.wait_event("CALL_ESTABLISHED", 5)
        phone.wait_event("CALL_RTPESTAB", 2)  # the prompt started
        time.sleep(min(1.0, prompt.seconds / 2))
        phone.send_digit("1")
        time.sleep(0.5)  # let the digit's end packets go out
        phone.hangup()
        closed = phone.wait_event("CALL_CLOSED", 5)
        time.sleep(0.5)
        assert sip_options_ping(LOCALHOST, ivr.sip_port, 2.0) == 200, ivr.describe()
        assert ivr.terminate() == 0, ivr.describe()
    assert closed.param == "Connection reset by user", closed
    records = ivr.call_end_records()
    assert len(records) == 1, _records_text(ivr)
    assert int(records[0]["dtmf_digits"]) == 1, _records_text(ivr)


@pytest.mark.usefixtures("need_sipsak")
def test_sipsak_options_gets_200() -> None:
    with IvrDaemon() as ivr:
        result = sipsak_options(ivr.sip_port)
    assert (result.returncode, result.status) == (0, 200), result.output + "\n" + ivr.describe()


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("need_sipp", "need_tshark")
def test_daemon_rtp_has_no_loss_and_steady_20ms_pacing_over_10_concurrent_calls(prompt: AudioStats) -> None:
    calls = 10
    hold_ms = int(prompt.seconds * 1000) + 1000
    media_lo, media_hi = free_port_block(4 * calls + 4)  # SIPp offers media_lo + 4 * (call - 1)
    # SIPp itself binds media_lo (and +2) without reading; the sink listens on the other calls' ports
    sink_ports = [media_lo + 4 * i for i in range(1, calls)]
    with IvrDaemon(hold_calls=True) as ivr:
        capture = TsharkCapture(ivr.rtp_lo, ivr.rtp_hi, direction="from", peer_ports=(media_lo, media_hi))
        try:
            with capture, UdpSink(sink_ports) as sink:
                result = Sipp(
                    "uac_hold_bye.xml",
                    ivr.sip_target,
                    calls=calls,
                    rate=20,
                    limit=calls,
                    duration_ms=hold_ms,
                    media_port=media_lo,
                    timeout=60,
                ).run()
            streams = capture.streams()
            breaks = sequence_breaks(capture.packets())
        finally:
            capture.cleanup()
        assert result.returncode == 0, result.describe() + "\n" + ivr.describe()
        assert ivr.terminate() == 0, ivr.describe()

    assert capture.summary is not None and capture.summary.dropped == 0, capture.summary
    ours = [s for s in streams if ivr.rtp_lo <= s.src_port <= ivr.rtp_hi]
    assert len(ours) == calls, streams
    expected_packets = (hold_ms - 1000) / 20
    for s in ours:
        assert s.payload == "g711U", s  # the caller offered PCMU first
        assert s.lost == 0 and not s.problems, s
        assert s.max_delta_ms < 30.0, s
        assert 19.5 < s.mean_delta_ms < 20.5, s
        assert s.packets >= expected_packets, s
    assert all(b == [] for b in breaks.values()), {k: v for k, v in breaks.items() if v}
    assert all(n >= expected_packets for n in sink.counts.values()), sink.counts


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("need_sipp")
def test_sigterm_drains_then_second_sigterm_sends_bye_to_every_caller_and_exits_0() -> None:
    calls = 5
    with (
        IvrDaemon(hold_calls=True) as ivr,
        Sipp("uac_wait_bye.xml", ivr.sip_target, calls=calls, rate=20, limit=calls, timeout=60) as uac,
    ):
        uac.start()
        uac.wait_current_calls(calls, timeout=10)
        time.sleep(0.5)
        ivr.signal(signal.SIGTERM)
        time.sleep(1.5)
        # Draining: the daemon is still up and no caller got a BYE (SIPp would have ended its calls).
        assert ivr.alive(), ivr.describe()
        assert uac.proc is not None and uac.proc.poll() is None, "SIPp ended: the drain hung up calls"
        signalled = time.monotonic()
        assert ivr.terminate() == 0, ivr.describe()
        drained = time.monotonic() - signalled
        result = uac.wait(15)
    assert result.returncode == 0, result.describe() + "\n" + ivr.describe()
    assert result.stats is not None
    assert (result.stats.successful, result.stats.failed) == (calls, 0), result.describe()
    assert drained < 10.0, f"daemon took {drained:.1f}s to hang up and exit"
    assert len(ivr.call_end_records()) == calls, _records_text(ivr)
