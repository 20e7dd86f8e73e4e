"""What a caller sends does not go raw into the request the daemon sends a queue: a bridged call from a caller whose
From user is 3,000 characters of UTF-8 reaches the queue with a short, %-escaped RFC 3261 user part."""

from __future__ import annotations

from pathlib import Path

from ivr.sip.endpoint import CallConfirmed, Peer
from tests.integration.test_handoff import QueueUas, SipUA, caller_ua, check_attached, handoff_server, record_of, uas
from tests.integration.test_server import _until

__all__ = ["caller_ua", "uas"]  # fixtures


async def test_a_hostile_caller_user_part_reaches_the_queue_escaped_and_capped(
    tmp_path: Path, uas: SipUA, caller_ua: SipUA
) -> None:
    queue = QueueUas(uas)
    server = await handoff_server(tmp_path, uas, "bridge")
    hostile = "+359" + "Ж" * 1500 + "9" * 1500  # 3,004 characters, raw UTF-8 in the From's user part
    try:
        port = server.config.sip.port
        leg = caller_ua.endpoint.call(
            request_uri=f"sip:2000@127.0.0.1:{port}", from_uri=f"sip:{hostile}@127.0.0.1",
            to_uri=f"sip:2000@127.0.0.1:{port}", peer=Peer("127.0.0.1", port), sdp=caller_ua.sdp(0),
        )  # fmt: skip
        caller_ua.flush()
        await _until(lambda: bool(uas.of(CallConfirmed)), timeout=10)
        invite = queue.invites[0]
        check_attached(invite)
        user = invite.from_.uri.user
        assert user == "+359" + "%D0%96" * 10  # 64 characters at most, cut between escapes
        assert invite.headers.get("From").isascii()
        caller_ua.endpoint.hangup(leg)
        caller_ua.flush()
        record = await record_of(server, leg.call_id)
    finally:
        await server.close()
    assert record.extra["handoff"]["result"] == "ok"
