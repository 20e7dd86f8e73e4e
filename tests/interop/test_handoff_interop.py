"""baresip, a real softphone, is handed to a queue by REFER: the daemon (in-process, on loopback) runs a flow whose
queue node transfers the call; baresip answers the REFER 202, reports progress by NOTIFY sipfrag and INVITEs the
queue endpoint (a UAS on our endpoint) that checks the attached headers and UUI byte for byte; the daemon ends its
own leg with BYE once the sipfrag says 200."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ivr.daemon.server import IvrServer
from ivr.sip.endpoint import CallConfirmed, TransferProgress
from tests.integration.test_handoff import QueueUas, SipUA, check_attached, handoff_server, uas
from tests.integration.test_server import _until
from tests.interop.peers import Baresip

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("need_baresip")]

__all__ = ["uas"]  # fixture


def _spy(server: IvrServer) -> list[TransferProgress]:
    progress: list[TransferProgress] = []
    original = server.handoff.on_transfer_progress

    def spy(event: TransferProgress) -> None:
        progress.append(event)
        original(event)

    server.handoff.on_transfer_progress = spy  # type: ignore[method-assign]
    return progress


async def _only_record(server: IvrServer) -> Any:
    await _until(lambda: not server.calls, timeout=10)
    await _until(lambda: server.cdr is not None and server.cdr.backlog == 0, timeout=10)
    assert server.cdr is not None
    (record,) = await server.cdr.fetch()
    return record


async def test_baresip_is_transferred_by_refer_and_the_ivr_leg_ends_with_bye(tmp_path: Path, uas: SipUA) -> None:
    queue = QueueUas(uas)
    server = await handoff_server(tmp_path, uas, "refer", refer_headers="false")
    progress = _spy(server)
    try:
        with Baresip(answermode="auto") as phone:
            await asyncio.to_thread(phone.dial, f"sip:2000@127.0.0.1:{server.config.sip.port}")
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 10)
            await _until(lambda: bool(uas.of(CallConfirmed)), timeout=20)
            record = await _only_record(server)
            assert queue.invites[0].uri == f"sip:billing@127.0.0.1:{uas.port}"
            assert queue.invites[0].from_.uri.user == "tester"  # baresip itself calls the queue
    finally:
        await server.close()
    assert progress[0].status == 202 and progress[-1].final and progress[-1].status == 200
    handoff = record.extra["handoff"]
    assert (handoff["used"], handoff["result"], handoff["status"]) == ("refer", "ok", 200), handoff
    assert record.end_reason == "local_bye", record  # our BYE after the 200 sipfrag


async def test_baresip_mangles_refer_to_headers_so_refer_then_bridge_bridges_with_the_data(
    tmp_path: Path, uas: SipUA
) -> None:
    """baresip 1.0.0 puts Refer-To URI headers into its new INVITE's Request-URI (half unescaped) instead of the
    header fields; a strict queue endpoint answers that 400. The sipfrag says so, and ``refer-then-bridge`` then
    bridges the call itself, with the headers and UUI intact."""
    queue = QueueUas(uas)
    server = await handoff_server(tmp_path, uas, "refer-then-bridge")
    progress = _spy(server)
    try:
        with Baresip(answermode="auto") as phone:
            await asyncio.to_thread(phone.dial, f"sip:2000@127.0.0.1:{server.config.sip.port}")
            await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 10)
            await _until(lambda: bool(uas.of(CallConfirmed)), timeout=20)
            bridged = uas.of(CallConfirmed)[0].leg.invite
            check_attached(bridged)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(phone.hangup)
            record = await _only_record(server)
    finally:
        await server.close()
    assert any(p.final and p.status == 400 for p in progress), progress
    handoff = record.extra["handoff"]
    assert (handoff["used"], handoff["result"], handoff["refer"]["status"]) == ("bridge", "ok", 400), handoff
    assert handoff["bridge"]["from_caller"] > 0 and handoff["bridge"]["to_queue"] > 0, handoff
    assert len(queue.invites) == 1  # baresip's INVITE was refused at parse time (400); this is the bridge's
