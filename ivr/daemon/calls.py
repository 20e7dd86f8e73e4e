"""The call controller: the daemon's call legs both ways, from the first INVITE to the last record.

Answering (a caller's INVITE, :class:`~ivr.sip.endpoint.IncomingCall`): a route for the dialled number, admission
(:mod:`ivr.daemon.admission`), a media session answering the caller's offer (or our offer in the 200 when the INVITE
had none: RFC 3261 13.2.1 late offer, media starting when the ACK brings the answer), then, once the ACK arrives,
the call's application: its flow, or the welcome prompt when no flows are routed.

Placing (:meth:`CallController.place_call`): an INVITE with our offer to a number through a route the caller of
this method chose; ringing and early media (183 with SDP) are followed, the leg is CANCELled when nobody answers in
time, and on 2xx the same :class:`~ivr.call.Call` and the same flow engine run as for a caller who phoned in, with
the variables the caller of this method gave. The outcome (answered, busy, no answer, rejected, failed, with the
SIP status and the ringing time) is the value of the returned :class:`PlacedCall`'s future.

In the call: re-INVITE (hold, a new address; the codec cannot change), keys from every source and words reach the
:class:`~ivr.call.Call` through its one entry, and the call's end (either side's BYE, a CANCEL, ``max_call_seconds``,
shutdown) tears down the media, settles a handoff in progress and closes the call record.

The controller is given what it uses (the SIP endpoint and its driver's ``flush``, media sessions, routes,
admission, speech, call records, the queue handoff's leg hooks); it never sees the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from ivr.call import Call
from ivr.config import IvrConfig
from ivr.daemon.admission import CallAdmission
from ivr.daemon.media_session import MediaSession, MediaSessions
from ivr.daemon.routes import FlowRoute, RouteTable
from ivr.flows.runtime import TraceEvent, TraceSink
from ivr.media.ports import PortPoolExhausted
from ivr.media.recorder import Recording
from ivr.media.stream import MediaStream
from ivr.ops.call_records import CallRecords, current_node
from ivr.sip.endpoint import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallProgress,
    DigitInfo,
    IncomingCall,
    Leg,
    LegState,
    Peer,
    ReInvite,
    SipEndpoint,
)
from ivr.sip.errors import SipError
from ivr.sip.sdp import SdpError
from ivr.sip.uri import SipURI
from ivr.speech.calls import SpeechService

__all__ = ["ActiveCall", "CallController", "DialOutcome", "PlacedCall", "QueueLegHooks", "dial_result", "user_of"]

log = structlog.get_logger("ivr.calls")

Direction = Literal["inbound", "outbound"]
DialResult = Literal["answered", "busy", "no_answer", "rejected", "failed"]
BUSY_STATUSES = frozenset((486, 600))
NO_ANSWER_STATUSES = frozenset((408, 480, 487))
"""408 from a proxy, 480 Temporarily Unavailable, 487 after our CANCEL."""
REJECTED_STATUSES = frozenset((403, 603, 607, 608))
"""Forbidden, Decline, Unwanted, Rejected: the called side said no."""


def dial_result(status: int | None) -> DialResult:
    """How a placed call that was not answered ended, by its final status (None: no response at all, timer B)."""
    if status in BUSY_STATUSES:
        return "busy"
    if status in NO_ANSWER_STATUSES:
        return "no_answer"
    if status in REJECTED_STATUSES:
        return "rejected"
    return "failed"


@dataclass(eq=False, slots=True)
class ActiveCall:
    """A call leg with a :class:`~ivr.call.Call` running on it (answered both ways)."""

    leg: Leg
    media: MediaSession
    call: Call
    started: float
    direction: Direction = "inbound"
    task: asyncio.Task[None] | None = None
    route: FlowRoute | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    trace: list[TraceEvent] = field(default_factory=list)
    recording: Recording | None = None
    recordings: int = 0
    answered: float | None = None
    limit: asyncio.TimerHandle | None = None
    handoff: dict[str, Any] | None = None  # the queue handoff's outcome, for the call record
    hangup_after_flow: bool = False  # a REFER succeeded: our leg ends with BYE once the flow has finished
    rtp_seen: tuple[int, float] = (0, 0.0)  # packets received from the caller, and when that count last changed
    ending: str | None = None  # why the daemon itself ended the call (rtp_timeout), for the record

    @property
    def stream(self) -> MediaStream:
        stream = self.media.stream
        assert stream is not None, "an active call has a running stream"
        return stream

    @property
    def port(self) -> int:
        return self.media.port


@dataclass(frozen=True, slots=True)
class DialOutcome:
    """How a placed call turned out. ``status`` is the final SIP status (200 when answered; None when no response
    came at all); ``ringing_seconds`` from the first 180/183 to the answer or the end (0 when it never rang)."""

    result: DialResult
    status: int | None
    reason: str
    call_id: str
    ringing_seconds: float = 0.0
    early_media: bool = False


@dataclass(eq=False, slots=True)
class PlacedCall:
    """A call the daemon is placing: ``outcome`` completes on answer or on failure (the flow then runs on its own;
    ``active`` is the running call once answered)."""

    leg: Leg
    media: MediaSession
    route: FlowRoute | None
    variables: dict[str, Any]
    number: str
    outcome: asyncio.Future[DialOutcome]
    started: float
    ringing_at: float | None = None
    early_media: bool = False
    timeout: asyncio.TimerHandle | None = None
    active: ActiveCall | None = None


class QueueLegHooks(Protocol):
    """What the controller asks of the queue handoff: its own legs' events, a caller's key during a bridge, and
    the caller's leg going away."""

    def owns(self, leg: Leg) -> bool: ...

    def on_queue_leg_event(self, event: CallProgress | CallAnswered | CallEnded) -> bool: ...

    def on_digit_info(self, event: DigitInfo) -> bool: ...

    def on_queue_reinvite(self, event: ReInvite) -> None: ...

    def caller_gone(self, active: ActiveCall) -> None: ...


CallApp = Callable[[Call], Awaitable[None]]


class CallController:
    def __init__(
        self,
        config: IvrConfig,
        *,
        endpoint: SipEndpoint,
        flush: Callable[[], None],
        sessions: Callable[[], MediaSessions],
        routes: Callable[[], RouteTable],
        admission: Callable[[], CallAdmission],
        records: CallRecords,
        speech: SpeechService,
        app: CallApp,
        trace_sink: TraceSink | None = None,
    ) -> None:
        self.config = config
        self.endpoint = endpoint
        self.flush = flush
        self._sessions = sessions
        self._routes = routes
        self._admission = admission
        self.records = records
        self.speech = speech
        self.app = app
        self._trace_sink = trace_sink
        self.queue_legs: QueueLegHooks | None = None
        self.calls: dict[Leg, ActiveCall] = {}
        self._by_call: dict[Call, ActiveCall] = {}
        self._answering: dict[Leg, tuple[MediaSession, FlowRoute | None]] = {}
        """Calls answered with our offer (late offer): media starts when the ACK brings the answer."""
        self._placing: dict[Leg, PlacedCall] = {}
        self.calls_total = 0
        self._liveness: asyncio.TimerHandle | None = None
        self.rtp_timeouts = 0
        """Calls ended because the caller's RTP stopped (media.rtp_timeout / rtp_hold_timeout)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._sessions().clock.loop

    def pending(self) -> int:
        """Calls that hold a port but run no Call yet (answered with our offer, or being placed)."""
        return len(self._answering) + len(self._placing)

    # ---- the endpoint's call events ----

    def on_event(self, out: object) -> bool:
        """A call event from the SIP endpoint; False when it is not about a call leg this controller handles.

        This is the one place a failure of one call is caught: whatever raises while a call is set up, runs or is
        torn down is logged once with its Call-ID, and the call is ended and everything it held released
        (:meth:`_abort`), so no other call and no later caller pays for it."""
        try:
            return self._dispatch(out)
        except Exception as exc:
            leg = getattr(out, "leg", None)
            if not isinstance(leg, Leg):
                raise
            log.exception("call failed; ending it", call_id=leg.call_id, sip_event=type(out).__name__)
            self._abort(leg, f"{type(exc).__name__}: {exc}"[:120])
            return True

    def _abort(self, leg: Leg, detail: str) -> None:
        """End ``leg`` after a failure and release what it held: its port, its call, its record, its counters."""
        answering = self._answering.pop(leg, None)
        if answering is not None:
            answering[0].close()
            self.records.ended(record_key(leg), "failed", 500, None, extra={"error": detail})
        placed = self._placing.pop(leg, None)
        if placed is not None:
            self._settle(placed, "failed", 500, detail)
            placed.media.close()
        active = self.calls.get(leg)
        if active is not None:
            try:
                self.teardown(active, "failed", status=500)
            except Exception:  # the teardown itself failed: still forget the call and free its port
                log.exception("call teardown failed", call_id=leg.call_id)
                self.calls.pop(leg, None)
                self._by_call.pop(active.call, None)
                active.media.close()
        try:
            if leg.state is LegState.INCOMING and not leg.outgoing:
                self.endpoint.reject(leg, 500, f"internal error: {detail}")
                if answering is None and active is None:
                    invite = leg.invite
                    self.records.refused(leg.call_id, user_of(invite.from_.uri), user_of(invite.parsed_uri),
                                         status=500, reason=detail, why="error", key=record_key(leg))  # fmt: skip
            elif leg.state is not LegState.ENDED:
                self.endpoint.hangup(leg)
        except SipError as exc:
            log.warning("could not end the failed call", call_id=leg.call_id, error=exc.reason)
        self.flush()

    def _dispatch(self, out: object) -> bool:
        if isinstance(out, IncomingCall):
            self._on_incoming(out.leg)
        elif isinstance(out, CallConfirmed):
            self._on_confirmed(out.leg, out.body)
        elif isinstance(out, ReInvite):
            self._on_reinvite(out.leg, out)
        elif isinstance(out, CallProgress | CallAnswered | CallEnded):
            if out.leg in self._placing:
                self._on_placed_event(out)
            elif (self.queue_legs is None or not self.queue_legs.on_queue_leg_event(out)) and isinstance(
                out, CallEnded
            ):
                self._on_ended(out)
        elif isinstance(out, DigitInfo):
            if self.queue_legs is None or not self.queue_legs.on_digit_info(out):  # a bridged key crosses over
                active = self.calls.get(out.leg)
                if active is not None:
                    active.call.key(out.key, "info")
        else:
            return False
        return True

    # ---- answering ----

    def _refuse(self, leg: Leg, status: int, reason: str, *, why: str, retry_after: int | None = None) -> None:
        """Answer an INVITE with a final error, and leave a call record of it (every call leaves one)."""
        self.endpoint.reject(leg, status, reason, retry_after=retry_after)
        invite = leg.invite
        self.records.refused(leg.call_id, user_of(invite.from_.uri), user_of(invite.parsed_uri), status=status,
                             reason=reason, why=why, key=record_key(leg))  # fmt: skip

    def _on_incoming(self, leg: Leg) -> None:
        clog = log.bind(call_id=leg.call_id)
        route: FlowRoute | None = None
        routes = self._routes()
        if routes:
            dialled = user_of(leg.invite.parsed_uri) or user_of(leg.invite.to.uri)
            route = routes.match(dialled)
            if route is None:
                clog.info("call refused: no route for the dialled number", dialled=dialled)
                self._refuse(leg, 404, f"no flow serves the number {dialled!r}", why="no_route")
                return
        refusal = self._admission().check(len(self.calls) + self.pending())
        if refusal is not None:
            clog.warning(f"call refused: {refusal.reason}", why=refusal.why)
            self._refuse(leg, 503, refusal.reason, why=refusal.why, retry_after=refusal.retry_after)
            return
        try:
            session = self._sessions().open()
        except PortPoolExhausted:
            clog.warning("call refused: no free RTP port")
            self._refuse(leg, 503, "no free RTP port", why="rtp_ports", retry_after=5)
            return
        if not leg.offer:
            # RFC 3261 13.2.1 late offer: our offer goes in the 200, the caller's answer comes in the ACK.
            self._answering[leg] = (session, route)
            self.endpoint.answer(leg, session.offer())
            self._record_answered(leg)
            clog.info("call answered with an offer (late offer)", rtp_port=session.port)
            return
        try:
            answer = session.answer(leg.offer)
        except SdpError as exc:
            session.close()
            self._refuse(leg, exc.status, f"SDP: {exc.reason}", why="sdp")
            return
        except Exception:
            session.close()  # held by nothing yet: nobody else would free the port
            raise
        try:
            self._start_call(leg, session, route, "inbound")
        except Exception:
            session.close()
            raise
        self.endpoint.answer(leg, answer)
        self._record_answered(leg)

    def _record_answered(self, leg: Leg) -> None:
        invite = leg.invite
        self.records.answered(leg.call_id, user_of(invite.from_.uri), user_of(invite.parsed_uri), key=record_key(leg))

    def _start_call(
        self,
        leg: Leg,
        session: MediaSession,
        route: FlowRoute | None,
        direction: Direction,
        *,
        caller: str | None = None,
        dialled: str | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> ActiveCall:
        stream = session.stream
        media = session.media
        assert stream is not None and media is not None
        loop = self.loop
        call = Call(
            call_id=leg.call_id,
            caller=caller if caller is not None else user_of(leg.invite.from_.uri),
            dialled=dialled if dialled is not None else user_of(leg.invite.parsed_uri),
            codec=media.codec.name,
            media=stream,
            control=self,
            speech=self.speech.for_call(loop, stream) if self.speech.engine is not None else None,
        )
        stream.on_digit_event = lambda event: call.key(event.key, event.source)
        active = ActiveCall(leg, session, call, started=time.time(), direction=direction, route=route,
                            variables=dict(variables or {}))  # fmt: skip
        self.calls[leg] = active
        self._by_call[call] = active
        self.calls_total += 1
        active.answered = time.time()
        active.limit = loop.call_later(self.config.calls.max_call_seconds, self._call_too_long, leg)
        active.rtp_seen = (0, loop.time())
        self._watch_liveness()
        log.info(
            "call answered",
            call_id=leg.call_id,
            direction=direction,
            caller=call.caller,
            dialled=call.dialled,
            codec=media.codec.name,
            remote_rtp=f"{media.remote_address}:{media.remote_port}",
            rtp_port=session.port,
        )
        return active

    def _on_confirmed(self, leg: Leg, body: bytes) -> None:
        answering = self._answering.pop(leg, None)
        if answering is not None:
            session, route = answering
            try:
                if not body:
                    raise SdpError(488, "the ACK carried no SDP answer to our offer")
                session.accept_answer(body)
                self._start_call(leg, session, route, "inbound")
            except SdpError as exc:
                log.warning("late-offer answer unusable; hanging up", call_id=leg.call_id, error=exc.reason)
                session.close()
                # The 200 opened the call's record (and counted it active): no Call will close it, so close it here.
                self.records.ended(record_key(leg), "failed", exc.status, None, extra={"error": f"SDP: {exc.reason}"})
                self.endpoint.hangup(leg)
                return
            except Exception:
                self._answering[leg] = (session, route)  # so that containment closes its record and port
                raise
        active = self.calls.get(leg)
        if active is None or active.task is not None:
            return
        self._run(active)

    def _run(self, active: ActiveCall) -> None:
        active.task = self.loop.create_task(self._run_app(active))

    async def _run_app(self, active: ActiveCall) -> None:
        try:
            if active.route is not None:
                await self._run_flow(active, active.route)
            else:
                await self.app(active.call)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call application failed; hanging up", call_id=active.leg.call_id)
            self.hangup_call(active.call)

    async def _run_flow(self, active: ActiveCall, route: FlowRoute) -> None:
        call = active.call
        self.records.routed(record_key(active.leg), client=route.client, flow=route.flow_name, version=route.version)
        sink = self._trace_sink
        keep = active.trace.append
        count = self.records.metrics.observe_trace

        def trace(event: TraceEvent) -> None:
            keep(event)
            count(event)
            if sink is not None:
                sink(event)

        outcome = await route.engine.run(call, client=route.client, trace=trace, variables=active.variables or None)
        log.info("flow finished", call_id=call.call_id, client=route.client, flow=route.flow_name,
                 outcome=outcome.kind, node=outcome.node, reason=outcome.reason)  # fmt: skip
        if outcome.kind == "queued":
            if active.hangup_after_flow and not call.ended:
                await call.hangup()  # REFER succeeded: the caller is with the queue now; our leg ends (RFC 5589)
            return  # bridged: the bridge runs until either side hangs up
        if not call.ended:
            await call.hangup()

    def _on_reinvite(self, leg: Leg, event: ReInvite) -> None:
        active = self.calls.get(leg)
        if active is None and self.queue_legs is not None and self.queue_legs.owns(leg):
            self.queue_legs.on_queue_reinvite(event)  # a queue leg's refresh, hold or new address
            return
        if active is None:
            self.endpoint.respond(leg, 481, request=event.request)
            self.flush()
            return
        if not event.request.body and leg.local_sdp and event.request.method == "INVITE":
            # A re-INVITE without an offer (often an RFC 4028 session refresh): our 2xx offers the session as it is
            # (RFC 3264 8: the same description, version unchanged) and the ACK's answer changes nothing.
            log.info("re-INVITE without SDP: offering the session unchanged", call_id=leg.call_id)
            self.endpoint.respond(leg, 200, request=event.request, body=leg.local_sdp, content_type="application/sdp")
            return
        try:
            answer, media = active.media.update(event.request.body)
        except SdpError as exc:
            self.endpoint.respond(
                leg, exc.status, request=event.request, extra=[("Warning", f'399 ivr "SDP: {exc.reason}"')]
            )
            return
        log.info("re-INVITE", call_id=leg.call_id, hold=media.on_hold)
        self.endpoint.respond(leg, 200, request=event.request, body=answer, content_type="application/sdp")

    # ---- placing ----

    def place_call(
        self,
        target: str,
        *,
        route: FlowRoute | None,
        caller_id: str,
        variables: Mapping[str, Any] | None = None,
        peer: Peer | None = None,
        answer_timeout: float = 30.0,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> PlacedCall:
        """Call ``target`` (a SIP URI; ``peer``: where to send the INVITE, default the URI's host and port) from
        ``caller_id``; on answer run ``route``'s flow (or the app) with ``variables`` plus ``direction``,
        ``dialled_number`` and ``caller_id``. Raises ``PortPoolExhausted`` when no RTP port is free and
        ``ValueError`` for a target that is not a SIP URI."""
        uri = SipURI.parse(target)
        if peer is None:
            host, port = uri.host_port(5061 if uri.scheme == "sips" else 5060)
            peer = Peer(host, port, uri.transport)
        number = uri.user or ""
        session = self._sessions().open()
        config = self.endpoint.config
        try:
            leg = self.endpoint.call(
                request_uri=target,
                from_uri=f"sip:{caller_id}@{config.host}:{config.port}",
                to_uri=target,
                peer=peer,
                sdp=session.offer(),
                extra=tuple(extra_headers),
            )
        except (SipError, ValueError):
            session.close()
            raise
        loop = self.loop
        placed = PlacedCall(
            leg, session, route,
            {**dict(variables or {}), "direction": "outbound", "dialled_number": number, "caller_id": caller_id},
            number, loop.create_future(), started=loop.time(),
        )  # fmt: skip
        placed.timeout = loop.call_later(answer_timeout, self._no_answer, placed)
        self._placing[leg] = placed
        log.info("placing a call", call_id=leg.call_id, target=target, caller_id=caller_id,
                 flow=route.flow_name if route is not None else None)  # fmt: skip
        self.flush()
        return placed

    def _no_answer(self, placed: PlacedCall) -> None:
        """Nobody answered in time: CANCEL (the endpoint sends it once a 1xx came; the leg ends with 487)."""
        log.info("placed call not answered in time; cancelling", call_id=placed.leg.call_id)
        self._settle(placed, "no_answer", 408, "no answer")
        self.endpoint.hangup(placed.leg)
        self.flush()

    def _settle(self, placed: PlacedCall, result: DialResult, status: int | None, reason: str) -> None:
        if placed.outcome.done():
            return
        now = self.loop.time()
        ringing = now - placed.ringing_at if placed.ringing_at is not None else 0.0
        placed.outcome.set_result(DialOutcome(result, status, reason, placed.leg.call_id, round(ringing, 3),
                                              placed.early_media))  # fmt: skip
        if placed.timeout is not None:
            placed.timeout.cancel()

    def _on_placed_event(self, event: CallProgress | CallAnswered | CallEnded) -> None:
        placed = self._placing[event.leg]
        if isinstance(event, CallProgress):
            if placed.ringing_at is None:
                placed.ringing_at = self.loop.time()
            if event.response.body and not placed.outcome.done():
                try:
                    placed.media.accept_answer(event.response.body)
                    placed.early_media = True
                except SdpError:
                    pass  # an unusable 183 is only no early media
            return
        del self._placing[event.leg]
        if isinstance(event, CallAnswered):
            if placed.outcome.done():  # answered after we gave up: the endpoint already sends BYE
                placed.media.close()
                return
            try:
                placed.media.accept_answer(event.response.body)
            except SdpError as exc:
                log.warning("placed call answered with unusable SDP; hanging up", call_id=event.leg.call_id,
                            error=exc.reason)  # fmt: skip
                placed.media.close()
                self._settle(placed, "failed", 488, f"unusable SDP answer: {exc.reason}")
                self.endpoint.hangup(event.leg)
                self.flush()
                return
            active = self._start_call(event.leg, placed.media, placed.route, "outbound", caller=placed.number,
                                      dialled=placed.number, variables=placed.variables)  # fmt: skip
            placed.active = active
            self.records.answered(event.leg.call_id, placed.variables["caller_id"], placed.number,
                                  extra={"direction": "outbound"}, key=record_key(event.leg))  # fmt: skip
            self._settle(placed, "answered", event.response.status, event.response.reason)
            self._run(active)
            return
        placed.media.close()
        status = event.status
        self._settle(placed, dial_result(status), status, f"{event.reason}" + (f" {status}" if status else ""))
        log.info("placed call not answered", call_id=event.leg.call_id, status=status, reason=str(event.reason))

    # ---- in the call ----

    def _watch_liveness(self) -> None:
        """One timer for every call: each ``interval`` the calls whose caller sent no RTP for longer than the
        timeout (the hold timeout while the caller holds the call) get a BYE. Nothing runs while no timeout is set
        or no call is up."""
        media = self.config.media
        timeouts = [t for t in (media.rtp_timeout, media.rtp_hold_timeout) if t > 0]
        if not timeouts or self._liveness is not None or not self.calls:
            return
        interval = max(0.5, min(timeouts) / 4)
        self._liveness = self.loop.call_later(interval, self._check_liveness)

    def _check_liveness(self) -> None:
        self._liveness = None
        now = self.loop.time()
        media = self.config.media
        silent: list[ActiveCall] = []
        for active in self.calls.values():
            stream = active.media.stream
            if stream is None or active.ending is not None:
                continue
            received = stream.stats.packets_received
            count, since = active.rtp_seen
            if received != count:
                active.rtp_seen = (received, now)
                continue
            held = active.media.media is not None and active.media.media.on_hold
            limit = media.rtp_hold_timeout if held else media.rtp_timeout
            if limit > 0 and now - since >= limit:
                silent.append(active)
        for active in silent:
            active.ending = "rtp_timeout"
            self.rtp_timeouts += 1
            log.info("no RTP from the caller; hanging up", call_id=active.leg.call_id,
                     seconds=round(now - active.rtp_seen[1], 1))  # fmt: skip
            self.endpoint.hangup(active.leg)
        if silent:
            self.flush()
        self._watch_liveness()

    def _call_too_long(self, leg: Leg) -> None:
        log.info("call reached max_call_seconds", call_id=leg.call_id)
        self.endpoint.hangup(leg)
        self.flush()

    def hangup_call(self, call: Call) -> None:
        """CallControl for :class:`~ivr.call.Call`: BYE on the call's leg."""
        active = self._by_call.get(call)
        if active is not None:
            self.endpoint.hangup(active.leg)
            self.flush()

    def active_for(self, call: Call) -> ActiveCall | None:
        return self._by_call.get(call)

    def active_on(self, leg: Leg) -> ActiveCall | None:
        return self.calls.get(leg)

    def handoff_done(self, active: ActiveCall, record: dict[str, Any]) -> None:
        """The handoff's outcome: kept for the call record and traced like the flow's own events."""
        active.handoff = record
        log.info("handoff", call_id=active.leg.call_id, **{k: v for k, v in record.items() if k != "uri"})
        event = TraceEvent(self.loop.time(), "input", None, {"result": "handoff", "value": record.get("result"),
                           **record}, call_id=active.leg.call_id)  # fmt: skip
        active.trace.append(event)
        self.records.metrics.observe_trace(event)
        if self._trace_sink is not None:
            self._trace_sink(event)

    def end_bridged_call(self, active: ActiveCall, reason: str) -> None:
        """The queue's side of a bridged call hung up: end the caller's leg with BYE."""
        log.info("bridged call ended by the queue", call_id=active.leg.call_id, reason=reason)
        self.endpoint.hangup(active.leg)
        self.flush()

    def hang_up_all(self) -> None:
        for leg in list(self.calls):
            self.endpoint.hangup(leg)
        self.flush()

    # ---- the end ----

    def _on_ended(self, event: CallEnded) -> None:
        answering = self._answering.pop(event.leg, None)
        if answering is not None:
            answering[0].close()
            self.records.ended(record_key(event.leg), event.reason.value, event.status, None)
        active = self.calls.get(event.leg)
        if active is None:
            return
        self.teardown(active, event.reason.value, status=event.status)

    def teardown(self, active: ActiveCall, reason: str, *, status: int | None = None) -> None:
        if active.ending is not None and reason == "local_bye":
            reason = active.ending  # the daemon hung up for a reason of its own: the record says which
        self.calls.pop(active.leg, None)
        self._by_call.pop(active.call, None)
        if active.limit is not None:
            active.limit.cancel()
        if active.recording is not None and not active.recording.stopped:
            active.recording.stop("closed")
        active.call._end(reason)
        if self.queue_legs is not None:
            self.queue_legs.caller_gone(active)
        stream = active.stream
        stats = stream.stats
        media_record = stream.call_record()
        active.media.close()
        route = active.route
        self.records.ended(
            record_key(active.leg), reason, status, media_record, prompts=active.call.prompts_played,
            trace=active.trace, client=route.client if route else None, flow=route.flow_name if route else None,
            version=route.version if route else None, handoff=active.handoff,
            extra=_record_extra(active),
        )  # fmt: skip
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

    def close(self) -> None:
        """Shutdown: every call and every call being placed or answered ends here, records closed."""
        if self._liveness is not None:
            self._liveness.cancel()
            self._liveness = None
        for placed in list(self._placing.values()):
            self._settle(placed, "failed", None, "shutdown")
            placed.media.close()
        self._placing.clear()
        for session, _route in self._answering.values():
            session.close()
        self._answering.clear()
        for active in list(self.calls.values()):
            self.teardown(active, "shutdown")

    # ---- the admin API ----

    def describe(self) -> list[dict[str, object]]:
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
                "node": current_node(a.trace),
                "prompts": list(a.call.prompts_played),
            }
            for a in self.calls.values()
        ]


def record_key(leg: Leg) -> str:
    """The key a leg's call record is open under: its Call-ID and the leg's own number, since two legs may share a
    Call-ID (two dialogs with different From tags) and each leaves its own record."""
    return f"{leg.call_id}#{leg.id}"


def _record_extra(active: ActiveCall) -> dict[str, object] | None:
    """What a call's record says beyond the usual: an outbound call's direction, keys the flow never read."""
    extra: dict[str, object] = {}
    if active.direction == "outbound":
        extra["direction"] = "outbound"
    if active.call.inputs_dropped:
        extra["inputs_dropped"] = active.call.inputs_dropped
    return extra or None


def user_of(uri: object) -> str:
    if isinstance(uri, SipURI):
        return uri.user or ""
    text = str(uri)
    return text.partition(":")[2].partition(";")[0]
