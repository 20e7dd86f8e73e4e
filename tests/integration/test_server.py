"""The daemon in-process on loopback, driven with literal SIP over real UDP and TCP sockets.

These prove the asyncio driver (sockets, timers, call controller, media clock) around the sans-I/O core. The
interop suite proves the same against peers nobody here wrote (SIPp, baresip, sipsak).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.config import load_config
from ivr.daemon.server import IvrServer
from ivr.media.rtp import RtpPacket
from ivr.sip.message import Request, Response, parse_message

REPO = Path(__file__).resolve().parents[2]


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP right now (SIP binds both); another process may still take it before the
    daemon binds, which is why :func:`start_server` retries."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, other) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


async def start_server(overrides: dict[str, object], attempts: int = 5) -> IvrServer:
    """An IvrServer on fresh ports, retried when a port was taken between choosing and binding it."""
    for attempt in range(attempts):
        merged = {"sip.listen": f"127.0.0.1:{free_port()}", "media.rtp_ports": free_rtp_range(20), **overrides}
        srv = IvrServer(load_config(REPO / "configs" / "ivr.yaml", merged))
        try:
            await srv.start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
            continue
        return srv
    raise AssertionError("unreachable")


def free_rtp_range(size: int = 20) -> str:
    base = free_port() & ~1
    base = max(20000, min(base, 60000))
    return f"{base}-{base + size}"


@pytest.fixture
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[IvrServer]:
    overrides: dict[str, object] = {
        "cdr.url": f"sqlite:///{tmp_path / 'cdr.db'}",
        "admin.listen": "127.0.0.1:0",
        "routes": [],  # these tests drive the welcome application; flows have their own tests
    }
    overrides.update(getattr(request, "param", {}))
    srv = await start_server(overrides)
    try:
        yield srv
    finally:
        await srv.close()


class RawCaller:
    """A caller made of a UDP SIP socket and an RTP socket; messages are literal text."""

    def __init__(self, server: IvrServer, call_id: str = "it-1", codecs: str = "0 8 101") -> None:
        self.server = server
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.setblocking(False)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)
        self.port = self.sip.getsockname()[1]
        self.rtp_port = self.rtp.getsockname()[1]
        self.call_id = call_id
        self.codecs = codecs
        self.to_tag = ""
        self.dest = ("127.0.0.1", server.config.sip.port)

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    def sdp(self, address: str = "127.0.0.1", direction: str = "sendrecv") -> bytes:
        rtpmaps = {
            "0": "a=rtpmap:0 PCMU/8000",
            "8": "a=rtpmap:8 PCMA/8000",
            "18": "a=rtpmap:18 G729/8000",
            "101": "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15",
        }
        lines = [
            "v=0",
            f"o=caller 1 1 IN IP4 {address}",
            "s=-",
            f"c=IN IP4 {address}",
            "t=0 0",
            f"m=audio {self.rtp_port} RTP/AVP {self.codecs}",
            *(rtpmaps[pt] for pt in self.codecs.split()),
            "a=ptime:20",
            f"a={direction}",
        ]
        return ("\r\n".join(lines) + "\r\n").encode()

    def request(
        self,
        method: str,
        cseq: int,
        branch: str,
        body: bytes = b"",
        in_dialog: bool = False,
        content_type: str = "application/sdp",
    ) -> bytes:
        to_tag = f";tag={self.to_tag}" if in_dialog else ""
        ctype = f"Content-Type: {content_type}\r\n" if body else ""
        return (
            f"{method} sip:2000@127.0.0.1:{self.dest[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK{branch}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:0888123456@127.0.0.1:{self.port}>;tag=caller\r\n"
            f"To: <sip:2000@127.0.0.1:{self.dest[1]}>{to_tag}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:caller@127.0.0.1:{self.port}>\r\n"
            f"{ctype}Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sip, data, self.dest)

    async def recv(self, timeout: float = 5.0) -> Request | Response:
        loop = asyncio.get_running_loop()
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(self.sip, 65535), timeout)
        return parse_message(data)

    async def recv_final(self, timeout: float = 5.0) -> Response:
        while True:
            msg = await self.recv(timeout)
            if isinstance(msg, Response) and msg.status >= 200:
                return msg

    async def call(self) -> Response:
        await self.send(self.request("INVITE", 1, "inv1", self.sdp()))
        final = await self.recv_final()
        if final.status == 200:
            self.to_tag = final.to.tag or ""
            await self.send(self.request("ACK", 1, "ack1", in_dialog=True))
        return final

    async def rtp_packets(self, duration: float) -> list[RtpPacket]:
        loop = asyncio.get_running_loop()
        out: list[RtpPacket] = []
        end = loop.time() + duration
        while (left := end - loop.time()) > 0:
            try:
                data, _ = await asyncio.wait_for(loop.sock_recvfrom(self.rtp, 2048), left)
            except TimeoutError:
                break
            out.append(RtpPacket.parse(data))
        return out


async def test_call_is_answered_hears_the_welcome_prompt_and_gets_bye(server: IvrServer) -> None:
    caller = RawCaller(server)
    try:
        ok = await caller.call()
        assert ok.status == 200 and ok.content_type == "application/sdp"
        assert b"RTP/AVP 0 " in ok.body and b"telephone-event/8000" in ok.body  # caller's first codec, DTMF
        expected = len(server.welcome.frames("PCMU"))
        packets = await caller.rtp_packets(server.welcome.duration + 1.0)
        assert len(packets) == expected
        assert {p.payload_type for p in packets} == {0}
        seqs = [p.sequence for p in packets]
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
        stamps = [p.timestamp for p in packets]
        assert all((b - a) % 2**32 == 160 for a, b in itertools.pairwise(stamps))
        assert packets[0].marker and not any(p.marker for p in packets[1:])
        assert b"".join(p.payload for p in packets) == b"".join(server.welcome.frames("PCMU"))
        bye = await caller.recv()
        assert isinstance(bye, Request) and bye.method == "BYE"
        await caller.send(_ok_for(bye))
    finally:
        caller.close()
    await _until(lambda: not server.calls)


async def test_caller_hangs_up_first_and_the_call_is_torn_down(server: IvrServer) -> None:
    caller = RawCaller(server)
    try:
        await caller.call()
        await caller.rtp_packets(0.3)
        await caller.send(caller.request("BYE", 2, "bye1", in_dialog=True))
        final = await caller.recv_final()
        assert final.status == 200 and final.cseq.method == "BYE"
        await _until(lambda: not server.calls)
        assert server.ports.in_use == 0
        assert await caller.rtp_packets(0.2) == []
    finally:
        caller.close()


async def test_pcma_preferred_by_the_caller_is_used(server: IvrServer) -> None:
    caller = RawCaller(server, codecs="8 0")
    try:
        ok = await caller.call()
        assert b"RTP/AVP 8" in ok.body
        packets = await caller.rtp_packets(0.5)
        assert packets and {p.payload_type for p in packets} == {8}
        await caller.send(caller.request("BYE", 2, "bye1", in_dialog=True))
    finally:
        caller.close()


async def test_no_common_codec_is_488(server: IvrServer) -> None:
    caller = RawCaller(server, codecs="18")
    try:
        final = await caller.call()
        assert final.status == 488
        assert "codec" in (final.headers.get("Warning") or "").lower()
    finally:
        caller.close()
    assert server.ports.in_use == 0


@pytest.mark.parametrize("server", [{"calls.max_calls": 1}], indirect=True)
async def test_calls_beyond_max_calls_get_503_with_retry_after(server: IvrServer) -> None:
    first, second = RawCaller(server, "c1"), RawCaller(server, "c2")
    try:
        assert (await first.call()).status == 200
        refused = await second.call()
        assert refused.status == 503 and refused.headers.get("Retry-After")
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("server", [{"media.rtp_ports": "47000-47002"}], indirect=True)
async def test_exhausted_rtp_port_pool_gives_503(server: IvrServer) -> None:
    callers = [RawCaller(server, f"p{i}") for i in range(3)]
    try:
        statuses = [(await c.call()).status for c in callers]
        assert statuses == [200, 200, 503]
    finally:
        for c in callers:
            c.close()


async def test_reinvite_to_hold_stops_audio_and_unhold_resumes(server: IvrServer) -> None:
    caller = RawCaller(server)
    try:
        await caller.call()
        assert await caller.rtp_packets(0.3)
        await caller.send(caller.request("INVITE", 2, "re1", caller.sdp(address="0.0.0.0"), in_dialog=True))
        ok = await caller.recv_final()
        assert ok.status == 200 and ok.cseq.number == 2
        await caller.send(caller.request("ACK", 2, "ack2", in_dialog=True))
        await caller.rtp_packets(0.1)  # drain what was in flight
        assert await caller.rtp_packets(0.4) == []
        await caller.send(caller.request("INVITE", 3, "re2", caller.sdp(), in_dialog=True))
        ok = await caller.recv_final()
        assert ok.status == 200
        await caller.send(caller.request("ACK", 3, "ack3", in_dialog=True))
        resumed = await caller.rtp_packets(0.4)
        assert resumed and resumed[0].marker
        await caller.send(caller.request("BYE", 4, "bye", in_dialog=True))
    finally:
        caller.close()


async def test_tcp_invite_is_answered_on_the_same_connection(server: IvrServer) -> None:
    caller = RawCaller(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.config.sip.port)
    try:
        invite = caller.request("INVITE", 1, "tcp1", caller.sdp()).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
        # Split the message across writes: the framer must reassemble it.
        writer.write(invite[:37])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(invite[37:])
        await writer.drain()
        statuses: list[int] = []
        while not statuses or statuses[-1] < 200:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            msg = parse_message(head + body, stream=True)
            assert isinstance(msg, Response)
            statuses.append(msg.status)
        assert statuses == [100, 200]
    finally:
        writer.close()
        caller.close()


async def test_malformed_datagram_gets_400_and_the_daemon_keeps_serving(server: IvrServer) -> None:
    caller = RawCaller(server)
    try:
        bad = caller.request("INVITE", 1, "bad", caller.sdp()).replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
        await caller.send(bad)
        final = await caller.recv_final()
        assert final.status == 400 and "CSeq" in (final.headers.get("Warning") or "")
        await caller.send(b"\x16\x03\x01 definitely not SIP")
        caller.call_id = "it-after-garbage"
        assert (await caller.call()).status == 200
    finally:
        caller.close()


async def test_first_stop_drains_new_calls_get_503_and_calls_in_progress_finish(server: IvrServer) -> None:
    caller = RawCaller(server)
    late = RawCaller(server)
    try:
        await caller.call()
        server.request_stop()
        late.call_id = "it-after-sigterm"
        refused = await late.call()
        assert refused.status == 503
        await caller.send(caller.request("OPTIONS", 2, "opt1"))
        assert (await caller.recv_final()).status == 503
        with pytest.raises(TimeoutError):  # the call in progress is left alone: no BYE
            await asyncio.wait_for(_bye_from(caller), 0.5)
        assert server.calls
        await caller.send(caller.request("BYE", 3, "bye1", in_dialog=True))
        await asyncio.wait_for(server.serve_forever(), 5)
        assert not server.calls
    finally:
        caller.close()
        late.close()


async def test_second_stop_sends_bye_to_calls_in_progress(server: IvrServer) -> None:
    caller = RawCaller(server)
    try:
        await caller.call()
        server.request_stop()
        server.request_stop()
        bye = await _bye_from(caller)
        await caller.send(_ok_for(bye))
        await asyncio.wait_for(server.serve_forever(), 5)
        assert not server.calls
    finally:
        caller.close()


async def test_drain_time_up_sends_bye(tmp_path: Path) -> None:
    server = await start_server(
        {"calls.drain_seconds": 0.3, "routes": [], "admin.listen": None, "cdr.url": f"sqlite:///{tmp_path}/c.db"}
    )
    caller = RawCaller(server)
    try:
        await caller.call()
        server.request_stop()
        bye = await asyncio.wait_for(_bye_from(caller), 3)
        await caller.send(_ok_for(bye))
        await asyncio.wait_for(server.serve_forever(), 5)
    finally:
        caller.close()
        await server.close()


async def _bye_from(caller: RawCaller) -> Request:
    while True:
        message = await caller.recv()
        if isinstance(message, Request) and message.method == "BYE":
            return message


def _ok_for(request: Request) -> bytes:
    headers = "".join(f"{n}: {v}\r\n" for n, v in request.headers if n in ("Via", "From", "To", "Call-ID", "CSeq"))
    return f"SIP/2.0 200 OK\r\n{headers}Content-Length: 0\r\n\r\n".encode()


async def _until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def test_late_offer_invite_gets_our_offer_and_media_starts_on_the_acks_answer(server: IvrServer) -> None:
    caller = RawCaller(server, codecs="8")
    try:
        await caller.send(caller.request("INVITE", 1, "late1"))
        ok = await caller.recv_final()
        assert ok.status == 200 and b"RTP/AVP 0 8 101" in ok.body  # our offer, our preference order
        caller.to_tag = ok.to.tag or ""
        await caller.send(caller.request("ACK", 1, "lateack", caller.sdp(), in_dialog=True))
        packets = await caller.rtp_packets(0.5)
        assert packets and {p.payload_type for p in packets} == {8}  # the answer chose PCMA
        await caller.send(caller.request("BYE", 2, "bye", in_dialog=True))
    finally:
        caller.close()


async def test_late_offer_ack_without_answer_is_hung_up(server: IvrServer) -> None:
    caller = RawCaller(server)
    try:
        await caller.send(caller.request("INVITE", 1, "late2"))
        ok = await caller.recv_final()
        caller.to_tag = ok.to.tag or ""
        await caller.send(caller.request("ACK", 1, "lateack2", in_dialog=True))
        bye = await caller.recv()
        assert isinstance(bye, Request) and bye.method == "BYE"
        await caller.send(_ok_for(bye))
        await _until(lambda: server.ports.in_use == 0)
    finally:
        caller.close()


async def test_info_dtmf_reaches_the_call_and_unknown_info_body_is_415(server: IvrServer) -> None:
    caller = RawCaller(server)
    try:
        await caller.call()
        body = b"Signal=5\r\nDuration=160\r\n"
        await caller.send(caller.request("INFO", 2, "info1", body, True, "application/dtmf-relay"))
        ok = await caller.recv_final()
        assert ok.status == 200 and ok.cseq.method == "INFO"
        (active,) = server.calls.values()
        assert active.call.digits_by_source == {"info": 1}
        await caller.send(caller.request("INFO", 3, "info2", body, True, "application/x-odd"))
        refused = await caller.recv_final()
        assert refused.status == 415 and "application/dtmf-relay" in (refused.headers.get("Accept") or "")
        await caller.send(caller.request("BYE", 4, "bye", in_dialog=True))
    finally:
        caller.close()


async def test_every_call_leaves_a_record_answered_and_refused_alike(server: IvrServer) -> None:
    good, bad = RawCaller(server, "rec-ok"), RawCaller(server, "rec-488", codecs="18")
    try:
        await good.call()
        await good.rtp_packets(0.2)
        await good.send(good.request("BYE", 2, "bye", in_dialog=True))
        await good.recv_final()
        assert (await bad.call()).status == 488
    finally:
        good.close()
        bad.close()
    assert server.cdr is not None
    await _until(lambda: server.cdr is not None and server.cdr.backlog == 0)
    records = {r.call_id: r for r in await server.cdr.fetch()}
    ok = records["rec-ok"]
    assert ok.end_reason == "remote_bye" and ok.answered_at is not None and ok.ended_at is not None
    assert ok.caller == "0888123456" and ok.dialled == "2000"
    assert ok.media is not None and ok.media.packets_sent > 0
    refused = records["rec-488"]
    assert refused.end_reason == "rejected" and refused.sip_status == 488


async def test_admin_api_answers_health_and_metrics(server: IvrServer) -> None:
    assert server.admin_address is not None
    host, port = server.admin_address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    body = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert body.startswith(b"HTTP/1.1 200") and b"ivr_active_calls" in body


@pytest.mark.parametrize("server", [{"calls.max_calls_per_second": 1}], indirect=True)
async def test_calls_beyond_the_rate_limit_get_503_retry_after_1(server: IvrServer) -> None:
    first, second = RawCaller(server, "r1"), RawCaller(server, "r2")
    try:
        assert (await first.call()).status == 200
        refused = await second.call()
        assert refused.status == 503 and refused.headers.get("Retry-After") == "1"
    finally:
        first.close()
        second.close()


async def test_a_lagging_event_loop_sheds_new_calls(server: IvrServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "event_loop_lag", lambda: 1.0)
    caller = RawCaller(server, "lag1")
    try:
        refused = await caller.call()
        assert refused.status == 503 and "overloaded" in (refused.headers.get("Warning") or "")
    finally:
        caller.close()


@pytest.mark.parametrize("server", [{"security.trusted_sources": ["192.0.2.0/24"]}], indirect=True)
async def test_untrusted_source_gets_403_and_no_call(server: IvrServer) -> None:
    caller = RawCaller(server, "untrusted")
    try:
        refused = await caller.call()
        assert refused.status == 403 and not server.calls
    finally:
        caller.close()


@pytest.mark.parametrize("server", [{"security.max_messages_per_source": 5}], indirect=True)
async def test_a_flood_from_one_source_is_dropped_beyond_its_rate(server: IvrServer) -> None:
    caller = RawCaller(server, "flood")
    try:
        options = caller.request("OPTIONS", 1, "opt").replace(b"Call-ID: flood", b"Call-ID: flood-opt")
        for i in range(40):
            await caller.send(options.replace(b"branch=z9hG4bKopt", f"branch=z9hG4bKopt{i}".encode()))
        answered = 0
        while True:
            try:
                await caller.recv(0.5)
            except TimeoutError:
                break
            answered += 1
        assert 8 <= answered <= 12  # the burst (2 x 5), give or take the refill while sending
        assert server.dropped_rate_limited >= 28
    finally:
        caller.close()
