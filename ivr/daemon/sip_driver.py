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

SIP over TCP is bounded like Kamailio's tcp_* settings (:class:`TcpLimits`, from the ``sip.tcp_*`` settings): accepted
connections are capped in all and per source address (one over the cap is accepted and closed at once); a message
must arrive whole within ``message_timeout`` of its first byte, and a new connection bring its first message within it
(slowloris); a connection with no message either way for ``lifetime`` is closed; a peer that does not read (more than
``write_queue_max`` bytes waiting in the transport) is closed. Every connection runs as one task the driver tracks; a
reset or any socket error ends it without a traceback. Each refusal and close is counted (``tcp_refused``,
``tcp_closed_idle``, ``tcp_closed_slow``, ``tcp_closed_not_reading``) and logged once per source and reason a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from ivr.config import SipSettings
from ivr.sip.endpoint import EndpointEvent, Peer, SipEndpoint, Transmit
from ivr.sip.errors import SipError
from ivr.sip.message import MAX_MESSAGE_SIZE, StreamFramer

__all__ = ["DEFAULT_TCP_LIMITS", "Admit", "SipDriver", "TcpLimits", "is_ip"]

log = structlog.get_logger("ivr.sip")

SOCKET_BUFFER = 4 * 1024 * 1024
"""SO_RCVBUF / SO_SNDBUF of the SIP UDP socket: a burst of INVITEs waits in the kernel, not on the floor."""

Admit = Callable[[Peer], bool | None]
"""A gate in front of the endpoint: ``None`` drops the message from that peer unparsed; ``True`` / ``False`` lets it
in and says whether its source is trusted (the endpoint's ``receive(..., trusted=)``)."""

LOG_INTERVAL = 60.0
"""Seconds between two log lines for the same source and reason (a refused or closed TCP connection)."""

_LOG_KEYS_MAX = 4096
"""Sources remembered for :data:`LOG_INTERVAL`; beyond, the ones logged longest ago are forgotten."""

_READ_SIZE = 65536

CloseReason = Literal["idle", "slow", "not_reading"]


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """The bounds of SIP over TCP (the ``sip.tcp_*`` settings: :class:`~ivr.config.SipSettings`)."""

    max_connections: int
    max_connections_per_source: int
    message_timeout: float
    lifetime: float
    write_queue_max: int

    @classmethod
    def from_settings(cls, sip: SipSettings) -> TcpLimits:
        return cls(
            max_connections=sip.tcp_max_connections,
            max_connections_per_source=sip.tcp_max_connections_per_source,
            message_timeout=sip.tcp_message_timeout,
            lifetime=sip.tcp_connection_lifetime,
            write_queue_max=sip.tcp_write_queue_max,
        )


DEFAULT_TCP_LIMITS = TcpLimits.from_settings(SipSettings())
"""The limits of the default settings: a driver given none (the simulator's, a test's) has these."""


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


class _TcpConnection:
    """One TCP connection: its writer and peer, and what its timers go by (all on the loop's clock)."""

    __slots__ = ("active", "closed", "inbound", "last_activity", "opened", "peer", "writer")

    def __init__(self, peer: Peer, writer: asyncio.StreamWriter, *, inbound: bool, now: float) -> None:
        self.peer = peer
        self.writer = writer
        self.inbound = inbound
        self.opened = now
        self.last_activity = now
        self.active = False  # a whole message went either way (or a keep-alive after one): the lifetime applies
        self.closed: CloseReason | None = None  # closed by the driver for this reason


class SipDriver:
    """Runs ``endpoint`` over asyncio sockets. ``on_event`` gets every event of the endpoint; ``admit(peer)``
    (:data:`Admit`), when given, decides whether a message from ``peer`` reaches the endpoint at all (a refused one
    costs no parse), and whether its source is trusted; without it the endpoint checks trust itself.

    The endpoint may be given after binding (``driver.endpoint = ...``): a simulated user agent binds port 0 and
    builds its endpoint with the port it got.

    ``tcp_limits`` bound SIP over TCP (:class:`TcpLimits`; default: :data:`DEFAULT_TCP_LIMITS`); they are read as
    each connection comes and each timer is set, so assigning ``driver.tcp_limits`` applies from then on. The
    counters ``tcp_refused``, ``tcp_closed_idle``, ``tcp_closed_slow`` and ``tcp_closed_not_reading`` only grow;
    ``tcp_connections`` is the number open now."""

    def __init__(
        self,
        endpoint: SipEndpoint | None,
        on_event: Callable[[EndpointEvent], None],
        *,
        admit: Admit | None = None,
        tcp_limits: TcpLimits | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._on_event = on_event
        self._admit = admit
        self.tcp_limits = tcp_limits or DEFAULT_TCP_LIMITS
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_conns: dict[int, _TcpConnection] = {}
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._conn_ids = itertools.count(1)
        self._inbound = 0
        self._per_source: dict[str, int] = {}
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}
        self.tcp_refused = 0
        """Connections accepted and closed at once: over ``max_connections`` or ``max_connections_per_source``."""
        self.tcp_closed_idle = 0
        """Closed after ``lifetime`` with no message, or a new one that brought none within ``message_timeout``."""
        self.tcp_closed_slow = 0
        """Closed because a message begun did not arrive whole within ``message_timeout`` (slowloris)."""
        self.tcp_closed_not_reading = 0
        """Closed because more than ``write_queue_max`` bytes waited to be sent: the peer does not read."""
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

    async def listen_tcp(self, host: str, port: int) -> int:
        """Accept SIP over TCP on ``host:port`` (0: any free port); returns the port bound."""
        self._tcp = await asyncio.start_server(self._tcp_accepted, host, port, reuse_address=True)
        return int(self._tcp.sockets[0].getsockname()[1])

    def tcp_closed_counts(self) -> dict[str, int]:
        """The TCP counters by reason, for the metrics: refused over a cap, idle, slow, not reading."""
        return {"refused": self.tcp_refused, "idle": self.tcp_closed_idle, "slow": self.tcp_closed_slow,
                "not_reading": self.tcp_closed_not_reading}  # fmt: skip

    @property
    def tcp_connections(self) -> int:
        """TCP connections open now (accepted and made)."""
        return len(self._tcp_conns)

    async def close(self) -> None:
        """Cancel the timer, close every socket and connection (waiting up to 2 s for connection tasks, then
        cancelling those left)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
        for conn in list(self._tcp_conns.values()):
            conn.writer.close()
        if self._conn_tasks:
            _, pending = await asyncio.wait(list(self._conn_tasks), timeout=2)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
        if self._tcp is not None:
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

    # ---- TCP connections ----

    def _tcp_accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A connection accepted: over a cap it is closed at once (no task, no parse); else its task starts."""
        addr = writer.get_extra_info("peername")
        if not addr:  # reset before we got to it (SO_LINGER 0): nothing to serve
            writer.transport.abort()
            return
        host = str(addr[0])
        limits = self.tcp_limits
        from_source = self._per_source.get(host, 0)
        if self._inbound >= limits.max_connections or from_source >= limits.max_connections_per_source:
            writer.transport.abort()
            self.tcp_refused += 1
            over_total = self._inbound >= limits.max_connections
            self._log_limited(
                "tcp connection refused",
                "refused",
                host,
                limit="tcp_max_connections" if over_total else "tcp_max_connections_per_source",
                open=self._inbound if over_total else from_source,
            )
            return
        self._inbound += 1
        self._per_source[host] = from_source + 1
        self._start_connection(reader, writer, Peer(host, int(addr[1]), "tcp", next(self._conn_ids)), inbound=True)

    def _start_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer, *, inbound: bool
    ) -> _TcpConnection:
        conn = _TcpConnection(peer, writer, inbound=inbound, now=self.loop.time())
        assert peer.connection is not None
        self._tcp_conns[peer.connection] = conn
        task = self.loop.create_task(self._tcp_connection(conn, reader))
        self._conn_tasks.add(task)
        task.add_done_callback(lambda done: self._connection_done(conn, done))
        return conn

    async def _tcp_connection(self, conn: _TcpConnection, reader: asyncio.StreamReader) -> None:
        """Read, frame and hand on messages until the peer closes, a limit closes it, or the socket fails."""
        peer = conn.peer
        framer = StreamFramer(max_size=MAX_MESSAGE_SIZE)
        begun: float | None = None  # when the first byte of the message now arriving came
        try:
            while conn.closed is None:
                deadline, reason = self._deadline(conn, begun)
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await reader.read(_READ_SIZE)
                except TimeoutError:
                    if self._deadline(conn, begun)[0] > deadline:
                        continue  # a message went out meanwhile: the lifetime starts again
                    self._close_connection(conn, reason)
                    break
                if not chunk:
                    break
                try:
                    messages = framer.feed(chunk)
                except SipError as exc:
                    log.warning("tcp stream unframable, closing", peer=f"{peer.host}:{peer.port}", error=exc.reason)
                    break
                now = self.loop.time()
                # The framer keeps the bytes of a message begun (keep-alive CRLFs between messages it drops).
                partial = bool(framer._buffer)
                if messages or (begun is None and not partial and conn.active):
                    conn.active = True  # a message, or a keep-alive (RFC 5626) on a connection that had one
                    conn.last_activity = now
                if not partial:
                    begun = None
                elif messages or begun is None:
                    begun = now
                for message in messages:
                    self.receive(message, peer)
                    if conn.closed is not None:
                        break
        except (ConnectionError, OSError):
            pass

    def _deadline(self, conn: _TcpConnection, begun: float | None) -> tuple[float, CloseReason]:
        limits = self.tcp_limits
        if begun is not None:
            return begun + limits.message_timeout, "slow"
        if not conn.active:
            return conn.opened + limits.message_timeout, "idle"
        return conn.last_activity + limits.lifetime, "idle"

    def _close_connection(self, conn: _TcpConnection, reason: CloseReason) -> None:
        """Close ``conn`` at once (its queue dropped), count and log it; its task ends on the reader's EOF."""
        if conn.closed is not None:
            return
        conn.closed = reason
        if reason == "idle":
            self.tcp_closed_idle += 1
        elif reason == "slow":
            self.tcp_closed_slow += 1
        else:
            self.tcp_closed_not_reading += 1
        self._log_limited("tcp connection closed", reason, conn.peer.host, port=conn.peer.port)
        conn.writer.transport.abort()

    def _connection_done(self, conn: _TcpConnection, task: asyncio.Task[None]) -> None:
        """A connection's task ended (the peer closed, a limit, an error, or cancelled): forget it everywhere."""
        self._conn_tasks.discard(task)
        peer = conn.peer
        if self._tcp_conns.get(peer.connection or -1) is conn:
            del self._tcp_conns[peer.connection or -1]
        if conn.inbound:
            self._inbound -= 1
            left = self._per_source.get(peer.host, 1) - 1
            if left > 0:
                self._per_source[peer.host] = left
            else:
                self._per_source.pop(peer.host, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("bug: tcp connection task failed", peer=f"{peer.host}:{peer.port}", error=repr(task.exception()))
        if conn.closed is not None or task.cancelled():
            conn.writer.transport.abort()
        else:
            conn.writer.close()
        try:
            if self.endpoint is not None:
                self.endpoint.transport_error(peer)
            self.flush()
        except Exception:
            log.exception("bug: unhandled error closing a tcp connection", peer=f"{peer.host}:{peer.port}")

    def _log_limited(self, event: str, reason: str, host: str, **fields: object) -> None:
        """Log ``event`` for ``host`` once per :data:`LOG_INTERVAL` and reason; the next line says how many were not
        logged in between."""
        now = self.loop.time()
        key = (reason, host)
        last = self._logged.get(key)
        if last is not None and now - last[0] < LOG_INTERVAL:
            self._logged[key] = (last[0], last[1] + 1)
            return
        if last is None and len(self._logged) >= _LOG_KEYS_MAX:
            for old in sorted(self._logged, key=lambda k: self._logged[k][0])[: _LOG_KEYS_MAX // 4]:
                del self._logged[old]
        self._logged[key] = (now, 0)
        emit = log.info if reason == "idle" else log.warning
        emit(event, source=host, reason=reason, not_logged=last[1] if last else 0, **fields)

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
        conn = self._tcp_conns.get(peer.connection or -1)
        if conn is not None and (conn.closed is not None or (conn.inbound and conn.writer.is_closing())):
            # Closed by a limit, or an accepted connection the peer reset: the endpoint hears of it
            # (transport_error) when its task ends. Not a new connection to the peer's source port: nobody listens
            # there (a peer that pipelined a thousand requests and reset would have us dial it a thousand times).
            return
        if conn is None or conn.writer.is_closing():
            self.spawn(self._tcp_connect_and_send(out))
            return
        conn.writer.write(out.data)
        conn.active = True
        conn.last_activity = self.loop.time()
        if conn.writer.transport.get_write_buffer_size() > self.tcp_limits.write_queue_max:
            self._close_connection(conn, "not_reading")

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
        addr = writer.get_extra_info("peername")
        host, port = (str(addr[0]), int(addr[1])) if addr else (out.peer.host, out.peer.port)
        conn = self._start_connection(reader, writer, Peer(host, port, "tcp", next(self._conn_ids)), inbound=False)
        writer.write(out.data)
        conn.active = True

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
