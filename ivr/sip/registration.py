"""REGISTER client for one binding (RFC 3261 section 10.2), sans-I/O, with digest auth and refresh.

A :class:`Registration` keeps one Contact of ours registered at an upstream registrar: the IVR as a registered endpoint
of a PBX or a trunk. It is the transaction user of its REGISTERs and runs inside a
:class:`~ivr.sip.endpoint.SipEndpoint` (:meth:`~ivr.sip.endpoint.SipEndpoint.register`,
:meth:`~ivr.sip.endpoint.SipEndpoint.unregister`): the endpoint starts each REGISTER's client transaction in its own
transaction table, matches the registrar's responses to it like any other, keeps its timers and the refresh and
retry timers in its timer heap, sends through its driver, and hands the state changes out of
:meth:`~ivr.sip.endpoint.SipEndpoint.next_event`. The machine itself is driven like the transactions are: inputs are
method calls (:meth:`~Registration.start`, :meth:`~Registration.receive_response`, :meth:`~Registration.timed_out`,
:meth:`~Registration.transport_failed`, :meth:`~Registration.timer_fired`, :meth:`~Registration.stop`) and each returns
a list of outputs:

* :class:`StartTransaction` - run this REGISTER's :class:`~ivr.sip.transaction.ClientNonInviteTransaction` towards
  :attr:`RegistrationConfig.next_hop`; it replaces the registration's previous one (a REGISTER still in flight is
  abandoned: no more retransmissions, its answer is not ours any more);
* :class:`~ivr.sip.primitives.SetTimer` / :class:`~ivr.sip.primitives.ClearTimer` (the timer pair of all of
  ``ivr.sip``) - (re)arm or disarm ``"refresh"`` or ``"retry"``; when it expires :meth:`~Registration.timer_fired`;
* :class:`Registered`, :class:`RegistrationFailed`, :class:`Unregistered` - state changes for logs, metrics and health
  (the endpoint's events; each names its :class:`Registration`).

Each REGISTER's transaction retransmits it over UDP (timer E) and gives up after 64*T1 (timer F: 408); once a final
response has arrived it absorbs retransmissions of it for timer K, then a late copy matches nothing and is dropped.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from ivr.sip.auth import AuthError, DigestClient, authorization_nonces
from ivr.sip.errors import SipError
from ivr.sip.headers import Headers, Via
from ivr.sip.message import Request, Response
from ivr.sip.primitives import ClearTimer, SetTimer
from ivr.sip.transaction import (
    DEFAULT_TIMERS,
    ClientNonInviteTransaction,
    TimerValues,
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


@dataclass(frozen=True, slots=True)
class StartTransaction:
    """Run ``transaction`` (a REGISTER not yet started) towards the registrar, in place of the registration's
    previous one."""

    transaction: ClientNonInviteTransaction


@dataclass(frozen=True, slots=True)
class Registered:
    """The registrar accepted the binding for ``expires`` seconds; a refresh is due in ``refresh_in`` seconds."""

    registration: Registration
    expires: int
    refresh_in: float


@dataclass(frozen=True, slots=True)
class RegistrationFailed:
    """A REGISTER failed (``status`` 408 for no response, 503 for a transport error); ``retry_in`` seconds until the
    next attempt. A failed refresh ends the ``registered`` state even though the registrar may still hold the
    binding until its old expiry."""

    registration: Registration
    status: int
    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class Unregistered:
    """:meth:`Registration.stop` is done: ``status`` of the expires=0 REGISTER (``None`` when none was needed)."""

    registration: Registration
    status: int | None
    reason: str


RegistrationEvent = Registered | RegistrationFailed | Unregistered
RegistrationOutput = StartTransaction | SetTimer[str] | ClearTimer[str] | RegistrationEvent


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
    """One binding's REGISTER client. Its identity is the object itself: the handle
    :meth:`~ivr.sip.endpoint.SipEndpoint.register` returns and every :data:`RegistrationEvent` carries."""

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
        self.transaction: ClientNonInviteTransaction | None = None
        """The REGISTER transaction whose answer this registration waits for (or the last one answered)."""
        self._rng = rng
        self._requested = config.expires
        self._client = client
        if client is None and config.username is not None and config.password is not None:
            self._client = DigestClient(config.username, config.password)
        self._timers: dict[str, float] = {}
        self._attempt = _Attempt(config.expires)
        self._sent_any = False

    def __repr__(self) -> str:
        return f"<Registration {self.config.aor} at {self.config.registrar} {self.state.value}>"

    @property
    def registered(self) -> bool:
        return self.state in (RegistrationState.REGISTERED, RegistrationState.REFRESHING)

    @property
    def armed_timers(self) -> Mapping[str, float]:
        """The refresh or retry timer armed now, with its delay (the REGISTER's transaction keeps its own)."""
        return dict(self._timers)

    # ---- inputs ---------------------------------------------------------------------------------------------------

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
        out = self._disarm(REFRESH_TIMER, RETRY_TIMER)
        self.transaction = None
        self.expires = None
        if not self._sent_any:
            self.state = RegistrationState.STOPPED
            return [*out, Unregistered(self, None, "no REGISTER was sent")]
        self.state = RegistrationState.UNREGISTERING
        return out + self._new_attempt(0)

    def receive_response(self, response: Response) -> list[RegistrationOutput]:
        """A response :attr:`transaction` delivered; provisional ones, and any response to another transaction (same
        branch and method, RFC 3261 17.1.3), change nothing."""
        txn = self.transaction
        if txn is None or response.status < 200:
            return []
        try:
            if client_key(response) != txn.key:
                return []
        except SipError:
            return []
        return self._final(txn.request, response)

    def timed_out(self, reason: str) -> list[RegistrationOutput]:
        """:attr:`transaction` got no final response (timer F)."""
        if self.transaction is None:
            return []
        return self._failed(408, f"no response from the registrar ({reason})")

    def transport_failed(self, reason: str) -> list[RegistrationOutput]:
        """The transport could not send :attr:`transaction`'s REGISTER (ICMP unreachable, TCP connect refused)."""
        if self.transaction is None:
            return []
        return self._failed(503, f"transport failure: {reason}")

    def timer_fired(self, token: str) -> list[RegistrationOutput]:
        """The refresh or retry timer expired; a token not armed (cleared, or never set) is ignored."""
        if self._timers.pop(token, None) is None:
            return []
        if token == REFRESH_TIMER and self.state is RegistrationState.REGISTERED:
            self.state = RegistrationState.REFRESHING
            return self._new_attempt(self._requested)
        if token == RETRY_TIMER and self.state is RegistrationState.RETRY_WAIT:
            self.state = RegistrationState.REGISTERING
            return self._new_attempt(self._requested)
        return []

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
        self._sent_any = True
        reliable = self.config.transport.lower() != "udp"
        self.transaction = ClientNonInviteTransaction(request, reliable=reliable, timers=self.config.timers)
        return [StartTransaction(self.transaction)]

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
        return [*self._arm(REFRESH_TIMER, delay), Registered(self, granted, delay)]

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
        self.transaction = None
        self.failures += 1
        self.expires = None
        self.state = RegistrationState.RETRY_WAIT
        if self._client is not None:
            self._client.forget()
        wait = min(self.config.retry_max, self.config.retry_base * 2**self.failures)
        delay = wait * (0.5 + 0.5 * self._rng())
        if retry_after is not None:
            delay = max(delay, float(retry_after))
        return [*self._arm(RETRY_TIMER, delay), RegistrationFailed(self, status, reason, delay)]

    def _stopped(self, status: int | None, reason: str) -> list[RegistrationOutput]:
        self.transaction = None
        self.state = RegistrationState.STOPPED
        return [Unregistered(self, status, reason)]

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
        self._timers[token] = delay
        return [SetTimer(token, delay)]

    def _disarm(self, *tokens: str) -> list[RegistrationOutput]:
        out: list[RegistrationOutput] = []
        for token in tokens:
            if self._timers.pop(token, None) is not None:
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
    "RegistrationEvent",
    "RegistrationFailed",
    "RegistrationOutput",
    "RegistrationState",
    "StartTransaction",
    "Unregistered",
]
