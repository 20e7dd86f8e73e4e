"""REGISTER client for one binding (RFC 3261 section 10.2), sans-I/O, with digest auth and refresh.

A :class:`Registration` keeps one Contact of ours registered at an upstream registrar: the IVR as a registered endpoint
of a PBX or a trunk. It is driven like the transactions are: inputs are method calls (:meth:`~Registration.start`,
:meth:`~Registration.receive_response`, :meth:`~Registration.timer_fired`, :meth:`~Registration.transport_error`,
:meth:`~Registration.stop`) and each returns a list of outputs for the driver:

* :class:`SendRequest` - put ``data`` on the wire to ``host:port`` over ``transport``;
* :class:`~ivr.sip.events.SetTimer` / :class:`~ivr.sip.events.ClearTimer` (the timer pair of all of ``ivr.sip``)
  - (re)arm or disarm the timer ``token`` (a string); when it expires the driver calls ``timer_fired(token)``;
* :class:`Registered`, :class:`RegistrationFailed`, :class:`Unregistered` - state changes for logs, metrics and health.

Every REGISTER runs in a :class:`~ivr.sip.transaction.ClientNonInviteTransaction` (timer E retransmits over UDP, timer
F gives up after 64*T1); its timers reach the driver as tokens ``"txn<serial>:E"`` / ``"txn<serial>:F"``, and a token
of an earlier transaction is ignored. Timer K is not armed: once a final response has arrived the transaction only
absorbs retransmissions of it, which it keeps doing until the next REGISTER replaces it.

Rules (RFC 3261 10.2 unless said): one Call-ID and From tag for the life of the object, CSeq +1 on every REGISTER, a
fresh Via branch each time. A 2xx grants the expiry in our Contact's ``expires`` parameter, else in ``Expires``, else
the one we asked for; the refresh is sent ``max(expires / 2, expires - refresh_margin)`` seconds later, with the
last challenge's credentials sent pre-emptively (next nc). A 401/407 is answered with credentials once per new nonce:
a second challenge carrying a nonce we already answered (and not ``stale=true``) means the credentials were refused.
A 423 raises the requested expiry to ``Min-Expires`` and retries at once (10.2.8). Any other failure, a timeout (408)
or a transport error (503) is reported and retried after an exponential backoff with jitter (RFC 5626 section 4.5:
``min(retry_max, retry_base * 2**failures)``, then a random 50-100 % of it from the injected ``rng``), never before
a ``Retry-After``. :meth:`~Registration.stop` removes the binding (our Contact with ``expires=0``; never ``*``, which
would remove the bindings of other nodes sharing the AOR).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ivr.sip.auth import AuthError, DigestClient, authorization_nonces
from ivr.sip.errors import SipError
from ivr.sip.events import ClearTimer, SetTimer
from ivr.sip.headers import Headers, Via
from ivr.sip.message import Request, Response
from ivr.sip.transaction import (
    DEFAULT_TIMERS,
    Action,
    ClientNonInviteTransaction,
    Deliver,
    Send,
    Terminated,
    TimedOut,
    TimerValues,
    TransportFailure,
    client_key,
    new_branch,
)
from ivr.sip.uri import NameAddr, SipURI, is_digits, parse_uri

REFRESH_TIMER = "refresh"
RETRY_TIMER = "retry"


# ---- configuration ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrationConfig:
    """One binding: register ``contact`` for ``aor`` at ``registrar``.

    ``registrar`` is the Request-URI (``sip:pbx.example.com``); requests go to ``destination`` (an outbound proxy)
    when given, else to the registrar URI's host and port. ``local_host``/``local_port`` go into Via.
    """

    registrar: str
    aor: str
    contact: str
    local_host: str
    local_port: int
    transport: str = "udp"
    destination: tuple[str, int] | None = None
    expires: int = 3600
    username: str | None = None
    password: str | None = None
    display_name: str | None = None
    user_agent: str = "ivr"
    refresh_margin: float = 60.0
    min_refresh: float = 1.0
    retry_base: float = 30.0
    retry_max: float = 1800.0
    max_auth_rounds: int = 3
    timers: TimerValues = DEFAULT_TIMERS

    def __post_init__(self) -> None:
        uri = parse_uri(self.registrar)
        if not isinstance(uri, SipURI):
            raise ValueError(f"the registrar must be a sip: or sips: URI, got {self.registrar!r}")
        for name, value in (("aor", self.aor), ("contact", self.contact)):
            if not isinstance(parse_uri(value), SipURI):
                raise ValueError(f"{name} must be a sip: or sips: URI, got {value!r}")
        if self.expires < 1:
            raise ValueError("expires must be at least 1 second (stop() removes the binding)")
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        if not 0 < self.retry_base <= self.retry_max:
            raise ValueError("retry_base must be positive and not above retry_max")

    @property
    def next_hop(self) -> tuple[str, int]:
        if self.destination is not None:
            return self.destination
        uri = parse_uri(self.registrar)
        assert isinstance(uri, SipURI)
        return uri.host_port(5061 if uri.scheme == "sips" else 5060)


# ---- outputs ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendRequest:
    """Send ``data`` (the serialised ``request``) to ``host:port`` over ``transport``."""

    request: Request
    data: bytes
    host: str
    port: int
    transport: str


@dataclass(frozen=True)
class Registered:
    """The registrar accepted the binding for ``expires`` seconds; a refresh is due in ``refresh_in`` seconds."""

    expires: int
    refresh_in: float


@dataclass(frozen=True)
class RegistrationFailed:
    """A REGISTER failed (``status`` 408 for no response, 503 for a transport error); ``retry_in`` seconds until the
    next attempt. A failed refresh ends the ``registered`` state even though the registrar may still hold the
    binding until its old expiry."""

    status: int
    reason: str
    retry_in: float


@dataclass(frozen=True)
class Unregistered:
    """:meth:`Registration.stop` is done: ``status`` of the expires=0 REGISTER (``None`` when none was needed)."""

    status: int | None
    reason: str


RegistrationOutput = SendRequest | SetTimer[str] | ClearTimer[str] | Registered | RegistrationFailed | Unregistered


class RegistrationState(StrEnum):
    IDLE = "idle"  # not started
    REGISTERING = "registering"  # a REGISTER is out, no binding known
    REGISTERED = "registered"  # binding accepted, refresh timer armed
    REFRESHING = "refreshing"  # binding accepted, refresh REGISTER out
    RETRY_WAIT = "retry_wait"  # the last attempt failed; retry timer armed
    UNREGISTERING = "unregistering"  # expires=0 REGISTER out
    STOPPED = "stopped"


_S = RegistrationState
# The states each input is accepted in (anything else is absorbed: a late timer, a response after stop()).
_SENDING = frozenset((_S.REGISTERING, _S.REFRESHING, _S.UNREGISTERING))


# ---- the machine --------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Attempt:
    """One logical REGISTER (first try plus its auth / 423 retries): what it asked and which nonces it answered."""

    expires: int
    answered: set[str] = field(default_factory=set)
    auth_rounds: int = 0


class Registration:
    def __init__(
        self,
        config: RegistrationConfig,
        *,
        rng: Callable[[], float] = random.random,
        client: DigestClient | None = None,
    ) -> None:
        self.config = config
        self.state = RegistrationState.IDLE
        self.call_id = f"{secrets.token_hex(10)}@{config.local_host}"
        self.from_tag = secrets.token_hex(6)
        self.cseq = 0
        self.expires: int | None = None  # the granted expiry while registered
        self.failures = 0  # consecutive failed attempts
        self.last_status: int | None = None
        self._rng = rng
        self._requested = config.expires
        self._client = client
        if client is None and config.username is not None and config.password is not None:
            self._client = DigestClient(config.username, config.password)
        self._txn: ClientNonInviteTransaction | None = None
        self._serial = 0
        self._txn_timers: set[str] = set()
        self._timers: set[str] = set()
        self._attempt = _Attempt(config.expires)
        self._sent_any = False

    # ---- inputs ---------------------------------------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        return self.state in (RegistrationState.REGISTERED, RegistrationState.REFRESHING)

    def start(self) -> list[RegistrationOutput]:
        """Send the first REGISTER (again after :meth:`stop`)."""
        if self.state not in (RegistrationState.IDLE, RegistrationState.STOPPED):
            raise SipError(f"registration already {self.state.value}", status=500)
        self.state = RegistrationState.REGISTERING
        self.failures = 0
        return self._new_attempt(self._requested)

    def stop(self) -> list[RegistrationOutput]:
        """Remove the binding: REGISTER with our Contact and expires=0; :class:`Unregistered` follows its answer.
        Without any REGISTER sent since start there is nothing to remove and :class:`Unregistered` comes at once."""
        if self.state in (RegistrationState.IDLE, RegistrationState.STOPPED, RegistrationState.UNREGISTERING):
            return []
        out = self._disarm(REFRESH_TIMER, RETRY_TIMER) + self._abandon_txn()
        self.expires = None
        if not self._sent_any:
            self.state = RegistrationState.STOPPED
            return [*out, Unregistered(None, "no REGISTER was sent")]
        self.state = RegistrationState.UNREGISTERING
        return out + self._new_attempt(0)

    def matches(self, response: Response) -> bool:
        """Whether ``response`` answers our REGISTER in progress (same branch and method, RFC 3261 17.1.3)."""
        if self._txn is None:
            return False
        try:
            return client_key(response) == self._txn.key
        except SipError:
            return False

    def receive_response(self, response: Response) -> list[RegistrationOutput]:
        """A response the driver received; ignored (empty list) unless :meth:`matches` is true."""
        if not self.matches(response):
            return []
        assert self._txn is not None
        return self._run(self._txn.receive_response(response))

    def timer_fired(self, token: str) -> list[RegistrationOutput]:
        if token in (REFRESH_TIMER, RETRY_TIMER):
            if token not in self._timers:
                return []
            self._timers.discard(token)
            if token == REFRESH_TIMER and self.state is RegistrationState.REGISTERED:
                self.state = RegistrationState.REFRESHING
                return self._new_attempt(self._requested)
            if token == RETRY_TIMER and self.state is RegistrationState.RETRY_WAIT:
                self.state = RegistrationState.REGISTERING
                return self._new_attempt(self._requested)
            return []
        serial, _, name = token.partition(":")
        if self._txn is None or serial != f"txn{self._serial}" or token not in self._txn_timers:
            return []  # a timer of a transaction we replaced or abandoned
        self._txn_timers.discard(token)
        return self._run(self._txn.timer_fired(name))

    def transport_error(self, reason: str = "transport error") -> list[RegistrationOutput]:
        """The transport could not send the REGISTER (ICMP unreachable, TCP connect refused)."""
        if self._txn is None:
            return []
        return self._run(self._txn.transport_error(reason))

    # ---- building and sending -------------------------------------------------------------------------------------

    def _new_attempt(self, expires: int) -> list[RegistrationOutput]:
        self._attempt = _Attempt(expires)
        request = self._build(expires)
        if self._client is not None:
            for auth in self._client.preemptive(request):
                request.headers.add(auth.name, auth.value)
                self._attempt.answered.add(auth.challenge.nonce)
        return self._send(request)

    def _build(self, expires: int) -> Request:
        config = self.config
        self.cseq += 1
        transport = "UDP" if config.transport.lower() == "udp" else config.transport.upper()
        via = Via(transport, config.local_host, config.local_port, {"branch": new_branch(), "rport": None})
        aor = NameAddr.parse(f"<{config.aor}>")
        aor.display = config.display_name
        sender = NameAddr.parse(f"<{config.aor}>")
        sender.display = config.display_name
        sender.params["tag"] = self.from_tag
        headers = Headers()
        headers.add("Via", str(via))
        headers.add("Max-Forwards", "70")
        headers.add("From", str(sender))
        headers.add("To", str(aor))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.cseq} REGISTER")
        headers.add("Contact", f"<{config.contact}>;expires={expires}")
        headers.add("Expires", str(expires))
        headers.add("User-Agent", config.user_agent)
        return Request("REGISTER", config.registrar, headers)

    def _send(self, request: Request) -> list[RegistrationOutput]:
        out = self._abandon_txn()
        self._sent_any = True
        self._serial += 1
        reliable = self.config.transport.lower() != "udp"
        self._txn = ClientNonInviteTransaction(request, reliable=reliable, timers=self.config.timers)
        return out + self._run(self._txn.start())

    def _abandon_txn(self) -> list[RegistrationOutput]:
        out: list[RegistrationOutput] = [ClearTimer(token) for token in sorted(self._txn_timers)]
        self._txn_timers.clear()
        self._txn = None
        return out

    def _run(self, actions: Sequence[Action]) -> list[RegistrationOutput]:
        txn = self._txn
        assert txn is not None
        prefix = f"txn{self._serial}:"
        out: list[RegistrationOutput] = []
        host, port = self.config.next_hop
        for action in actions:
            if isinstance(action, Send):
                message = action.message
                assert isinstance(message, Request)
                out.append(SendRequest(message, message.to_bytes(), host, port, self.config.transport.lower()))
            elif isinstance(action, SetTimer):
                if action.token == "K":
                    continue  # see the module docstring: the completed transaction stays until replaced
                self._txn_timers.add(prefix + action.token)
                out.append(SetTimer(prefix + action.token, action.delay))
            elif isinstance(action, ClearTimer):
                if prefix + action.token in self._txn_timers:
                    self._txn_timers.discard(prefix + action.token)
                    out.append(ClearTimer(prefix + action.token))
            elif isinstance(action, Deliver):
                message = action.message
                if isinstance(message, Response) and message.status >= 200 and self._txn is txn:
                    out += self._final(txn.request, message)
            elif isinstance(action, TimedOut):
                out += self._failed(408, f"no response from the registrar ({action.reason})")
            elif isinstance(action, TransportFailure):
                out += self._failed(503, f"transport failure: {action.reason}")
            elif isinstance(action, Terminated) and self._txn is txn:
                self._txn_timers.clear()
                self._txn = None
        return out

    # ---- responses ------------------------------------------------------------------------------------------------

    def _final(self, request: Request, response: Response) -> list[RegistrationOutput]:
        status = response.status
        self.last_status = status
        if self.state not in _SENDING:
            return []
        if 200 <= status < 300:
            return self._accepted(response)
        if status in (401, 407):
            return self._challenged(request, response)
        if status == 423 and self.state is not RegistrationState.UNREGISTERING:
            return self._too_brief(response)
        return self._failed(status, f"{status} {response.reason}".strip(), retry_after=_retry_after(response))

    def _accepted(self, response: Response) -> list[RegistrationOutput]:
        if self.state is RegistrationState.UNREGISTERING:
            return self._stopped(response.status, "binding removed")
        granted = self._granted_expires(response)
        if granted <= 0:
            return self._failed(response.status, "the registrar answered 2xx but kept no binding for our Contact")
        self.state = RegistrationState.REGISTERED
        self.expires = granted
        self.failures = 0
        delay = max(granted / 2, granted - self.config.refresh_margin, self.config.min_refresh)
        return [*self._arm(REFRESH_TIMER, delay), Registered(granted, delay)]

    def _challenged(self, request: Request, response: Response) -> list[RegistrationOutput]:
        if self._client is None:
            return self._failed(
                response.status,
                f"the registrar asks for authentication ({response.status}) and no credentials are configured",
            )
        try:
            challenges = self._client.choose(response)
        except AuthError as exc:
            return self._failed(response.status, exc.reason)
        answered = self._attempt.answered | authorization_nonces(request)
        if all(c.nonce in answered for c in challenges):
            return self._failed(
                response.status, f"credentials for {self.config.username!r} refused (challenged again, same nonce)"
            )
        self._attempt.auth_rounds += 1
        if self._attempt.auth_rounds > self.config.max_auth_rounds:
            return self._failed(response.status, f"still challenged after {self.config.max_auth_rounds} answers")
        retry = self._build(self._attempt.expires)
        for auth in self._client.authorize(retry, response):
            retry.headers.add(auth.name, auth.value)
            self._attempt.answered.add(auth.challenge.nonce)
        return self._send(retry)

    def _too_brief(self, response: Response) -> list[RegistrationOutput]:
        text = (response.headers.get("Min-Expires") or "").strip()
        minimum = int(text) if is_digits(text) and len(text) <= 10 else None
        if minimum is None or minimum <= self._attempt.expires:
            return self._failed(423, f"423 Interval Too Brief with unusable Min-Expires {text[:20]!r}")
        self._requested = minimum
        attempt = self._attempt
        retry = self._build(minimum)
        if self._client is not None:
            for auth in self._client.preemptive(retry):
                retry.headers.add(auth.name, auth.value)
                attempt.answered.add(auth.challenge.nonce)
        attempt.expires = minimum
        return self._send(retry)

    def _failed(self, status: int, reason: str, *, retry_after: int | None = None) -> list[RegistrationOutput]:
        self.last_status = status
        if self.state is RegistrationState.UNREGISTERING:
            return self._stopped(status, reason)
        if self.state not in _SENDING:
            return []
        out = self._abandon_txn()
        self.failures += 1
        self.expires = None
        self.state = RegistrationState.RETRY_WAIT
        if self._client is not None:
            self._client.forget()
        wait = min(self.config.retry_max, self.config.retry_base * 2**self.failures)
        delay = wait * (0.5 + 0.5 * self._rng())
        if retry_after is not None:
            delay = max(delay, float(retry_after))
        return [*out, *self._arm(RETRY_TIMER, delay), RegistrationFailed(status, reason, delay)]

    def _stopped(self, status: int | None, reason: str) -> list[RegistrationOutput]:
        out = self._abandon_txn()
        self.state = RegistrationState.STOPPED
        return [*out, Unregistered(status, reason)]

    def _granted_expires(self, response: Response) -> int:
        """Our Contact's expires parameter, else the Expires header, else what we asked for (RFC 3261 10.2.4)."""
        try:
            contacts = response.contacts
        except SipError:
            contacts = []
        mine = [c for c in contacts if _same_contact(c.uri, self.config.contact)]
        if not mine and len(contacts) == 1:
            mine = contacts  # a registrar behind NAT handling may rewrite our Contact; one binding is ours
        for contact in mine:
            value = contact.params.get("expires")
            if value is not None and is_digits(value.strip('"')):
                return int(value.strip('"'))
        expires = response.headers.get("Expires")
        if expires is not None and is_digits(expires.strip()):
            return int(expires.strip())
        return self._attempt.expires

    # ---- timers ---------------------------------------------------------------------------------------------------

    def _arm(self, token: str, delay: float) -> list[RegistrationOutput]:
        self._timers.add(token)
        return [SetTimer(token, delay)]

    def _disarm(self, *tokens: str) -> list[RegistrationOutput]:
        out: list[RegistrationOutput] = []
        for token in tokens:
            if token in self._timers:
                self._timers.discard(token)
                out.append(ClearTimer(token))
        return out


def _retry_after(response: Response) -> int | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    text = value.split(";")[0].split("(")[0].strip()
    return int(text) if is_digits(text) and len(text) <= 10 else None


def _same_contact(uri: object, contact: str) -> bool:
    """RFC 3261 10.3 step 6 / 19.1.4, for what a registrar echoes: scheme, user, host (any case) and port."""
    try:
        ours = parse_uri(contact)
    except SipError:
        return False
    if not isinstance(uri, SipURI) or not isinstance(ours, SipURI):
        return str(uri) == contact
    default = 5061 if ours.scheme == "sips" else 5060
    return (
        uri.scheme == ours.scheme
        and uri.user == ours.user
        and uri.host.lower() == ours.host.lower()
        and (uri.port or default) == (ours.port or default)
    )


__all__ = [
    "REFRESH_TIMER",
    "RETRY_TIMER",
    "Registered",
    "Registration",
    "RegistrationConfig",
    "RegistrationFailed",
    "RegistrationOutput",
    "RegistrationState",
    "SendRequest",
    "Unregistered",
]
