"""The daemon: sockets, timers and the call controller around the sans-I/O SIP endpoint.

I/O lives here and only here: UDP and TCP SIP transports feed :class:`~ivr.sip.endpoint.SipEndpoint`, its timers run
on the event loop's clock, and its call events drive the call controller, which negotiates SDP, owns each call's RTP
stream on the shared media clock, and runs the call's application (the welcome prompt, until flows exist).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fnmatch
import hashlib
import ipaddress
import itertools
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from ivr.call import Call
from ivr.config import ConfigError, IvrConfig
from ivr.flows.engine import FlowEngine
from ivr.flows.loader import FlowError, load_flow_tree
from ivr.flows.runtime import AiohttpClient, HttpClient, RecordResult, TraceEvent, TraceSink
from ivr.handoff.config import QueueConfigError, QueueTable, load_queues
from ivr.handoff.service import BridgedCall, QueueHandoff
from ivr.listening import SpeechService
from ivr.media.clock import MediaClock
from ivr.media.ports import PortPoolExhausted, RtpPortPool
from ivr.media.prompts import Prompt, PromptCache, PromptError
from ivr.media.recorder import Recording, RecordingWriter
from ivr.media.stream import MediaStream
from ivr.ops.admin import AdminServer, AdminSettings, ReloadResult
from ivr.ops.cdr import CallRecord, CdrStore, InputHeard, MediaQuality
from ivr.ops.metrics import EventLoopLagMonitor, IvrMetrics
from ivr.prompt_library import PromptLibrary
from ivr.registration import RegistrationDriver
from ivr.sip.auth import Credential, DigestVerifier, static_credentials
from ivr.sip.endpoint import (
    AuthRefused,
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallProgress,
    ClearTimer,
    DigitInfo,
    EndpointConfig,
    IncomingCall,
    Leg,
    Peer,
    ReferReceived,
    ReInvite,
    SetTimer,
    SipEndpoint,
    StrayResponse,
    TransferProgress,
    Transmit,
)
from ivr.sip.errors import SipError
from ivr.sip.message import MAX_MESSAGE_SIZE, StreamFramer
from ivr.sip.sdp import (
    PCMA,
    PCMU,
    Codec,
    NegotiatedMedia,
    SdpError,
    SessionDescription,
    answer_offer,
    build_offer,
    parse_answer,
)
from ivr.sip.transaction import TimerValues
from ivr.sip.uri import SipURI

log = structlog.get_logger("ivr.server")

CODECS: dict[str, Codec] = {"PCMU": PCMU, "PCMA": PCMA}
PTIME_MS = 20  # the media clock's packet time: what we send, and what our answers ask for
CallApp = Callable[[Call, "IvrServer"], Awaitable[None]]


@dataclass(eq=False)
class ActiveCall:
    leg: Leg
    stream: MediaStream
    port: int
    call: Call
    started: float
    session_id: int
    sdp_version: int = 0
    task: asyncio.Task[None] | None = None
    route: FlowRoute | None = None
    trace: list[TraceEvent] = field(default_factory=list)
    recording: Recording | None = None
    recordings: int = 0
    answered: float | None = None
    limit: asyncio.TimerHandle | None = None
    fields: dict[str, object] = field(default_factory=dict)
    sock: socket.socket | None = None  # the RTP socket (a bridge sends the queue's audio to the caller from it)
    bridged: BridgedCall | None = None  # the queue endpoint leg this call is bridged to (or ringing)
    handoff: dict[str, Any] | None = None  # the queue handoff's outcome, for the call record
    hangup_after_flow: bool = False  # a REFER succeeded: our leg ends with BYE once the flow has finished


@dataclass(eq=False)
class _PendingOffer:
    """A call answered with our offer (the INVITE had none); media starts when the ACK brings the answer."""

    port: int
    sock: socket.socket
    session_id: int


@dataclass(frozen=True)
class FlowRoute:
    """A line: the dialled numbers of one client, and the flow (engine) that answers them."""

    client: str
    numbers: tuple[str, ...]
    path: Path
    engine: FlowEngine[Prompt, Call]
    version: str
    """A content hash of the flow files as loaded, so a record says exactly which version a call ran."""

    @property
    def flow_name(self) -> str:
        return self.engine.tree.root.flow.name

    def describe(self) -> dict[str, object]:
        return {"client": self.client, "numbers": list(self.numbers), "flow": self.flow_name,
                "file": str(self.path), "version": self.version}  # fmt: skip


@dataclass(frozen=True)
class RouteTable:
    routes: list[FlowRoute]

    def __bool__(self) -> bool:
        return bool(self.routes)

    def match(self, dialled: str) -> FlowRoute | None:
        for route in self.routes:
            if any(fnmatch.fnmatchcase(dialled, pattern) for pattern in route.numbers):
                return route
        return None


class StreamRecorder:
    """The record node: an optional beep, then the caller's audio to a WAV file on the writer thread, until a stop
    key, silence, the length limit or a hang-up."""

    def __init__(self, server: IvrServer) -> None:
        self.server = server
        self.writer = RecordingWriter()
        self.beep = Prompt("beep", _beep_pcm())

    async def record(
        self, call: Call, *, max_seconds: float, beep: bool, stop_keys: str, silence_seconds: float | None
    ) -> RecordResult:
        active = next((a for a in self.server.calls.values() if a.call is call), None)
        if active is None or call.ended:
            return RecordResult(None, 0.0, "hangup")
        if beep:
            await call.play(self.beep)
            if call.ended:
                return RecordResult(None, 0.0, "hangup")
        active.recordings += 1
        day = time.strftime("%Y-%m-%d", time.gmtime())
        safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in call.call_id)[:80]
        path = (
            self.server.config.resolve(self.server.config.calls.recordings_dir)
            / day
            / f"{safe_id}-{active.recordings}.wav"
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            recording = Recording(
                self.writer, path, loop=self.server.loop, source=active.stream, max_seconds=max_seconds,
                stop_keys=stop_keys, silence_seconds=silence_seconds,
            )  # fmt: skip
        except (OSError, ValueError) as exc:
            return RecordResult(None, 0.0, f"failed: {exc}")
        active.recording = recording
        try:
            result = await recording.wait()
        finally:
            active.recording = None
        if result.error is not None:
            return RecordResult(None, result.duration, f"failed: {result.error}")
        reason = {"dtmf": "terminator", "closed": "hangup"}.get(result.stop_reason, result.stop_reason)
        log.info("recorded", call_id=call.call_id, path=str(result.path), seconds=round(result.duration, 2),
                 reason=reason, frames_dropped=result.frames_dropped)  # fmt: skip
        return RecordResult(str(result.path), result.duration, reason)


def _beep_pcm() -> npt.NDArray[np.int16]:
    t = np.arange(int(0.25 * 8000)) / 8000.0
    return (np.sin(2 * np.pi * 1000.0 * t) * 8000).astype(np.int16)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: IvrServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server._receive(data, Peer(addr[0], addr[1], "udp"))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for a peer that went away: the transactions' timers handle it.
        log.debug("udp error", error=str(exc))


async def welcome_app(call: Call, server: IvrServer) -> None:
    """The application every call runs until flows exist: play the welcome prompt, then hang up (or loop it)."""
    prompt = server.welcome
    if server.config.calls.hangup_after_prompt:
        await call.play(prompt)
        await call.hangup()
    else:
        await call.play(prompt, loop=True)


class IvrServer:
    def __init__(
        self,
        config: IvrConfig,
        *,
        app: CallApp = welcome_app,
        http: HttpClient | None = None,
        now: Callable[[], dt.datetime] | None = None,
        trace: TraceSink | None = None,
        socket_factory: Callable[[int, int], socket.socket] = socket.socket,
    ) -> None:
        """``http``, ``now``, ``trace`` and ``socket_factory`` are for the simulator: HTTP fixtures instead of the
        network, the wall clock a scenario sets (for hours checks), every flow trace event, and sockets on its
        virtual network."""
        self.config = config
        self.app = app
        host = config.sip.advertised_host or config.sip.host
        digest = config.security.digest
        verifier: DigestVerifier | None = None
        if digest is not None:
            verifier = DigestVerifier(
                realm=digest.realm,
                secret=digest.secret.encode() if digest.secret else secrets.token_bytes(32),
                credentials=static_credentials({user: _credential(v) for user, v in digest.users.items()}),
                algorithms=digest.algorithms,
            )
        self.endpoint = SipEndpoint(
            EndpointConfig(
                host=host,
                port=config.sip.port,
                user_agent=config.sip.user_agent,
                timers=TimerValues(t1=config.sip.t1, t2=config.sip.t2, t4=config.sip.t4),
                trusted=config.security.networks,
                untrusted_action=config.security.untrusted,
                auth=verifier,
                auth_trusted_skip=digest.trusted_skip if digest is not None else True,
            )
        )
        self.registration: RegistrationDriver | None = None
        if config.registration is not None:
            self.registration = RegistrationDriver(
                config.registration,
                local_host=host,
                local_port=config.sip.port,
                timers=self.endpoint.config.timers,
                user_agent=config.sip.user_agent,
                transmit=self._transmit,
            )
        self.prompts = PromptCache()
        self.welcome: Prompt = self.prompts.load("welcome", config.resolve(config.calls.welcome_prompt))
        low, high = config.media.port_range
        self.ports = RtpPortPool(config.media.address, low, high, socket_factory=socket_factory)
        self.codecs = tuple(CODECS[name] for name in config.media.codecs)
        self.calls: dict[Leg, ActiveCall] = {}
        self.library = PromptLibrary(config.resolve(config.flows.prompt_cache))
        queues_path = config.queues_path
        try:
            self.queues = load_queues(queues_path) if queues_path is not None else QueueTable({})
        except QueueConfigError as exc:
            raise ConfigError(f"queues: {exc}") from None
        self._handoff = QueueHandoff(self, self.queues)
        self._recorder = StreamRecorder(self)
        self.speech = SpeechService(config.speech)
        self._http: HttpClient = http if http is not None else AiohttpClient()
        self._now = now
        self._trace_sink = trace
        self._reloading = False
        self.routes = RouteTable([])
        self._routes_for: dict[Leg, FlowRoute | None] = {}
        self._source_buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._trust_cache: dict[str, bool] = {}
        self.dropped_rate_limited = 0
        self._cps_tokens = config.calls.max_calls_per_second
        self._cps_at = 0.0
        self._pending: dict[Leg, _PendingOffer] = {}
        self.calls_total = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: MediaClock | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_conns: dict[int, asyncio.StreamWriter] = {}
        self._conn_ids = itertools.count(1)
        self._timers: dict[tuple[int, str], asyncio.TimerHandle] = {}
        self._stopped = asyncio.Event()
        self._stopping = False
        self._stop_requests = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.metrics = IvrMetrics()
        self.cdr: CdrStore | None = None
        self.admin: AdminServer | None = None
        self.admin_address: tuple[str, int] | None = None
        self._lag: EventLoopLagMonitor | None = None
        self._admin_settings: AdminSettings | None = None
        if config.admin.listen is not None:
            host, _, port = config.admin.listen.rpartition(":")
            try:
                self._admin_settings = AdminSettings(
                    host=host.strip("[]"),
                    port=int(port),
                    token=config.admin.token,
                    metrics_require_token=config.admin.metrics_require_token,
                    ready_max_lag=config.admin.ready_max_lag,
                )
            except ValueError as exc:
                raise ConfigError(f"admin: {exc}") from None
        self._conn_tasks: set[asyncio.Task[object]] = set()

    # ---- lifecycle ----

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "server not started"
        return self._loop

    @property
    def clock(self) -> MediaClock:
        assert self._clock is not None, "server not started"
        return self._clock

    async def start(self) -> None:
        """Load flows, open the call record store and the admin API, bind SIP; on any failure undo what was done."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._cps_at = self._loop.time()
        if self.config.routes:
            log.info("loading flows", routes=len(self.config.routes))
            self.routes = await self._loop.run_in_executor(None, self._load_routes)
            if self.config.flows.watch:
                self._spawn(self._watch_flows())
        if self.config.speech.enabled:
            await self._loop.run_in_executor(None, self.speech.load)
        self._clock = MediaClock(self._loop)
        self._clock.start()
        clock = self._clock
        self.metrics.watch_media_clock(lambda: clock.stats)
        self._lag = self.metrics.lag_monitor(0.5)
        self._lag.start()
        instance = self.config.cdr.instance or f"{socket.gethostname()}:{self.config.sip.port}"
        self.cdr = await CdrStore.open(self.config.cdr_url, instance=instance)
        interrupted = await self.cdr.close_interrupted()
        if interrupted:
            log.warning("closed call records left open by a previous run", interrupted=interrupted)
        self.metrics.watch_cdr_store(self.cdr)
        endpoint = self.endpoint
        self.metrics.watch_sip_refusals(
            lambda: {
                "untrusted": endpoint.untrusted_messages,
                "rate_limited": self.dropped_rate_limited,
                "auth": endpoint.auth_refused,
            }
        )
        if self._admin_settings is not None:
            self.admin = AdminServer(self, self._admin_settings, self.metrics)
            self.admin_address = await self.admin.start()
        host, port = self.config.sip.host, self.config.sip.port
        if "udp" in self.config.sip.transports:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port), reuse_port=False
            )
            self._udp = transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        if "tcp" in self.config.sip.transports:
            self._tcp = await asyncio.start_server(self._tcp_connection, host, port, reuse_address=True)
        if self.registration is not None:
            self.registration.start()
        log.info(
            "ivr ready",
            sip=f"{host}:{port}",
            transports=",".join(self.config.sip.transports),
            rtp=self.config.media.rtp_ports,
            welcome=self.welcome.name,
            welcome_seconds=round(self.welcome.duration, 2),
            admin=f"{self.admin_address[0]}:{self.admin_address[1]}" if self.admin_address else "off",
        )

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    def request_stop(self) -> None:
        """What SIGTERM does. First call: drain (INVITE and OPTIONS get 503, calls in progress finish), then stop;
        after ``calls.drain_seconds`` the calls still up get a BYE. Second call: BYE to every call now, wait for
        the answers, stop. Third call: stop at once."""
        self._stop_requests += 1
        if self._stop_requests == 1:
            log.info("draining before stop", active_calls=len(self.calls))
            self.drain()
            self._spawn(self._finish_drain())
        elif self._stop_requests == 2:
            self._hang_up_all()
        else:
            self._stopped.set()

    async def _finish_drain(self) -> None:
        deadline = self.loop.time() + self.config.calls.drain_seconds
        # Calls end on SIP events that the endpoint does not signal to anyone waiting; polling a few times a
        # second while draining costs nothing.
        while self.calls and self.loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        if self._stop_requests == 1:
            if self.calls:
                log.info("drain time is up", active_calls=len(self.calls))
            self._hang_up_all()

    def _hang_up_all(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("stopping", active_calls=len(self.calls))
        self.endpoint.shutdown()
        self._flush()
        self._spawn(self._finish_stop())

    async def _finish_stop(self) -> None:
        deadline = self.loop.time() + 4 * self.config.sip.t1 * 8
        # The endpoint is sans-I/O and has no event to wait on; a short poll during shutdown costs nothing.
        while (self.endpoint.busy or self.calls) and self.loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self._stopped.set()

    async def close(self) -> None:
        if self.registration is not None and self._udp is not None:
            await self.registration.stop(timeout=min(32 * self.config.sip.t1, 5.0))
        for active in list(self.calls.values()):
            self._teardown(active, "shutdown")
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._tcp_conns.values()):
                writer.close()
            if self._conn_tasks:
                await asyncio.wait(list(self._conn_tasks), timeout=2)
            await self._tcp.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._clock is not None:
            self._clock.stop()
        if self.admin is not None:
            await self.admin.close()
        if self._lag is not None:
            await self._lag.stop()
        if self.cdr is not None:
            await self.cdr.close()
        if isinstance(self._http, AiohttpClient):
            await self._http.close()
        await self.loop.run_in_executor(None, self.speech.close)
        await self.loop.run_in_executor(None, self._recorder.writer.close, 5.0)
        log.info("stopped", calls_total=self.calls_total)

    # ---- transport ----

    def _receive(self, data: bytes, peer: Peer) -> None:
        if not self._is_trusted(peer.host) and not self._source_allowed(peer.host):
            return
        try:
            self.endpoint.receive(data, peer, now=time.time())
        except SipError as exc:  # the endpoint answers protocol errors itself; this is a last line of defence
            log.warning("sip message rejected", peer=f"{peer.host}:{peer.port}", error=exc.reason)
        except Exception:
            log.exception("bug: unhandled error on a SIP message", peer=f"{peer.host}:{peer.port}")
        self._flush()

    def _is_trusted(self, host: str) -> bool:
        """Listed in security.trusted_sources (cached per address: no CIDR walk per packet)."""
        known = self._trust_cache.get(host)
        if known is None:
            networks = self.config.security.networks
            try:
                address = ipaddress.ip_address(host)
                known = any(address in n for n in networks)
            except ValueError:
                known = False
            if len(self._trust_cache) > 4096:
                self._trust_cache.clear()
            self._trust_cache[host] = known
        return known

    def _source_allowed(self, host: str) -> bool:
        """Per-address token bucket: a flood from one source is dropped before it costs a parse (RFC 3261 says
        nothing; this is what keeps one broken or hostile peer from starving the others)."""
        rate = self.config.security.max_messages_per_source
        now = self.loop.time()
        tokens, at = self._source_buckets.pop(host, (2 * rate, now))
        tokens = min(2 * rate, tokens + (now - at) * rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        else:
            self.dropped_rate_limited += 1
        self._source_buckets[host] = (tokens, now)  # most recent last: the oldest are forgotten first
        if len(self._source_buckets) > 10000:
            self._source_buckets.popitem(last=False)
        return allowed

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
                    self._receive(message, peer)
        except (ConnectionError, OSError):
            pass
        finally:
            if current is not None:
                self._conn_tasks.discard(current)
            self._tcp_conns.pop(conn_id, None)
            writer.close()
            self.endpoint.transport_error(peer)
            self._flush()

    def _transmit(self, out: Transmit) -> None:
        peer = out.peer
        if peer.transport == "udp":
            if self._udp is None:
                return
            if _is_ip(peer.host):
                self._udp.sendto(out.data, (peer.host, peer.port))
            else:
                self._spawn(self._resolve_and_send(out))
            return
        writer = self._tcp_conns.get(peer.connection or -1)
        if writer is not None and not writer.is_closing():
            writer.write(out.data)
        else:
            self._spawn(self._tcp_connect_and_send(out))

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
            self.endpoint.transport_error(out.peer)
            self._flush()
            return
        writer.write(out.data)
        self._spawn(self._tcp_connection(reader, writer))

    # ---- the endpoint's outputs ----

    def _flush(self) -> None:
        while True:
            outputs = self.endpoint.outputs()
            if not outputs:
                return
            for out in outputs:
                if isinstance(out, Transmit):
                    self._transmit(out)
                elif isinstance(out, SetTimer):
                    old = self._timers.pop(out.token, None)
                    if old is not None:
                        old.cancel()
                    self._timers[out.token] = self.loop.call_later(out.delay, self._fire, out.token)
                elif isinstance(out, ClearTimer):
                    handle = self._timers.pop(out.token, None)
                    if handle is not None:
                        handle.cancel()
                elif isinstance(out, IncomingCall):
                    self._on_incoming(out.leg)
                elif isinstance(out, CallConfirmed):
                    self._on_confirmed(out.leg, out.body)
                elif isinstance(out, ReInvite):
                    self._on_reinvite(out.leg, out)
                elif isinstance(out, CallEnded):
                    if not self._handoff.on_queue_leg_event(out):
                        self._on_ended(out)
                elif isinstance(out, CallProgress | CallAnswered):
                    self._handoff.on_queue_leg_event(out)
                elif isinstance(out, TransferProgress):
                    self._handoff.on_transfer_progress(out)
                elif isinstance(out, ReferReceived):  # only a transferee endpoint raises it; the daemon is none
                    self.endpoint.reject_refer(out.leg, out.request, 403, "transfers are not accepted from callers")
                elif isinstance(out, DigitInfo):
                    if not self._handoff.on_digit_info(out):  # a bridged call's key crosses the bridge
                        active = self.calls.get(out.leg)
                        if active is not None:
                            self._digit(active, out.key, "info")
                elif isinstance(out, AuthRefused):
                    self.metrics.invite_response(out.status)
                    if out.status != 401 and out.status != 407:
                        self.metrics.call_rejected("auth")
                    log.info("invite refused by digest authentication", status=out.status, why=out.detail,
                             peer=f"{out.peer.host}:{out.peer.port}", call_id=out.request.call_id)  # fmt: skip
                elif isinstance(out, StrayResponse) and self.registration is not None:
                    self.registration.response(out.response)

    def _fire(self, token: tuple[int, str]) -> None:
        self._timers.pop(token, None)
        try:
            self.endpoint.timer_fired(token)
        except Exception:
            log.exception("bug: unhandled error in a SIP timer", token=token)
        self._flush()

    # ---- call controller ----

    def _refuse(self, leg: Leg, status: int, reason: str, *, why: str, retry_after: int | None = None) -> None:
        """Answer an INVITE with a final error, and leave a call record of it (every call leaves one)."""
        self.endpoint.reject(leg, status, reason, retry_after=retry_after)
        self.metrics.call_rejected(why)
        self.metrics.invite_response(status)
        if self.cdr is not None and not self.cdr.is_open(leg.call_id):
            self.cdr.call_started(self._record(leg))
            self.cdr.call_ended(leg.call_id, "rejected", sip_status=status, extra={"why": why, "detail": reason})

    def _record(self, leg: Leg) -> CallRecord:
        return CallRecord(leg.call_id, _user_of(leg.invite.from_.uri), _user_of(leg.invite.parsed_uri))

    def _on_incoming(self, leg: Leg) -> None:
        clog = log.bind(call_id=leg.call_id)
        route: FlowRoute | None = None
        if self.routes:
            dialled = _user_of(leg.invite.parsed_uri) or _user_of(leg.invite.to.uri)
            route = self.routes.match(dialled)
            if route is None:
                clog.info("call refused: no route for the dialled number", dialled=dialled)
                self._refuse(leg, 404, f"no flow serves the number {dialled!r}", why="no_route")
                return
        self._routes_for[leg] = route
        lag = self.event_loop_lag()
        if lag > self.config.calls.shed_lag:
            clog.warning("call refused: event loop lagging", lag_ms=round(lag * 1000, 1))
            self._refuse(leg, 503, "overloaded", why="lag", retry_after=5)
            return
        if not self._admit_rate():
            clog.warning("call refused: calls per second limit", max_cps=self.config.calls.max_calls_per_second)
            self._refuse(leg, 503, "too many new calls per second", why="cps", retry_after=1)
            return
        if len(self.calls) + len(self._pending) >= self.config.calls.max_calls:
            clog.warning("call refused: at capacity", active_calls=len(self.calls))
            self._refuse(leg, 503, "at capacity", why="max_calls", retry_after=5)
            return
        offer: SessionDescription | None = None
        if leg.offer:
            try:
                offer = SessionDescription.parse(leg.offer)
            except SdpError as exc:
                self._refuse(leg, exc.status, f"SDP: {exc.reason}", why="sdp")
                return
        try:
            port, sock = self.ports.acquire()
        except PortPoolExhausted:
            clog.warning("call refused: no free RTP port")
            self._refuse(leg, 503, "no free RTP port", why="rtp_ports", retry_after=5)
            return
        session_id = secrets.randbelow(2**31)
        address = self.config.media.address
        if offer is None:
            # RFC 3261 13.2.1 late offer: our offer goes in the 200, the caller's answer comes in the ACK.
            local = build_offer(
                local_address=address,
                local_port=port,
                codecs=self.codecs,
                session_id=session_id,
                session_version=session_id,
            )
            self._pending[leg] = _PendingOffer(port, sock, session_id)
            self.endpoint.answer(leg, local.serialize())
            self._record_start(leg)
            clog.info("call answered with an offer (late offer)", rtp_port=port)
            return
        try:
            answer, media = answer_offer(
                offer,
                local_address=address,
                local_port=port,
                supported=self.codecs,
                session_id=session_id,
                session_version=session_id,
                single_codec=True,
                ptime=PTIME_MS,
            )
            _check_media_address(media)
        except SdpError as exc:
            sock.close()
            self.ports.release(port)
            self._refuse(leg, exc.status, f"SDP: {exc.reason}", why="sdp")
            return
        self._start_call(leg, port, sock, media, session_id)
        self.endpoint.answer(leg, answer.serialize())
        self._record_start(leg)

    def _record_start(self, leg: Leg) -> None:
        self.metrics.call_started()
        self.metrics.invite_response(200)
        if self.cdr is not None:
            self.cdr.call_started(self._record(leg))
            self.cdr.call_answered(leg.call_id)

    def _admit_rate(self) -> bool:
        """Token bucket of max_calls_per_second new calls, with a burst of the same size."""
        rate = self.config.calls.max_calls_per_second
        now = self.loop.time()
        self._cps_tokens = min(rate, self._cps_tokens + (now - self._cps_at) * rate)
        self._cps_at = now
        if self._cps_tokens < 1.0:
            return False
        self._cps_tokens -= 1.0
        return True

    def _start_call(self, leg: Leg, port: int, sock: socket.socket, media: NegotiatedMedia, session_id: int) -> None:
        stream = MediaStream(
            self.loop,
            sock,
            clock=self.clock,
            codec=media.codec.name,
            payload_type=media.codec.payload_type,
            remote=(media.remote_address, media.remote_port),
            telephone_event_pt=media.telephone_event_pt,
            allow_relatch=self.config.media.allow_relatch,
            dtmf_mode="none" if self.config.media.dtmf_mode == "info" else self.config.media.dtmf_mode,
        )
        if media.on_hold:
            stream.set_hold(True)
        call = Call(
            call_id=leg.call_id,
            caller=_user_of(leg.invite.from_.uri),
            dialled=_user_of(leg.invite.parsed_uri),
            codec=media.codec.name,
            media=stream,
            control=self,
            speech=self.speech.for_call(self.loop, stream) if self.speech.engine is not None else None,
        )
        active = ActiveCall(
            leg,
            stream,
            port,
            call,
            started=time.time(),
            session_id=session_id,
            route=self._routes_for.pop(leg, None),
            sock=sock,
        )
        stream.on_digit_event = lambda event: self._digit(active, event.key, event.source)
        self.calls[leg] = active
        self.calls_total += 1
        active.answered = time.time()
        active.limit = self.loop.call_later(self.config.calls.max_call_seconds, self._call_too_long, leg)
        log.info(
            "call answered",
            call_id=leg.call_id,
            caller=call.caller,
            dialled=call.dialled,
            codec=media.codec.name,
            remote_rtp=f"{media.remote_address}:{media.remote_port}",
            rtp_port=port,
        )

    def _on_confirmed(self, leg: Leg, body: bytes) -> None:
        pending = self._pending.pop(leg, None)
        if pending is not None:
            try:
                if not body:
                    raise SdpError(488, "the ACK carried no SDP answer to our offer")
                media = parse_answer(SessionDescription.parse(body), self.codecs)
                _check_media_address(media)
            except SdpError as exc:
                log.warning("late-offer answer unusable; hanging up", call_id=leg.call_id, error=exc.reason)
                pending.sock.close()
                self.ports.release(pending.port)
                self.endpoint.hangup(leg)
                return
            self._start_call(leg, pending.port, pending.sock, media, pending.session_id)
        active = self.calls.get(leg)
        if active is None or active.task is not None:
            return
        active.task = self.loop.create_task(self._run_app(active))

    async def _run_app(self, active: ActiveCall) -> None:
        try:
            if active.route is not None:
                await self._run_flow(active, active.route)
            else:
                await self.app(active.call, self)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call application failed; hanging up", call_id=active.leg.call_id)
            self.hangup_call(active.call)

    def _on_reinvite(self, leg: Leg, event: ReInvite) -> None:
        active = self.calls.get(leg)
        if active is None and self._handoff.owns(leg):
            # A queue leg (bridged): its media cannot move in this version; refuse the change, keep the call.
            warning = ("Warning", '399 ivr "re-INVITE is not supported on a bridged leg"')
            self.endpoint.respond(leg, 488, request=event.request, extra=[warning])
            return
        if active is None:
            self.endpoint.respond(leg, 481, request=event.request)
            self._flush()
            return
        try:
            if not event.request.body:
                raise SdpError(488, "a re-INVITE without SDP is not supported")
            offer = SessionDescription.parse(event.request.body)
            answer, media = answer_offer(
                offer,
                local_address=self.config.media.address,
                local_port=active.port,
                supported=(CODECS[active.call.codec],),
                session_id=active.session_id,
                session_version=active.sdp_version + 1,  # RFC 3264 8: same o= line, version + 1
                single_codec=True,
                ptime=PTIME_MS,
            )
            _check_media_address(media)
            if media.codec.payload_type != active.stream.payload_type:
                raise SdpError(488, "changing the payload type of the call's codec mid-call is not supported")
            active.sdp_version += 1
        except SdpError as exc:
            self.endpoint.respond(
                leg, exc.status, request=event.request, extra=[("Warning", f'399 ivr "SDP: {exc.reason}"')]
            )
            return
        if not media.on_hold:
            active.stream.set_remote((media.remote_address, media.remote_port))
        active.stream.set_hold(media.on_hold)
        active.stream.telephone_event_pt = media.telephone_event_pt
        log.info("re-INVITE", call_id=leg.call_id, hold=media.on_hold)
        self.endpoint.respond(leg, 200, request=event.request, body=answer.serialize(), content_type="application/sdp")

    async def _run_flow(self, active: ActiveCall, route: FlowRoute) -> None:
        call = active.call
        engine = route.engine
        if self.cdr is not None:
            self.cdr.call_updated(call.call_id, client=route.client, flow=route.flow_name, flow_version=route.version)
        sink = self._trace_sink
        keep = active.trace.append
        count = self.metrics.observe_trace

        def trace(event: TraceEvent) -> None:
            keep(event)
            count(event)
            if sink is not None:
                sink(event)

        outcome = await engine.run(call, client=route.client, trace=trace)
        log.info("flow finished", call_id=call.call_id, client=route.client, flow=route.flow_name,
                 outcome=outcome.kind, node=outcome.node, reason=outcome.reason)  # fmt: skip
        if outcome.kind == "queued":
            if active.hangup_after_flow and not call.ended:
                await call.hangup()  # REFER succeeded: the caller is with the queue now; our leg ends (RFC 5589)
            return  # bridged: the bridge runs until either side hangs up
        if not call.ended:
            await call.hangup()

    def _digit(self, active: ActiveCall, key: str, source: str) -> None:
        """A key press from any source: a recording in progress takes its stop key; the call hears the rest."""
        recording = active.recording
        if recording is not None and not recording.stopped and recording.digit(key, source):
            return
        active.call._digit(key, source)

    def _on_ended(self, event: CallEnded) -> None:
        self._routes_for.pop(event.leg, None)
        pending = self._pending.pop(event.leg, None)
        if pending is not None:
            pending.sock.close()
            self.ports.release(pending.port)
            self._record_end(event.leg.call_id, event.reason.value, event.status, None)
        active = self.calls.get(event.leg)
        if active is None:
            return
        self._teardown(active, event.reason.value, status=event.status)

    def _teardown(self, active: ActiveCall, reason: str, *, status: int | None = None) -> None:
        self.calls.pop(active.leg, None)
        if active.limit is not None:
            active.limit.cancel()
        if active.recording is not None and not active.recording.stopped:
            active.recording.stop("closed")
        active.call._end(reason)
        self._handoff.caller_gone(active)
        stats = active.stream.stats
        media_record = active.stream.call_record()
        active.stream.close()
        self._record_end(active.leg.call_id, reason, status, media_record, prompts=active.call.prompts_played,
                         trace=active.trace, route=active.route, handoff=active.handoff)  # fmt: skip
        self.ports.release(active.port)
        if active.task is not None and not active.task.done():
            active.task.cancel()
        log.info(
            "call ended",
            call_id=active.leg.call_id,
            reason=reason,
            status=status,
            duration=round(time.time() - active.started, 3),
            prompts=",".join(active.call.prompts_played),
            rtp_packets_sent=stats.packets_sent,
            rtp_packets_received=stats.packets_received,
            rtp_dropped_wrong_source=stats.dropped_wrong_source,
            dtmf_digits=stats.dtmf_digits,
            info_digits=active.call.digits_by_source.get("info", 0),
        )

    def _record_end(
        self,
        call_id: str,
        reason: str,
        status: int | None,
        media_record: dict[str, int | float | str] | None,
        *,
        prompts: list[str] | None = None,
        trace: list[TraceEvent] | None = None,
        route: FlowRoute | None = None,
        handoff: dict[str, Any] | None = None,
    ) -> None:
        media = MediaQuality.from_stream(media_record) if media_record is not None else None
        self.metrics.call_ended(reason, media)
        if self.cdr is not None and self.cdr.is_open(call_id):
            extra: dict[str, object] = {"prompts": prompts or []}
            if media_record is not None:
                extra["media"] = media_record
            path = [e.node for e in trace or () if e.kind == "node" and e.node]
            inputs = [
                InputHeard(e.node or "", str(e.detail.get("result", "input")), _input_value(e.detail))
                for e in trace or ()
                if e.kind == "input" and e.detail.get("result") != "digit"  # each key of an entry: the trace has them
            ]
            outcome = next((dict(e.detail) for e in reversed(trace or ()) if e.kind == "outcome"), None)
            if outcome is not None:
                extra["outcome"] = outcome
            if handoff is not None:
                extra["handoff"] = handoff
            self.cdr.call_ended(
                call_id,
                reason,
                sip_status=status,
                media=media,
                extra=extra,
                path=path,
                inputs=inputs,
                client=route.client if route else None,
                flow=route.flow_name if route else None,
                flow_version=route.version if route else None,
            )

    # ---- the admin API's backend ----

    def active_calls(self) -> list[dict[str, object]]:
        now = time.time()
        return [
            {
                "call_id": a.leg.call_id,
                "caller": a.call.caller,
                "dialled": a.call.dialled,
                "codec": a.call.codec,
                "seconds": round(now - a.started, 1),
                "client": a.route.client if a.route is not None else None,
                "flow": a.route.flow_name if a.route is not None else None,
                "node": _current_node(a.trace),
                "prompts": list(a.call.prompts_played),
            }
            for a in self.calls.values()
        ]

    async def reload(self) -> ReloadResult:
        """Load every routed flow and its prompts, and the welcome prompt, from disk; swap them in only when all of
        it loaded (calls in progress keep the version they started with). On any error nothing changes."""
        if self._reloading:
            return ReloadResult(ok=False, flows=self.flows(), errors=["a reload is already running"])
        self._reloading = True
        try:
            path = self.config.resolve(self.config.calls.welcome_prompt)
            welcome = await self.loop.run_in_executor(None, self.prompts.load, "welcome", path)
            routes = await self.loop.run_in_executor(None, self._load_routes)
        except (PromptError, FlowError) as exc:
            errors = [str(p) for p in exc.problems] if isinstance(exc, FlowError) else [str(exc)]
            log.warning("reload failed; nothing changed", errors=errors)
            return ReloadResult(ok=False, flows=self.flows(), errors=errors)
        finally:
            self._reloading = False
        self.welcome = welcome
        self.routes = routes
        log.info("reloaded", flows=[r.describe() for r in routes.routes])
        return ReloadResult(ok=True, flows=self.flows(), errors=[])

    def request_reload(self) -> None:
        """SIGHUP."""
        self._spawn(self._reload_quietly())

    async def _reload_quietly(self) -> None:
        await self.reload()

    def _watched_files(self) -> dict[Path, float]:
        """Modification times of every loaded flow file and every recording in a prompts/ folder beside one."""
        seen: dict[Path, float] = {}
        folders: set[Path] = set()
        for route in self.routes.routes:
            for loaded in route.engine.tree.flows.values():
                seen[loaded.path] = _mtime(loaded.path)
                folders.add(loaded.base_dir / "prompts")
        for folder in folders:
            if folder.is_dir():
                for path in folder.rglob("*"):
                    if path.suffix.lower() in (".wav", ".flac", ".ogg"):
                        seen[path] = _mtime(path)
        return seen

    async def _watch_flows(self) -> None:
        """Reload when a flow or recorded prompt changes (a failed load logs why and keeps the running version)."""
        interval = self.config.flows.watch_interval
        known = self._watched_files()
        while True:
            await asyncio.sleep(interval)
            current = self._watched_files()
            if current != known:
                changed = sorted(str(p) for p in set(current) | set(known) if current.get(p) != known.get(p))
                log.info("flow files changed; reloading", changed=changed[:10])
                await self.reload()
                known = self._watched_files()

    def _load_routes(self) -> RouteTable:
        """Blocking (run in an executor): load each routed flow tree, build its engine, prepare all its audio."""
        routes: list[FlowRoute] = []
        engines: dict[Path, tuple[FlowEngine[Prompt, Call], str]] = {}
        for setting in self.config.routes:
            path = self.config.resolve(setting.flow).resolve()
            if path not in engines:
                tree = load_flow_tree(path, known_queues=self.queues.names)
                digest = hashlib.sha256()
                for flow_path, loaded in sorted(tree.flows.items()):
                    digest.update(str(flow_path).encode() + b"\0" + loaded.path.read_bytes())
                engine = FlowEngine(
                    tree,
                    player=self.library,
                    handoff=self._handoff,
                    recorder=self._recorder,
                    http=self._http,
                    now=self._now,
                )
                self.library.prepare(engine.audio_parts())
                engines[path] = (engine, digest.hexdigest()[:12])
            engine, version = engines[path]
            routes.append(FlowRoute(setting.client, tuple(setting.numbers), path, engine, version))
        return RouteTable(routes)

    def drain(self) -> None:
        """Stop taking new calls (503 to INVITE and OPTIONS); calls in progress carry on."""
        if self.endpoint.config.accepting:
            log.info("draining", active_calls=len(self.calls))
        self.endpoint.config.accepting = False

    @property
    def draining(self) -> bool:
        return not self.endpoint.config.accepting

    def flows(self) -> list[dict[str, object]]:
        return [r.describe() for r in self.routes.routes]

    def event_loop_lag(self) -> float:
        return self._lag.lag if self._lag is not None else 0.0

    def _call_too_long(self, leg: Leg) -> None:
        log.info("call reached max_call_seconds", call_id=leg.call_id)
        self.endpoint.hangup(leg)
        self._flush()

    # ---- what the queue handoff needs ----

    @property
    def http(self) -> HttpClient:
        return self._http

    def flush(self) -> None:
        """Act on everything the SIP endpoint has to say (after a verb called from outside a SIP event)."""
        self._flush()

    def active_for(self, call: Call) -> ActiveCall | None:
        return next((a for a in self.calls.values() if a.call is call), None)

    def handoff_done(self, active: ActiveCall, record: dict[str, Any]) -> None:
        """The handoff's outcome: kept for the call record and traced like the flow's own events."""
        active.handoff = record
        log.info("handoff", call_id=active.leg.call_id, **{k: v for k, v in record.items() if k != "uri"})
        event = TraceEvent(self.loop.time(), "input", None, {"result": "handoff", "value": record.get("result"),
                           **record}, call_id=active.leg.call_id)  # fmt: skip
        active.trace.append(event)
        self.metrics.observe_trace(event)
        if self._trace_sink is not None:
            self._trace_sink(event)

    def end_bridged_call(self, active: ActiveCall, reason: str) -> None:
        """The queue's side of a bridged call hung up: end the caller's leg with BYE."""
        log.info("bridged call ended by the queue", call_id=active.leg.call_id, reason=reason)
        self.endpoint.hangup(active.leg)
        self._flush()

    # CallControl for ivr.call.Call
    def hangup_call(self, call: Call) -> None:
        for leg, active in self.calls.items():
            if active.call is call:
                self.endpoint.hangup(leg)
                self._flush()
                return

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _current_node(trace: list[TraceEvent]) -> str | None:
    """The node the call is in: the last one its flow (or the subflow it is in) entered."""
    for event in reversed(trace):
        if event.kind == "node" and event.node:
            return event.node
    return None


def _credential(value: str) -> Credential:
    """A configured user's secret: a password, or ``sha256:HA1`` / ``md5:HA1``."""
    kind, sep, digest = value.partition(":")
    if sep and kind == "sha256":
        return Credential(ha1={"SHA-256": digest})
    if sep and kind == "md5":
        return Credential(ha1={"MD5": digest})
    return Credential(password=value)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return -1.0


def _input_value(detail: Mapping[str, Any]) -> str:
    for key in ("entry", "key", "digits", "value", "words", "text"):
        if key in detail:
            return str(detail[key])
    return ""


def _check_media_address(media: NegotiatedMedia) -> None:
    if not _is_ip(media.remote_address):
        raise SdpError(488, f"c= address {media.remote_address!r} is not an IP address; we do not resolve names")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _user_of(uri: object) -> str:
    if isinstance(uri, SipURI):
        return uri.user or ""
    text = str(uri)
    return text.partition(":")[2].partition(";")[0]
