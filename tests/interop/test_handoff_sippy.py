"""The queue handoff through sippy, a real RFC 3261 B2BUA (PyPI ``sippy``), in front of a real queue endpoint.

The daemon (``python -m ivr serve``, on free loopback ports) runs a flow whose queue ``billing`` points at sippy;
sippy sends the call on to SIPp playing the agent (tests/interop/scenarios/uas_queue_checks_data.xml), which checks
the attached data byte for byte and echoes the RTP it gets (``-rtp_echo``). The caller is SIPp too: it types the
account number by RFC 2833 (``7391#``) into a collect node, then talks (g711a.pcap) once the queue answers.

What is true about sippy 2.5.0 (tests/interop/sippy_peer.py has the details):

- ``sippy.b2bua_simple`` **drops every header it does not know**: X-IVR-* and User-to-User do not reach the queue.
  The call itself works (audio, BYE); the first test proves both halves, with sippy's own trace showing it got the
  headers from the daemon and did not send them on.
- ``sippy.b2bua`` with ``--pass_header`` (``-h``, lower-case names) carries them over value for value (the names
  re-cased as ``X-ivr-account``, which RFC 3261 7.3.1 allows): the second test checks every value at the agent.
- Without an rtpproxy sippy relays no media (the SDP goes through as it is): the audio runs caller <-> daemon
  <-> agent directly, and the daemon's bridge counters (``handoff.bridge`` in the call record) count both ways; the
  echo makes "from the queue" a count of what the agent really received.

The third test hands the caller over by REFER: an in-process transferee (our endpoint, like baresip but honouring
Refer-To URI headers) follows the REFER through sippy, and the agent sees the same bytes as with the bridge.

The virtualenv for sippy is built once (a session fixture, /tmp/sippy-venv); with no PyPI the tests skip.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ivr.handoff.data import decode_uui
from ivr.sip.endpoint import CallAnswered, CallEnded, Peer
from tests.integration.test_handoff import SipUA, Transferee
from tests.integration.test_server import _until
from tests.interop.peers import IvrDaemon, Sipp, SippResult, free_port_block
from tests.interop.sippy_peer import SippyB2bua, SippyUnavailable, header_lines, sippy_python

pytestmark = pytest.mark.interop

# What the flow attaches, and what the agent must see (the UUI written out by hand from RFC 7433's form: the
# data key=value pairs, form-encoded, in `uui.keys` order, as hex, then ;encoding=hex).
ACCOUNT, LANGUAGE, INTENT = "7391", "en", "billing & payments"
UUI_TEXT = "account=7391&language=en&intent=billing%20%26%20payments"
UUI = UUI_TEXT.encode().hex() + ";encoding=hex"
EXPECTED = {"x-ivr-account": ACCOUNT, "x-ivr-language": LANGUAGE, "x-ivr-intent": INTENT, "user-to-user": UUI}
PASSED = ["X-IVR-Account", "X-IVR-Language", "X-IVR-Intent", "User-to-User"]
PCMA_FRAME = bytes((i * 37) & 0xFF for i in range(160))  # not silence, not a tone: only an echo brings it back

FLOW_KEYS = textwrap.dedent(
    """
    name: sippy-keys
    languages: [en]
    language: en
    start: account
    prompts:
      account: {en: "Account number, then hash."}
    nodes:
      account:
        type: collect
        prompt: account
        into: account
        min_digits: 2
        max_digits: 10
        terminator: "#"
        first_digit: 8s
        inter_digit: 4s
        total: 20s
        no_input: {tries: 1}
        no_match: {tries: 1}
        failure: give-up
        next: to-queue
      to-queue:
        type: queue
        queue: billing
        data: {account: "{{ account }}", language: "{{ language }}", intent: "billing & payments"}
        failure: give-up
      give-up: {type: hangup}
    """
)

FLOW_DIRECT = textwrap.dedent(
    """
    name: sippy-direct
    languages: [en]
    language: en
    start: identify
    nodes:
      identify: {type: set, vars: {account: "7391"}, next: to-queue}
      to-queue:
        type: queue
        queue: billing
        data: {account: "{{ account }}", language: "{{ language }}", intent: "billing & payments"}
        failure: give-up
      give-up: {type: hangup}
    """
)


class _PcmaUA(SipUA):
    """A caller offering PCMA: the agent (SIPp) answers PCMA whatever is offered, and sippy does not negotiate."""

    def sdp(self, pt: int = 8) -> bytes:
        return super().sdp(pt)


@pytest.fixture(scope="session")
def sippy() -> Path:
    """The python of sippy's own virtualenv (built on first use: pip needs PyPI)."""
    try:
        return sippy_python(timeout=150)  # seconds 5 with pip's cache warm; the first test's timeout allows for it
    except SippyUnavailable as exc:
        pytest.skip(f"sippy cannot be installed here (pip install sippy in a venv failed): {exc}")


def _daemon(tmp_path: Path, sippy_port: int, method: str) -> IvrDaemon:
    (tmp_path / "keys.yaml").write_text(FLOW_KEYS)
    (tmp_path / "direct.yaml").write_text(FLOW_DIRECT)
    (tmp_path / "queues.yaml").write_text(
        textwrap.dedent(
            f"""
            queues:
              billing:
                uri: sip:billing@127.0.0.1:{sippy_port}
                method: {method}
                headers: {{X-IVR-Account: account, X-IVR-Language: language, X-IVR-Intent: intent}}
                uui: {{keys: [account, language, intent], max_bytes: 128}}
                refer_timeout: 10s
                answer_timeout: 10s
            """
        )
    )
    overrides = {
        "routes": [
            {"client": "sippy", "numbers": ["2000"], "flow": str(tmp_path / "keys.yaml")},
            {"client": "sippy", "numbers": ["2001"], "flow": str(tmp_path / "direct.yaml")},
        ],
        "queues": str(tmp_path / "queues.yaml"),
        "flows": {"prompt_cache": str(tmp_path / "cache"), "watch": False},
    }
    cdr = tmp_path / "cdr.db"
    # RTP ports below 20000-29999, the default range that daemons and benchmarks on this machine bind by the thousand
    rtp_ports = free_port_block(64, low=10000, high=19999)
    return IvrDaemon(flows=True, overrides=overrides, rtp_ports=rtp_ports, ready_timeout=30,
                     extra_args=["--cdr", f"sqlite:///{cdr}"])  # fmt: skip


def _record(tmp_path: Path) -> dict[str, Any]:
    with sqlite3.connect(tmp_path / "cdr.db") as db:
        db.row_factory = sqlite3.Row
        (row,) = [dict(r) for r in db.execute("select * from cdr")]
    row["extra"] = json.loads(row["extra"])
    row["path"] = json.loads(row["path"])
    return row


def _invites_received(sipp: SippResult) -> list[str]:
    """The INVITEs SIPp logged as received (``-trace_msg``), one text each."""
    sections = sipp.messages.split("-----------------------------------------------")
    found = []
    for section in sections:
        _, sep, text = section.partition("message received")
        message = text.partition(":\n")[2].lstrip("\r\n") if sep else ""
        if message.startswith("INVITE "):
            found.append(message)
    return found


def _data_headers(message: str) -> list[tuple[str, str]]:
    return [(name, value) for name, value in header_lines(message) if name.lower() in EXPECTED]


def _echoes(ua: SipUA, since: int) -> int:
    return sum(1 for pt, payload in ua.rtp_received[since:] if (pt, payload) == (8, PCMA_FRAME))


def _explain(*parts: object) -> str:
    return "\n\n".join(p.describe() if hasattr(p, "describe") else str(p) for p in parts)


@pytest.fixture
def agent_checks_data() -> Iterator[Sipp]:
    sipp = Sipp("uas_queue_checks_data.xml", calls=1, timeout=40, extra_args=["-rtp_echo"], trace_msg=True)
    yield sipp
    sipp.__exit__(None, None, None)


@pytest.mark.timeout(200)
@pytest.mark.usefixtures("need_pcap_play")
def test_b2bua_simple_drops_the_x_ivr_headers_and_uui_but_the_bridged_call_works_until_the_agent_hangs_up(
    tmp_path: Path, sippy: Path
) -> None:
    """sippy's b2bua_simple is a B2BUA that passes nothing but the call: the agent behind it gets no attached data
    (its scenario fails the call if any X-IVR-* or User-to-User arrives), though the daemon sent it all."""
    agent = Sipp("uas_queue_sees_no_data.xml", calls=1, timeout=40, extra_args=["-rtp_echo"], trace_msg=True)
    try:
        agent.start()
        with SippyB2bua(sippy, f"127.0.0.1:{agent.local_port}") as b2b, _daemon(tmp_path, b2b.port, "bridge") as ivr:
            caller = Sipp("uac_dtmf_to_queue.xml", ivr.sip_target, service="2000", calls=1, timeout=30).run()
            heard = agent.wait(15)
            time.sleep(0.3)
            assert ivr.terminate() == 0, ivr.describe()
            assert caller.returncode == 0, _explain(caller, heard, ivr, b2b)
            assert heard.returncode == 0, _explain(heard, b2b)  # answered, saw no data, hung up, got its 200
            from_ivr, to_agent = b2b.received("INVITE"), b2b.sent("INVITE")
            assert "Traceback" not in b2b.log, b2b.describe()
            daemon_log = ivr.stderr_text()
    finally:
        agent.__exit__(None, None, None)
    # sippy got every value from the daemon ...
    assert len(from_ivr) == 1, from_ivr
    assert _data_headers(from_ivr[0]) == [
        ("X-IVR-Account", ACCOUNT), ("X-IVR-Language", LANGUAGE), ("X-IVR-Intent", INTENT), ("User-to-User", UUI)
    ], from_ivr[0]  # fmt: skip
    # ... and sent none of them on (the INVITE and any retransmission of it)
    assert to_agent and all(_data_headers(invite) == [] for invite in to_agent), to_agent
    (at_agent,) = _invites_received(heard)
    assert _data_headers(at_agent) == [], at_agent
    record = _record(tmp_path)
    handoff = record["extra"]["handoff"]
    assert (handoff["used"], handoff["result"], handoff["status"]) == ("bridge", "ok", 200), handoff
    bridge = handoff["bridge"]
    assert bridge["to_queue"] >= 30 and bridge["from_queue"] >= 0.9 * bridge["to_queue"], bridge  # echoed back
    assert bridge["from_caller"] >= 20 and bridge["to_caller"] >= 0.9 * bridge["from_queue"], bridge
    assert record["path"] == ["account", "to-queue"], record["path"]
    assert record["end_reason"] == "local_bye", record  # the agent's BYE came through sippy; we sent the caller's
    assert "bridged call ended by the queue" in daemon_log, daemon_log


@pytest.mark.timeout(200)
@pytest.mark.usefixtures("need_pcap_play")
def test_sippy_passing_the_headers_delivers_them_byte_for_byte_and_the_bridge_carries_audio_until_the_caller_hangs_up(
    tmp_path: Path, sippy: Path, agent_checks_data: Sipp
) -> None:
    """sippy.b2bua told to pass the four headers: the agent's scenario checks each value (and fails the call on any
    difference), the test checks them again on SIPp's trace, the echo proves the audio reached the agent and came
    back through the daemon to the caller, and the caller's BYE ends both legs (through sippy) cleanly."""
    agent = agent_checks_data.start()
    with (
        SippyB2bua(sippy, f"127.0.0.1:{agent.local_port}", pass_headers=PASSED) as b2b,
        _daemon(tmp_path, b2b.port, "bridge") as ivr,
    ):
        caller = Sipp("uac_dtmf_to_queue.xml", ivr.sip_target, service="2000", calls=1, timeout=30).run()
        heard = agent.wait(15)
        time.sleep(0.3)
        assert ivr.terminate() == 0, ivr.describe()
        assert caller.returncode == 0, _explain(caller, heard, ivr, b2b)
        # exit 0: every check of uas_queue_checks_data.xml matched, and the caller's BYE reached it through sippy
        assert heard.returncode == 0, _explain(heard, b2b)
        assert "Traceback" not in b2b.log, b2b.describe()
        daemon_log = ivr.stderr_text()
    # The same check in Python, on SIPp's trace of what it received: each value exactly once, byte for byte.
    (at_agent,) = _invites_received(heard)
    seen = _data_headers(at_agent)
    assert sorted((name.lower(), value) for name, value in seen) == sorted(EXPECTED.items()), at_agent
    hex_part, _, encoding = dict((n.lower(), v) for n, v in seen)["user-to-user"].partition(";")
    assert encoding == "encoding=hex" and bytes.fromhex(hex_part).decode() == UUI_TEXT
    assert decode_uui(UUI) == {"account": ACCOUNT, "language": LANGUAGE, "intent": INTENT}
    record = _record(tmp_path)
    handoff = record["extra"]["handoff"]
    assert (handoff["used"], handoff["result"], handoff["status"]) == ("bridge", "ok", 200), handoff
    bridge = handoff["bridge"]
    # ~4 s of bridged talk at 20 ms: ~200 frames each way; the agent's echo makes from_queue what it received
    assert bridge["to_queue"] >= 100 and bridge["from_queue"] >= 0.9 * bridge["to_queue"], bridge
    assert bridge["from_caller"] >= 60 and bridge["to_caller"] >= 0.9 * bridge["from_queue"], bridge
    assert record["end_reason"] == "remote_bye", record  # the caller's BYE
    assert "bridged call ended by the queue" not in daemon_log, daemon_log  # the daemon ended the agent's leg


@pytest.mark.timeout(200)
@pytest.mark.usefixtures("need_sipp")
async def test_refer_the_caller_follows_it_through_sippy_and_the_agent_gets_the_refer_to_headers_byte_for_byte(
    tmp_path: Path, sippy: Path, agent_checks_data: Sipp
) -> None:
    """method: refer. The daemon REFERs the caller with the data as Refer-To URI headers; the caller (our endpoint
    as a transferee) accepts, INVITEs sippy with those headers, reports 200 by NOTIFY, and the daemon leaves with
    BYE. The agent behind sippy sees the same bytes as a bridge would bring; caller and agent then talk (RTP
    echoed by the agent) and the caller's BYE through sippy ends the call."""
    agent = agent_checks_data.start()
    b2b = SippyB2bua(sippy, f"127.0.0.1:{agent.local_port}", pass_headers=PASSED)
    await asyncio.to_thread(b2b.start)
    ivr = _daemon(tmp_path, b2b.port, "refer")
    ua = await _PcmaUA("caller", transferee=True).start()
    try:
        await asyncio.to_thread(ivr.start)
        caller = Transferee(ua)
        target = f"sip:2001@127.0.0.1:{ivr.sip_port}"
        caller.leg = leg = ua.endpoint.call(request_uri=target, from_uri="sip:0888123456@127.0.0.1", to_uri=target,
                                            peer=Peer("127.0.0.1", ivr.sip_port), sdp=ua.sdp())  # fmt: skip
        ua.flush()
        await _until(lambda: leg.end_reason is not None, timeout=10)  # the daemon's BYE after the 200 sipfrag
        assert caller.refer is not None
        new_leg = caller.new_leg
        assert new_leg is not None
        answered = [e for e in ua.of(CallAnswered) if e.leg is new_leg]
        assert answered, ua.events
        before = len(ua.rtp_received)
        ua.send_rtp(answered[0].response.body, 8, PCMA_FRAME, 50)  # to the agent (sippy passed its SDP on)
        await _until(lambda: _echoes(ua, before) >= 45, timeout=5)
        ua.endpoint.hangup(new_leg)  # the caller ends the call with the agent: BYE through sippy
        ua.flush()
        await _until(lambda: any(e.leg is new_leg for e in ua.of(CallEnded)), timeout=5)
        heard = await asyncio.to_thread(agent.wait, 15)
        assert heard.returncode == 0, _explain(heard, b2b)
        assert ivr.terminate() == 0, ivr.describe()
        assert "Traceback" not in b2b.log, b2b.describe()
    finally:
        ua.close()
        ivr.__exit__(None, None, None)
        b2b.__exit__(None, None, None)
    (ended,) = [e for e in ua.of(CallEnded) if e.leg is leg]
    assert ended.reason.value == "remote_bye"
    # RFC 3261 19.1.1 escaping written out by hand: space %20, & %26 inside a value, ; %3B and = %3D in the UUI
    assert caller.refer.refer_to == (
        f"<sip:billing@127.0.0.1:{b2b.port}?X-IVR-Account=7391&X-IVR-Language=en"
        f"&X-IVR-Intent=billing%20%26%20payments&User-to-User={UUI_TEXT.encode().hex()}%3Bencoding%3Dhex>"
    )
    (at_agent,) = _invites_received(heard)
    seen = _data_headers(at_agent)
    assert sorted((name.lower(), value) for name, value in seen) == sorted(EXPECTED.items()), at_agent
    assert _echoes(ua, before) >= 45, len(ua.rtp_received)
    record = _record(tmp_path)
    handoff = record["extra"]["handoff"]
    assert (handoff["used"], handoff["result"], handoff["status"]) == ("refer", "ok", 200), handoff
    assert record["end_reason"] == "local_bye", record
