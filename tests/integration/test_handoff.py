"""Queue handoff end to end over loopback UDP: the daemon runs a flow whose queue node hands the caller to a queue
endpoint, by REFER (the caller is a transferee UA on our endpoint, acting like baresip) or by bridging; the queue
endpoint is a UAS on our endpoint that checks the attached headers and UUI byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ivr.daemon.server import IvrServer
from ivr.handoff.data import decode_uui
from ivr.sip.endpoint import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallEvent,
    CallProgress,
    EndpointConfig,
    IncomingCall,
    Leg,
    Peer,
    ReferReceived,
    SipEndpoint,
)
from ivr.sip.refer import parse_refer_to
from ivr.sip.transaction import TimerValues
from tests.integration.test_server import _until, start_server

PCMU_FRAME = bytes([0x11]) * 160  # a constant mu-law frame: what the other side receives is checkable
PCMA_FRAME = bytes([0x55]) * 160

FLOW = textwrap.dedent(
    """
    name: handoff-line
    languages: [en]
    language: en
    start: identify
    prompts:
      sorry: {en: "Sorry."}
    nodes:
      identify:
        type: set
        vars: {account: "12 34&5"}
        next: to-queue
      to-queue:
        type: queue
        queue: billing
        data: {account: "{{ account }}", language: "{{ language }}", intent: billing}
        failure: sorry
      sorry: {type: hangup, prompt: sorry}
    """
)


class SipUA:
    """A SIP user agent on our own endpoint over a real UDP socket, with a plain RTP socket that counts packets.

    ``on_event`` decides what it does (answer, reject, ring, accept a REFER ...); the default records events."""

    def __init__(self, name: str, *, transferee: bool = False) -> None:
        self.name = name
        self.transferee = transferee
        self.events: list[CallEvent] = []
        self.rtp_received: list[tuple[int, bytes]] = []  # (payload type, payload)
        self.on_event: Callable[[CallEvent], None] = lambda _event: None
        self._timer: asyncio.TimerHandle | None = None
        self._senders: list[asyncio.Task[None]] = []

    async def start(self) -> SipUA:
        self.loop = asyncio.get_running_loop()
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.setblocking(False)
        self.port = int(self.sip.getsockname()[1])
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)
        self.rtp_port = int(self.rtp.getsockname()[1])
        self.endpoint = SipEndpoint(
            EndpointConfig(
                host="127.0.0.1",
                port=self.port,
                user_agent=self.name,
                transferee=self.transferee,
                timers=TimerValues(t1=0.1, t2=0.4, t4=0.5),
            )
        )
        self.loop.add_reader(self.sip.fileno(), self._read_sip)
        self.loop.add_reader(self.rtp.fileno(), self._read_rtp)
        return self

    def close(self) -> None:
        for task in self._senders:
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        self.loop.remove_reader(self.sip.fileno())
        self.loop.remove_reader(self.rtp.fileno())
        self.sip.close()
        self.rtp.close()

    @property
    def uri(self) -> str:
        return f"sip:{self.name}@127.0.0.1:{self.port}"

    def sdp(self, pt: int = 0) -> bytes:
        name = {0: "PCMU", 8: "PCMA"}[pt]
        return (
            f"v=0\r\no={self.name} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.rtp_port} RTP/AVP {pt} 101\r\na=rtpmap:{pt} {name}/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
        ).encode()

    def _read_sip(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                data, addr = self.sip.recvfrom(65536)
                self.endpoint.receive(data, Peer(addr[0], addr[1], "udp"), self.loop.time())
                self.flush()

    def _read_rtp(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                data, _addr = self.rtp.recvfrom(2048)
                self.rtp_received.append((data[1] & 0x7F, data[12:]))

    def flush(self) -> None:
        while True:
            for out in self.endpoint.datagrams_to_send(self.loop.time()):
                self.sip.sendto(out.data, (out.peer.host, out.peer.port))
            events = []
            while (event := self.endpoint.next_event()) is not None:
                events.append(event)
            if not events:
                break
            for event in events:
                self.events.append(event)
                self.on_event(event)
        if self._timer is not None:
            self._timer.cancel()
        timer_at = self.endpoint.get_timer()
        self._timer = self.loop.call_at(timer_at, self._fire, timer_at) if timer_at is not None else None

    def _fire(self, timer_at: float) -> None:
        self._timer = None
        self.endpoint.handle_timer(max(timer_at, self.loop.time()))
        self.flush()

    def send_rtp(self, remote_sdp: bytes, pt: int, frame: bytes, count: int) -> None:
        """Send ``count`` packets, one per 20 ms, to the address in ``remote_sdp``."""
        text = remote_sdp.decode()
        host = next(line[9:] for line in text.split("\r\n") if line.startswith("c=IN IP4 "))
        port = int(next(line.split()[1] for line in text.split("\r\n") if line.startswith("m=audio ")))

        async def run() -> None:
            for seq in range(count):
                packet = struct.pack("!BBHII", 0x80, pt, seq, seq * 160, 0x1234) + frame
                self.rtp.sendto(packet, (host, port))
                await asyncio.sleep(0.02)

        self._senders.append(asyncio.ensure_future(run()))

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@dataclass
class QueueUas:
    """A queue endpoint (the ACD): ``mode`` is answer, busy or ring (180 and never answers)."""

    ua: SipUA
    mode: str = "answer"
    pt: int = 0
    invites: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ua.on_event = self._event

    def _event(self, event: CallEvent) -> None:
        ep = self.ua.endpoint
        if isinstance(event, IncomingCall):
            self.invites.append(event.leg.invite)
            if self.mode == "busy":
                ep.reject(event.leg, 486)
            elif self.mode == "ring":
                ep.ring(event.leg)
            else:
                ep.answer(event.leg, self.ua.sdp(self.pt))
            self.ua.flush()


class Transferee:
    """The caller: dials the daemon, and on REFER does what ``refer_mode`` says: ``accept`` (202, NOTIFY 100, INVITE
    the target with the Refer-To headers, NOTIFY its outcome) or a status to refuse it with."""

    def __init__(self, ua: SipUA, refer_mode: str | int = "accept") -> None:
        self.ua = ua
        self.refer_mode = refer_mode
        self.leg: Leg | None = None
        self.refer: ReferReceived | None = None
        self.new_leg: Leg | None = None
        ua.on_event = self._event

    def dial(self, server: IvrServer, number: str = "2000", pt: int = 0) -> Leg:
        port = server.config.sip.port
        self.leg = self.ua.endpoint.call(
            request_uri=f"sip:{number}@127.0.0.1:{port}", from_uri="sip:0888123456@127.0.0.1",
            to_uri=f"sip:{number}@127.0.0.1:{port}", peer=Peer("127.0.0.1", port), sdp=self.ua.sdp(pt),
        )  # fmt: skip
        self.ua.flush()
        return self.leg

    def _event(self, event: CallEvent) -> None:
        ep = self.ua.endpoint
        if isinstance(event, ReferReceived):
            self.refer = event
            if isinstance(self.refer_mode, int):
                ep.reject_refer(event.leg, event.request, self.refer_mode, "no transfers on this phone")
            else:
                ep.accept_refer(event.leg, event.request)
                target = parse_refer_to(event.refer_to)
                host, port = target.uri.rpartition("@")[2].split(":")
                self.new_leg = ep.call(request_uri=target.uri, from_uri="sip:0888123456@127.0.0.1",
                                       to_uri=target.uri, peer=Peer(host, int(port)), sdp=self.ua.sdp(),
                                       extra=target.headers)  # fmt: skip
        elif isinstance(event, CallProgress | CallAnswered | CallEnded) and event.leg is self.new_leg:
            refer = self.refer
            assert refer is not None and self.leg is not None
            if isinstance(event, CallProgress):
                ep.notify_refer(self.leg, refer.request, event.response.status, event.response.reason)
            elif isinstance(event, CallAnswered):
                ep.notify_refer(self.leg, refer.request, 200)
            elif self.leg.dialog is not None and self.leg.refers.get(refer.request.cseq.number) == "active":
                ep.notify_refer(self.leg, refer.request, event.status or 500)
        self.ua.flush()


@pytest.fixture
async def uas() -> AsyncIterator[SipUA]:
    ua = await SipUA("queue").start()
    yield ua
    ua.close()


@pytest.fixture
async def caller_ua() -> AsyncIterator[SipUA]:
    ua = await SipUA("caller", transferee=True).start()
    yield ua
    ua.close()


async def handoff_server(tmp_path: Path, uas: SipUA, method: str, **queue: object) -> IvrServer:
    (tmp_path / "line.yaml").write_text(FLOW)
    extra = "".join(f"    {key}: {value}\n" for key, value in queue.items())
    (tmp_path / "queues.yaml").write_text(
        "queues:\n  billing:\n"
        f"    uri: sip:billing@127.0.0.1:{uas.port}\n"
        f"    method: {method}\n"
        "    headers: {X-IVR-Account: account, X-IVR-Language: language}\n"
        "    uui: {keys: [account, language, intent]}\n" + extra
    )
    return await start_server({
        "cdr.url": f"sqlite:///{tmp_path / 'cdr.db'}",
        "admin.listen": None,
        "queues": str(tmp_path / "queues.yaml"),
        "routes": [{"client": "acme", "numbers": ["2000"], "flow": str(tmp_path / "line.yaml")}],
        "flows.prompt_cache": str(tmp_path / "cache"),
        "flows.watch": False,
        "sip.t1": 0.1, "sip.t2": 0.4, "sip.t4": 0.5,
    })  # fmt: skip


# account=12%2034%265&language=en&intent=billing, hex
EXPECTED_UUI = (
    "6163636f756e743d3132253230333425323635266c616e67756167653d656e26696e74656e743d62696c6c696e67;encoding=hex"
)


def check_attached(invite: Any) -> None:
    """The queue endpoint's check of what came with the call, byte for byte."""
    assert invite.headers.get("X-IVR-Account") == "12 34&5"
    assert invite.headers.get("X-IVR-Language") == "en"
    assert invite.headers.get("X-IVR-Intent") is None  # not configured as a header: it rides in the UUI only
    assert invite.headers.get("User-to-User") == EXPECTED_UUI
    assert decode_uui(EXPECTED_UUI) == {"account": "12 34&5", "language": "en", "intent": "billing"}


async def record_of(server: IvrServer, call_id: str) -> Any:
    assert server.cdr is not None
    await _until(lambda: server.cdr is not None and server.cdr.backlog == 0 and not server.calls, timeout=10)
    (record,) = [r for r in await server.cdr.fetch() if r.call_id == call_id]
    return record


async def test_refer_hands_the_caller_to_the_queue_with_headers_and_uui_and_the_ivr_leg_ends(
    tmp_path: Path, uas: SipUA, caller_ua: SipUA
) -> None:
    queue = QueueUas(uas)
    server = await handoff_server(tmp_path, uas, "refer")
    try:
        caller = Transferee(caller_ua)
        leg = caller.dial(server)
        await _until(lambda: bool(queue.invites), timeout=10)
        check_attached(queue.invites[0])
        assert caller.refer is not None
        assert caller.refer.referred_by == f"<sip:ivr@127.0.0.1:{server.config.sip.port}>"
        await _until(lambda: leg.end_reason is not None, timeout=10)
        (ended,) = [e for e in caller_ua.of(CallEnded) if e.leg is leg]
        assert ended.reason.value == "remote_bye"  # the daemon sent BYE once the sipfrag said 200
        assert caller.new_leg is not None and caller.new_leg.end_reason is None  # caller and queue still talk
        record = await record_of(server, leg.call_id)
    finally:
        await server.close()
    handoff = record.extra["handoff"]
    assert (handoff["queue"], handoff["used"], handoff["result"], handoff["status"]) == ("billing", "refer", "ok", 200)
    assert handoff["seconds_to_answer"] > 0
    assert record.path == ["identify", "to-queue"]


async def test_refer_refused_by_the_phone_takes_the_failure_path_with_the_reason(
    tmp_path: Path, uas: SipUA, caller_ua: SipUA
) -> None:
    queue = QueueUas(uas)
    server = await handoff_server(tmp_path, uas, "refer")
    try:
        caller = Transferee(caller_ua, refer_mode=405)
        leg = caller.dial(server)
        await _until(lambda: leg.end_reason is not None, timeout=15)
        record = await record_of(server, leg.call_id)
    finally:
        await server.close()
    assert not queue.invites
    assert record.path == ["identify", "to-queue", "sorry"]
    handoff = record.extra["handoff"]
    assert (handoff["result"], handoff["status"]) == ("failed", 405)
    assert "REFER refused: 405" in handoff["reason"]


async def test_refer_then_bridge_bridges_when_the_phone_refuses_the_refer_and_audio_flows_both_ways(
    tmp_path: Path, uas: SipUA, caller_ua: SipUA
) -> None:
    queue = QueueUas(uas)
    server = await handoff_server(tmp_path, uas, "refer-then-bridge")
    try:
        caller = Transferee(caller_ua, refer_mode=501)
        leg = caller.dial(server)
        await _until(lambda: bool(uas.of(CallConfirmed)), timeout=10)
        check_attached(queue.invites[0])
        assert queue.invites[0].from_.uri.user == "0888123456"  # the agent sees the caller's number
        answered = caller_ua.of(CallAnswered)[0]
        caller_ua.send_rtp(answered.response.body, 0, PCMU_FRAME, 25)
        queue_leg = uas.of(CallConfirmed)[0].leg
        uas.send_rtp(queue_leg.invite.body, 0, PCMU_FRAME, 25)
        await _until(lambda: sum(1 for pt, p in uas.rtp_received if p == PCMU_FRAME) >= 20, timeout=5)
        await _until(lambda: sum(1 for pt, p in caller_ua.rtp_received if p == PCMU_FRAME) >= 20, timeout=5)
        uas.endpoint.hangup(queue_leg)  # the agent hangs up: the caller's leg ends too
        uas.flush()
        await _until(lambda: leg.end_reason is not None, timeout=5)
        record = await record_of(server, leg.call_id)
    finally:
        await server.close()
    handoff = record.extra["handoff"]
    assert (handoff["used"], handoff["result"], handoff["refer"]["status"]) == ("bridge", "ok", 501)
    assert handoff["bridge"]["to_queue"] >= 20 and handoff["bridge"]["to_caller"] >= 20
