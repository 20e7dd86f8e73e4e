"""The SIP user-agent core, sans-I/O: transactions and dialogs wired into one object a driver feeds.

Its driver (``ivr.daemon.sip_driver``) has the shape of aioquic's ``QuicConnection`` driver. Inputs: a datagram or
framed stream message with its source (:meth:`SipEndpoint.receive`, with the driver's word on whether the source is
trusted when it has one), a broken stream connection (:meth:`~SipEndpoint.transport_error`), the time
(:meth:`~SipEndpoint.handle_timer`), and the application verbs (:meth:`~SipEndpoint.answer`,
:meth:`~SipEndpoint.reject`, :meth:`~SipEndpoint.hangup`, :meth:`~SipEndpoint.call`, :meth:`~SipEndpoint.refer`,
:meth:`~SipEndpoint.register` ...). After any of them the driver takes :meth:`~SipEndpoint.datagrams_to_send` (bytes
with their destination), :meth:`~SipEndpoint.next_event` until ``None`` (:data:`EndpointEvent`: call events for the
call controller, registration events), and re-arms its one timer to :meth:`~SipEndpoint.get_timer`.

The transactions' timers (RFC 3261 17: A, B, E, F, G, H ...) and the registrations' refresh and retry timers live
here, on the driver's clock: a machine asks for a delay, :meth:`~SipEndpoint.datagrams_to_send` gives it a deadline
(its ``now`` plus the delay), and :meth:`~SipEndpoint.handle_timer` fires those that are due. The endpoint never reads
a clock. The event types live in :mod:`ivr.sip.events` (the driver's values in :mod:`ivr.sip.primitives`), the
:class:`Leg` and its state machine in :mod:`ivr.sip.leg`; this module re-exports them under their old names.

It also hosts upstream registrations (:meth:`~SipEndpoint.register`): each :class:`~ivr.sip.registration.Registration`
is the transaction user of its REGISTERs, which run in the same transaction table as every other client transaction
(the registrar's responses are matched by branch like any response), and its state changes come out of
:meth:`~SipEndpoint.next_event` (:class:`Registered`, :class:`RegistrationFailed`, :class:`Unregistered`). A response
that matches no transaction is dropped (RFC 3261 17.1.3, 18.1.2).

Everything RFC 3261 says a UAS core does before a request reaches the application lives here: transaction matching
(17.2.3), merged-request detection (8.2.2.2), Require checks (8.2.2.3), 481 for unknown dialogs (12.2.2), CANCEL
(9.2), OPTIONS (11.2), 405/501 with Allow (8.2.1), BYE (15.1.2), rport/received (RFC 3581), the 2xx retransmission
and the BYE that follows a lost ACK (13.3.1.4).

RFC 4028 session timers (``EndpointConfig.session_expires``; the rules in :mod:`ivr.sip.session_timer`): 422 for a
Session-Expires below our Min-SE, the negotiated Session-Expires (and Require: timer) in every 2xx to an INVITE or
UPDATE, our refresh re-INVITE at half the interval when we refresh, and a BYE ending the leg with
``EndReason.SESSION_EXPIRED`` when no refresh came by ``interval - min(32, interval/3)`` or ours failed (408, 481,
no answer). The timers are the endpoint's, like every other.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_address

from ivr.sip.auth import DigestVerifier
from ivr.sip.dialog import Dialog, DialogId, dialog_id_for_request
from ivr.sip.errors import SipError, SipParseError
from ivr.sip.events import (  # re-exported (see __all__): code outside ivr.sip imports them from here
    AuthRefused,
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallEvent,
    CallProgress,
    ClearTimer,
    DigitInfo,
    EndpointEvent,
    EndpointTimer,
    EndReason,
    IncomingCall,
    Output,
    Peer,
    ReferReceived,
    Registered,
    RegistrationEvent,
    RegistrationFailed,
    ReInvite,
    SetTimer,
    TransferProgress,
    Transmit,
    Unregistered,
)
from ivr.sip.headers import Headers, Via
from ivr.sip.info import ACCEPTED_INFO_BODIES, DTMF_RELAY, parse_dtmf_info
from ivr.sip.leg import Leg, LegEvent, LegState, Transfer
from ivr.sip.message import (
    Message,
    Request,
    Response,
    answerable_request,
    make_response,
    parse_message,
    warning_header,
)
from ivr.sip.refer import (
    REFER_EVENT,
    SIPFRAG,
    format_sipfrag,
    parse_event,
    parse_refer_to,
    parse_sipfrag,
    parse_subscription_state,
)
from ivr.sip.registration import Registration, RegistrationConfig, RegistrationOutput, StartTransaction
from ivr.sip.session_timer import (
    RFC_MIN_SE,
    TIMER,
    SessionExpires,
    SessionTimer,
    min_se_of,
    session_expires_of,
    supports_timer,
    uac_timer,
    uas_decision,
)
from ivr.sip.transaction import (
    Action,
    ClientInviteState,
    ClientInviteTransaction,
    ClientNonInviteState,
    ClientNonInviteTransaction,
    Deliver,
    Send,
    ServerInviteState,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    Terminated,
    TimedOut,
    TimerValues,
    TransactionKey,
    TransportFailure,
    make_cancel,
    new_branch,
    server_key,
)
from ivr.sip.transaction import (
    client_key as transaction_client_key,
)
from ivr.sip.uri import NameAddr, SipURI

ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO")
# A transferee (a phone: the simulator's caller) also takes REFER and the NOTIFYs of the REFER it sends.
TRANSFEREE_METHODS = (*ALLOWED_METHODS, "REFER", "NOTIFY")
REFER_EXPIRES = 60  # seconds the implicit subscription of an accepted REFER is said to last (RFC 3515 2.4.6)
# Methods we know of but do not accept here: 405 Method Not Allowed. Anything else: 501 Not Implemented.
KNOWN_METHODS = frozenset(
    ("REGISTER", "INFO", "UPDATE", "PRACK", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH", *ALLOWED_METHODS)
)
SUPPORTED_EXTENSIONS: tuple[str, ...] = ()
SUPPORTED_URI_SCHEMES = frozenset(("sip", "sips", "tel"))
ACCEPTED_BODIES = "application/sdp"


@dataclass(eq=False)
class _TxnEntry:
    id: int
    txn: ServerInviteTransaction | ServerNonInviteTransaction | ClientInviteTransaction | ClientNonInviteTransaction
    peer: Peer
    leg: Leg | None = None
    timers: set[str] = field(default_factory=set)
    registration: _RegEntry | None = None  # a REGISTER's transaction: the registration it answers to


@dataclass(eq=False)
class _RegEntry:
    """A registration the endpoint hosts: its REGISTER transaction now (``txn``) and its refresh/retry timers."""

    id: int
    registration: Registration
    peer: Peer  # the registrar, or the outbound proxy in front of it
    txn: _TxnEntry | None = None
    timers: set[str] = field(default_factory=set)


@dataclass
class EndpointConfig:
    host: str  # our address as written into Via, Contact and Record-Route
    port: int
    user_agent: str = "ivr"
    timers: TimerValues = field(default_factory=TimerValues)
    # Sources allowed to send us SIP (the softswitch, the trunk); empty: everyone. Others get 403, or nothing.
    trusted: tuple[IPv4Network | IPv6Network, ...] = ()
    untrusted_action: str = "reject"  # "reject": 403 Forbidden; "drop": no answer at all (scanners learn nothing)
    # True for a phone (the simulator's caller): a REFER in a dialog becomes ReferReceived. False (the daemon): a
    # peer's REFER is answered 403, so no caller can make us place a call.
    transferee: bool = False
    auth: DigestVerifier | None = None  # challenge new INVITEs (RFC 7616/8760) unless they come from a trusted source
    auth_trusted_skip: bool = True
    # RFC 4028 session timers: the interval we ask for and apply (seconds; 0: off, no timer is negotiated or run,
    # and "timer" is not supported) and the smallest one we accept (a Session-Expires below it gets 422).
    session_expires: int = 0
    min_se: int = RFC_MIN_SE

    @property
    def allowed_methods(self) -> tuple[str, ...]:
        methods = TRANSFEREE_METHODS if self.transferee else ALLOWED_METHODS
        return (*methods, "UPDATE") if self.session_expires > 0 else methods  # UPDATE: a session refresh (RFC 4028)

    @property
    def extensions(self) -> tuple[str, ...]:
        """The option tags we support (Supported; a Require of anything else gets 420)."""
        return (TIMER,) if self.session_expires > 0 else SUPPORTED_EXTENSIONS


_MERGE_MEMORY = 4096
_SESSION_REFRESH = "session-refresh"  # RFC 4028 10: the refresher's re-INVITE is due
_SESSION_EXPIRY = "session-expiry"  # RFC 4028 10: no refresh came in time: BYE
_GLARE_RETRY = 2.0  # seconds before a refresh refused 491 (or held back by the peer's re-INVITE) is tried again
_ACCEPTED = ServerInviteState.ACCEPTED
# A client transaction that has its final response is done for the caller's purposes (it only waits out timer K/D).
_CLIENT_DONE = frozenset(
    (
        ClientNonInviteState.COMPLETED,
        ClientNonInviteState.TERMINATED,
        ClientInviteState.COMPLETED,
        ClientInviteState.ACCEPTED,  # a 2xx arrived: the transaction only waits out timer M for retransmissions
        ClientInviteState.TERMINATED,
    )
)


def dialog_contact_problem(request: Request) -> tuple[int, str] | None:
    """Sanity before state (as Kamailio's ``sanity`` module checks): a dialog-creating request must carry exactly one
    Contact whose URI is a SIP or SIPS URI (RFC 3261 8.1.1.8 and 12.1.1: it becomes the dialog's remote target, where
    the BYE goes). Returns the status and reason to refuse it with, or None when it is fine."""
    values = request.headers.values("Contact")
    if not values:
        return 400, "RFC 3261 8.1.1.8: an INVITE must carry a Contact (the address the dialog's requests go to)"
    if len(values) != 1 or values[0].strip() == "*":
        return 400, "RFC 3261 8.1.1.8: an INVITE carries exactly one Contact with a SIP or SIPS URI (not * or a list)"
    try:
        uri = NameAddr.parse(values[0]).uri
    except SipError as exc:
        return 400, f"Contact does not parse: {exc.reason}"
    scheme = str(uri).partition(":")[0].lower()
    if scheme not in ("sip", "sips"):
        return 416, f"RFC 3261 8.1.1.8: the Contact must be a SIP or SIPS URI, not {scheme[:16]!r}"
    try:
        target = SipURI.parse(str(uri))
    except SipError as exc:
        return 400, f"Contact URI does not parse: {exc.reason}"
    if not target.host:
        return 400, "the Contact URI names no host"
    return None


class SipEndpoint:
    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.accepting = True
        """False while draining (:meth:`shutdown` too): new INVITEs and OPTIONS outside a dialog get 503."""
        self._datagrams: list[Transmit] = []
        self._events: deque[EndpointEvent] = deque()
        # Timers: delays asked for since the last datagrams_to_send (in the order set), then deadlines in a heap of
        # (deadline, serial, token). A token's live serial is in _timer_serials; a heap entry whose serial is not
        # (the timer was cleared or set again) is stale and skipped.
        self._timer_delays: dict[EndpointTimer, float] = {}
        self._timer_heap: list[tuple[float, int, EndpointTimer]] = []
        self._timer_serials: dict[EndpointTimer, int] = {}
        self._timer_serial = itertools.count()
        self._ids = itertools.count(1)  # serials of the transaction entries and the registrations: timer owners
        self._server: dict[TransactionKey, _TxnEntry] = {}
        self._client: dict[TransactionKey, _TxnEntry] = {}
        self._by_id: dict[int, _TxnEntry] = {}
        self._registrations: dict[Registration, _RegEntry] = {}
        self._registrations_by_id: dict[int, _RegEntry] = {}
        self._session_legs: dict[int, Leg] = {}  # Leg.timer_owner -> leg: owners of the session timers (RFC 4028)
        self._dialogs: dict[DialogId, Leg] = {}
        self._legs: set[Leg] = set()
        # (From tag, Call-ID, CSeq) -> branch of INVITEs in progress, for merged-request detection (8.2.2.2).
        self._recent: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self.untrusted_messages = 0
        self.auth_refused = 0
        self._wall_clock = 0.0
        self._source_trusted = False  # the source of the message being handled is in config.trusted

    # ---- driver interface ----

    def datagrams_to_send(self, now: float) -> list[Transmit]:
        """The bytes to send, with their destinations, in order. The timers asked for since the last call get their
        deadline here: ``now`` plus their delay (``now`` on the driver's clock, the one :meth:`get_timer` answers
        on and :meth:`handle_timer` is given)."""
        if self._timer_delays:
            heap, serials, serial = self._timer_heap, self._timer_serials, self._timer_serial
            for token, delay in self._timer_delays.items():
                serials[token] = number = next(serial)
                heapq.heappush(heap, (now + delay, number, token))
            self._timer_delays.clear()
            if len(heap) > 64 and len(heap) > 2 * len(serials):  # mostly stale: cleared or set again
                self._timer_heap = [item for item in heap if serials.get(item[2]) == item[1]]
                heapq.heapify(self._timer_heap)
        out, self._datagrams = self._datagrams, []
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline of the endpoint's timers (None: none is set). Timers asked for since the last
        :meth:`datagrams_to_send` have no deadline yet: call it first."""
        heap, serials = self._timer_heap, self._timer_serials
        while heap and serials.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline is ``now`` or earlier, in deadline order (equal deadlines in the order
        they were set). A timer cleared or set again by one that fires before it does not fire."""
        heap, serials = self._timer_heap, self._timer_serials
        while heap and heap[0][0] <= now:
            _deadline, number, token = heapq.heappop(heap)
            if serials.get(token) != number:
                continue
            del serials[token]
            try:
                self._timer_fired(token)
            except Exception as exc:
                exc.add_note(f"while firing SIP timer {token!r}")  # the driver's log of it names the timer
                raise

    def next_event(self) -> EndpointEvent | None:
        """The oldest event the application has not taken yet (:data:`CallEvent`, :class:`AuthRefused`,
        :class:`Registered`, :class:`RegistrationFailed`, :class:`Unregistered`), or None."""
        return self._events.popleft() if self._events else None

    @property
    def legs(self) -> frozenset[Leg]:
        return frozenset(self._legs)

    def receive(
        self, data: bytes, peer: Peer, now: float, *, wall_clock: float | None = None, trusted: bool | None = None
    ) -> None:
        """Feed one datagram (UDP) or one framed message (TCP) received from ``peer`` at ``now`` (the driver's
        clock, as everywhere). ``wall_clock`` (seconds since the epoch; default ``now``) is the clock digest nonces
        carry: unlike the driver's monotonic clock it is the same on every node that shares the nonce secret and
        across restarts, so a nonce one node issued verifies on another and ages the same everywhere.

        ``trusted``: whether ``peer.host`` is in the trusted networks, when the driver already knows (its gate decided
        it, from the same networks as ``config.trusted``); None (the default) has the endpoint check
        ``config.trusted`` itself. It counts only when ``config.trusted`` is not empty (empty: no source is refused,
        and none skips digest authentication): a source not trusted gets 403 or nothing (``untrusted_action``), a
        trusted one is not challenged (``auth_trusted_skip``)."""
        self._wall_clock = now if wall_clock is None else wall_clock
        listed = bool(self.config.trusted)
        if trusted is None:
            trusted = listed and self._trusted(peer.host)
        self._source_trusted = listed and trusted
        if listed and not trusted:
            self.untrusted_messages += 1
            if self.config.untrusted_action == "reject":
                self._refuse_untrusted(data, peer)
            return
        try:
            msg = parse_message(data, stream=peer.reliable)
        except SipError as exc:
            request = answerable_request(exc)
            if request is not None:
                self._answer_unparseable(request, exc, peer)
            return  # responses that do not parse, and bad ACKs, are dropped (RFC 3261 8.1.3.1, 17.2.1)
        if isinstance(msg, Request):
            self._receive_request(msg, peer)
        else:
            self._receive_response(msg, peer)

    def _trusted(self, host: str) -> bool:
        try:
            address = ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in self.config.trusted)

    def _refuse_untrusted(self, data: bytes, peer: Peer) -> None:
        """403 without any state: no transaction, no dialog, nothing a flood could fill."""
        try:
            msg = parse_message(data, stream=peer.reliable)
        except SipError:
            return
        if not isinstance(msg, Request) or msg.method == "ACK":
            return
        self._answer_unparseable(msg, SipError(f"source {peer.host} is not trusted", status=403), peer)

    def _timer_fired(self, token: EndpointTimer) -> None:
        owner_id, name = token
        entry = self._by_id.get(owner_id)
        if entry is not None:
            if name in entry.timers:
                entry.timers.discard(name)
                self._run(entry, entry.txn.timer_fired(name))
            return
        reg = self._registrations_by_id.get(owner_id)
        if reg is not None and name in reg.timers:
            reg.timers.discard(name)
            self._run_registration(reg, reg.registration.timer_fired(name))
            return
        leg = self._session_legs.get(owner_id)
        if leg is not None:
            if name == _SESSION_REFRESH:
                self._session_refresh(leg)
            elif name == _SESSION_EXPIRY:
                self._session_expired(leg)

    def transport_error(self, peer: Peer, reason: str = "transport error") -> None:
        """A stream connection broke, or could not be made: client transactions to it fail (17.1.4)."""
        for entry in list(self._client.values()):
            if entry.peer == peer and isinstance(entry.txn, ClientInviteTransaction | ClientNonInviteTransaction):
                self._run(entry, entry.txn.transport_error(reason))

    # ---- application verbs ----

    def ring(self, leg: Leg) -> None:
        self.respond(leg, 180)

    def answer(self, leg: Leg, sdp: bytes) -> None:
        """Send 200 OK with our SDP answer (or offer, when the INVITE had none)."""
        if leg.state is not LegState.INCOMING or leg.invite_txn is None:
            raise SipError(f"RFC 3261 13.3.1.4: leg {leg.id} is {leg.state.value}, not waiting for an answer")
        timer, timer_headers = self._uas_session_timer(leg.invite)
        response = self._response(leg.invite, 200, to_tag=leg.local_tag, body=sdp, content_type=ACCEPTED_BODIES,
                                  extra=timer_headers)  # fmt: skip
        self._add_contact(response, leg.peer)
        leg.dialog = Dialog.from_uas(leg.invite, local_tag=leg.local_tag, local_contact=self._contact(leg.peer))
        self._dialogs[leg.dialog.id] = leg
        leg.advance(LegEvent.ANSWER_SENT)
        leg.local_sdp = sdp
        entry = self._server_entry_for(leg)
        self._run(entry, leg.invite_txn.send_response(response))
        self._start_session_timer(leg, timer)  # RFC 4028 10: the timer starts when the 2xx is sent

    def reject(self, leg: Leg, status: int, reason_text: str | None = None, *, retry_after: int | None = None) -> None:
        """Answer the INVITE with a final non-2xx response; the leg ends."""
        if leg.state is not LegState.INCOMING or leg.invite_txn is None:
            return
        extra: list[tuple[str, str]] = []
        if reason_text:
            extra.append(warning_header(reason_text))
        if retry_after is not None:
            extra.append(("Retry-After", str(retry_after)))
        response = self._response(leg.invite, status, to_tag=leg.local_tag, extra=extra)
        entry = self._server_entry_for(leg)
        self._run(entry, leg.invite_txn.send_response(response))
        self._end_unanswered(leg, EndReason.REJECTED, status)

    def respond(
        self,
        leg: Leg,
        status: int,
        *,
        request: Request | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Send a response to ``request`` (default: the leg's INVITE), e.g. 180, or the answer to a re-INVITE."""
        req = request if request is not None else leg.invite
        key = server_key(req)
        entry = self._server.get(key)
        if entry is None:
            raise SipError(f"no server transaction for {req.method} {req.cseq}")
        # A 2xx to a re-INVITE or UPDATE in the dialog is a session refresh (RFC 4028 9, 10): it carries the
        # negotiated Session-Expires again and restarts the timer.
        refresh = (
            200 <= status < 300 and req.method in ("INVITE", "UPDATE") and req is not leg.invite and leg.dialog
            is not None and leg.state in (LegState.ANSWERED, LegState.CONFIRMED)
        )  # fmt: skip
        timer: SessionTimer | None = None
        headers = list(extra)
        if refresh:
            timer, timer_headers = self._uas_session_timer(req)
            headers += timer_headers
        response = self._response(req, status, to_tag=leg.local_tag, body=body, content_type=content_type,
                                  extra=headers)  # fmt: skip
        if status >= 200 and req.method in ("INVITE", "UPDATE"):
            self._add_contact(response, leg.peer)
        txn = entry.txn
        assert isinstance(txn, ServerInviteTransaction | ServerNonInviteTransaction)
        self._run(entry, txn.send_response(response))
        if refresh:
            if body:
                leg.local_sdp = body
            self._start_session_timer(leg, timer)

    def hangup(self, leg: Leg, *, reason: EndReason = EndReason.LOCAL_BYE) -> None:
        """End the leg: BYE when confirmed (or answered, 15.1.1 allows it once the 2xx is sent), else 480."""
        if leg.state is LegState.INCOMING:
            if leg.outgoing:
                self.cancel(leg)
                leg.end_reason_wanted = reason
                return
            self.reject(leg, 480, "the call was ended before it was answered")
            return
        if leg.state in (LegState.ENDING, LegState.ENDED) or leg.dialog is None:
            return
        if leg.state is LegState.ANSWERED:
            # 15.1.1: the callee MUST NOT send BYE before the ACK for its 2xx arrives or the transaction times out.
            leg.bye_pending = True
            leg.end_reason_wanted = reason
            return
        self._send_bye(leg)
        self._end(leg, reason, None)

    def call(
        self,
        *,
        request_uri: str,
        from_uri: str,
        to_uri: str,
        peer: Peer,
        sdp: bytes,
        display_name: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> Leg:
        """Place a call (UAC): send an INVITE with our SDP offer to ``peer``. Progress arrives as
        :class:`CallProgress`, then :class:`CallAnswered` (the ACK is already sent) or :class:`CallEnded`."""
        local_tag = secrets.token_hex(6)
        headers = Headers()
        headers.add("Via", str(self._via(peer)))
        headers.add("Max-Forwards", "70")
        from_addr = NameAddr.parse(f"<{from_uri}>")
        from_addr.display = display_name
        from_addr.params["tag"] = local_tag
        headers.add("From", str(from_addr))
        headers.add("To", str(NameAddr.parse(f"<{to_uri}>")))
        headers.add("Call-ID", f"{secrets.token_hex(10)}@{self.config.host}")
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", self._contact(peer))
        headers.add("Allow", ", ".join(self.config.allowed_methods))
        headers.add("User-Agent", self.config.user_agent)
        if self.config.session_expires > 0:
            # RFC 4028 7.1: offer a session timer and ask to refresh it ourselves (a UAS supporting timers copies the
            # refresher, 9): our refresh re-INVITE offers our SDP again, where a bridged queue leg cannot take a
            # re-INVITE of the queue's. The 2xx has the last word (7.2).
            headers.add("Supported", TIMER)
            interval = max(self.config.session_expires, self.config.min_se)
            headers.add("Session-Expires", f"{interval};refresher=uac")
            headers.add("Min-SE", str(self.config.min_se))
        for name, value in extra:
            headers.add(name, value)
        if sdp:
            headers.add("Content-Type", ACCEPTED_BODIES)
        invite = Request("INVITE", request_uri, headers, sdp)
        txn = ClientInviteTransaction(invite, reliable=peer.reliable, timers=self.config.timers)
        leg = Leg(invite=invite, peer=peer, local_tag=local_tag, outgoing=True, client_txn=txn, local_sdp=sdp)
        self._legs.add(leg)
        self._add_client(txn, peer, leg)
        return leg

    def cancel(self, leg: Leg) -> None:
        """Cancel an outgoing call that has not been answered (RFC 3261 9.1): CANCEL once a 1xx has arrived."""
        if not leg.outgoing or leg.state is not LegState.INCOMING or leg.client_txn is None:
            return
        leg.cancel_requested = True
        if not leg.provisional:
            leg.cancel_pending = True
            return
        self._send_cancel(leg)

    def send_info_digit(self, leg: Leg, key: str, duration_ms: int = 100) -> None:
        """Send a key press as SIP INFO application/dtmf-relay in a confirmed dialog."""
        if leg.dialog is None or leg.state is not LegState.CONFIRMED:
            raise SipError(f"leg {leg.id} has no confirmed dialog to send INFO in")
        body = f"Signal={key}\r\nDuration={duration_ms}\r\n".encode()
        info = leg.dialog.create_request("INFO", via=self._via(leg.peer), body=body, content_type=DTMF_RELAY)
        info.headers.add("User-Agent", self.config.user_agent)
        peer = self._request_peer(leg)
        self._add_client(ClientNonInviteTransaction(info, reliable=peer.reliable, timers=self.config.timers), peer, leg)

    # ---- upstream registration (RFC 3261 10.2) ----

    def register(self, registration: RegistrationConfig | Registration) -> Registration:
        """Keep a binding registered at a registrar: send its first REGISTER now, then refresh it, answer challenges
        and retry after failures, until :meth:`unregister`. A :class:`RegistrationConfig` makes a new
        :class:`~ivr.sip.registration.Registration`; a Registration made by the caller (an injected ``rng``) or one
        stopped earlier (it keeps its Call-ID, and its CSeq counts on) is started as it is. Returns the registration:
        the handle :meth:`unregister` takes and every :class:`Registered`, :class:`RegistrationFailed` and
        :class:`Unregistered` event carries. Raises :class:`SipError` when it is already running."""
        reg = registration if isinstance(registration, Registration) else Registration(registration)
        outputs = reg.start()  # a stopped registration was forgotten on its Unregistered: a new entry either way
        host, port = reg.config.next_hop
        entry = _RegEntry(next(self._ids), reg, Peer(host, port, reg.config.transport.lower()))
        self._registrations[reg] = entry
        self._registrations_by_id[entry.id] = entry
        self._run_registration(entry, outputs)
        return reg

    def unregister(self, registration: Registration) -> None:
        """Remove the binding (REGISTER with our Contact and expires=0); :class:`Unregistered` follows the registrar's
        answer, or its absence (408), and the endpoint forgets the registration. Nothing happens for a registration
        that is not running."""
        entry = self._registrations.get(registration)
        if entry is not None:
            self._run_registration(entry, registration.stop())

    @property
    def registrations(self) -> frozenset[Registration]:
        """The registrations running (from :meth:`register` until their :class:`Unregistered`)."""
        return frozenset(self._registrations)

    def _run_registration(self, entry: _RegEntry, outputs: Sequence[RegistrationOutput]) -> None:
        for out in outputs:
            if isinstance(out, StartTransaction):
                previous = entry.txn
                if previous is not None and previous.txn.state not in _CLIENT_DONE:
                    self._drop_entry(previous)  # abandoned in flight: no more retransmissions, its answer is stray
                entry.txn = self._add_client(out.transaction, entry.peer, None, registration=entry)
            elif isinstance(out, SetTimer | ClearTimer):
                self._entry_timer(entry.id, entry.timers, out)
            else:
                self._events.append(out)
                if isinstance(out, Unregistered):
                    self._forget_registration(entry)

    def _forget_registration(self, entry: _RegEntry) -> None:
        """The registration stopped: its timers go; a transaction of its still absorbing retransmissions (timer K)
        runs out on its own."""
        for name in entry.timers:
            self._clear_timer((entry.id, name))
        entry.timers.clear()
        self._registrations.pop(entry.registration, None)
        self._registrations_by_id.pop(entry.id, None)

    def _registration_of(self, entry: _TxnEntry) -> _RegEntry | None:
        """The registration ``entry``'s transaction reports to: only its current REGISTER's, while it runs."""
        reg = entry.registration
        if (
            reg is None
            or reg.txn is not entry
            or reg.registration.transaction is not entry.txn
            or self._registrations.get(reg.registration) is not reg
        ):
            return None
        return reg

    # ---- transfer (RFC 3515) ----

    def refer(
        self, leg: Leg, refer_to: str, *, referred_by: str | None = None, extra: Sequence[tuple[str, str]] = ()
    ) -> Transfer:
        """Transferor: send REFER in the leg's confirmed dialog asking the peer to call ``refer_to`` (a name-addr,
        e.g. ``<sip:q@acd?X-IVR-Account=42>``), with Referred-By (RFC 3892). News comes as :class:`TransferProgress`;
        ending our leg (BYE on success) is the application's call."""
        if leg.dialog is None or leg.state is not LegState.CONFIRMED:
            raise SipError(f"RFC 3515 2.4.2: leg {leg.id} has no confirmed dialog to send REFER in")
        if leg.transfer is not None:
            raise SipError(f"leg {leg.id} already has a transfer in progress")
        headers = [("Refer-To", refer_to)]
        if referred_by is not None:
            headers.append(("Referred-By", referred_by))
        headers += list(extra)
        refer = leg.dialog.create_request("REFER", via=self._via(leg.peer), extra=headers)
        refer.headers.add("User-Agent", self.config.user_agent)
        transfer = Transfer(leg, refer)
        leg.transfer = transfer
        peer = self._request_peer(leg)
        self._add_client(
            ClientNonInviteTransaction(refer, reliable=peer.reliable, timers=self.config.timers), peer, leg
        )
        return transfer

    def accept_refer(self, leg: Leg, request: Request) -> None:
        """Transferee: answer a REFER 202 Accepted and send the first NOTIFY (``SIP/2.0 100 Trying``, subscription
        active), as RFC 3515 2.4.4 requires."""
        if leg.refers.get(request.cseq.number) != "pending":
            raise SipError(f"REFER {request.cseq} on leg {leg.id} is not waiting for an answer")
        self.respond(leg, 202, request=request)
        leg.refers[request.cseq.number] = "active"
        self.notify_refer(leg, request, 100)

    def reject_refer(self, leg: Leg, request: Request, status: int, reason: str | None = None) -> None:
        """Transferee: refuse a REFER (e.g. 403, 405, 603) with an optional Warning text; no subscription starts."""
        if leg.refers.get(request.cseq.number) != "pending":
            raise SipError(f"REFER {request.cseq} on leg {leg.id} is not waiting for an answer")
        if not 300 <= status <= 699:
            raise SipError(f"a REFER is refused with a 3xx-6xx status, not {status}")
        extra = [warning_header(reason)] if reason else []
        self.respond(leg, status, request=request, extra=extra)
        leg.refers[request.cseq.number] = "terminated"

    def notify_refer(
        self, leg: Leg, request: Request, status: int, reason: str | None = None, *, final: bool | None = None
    ) -> None:
        """Transferee: report how the call to the Refer-To target goes, as a NOTIFY with ``message/sipfrag``
        ``SIP/2.0 <status> <reason>`` (RFC 3515 2.4.5). ``final`` (default: ``status >= 200``) ends the implicit
        subscription with ``Subscription-State: terminated;reason=noresource``; nothing more may be sent after it."""
        number = request.cseq.number
        if leg.refers.get(number) != "active":
            raise SipError(f"REFER {request.cseq} on leg {leg.id} has no active subscription")
        if leg.dialog is None or leg.state not in (LegState.CONFIRMED, LegState.ENDING):
            raise SipError(f"leg {leg.id} has no dialog to send NOTIFY in")
        last = status >= 200 if final is None else final
        state = "terminated;reason=noresource" if last else f"active;expires={REFER_EXPIRES}"
        notify = leg.dialog.create_request(
            "NOTIFY",
            via=self._via(leg.peer),
            body=format_sipfrag(status, reason),
            content_type=SIPFRAG,
            extra=[("Event", f"{REFER_EVENT};id={number}"), ("Subscription-State", state)],
        )
        notify.headers.add("User-Agent", self.config.user_agent)
        if last:
            leg.refers[number] = "terminated"
        peer = self._request_peer(leg)
        self._add_client(
            ClientNonInviteTransaction(notify, reliable=peer.reliable, timers=self.config.timers), peer, leg
        )

    # ---- session timers (RFC 4028) ----

    def _session_interval_refused(self, entry: _TxnEntry, req: Request) -> bool:
        """RFC 4028 8.1: a Session-Expires below our Min-SE gets 422 with our Min-SE (a malformed one, 400).
        False when the request may go on (or session timers are off)."""
        if self.config.session_expires <= 0:
            return False
        try:
            decision = uas_decision(req, session_expires=self.config.session_expires, min_se=self.config.min_se)
        except SipError as exc:
            self._reply(entry, req, exc.status, reason=exc.reason)
            return True
        if decision.too_small:
            self._reply(entry, req, 422, reason="RFC 4028 8.1: Session-Expires is below our Min-SE",
                        extra=[("Min-SE", str(self.config.min_se))])  # fmt: skip
            return True
        return False

    def _uas_session_timer(self, req: Request) -> tuple[SessionTimer | None, list[tuple[str, str]]]:
        """RFC 4028 9: the timer we run after answering ``req`` 2xx, and the headers that 2xx carries."""
        if self.config.session_expires <= 0:
            return None, []
        try:
            decision = uas_decision(req, session_expires=self.config.session_expires, min_se=self.config.min_se)
        except SipError:
            return None, []  # checked when the request arrived; not reachable in practice
        return decision.timer, list(decision.headers)

    def _start_session_timer(self, leg: Leg, timer: SessionTimer | None) -> None:
        """(Re)start ``leg``'s session timer (None: stop it): the refresh at half the interval when we refresh, the
        BYE at ``interval - min(32, interval/3)`` when no refresh came (RFC 4028 10). A refresher that got no 2xx
        to its refresh has the session end at the full interval (its refresh's own failure usually ends it first)."""
        self._stop_session_timer(leg)
        leg.session_timer = timer
        if timer is None or leg.end_reason is not None:
            return
        if not leg.timer_owner:
            leg.timer_owner = next(self._ids)
        self._session_legs[leg.timer_owner] = leg
        if timer.we_refresh:
            self._set_timer((leg.timer_owner, _SESSION_REFRESH), timer.refresh_after)
            self._set_timer((leg.timer_owner, _SESSION_EXPIRY), float(timer.interval))
        else:
            self._set_timer((leg.timer_owner, _SESSION_EXPIRY), timer.expire_after)

    def _stop_session_timer(self, leg: Leg) -> None:
        if leg.timer_owner and self._session_legs.pop(leg.timer_owner, None) is not None:
            self._clear_timer((leg.timer_owner, _SESSION_REFRESH))
            self._clear_timer((leg.timer_owner, _SESSION_EXPIRY))

    def _session_expired(self, leg: Leg) -> None:
        """RFC 4028 10: the session expired (no refresh in time, or ours got 408/481/no answer): BYE, and the leg
        ends with :attr:`EndReason.SESSION_EXPIRED`."""
        self._stop_session_timer(leg)
        if leg.state in (LegState.ANSWERED, LegState.CONFIRMED) and leg.dialog is not None:
            self.hangup(leg, reason=EndReason.SESSION_EXPIRED)

    def _session_refresh(self, leg: Leg) -> None:
        """We are the refresher: send a re-INVITE offering the SDP we last sent (RFC 4028 10; RFC 3264 8: the same
        session description, version unchanged), with Session-Expires naming us (the request's UAC) the refresher."""
        timer = leg.session_timer
        if timer is None or leg.dialog is None or leg.state is not LegState.CONFIRMED:
            return
        if (leg.refresh_txn is not None and leg.refresh_txn.state not in _CLIENT_DONE) or self._reinvite_pending(leg):
            self._set_timer((leg.timer_owner, _SESSION_REFRESH), _GLARE_RETRY)  # RFC 3261 14.1: one at a time
            return
        extra = [
            ("Session-Expires", f"{timer.interval};refresher=uac"),
            ("Min-SE", str(self.config.min_se)),
            ("Supported", TIMER),
            ("Allow", ", ".join(self.config.allowed_methods)),
        ]
        invite = leg.dialog.create_request(
            "INVITE",
            via=self._via(leg.peer),
            body=leg.local_sdp,
            content_type=ACCEPTED_BODIES if leg.local_sdp else None,
            extra=extra,
        )
        invite.headers.add("User-Agent", self.config.user_agent)
        peer = self._request_peer(leg)
        txn = ClientInviteTransaction(invite, reliable=peer.reliable, timers=self.config.timers)
        leg.refresh_txn, leg.refresh_ack = txn, None
        self._add_client(txn, peer, leg)

    def _reinvite_pending(self, leg: Leg) -> bool:
        """The peer's re-INVITE in this dialog has no final response from us yet."""
        return any(
            entry.leg is leg
            and isinstance(entry.txn, ServerInviteTransaction)
            and entry.txn is not leg.invite_txn
            and entry.txn.state is ServerInviteState.PROCEEDING
            for entry in self._server.values()
        )

    def _refresh_response(self, leg: Leg, txn: ClientInviteTransaction, response: Response) -> None:
        """A response to our refresh re-INVITE (RFC 4028 10)."""
        status = response.status
        if status < 200:
            return
        if 200 <= status < 300:
            peer = self._request_peer(leg) if leg.dialog is not None else leg.peer
            if leg.refresh_ack is not None:  # retransmitted 2xx: our ACK was lost (13.2.2.4)
                self._datagrams.append(Transmit(leg.refresh_ack, peer))
                return
            if leg.dialog is None:
                return
            ack = leg.dialog.create_ack(txn.request, via=self._via(leg.peer))
            ack.headers.add("User-Agent", self.config.user_agent)
            leg.refresh_ack = ack.to_bytes()
            self._datagrams.append(Transmit(leg.refresh_ack, peer))
            if leg.state is not LegState.CONFIRMED:
                return
            timer = uac_timer(response)
            if timer is None and not supports_timer(response):
                timer = leg.session_timer  # a peer without timers answered: we go on refreshing at our interval
            self._start_session_timer(leg, timer)
            return
        if status in (408, 481):
            self._session_expired(leg)  # RFC 4028 10: the refresh failed: BYE
        elif status == 491:
            if leg.session_timer is not None and leg.timer_owner in self._session_legs:
                self._set_timer((leg.timer_owner, _SESSION_REFRESH), _GLARE_RETRY)  # RFC 3261 14.1
        elif status == 422:
            # RFC 4028 10 (7.4): retry with the interval the peer's Min-SE asks for.
            timer, wanted = leg.session_timer, min_se_of(response)
            if timer is not None and wanted is not None and wanted > timer.interval:
                leg.session_timer = SessionTimer(wanted, timer.refresher, timer.we_refresh)
                self._set_timer((leg.timer_owner, _SESSION_REFRESH), 0.0)
        # any other failure: the session is not refreshed; its expiry timer still runs

    def _retry_with_min_se(self, leg: Leg, response: Response) -> bool:
        """RFC 4028 7.4: our INVITE got 422: send it again (same Call-ID, next CSeq) with the Session-Expires the
        response's Min-SE asks for. Once only; False when it cannot be retried."""
        wanted = min_se_of(response) if self.config.session_expires > 0 else None
        asked = session_expires_of(leg.invite)
        if wanted is None or asked is None or wanted <= asked.interval or leg.invite.cseq.number > 1:
            return False
        headers = Headers(list(leg.invite.headers))
        headers.remove("Via")
        headers.prepend("Via", str(self._via(leg.peer)))
        headers.set("CSeq", f"{leg.invite.cseq.number + 1} INVITE")
        headers.set("Session-Expires", str(SessionExpires(wanted, asked.refresher)))
        headers.set("Min-SE", str(wanted))
        invite = Request("INVITE", leg.invite.uri, headers, leg.invite.body)
        txn = ClientInviteTransaction(invite, reliable=leg.peer.reliable, timers=self.config.timers)
        leg.invite, leg.client_txn, leg.provisional = invite, txn, False
        self._add_client(txn, leg.peer, leg)
        return True

    # ---- requests ----

    def _receive_request(self, req: Request, peer: Peer) -> None:
        self._stamp_via(req, peer)
        key = server_key(req)
        if req.method == "ACK":
            self._receive_ack(req, key)
            return
        entry = self._server.get(key)
        if entry is not None:
            txn = entry.txn
            assert isinstance(txn, ServerInviteTransaction | ServerNonInviteTransaction)
            self._run(entry, txn.receive_request(req))
            return
        if req.method == "CANCEL":
            self._receive_cancel(req, peer)
            return
        entry = self._new_server_txn(req, peer)
        scheme = req.uri.partition(":")[0].lower()
        if scheme not in SUPPORTED_URI_SCHEMES:
            self._reply(entry, req, 416, reason=f"RFC 3261 8.2.2.1: Request-URI scheme {scheme!r} is not supported")
            return
        if req.method != "INVITE" and req.method not in KNOWN_METHODS:
            self._reply(entry, req, 501, extra=[("Allow", ", ".join(self.config.allowed_methods))])
            return
        unsupported = self._unsupported_extensions(req)
        if unsupported:
            self._reply(entry, req, 420, extra=[("Unsupported", ", ".join(unsupported))])
            return
        dialog_id = dialog_id_for_request(req)
        if dialog_id is not None:
            self._receive_in_dialog(entry, req, dialog_id)
            return
        if req.method == "INVITE":
            self._receive_invite(entry, req, peer)
        elif req.method == "OPTIONS":
            status = 200 if self.accepting else 503
            self._reply(entry, req, status, extra=self._capabilities())
        elif req.method == "BYE":
            self._reply(entry, req, 481, reason="RFC 3261 15.1.2: BYE outside a dialog")
        elif req.method == "INFO":
            self._reply(entry, req, 481, reason="RFC 6086 4.2.2: INFO outside a dialog")
        elif req.method == "REFER" and not self.config.transferee:
            self._reply(entry, req, 403, reason="transfers (REFER) are not accepted here")
        elif req.method == "NOTIFY":
            self._reply(entry, req, 481, reason="RFC 6665 4.1.3: no subscription matches this NOTIFY")
        else:
            self._reply(entry, req, 405, extra=[("Allow", ", ".join(self.config.allowed_methods))])

    def _receive_invite(self, entry: _TxnEntry, req: Request, peer: Peer) -> None:
        tags = (req.from_.tag or "", req.call_id, str(req.cseq))
        branch = req.top_via.branch or ""
        previous = self._recent.get(tags)
        if previous is not None and previous != branch:
            self._reply(entry, req, 482, reason="RFC 3261 8.2.2.2: merged request (same From tag, Call-ID, CSeq)")
            return
        self._recent[tags] = branch
        while len(self._recent) > _MERGE_MEMORY:
            self._recent.popitem(last=False)
        insane = dialog_contact_problem(req)
        if insane is not None:
            self._reply(entry, req, insane[0], reason=insane[1])
            return
        if not self.accepting:
            self._reply(entry, req, 503, reason="draining: not accepting new calls", extra=[("Retry-After", "5")])
            return
        verifier = self.config.auth
        vouched = self._source_trusted
        if verifier is not None and not (self.config.auth_trusted_skip and self._source_trusted):
            result = verifier.verify(req, self._wall_clock)
            vouched = vouched or result.ok
            if not result.ok:
                status = result.status or 403
                self.auth_refused += 1
                self._reply(entry, req, status, reason=result.public_reason,
                            extra=verifier.response_headers(result, self._wall_clock))  # fmt: skip
                self._events.append(AuthRefused(req, peer, status, result.detail))
                return
        content_type = req.content_type
        if req.body and content_type != ACCEPTED_BODIES:
            self._reply(
                entry,
                req,
                415,
                reason=f"body type {content_type} is not supported",
                extra=[("Accept", ACCEPTED_BODIES)],
            )
            return
        if self._session_interval_refused(entry, req):
            return
        txn = entry.txn
        assert isinstance(txn, ServerInviteTransaction)
        leg = Leg(invite=req, peer=peer, local_tag=secrets.token_hex(6), invite_txn=txn, vouched=vouched)
        entry.leg = leg
        self._legs.add(leg)
        self._events.append(IncomingCall(leg))

    def _receive_in_dialog(self, entry: _TxnEntry, req: Request, dialog_id: DialogId) -> None:
        leg = self._dialogs.get(dialog_id)
        if leg is None or leg.dialog is None:
            self._reply(entry, req, 481, reason="RFC 3261 12.2.2: no such dialog")
            return
        try:
            leg.dialog.receive_request(req)
        except SipError as exc:
            self._reply(entry, req, exc.status, reason=exc.reason)
            return
        entry.leg = leg
        if req.method == "BYE":
            self._reply(entry, req, 200)
            self._forget_dialog(leg, LegEvent.BYE_RECEIVED)
            self._end(leg, EndReason.REMOTE_BYE, None)
        elif req.method == "INVITE":
            if leg.state is LegState.ENDING or leg.state is LegState.ENDED:
                self._reply(entry, req, 481, reason="the dialog is being terminated")
                return
            if req.body and req.content_type != ACCEPTED_BODIES:
                self._reply(entry, req, 415, extra=[("Accept", ACCEPTED_BODIES)])
                return
            if leg.refresh_txn is not None and leg.refresh_txn.state not in _CLIENT_DONE:
                # RFC 3261 14.2: our own re-INVITE (a session refresh) is still pending in this dialog.
                self._reply(entry, req, 491, extra=[("Retry-After", "2")])
                return
            if self._session_interval_refused(entry, req):
                return
            self._events.append(ReInvite(leg, req))
        elif req.method == "UPDATE" and self.config.session_expires > 0:
            self._receive_update(entry, req, leg)
        elif req.method == "OPTIONS":
            self._reply(entry, req, 200, extra=self._capabilities())
        elif req.method == "INFO":
            self._receive_info(entry, req, leg)
        elif req.method == "NOTIFY":
            self._receive_notify(entry, req, leg)
        elif req.method == "REFER":
            self._receive_refer(entry, req, leg)
        else:
            self._reply(entry, req, 405, extra=[("Allow", ", ".join(self.config.allowed_methods))])

    def _receive_update(self, entry: _TxnEntry, req: Request, leg: Leg) -> None:
        """UPDATE in a confirmed dialog (RFC 3311): without a body a session refresh (RFC 4028 10), answered here;
        with an SDP offer it reaches the application as a :class:`ReInvite` would (its 2xx is the answer)."""
        if leg.state is not LegState.CONFIRMED:
            self._reply(entry, req, 481 if leg.state in (LegState.ENDING, LegState.ENDED) else 491)
            return
        if req.body and req.content_type != ACCEPTED_BODIES:
            self._reply(entry, req, 415, extra=[("Accept", ACCEPTED_BODIES)])
            return
        if self._session_interval_refused(entry, req):
            return
        entry.leg = leg
        if req.body:
            self._events.append(ReInvite(leg, req))
            return
        self.respond(leg, 200, request=req)

    def _receive_notify(self, entry: _TxnEntry, req: Request, leg: Leg) -> None:
        """A NOTIFY of the implicit subscription of our REFER (RFC 3515 2.4.4): answered 200, reported."""
        package, _event_id = parse_event(req.headers.get("Event"))
        transfer = leg.transfer
        if package != REFER_EVENT or transfer is None or transfer.subscription_ended:
            self._reply(entry, req, 481, reason="RFC 6665 4.1.3: no subscription matches this NOTIFY")
            return
        content_type = (req.content_type or "").split(";")[0].strip().lower()
        if content_type != "message/sipfrag":
            self._reply(entry, req, 415, extra=[("Accept", "message/sipfrag")])
            return
        try:
            status, reason = parse_sipfrag(req.body)
        except SipError as exc:
            self._reply(entry, req, 400, reason=exc.reason)
            return
        state = parse_subscription_state(req.headers.get("Subscription-State"))
        self._reply(entry, req, 200)
        if state.terminated:
            transfer.subscription_ended = True
            if leg.transfer is transfer:
                leg.transfer = None
        if transfer.done:
            return
        final = status >= 200 or state.terminated
        if final:
            transfer.result = status if status >= 200 else 487
            transfer.reason = reason if status >= 200 else f"subscription ended ({state.reason or 'no reason'})"
        self._events.append(
            TransferProgress(leg, transfer, transfer.result or status, transfer.reason or reason, "notify", final)
        )

    def _receive_refer(self, entry: _TxnEntry, req: Request, leg: Leg) -> None:
        """A REFER in a dialog (RFC 3515 2.4.2): a transferee reports it; anyone else refuses it (403)."""
        if not self.config.transferee:
            self._reply(entry, req, 403, reason="transfers (REFER) are not accepted here")
            return
        values = req.headers.values("Refer-To")
        if len(values) != 1:
            self._reply(entry, req, 400, reason="RFC 3515 2.4.1: a REFER carries exactly one Refer-To")
            return
        try:
            parse_refer_to(values[0])
        except SipError as exc:
            self._reply(entry, req, 400, reason=exc.reason)
            return
        if leg.state is not LegState.CONFIRMED:
            self._reply(entry, req, 481, reason="the call is not established")
            return
        entry.leg = leg
        leg.refers[req.cseq.number] = "pending"
        self._events.append(ReferReceived(leg, values[0], req.headers.get("Referred-By"), req))

    def _receive_info(self, entry: _TxnEntry, req: Request, leg: Leg) -> None:
        """DTMF by SIP INFO (application/dtmf-relay, application/dtmf); an empty INFO is a keep-alive."""
        try:
            digit = parse_dtmf_info(req.content_type, req.body)
        except SipError as exc:
            extra = [("Accept", ", ".join(ACCEPTED_INFO_BODIES))] if exc.status == 415 else []
            self._reply(entry, req, exc.status, reason=exc.reason, extra=extra)
            return
        self._reply(entry, req, 200)
        if digit is not None and leg.state is LegState.CONFIRMED:
            self._events.append(DigitInfo(leg, digit.key, digit.duration_ms))

    def _receive_ack(self, req: Request, key: TransactionKey) -> None:
        entry = self._server.get(key)
        txn = entry.txn if entry is not None else None
        if entry is not None and isinstance(txn, ServerInviteTransaction) and txn.state is not _ACCEPTED:
            self._run(entry, txn.receive_request(req))  # ACK for a non-2xx final: same transaction (17.2.1)
            return
        # An ACK for a 2xx is matched by its dialog (13.3.1.4), even one that reuses the INVITE's branch (RFC 2543
        # peers; RFC 6026 7.1 hands it to the TU): fed to the transaction, the ACK stopped the 2xx retransmissions
        # and timer L's ACK timeout but was then dropped, leaving the call answered and never confirmed, for good.
        dialog_id = dialog_id_for_request(req)
        leg = self._dialogs.get(dialog_id) if dialog_id is not None else None
        if leg is None:
            return  # stray ACK: dropped, never answered
        if leg.state is LegState.ANSWERED and leg.invite_txn is not None and leg.invite.cseq.number == req.cseq.number:
            leg.advance(LegEvent.ACK_RECEIVED)
            inv_entry = self._server.get(leg.invite_txn.key)
            if inv_entry is not None:
                self._run(inv_entry, leg.invite_txn.receive_ack_for_2xx())
            if leg.bye_pending:
                self._send_bye(leg)
                self._end(leg, leg.end_reason_wanted, None)
            else:
                self._events.append(CallConfirmed(leg, req.body))
            return
        # ACK for a re-INVITE's 2xx: find that transaction by CSeq and stop its retransmissions. Only one that sent
        # a 2xx (Accepted): an ACK with the CSeq of a re-INVITE refused or not answered yet matches nothing.
        for candidate in list(self._server.values()):
            txn = candidate.txn
            if (
                candidate.leg is leg
                and isinstance(txn, ServerInviteTransaction)
                and txn.state is _ACCEPTED
                and txn.request.cseq.number == req.cseq.number
                and txn is not leg.invite_txn
            ):
                self._run(candidate, txn.receive_ack_for_2xx())

    def _receive_cancel(self, req: Request, peer: Peer) -> None:
        entry = self._new_server_txn(req, peer)
        invite_key = server_key(_as_invite_key_probe(req))
        invite_entry = self._server.get(invite_key)
        if invite_entry is None or invite_entry.leg is None:
            self._reply(entry, req, 481, reason="RFC 3261 9.2: no INVITE transaction matches this CANCEL")
            return
        self._reply(entry, req, 200)
        leg = invite_entry.leg
        if leg.state is LegState.INCOMING:
            response = self._response(leg.invite, 487, to_tag=leg.local_tag)
            txn = invite_entry.txn
            assert isinstance(txn, ServerInviteTransaction)
            self._run(invite_entry, txn.send_response(response))
            self._end_unanswered(leg, EndReason.CANCELLED, 487)

    # ---- responses ----

    def _receive_response(self, resp: Response, peer: Peer) -> None:
        try:
            key = transaction_client_key(resp)
        except SipError:
            return
        entry = self._client.get(key)
        if entry is None:
            return  # stray (a retransmitted 200 for a BYE already completed ...): dropped (17.1.3, 18.1.2)
        txn = entry.txn
        assert isinstance(txn, ClientInviteTransaction | ClientNonInviteTransaction)
        self._run(entry, txn.receive_response(resp))

    # ---- internals ----

    def _entry_timer(self, entry_id: int, armed: set[str], action: SetTimer[str] | ClearTimer[str]) -> None:
        """A transaction's or a registration's timer action, kept in the endpoint's heap under (entry, name)."""
        if isinstance(action, SetTimer):
            armed.add(action.token)
            self._set_timer((entry_id, action.token), action.delay)
        elif action.token in armed:
            armed.discard(action.token)
            self._clear_timer((entry_id, action.token))

    def _run(self, entry: _TxnEntry, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._datagrams.append(Transmit(action.message.to_bytes(), entry.peer))
            elif isinstance(action, SetTimer | ClearTimer):
                self._entry_timer(entry.id, entry.timers, action)
            elif isinstance(action, Deliver):
                self._deliver(entry, action.message)
            elif isinstance(action, TimedOut):
                self._timed_out(entry, action)
            elif isinstance(action, TransportFailure):
                reg = self._registration_of(entry)
                if reg is not None:
                    self._run_registration(reg, reg.registration.transport_failed(action.reason))
                leg = entry.leg
                if leg is not None and entry.txn is leg.refresh_txn and leg.refresh_ack is None:
                    self._session_expired(leg)  # RFC 4028 10: the refresh failed (17.1.4: as 408)
            elif isinstance(action, Terminated):
                self._drop_entry(entry)

    def _set_timer(self, token: EndpointTimer, delay: float) -> None:
        """Ask for timer ``token`` after ``delay`` seconds (replacing it if set); it gets its deadline, and its
        place among equal deadlines, at the next :meth:`datagrams_to_send`."""
        self._timer_serials.pop(token, None)
        self._timer_delays.pop(token, None)
        self._timer_delays[token] = delay

    def _clear_timer(self, token: EndpointTimer) -> None:
        self._timer_serials.pop(token, None)
        self._timer_delays.pop(token, None)

    def _deliver(self, entry: _TxnEntry, message: Message) -> None:
        if not isinstance(message, Response):
            return
        if entry.registration is not None:
            reg = self._registration_of(entry)
            if reg is not None:
                self._run_registration(reg, reg.registration.receive_response(message))
            return
        if entry.leg is None:
            return
        leg = entry.leg
        if message.cseq.method == "BYE" and message.status >= 200:
            self._forget_dialog(leg, LegEvent.BYE_DONE)
        elif message.cseq.method == "REFER" and message.status >= 200:
            self._refer_response(leg, entry, message)
        elif isinstance(entry.txn, ClientInviteTransaction) and entry.txn is leg.client_txn:
            self._invite_response(leg, message)
        elif isinstance(entry.txn, ClientInviteTransaction) and entry.txn is leg.refresh_txn:
            self._refresh_response(leg, entry.txn, message)

    def _refer_response(self, leg: Leg, entry: _TxnEntry, response: Response) -> None:
        transfer = leg.transfer
        if transfer is None or transfer.refer is not entry.txn.request or transfer.done:
            return
        if response.status < 300:
            transfer.accepted = True
            self._events.append(TransferProgress(leg, transfer, response.status, response.reason, "refer", False))
            return
        transfer.result, transfer.reason = response.status, response.reason
        transfer.subscription_ended = True
        leg.transfer = None
        self._events.append(TransferProgress(leg, transfer, response.status, response.reason, "refer", True))

    def _invite_response(self, leg: Leg, response: Response) -> None:
        """A response to an INVITE we sent (the transaction already ACKed a non-2xx itself, 17.1.1.3)."""
        status = response.status
        if status < 200:
            if status > 100:
                leg.provisional = True
                if leg.cancel_pending:
                    self._send_cancel(leg)
                    return
                self._events.append(CallProgress(leg, response))
            else:
                leg.provisional = True
                if leg.cancel_pending:
                    self._send_cancel(leg)
            return
        if status >= 300:
            if status == 422 and not leg.cancel_requested and self._retry_with_min_se(leg, response):
                return
            reason = EndReason.CANCELLED if status == 487 else EndReason.FAILED
            self._end_unanswered(leg, reason, status)
            return
        if leg.ack is not None:  # a retransmitted 2xx: our ACK was lost, send it again
            self._datagrams.append(Transmit(leg.ack, self._request_peer(leg)))
            return
        try:
            dialog = Dialog.from_uac(leg.invite, response)
        except SipError:
            return  # a 2xx without a To tag or Contact cannot make a dialog; the callee will time out
        leg.dialog = dialog
        self._dialogs[dialog.id] = leg
        ack = dialog.create_ack(leg.invite, via=self._via(leg.peer))
        ack.headers.add("User-Agent", self.config.user_agent)
        leg.ack = ack.to_bytes()
        leg.answer = response
        self._datagrams.append(Transmit(leg.ack, self._request_peer(leg)))
        leg.advance(LegEvent.ANSWER_RECEIVED)
        if leg.cancel_requested:
            # 2xx raced our CANCEL (9.1): the call was answered anyway; end it with a BYE.
            self._send_bye(leg)
            return
        self._events.append(CallAnswered(leg, response))
        if self.config.session_expires > 0:
            self._start_session_timer(leg, uac_timer(response))  # RFC 4028 7.2: as the 2xx says

    def _send_cancel(self, leg: Leg) -> None:
        assert leg.client_txn is not None
        leg.cancel_pending = False
        cancel = make_cancel(leg.invite)
        cancel.headers.add("User-Agent", self.config.user_agent)
        self._add_client(
            ClientNonInviteTransaction(cancel, reliable=leg.peer.reliable, timers=self.config.timers), leg.peer, None
        )
        entry = self._client.get(leg.client_txn.key)
        if entry is not None:
            self._run(entry, leg.client_txn.cancel_sent())

    def _add_client(
        self,
        txn: ClientInviteTransaction | ClientNonInviteTransaction,
        peer: Peer,
        leg: Leg | None,
        *,
        registration: _RegEntry | None = None,
    ) -> _TxnEntry:
        entry = _TxnEntry(next(self._ids), txn, peer, leg=leg, registration=registration)
        self._client[txn.key] = entry
        self._by_id[entry.id] = entry
        self._run(entry, txn.start())
        return entry

    def _via(self, peer: Peer) -> Via:
        transport = "UDP" if peer.transport == "udp" else peer.transport.upper()
        return Via(transport, self.config.host, self.config.port, {"branch": new_branch(), "rport": None})

    def _timed_out(self, entry: _TxnEntry, action: TimedOut) -> None:
        if entry.registration is not None:
            reg = self._registration_of(entry)
            if reg is not None:
                self._run_registration(reg, reg.registration.timed_out(action.reason))
            return
        leg = entry.leg
        if leg is None:
            return
        if isinstance(entry.txn, ServerInviteTransaction) and entry.txn is leg.invite_txn:
            if leg.state is LegState.ANSWERED:
                # 13.3.1.4: no ACK for our 2xx within 64*T1: the session is torn down with a BYE.
                self._send_bye(leg)
                self._end(leg, EndReason.ACK_TIMEOUT, None)
        elif isinstance(entry.txn, ClientInviteTransaction) and entry.txn is leg.client_txn:
            if leg.state is LegState.INCOMING:
                self._end_unanswered(leg, EndReason.TIMEOUT, 408)  # timer B: no final response (17.1.1.2)
        elif isinstance(entry.txn, ClientInviteTransaction) and entry.txn is leg.refresh_txn:
            if action.timer == "B" and leg.refresh_ack is None:  # RFC 4028 10: our refresh got no answer
                self._session_expired(leg)
        elif isinstance(entry.txn, ClientNonInviteTransaction) and entry.txn.request.method == "REFER":
            transfer = leg.transfer
            if transfer is not None and transfer.refer is entry.txn.request and not transfer.done:
                transfer.result, transfer.reason = 408, "no answer to the REFER"
                transfer.subscription_ended = True
                leg.transfer = None
                self._events.append(TransferProgress(leg, transfer, 408, transfer.reason, "timeout", True))
        elif isinstance(entry.txn, ClientNonInviteTransaction) and entry.txn.request.method == "BYE":
            # BYE got no final response: the dialog is gone for us all the same (15.1.1).
            self._forget_dialog(leg, LegEvent.BYE_DONE)

    def _drop_entry(self, entry: _TxnEntry) -> None:
        for name in entry.timers:
            self._clear_timer((entry.id, name))
        entry.timers.clear()
        self._by_id.pop(entry.id, None)
        key = entry.txn.key
        if self._server.get(key) is entry:
            del self._server[key]
        if self._client.get(key) is entry:
            del self._client[key]
        if entry.registration is not None and entry.registration.txn is entry:
            entry.registration.txn = None

    def _new_server_txn(self, req: Request, peer: Peer) -> _TxnEntry:
        txn: ServerInviteTransaction | ServerNonInviteTransaction
        if req.method == "INVITE":
            txn = ServerInviteTransaction(req, reliable=peer.reliable, timers=self.config.timers)
        else:
            txn = ServerNonInviteTransaction(req, reliable=peer.reliable, timers=self.config.timers)
        entry = _TxnEntry(next(self._ids), txn, self._response_peer(req, peer))
        self._server[txn.key] = entry
        self._by_id[entry.id] = entry
        self._run(entry, txn.start())
        return entry

    def _server_entry_for(self, leg: Leg) -> _TxnEntry:
        assert leg.invite_txn is not None
        entry = self._server.get(leg.invite_txn.key)
        if entry is None:
            raise SipError(f"the INVITE transaction of leg {leg.id} is gone")
        return entry

    def _reply(
        self,
        entry: _TxnEntry,
        req: Request,
        status: int,
        *,
        reason: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        headers = list(extra or [])
        if reason:
            headers.append(warning_header(reason))
        to_tag = secrets.token_hex(6) if req.to.tag is None else None
        response = self._response(req, status, to_tag=to_tag, extra=headers)
        txn = entry.txn
        assert isinstance(txn, ServerInviteTransaction | ServerNonInviteTransaction)
        self._run(entry, txn.send_response(response))

    def _response(
        self,
        req: Request,
        status: int,
        *,
        to_tag: str | None,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        response = make_response(req, status, to_tag=to_tag, extra=extra, body=body, content_type=content_type)
        response.headers.add("Server", self.config.user_agent)
        return response

    def _answer_unparseable(self, req: Request, exc: SipError, peer: Peer) -> None:
        """Statelessly answer a request that failed to parse, when its routing headers are usable (8.2, 18.2.2)."""
        try:
            self._stamp_via(req, peer)
            dest = self._response_peer(req, peer)
        except SipError:
            dest = peer  # the top Via itself is malformed (RFC 4475 badinv01): answer the packet's source
        try:
            response = self._response(req, exc.status, to_tag=secrets.token_hex(6), extra=[warning_header(exc.reason)])
            data = response.to_bytes()
        except (SipError, ValueError):
            return  # not even enough to build a response from: dropped
        self._datagrams.append(Transmit(data, dest))

    def _stamp_via(self, req: Request, peer: Peer) -> None:
        """RFC 3261 18.2.1 received= and RFC 3581 rport= on the top Via, so responses find their way back."""
        values = req.headers.values("Via")
        if not values:
            raise SipParseError("missing Via")
        via = Via.parse(values[0])
        changed = False
        if via.host.strip("[]") != peer.host:
            via.params["received"] = peer.host
            changed = True
        if "rport" in via.params and via.params["rport"] is None:
            via.params["rport"] = str(peer.port)
            via.params["received"] = peer.host
            changed = True
        if changed:
            rest = values[1:]
            req.headers.remove("Via")
            req.headers.add("Via", str(via))
            for value in rest:
                req.headers.add("Via", value)
            # keep Via first-in-order relative to other headers is not required (7.3.1): only Via order matters.

    def _response_peer(self, req: Request, peer: Peer) -> Peer:
        """18.2.2: responses go back over the connection the request came on; over UDP to received/rport or sent-by.

        A request from a source not in ``config.trusted`` is answered where it came from, address and port, as if it
        had asked with rport (RFC 3581; Kamailio's force_rport, Asterisk's default): the port a Via names is the
        sender's to choose, and a response must not become a datagram aimed wherever a forged request said."""
        if peer.reliable:
            return peer
        via = req.top_via
        if via.params.get("rport") or not self._source_trusted:
            return Peer(peer.host, peer.port, "udp")
        host = via.params.get("received") or via.host.strip("[]")
        return Peer(host, via.port or 5060, "udp")

    def _unsupported_extensions(self, req: Request) -> list[str]:
        if req.method in ("ACK", "CANCEL"):
            return []
        supported = self.config.extensions
        return [opt for opt in req.headers.values("Require") if opt.lower() not in supported]

    def _capabilities(self) -> list[tuple[str, str]]:
        return [
            ("Allow", ", ".join(self.config.allowed_methods)),
            ("Accept", ACCEPTED_BODIES),
            ("Accept-Encoding", "identity"),
            ("Accept-Language", "en, bg"),
            ("Supported", ", ".join(self.config.extensions)),
        ]

    def _contact(self, peer: Peer) -> str:
        transport = "" if peer.transport == "udp" else f";transport={peer.transport}"
        return f"<sip:ivr@{self.config.host}:{self.config.port}{transport}>"

    def _add_contact(self, response: Response, peer: Peer) -> None:
        response.headers.set("Contact", self._contact(peer))
        response.headers.set("Allow", ", ".join(self.config.allowed_methods))
        response.headers.set("Supported", ", ".join(self.config.extensions))

    def _send_bye(self, leg: Leg) -> None:
        assert leg.dialog is not None
        bye = leg.dialog.create_request("BYE", via=self._via(leg.peer))
        bye.headers.add("User-Agent", self.config.user_agent)
        peer = self._request_peer(leg)
        leg.advance(LegEvent.BYE_SENT)
        self._add_client(ClientNonInviteTransaction(bye, reliable=peer.reliable, timers=self.config.timers), peer, leg)

    def _request_peer(self, leg: Leg) -> Peer:
        """Where an in-dialog request goes: the same stream connection when the call came over one, else the next hop
        of the dialog (first Route entry or remote target, 12.2.1.1).

        A caller that is neither from a trusted source nor digest-authenticated gets our requests where its INVITE
        came from (symmetric signalling, as Kamailio's NAT handling and Asterisk's force_rport do): otherwise a
        Contact naming another host would have the daemon resolve names or open TCP connections to ports the
        sender chose, on behalf of a request nobody vouched for."""
        if leg.peer.reliable or (not leg.outgoing and not leg.vouched):
            return leg.peer
        assert leg.dialog is not None
        hop = leg.dialog.next_hop()
        if isinstance(hop, SipURI):
            host, port = hop.host_port(5061 if hop.scheme == "sips" else 5060)
            if hop.transport != "udp":
                return Peer(host, port, hop.transport)
            return Peer(host, port, "udp")
        return leg.peer

    def _end(self, leg: Leg, reason: EndReason, status: int | None) -> None:
        """Tell the application the call is over (:class:`CallEnded`), once. The caller has already moved the leg: to
        ENDED, or to ENDING by the BYE it sent (the dialog is kept until that BYE is answered or times out)."""
        self._stop_session_timer(leg)
        if leg.end_reason is not None:
            return
        leg.end_reason = reason
        self._legs.discard(leg)
        self._events.append(CallEnded(leg, reason, status))

    def _end_unanswered(self, leg: Leg, reason: EndReason, status: int | None) -> None:
        """The INVITE ended without a 2xx: we rejected it, it was cancelled, or ours failed or timed out."""
        self._forget_dialog(leg, LegEvent.NOT_ANSWERED)
        self._end(leg, reason, status)

    def _forget_dialog(self, leg: Leg, event: LegEvent) -> None:
        """The dialog is over (``event`` moves the leg to ENDED): in-dialog requests for it now get 481."""
        if leg.dialog is not None:
            self._dialogs.pop(leg.dialog.id, None)
        self._stop_session_timer(leg)
        leg.advance(event)

    def shutdown(self) -> None:
        """Stop accepting calls and hang up every leg (BYE when answered, 480 when still ringing)."""
        self.accepting = False
        for leg in list(self._legs):
            self.hangup(leg, reason=EndReason.SHUTDOWN)

    @property
    def busy(self) -> bool:
        """True while dialogs or client transactions of calls are still running (a clean shutdown waits for this to
        clear; a REGISTER is not waited for here: :meth:`unregister` has its own answer)."""
        return bool(self._dialogs) or any(
            entry.txn.state not in _CLIENT_DONE and entry.registration is None for entry in self._client.values()
        )


def _as_invite_key_probe(cancel: Request) -> Request:
    """A request with the CANCEL's Via, Call-ID, tags and Request-URI but method INVITE, to look up the INVITE's
    server transaction (RFC 3261 9.2: the CANCEL matches the INVITE it cancels by the same keys)."""
    headers = Headers(list(cancel.headers))
    number = cancel.cseq.number
    headers.set("CSeq", f"{number} INVITE")
    return Request("INVITE", cancel.uri, headers, cancel.body)


__all__ = [
    "AuthRefused",
    "CallAnswered",
    "CallConfirmed",
    "CallEnded",
    "CallEvent",
    "CallProgress",
    "ClearTimer",
    "DigitInfo",
    "EndReason",
    "EndpointConfig",
    "EndpointEvent",
    "IncomingCall",
    "Leg",
    "LegState",
    "NameAddr",
    "Output",
    "Peer",
    "ReInvite",
    "ReferReceived",
    "Registered",
    "Registration",
    "RegistrationConfig",
    "RegistrationEvent",
    "RegistrationFailed",
    "SetTimer",
    "SipEndpoint",
    "Transfer",
    "TransferProgress",
    "Transmit",
    "Unregistered",
    "dialog_contact_problem",
]
