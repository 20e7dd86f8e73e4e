"""The daemon routes a dialled number to its client's flow and runs it on a real call (SIP INFO digits here;
RFC 4733 digits from real peers in the interop suite)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.daemon.server import IvrServer
from ivr.sip.message import Request
from tests.integration.test_server import RawCaller, _ok_for, _until, start_server

FLOW = textwrap.dedent(
    """
    name: test-line
    languages: [en]
    language: en
    start: menu
    prompts:
      menu: {en: "Press one for billing."}
      billing: {en: "Billing."}
      sorry: {en: "Sorry."}
      bye: {en: "Goodbye."}
    nodes:
      menu:
        type: menu
        prompt: menu
        options:
          - {key: "1", next: billing}
        timeout: 2s
        no_input: {prompt: sorry, tries: 2}
        no_match: {prompt: sorry, tries: 2}
        failure: goodbye
      billing: {type: play, prompt: billing, next: goodbye}
      goodbye: {type: hangup, prompt: bye}
    """
)


@pytest.fixture
async def flow_server(tmp_path: Path) -> AsyncIterator[IvrServer]:
    (tmp_path / "line.yaml").write_text(FLOW)
    overrides: dict[str, object] = {
        "cdr.url": f"sqlite:///{tmp_path / 'cdr.db'}",
        "admin.listen": None,
        "routes": [{"client": "acme", "numbers": ["2000"], "flow": str(tmp_path / "line.yaml")}],
        "flows.prompt_cache": str(tmp_path / "cache"),
        "flows.watch_interval": 0.1,
    }
    srv = await start_server(overrides)
    try:
        yield srv
    finally:
        await srv.close()


async def send_info(caller: RawCaller, cseq: int, key: str) -> None:
    body = f"Signal={key}\r\nDuration=100\r\n".encode()
    await caller.send(caller.request("INFO", cseq, f"info{cseq}", body, True, "application/dtmf-relay"))


async def test_dialled_number_runs_its_flow_and_the_record_names_client_flow_and_path(
    flow_server: IvrServer,
) -> None:
    caller = RawCaller(flow_server, "flow-1")
    try:
        assert (await caller.call()).status == 200
        await asyncio.sleep(0.3)  # the menu prompt is playing
        await send_info(caller, 2, "1")
        msg = await caller.recv(10)
        while not (isinstance(msg, Request) and msg.method == "BYE"):
            msg = await caller.recv(10)
        await caller.send(_ok_for(msg))
    finally:
        caller.close()
    assert flow_server.cdr is not None
    await _until(lambda: flow_server.cdr is not None and flow_server.cdr.backlog == 0 and not flow_server.calls)
    (record,) = [r for r in await flow_server.cdr.fetch() if r.call_id == "flow-1"]
    assert record.client == "acme" and record.flow == "test-line" and record.flow_version
    assert record.path == ["menu", "billing", "goodbye"]
    assert record.end_reason == "local_bye"
    assert record.extra["prompts"][-2:] == ["billing.en", "bye.en"]


async def test_number_without_a_route_is_404(flow_server: IvrServer) -> None:
    caller = RawCaller(flow_server, "flow-404")
    caller.dest = ("127.0.0.1", flow_server.config.sip.port)
    try:
        invite = caller.request("INVITE", 1, "x404", caller.sdp()).replace(b"sip:2000@", b"sip:9999@")
        await caller.send(invite)
        final = await caller.recv_final()
        assert final.status == 404 and "9999" in (final.headers.get("Warning") or "")
    finally:
        caller.close()


async def test_reload_with_a_broken_flow_changes_nothing(flow_server: IvrServer, tmp_path: Path) -> None:
    before = flow_server.flows()
    (tmp_path / "line.yaml").write_text(FLOW.replace("next: goodbye}", "next: nowhere}"))
    result = await flow_server.reload()
    assert not result.ok and any("nowhere" in e for e in result.errors)
    assert flow_server.flows() == before
    (tmp_path / "line.yaml").write_text(FLOW.replace("Billing.", "Billing department."))
    result = await flow_server.reload()
    assert result.ok and flow_server.flows()[0]["version"] != before[0]["version"]


async def test_a_changed_flow_file_is_reloaded_by_itself(flow_server: IvrServer, tmp_path: Path) -> None:
    before = flow_server.flows()[0]["version"]
    (tmp_path / "line.yaml").write_text(FLOW.replace("Goodbye.", "Goodbye, and thank you."))
    await _until(lambda: flow_server.flows()[0]["version"] != before, timeout=10)


RECORD_FLOW = textwrap.dedent(
    """
    name: message-line
    languages: [en]
    language: en
    start: record
    prompts:
      leave: {en: "Leave a message after the tone."}
      saved: {en: "Saved."}
    nodes:
      record:
        type: record
        prompt: leave
        into: message
        max_length: 10s
        beep: true
        terminator: "#"
        next: saved
      saved: {type: hangup, prompt: saved}
    """
)


async def test_record_node_writes_the_callers_audio_until_the_hash_key(tmp_path: Path) -> None:
    import numpy as np
    import soundfile

    from ivr.media import g711
    from ivr.media.rtp import RtpPacket

    (tmp_path / "msg.yaml").write_text(RECORD_FLOW)
    overrides: dict[str, object] = {
        "cdr.url": f"sqlite:///{tmp_path / 'cdr.db'}",
        "admin.listen": None,
        "routes": [{"client": "acme", "numbers": ["*"], "flow": str(tmp_path / "msg.yaml")}],
        "flows.prompt_cache": str(tmp_path / "cache"),
        "calls.recordings_dir": str(tmp_path / "recordings"),
    }
    server = await start_server(overrides)
    caller = RawCaller(server, "rec-1")
    try:
        ok = await caller.call()
        rtp_port = int(ok.body.split(b"m=audio ")[1].split(b" ")[0])
        loop = asyncio.get_running_loop()
        await asyncio.sleep(3.0)  # the prompt and the beep
        tone = (np.sin(2 * np.pi * 440 * np.arange(8000) / 8000) * 6000).astype(np.int16)
        encoded = g711.encode("PCMU", tone)
        for i in range(50):  # one second of a 440 Hz tone, paced like a phone
            packet = RtpPacket(0, 1000 + i, 160 * i, 0x1234, encoded[i * 160 : (i + 1) * 160], marker=i == 0)
            await loop.sock_sendto(caller.rtp, packet.serialize(), ("127.0.0.1", rtp_port))
            await asyncio.sleep(0.02)
        await send_info(caller, 2, "#")
        msg = await caller.recv(10)
        while not (isinstance(msg, Request) and msg.method == "BYE"):
            msg = await caller.recv(10)
        await caller.send(_ok_for(msg))
        await _until(lambda: not server.calls)
    finally:
        caller.close()
        await server.close()
    (wav,) = list((tmp_path / "recordings").rglob("*.wav"))
    audio, rate = soundfile.read(wav, dtype="int16")
    assert rate == 8000 and 0.7 < len(audio) / rate < 1.5
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64)))
    assert abs(np.argmax(spectrum) * rate / len(audio) - 440) < 5


async def test_inband_tones_drive_the_flow_when_telephone_event_is_not_negotiated(flow_server: IvrServer) -> None:
    import numpy as np

    from ivr.media import g711
    from ivr.media.dtmf_inband import dtmf_tone
    from ivr.media.rtp import RtpPacket

    caller = RawCaller(flow_server, "inband-1", codecs="0")  # PCMU only: no telephone-event, so tones in-band
    try:
        ok = await caller.call()
        assert b"telephone-event" not in ok.body
        rtp_port = int(ok.body.split(b"m=audio ")[1].split(b" ")[0])
        silence = np.zeros(int(0.6 * 8000))
        tone = np.clip(dtmf_tone("1", 0.12), -32768, 32767)
        audio = np.concatenate([silence, tone, silence]).astype(np.int16)
        encoded = g711.encode("PCMU", audio)
        loop = asyncio.get_running_loop()
        for i in range(len(encoded) // 160):
            packet = RtpPacket(0, 500 + i, 160 * i, 0x4321, encoded[i * 160 : (i + 1) * 160], marker=i == 0)
            await loop.sock_sendto(caller.rtp, packet.serialize(), ("127.0.0.1", rtp_port))
            await asyncio.sleep(0.02)
        msg = await caller.recv(10)
        while not (isinstance(msg, Request) and msg.method == "BYE"):
            msg = await caller.recv(10)
        await caller.send(_ok_for(msg))
    finally:
        caller.close()
    assert flow_server.cdr is not None
    await _until(lambda: flow_server.cdr is not None and flow_server.cdr.backlog == 0 and not flow_server.calls)
    (record,) = [r for r in await flow_server.cdr.fetch() if r.call_id == "inband-1"]
    assert record.path == ["menu", "billing", "goodbye"]
    assert record.extra["media"]["dtmf_heard"] == "inband"
