"""``media.send_after_first_packet`` through the daemon's media session (SDP offer -> answer -> stream) over real
loopback sockets, on asyncio's loop and on uvloop: a caller whose SDP names another address (a third party) gets no
RTP sent there; RTP starts when the caller sends RTP itself, and goes to where the caller sent from."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ivr.daemon.media_session import EphemeralPorts, MediaPolicy, MediaSessions
from ivr.media.rtp import RtpPacket
from ivr.sip.sdp import build_offer
from tests.integration.test_media_stream import LOOP_FACTORIES, Receiver, Runner, started_clock, until

FRAME = b"\xff" * 160


@pytest.fixture(params=sorted(LOOP_FACTORIES))
def run(request: pytest.FixtureRequest) -> Runner:
    def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
        with asyncio.Runner(loop_factory=LOOP_FACTORIES[request.param]) as runner:
            runner.run(asyncio.wait_for(scenario(), 20))

    return run


def offer_naming(address: tuple[str, int]) -> bytes:
    """An INVITE's SDP whose c=/m= point at ``address`` (someone other than the sender)."""
    sdp = build_offer(local_address=address[0], local_port=address[1], session_id=7, session_version=7)
    return sdp.serialize()


@pytest.mark.parametrize("relatch", [True, False], ids=["symmetric", "latch-only"])
def test_no_rtp_reaches_the_sdp_address_until_the_caller_sends_rtp(run: Runner, relatch: bool) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        clock = started_clock(loop)
        victim = Receiver(loop)  # the third party the SDP names; it never sends
        caller = Receiver(loop)  # where the caller really is
        policy = MediaPolicy(address="127.0.0.1", send_after_first_packet=True, allow_relatch=relatch)
        session = MediaSessions(clock, EphemeralPorts("127.0.0.1"), policy).open()
        session.answer(offer_naming(victim.address))
        stream = session.stream
        assert stream is not None and stream.remote == victim.address and stream.awaiting_first_packet
        stream.play([FRAME] * 10, loop=True)
        await asyncio.sleep(0.3)
        assert victim.packets == [] and caller.packets == []
        assert stream.stats.frames_not_sent_waiting >= 10 and stream.stats.packets_sent == 0
        caller.sock.sendto(RtpPacket(0, 1, 160, 9, FRAME).serialize(), stream.local_address)
        if relatch:
            await until(lambda: len(caller.packets) >= 5)
            assert stream.remote == caller.address and stream.stats.relatched == 1
            assert caller.packets[0][1].marker and caller.packets[0][2] == stream.local_address
        else:  # the caller's packet is not from the SDP address: still nothing, anywhere
            await until(lambda: stream.stats.dropped_wrong_source == 1)
            await asyncio.sleep(0.2)
            assert caller.packets == [] and stream.awaiting_first_packet
        await asyncio.sleep(0.1)
        assert victim.packets == []
        assert session.stream is not None and session.stream.call_record()["rtp_send_latch"] == (
            "latched" if relatch else "waiting"
        )
        session.close()
        clock.stop()
        victim.close()
        caller.close()

    run(scenario)


def test_off_by_default_the_sdp_address_gets_rtp_at_once(run: Runner) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        clock = started_clock(loop)
        target = Receiver(loop)
        session = MediaSessions(clock, EphemeralPorts("127.0.0.1"), MediaPolicy(address="127.0.0.1")).open()
        session.answer(offer_naming(target.address))
        assert session.stream is not None and not session.stream.send_after_first_packet
        session.stream.play([FRAME] * 5)
        await until(lambda: len(target.packets) == 5)
        session.close()
        clock.stop()
        target.close()

    run(scenario)
