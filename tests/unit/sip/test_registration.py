"""The REGISTER client (RFC 3261 section 10.2): requests it builds, refresh, digest auth against our own verifier,
423 Min-Expires, backoff with jitter (RFC 5626 section 4.5), retransmission by the non-INVITE client transaction, and
removal of the binding on stop. Driven by hand: the test is the driver, timers fire when it says so."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.sip.auth import DigestVerifier, parse_credentials, static_credentials
from ivr.sip.events import ClearTimer, SetTimer
from ivr.sip.message import Request, Response, make_response, parse_message
from ivr.sip.registration import (
    Registered,
    Registration,
    RegistrationConfig,
    RegistrationFailed,
    RegistrationOutput,
    RegistrationState,
    SendRequest,
    Unregistered,
)
from ivr.sip.transaction import MAGIC_COOKIE

NOW = 1_700_000_000.0
CONTACT = "sip:ivr@192.0.2.10:5080"


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


@dataclass
class Driver:
    """What the server does with the outputs: send, keep timers, collect events."""

    reg: Registration
    sent: list[SendRequest] = field(default_factory=list)
    timers: dict[str, float] = field(default_factory=dict)
    events: list[RegistrationOutput] = field(default_factory=list)

    def feed(self, outputs: Sequence[RegistrationOutput]) -> None:
        for out in outputs:
            if isinstance(out, SendRequest):
                assert out.data == out.request.to_bytes()
                self.sent.append(out)
            elif isinstance(out, SetTimer):
                self.timers[out.token] = out.delay
            elif isinstance(out, ClearTimer):
                assert out.token in self.timers, f"disarmed {out.token} that was not armed"
                del self.timers[out.token]
            else:
                self.events.append(out)

    @property
    def last(self) -> Request:
        return self.sent[-1].request

    def start(self) -> None:
        self.feed(self.reg.start())

    def answer(self, status: int, *extra: tuple[str, str], request: Request | None = None) -> None:
        """The registrar answers ``request`` (default: the last one sent); the response goes over the wire."""
        response = make_response(request or self.last, status, to_tag="reg1", extra=list(extra))
        parsed = parse_message(response.to_bytes())
        assert isinstance(parsed, Response)
        self.feed(self.reg.receive_response(parsed))

    def ok(self, expires: int = 600, contact: str = CONTACT) -> None:
        self.answer(200, ("Contact", f"<{contact}>;expires={expires}"))

    def fire(self, token: str) -> None:
        assert token in self.timers, f"timer {token} is not armed (armed: {sorted(self.timers)})"
        del self.timers[token]
        self.feed(self.reg.timer_fired(token))

    def fire_txn(self, name: str) -> None:
        (token,) = [t for t in self.timers if t.endswith(":" + name)]
        self.fire(token)


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
    assert (out.host, out.port, out.transport) == ("pbx.example.com", 5060, "udp")
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
    assert (d.sent[0].host, d.sent[0].port) == ("198.51.100.7", 5070)


def test_register_is_retransmitted_by_timer_e_over_udp_and_gives_up_at_timer_f() -> None:
    d = driver()
    d.start()
    assert sorted(d.timers) == ["txn1:E", "txn1:F"] and d.timers["txn1:F"] == 32.0
    d.fire("txn1:E")
    assert len(d.sent) == 2 and d.sent[1].data == d.sent[0].data
    assert d.timers["txn1:E"] == 1.0  # T1 doubling
    d.fire("txn1:F")
    (failed,) = d.events
    assert isinstance(failed, RegistrationFailed) and failed.status == 408
    assert "txn1:E" not in d.timers and "retry" in d.timers
    assert d.reg.state is RegistrationState.RETRY_WAIT


def test_over_tcp_the_register_is_not_retransmitted() -> None:
    d = driver(transport="tcp")
    d.start()
    assert sorted(d.timers) == ["txn1:F"]
    assert d.last.top_via.transport == "TCP"


# ---- 200 OK and refresh -------------------------------------------------------------------------------------------


def test_200_grants_the_contact_expires_and_schedules_the_refresh_before_it_ends() -> None:
    d = driver()
    d.start()
    d.ok(expires=600)
    assert d.events == [Registered(600, 540.0)]
    assert d.timers == {"refresh": 540.0}  # transaction timers are gone; K is never armed
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
    assert d.events == [Registered(300, 240.0)]


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
    assert d.events == [Registered(600, 540.0)]


def test_response_to_another_transaction_does_not_match() -> None:
    d = driver()
    d.start()
    other = make_response(d.last, 200, to_tag="x")
    other.headers.set("Via", "SIP/2.0/UDP 192.0.2.10:5080;branch=z9hG4bKother")
    assert not d.reg.matches(other)
    assert d.reg.receive_response(other) == []


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
    assert d.events == [Registered(600, 540.0)]


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
    assert d.events == [Registered(1800, 1740.0)]
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
    d.feed(d.reg.transport_error("connection refused"))
    failed = d.events[-1]
    assert isinstance(failed, RegistrationFailed) and failed.status == 503 and "connection refused" in failed.reason
    assert "retry" in d.timers and "txn1:F" not in d.timers


def test_timer_of_a_replaced_transaction_is_ignored() -> None:
    d = driver()
    d.start()
    d.answer(401, ("WWW-Authenticate", 'Digest realm="pbx", nonce="n", qop="auth"'))
    assert "txn1:E" not in d.timers and "txn2:E" in d.timers
    assert d.reg.timer_fired("txn1:E") == []
    assert d.reg.timer_fired("refresh") == []


# ---- stop ---------------------------------------------------------------------------------------------------------


def test_stop_removes_only_our_binding_with_expires_zero() -> None:
    d = driver()
    d.start()
    d.ok()
    d.feed(d.reg.stop())
    assert "refresh" not in d.timers
    request = d.last
    assert request.headers.get("Contact") == f"<{CONTACT}>;expires=0" and request.headers.get("Expires") == "0"
    assert d.reg.state is RegistrationState.UNREGISTERING and not d.reg.registered
    d.ok(expires=0)
    assert d.events[-1] == Unregistered(200, "binding removed")
    assert d.reg.state is RegistrationState.STOPPED and d.timers == {}


def test_stop_answers_a_challenge_once_then_reports_unregistered() -> None:
    d = driver()
    registrar = Registrar()
    d.start()
    registrar.handle(d)
    registrar.handle(d)
    d.feed(d.reg.stop())
    registrar.verifier = DigestVerifier(
        realm="pbx.example.com", secret=b"z" * 32, credentials=static_credentials({"ivr": "s3cret"})
    )  # a restarted registrar: our preemptive nonce is unknown to it
    assert registrar.handle(d) == 401
    assert registrar.handle(d) == 200
    assert d.events[-1] == Unregistered(200, "binding removed")


def test_stop_without_an_answer_finishes_with_408() -> None:
    d = driver()
    d.start()
    d.ok()
    d.feed(d.reg.stop())
    d.fire_txn("F")
    assert isinstance(d.events[-1], Unregistered) and d.events[-1].status == 408
    assert d.timers == {}


def test_stop_while_registering_abandons_the_request_in_flight() -> None:
    d = driver()
    d.start()
    first = d.last
    d.feed(d.reg.stop())
    assert sorted(d.timers) == ["txn2:E", "txn2:F"]
    assert d.last.headers.get("Expires") == "0" and d.last.cseq.number == 2
    d.answer(200, ("Contact", f"<{CONTACT}>;expires=600"), request=first)
    assert d.events == []  # the answer to the abandoned REGISTER is not ours any more


def test_stop_while_waiting_to_retry_still_removes_a_binding_that_may_exist() -> None:
    d = driver()
    d.start()
    d.answer(500)
    d.feed(d.reg.stop())
    assert "retry" not in d.timers and d.last.headers.get("Expires") == "0"


def test_stop_before_start_and_twice_does_nothing() -> None:
    d = driver()
    assert d.reg.stop() == []
    d.start()
    d.ok()
    d.feed(d.reg.stop())
    assert d.reg.stop() == []


def test_start_again_after_stop_registers_with_a_higher_cseq() -> None:
    d = driver()
    d.start()
    d.ok()
    d.feed(d.reg.stop())
    d.ok(expires=0)
    d.start()
    assert d.last.cseq.number == 3 and d.last.headers.get("Expires") == "600"
    with pytest.raises(Exception, match="already"):
        d.reg.start()


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
            d.feed(d.reg.stop())
        elif move == "timeout" and any(t.endswith(":F") for t in d.timers):
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
    txn_timers = {t for t in d.timers if t.startswith("txn")}
    if state in (RegistrationState.REGISTERING, RegistrationState.REFRESHING, RegistrationState.UNREGISTERING):
        assert txn_timers, "a REGISTER in flight has its transaction timers armed"
    else:
        assert not txn_timers
    assert ("refresh" in d.timers) == (state is RegistrationState.REGISTERED)
    assert ("retry" in d.timers) == (state is RegistrationState.RETRY_WAIT)
