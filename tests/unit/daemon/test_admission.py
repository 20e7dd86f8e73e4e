"""Admission on a clock the test moves: the token bucket, the source gate in front of the SIP endpoint, and the
checks a new call passes (lag first, then calls per second, then the call limit)."""

from __future__ import annotations

import ipaddress

from ivr.daemon.admission import CallAdmission, SourceGate, TokenBucket
from ivr.sip.endpoint import EndpointConfig, Peer, SipEndpoint


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.49) is False  # 0.98 of a token
    assert bucket.take(0.5) is True
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # never more than the burst


def test_trusted_sources_pass_and_others_are_held_to_their_own_rate() -> None:
    clock = Clock()
    gate = SourceGate([ipaddress.ip_network("10.0.0.0/8")], max_messages_per_source=5.0, now=clock)
    assert all(gate.admit(Peer("10.1.2.3", 5060)) is True for _ in range(1000))  # let in, and trusted
    flood = [gate.admit(Peer("192.0.2.7", 5060)) for _ in range(20)]
    assert flood.count(False) == 10 and flood.count(None) == 10  # a burst of twice the rate let in, untrusted
    assert gate.admit(Peer("192.0.2.8", 5060)) is False  # another source is not starved by the first
    assert gate.dropped == 10
    clock.now += 1.0
    assert [gate.admit(Peer("192.0.2.7", 5060)) for _ in range(6)].count(False) == 5


def test_the_gate_says_trusted_as_the_endpoint_would_have_found_it() -> None:
    """The gate's answer is the endpoint's ``trusted`` flag: the same networks give the same verdict, brackets of an
    IPv6 literal and all, and a name is never trusted."""
    networks = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    gate = SourceGate(networks, max_messages_per_source=100.0, now=Clock())
    endpoint = SipEndpoint(EndpointConfig(host="127.0.0.1", port=5060, trusted=networks))
    for host in ("10.9.8.7", "192.0.2.1", "2001:db8::5", "[2001:db8::5]", "2001:db9::1", "pbx.example.com", ""):
        assert gate.trusted(host) == endpoint._trusted(host), host
        assert gate.admit(Peer(host, 5060)) is endpoint._trusted(host), host


def test_a_name_is_never_trusted_and_the_trust_cache_stays_bounded() -> None:
    gate = SourceGate([ipaddress.ip_network("0.0.0.0/0")], max_messages_per_source=1.0, now=Clock())
    assert not gate.trusted("example.com")
    for i in range(5000):
        gate.trusted(f"198.51.{i // 256}.{i % 256}")
    assert len(gate._trust_cache) <= 4097


def test_a_new_call_is_refused_for_lag_then_rate_then_capacity() -> None:
    clock = Clock()
    lag = [0.0]
    admission = CallAdmission(max_calls=2, max_calls_per_second=2.0, shed_lag=0.3, now=clock, lag=lambda: lag[0])
    lag[0] = 0.5
    refused = admission.check(0)
    assert refused is not None and (refused.why, refused.retry_after) == ("lag", 5)
    lag[0] = 0.0
    assert admission.check(0) is None and admission.check(1) is None  # the lagging call took no token
    refused = admission.check(0)
    assert refused is not None and (refused.why, refused.reason, refused.retry_after) == (
        "cps", "too many new calls per second", 1,
    )  # fmt: skip
    clock.now += 1.0
    refused = admission.check(2)
    assert refused is not None and (refused.why, refused.retry_after) == ("max_calls", 5)


def test_a_source_over_its_rate_is_blocked_for_a_time_then_let_in_again() -> None:
    clock = Clock()
    gate = SourceGate([], max_messages_per_source=5.0, now=clock, block_seconds=10.0)
    flood = [gate.admit(Peer("192.0.2.9", 5060)) for _ in range(11)]
    assert flood.count(False) == 10 and flood[-1] is None  # the burst, then the first refusal starts the block
    assert gate.blocks == 1
    clock.now += 5.0  # the bucket has refilled, but the block holds
    assert gate.admit(Peer("192.0.2.9", 5060)) is None
    assert gate.admit(Peer("192.0.2.10", 5060)) is False  # another source is not blocked
    clock.now += 5.0
    assert gate.admit(Peer("192.0.2.9", 5060)) is False
    assert gate.blocks == 1 and gate.dropped == 2
