"""The one driver of a sans-I/O :class:`~ivr.sip.endpoint.SipEndpoint`: sockets and one timer, nothing else.

It has the shape of aioquic's asyncio driver. Datagrams (UDP) and framed stream messages (TCP) go into the endpoint
with their source; after every input, the timer and every verb the owner calls on the endpoint,
:meth:`SipDriver.flush` sends the endpoint's ``datagrams_to_send``, hands each ``next_event`` (a call event) to the
owner's ``on_event``, and re-arms the driver's one ``TimerHandle`` to the endpoint's ``get_timer`` deadline, on the
event loop's clock (so virtual time drives it too). The endpoint keeps all its timers itself (the transactions', and
the refresh and retry timers of the upstream registrations it hosts), so this one handle is the only timer SIP puts
on the loop. The daemon, the simulated caller and the simulated queue endpoint all run on this driver; the daemon adds
a gate (trust and per-source rate, :mod:`ivr.daemon.admission`) in front of the endpoint, and TCP. The gate's answer
for a message it lets in - is the source trusted? - goes to the endpoint with the message, so the trusted networks are
looked up once per message (and cached per address by the gate), not again by the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from ivr.sip.endpoint import EndpointEvent, Peer, SipEndpoint, Transmit
from ivr.sip.errors import SipError
from ivr.sip.message import MAX_MESSAGE_SIZE, StreamFramer

__all__ = ["Admit", "SipDriver", "is_ip"]

log = structlog.get_logger("ivr.sip")

SOCKET_BUFFER = 4 * 1024 * 1024
"""SO_RCVBUF / SO_SNDBUF of the SIP UDP socket: a burst of INVITEs waits in the kernel, not on the floor."""

Admit = Callable[[Peer], bool | None]
"""A gate in front of the endpoint: ``None`` drops the message from that peer unparsed; ``True`` / ``False`` lets it
in and says whether its source is trusted (the endpoint's ``receive(..., trusted=)``)."""


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, driver: SipDriver) -> None:
        self.driver = driver

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.driver.receive(data, Peer(str(addr[0]), int(addr[1]), "udp"))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for a peer that went away: the transactions' timers handle it.
        log.debug("udp error", error=str(exc))


class SipDriver:
    """Runs ``endpoint`` over asyncio sockets. ``on_event`` gets every event of the endpoint; ``admit(peer)``
    (:data:`Admit`), when given, decides whether a message from ``peer`` reaches the endpoint at all (a refused one
    costs no parse), and whether its source is trusted; without it the endpoint checks trust itself.

    The endpoint may be given after binding (``driver.endpoint = ...``): a simulated user agent binds port 0 and
    builds its endpoint with the port it got."""

    def __init__(
        self,
        endpoint: SipEndpoint | None,
        on_event: Callable[[EndpointEvent], None],
        *,
        admit: Admit | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._on_event = on_event
        self._admit = admit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_conns: dict[int, asyncio.StreamWriter] = {}
        self._conn_tasks: set[asyncio.Task[object]] = set()
        self._conn_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # ---- sockets ----

    async def bind_udp(self, host: str, port: int, *, large_buffers: bool = False) -> int:
        """Listen for datagrams on ``host:port`` (0: any free port); returns the port bound."""
        transport, _ = await self.loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(host, port), reuse_port=False
        )
        self._udp = transport
        sock = transport.get_extra_info("socket")
        if large_buffers and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        return int(transport.get_extra_info("sockname")[1])

    async def listen_tcp(self, host: str, port: int) -> None:
        self._tcp = await asyncio.start_server(self._tcp_connection, host, port, reuse_address=True)

    async def close(self) -> None:
        """Cancel the timer, close every socket and connection (waiting up to 2 s for connection tasks)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._tcp_conns.values()):
                writer.close()
            if self._conn_tasks:
                await asyncio.wait(list(self._conn_tasks), timeout=2)
            await self._tcp.wait_closed()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()

    # ---- input ----

    def receive(self, data: bytes, peer: Peer) -> None:
        """One SIP message from ``peer``: to the endpoint (unless the gate refuses it), then flush."""
        endpoint = self.endpoint
        if endpoint is None:
            return
        trusted = None
        if self._admit is not None:
            trusted = self._admit(peer)
            if trusted is None:
                return
        try:  # the wall clock is for digest nonces
            endpoint.receive(data, peer, self.loop.time(), wall_clock=time.time(), trusted=trusted)
        except SipError as exc:  # the endpoint answers protocol errors itself; this is a last line of defence
            log.warning("sip message rejected", peer=f"{peer.host}:{peer.port}", error=exc.reason)
        except Exception:
            log.exception("bug: unhandled error on a SIP message", peer=f"{peer.host}:{peer.port}")
        self.flush()

    def _handle_timer(self) -> None:
        # asyncio may run a handle up to its clock resolution early (a virtual clock can land an ulp short): the
        # deadline it was armed for is due all the same.
        now = max(self.loop.time(), self._timer_at or 0.0)
        self._timer = self._timer_at = None
        endpoint = self.endpoint
        if endpoint is None:
            return
        try:
            endpoint.handle_timer(now)
        except Exception:
            log.exception("bug: unhandled error in a SIP timer")
        self.flush()

    async def _tcp_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = next(self._conn_ids)
        current = asyncio.current_task()
        if current is not None:
            self._conn_tasks.add(current)
        addr = writer.get_extra_info("peername")
        peer = Peer(str(addr[0]), int(addr[1]), "tcp", conn_id)
        self._tcp_conns[conn_id] = writer
        framer = StreamFramer(max_size=MAX_MESSAGE_SIZE)
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                try:
                    messages = framer.feed(chunk)
                except SipError as exc:
                    log.warning("tcp stream unframable, closing", peer=f"{peer.host}:{peer.port}", error=exc.reason)
                    break
                for message in messages:
                    self.receive(message, peer)
        except (ConnectionError, OSError):
            pass
        finally:
            if current is not None:
                self._conn_tasks.discard(current)
            self._tcp_conns.pop(conn_id, None)
            writer.close()
            if self.endpoint is not None:
                self.endpoint.transport_error(peer)
            self.flush()

    # ---- output ----

    def flush(self) -> None:
        """Act on everything the endpoint has to say (call it after any verb called on the endpoint): send its
        datagrams, hand its events to ``on_event`` (whose verbs are flushed in the next round), re-arm the timer."""
        endpoint = self.endpoint
        if endpoint is None:
            return
        loop = self.loop
        while True:
            for out in endpoint.datagrams_to_send(loop.time()):
                self.transmit(out)
            # This round's events are all taken before any is handed out: a handler that flushes itself (a verb,
            # then flush) gets what its verb caused, not the events queued behind its own.
            events: list[EndpointEvent] = list(iter(endpoint.next_event, None))
            if not events:
                break
            for event in events:
                self._on_event(event)
        timer_at = endpoint.get_timer()
        if timer_at != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(timer_at, self._handle_timer) if timer_at is not None else None
            self._timer_at = timer_at

    def transmit(self, out: Transmit) -> None:
        """Send ``out.data`` to ``out.peer``: on the UDP socket, or the TCP connection it names (or a new one)."""
        peer = out.peer
        if peer.transport == "udp":
            if self._udp is None:
                return
            if is_ip(peer.host):
                self._udp.sendto(out.data, (peer.host, peer.port))
            else:
                self.spawn(self._resolve_and_send(out))
            return
        writer = self._tcp_conns.get(peer.connection or -1)
        if writer is not None and not writer.is_closing():
            writer.write(out.data)
        else:
            self.spawn(self._tcp_connect_and_send(out))

    async def _resolve_and_send(self, out: Transmit) -> None:
        try:
            infos = await self.loop.getaddrinfo(out.peer.host, out.peer.port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            log.warning("cannot resolve", host=out.peer.host, error=str(exc))
            return
        if infos and self._udp is not None:
            self._udp.sendto(out.data, infos[0][4][:2])

    async def _tcp_connect_and_send(self, out: Transmit) -> None:
        try:
            reader, writer = await asyncio.open_connection(out.peer.host, out.peer.port)
        except OSError as exc:
            log.warning("tcp connect failed", peer=f"{out.peer.host}:{out.peer.port}", error=str(exc))
            if self.endpoint is not None:
                self.endpoint.transport_error(out.peer, f"tcp connect failed: {exc}")
            self.flush()
            return
        writer.write(out.data)
        self.spawn(self._tcp_connection(reader, writer))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
