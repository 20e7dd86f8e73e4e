"""The daemon's SIP over TCP within the sip.tcp_* settings: a call over TCP goes through while, from the same
source, a connection over the cap is refused and a slowloris is cut off."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.config import load_config
from ivr.daemon.server import IvrServer
from ivr.daemon.sip_driver import TcpLimits
from ivr.sip.message import Response, parse_message

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[IvrServer]:
    rtp = max(20000, min(free_port() & ~1, 60000))
    config = load_config(
        REPO / "configs" / "ivr.yaml",
        {
            "sip.listen": f"127.0.0.1:{free_port()}",
            "media.rtp_ports": f"{rtp}-{rtp + 20}",
            "cdr.url": f"sqlite:///{tmp_path / 'cdr.db'}",
            "admin.listen": None,
            "routes": [],
            "sip.tcp_max_connections": 10,
            "sip.tcp_max_connections_per_source": 2,
            "sip.tcp_message_timeout": 0.4,
            "sip.tcp_connection_lifetime": 30,
            "sip.tcp_write_queue_max": 4096,
        },
    )
    srv = IvrServer(config)
    assert srv.driver.tcp_limits == TcpLimits.from_settings(config.sip)  # the daemon hands its settings on
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


def request(method: str, port: int, cseq: int, branch: str, to_tag: str = "", body: bytes = b"") -> bytes:
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} sip:2000@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK{branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:0888123456@127.0.0.1:5999>;tag=caller\r\n"
        f"To: <sip:2000@127.0.0.1:{port}>{to_tag}\r\n"
        "Call-ID: tcp-limits-1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:caller@127.0.0.1:5999;transport=tcp>\r\n"
        f"{ctype}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def response(reader: asyncio.StreamReader) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    msg = parse_message(head + await reader.readexactly(length), stream=True)
    assert isinstance(msg, Response)
    return msg


async def test_a_tcp_call_goes_through_while_a_slowloris_is_cut_off_and_a_third_connection_refused(
    server: IvrServer,
) -> None:
    port = server.config.sip.port
    driver = server.driver
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    sdp = (
        "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp.getsockname()[1]} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
    slow_writer.write(request("OPTIONS", port, 1, "slow")[:70])  # and never the rest
    third_reader, _ = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert await asyncio.wait_for(third_reader.read(), 2) == b""  # over the per-source cap of 2
        writer.write(request("INVITE", port, 1, "inv", body=sdp))
        statuses = [(await response(reader)).status]
        while statuses[-1] < 200:
            final = await response(reader)
            statuses.append(final.status)
        assert statuses[-1] == 200
        to_tag = ";tag=" + (final.headers.get("To") or "").split("tag=")[1]
        writer.write(request("ACK", port, 1, "ack", to_tag))
        await asyncio.sleep(0.6)  # past the message timeout: the slowloris goes, the call's connection stays
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(slow_reader.readexactly(1), 2)
        writer.write(request("BYE", port, 2, "bye", to_tag))
        bye = await response(reader)
        while bye.status < 200 or "BYE" not in (bye.headers.get("CSeq") or ""):
            bye = await response(reader)
        assert bye.status == 200
        assert driver.tcp_refused == 1 and driver.tcp_closed_slow == 1 and driver.tcp_closed_idle == 0
        sample = server.metrics.registry.get_sample_value
        assert sample("ivr_sip_tcp_closed_total", {"reason": "refused"}) == 1
        assert sample("ivr_sip_tcp_closed_total", {"reason": "slow"}) == 1
    finally:
        writer.close()
        slow_writer.close()
        rtp.close()
