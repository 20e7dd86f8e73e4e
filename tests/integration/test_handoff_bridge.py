"""Bridged handoff (B2BUA) over loopback: either side ends both, CANCEL while ringing, busy and silence take the
flow's failure path, PCMU <-> PCMA transcoding; and nobody gets the daemon to dial a target that is not configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.config import ConfigError
from ivr.media.g711 import alaw_encode, ulaw_decode
from ivr.sip.endpoint import CallAnswered, CallConfirmed, CallEnded, EndReason, IncomingCall, TransferProgress
from tests.integration.test_handoff import (
    FLOW,
    PCMA_FRAME,
    PCMU_FRAME,
    QueueUas,
    SipUA,
    Transferee,
    caller_ua,
    check_attached,
    handoff_server,
    record_of,
    uas,
)
from tests.integration.test_server import _until, start_server

__all__ = ["caller_ua", "uas"]  # fixtures


async def test_caller_hangs_up_a_bridged_call_and_the_queue_leg_gets_bye(
    tmp_path: Path, uas: SipUA, caller_ua: SipUA
) -> None:
    QueueUas(uas)
    server = await handoff_server(tmp_path, uas, "bridge")
    try:
        caller = Transferee(caller_ua)
        leg = caller.dial(server)
        await _until(lambda: bool(uas.of(CallConfirmed)), timeout=10)
        caller_ua.endpoint.hangup(leg)
        caller_ua.flush()
        await _until(lambda: bool(uas.of(CallEnded)), timeout=5)
        assert uas.of(CallEnded)[0].reason is EndReason.REMOTE_BYE
        record = await record_of(server, leg.call_id)
    finally:
        await server.close()
    assert record.end_reason == "remote_bye" and record.extra["handoff"]["result"] == "ok"


async def test_caller_hangs_up_while_the_queue_rings_and_the_invite_is_cancelled(
    tmp_path: Path, uas: SipUA, caller_ua: SipUA
) -> None:
    QueueUas(uas, mode="ring")
    server = await handoff_server(tmp_path, uas, "bridge")
    try:
        caller = Transferee(caller_ua)
        leg = caller.dial(server)
        await _until(lambda: bool(uas.of(IncomingCall)), timeout=10)
        await _until(lambda: any(pt == 0 for pt, _ in caller_ua.rtp_received), timeout=5)  # ringback is heard
        caller_ua.endpoint.hangup(leg)
        caller_ua.flush()
        await _until(lambda: bool(uas.of(CallEnded)), timeout=5)
        assert uas.of(CallEnded)[0].reason is EndReason.CANCELLED
        record = await record_of(server, leg.call_id)
    finally:
        await server.close()
    assert record.extra["handoff"]["reason"] == "the caller hung up"


async def test_busy_queue_takes_the_failure_path_with_the_reason(tmp_path: Path, uas: SipUA, caller_ua: SipUA) -> None:
    queue = QueueUas(uas, mode="busy")
    server = await handoff_server(tmp_path, uas, "bridge")
    try:
        caller = Transferee(caller_ua)
        leg = caller.dial(server)
        await _until(lambda: leg.end_reason is not None, timeout=15)
        record = await record_of(server, leg.call_id)
    finally:
        await server.close()
    check_attached(queue.invites[0])
    assert record.path == ["identify", "to-queue", "sorry"]
    handoff = record.extra["handoff"]
    assert (handoff["result"], handoff["status"], handoff["reason"]) == ("failed", 486, "queue answered 486")


async def test_unanswered_queue_is_cancelled_after_answer_timeout(tmp_path: Path, uas: SipUA, caller_ua: SipUA) -> None:
    QueueUas(uas, mode="ring")
    server = await handoff_server(tmp_path, uas, "bridge", answer_timeout="1s")
    try:
        caller = Transferee(caller_ua)
        leg = caller.dial(server)
        await _until(lambda: bool(uas.of(CallEnded)), timeout=10)
        assert uas.of(CallEnded)[0].reason is EndReason.CANCELLED
        await _until(lambda: leg.end_reason is not None, timeout=15)
        record = await record_of(server, leg.call_id)
    finally:
        await server.close()
    assert record.extra["handoff"]["reason"] == "no answer from the queue within 1s"
    assert record.path[-1] == "sorry"


async def test_pcmu_caller_and_pcma_queue_are_transcoded_both_ways(
    tmp_path: Path, uas: SipUA, caller_ua: SipUA
) -> None:
    QueueUas(uas, pt=8)
    server = await handoff_server(tmp_path, uas, "bridge")
    try:
        caller = Transferee(caller_ua)
        leg = caller.dial(server, pt=0)
        await _until(lambda: bool(uas.of(CallConfirmed)), timeout=10)
        queue_leg = uas.of(CallConfirmed)[0].leg
        caller_ua.send_rtp(caller_ua.of(CallAnswered)[0].response.body, 0, PCMU_FRAME, 20)
        uas.send_rtp(queue_leg.invite.body, 8, PCMA_FRAME, 20)
        as_alaw = alaw_encode(ulaw_decode(PCMU_FRAME))
        await _until(lambda: sum(1 for pt, p in uas.rtp_received if (pt, p) == (8, as_alaw)) >= 15, timeout=5)
        from_queue = [p for pt, p in caller_ua.rtp_received if pt == 0 and p[0] == p[-1] and p != PCMU_FRAME]
        await _until(lambda: len([p for pt, p in caller_ua.rtp_received if pt == 0 and len(set(p)) == 1]) >= 15)
        assert all(len(p) == 160 for p in from_queue)
        caller_ua.endpoint.hangup(leg)
        caller_ua.flush()
        await _until(lambda: not server.calls, timeout=5)
    finally:
        await server.close()


async def test_a_callers_own_refer_to_the_daemon_is_refused_403(tmp_path: Path, uas: SipUA, caller_ua: SipUA) -> None:
    QueueUas(uas, mode="ring")
    server = await handoff_server(tmp_path, uas, "bridge")
    try:
        caller = Transferee(caller_ua)
        leg = caller.dial(server)
        await _until(lambda: bool(caller_ua.of(CallAnswered)), timeout=10)
        caller_ua.endpoint.refer(leg, "<sip:+900123@198.51.100.7>", referred_by="<sip:0888123456@127.0.0.1>")
        caller_ua.flush()
        await _until(lambda: bool(caller_ua.of(TransferProgress)), timeout=5)
        (refused,) = caller_ua.of(TransferProgress)
        assert (refused.status, refused.final) == (403, True)
        assert leg.end_reason is None  # the call goes on; only the transfer was refused
        caller_ua.endpoint.hangup(leg)
        caller_ua.flush()
    finally:
        await server.close()


async def test_a_flow_naming_an_unconfigured_queue_does_not_load(tmp_path: Path, uas: SipUA) -> None:
    (tmp_path / "queues.yaml").write_text("queues:\n  sales:\n    uri: sip:sales@127.0.0.1:5099\n")
    (tmp_path / "line.yaml").write_text(FLOW)
    with pytest.raises(Exception) as caught:
        await start_server({
            "cdr.url": f"sqlite:///{tmp_path / 'cdr.db'}", "admin.listen": None,
            "queues": str(tmp_path / "queues.yaml"), "flows.prompt_cache": str(tmp_path / "cache"),
            "routes": [{"client": "acme", "numbers": ["2000"], "flow": str(tmp_path / "line.yaml")}],
        })  # fmt: skip
    assert "there is no queue called `billing`" in str(getattr(caught.value, "problems", caught.value))
    (tmp_path / "queues.yaml").write_text("queues:\n  sales:\n    uri: tel:+3592\n")
    with pytest.raises(ConfigError, match=r"queues.yaml:3: queues.sales.uri"):
        await start_server({"queues": str(tmp_path / "queues.yaml"), "admin.listen": None, "routes": []})


async def test_a_queues_session_refresh_reinvite_keeps_the_bridged_call(
    tmp_path: Path, uas: SipUA, caller_ua: SipUA
) -> None:
    """An ACD that refreshes the session (RFC 4028) or moves its media sends a re-INVITE on the bridged leg: a
    refresh without SDP is answered 200 with our session as it is, one with SDP 200 with our answer, and the call
    stays bridged (this leg used to refuse every re-INVITE with 488, which ends a refreshing ACD's call)."""
    import asyncio
    import socket

    from ivr.sip.headers import Via
    from ivr.sip.message import Response, parse_message

    QueueUas(uas)
    server = await handoff_server(tmp_path, uas, "bridge")
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    raw.setblocking(False)
    try:
        caller = Transferee(caller_ua)
        caller.dial(server)
        await _until(lambda: bool(uas.of(CallConfirmed)), timeout=10)
        queue_leg = uas.of(CallConfirmed)[0].leg
        assert queue_leg.dialog is not None
        loop = asyncio.get_running_loop()
        statuses = []
        for body in (b"", uas.sdp(0)):  # a bodiless refresh, then one re-offering the queue's same media
            via = Via("UDP", "127.0.0.1", int(raw.getsockname()[1]), {"rport": None})
            request = queue_leg.dialog.create_request(
                "INVITE", via=via, body=body, content_type="application/sdp" if body else None
            )
            await loop.sock_sendto(raw, request.to_bytes(), ("127.0.0.1", server.config.sip.port))
            while True:
                data = await asyncio.wait_for(loop.sock_recv(raw, 65535), 3)
                response = parse_message(data)
                assert isinstance(response, Response)
                if response.status >= 200:
                    break
            statuses.append((response.status, b"m=audio" in response.body))
            # the bodiless refresh got the daemon's offer in the 200: the ACK carries the answer (the same media)
            answer = uas.sdp(0) if not body else b""
            ack_via = Via("UDP", "127.0.0.1", int(raw.getsockname()[1]), {})
            ctype = "application/sdp" if answer else None
            ack = queue_leg.dialog.create_ack(request, via=ack_via, body=answer, content_type=ctype)
            await loop.sock_sendto(raw, ack.to_bytes(), ("127.0.0.1", server.config.sip.port))
        assert statuses == [(200, True), (200, True)]
        assert len(server.calls) == 1 and not uas.of(CallEnded)
    finally:
        raw.close()
        await server.close()
