"""The daemon: its parts, wired together. Each part has one job and gets what it uses, never this server.

- :class:`~ivr.daemon.sip_driver.SipDriver`: SIP over UDP and TCP, and the SIP timers, around the sans-I/O endpoint;
  :class:`~ivr.daemon.admission.SourceGate` in front of it (rate per source, and the trust the endpoint acts on).
- :class:`~ivr.daemon.registration.UpstreamRegistration`: the binding at an upstream registrar, which the endpoint
  keeps registered; its log and state.
- :class:`~ivr.daemon.calls.CallController`: call legs both ways (answering, placing), admission of new calls
  (:class:`~ivr.daemon.admission.CallAdmission`), each call's :class:`~ivr.call.Call` and its flow.
- :class:`~ivr.daemon.media_session.MediaSessions`: offer/answer -> RTP port -> stream, on the one media clock.
- :class:`~ivr.handoff.service.QueueHandoff`: REFER and bridging to queue endpoints.
- :mod:`ivr.daemon.routes`: flows by dialled number, loaded and reloaded off the loop.
- :class:`~ivr.ops.call_records.CallRecords`: the call records and metrics; the admin API
  (:class:`~ivr.ops.admin.AdminServer`) reads this server through its ``AdminBackend`` methods.

What stays here: the order things start and stop in, drain, reload, and routing the SIP endpoint's events to the part
that owns them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from ivr.call import Call
from ivr.config import ConfigError, IvrConfig
from ivr.daemon.admission import CallAdmission, SourceGate
from ivr.daemon.calls import ActiveCall, CallController, PlacedCall
from ivr.daemon.media_session import CODECS, MediaPolicy, MediaSessions
from ivr.daemon.prompt_library import PromptLibrary
from ivr.daemon.recording import StreamRecorder
from ivr.daemon.registration import UpstreamRegistration
from ivr.daemon.routes import FlowRoute, FlowWatcher, RouteTable, load_routes
from ivr.daemon.sip_driver import SipDriver, TcpLimits
from ivr.flows.engine import FlowEngine
from ivr.flows.loader import FlowError, FlowTree
from ivr.flows.runtime import AiohttpClient, HttpClient, TraceSink
from ivr.handoff.config import QueueConfigError, QueueTable, load_queues
from ivr.handoff.service import QueueHandoff
from ivr.media.clock import MediaClock
from ivr.media.ports import RtpPortPool
from ivr.media.prompts import Prompt, PromptCache, PromptError
from ivr.ops.admin import AdminServer, AdminSettings, ReloadResult
from ivr.ops.call_records import CallRecords
from ivr.ops.cdr import CdrStore
from ivr.ops.metrics import EventLoopLagMonitor, IvrMetrics
from ivr.sip.auth import Credential, DigestVerifier, static_credentials
from ivr.sip.endpoint import (
    AuthRefused,
    EndpointConfig,
    Output,
    Peer,
    ReferReceived,
    Registered,
    RegistrationFailed,
    SipEndpoint,
    TransferProgress,
    Unregistered,
)
from ivr.sip.transaction import TimerValues
from ivr.speech.calls import SpeechService

__all__ = ["ActiveCall", "CallApp", "FlowRoute", "IvrServer", "RouteTable", "welcome_app"]

log = structlog.get_logger("ivr.server")

CallApp = Callable[[Call, "IvrServer"], Awaitable[None]]


async def welcome_app(call: Call, server: IvrServer) -> None:
    """The application of a call no flow answers: play the welcome prompt, then hang up (or loop it)."""
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
        self.endpoint = SipEndpoint(_endpoint_config(config, host))
        security = config.security
        self.gate = SourceGate(security.networks, security.max_messages_per_source, self._time,
                               block_seconds=security.block_seconds)  # fmt: skip
        self.driver = SipDriver(
            self.endpoint, self._on_sip_event, admit=self.gate.admit, tcp_limits=TcpLimits.from_settings(config.sip)
        )
        self.registration: UpstreamRegistration | None = None
        if config.registration is not None:
            self.registration = UpstreamRegistration(
                config.registration,
                endpoint=self.endpoint,
                flush=self.driver.flush,
                local_host=host,
                local_port=config.sip.port,
                user_agent=config.sip.user_agent,
            )
        self.prompts = PromptCache()
        self.welcome: Prompt = self.prompts.load("welcome", config.resolve(config.calls.welcome_prompt))
        low, high = config.media.port_range
        self.ports = RtpPortPool(config.media.address, low, high, socket_factory=socket_factory)
        media = config.media
        self.media_policy = MediaPolicy(
            address=media.address,
            codecs=tuple(CODECS[name] for name in media.codecs),
            dtmf_mode="none" if media.dtmf_mode == "info" else media.dtmf_mode,
            allow_relatch=media.allow_relatch,
            send_after_first_packet=media.send_after_first_packet,
        )
        self.library = PromptLibrary(config.resolve(config.flows.prompt_cache))
        queues_path = config.queues_path
        try:
            self.queues = load_queues(queues_path) if queues_path is not None else QueueTable({})
        except QueueConfigError as exc:
            raise ConfigError(f"queues: {exc}") from None
        self.speech = SpeechService(config.speech)
        self._http: HttpClient = http if http is not None else AiohttpClient()
        self._now = now
        self.metrics = IvrMetrics()
        self.records = CallRecords(self.metrics)
        self.controller = CallController(
            config,
            endpoint=self.endpoint,
            flush=self.driver.flush,
            sessions=lambda: self.sessions,
            routes=lambda: self.routes,
            admission=lambda: self.admission,
            records=self.records,
            speech=self.speech,
            app=lambda call: self.app(call, self),
            trace_sink=trace,
        )
        self.handoff = QueueHandoff(self.queues, host=self.controller, sessions=lambda: self.sessions, http=self._http)
        self.controller.queue_legs = self.handoff
        self._recorder = StreamRecorder(
            self.controller.active_for, lambda: config.resolve(config.calls.recordings_dir), lambda: self.loop
        )
        self.routes = RouteTable([])
        self._reloading = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: MediaClock | None = None
        self._sessions: MediaSessions | None = None
        self._admission: CallAdmission | None = None
        self._stopped = asyncio.Event()
        self._stopping = False
        self._stop_requests = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.cdr: CdrStore | None = None
        self.admin: AdminServer | None = None
        self.admin_address: tuple[str, int] | None = None
        self._lag: EventLoopLagMonitor | None = None
        self._admin_settings: AdminSettings | None = None
        if config.admin.listen is not None:
            admin_host, _, admin_port = config.admin.listen.rpartition(":")
            try:
                self._admin_settings = AdminSettings(
                    host=admin_host.strip("[]"),
                    port=int(admin_port),
                    token=config.admin.token,
                    metrics_require_token=config.admin.metrics_require_token,
                    ready_max_lag=config.admin.ready_max_lag,
                )
            except ValueError as exc:
                raise ConfigError(f"admin: {exc}") from None

    # ---- the parts, once started ----

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "server not started"
        return self._loop

    @property
    def clock(self) -> MediaClock:
        assert self._clock is not None, "server not started"
        return self._clock

    @property
    def sessions(self) -> MediaSessions:
        assert self._sessions is not None, "server not started"
        return self._sessions

    @property
    def admission(self) -> CallAdmission:
        assert self._admission is not None, "server not started"
        return self._admission

    @property
    def calls(self) -> dict[Any, ActiveCall]:
        """The calls up now, by SIP leg."""
        return self.controller.calls

    @property
    def calls_total(self) -> int:
        return self.controller.calls_total

    @property
    def dropped_rate_limited(self) -> int:
        return self.gate.dropped

    @property
    def http(self) -> HttpClient:
        return self._http

    def _time(self) -> float:
        return self.loop.time()

    def flush(self) -> None:
        """Act on everything the SIP endpoint has to say (after a verb called from outside a SIP event)."""
        self.driver.flush()

    # ---- lifecycle ----

    async def start(self) -> None:
        """Load flows, open the call record store and the admin API, bind SIP; on any failure undo what was done."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._clock = MediaClock(loop)
        self._sessions = MediaSessions(self._clock, self.ports, self.media_policy)
        calls = self.config.calls
        self._admission = CallAdmission(max_calls=calls.max_calls, max_calls_per_second=calls.max_calls_per_second,
                                        shed_lag=calls.shed_lag, now=loop.time,
                                        lag=lambda: self.event_loop_lag())  # fmt: skip
        if self.config.routes:
            log.info("loading flows", routes=len(self.config.routes))
            self.routes = await loop.run_in_executor(None, self._load_routes)
            if self.config.flows.watch:
                watcher = FlowWatcher(lambda: self.routes, self.reload, self.config.flows.watch_interval)
                self._spawn(watcher.run())
        if self.config.speech.enabled:
            await loop.run_in_executor(None, self.speech.load)
        self._clock.start()
        clock = self._clock
        self.metrics.watch_media_clock(lambda: clock.stats)
        self._lag = self.metrics.lag_monitor(0.5)
        self._lag.start()
        instance = self.config.cdr.instance or f"{socket.gethostname()}:{self.config.sip.port}"
        self.cdr = await CdrStore.open(self.config.cdr_url, instance=instance)
        self.records.cdr = self.cdr
        interrupted = await self.cdr.close_interrupted()
        if interrupted:
            log.warning("closed call records left open by a previous run", interrupted=interrupted)
        self.metrics.watch_cdr_store(self.cdr)
        endpoint, gate = self.endpoint, self.gate
        self.metrics.watch_sip_refusals(
            lambda: {
                "untrusted": endpoint.untrusted_messages,
                "rate_limited": gate.dropped,
                "auth": endpoint.auth_refused,
            }
        )
        driver = self.driver
        self.metrics.watch_tcp(lambda: driver.tcp_closed_counts(), lambda: driver.tcp_connections)
        if self._admin_settings is not None:
            self.admin = AdminServer(self, self._admin_settings, self.metrics)
            self.admin_address = await self.admin.start()
        host, port = self.config.sip.host, self.config.sip.port
        if "udp" in self.config.sip.transports:
            await self.driver.bind_udp(host, port, large_buffers=True)
        if "tcp" in self.config.sip.transports:
            await self.driver.listen_tcp(host, port)
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
        self.driver.flush()
        self._spawn(self._finish_stop())

    async def _finish_stop(self) -> None:
        deadline = self.loop.time() + 4 * self.config.sip.t1 * 8
        # The endpoint is sans-I/O and has no event to wait on; a short poll during shutdown costs nothing.
        while (self.endpoint.busy or self.calls) and self.loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self._stopped.set()

    async def close(self) -> None:
        if self.registration is not None and self._loop is not None:
            await self.registration.stop(timeout=min(32 * self.config.sip.t1, 5.0))
        self.controller.close()
        await self.driver.close()
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
        if self._loop is not None:
            await self._loop.run_in_executor(None, self.speech.close)
            await self._loop.run_in_executor(None, self._recorder.writer.close, 5.0)
        log.info("stopped", calls_total=self.calls_total)

    # ---- the SIP endpoint's events that are not a call leg's ----

    def _on_sip_event(self, out: Output) -> None:
        if self.controller.on_event(out):
            return
        if isinstance(out, TransferProgress):
            self.handoff.on_transfer_progress(out)
        elif isinstance(out, ReferReceived):  # only a transferee endpoint raises it; the daemon is none
            self.endpoint.reject_refer(out.leg, out.request, 403, "transfers are not accepted from callers")
        elif isinstance(out, AuthRefused):
            self.metrics.invite_response(out.status)
            if out.status != 401 and out.status != 407:
                self.metrics.call_rejected("auth")
            log.info("invite refused by digest authentication", status=out.status, why=out.detail,
                     peer=f"{out.peer.host}:{out.peer.port}", call_id=out.request.call_id)  # fmt: skip
        elif isinstance(out, Registered | RegistrationFailed | Unregistered) and self.registration is not None:
            self.registration.on_event(out)

    # ---- placing calls ----

    def place_call(
        self,
        target: str,
        *,
        flow: FlowRoute | None = None,
        caller_id: str = "ivr",
        variables: dict[str, Any] | None = None,
        peer: Peer | None = None,
        answer_timeout: float = 30.0,
    ) -> PlacedCall:
        """Call ``target`` (a SIP URI) and, when answered, run ``flow`` (a route of this server's table, or the
        app); see :meth:`~ivr.daemon.calls.CallController.place_call`."""
        return self.controller.place_call(target, route=flow, caller_id=caller_id, variables=variables, peer=peer,
                                          answer_timeout=answer_timeout)  # fmt: skip

    # ---- the admin API's backend ----

    def active_calls(self) -> list[dict[str, object]]:
        return self.controller.describe()

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
        log.info("reloaded", flows=routes.describe())
        return ReloadResult(ok=True, flows=self.flows(), errors=[])

    def request_reload(self) -> None:
        """SIGHUP."""
        self._spawn(self._reload_quietly())

    async def _reload_quietly(self) -> None:
        await self.reload()

    def _load_routes(self) -> RouteTable:
        """Blocking (run in an executor): load each routed flow tree, build its engine, prepare all its audio."""

        def build(tree: FlowTree) -> FlowEngine[Prompt, Call]:
            engine = FlowEngine(tree, player=self.library, handoff=self.handoff, recorder=self._recorder,
                                http=self._http, now=self._now)  # fmt: skip
            self.library.prepare(engine.audio_parts())
            return engine

        return load_routes(self.config.routes, resolve=self.config.resolve, known_queues=self.queues.names,
                           build_engine=build)  # fmt: skip

    def drain(self) -> None:
        """Stop taking new calls (503 to INVITE and OPTIONS); calls in progress carry on."""
        if self.endpoint.accepting:
            log.info("draining", active_calls=len(self.calls))
        self.endpoint.accepting = False

    @property
    def draining(self) -> bool:
        return not self.endpoint.accepting

    def flows(self) -> list[dict[str, object]]:
        return self.routes.describe()

    def event_loop_lag(self) -> float:
        return self._lag.lag if self._lag is not None else 0.0

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _endpoint_config(config: IvrConfig, host: str) -> EndpointConfig:
    digest = config.security.digest
    verifier: DigestVerifier | None = None
    if digest is not None:
        verifier = DigestVerifier(
            realm=digest.realm,
            secret=digest.secret.encode() if digest.secret else secrets.token_bytes(32),
            credentials=static_credentials({user: _credential(v) for user, v in digest.users.items()}),
            algorithms=digest.algorithms,
        )
    return EndpointConfig(
        host=host,
        port=config.sip.port,
        user_agent=config.sip.user_agent,
        timers=TimerValues(t1=config.sip.t1, t2=config.sip.t2, t4=config.sip.t4),
        trusted=config.security.networks,
        untrusted_action=config.security.untrusted,
        auth=verifier,
        auth_trusted_skip=digest.trusted_skip if digest is not None else True,
        session_expires=config.sip.session_expires,
        min_se=config.sip.min_se,
    )


def _credential(value: str) -> Credential:
    """A configured user's secret: a password, or ``sha256:HA1`` / ``md5:HA1``."""
    kind, sep, digest = value.partition(":")
    if sep and kind == "sha256":
        return Credential(ha1={"SHA-256": digest})
    if sep and kind == "md5":
        return Credential(ha1={"MD5": digest})
    return Credential(password=value)
