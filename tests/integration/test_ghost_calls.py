"""One datagram must never leave a call half set up: an INVITE the daemon cannot serve gets a final response with a
reason before any call or RTP port exists, whatever goes wrong during set-up is contained (500, everything
released), and the calls the metrics count are the calls listed.

Each INVITE below made a ghost call before: 100 Trying and nothing more, the call and its RTP port kept (a tel:
Contact even past max_call_seconds), and ivr_active_calls out of step with /calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.daemon.server import IvrServer
from ivr.sip.message import Response
from tests.integration.test_server import RawCaller, free_rtp_range, start_server


@pytest.fixture
async def small_server(tmp_path: Path) -> AsyncIterator[IvrServer]:
    """A daemon with room for two calls' RTP (a leak shows at once as 503 for the next caller)."""
    overrides: dict[str, object] = {
        "cdr.url": f"sqlite:///{tmp_path / 'cdr.db'}",
        "routes": [],
        "calls.max_calls_per_second": 1000,
        "media.rtp_ports": free_rtp_range(3),
    }
    srv = await start_server(overrides)
    assert srv.ports.available == 2
    try:
        yield srv
    finally:
        await srv.close()


def _invite(caller: RawCaller, branch: str, *, contact: str | None, sdp: bytes | None) -> bytes:
    text = caller.request("INVITE", 1, branch, sdp or b"").decode("latin-1")
    lines = [line for line in text.split("\r\n") if not line.startswith("Contact:")]
    if contact is not None:
        lines.insert(7, f"Contact: {contact}")
    return "\r\n".join(lines).encode("latin-1")


GHOSTS = {
    "no Contact": (None, True, 400),
    "Contact: *": ("*", True, 400),
    "late offer without Contact": (None, False, 400),
    "tel: Contact": ("<tel:+15550100>", True, 416),
    "two Contacts": ("<sip:a@127.0.0.1:5999>, <sip:b@127.0.0.1:5998>", True, 400),
}


def _active_gauge(server: IvrServer) -> float:
    value = server.metrics.registry.get_sample_value("ivr_active_calls")
    return value or 0.0


@pytest.mark.parametrize("case", sorted(GHOSTS))
async def test_an_invite_the_daemon_cannot_serve_gets_a_final_answer_and_holds_nothing(
    small_server: IvrServer, case: str
) -> None:
    contact, with_sdp, status = GHOSTS[case]
    caller = RawCaller(small_server, f"ghost-{case.replace(' ', '-')}")
    try:
        await caller.send(_invite(caller, "g1", contact=contact, sdp=caller.sdp() if with_sdp else None))
        final = await caller.recv_final(timeout=3.0)
        assert final.status == status, final.reason
        assert "Contact" in (final.headers.get("Warning") or final.reason)
        assert not small_server.calls and small_server.ports.in_use == 0
        assert _active_gauge(small_server) == 0
    finally:
        caller.close()


async def test_an_ipv6_media_address_on_an_ipv4_daemon_is_refused_488(small_server: IvrServer) -> None:
    caller = RawCaller(small_server, "ghost-ip6")
    try:
        sdp = caller.sdp().replace(b"c=IN IP4 127.0.0.1", b"c=IN IP6 ::1")
        await caller.send(caller.request("INVITE", 1, "g6", sdp))
        final = await caller.recv_final(timeout=3.0)
        assert final.status == 488
        assert "IP6" in (final.headers.get("Warning") or "") or "IPv6" in (final.headers.get("Warning") or "")
        assert not small_server.calls and small_server.ports.in_use == 0
    finally:
        caller.close()


async def test_ten_ghost_triggers_then_a_real_caller_is_answered(small_server: IvrServer) -> None:
    ghosts = []
    try:
        for i in range(10):
            ghost = RawCaller(small_server, f"ghost-many-{i}")
            ghosts.append(ghost)
            contact, with_sdp, _status = GHOSTS[sorted(GHOSTS)[i % len(GHOSTS)]]
            await ghost.send(_invite(ghost, f"m{i}", contact=contact, sdp=ghost.sdp() if with_sdp else None))
            assert isinstance(await ghost.recv_final(timeout=3.0), Response)
        real = RawCaller(small_server, "real-after-ghosts")
        ghosts.append(real)
        assert (await real.call()).status == 200
        assert len(small_server.calls) == 1 and _active_gauge(small_server) == 1
    finally:
        for ghost in ghosts:
            ghost.close()


async def test_a_failure_while_answering_is_contained_with_a_500(
    small_server: IvrServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever breaks during set-up (here: building the call's stream) ends the INVITE with 500, releases the
    port, and the next caller is served."""
    from ivr.daemon import media_session

    original = media_session.MediaSession._start

    def broken(self: media_session.MediaSession, media: object) -> object:
        raise RuntimeError("injected failure while starting the stream")

    monkeypatch.setattr(media_session.MediaSession, "_start", broken)
    caller = RawCaller(small_server, "broken-1")
    try:
        await caller.send(caller.request("INVITE", 1, "b1", caller.sdp()))
        final = await caller.recv_final(timeout=3.0)
        assert final.status == 500
        assert not small_server.calls and small_server.ports.in_use == 0 and _active_gauge(small_server) == 0
    finally:
        caller.close()
    monkeypatch.setattr(media_session.MediaSession, "_start", original)
    again = RawCaller(small_server, "after-broken")
    try:
        assert (await again.call()).status == 200
    finally:
        again.close()
    await asyncio.sleep(0)


async def test_two_calls_that_share_a_call_id_each_leave_a_record(small_server: IvrServer) -> None:
    """Two dialogs may share a Call-ID (different From tags): each is answered and each leaves its own record (the
    second one's record used to be refused as 'already open')."""
    first, second = RawCaller(small_server, "shared-id"), RawCaller(small_server, "shared-id")
    try:
        assert (await first.call()).status == 200
        invite = second.request("INVITE", 1, "inv2", second.sdp()).replace(b";tag=caller", b";tag=other-caller")
        await second.send(invite)
        answer = await second.recv_final()
        assert answer.status == 200
        second.to_tag = answer.to.tag or ""
        ack = second.request("ACK", 1, "ack2", in_dialog=True).replace(b";tag=caller", b";tag=other-caller")
        await second.send(ack)
        assert len(small_server.calls) == 2
    finally:
        first.close()
        second.close()
    cdr = small_server.cdr
    assert cdr is not None
    for _ in range(200):  # both calls end (the welcome prompt, then BYE) and both records are written
        if not small_server.calls and cdr.backlog == 0:
            break
        await asyncio.sleep(0.05)
    records = [r for r in await cdr.fetch() if r.call_id == "shared-id"]
    assert len(records) == 2 and all(r.ended_at is not None for r in records)
    assert cdr.write_errors == 0
