"""Key presses across a bridged handoff, over loopback UDP: the caller's keys reach the queue (the ACD's own menu, a
payment line) and the queue's keys reach the caller, as RFC 4733 with each leg's own telephone-event payload type,
counted and decoded by our own MediaStream on the far side; a key that came by SIP INFO crosses as RFC 4733; a leg
without telephone-event gets the keys by SIP INFO."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ivr.daemon.server import IvrServer
from ivr.media.clock import MediaClock
from ivr.media.digits import DigitEvent
from ivr.media.stream import MediaStream
from ivr.sip.endpoint import CallAnswered, CallConfirmed, CallEvent, DigitInfo, IncomingCall, Leg, Peer
from tests.integration.test_handoff import SipUA, caller_ua, handoff_server, record_of, uas
from tests.integration.test_server import _until

__all__ = ["caller_ua", "uas"]  # fixtures

CALLER_TE = 96  # the caller's and the queue's telephone-event payload types differ: the bridge maps them
QUEUE_TE = 101


def sdp(ua: SipUA, telephone_event: int | None) -> bytes:
    formats = "0" if telephone_event is None else f"0 {telephone_event}"
    text = (
        f"v=0\r\no={ua.name} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {ua.rtp_port} RTP/AVP {formats}\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    if telephone_event is not None:
        text += f"a=rtpmap:{telephone_event} telephone-event/8000\r\na=fmtp:{telephone_event} 0-15\r\n"
    return (text + "a=ptime:20\r\na=sendrecv\r\n").encode()


def rtp_address(body: bytes) -> tuple[str, int]:
    lines = body.decode().split("\r\n")
    host = next(line[9:] for line in lines if line.startswith("c=IN IP4 "))
    return host, int(next(line.split()[1] for line in lines if line.startswith("m=audio ")))


@dataclass
class Side:
    """One end of the bridged call, with our own MediaStream on its RTP socket (it hears and sends keys)."""

    ua: SipUA
    telephone_event: int | None
    stream: MediaStream | None = None
    heard: list[DigitEvent] = field(default_factory=list)

    def attach(self, remote_sdp: bytes) -> MediaStream:
        # The stream reads the socket from now on (the fixture's close removes its reader and closes the socket).
        self.ua.loop.remove_reader(self.ua.rtp.fileno())
        clock = MediaClock(self.ua.loop)  # this test peer's own media clock (it sends only key presses)
        clock.start()
        self.stream = MediaStream(self.ua.loop, self.ua.rtp, codec="PCMU", payload_type=0,
                                  remote=rtp_address(remote_sdp), telephone_event_pt=self.telephone_event,
                                  on_digit_event=self.heard.append, clock=clock)  # fmt: skip
        return self.stream

    def ended(self) -> list[str]:
        return [d.key for d in self.heard if d.ended]


def answer_with(queue: Side) -> Callable[[CallEvent], None]:
    def on_event(event: CallEvent) -> None:
        if isinstance(event, IncomingCall):
            queue.ua.endpoint.answer(event.leg, sdp(queue.ua, queue.telephone_event))
            queue.ua.flush()

    return on_event


async def bridged_call(server: IvrServer, caller: Side, queue: Side) -> Leg:
    """Dial the daemon, wait until it bridged the call to the queue, and put our streams on both ends."""
    port = server.config.sip.port
    leg = caller.ua.endpoint.call(
        request_uri=f"sip:2000@127.0.0.1:{port}", from_uri="sip:0888123456@127.0.0.1",
        to_uri=f"sip:2000@127.0.0.1:{port}", peer=Peer("127.0.0.1", port), sdp=sdp(caller.ua, caller.telephone_event),
    )  # fmt: skip
    caller.ua.flush()
    await _until(lambda: bool(queue.ua.of(CallConfirmed)) and bool(caller.ua.of(CallAnswered)), timeout=10)
    caller.attach(caller.ua.of(CallAnswered)[0].response.body)
    queue.attach(queue.ua.of(CallConfirmed)[0].leg.invite.body)
    bridges = server.handoff.bridged
    await _until(lambda: any((b := bridges(c)) is not None and b.bridge is not None for c in server.calls.values()))
    return leg


async def hang_up(server: IvrServer, caller: Side, leg: Leg) -> None:
    caller.ua.endpoint.hangup(leg)
    caller.ua.flush()
    await _until(lambda: not server.calls, timeout=5)


async def test_keys_the_caller_presses_reach_the_queue_as_its_own_telephone_events(
    tmp_path: Path, uas: SipUA, caller_ua: SipUA
) -> None:
    caller, queue = Side(caller_ua, CALLER_TE), Side(uas, QUEUE_TE)
    uas.on_event = answer_with(queue)
    server = await handoff_server(tmp_path, uas, "bridge")
    try:
        leg = await bridged_call(server, caller, queue)
        assert caller.stream is not None and queue.stream is not None
        for key in "1#":
            caller.stream.send_digit(key, duration_ms=120)
        await _until(lambda: len(queue.ended()) == 2, timeout=5)
        assert [(d.key, d.source, d.duration_ms) for d in queue.heard] == [("1", "rfc4733", 120), ("#", "rfc4733", 120)]
        assert queue.stream.stats.dtmf_digits == 2  # each press counted once (three end packets, one press)
        assert queue.stream.stats.ignored_payload_type == 0  # nothing came with the caller's payload type 96
        await hang_up(server, caller, leg)
        record = await record_of(server, leg.call_id)
    finally:
        await server.close()
    assert record.extra["handoff"]["bridge"]["digits_to_queue"] == 2


async def test_keys_the_queue_sends_reach_the_caller(tmp_path: Path, uas: SipUA, caller_ua: SipUA) -> None:
    caller, queue = Side(caller_ua, CALLER_TE), Side(uas, QUEUE_TE)
    uas.on_event = answer_with(queue)
    server = await handoff_server(tmp_path, uas, "bridge")
    try:
        leg = await bridged_call(server, caller, queue)
        assert caller.stream is not None and queue.stream is not None
        for key in "9*4":
            queue.stream.send_digit(key, duration_ms=80)
        await _until(lambda: len(caller.ended()) == 3, timeout=5)
        assert [(d.key, d.duration_ms) for d in caller.heard] == [("9", 80), ("*", 80), ("4", 80)]
        assert caller.stream.stats.ignored_payload_type == 0
        await hang_up(server, caller, leg)
        record = await record_of(server, leg.call_id)
    finally:
        await server.close()
    assert record.extra["handoff"]["bridge"]["digits_to_caller"] == 3


async def test_a_key_the_caller_sends_by_sip_info_reaches_the_queue_as_rfc4733(
    tmp_path: Path, uas: SipUA, caller_ua: SipUA
) -> None:
    caller, queue = Side(caller_ua, CALLER_TE), Side(uas, QUEUE_TE)
    uas.on_event = answer_with(queue)
    server = await handoff_server(tmp_path, uas, "bridge")
    try:
        leg = await bridged_call(server, caller, queue)
        caller_ua.endpoint.send_info_digit(leg, "7", 160)
        caller_ua.flush()
        await _until(lambda: queue.ended() == ["7"], timeout=5)
        (press,) = queue.heard
        assert (press.source, press.duration_ms) == ("rfc4733", 160)
        await hang_up(server, caller, leg)
    finally:
        await server.close()


async def test_a_queue_without_telephone_event_gets_the_callers_keys_by_sip_info(
    tmp_path: Path, uas: SipUA, caller_ua: SipUA
) -> None:
    caller, queue = Side(caller_ua, CALLER_TE), Side(uas, None)
    uas.on_event = answer_with(queue)
    server = await handoff_server(tmp_path, uas, "bridge")
    try:
        leg = await bridged_call(server, caller, queue)
        assert caller.stream is not None
        caller.stream.send_digit("3", duration_ms=100)
        caller.stream.send_digit("0", duration_ms=200)
        await _until(lambda: len(uas.of(DigitInfo)) == 2, timeout=5)
        assert [(i.key, i.duration_ms) for i in uas.of(DigitInfo)] == [("3", 100), ("0", 200)]
        await hang_up(server, caller, leg)
    finally:
        await server.close()
