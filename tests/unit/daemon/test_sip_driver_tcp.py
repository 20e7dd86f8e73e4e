"""SIP over TCP within bounds (Kamailio's tcp_* settings): the connection caps, the message timeout (slowloris), the
idle lifetime, the write-queue limit, and resets - on real sockets on 127.0.0.1, with small limits and short timeouts.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog

from ivr.config import ConfigError, load_config
from ivr.daemon.sip_driver import DEFAULT_TCP_LIMITS, SipDriver, TcpLimits
from ivr.sip.endpoint import EndpointConfig, SipEndpoint

REPO = Path(__file__).resolve().parents[3]

LIMITS = TcpLimits(
    max_connections=50, max_connections_per_source=50, message_timeout=5.0, lifetime=30.0, write_queue_max=4096
)


class Daemon:
    def __init__(self, driver: SipDriver, port: int) -> None:
        self.driver = driver
        self.port = port

    async def connect(self, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0))


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    endpoint = SipEndpoint(EndpointConfig(host="127.0.0.1", port=5060))
    driver = SipDriver(endpoint, lambda event: None, tcp_limits=LIMITS)
    port = await driver.listen_tcp("127.0.0.1", 0)
    try:
        yield Daemon(driver, port)
    finally:
        await driver.close()


def options(n: int, port: int = 5060) -> bytes:
    return (
        f"OPTIONS sip:ivr@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-opt-{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=p{n}\r\n"
        "To: <sip:ivr@127.0.0.1>\r\n"
        f"Call-ID: opt-{n}@probe\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"SIP/2.0 200"), head[:40]
    return head


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the daemon closes (or resets) the connection within ``seconds``; data before it is skipped."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def wait_until(condition: Any, seconds: float = 2.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 (the driver has no event for its counters)
            await asyncio.sleep(0.01)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


# ---- the settings ----


def test_the_settings_make_the_limits_and_bad_values_are_refused_with_clear_errors() -> None:
    config = load_config(REPO / "configs" / "ivr.yaml")
    assert TcpLimits.from_settings(config.sip) == DEFAULT_TCP_LIMITS
    assert TcpLimits(2048, 256, 10.0, 3605.0, 65536) == DEFAULT_TCP_LIMITS
    small = load_config(
        None,
        {
            "sip.tcp_max_connections": 3,
            "sip.tcp_max_connections_per_source": 2,
            "sip.tcp_message_timeout": 0.5,
            "sip.tcp_connection_lifetime": 1,
            "sip.tcp_write_queue_max": 4096,
        },
    )
    assert TcpLimits.from_settings(small.sip) == TcpLimits(3, 2, 0.5, 1.0, 4096)
    with pytest.raises(ConfigError, match=r"tcp_max_connections_per_source \(9\) is more than tcp_max_connections"):
        load_config(None, {"sip.tcp_max_connections": 3, "sip.tcp_max_connections_per_source": 9})
    with pytest.raises(ConfigError, match=r"tcp_connection_lifetime \(1 s\) is shorter than tcp_message_timeout"):
        load_config(None, {"sip.tcp_connection_lifetime": 1, "sip.tcp_message_timeout": 2})
    with pytest.raises(ConfigError, match=r"sip\.tcp_write_queue_max: Input should be greater than or equal to 1024"):
        load_config(None, {"sip.tcp_write_queue_max": 100})
    with pytest.raises(ConfigError, match=r"sip\.tcp_message_timeout: Input should be greater than 0"):
        load_config(None, {"sip.tcp_message_timeout": 0})


# ---- the caps ----


async def test_connections_over_the_total_cap_are_closed_at_once_counted_and_logged_once(daemon: Daemon) -> None:
    driver = daemon.driver
    driver.tcp_limits = replace(LIMITS, max_connections=4, max_connections_per_source=4)
    with structlog.testing.capture_logs() as logs:
        conns = [await daemon.connect() for _ in range(10)]
        await wait_until(lambda: driver.tcp_refused == 6)
        kept, refused = conns[:4], conns[4:]
        for reader, _ in refused:
            assert await closed_within(reader, 1.0)
        assert driver.tcp_connections == 4 and len(driver._conn_tasks) == 4  # no task for a refused one
        for i, (reader, writer) in enumerate(kept):  # the ones within the cap are served
            writer.write(options(i))
            await read_response(reader)
    lines = events(logs, "tcp connection refused")
    assert len(lines) == 1 and lines[0]["limit"] == "tcp_max_connections" and lines[0]["source"] == "127.0.0.1"
    for _, writer in conns:
        writer.close()
    await wait_until(lambda: driver.tcp_connections == 0)
    reader, writer = await daemon.connect()  # room again once they are gone
    writer.write(options(99))
    await read_response(reader)
    writer.close()


async def test_connections_over_the_per_source_cap_are_closed_and_other_sources_still_get_in(daemon: Daemon) -> None:
    driver = daemon.driver
    driver.tcp_limits = replace(LIMITS, max_connections=10, max_connections_per_source=2)
    with structlog.testing.capture_logs() as logs:
        first = [await daemon.connect("127.0.0.1") for _ in range(5)]
        second = [await daemon.connect("127.0.0.2") for _ in range(3)]
        await wait_until(lambda: driver.tcp_refused == 4)
        for reader, _ in first[2:] + second[2:]:
            assert await closed_within(reader, 1.0)
        for reader, _ in first[:2] + second[:2]:
            assert not await closed_within(reader, 0.05)
    lines = events(logs, "tcp connection refused")
    assert sorted(line["source"] for line in lines) == ["127.0.0.1", "127.0.0.2"]  # once per source
    assert {line["limit"] for line in lines} == {"tcp_max_connections_per_source"}
    assert driver.tcp_connections == 4
    for _, writer in first + second:
        writer.close()


# ---- the timers ----


async def test_idle_connections_are_closed_after_the_first_message_window_or_the_lifetime(daemon: Daemon) -> None:
    driver = daemon.driver
    driver.tcp_limits = replace(LIMITS, message_timeout=0.3, lifetime=0.8)
    loop = asyncio.get_running_loop()
    start = loop.time()
    silent_reader, _ = await daemon.connect()  # never says anything
    talked_reader, talked_writer = await daemon.connect()  # one message, then nothing
    talked_writer.write(options(1))
    await read_response(talked_reader)
    alive_reader, alive_writer = await daemon.connect()  # one message, then CRLF keep-alives (RFC 5626)
    alive_writer.write(options(2))
    await read_response(alive_reader)

    async def keep_alive() -> None:
        for _ in range(6):
            await asyncio.sleep(0.25)
            alive_writer.write(b"\r\n\r\n")

    pinging = asyncio.create_task(keep_alive())
    assert await closed_within(silent_reader, 1.0)
    assert 0.25 <= loop.time() - start < 0.7  # the message timeout, not the lifetime
    assert not await closed_within(talked_reader, 0.3)  # past the message timeout: a connection that had a message
    assert await closed_within(talked_reader, 1.0)
    assert 0.75 <= loop.time() - start < 1.5
    await pinging
    assert not await closed_within(alive_reader, 0.05)  # 1.5 s old, its keep-alives kept it
    assert driver.tcp_closed_idle == 2 and driver.tcp_closed_slow == 0
    alive_writer.write(options(3))
    await read_response(alive_reader)
    alive_writer.close()
    await wait_until(lambda: driver.tcp_connections == 0)


async def test_a_message_sent_slowly_is_closed_after_the_message_timeout(daemon: Daemon) -> None:
    driver = daemon.driver
    driver.tcp_limits = replace(LIMITS, message_timeout=0.3, lifetime=10.0)
    loop = asyncio.get_running_loop()
    # slowloris: a whole message first (the 10 s lifetime applies), then a header trickled a byte at a time
    reader, writer = await daemon.connect()
    writer.write(options(1))
    await read_response(reader)
    trickle = options(2)
    began = loop.time()

    async def drip() -> None:
        for byte in trickle[:-4]:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.02)

    dripping = asyncio.create_task(drip())
    assert await closed_within(reader, 2.0)
    assert 0.25 <= loop.time() - began < 0.8  # bytes kept coming, but the message never came whole
    dripping.cancel()
    # a new connection whose first message stops half way
    reader, writer = await daemon.connect()
    writer.write(options(3)[:60])
    assert await closed_within(reader, 1.0)
    assert driver.tcp_closed_slow == 2 and driver.tcp_closed_idle == 0
    await wait_until(lambda: driver.tcp_connections == 0)


# ---- the write queue ----


async def test_a_peer_that_pipelines_and_never_reads_is_closed_within_the_write_queue_limit(daemon: Daemon) -> None:
    driver = daemon.driver
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the daemon's queue fills sooner
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", daemon.port))
    burst = b"".join(options(n) for n in range(200))  # about 50 KB of requests, 200 responses of about 450 bytes
    largest = sent = 0
    closed = False
    try:
        async with asyncio.timeout(20):
            while sent < 100_000_000:
                try:
                    await loop.sock_sendall(sock, burst)
                except (ConnectionError, OSError):
                    closed = True
                    break
                sent += len(burst)
                for conn in driver._tcp_conns.values():
                    largest = max(largest, conn.writer.transport.get_write_buffer_size())
                if driver.tcp_closed_not_reading:
                    closed = True
                    break
    finally:
        sock.close()
    assert closed and driver.tcp_closed_not_reading == 1, f"sent {sent} bytes, never closed"
    assert largest <= LIMITS.write_queue_max + 1024  # the limit and at most the one response that crossed it
    await wait_until(lambda: driver.tcp_connections == 0 and not driver._conn_tasks)


# ---- resets ----


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_resets_log_no_error_and_leave_no_task(daemon: Daemon) -> None:
    driver = daemon.driver
    loop = asyncio.get_running_loop()
    trouble: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: trouble.append(context))
    try:
        with structlog.testing.capture_logs() as logs:
            # reset before the daemon even accepts them: the loop does not run between connect and reset
            for _ in range(40):
                sock = socket.create_connection(("127.0.0.1", daemon.port))
                _reset(sock)
            # reset after being accepted, some half way through a message, some with responses unread
            socks = []
            for n in range(30):
                sock = socket.create_connection(("127.0.0.1", daemon.port))
                sock.setblocking(False)
                await loop.sock_sendall(sock, options(n) if n % 3 == 0 else options(n)[:50] if n % 3 == 1 else b"")
                socks.append(sock)
            await asyncio.sleep(0.1)
            for sock in socks:
                _reset(sock)
            # ones that pipeline requests and reset while the daemon answers them
            for k in range(5):
                flood = socket.create_connection(("127.0.0.1", daemon.port))
                await asyncio.sleep(0.02)  # accepted
                flood.sendall(b"".join(options(n) for n in range(1000 * k, 1000 * k + 300)))
                _reset(flood)
            await wait_until(lambda: driver.tcp_connections == 0 and not driver._conn_tasks)
            await asyncio.sleep(0.05)
            gc.collect()
            await asyncio.sleep(0)
        assert trouble == []
        assert [entry for entry in logs if entry["log_level"] in ("error", "critical", "exception")] == []
        # the responses of a reset connection are dropped: no dialling the peer's source port for each
        assert events(logs, "tcp connect failed") == [] and not driver._tasks
        assert driver._inbound == 0 and driver._per_source == {}
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []
        reader, writer = await daemon.connect()  # and it still serves
        writer.write(options(100))
        await read_response(reader)
        writer.close()
    finally:
        loop.set_exception_handler(None)


class _GoneWriter:
    """The writer of a connection reset before it was accepted, as some kernels hand it over: no peer address."""

    def __init__(self) -> None:
        self.transport = self
        self.aborted = False

    def get_extra_info(self, name: str) -> object:
        return None

    def abort(self) -> None:
        self.aborted = True


async def test_a_connection_without_a_peer_address_is_dropped_without_a_task_or_an_error(daemon: Daemon) -> None:
    driver = daemon.driver
    gone = _GoneWriter()
    with structlog.testing.capture_logs() as logs:
        driver._tcp_accepted(asyncio.StreamReader(), gone)  # type: ignore[arg-type]
    assert gone.aborted and not driver._conn_tasks and driver.tcp_connections == 0 and driver._inbound == 0
    assert logs == []
