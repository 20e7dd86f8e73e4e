"""The daemon's ``Handoff``: REFER, bridge, or REFER then bridge, to a configured queue endpoint.

It runs inside the flow's task (``FlowEngine`` awaits :meth:`QueueHandoff.transfer`) and talks to the SIP endpoint
through its :class:`HandoffHost` (the call controller), which routes the endpoint's events for the legs and
transfers it started back here (:meth:`on_transfer_progress`, :meth:`on_queue_leg_event`). Queue legs get their
media from the same :class:`~ivr.daemon.media_session.MediaSessions` as the callers' legs.

- **REFER** (RFC 3515): Refer-To carries the attached data as URI headers, Referred-By names us (RFC 3892). A 2xx
  sipfrag is success: the flow ends as ``queued`` and the controller sends BYE on the caller's leg. A refused REFER
  (403/405/501/603 ...), a failed target (486, 404 ... in the sipfrag) or no final NOTIFY in ``refer_timeout`` is
  a failure, or, with ``refer-then-bridge``, the cue to bridge.
- **Bridge** (B2BUA): an INVITE to the queue with the data as headers; the caller hears ringback (or the queue's
  ``wait_prompt``, or the queue's early media once a 183 brings SDP); on 2xx the two legs' audio is relayed
  through :class:`~ivr.media.bridge.MediaBridge`. BYE from either side ends both; the caller hanging up while it
  rings CANCELs the INVITE; busy, unreachable or ``answer_timeout`` is a failure with the reason. Key presses cross
  the bridge both ways (the ACD's own menu, a payment line): RFC 4733 on a leg that negotiated telephone-event,
  SIP INFO on one that did not; a key that came by SIP INFO is handed in by the controller (:meth:`on_digit_info`).

Every attempt leaves a ``handoff`` record (queue, method, result, status, reason, seconds to answer) in the call's
trace and its CDR.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from ivr.call import Call
from ivr.daemon.calls import ActiveCall
from ivr.daemon.media_session import MediaSession, MediaSessions
from ivr.flows.runtime import HandoffResult, HttpClient, HttpError
from ivr.handoff.config import QueueEndpoint, QueueTable
from ivr.handoff.data import MAX_FROM_USER, AttachedData, attach, escape_user, refer_to
from ivr.media.bridge import InfoSender, MediaBridge
from ivr.media.digits import DigitEvent
from ivr.media.ports import PortPoolExhausted
from ivr.media.prompts import Prompt, PromptError, load_prompt
from ivr.sip.endpoint import (
    CallAnswered,
    CallEnded,
    CallProgress,
    DigitInfo,
    Leg,
    Peer,
    ReInvite,
    SipEndpoint,
    TransferProgress,
)
from ivr.sip.errors import SipError
from ivr.sip.sdp import SdpError

__all__ = ["BridgedCall", "HandoffHost", "QueueHandoff", "from_user", "ringback_tone"]

log = structlog.get_logger("ivr.handoff")


class HandoffHost(Protocol):
    """What the handoff needs of the call controller: the SIP endpoint (and the flush after using it), the
    caller's call for a :class:`~ivr.call.Call` or a leg, and where a handoff's outcome and a queue's hang-up go."""

    @property
    def endpoint(self) -> SipEndpoint: ...

    def flush(self) -> None: ...

    def active_for(self, call: Call) -> ActiveCall | None: ...

    def active_on(self, leg: Leg) -> ActiveCall | None: ...

    def handoff_done(self, active: ActiveCall, record: dict[str, Any]) -> None: ...

    def end_bridged_call(self, active: ActiveCall, reason: str) -> None: ...


def from_user(queue: QueueEndpoint, caller: str) -> str:
    """The user part of the From we send ``queue``: its ``from_user``, else the caller's number as the caller's From
    had it, else ``ivr``. Whatever the caller sent, it goes out %-escaped as an RFC 3261 ``user`` and at most
    :data:`~ivr.handoff.data.MAX_FROM_USER` characters (cut, and logged with the lengths only)."""
    text = queue.from_user or caller or "ivr"
    user, cut = escape_user(text)
    if cut:
        log.warning("handoff From user cut", queue=queue.name, length=len(text), kept=len(user), limit=MAX_FROM_USER)
    return user or "ivr"


def ringback_tone() -> Prompt:
    """ETSI / Bulgarian ringback: 425 Hz, one second on, four off."""
    t = np.arange(8000) / 8000.0
    tone = (np.sin(2 * np.pi * 425.0 * t) * 6000).astype(np.int16)
    return Prompt("ringback", np.concatenate([tone, np.zeros(4 * 8000, dtype=np.int16)]))


@dataclass(eq=False)
class BridgedCall:
    """A caller's leg bridged to a queue endpoint's leg (the call's media now goes through ``bridge``)."""

    active: ActiveCall
    queue: QueueEndpoint
    leg: Leg
    media: MediaSession
    bridge: MediaBridge | None = None
    answered: bool = False
    outcome: asyncio.Future[tuple[bool, str, int | None]] | None = None
    closed: bool = False


@dataclass(eq=False)
class _ReferWait:
    future: asyncio.Future[TransferProgress]
    accepted_at: float | None = None
    notes: list[str] = field(default_factory=list)


class QueueHandoff:
    """``Handoff`` for the daemon (see the module docstring)."""

    def __init__(
        self,
        queues: QueueTable,
        *,
        host: HandoffHost,
        sessions: Callable[[], MediaSessions],
        http: HttpClient,
    ) -> None:
        self.host = host
        self._sessions = sessions
        self.http = http
        self.queues = queues
        self._refers: dict[Leg, _ReferWait] = {}
        self._queue_legs: dict[Leg, BridgedCall] = {}
        self._bridges: dict[ActiveCall, BridgedCall] = {}
        """The queue leg each caller is bridged to (or that rings for them)."""
        self.ringback = ringback_tone()
        self._wait_prompts: dict[str, Prompt] = {}
        base = queues.source.parent if queues.source is not None else Path.cwd()
        for queue in queues:
            if queue.wait_prompt is not None:
                path = Path(queue.wait_prompt)
                try:
                    self._wait_prompts[queue.name] = load_prompt(
                        f"wait-{queue.name}", path if path.is_absolute() else base / path
                    )
                except PromptError as exc:
                    raise PromptError(f"queue {queue.name}: wait_prompt: {exc}") from None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._sessions().clock.loop

    def bridged(self, active: ActiveCall) -> BridgedCall | None:
        """The queue leg ``active`` is bridged to, or ringing for."""
        return self._bridges.get(active)

    # ---- the flow engine's door ----

    async def transfer(self, call: Call, queue: str, data: dict[str, str]) -> HandoffResult:
        endpoint = self.queues.get(queue)
        if endpoint is None:  # the flow checks make this impossible for loaded flows; a last line of defence
            return HandoffResult(False, f"queue {queue!r} is not configured")
        active = self.host.active_for(call)
        if active is None or call.ended:
            return HandoffResult(False, "the caller hung up")
        attached = attach(endpoint, data)
        started = self.loop.time()
        record: dict[str, Any] = {"queue": queue, "method": endpoint.method, "uri": endpoint.uri, "result": "pending",
                                  "started": started}  # fmt: skip
        if attached.uui_dropped:
            record["uui_dropped"] = list(attached.uui_dropped)
        if attached.headers_cut:
            record["headers_cut"] = list(attached.headers_cut)
        if attached.headers_dropped:
            record["headers_dropped"] = list(attached.headers_dropped)
        active.handoff = record  # the call record gets it even if the caller hangs up half way
        try:
            if endpoint.http is not None:
                posted, why = await self._post_context(endpoint, active, data, attached)
                record["http"] = why
                if not posted and endpoint.http.required:
                    return self._finish(active, record, False, f"ACD context not delivered: {why}", None, started)
            if call.ended:
                return self._finish(active, record, False, "the caller hung up", None, started)
            if endpoint.method in ("refer", "refer-then-bridge"):
                ok, reason, status = await self._refer(active, endpoint, attached)
                if ok:
                    record["used"] = "refer"
                    active.hangup_after_flow = True
                    return self._finish(active, record, True, reason, status, started)
                record["refer"] = {"status": status, "reason": reason}
                if endpoint.method == "refer" or call.ended:
                    record["used"] = "refer"
                    return self._finish(active, record, False, reason, status, started)
            record["used"] = "bridge"
            ok, reason, status = await self._bridge(active, endpoint, attached)
            return self._finish(active, record, ok, reason, status, started)
        except asyncio.CancelledError:
            self._finish(active, record, False, "the caller hung up", None, started)
            raise

    def _finish(
        self,
        active: ActiveCall,
        record: dict[str, Any],
        ok: bool,
        reason: str,
        status: int | None,
        started: float,
    ) -> HandoffResult:
        if record.get("result") == "pending":
            _settle(record, ok, reason, status, self.loop.time())
            self.host.handoff_done(active, record)
        return HandoffResult(ok, "" if ok else reason)

    # ---- HTTP POST of the context ----

    async def _post_context(
        self, queue: QueueEndpoint, active: ActiveCall, data: dict[str, str], attached: AttachedData
    ) -> tuple[bool, str]:
        settings = queue.http
        assert settings is not None
        call = active.call
        body = {
            "call_id": call.call_id,
            "caller": call.caller,
            "dialled": call.dialled,
            "client": active.route.client if active.route is not None else None,
            "queue": queue.name,
            "method": queue.method,
            "data": dict(data),
            "headers": dict(attached.headers),
        }
        why = "not tried"
        for attempt in range(settings.retries + 1):
            try:
                result = await self.http.request(
                    "POST", settings.url, json=body, headers=settings.headers, timeout=settings.timeout
                )
            except (HttpError, TimeoutError, OSError) as exc:
                why = f"attempt {attempt + 1}: {type(exc).__name__}: {exc}"
                continue
            if 200 <= result.status < 300:
                return True, f"HTTP {result.status}"
            why = f"attempt {attempt + 1}: HTTP {result.status}"
            if 400 <= result.status < 500 and result.status not in (408, 429):
                break  # the ACD refused this context: asking again would not change its mind
        return False, why

    # ---- REFER ----

    async def _refer(
        self, active: ActiveCall, queue: QueueEndpoint, attached: AttachedData
    ) -> tuple[bool, str, int | None]:
        host = self.host
        leg = active.leg
        wait = _ReferWait(self.loop.create_future())
        self._refers[leg] = wait
        config = host.endpoint.config
        try:
            host.endpoint.refer(
                leg,
                refer_to(queue.sip_uri, attached.headers if queue.refer_headers else ()),
                referred_by=f"<sip:ivr@{config.host}:{config.port}>",
            )
        except SipError as exc:
            self._refers.pop(leg, None)
            return False, f"REFER not sent: {exc.reason}", None
        host.flush()
        ended: asyncio.Future[Any] = asyncio.ensure_future(active.call.wait_ended())
        try:
            done, _ = await asyncio.wait({wait.future, ended}, timeout=queue.refer_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            ended.cancel()
            self._refers.pop(leg, None)
        if wait.future in done:
            final = wait.future.result()
            if 200 <= final.status < 300:
                return True, f"transferred ({final.status} {final.reason})", final.status
            what = "REFER refused" if final.source == "refer" else "transfer failed"
            if final.source == "timeout":
                what = "REFER unanswered"
            return False, f"{what}: {final.status} {final.reason}".strip(), final.status
        if active.call.ended:
            return False, "the caller hung up", None
        return False, f"REFER: no final NOTIFY within {queue.refer_timeout:g}s", 408

    def on_transfer_progress(self, event: TransferProgress) -> None:
        wait = self._refers.get(event.leg)
        if wait is None:
            return
        if event.source == "refer" and not event.final:
            wait.accepted_at = self.loop.time()
        if event.final and not wait.future.done():
            wait.future.set_result(event)

    # ---- bridge ----

    async def _bridge(
        self, active: ActiveCall, queue: QueueEndpoint, attached: AttachedData
    ) -> tuple[bool, str, int | None]:
        endpoint = self.host.endpoint
        try:
            media = self._sessions().open()
        except PortPoolExhausted:
            return False, "no free RTP port for the queue leg", None
        # The queue's keys are heard as the caller's are (and relayed by the bridge): RFC 4733 when it negotiated
        # telephone-event, else in-band, unless the daemon takes SIP INFO only. Its address never relatches, and
        # media to it starts at once.
        media.allow_relatch = False
        media.send_after_first_packet = False  # a configured queue endpoint: no need to wait for its RTP first
        config = endpoint.config
        host, sip_port = queue.sip_uri.host_port(5061 if queue.sip_uri.scheme == "sips" else 5060)
        user = from_user(queue, active.call.caller)
        try:
            leg = endpoint.call(
                request_uri=queue.uri,
                from_uri=f"sip:{user}@{config.host}:{config.port}",
                to_uri=queue.uri,
                peer=Peer(host, sip_port, queue.sip_uri.transport),
                sdp=media.offer(),
                extra=attached.headers,
            )
        except (SipError, ValueError) as exc:
            media.close()
            return False, f"cannot call the queue: {exc}", None
        bridged = BridgedCall(active, queue, leg, media, outcome=self.loop.create_future())
        self._queue_legs[leg] = bridged
        self._bridges[active] = bridged
        self.host.flush()
        wait = self._wait_prompts.get(queue.name, self.ringback)
        if not active.stream.closed:
            active.stream.play(wait.frames(active.call.codec), loop=True)
        ended: asyncio.Future[Any] = asyncio.ensure_future(active.call.wait_ended())
        assert bridged.outcome is not None
        try:
            done, _ = await asyncio.wait({bridged.outcome, ended}, timeout=queue.answer_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            ended.cancel()
            if not bridged.answered:
                self._give_up(bridged)
        if bridged.outcome in done:
            ok, reason, status = bridged.outcome.result()
            return ok, reason, status
        if active.call.ended:
            return False, "the caller hung up", None
        return False, f"no answer from the queue within {queue.answer_timeout:g}s", 408

    def _give_up(self, bridged: BridgedCall) -> None:
        """The queue did not answer (or the caller left): CANCEL the INVITE, stop any early media, free the port."""
        active = bridged.active
        if self._bridges.get(active) is bridged:
            del self._bridges[active]
        if not active.stream.closed:
            active.stream.stop_playback()
        self.host.endpoint.hangup(bridged.leg)  # an unanswered outgoing leg: CANCEL (once a 1xx came)
        self.host.flush()
        self._release(bridged)

    def _release(self, bridged: BridgedCall) -> None:
        if bridged.closed:
            return
        bridged.closed = True
        if bridged.bridge is not None:
            bridged.bridge.stop()
        bridged.media.close()

    def owns(self, leg: Leg) -> bool:
        """True for a leg this handoff placed to a queue endpoint."""
        return leg in self._queue_legs

    def on_queue_leg_event(self, event: CallProgress | CallAnswered | CallEnded) -> bool:
        """An event of a leg we placed to a queue; False when the leg is not ours."""
        bridged = self._queue_legs.get(event.leg)
        if bridged is None:
            return False
        outcome = bridged.outcome
        if isinstance(event, CallProgress):
            if event.response.body and not bridged.answered:
                self._media(bridged, event.response.body, early=True)
        elif isinstance(event, CallAnswered):
            if bridged.closed:
                return True  # answered after we gave up: the endpoint already sends BYE
            if not self._media(bridged, event.response.body, early=False):
                self.host.endpoint.hangup(bridged.leg)
                self.host.flush()
                if outcome is not None and not outcome.done():
                    outcome.set_result((False, "the queue answered with unusable SDP", 488))
                return True
            bridged.answered = True
            if outcome is not None and not outcome.done():
                outcome.set_result((True, f"bridged ({event.response.status} {event.response.reason})",
                                    event.response.status))  # fmt: skip
        else:
            self._queue_legs.pop(event.leg, None)
            if not bridged.answered:
                status = event.status
                reason = f"queue answered {status}" if status is not None else f"queue leg ended ({event.reason})"
                if status == 408:
                    reason = "queue unreachable (no answer to the INVITE)"
                if outcome is not None and not outcome.done():
                    outcome.set_result((False, reason, status))
                self._release(bridged)
            elif not bridged.closed:  # closed: the caller hung up first and caller_gone ended this leg
                # The agent's side hung up: the caller's leg ends too (BYE), which tears the bridge down.
                active = bridged.active
                self._release(bridged)
                self.host.end_bridged_call(active, "queue_bye")
        return True

    def on_queue_reinvite(self, event: ReInvite) -> None:
        """A re-INVITE from the queue on a bridged leg: a session refresh (RFC 4028: often without SDP, or with the
        same), hold, or a new address. The queue leg's stream follows it and the bridge carries on; a change of
        codec or payload type is refused 488, as on a caller's leg."""
        endpoint = self.host.endpoint
        bridged = self._queue_legs.get(event.leg)
        request = event.request
        if bridged is None or bridged.media.stream is None:
            endpoint.respond(event.leg, 491 if bridged is not None else 481, request=request)
            return
        if not request.body:
            local = event.leg.local_sdp
            if local:
                endpoint.respond(event.leg, 200, request=request, body=local, content_type="application/sdp")
            else:
                endpoint.respond(event.leg, 488, request=request)
            return
        try:
            answer, _media = bridged.media.update(request.body)
        except SdpError as exc:
            endpoint.respond(event.leg, exc.status, request=request,
                             extra=[("Warning", f'399 ivr "SDP: {exc.reason}"')])  # fmt: skip
            return
        endpoint.respond(event.leg, 200, request=request, body=answer, content_type="application/sdp")

    def _media(self, bridged: BridgedCall, body: bytes, *, early: bool) -> bool:
        """Start relaying (or, for a 2xx after early media, update where to) from the queue's SDP answer."""
        try:
            queue_stream = bridged.media.accept_answer(body)
        except SdpError:
            return early  # an unusable 183 is only no early media; an unusable 2xx fails the bridge
        active = bridged.active
        if bridged.bridge is None and not active.stream.closed:
            bridged.bridge = MediaBridge(
                self._sessions().clock, active.stream, active.media.sock, queue_stream, bridged.media.sock,
                send_info_a=self._info_sender(active.leg), send_info_b=self._info_sender(bridged.leg),
            )  # fmt: skip
            bridged.bridge.start()
        return True

    def _info_sender(self, leg: Leg) -> InfoSender:
        """The bridge calls this from the media clock's tick: the SIP work is done on the loop's next pass."""
        call_soon = self.loop.call_soon

        def send(key: str, duration_ms: int) -> None:
            call_soon(self._send_info, leg, key, duration_ms)

        return send

    def _send_info(self, leg: Leg, key: str, duration_ms: int) -> None:
        """A key the bridge relays to a leg without telephone-event: SIP INFO (application/dtmf-relay)."""
        if leg.end_reason is not None:
            return
        try:
            self.host.endpoint.send_info_digit(leg, key, duration_ms)
        except SipError:
            return  # the dialog is going away (BYE crossing): the key has nowhere to go
        self.host.flush()

    def on_digit_info(self, event: DigitInfo) -> bool:
        """A key that came by SIP INFO: relayed across the bridge when ``event.leg`` is one side of a running
        bridge. True when the leg is a queue leg (the event is ours and nobody else's); False for any other leg,
        the caller's included (the controller still counts a bridged caller's key for the call record)."""
        digit = DigitEvent(event.key, "info", None, event.duration_ms, True)
        bridged = self._queue_legs.get(event.leg)
        if bridged is not None:
            if bridged.bridge is not None and bridged.bridge.running:
                bridged.bridge.digit_from_b(digit)
            return True
        active = self.host.active_on(event.leg)
        bridged = self._bridges.get(active) if active is not None else None
        if bridged is not None and bridged.bridge is not None and bridged.bridge.running:
            bridged.bridge.digit_from_a(digit)
        return False

    def caller_gone(self, active: ActiveCall) -> None:
        """The caller's leg ended (BYE, or the daemon hung up): settle a handoff in progress for the call record,
        and end the queue leg too (BYE, or CANCEL while it rings)."""
        record = active.handoff
        if record is not None and record.get("result") == "pending":
            _settle(record, False, "the caller hung up", None, self.loop.time())
            self.host.handoff_done(active, record)
        bridged = self._bridges.get(active)
        if bridged is None:
            return
        stats = self.bridge_stats(active)
        if stats is not None and record is not None:
            record["bridge"] = stats
        del self._bridges[active]
        if not bridged.closed:
            self._release(bridged)  # first: the queue leg's CallEnded may come out of the flush below
            self.host.endpoint.hangup(bridged.leg)
            self.host.flush()
        if bridged.outcome is not None and not bridged.outcome.done():
            bridged.outcome.set_result((False, "the caller hung up", None))

    def bridge_stats(self, active: ActiveCall) -> dict[str, int] | None:
        bridged = self._bridges.get(active)
        if bridged is None or bridged.bridge is None:
            return None
        stats = bridged.bridge.stats
        return {"from_caller": stats.received_a, "to_queue": stats.sent_a_to_b, "from_queue": stats.received_b,
                "to_caller": stats.sent_b_to_a, "dropped": stats.dropped_a_to_b + stats.dropped_b_to_a,
                "digits_to_queue": stats.digits_a_to_b, "digits_to_caller": stats.digits_b_to_a}  # fmt: skip


def _settle(record: dict[str, Any], ok: bool, reason: str, status: int | None, now: float) -> None:
    started = float(record.pop("started", now))
    record.update(result="ok" if ok else "failed", status=status, reason=reason)
    record["seconds"] = round(now - started, 3)
    if ok:
        record["seconds_to_answer"] = record["seconds"]
