"""The edge under attack, proven on the real daemon (``python -m ivr serve``) with SIPp and raw sockets.

- ten ghost-call triggers (INVITEs the daemon cannot serve: no Contact, ``Contact: *``, a ``tel:`` Contact, a late
  offer without Contact, an IPv6 media address) each get a final answer, and then SIPp's calls are answered on an
  RTP range with room for a handful of calls only;
- 2,000 TCP connections: those over the cap are closed at once, the rest after the message timeout, without a
  traceback, and the daemon still answers;
- a caller killed mid-call (SIGKILL: no BYE, its RTP stops) is hung up after ``media.rtp_timeout`` and its record
  says ``rtp_timeout``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from peers import LOCALHOST, IvrDaemon, PeerError, Sipp, free_port_block, have, sip_options_ping

pytestmark = pytest.mark.interop

GHOSTS = [
    ("no-contact", None, True, 400),
    ("star", "*", True, 400),
    ("tel", "<tel:+15550100>", True, 416),
    ("late-offer", None, False, 400),
    ("ip6", "<sip:ghost@127.0.0.1:5999>", True, 488),
]


def _ghost_invite(daemon: IvrDaemon, sock: socket.socket, name: str, contact: str | None, sdp: bool) -> bytes:
    port = sock.getsockname()[1]
    body = b""
    if sdp:
        c_line = "c=IN IP6 ::1" if name == "ip6" else "c=IN IP4 127.0.0.1"
        body = (
            "v=0\r\no=ghost 1 1 IN IP4 127.0.0.1\r\ns=-\r\n" + c_line + "\r\nt=0 0\r\n"
            "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        ).encode()
    lines = [
        f"INVITE sip:2000@{daemon.sip_target} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK-{name}-{time.monotonic_ns()}",
        "Max-Forwards: 70",
        f"From: <sip:ghost@127.0.0.1:{port}>;tag=g-{name}",
        f"To: <sip:2000@{daemon.sip_target}>",
        f"Call-ID: ghost-{name}-{time.monotonic_ns()}",
        "CSeq: 1 INVITE",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _final_status(sock: socket.socket, timeout: float = 3.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65535)
        except TimeoutError:
            break
        status = int(data.split(b" ", 2)[1])
        if status >= 200:
            return status
    raise PeerError("no final response to a ghost INVITE")


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("need_sipp")
def test_ten_ghost_call_triggers_then_sipp_calls_are_answered_on_a_small_rtp_range() -> None:
    lo, _ = free_port_block(10)
    with IvrDaemon(hold_calls=False, rtp_ports=(lo, lo + 9)) as ivr:
        statuses = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOCALHOST, 0))
            for i in range(10):
                name, contact, sdp, _expected = GHOSTS[i % len(GHOSTS)]
                sock.sendto(_ghost_invite(ivr, sock, name, contact, sdp), (LOCALHOST, ivr.sip_port))
                statuses.append(_final_status(sock))
        assert statuses == [g[3] for g in GHOSTS] * 2, ivr.describe()
        result = Sipp("uac", ivr.sip_target, calls=4, rate=10, timeout=60).run()
        assert result.returncode == 0, result.describe()
        assert ivr.terminate() == 0, ivr.describe()
    text = ivr.stderr_text()
    assert "Traceback" not in text and "bug:" not in text, text[-3000:]


@pytest.mark.timeout(90)
def test_two_thousand_tcp_connections_are_capped_then_closed_and_the_daemon_still_answers() -> None:
    overrides = {"sip": {"tcp_max_connections": 300, "tcp_max_connections_per_source": 300,
                         "tcp_message_timeout": 2.0}}  # fmt: skip
    with IvrDaemon(overrides=overrides) as ivr:
        conns: list[socket.socket] = []
        try:
            for _ in range(2000):
                s = socket.create_connection((LOCALHOST, ivr.sip_port), timeout=5)
                s.setblocking(False)
                conns.append(s)

            def closed() -> int:
                count = 0
                for s in conns:
                    try:
                        if s.recv(1) == b"":
                            count += 1
                    except BlockingIOError:
                        pass
                    except OSError:
                        count += 1
                return count

            time.sleep(0.5)
            at_once = closed()
            assert at_once >= 1700, f"{at_once} of 2000 closed at once (cap 300)"
            deadline = time.monotonic() + 6.0
            while (now_closed := closed()) < 2000 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert now_closed == 2000, f"{now_closed} of 2000 closed after the 2 s message timeout"
        finally:
            for s in conns:
                s.close()
        assert sip_options_ping(LOCALHOST, ivr.sip_port, timeout=3.0) == 200
        assert ivr.terminate() == 0, ivr.describe()
    text = ivr.stderr_text()
    assert "Traceback" not in text and "bug:" not in text, text[-3000:]


def _caller_audio(tmp_path: Path) -> Path:
    """Ten seconds of a 440 Hz tone as raw 8 kHz mu-law, for SIPp's rtp_stream."""
    path = tmp_path / "caller_audio.ulaw"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-t", "ul", str(path), "synth", "10", "sine", "440"],
                   check=True, capture_output=True, timeout=30)  # fmt: skip
    return path


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("need_sipp")
def test_a_caller_killed_mid_call_is_hung_up_after_the_rtp_timeout(tmp_path: Path) -> None:
    if not have("sox"):
        pytest.skip("sox is needed to make the caller's audio")
    audio = _caller_audio(tmp_path)
    overrides = {"media": {"rtp_timeout": 3.0}}
    # The daemon's BYE to the dead caller is never answered: at shutdown it waits for that transaction (up to
    # 32 T1 = 16 s) before it exits, so it is given longer than that to stop.
    with IvrDaemon(hold_calls=True, overrides=overrides, stop_timeout=30) as ivr:
        caller = Sipp("uac_rtp_hold.xml", ivr.sip_target, calls=1, limit=1, duration_ms=60000,
                      files={"caller_audio.ulaw": audio}, timeout=90)  # fmt: skip
        with caller:
            caller.start()
            caller.wait_current_calls(1, 15)
            time.sleep(4.0)  # longer than the timeout: the caller's RTP keeps the call up
            assert not ivr.log_records("no RTP from the caller"), ivr.describe()
            pid = caller.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)  # no BYE; its RTP stops
            killed = time.monotonic()
            deadline = killed + 10.0
            while not ivr.call_end_records() and time.monotonic() < deadline:
                time.sleep(0.1)
            waited = time.monotonic() - killed
        (ended,) = ivr.call_end_records()
        assert ended["reason"] == "rtp_timeout", ended
        assert 2.5 <= waited <= 5.5, waited
        assert ivr.terminate() == 0, ivr.describe()
