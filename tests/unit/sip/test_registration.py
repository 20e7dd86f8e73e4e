"""The REGISTER client (RFC 3261 section 10.2): requests it builds, refresh, digest auth against our own verifier,
423 Min-Expires, backoff with jitter (RFC 5626 section 4.5), retransmission by the non-INVITE client transaction, and
removal of the binding on stop. The registration runs in a SipEndpoint (``register`` / ``unregister``), driven by
hand as its driver would: the test feeds the registrar's answers to ``receive``, moves a fake clock through
``handle_timer``, and collects ``datagrams_to_send`` and ``next_event``."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.sip.auth import DigestVerifier, parse_credentials, static_credentials
from ivr.sip.endpoint import EndpointConfig, Peer, SipEndpoint
from ivr.sip.errors import SipError
from ivr.sip.message import Request, make_response, parse_message
from ivr.sip.registration import (
    Registered,
    Registration,
    RegistrationConfig,
    RegistrationEvent,
    RegistrationFailed,
    RegistrationState,
    StartTransaction,
    Unregistered,
)
from ivr.sip.transaction import MAGIC_COOKIE, ClientNonInviteState

NOW = 1_700_000_000.0
CONTACT = "sip:ivr@192.0.2.10:5080"
REGISTRAR = Peer("198.51.100.1", 5060)  # where the registrar's answers come from


def config(**overrides: object) -> RegistrationConfig:
    params: dict[str, object] = {
        "registrar": "sip:pbx.example.com",
        "aor": "sip:ivr@pbx.example.com",
        "contact": CONTACT,
        "local_host": "192.0.2.10",
        "local_port": 5080,
        "expires": 600,
        "username": "ivr",
        "password": "s3cret",
    }
    params.update(overrides)
    return RegistrationConfig(**params)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Sent:
    request: Request
    data: bytes
    peer: Peer


@dataclass
class Driver:
    """What the SIP driver does for the endpoint the registration runs in: a clock it moves, the REGISTERs sent (with
    where to), the registration's events."""

    reg: Registration
    ep: SipEndpoint = field(default_factory=lambda: SipEndpoint(EndpointConfig(host="192.0.2.10", port=5080)))
    now: float = 0.0
    sent: list[Sent] = field(default_factory=list)
    events: list[RegistrationEvent] = field(default_factory=list)

    def pump(self) -> None:
        for out in self.ep.datagrams_to_send(self.now):
            request = parse_message(out.data)
            assert isinstance(request, Request) and request.method == "REGISTER"
            self.sent.append(Sent(request, out.data, out.peer))
        while (event := self.ep.next_event()) is not None:
            assert isinstance(event, Registered | RegistrationFailed | Unregistered) and event.registration is self.reg
            self.events.append(event)

    def advance(self, seconds: float) -> None:
        """Move the clock on, firing the endpoint's timers at their deadlines."""
        end = self.now + seconds
        while (deadline := self.ep.get_timer()) is not None and deadline <= end:
            self.now = deadline
            self.ep.handle_timer(deadline)
            self.pump()
        self.now = end

    @property
    def timers(self) -> dict[str, float]:
        """The registration's own timers (refresh, retry) with their delays."""
        return dict(self.reg.armed_timers)

    @property
    def txn_timers(self) -> dict[str, float]:
        """The timers of the REGISTER transaction the registration waits on (kept in the endpoint)."""
        txn = self.reg.transaction
        return {} if txn is None else dict(txn.armed_timers)

    @property
    def last(self) -> Request:
        return self.sent[-1].request

    def start(self) -> None:
        assert self.ep.register(self.reg) is self.reg
        self.pump()

    def stop(self) -> None:
        self.ep.unregister(self.reg)
        self.pump()

    def answer(self, status: int, *extra: tuple[str, str], request: Request | None = None) -> None:
        """The registrar answers ``request`` (default: the last one sent); the response goes over the wire."""
        response = make_response(request or self.last, status, to_tag="reg1", extra=list(extra))
        self.ep.receive(response.to_bytes(), REGISTRAR, self.now)
        self.pump()

    def ok(self, expires: int = 600, contact: str = CONTACT) -> None:
        self.answer(200, ("Contact", f"<{contact}>;expires={expires}"))

    def fire(self, token: str) -> None:
        """Move the clock to the refresh or retry timer (armed now: answers take no time) and past it."""
        assert token in self.timers, f"timer {token} is not armed (armed: {sorted(self.timers)})"
        self.advance(self.timers[token])

    def fire_txn(self, name: str) -> None:
        """Move the clock to the REGISTER transaction's timer ``name`` (armed when the REGISTER was sent, now)."""
        assert name in self.txn_timers, f"timer {name} is not armed (armed: {sorted(self.txn_timers)})"
        self.advance(self.txn_timers[name])


def driver(rng: float = 0.0, **overrides: object) -> Driver:
    return Driver(Registration(config(**overrides), rng=lambda: rng))


class Registrar:
    """A registrar in front of our own DigestVerifier (SHA-256 and MD5 offered)."""

    def __init__(self, password: str = "s3cret", min_expires: int | None = None) -> None:
        self.verifier = DigestVerifier(
            realm="pbx.example.com", secret=b"k" * 32, credentials=static_credentials({"ivr": password})
        )
        self.min_expires = min_expires
        self.now = NOW

    def handle(self, d: Driver) -> int:
        request = d.last
        result = self.verifier.verify(request, self.now)
        if not result.ok:
            assert result.status is not None
            d.answer(result.status, *self.verifier.response_headers(result, self.now))
            return result.status
        expires = int(request.headers.get("Expires") or "0")
        if self.min_expires is not None and 0 < expires < self.min_expires:
            d.answer(423, ("Min-Expires", str(self.min_expires)))
            return 423
        d.answer(200, ("Contact", f"<{CONTACT}>;expires={expires}"))
        return 200


# ---- the REGISTER request -----------------------------------------------------------------------------------------


def test_first_register_carries_aor_contact_with_expires_and_a_fresh_branch() -> None:
    d = driver()
    d.start()
    (out,) = d.sent
    request = out.request
    assert out.peer == Peer("pbx.example.com", 5060, "udp")
    assert request.method == "REGISTER" and request.uri == "sip:pbx.example.com"
    assert str(request.to.uri) == "sip:ivr@pbx.example.com" and request.to.tag is None
    assert str(request.from_.uri) == "sip:ivr@pbx.example.com" and request.from_.tag
    assert request.headers.get("Contact") == f"<{CONTACT}>;expires=600"
    assert request.headers.get("Expires") == "600"
    assert str(request.cseq) == "1 REGISTER"
    via = request.top_via
    assert via.branch is not None and via.branch.startswith(MAGIC_COOKIE) and "rport" in via.params
    assert (via.host, via.port) == ("192.0.2.10", 5080)
    assert request.headers.get("Authorization") is None
    assert d.reg.state is RegistrationState.REGISTERING and not d.reg.registered
    assert parse_message(out.data).headers.get("Call-ID") == d.reg.call_id


def test_outbound_proxy_destination_overrides_the_registrar_host() -> None:
    d = driver(destination=("198.51.100.7", 5070))
    d.start()
    assert (d.sent[0].peer.host, d.sent[0].peer.port) == ("198.51.100.7", 5070)


def test_register_is_retransmitted_by_timer_e_over_udp_and_gives_up_at_timer_f() -> None:
    d = driver()
    d.start()
    assert d.txn_timers == {"E": 0.5, "F": 32.0} and d.timers == {}
    assert d.ep.get_timer() == 0.5  # the REGISTER's timers are the endpoint's
    d.advance(0.5)
    assert len(d.sent) == 2 and d.sent[1].data == d.sent[0].data
    assert d.txn_timers["E"] == 1.0  # T1 doubling
    d.advance(1.0)
    assert len(d.sent) == 3
    d.advance(30.5)  # F at 32 s
    (failed,) = d.events
    assert isinstance(failed, RegistrationFailed) and failed.status == 408
    assert d.reg.transaction is None and "retry" in d.timers
    assert d.reg.state is RegistrationState.RETRY_WAIT
    assert d.ep.get_timer() == d.now + d.timers["retry"]  # nothing of the REGISTER's transaction is left


def test_over_tcp_the_register_is_not_retransmitted() -> None:
    d = driver(transport="tcp")
    d.start()
    assert d.txn_timers == {"F": 32.0}
    assert d.last.top_via.transport == "TCP" and d.sent[0].peer.transport == "tcp"
    d.advance(31.9)
    assert len(d.sent) == 1 and d.events == []


# ---- 200 OK and refresh -------------------------------------------------------------------------------------------


def test_200_grants_the_contact_expires_and_schedules_the_refresh_before_it_ends() -> None:
    d = driver()
    d.start()
    d.ok(expires=600)
    assert d.events == [Registered(d.reg, 600, 540.0)]
    assert d.timers == {"refresh": 540.0}
    assert d.txn_timers == {"K": 5.0}  # the answered transaction only absorbs retransmissions of the 200
    assert d.reg.registered and d.reg.expires == 600


def test_short_expiry_is_refreshed_at_half_time() -> None:
    d = driver(expires=60)
    d.start()
    d.ok(expires=60)
    assert d.timers == {"refresh": 30.0}


def test_granted_expiry_comes_from_our_contact_among_other_bindings() -> None:
    d = driver()
    d.start()
    d.answer(
        200,
        ("Contact", "<sip:other@192.0.2.99:5060>;expires=3600"),
        ("Contact", "<sip:ivr@192.0.2.10:5080;transport=udp>;expires=300"),
        ("Expires", "7200"),
    )
    assert d.events == [Registered(d.reg, 300, 240.0)]


def test_granted_expiry_falls_back_to_the_expires_header_then_to_what_we_asked() -> None:
    d = driver()
    d.start()
    d.answer(200, ("Expires", "900"))
    assert isinstance(d.events[-1], Registered) and d.events[-1].expires == 900
    d.fire("refresh")
    d.answer(200)
    assert isinstance(d.events[-1], Registered) and d.events[-1].expires == 600


def test_refresh_keeps_call_id_and_from_tag_and_increases_cseq_with_a_new_branch() -> None:
    d = driver()
    d.start()
    d.ok()
    d.fire("refresh")
    first, refresh = d.sent[0].request, d.sent[1].request
    assert refresh.call_id == first.call_id and refresh.from_.tag == first.from_.tag
    assert refresh.cseq.number == first.cseq.number + 1
    assert refresh.top_via.branch != first.top_via.branch
    assert d.reg.state is RegistrationState.REFRESHING and d.reg.registered
    d.ok()
    assert d.reg.state is RegistrationState.REGISTERED


def test_200_without_our_binding_is_a_failure() -> None:
    d = driver()
    d.start()
    d.answer(200, ("Contact", f"<{CONTACT}>;expires=0"))
    assert isinstance(d.events[-1], RegistrationFailed) and "kept no binding" in d.events[-1].reason


def test_retransmitted_response_after_the_final_one_is_absorbed() -> None:
    d = driver()
    d.start()
    request = d.last
    d.ok()
    d.answer(200, ("Contact", f"<{CONTACT}>;expires=600"), request=request)
    assert d.events == [Registered(d.reg, 600, 540.0)]
    d.advance(5.0)  # timer K: the transaction is gone, a late copy matches nothing and is dropped
    assert d.txn_timers == {} and d.reg.transaction is not None
    assert d.reg.transaction.state is ClientNonInviteState.TERMINATED
    d.answer(200, ("Contact", f"<{CONTACT}>;expires=600"), request=request)
    assert d.events == [Registered(d.reg, 600, 540.0)] and len(d.sent) == 1


def test_response_to_another_transaction_does_not_match() -> None:
    d = driver()
    d.start()
    other = make_response(d.last, 200, to_tag="x")
    other.headers.set("Via", "SIP/2.0/UDP 192.0.2.10:5080;branch=z9hG4bKother")
    d.ep.receive(other.to_bytes(), REGISTRAR, d.now)
    d.pump()
    assert d.events == [] and d.reg.state is RegistrationState.REGISTERING
    assert d.reg.receive_response(other) == []  # the machine checks it too


# ---- digest authentication ----------------------------------------------------------------------------------------


def test_401_is_answered_with_sha256_credentials_and_the_registrar_accepts_them() -> None:
    d = driver()
    registrar = Registrar()
    d.start()
    assert registrar.handle(d) == 401
    retry = d.last
    assert retry.cseq.number == 2 and retry.call_id == d.sent[0].request.call_id
    assert retry.top_via.branch != d.sent[0].request.top_via.branch
    authorization = retry.headers.get("Authorization")
    assert (
        authorization is not None
        and "algorithm=SHA-256" in authorization
        and 'uri="sip:pbx.example.com"' in (authorization)
    )
    assert registrar.handle(d) == 200
    assert d.events == [Registered(d.reg, 600, 540.0)]


def test_refresh_sends_credentials_preemptively_with_the_next_nonce_count() -> None:
    d = driver()
    registrar = Registrar()
    d.start()
    registrar.handle(d)
    registrar.handle(d)
    d.fire("refresh")
    authorization = d.last.headers.get("Authorization")
    assert authorization is not None and "nc=00000002" in authorization
    assert registrar.handle(d) == 200  # no extra 401 round trip
    assert len(d.sent) == 3


def test_stale_nonce_on_refresh_is_answered_again_without_failing() -> None:
    d = driver()
    registrar = Registrar()
    d.start()
    registrar.handle(d)
    registrar.handle(d)
    registrar.now += 400  # past the verifier's 300 s nonce lifetime
    d.fire("refresh")
    preemptive = parse_credentials(d.last.headers.get("Authorization") or "").get("nonce")
    assert registrar.handle(d) == 401
    answered = parse_credentials(d.last.headers.get("Authorization") or "").get("nonce")
    assert answered is not None and answered != preemptive
    assert registrar.handle(d) == 200
    assert [type(e) for e in d.events] == [Registered, Registered]


def test_second_401_with_the_same_nonce_means_the_credentials_were_refused() -> None:
    d = driver()
    d.start()
    challenge = ("WWW-Authenticate", 'Digest realm="pbx", nonce="abc", qop="auth", algorithm=MD5')
    d.answer(401, challenge)
    assert 'nonce="abc"' in (d.last.headers.get("Authorization") or "")
    d.answer(401, challenge)
    (failed,) = d.events
    assert isinstance(failed, RegistrationFailed) and failed.status == 401 and "refused" in failed.reason
    assert len(d.sent) == 2 and "retry" in d.timers


def test_wrong_password_against_a_registrar_that_changes_nonces_stops_after_max_rounds() -> None:
    d = driver(password="wrong", max_auth_rounds=3)
    d.start()
    for n in range(4):
        d.answer(401, ("WWW-Authenticate", f'Digest realm="pbx", nonce="n{n}", qop="auth"'))
    assert len(d.sent) == 4
    assert isinstance(d.events[-1], RegistrationFailed) and "after 3 answers" in d.events[-1].reason


def test_wrong_password_at_our_verifier_is_403_and_a_failure() -> None:
    d = driver(password="wrong")
    registrar = Registrar()
    d.start()
    registrar.handle(d)
    assert registrar.handle(d) == 403
    assert isinstance(d.events[-1], RegistrationFailed) and d.events[-1].status == 403


def test_challenge_without_configured_credentials_is_a_failure() -> None:
    d = driver(username=None, password=None)
    d.start()
    d.answer(401, ("WWW-Authenticate", 'Digest realm="pbx", nonce="n"'))
    assert isinstance(d.events[-1], RegistrationFailed) and "no credentials" in d.events[-1].reason


def test_407_from_a_proxy_is_answered_with_proxy_authorization() -> None:
    d = driver()
    d.start()
    d.answer(407, ("Proxy-Authenticate", 'Digest realm="proxy", nonce="p1", qop="auth"'))
    assert d.last.headers.get("Proxy-Authorization") is not None


def test_unanswerable_challenge_is_a_failure_naming_the_offer() -> None:
    d = driver()
    d.start()
    d.answer(401, ("WWW-Authenticate", 'Digest realm="pbx", nonce="n", algorithm=SHA-1'))
    assert isinstance(d.events[-1], RegistrationFailed) and "SHA-1" in d.events[-1].reason


# ---- 423 and failures ---------------------------------------------------------------------------------------------


def test_423_raises_the_expiry_to_min_expires_and_retries_at_once() -> None:
    d = driver(expires=60)
    registrar = Registrar(min_expires=1800)
    d.start()
    assert registrar.handle(d) == 401
    assert registrar.handle(d) == 423
    assert d.sent[-2].request.headers.get("Expires") == "60"
    assert d.last.headers.get("Contact") == f"<{CONTACT}>;expires=1800" and d.last.headers.get("Expires") == "1800"
    assert d.last.headers.get("Authorization") is not None  # the 423 retry keeps the credentials
    assert registrar.handle(d) == 200
    assert d.events == [Registered(d.reg, 1800, 1740.0)]
    d.fire("refresh")
    assert d.last.headers.get("Expires") == "1800"  # later refreshes keep asking for the minimum


def test_423_without_a_larger_min_expires_is_a_failure() -> None:
    d = driver()
    d.start()
    d.answer(423, ("Min-Expires", "300"))
    assert isinstance(d.events[-1], RegistrationFailed) and d.events[-1].status == 423


def test_failures_back_off_exponentially_with_jitter_from_the_injected_source() -> None:
    low, high = driver(rng=0.0), driver(rng=0.999999)
    delays: dict[str, list[int]] = {"low": [], "high": []}
    for name, d in (("low", low), ("high", high)):
        d.start()
        for _ in range(7):
            d.answer(500)
            failed = d.events[-1]
            assert isinstance(failed, RegistrationFailed)
            delays[name].append(round(failed.retry_in))
            assert d.timers["retry"] == failed.retry_in
            d.fire("retry")
    assert delays["low"] == [30, 60, 120, 240, 480, 900, 900]  # half of min(1800, 30 * 2**failures)
    assert delays["high"] == [60, 120, 240, 480, 960, 1800, 1800]


def test_retry_after_is_respected() -> None:
    d = driver()
    d.start()
    d.answer(503, ("Retry-After", "3600 (maintenance)"))
    failed = d.events[-1]
    assert isinstance(failed, RegistrationFailed) and failed.retry_in == 3600.0 and failed.reason.startswith("503")


def test_success_after_failures_resets_the_backoff() -> None:
    d = driver()
    d.start()
    d.answer(500)
    d.fire("retry")
    d.answer(500)
    assert d.reg.failures == 2
    d.fire("retry")
    d.ok()
    assert d.reg.failures == 0 and d.reg.registered


def test_failed_refresh_leaves_the_registered_state() -> None:
    d = driver()
    d.start()
    d.ok()
    d.fire("refresh")
    d.answer(403)
    assert not d.reg.registered and d.reg.state is RegistrationState.RETRY_WAIT and d.reg.expires is None


def test_transport_error_is_reported_as_503_and_retried() -> None:
    d = driver(transport="tcp")
    d.start()
    d.ep.transport_error(Peer("pbx.example.com", 5060, "tcp"), "connection refused")
    d.pump()
    failed = d.events[-1]
    assert isinstance(failed, RegistrationFailed) and failed.status == 503 and "connection refused" in failed.reason
    assert "retry" in d.timers and d.reg.transaction is None
    assert d.ep.get_timer() == d.now + d.timers["retry"]  # the failed transaction's F is gone


def test_the_answered_transaction_is_replaced_and_its_late_answers_are_not_ours() -> None:
    d = driver()
    d.start()
    first = d.reg.transaction
    d.answer(401, ("WWW-Authenticate", 'Digest realm="pbx", nonce="n", qop="auth"'))
    assert first is not None and d.reg.transaction is not first
    assert d.txn_timers == {"E": 0.5, "F": 32.0}
    d.advance(0.5)
    assert [s.request.cseq.number for s in d.sent] == [1, 2, 2]  # only the answer to the challenge is resent
    d.answer(200, ("Contact", f"<{CONTACT}>;expires=600"), request=first.request)
    assert d.events == [] and d.reg.state is RegistrationState.REGISTERING
    assert d.reg.timer_fired("refresh") == []  # not armed: ignored


# ---- stop ---------------------------------------------------------------------------------------------------------


def test_stop_removes_only_our_binding_with_expires_zero() -> None:
    d = driver()
    d.start()
    d.ok()
    d.stop()
    assert "refresh" not in d.timers
    request = d.last
    assert request.headers.get("Contact") == f"<{CONTACT}>;expires=0" and request.headers.get("Expires") == "0"
    assert d.reg.state is RegistrationState.UNREGISTERING and not d.reg.registered
    d.ok(expires=0)
    assert d.events[-1] == Unregistered(d.reg, 200, "binding removed")
    assert d.reg.state is RegistrationState.STOPPED and d.timers == {}
    assert d.reg not in d.ep.registrations


def test_stop_answers_a_challenge_once_then_reports_unregistered() -> None:
    d = driver()
    registrar = Registrar()
    d.start()
    registrar.handle(d)
    registrar.handle(d)
    d.stop()
    registrar.verifier = DigestVerifier(
        realm="pbx.example.com", secret=b"z" * 32, credentials=static_credentials({"ivr": "s3cret"})
    )  # a restarted registrar: our preemptive nonce is unknown to it
    assert registrar.handle(d) == 401
    assert registrar.handle(d) == 200
    assert d.events[-1] == Unregistered(d.reg, 200, "binding removed")


def test_stop_without_an_answer_finishes_with_408() -> None:
    d = driver()
    d.start()
    d.ok()
    d.stop()
    d.fire_txn("F")
    assert isinstance(d.events[-1], Unregistered) and d.events[-1].status == 408
    assert d.timers == {} and d.ep.get_timer() is None and not d.ep.registrations


def test_stop_while_registering_abandons_the_request_in_flight() -> None:
    d = driver()
    d.start()
    first = d.last
    d.stop()
    assert d.txn_timers == {"E": 0.5, "F": 32.0}
    assert d.last.headers.get("Expires") == "0" and d.last.cseq.number == 2
    d.advance(0.5)
    assert [s.request.cseq.number for s in d.sent] == [1, 2, 2]  # the abandoned REGISTER is not resent
    d.answer(200, ("Contact", f"<{CONTACT}>;expires=600"), request=first)
    assert d.events == []  # the answer to the abandoned REGISTER is not ours any more


def test_stop_while_waiting_to_retry_still_removes_a_binding_that_may_exist() -> None:
    d = driver()
    d.start()
    d.answer(500)
    d.stop()
    assert "retry" not in d.timers and d.last.headers.get("Expires") == "0"


def test_stop_before_start_and_twice_does_nothing() -> None:
    d = driver()
    assert d.reg.stop() == []
    d.stop()
    assert d.sent == [] and d.events == []
    d.start()
    d.ok()
    d.stop()
    assert d.reg.stop() == []
    d.stop()
    assert len(d.sent) == 2


def test_start_again_after_stop_registers_with_a_higher_cseq() -> None:
    d = driver()
    d.start()
    d.ok()
    d.stop()
    d.ok(expires=0)
    d.start()
    assert d.last.cseq.number == 3 and d.last.headers.get("Expires") == "600"
    assert d.last.call_id == d.sent[0].request.call_id and d.ep.registrations == {d.reg}
    with pytest.raises(SipError, match="already"):
        d.ep.register(d.reg)


def test_register_takes_a_configuration_and_the_machine_asks_the_endpoint_to_run_its_transactions() -> None:
    ep = SipEndpoint(EndpointConfig(host="192.0.2.10", port=5080))
    reg = ep.register(config())
    assert isinstance(reg, Registration) and ep.registrations == {reg} and reg.state is RegistrationState.REGISTERING
    (sent,) = ep.datagrams_to_send(0.0)
    assert sent.peer == Peer("pbx.example.com", 5060)
    machine = Registration(config())
    (start,) = machine.start()
    assert start == StartTransaction(machine.transaction)  # type: ignore[arg-type]
    assert machine.transaction is not None and machine.transaction.armed_timers == {}  # the endpoint starts it


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="sip: or sips:"):
        config(registrar="tel:+123")
    with pytest.raises(ValueError, match="both username and password"):
        config(password=None)
    with pytest.raises(ValueError, match="at least 1 second"):
        config(expires=0)


# ---- invariants under any sequence of registrar behaviour ---------------------------------------------------------

_moves = st.lists(
    st.sampled_from(["200", "401-new", "401-same", "423", "500", "timeout", "refresh", "retry", "stop"]),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(_moves)
def test_call_id_is_constant_cseq_increases_and_timers_stay_consistent(moves: list[str]) -> None:
    d = driver(rng=0.5)
    d.start()
    nonce = 0
    for move in moves:
        if move == "refresh" and "refresh" in d.timers:
            d.fire("refresh")
        elif move == "retry" and "retry" in d.timers:
            d.fire("retry")
        elif move == "stop":
            d.stop()
        elif move == "timeout" and "F" in d.txn_timers:
            d.fire_txn("F")
        elif d.reg.state in (
            RegistrationState.REGISTERING,
            RegistrationState.REFRESHING,
            RegistrationState.UNREGISTERING,
        ):
            if move == "200":
                d.ok()
            elif move == "401-new":
                nonce += 1
                d.answer(401, ("WWW-Authenticate", f'Digest realm="r", nonce="n{nonce}", qop="auth"'))
            elif move == "401-same":
                d.answer(401, ("WWW-Authenticate", f'Digest realm="r", nonce="n{nonce}", qop="auth"'))
            elif move == "423":
                d.answer(423, ("Min-Expires", "900"))
            elif move == "500":
                d.answer(500)
    requests = [s.request for s in d.sent]
    assert len({r.call_id for r in requests}) == 1
    numbers = [r.cseq.number for r in requests]
    distinct = [n for i, n in enumerate(numbers) if i == 0 or n != numbers[i - 1]]  # E retransmits repeat a number
    assert distinct == sorted(set(distinct))
    state = d.reg.state
    in_flight = "F" in d.txn_timers
    if state in (RegistrationState.REGISTERING, RegistrationState.REFRESHING, RegistrationState.UNREGISTERING):
        assert in_flight, "a REGISTER in flight has its transaction timers armed"
    else:
        assert not in_flight
    assert (d.reg in d.ep.registrations) == (state is not RegistrationState.STOPPED)
    assert ("refresh" in d.timers) == (state is RegistrationState.REGISTERED)
    assert ("retry" in d.timers) == (state is RegistrationState.RETRY_WAIT)
