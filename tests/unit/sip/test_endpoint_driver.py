"""The endpoint's driver interface (aioquic's shape): ``receive(data, peer, now)``, ``datagrams_to_send(now)``,
``get_timer()``, ``handle_timer(now)``, ``next_event()``. The transactions' timers live in the endpoint: a delay gets
its deadline from the ``now`` of the next ``datagrams_to_send``, ``get_timer`` is the earliest deadline, and
``handle_timer`` fires all that are due, in deadline order, equal deadlines in the order they were set."""

from __future__ import annotations

import base64
from ipaddress import ip_network

from ivr.sip.auth import DigestVerifier, static_credentials
from ivr.sip.endpoint import CallEnded, EndpointConfig, EndReason, IncomingCall, Peer, SipEndpoint
from ivr.sip.message import Request, Response, parse_message
from tests.unit.sip.test_endpoint import CALLER, QUEUE, SDP, Harness, answered_call, in_dialog, invite, reply


def new_call(ep: SipEndpoint, user: str) -> None:
    ep.call(request_uri=f"sip:{user}@127.0.0.1:5080", from_uri="sip:ivr@127.0.0.1:5060",
            to_uri=f"sip:{user}@127.0.0.1:5080", peer=QUEUE, sdp=SDP)  # fmt: skip


def request_uris(ep: SipEndpoint, now: float) -> list[str]:
    out = []
    for transmit in ep.datagrams_to_send(now):
        msg = parse_message(transmit.data)
        assert isinstance(msg, Request)
        out.append(msg.uri)
    return out


def test_a_delay_gets_its_deadline_from_the_next_datagrams_to_send() -> None:
    ep = SipEndpoint(EndpointConfig(host="127.0.0.1", port=5060))
    assert ep.get_timer() is None
    new_call(ep, "a")
    assert ep.get_timer() is None  # asked for (A 0.5 s, B 32 s), no deadline yet
    assert request_uris(ep, 1000.0) == ["sip:a@127.0.0.1:5080"]
    assert ep.get_timer() == 1000.5
    assert ep.datagrams_to_send(1000.2) == [] and ep.get_timer() == 1000.5  # a deadline stays put
    ep.handle_timer(1000.4999)
    assert ep.datagrams_to_send(1000.4999) == [] and ep.get_timer() == 1000.5  # not due yet: nothing fired


def test_handle_timer_fires_all_that_are_due_in_deadline_order_ties_in_the_order_set() -> None:
    ep = SipEndpoint(EndpointConfig(host="127.0.0.1", port=5060))
    new_call(ep, "b")
    new_call(ep, "a")  # asked for after b's: fires after b's at the same deadline, whatever the tokens' order
    assert request_uris(ep, 0.0) == ["sip:b@127.0.0.1:5080", "sip:a@127.0.0.1:5080"]
    new_call(ep, "c")
    assert request_uris(ep, 0.25) == ["sip:c@127.0.0.1:5080"]  # its A is due at 0.75
    assert ep.get_timer() == 0.5
    ep.handle_timer(1.0)  # late: all three A timers are due
    assert request_uris(ep, 1.0) == ["sip:b@127.0.0.1:5080", "sip:a@127.0.0.1:5080", "sip:c@127.0.0.1:5080"]
    assert ep.get_timer() == 2.0  # each A doubled to 1 s, from the now of datagrams_to_send


def test_equal_deadlines_fire_in_the_order_set_not_by_token() -> None:
    ep = SipEndpoint(EndpointConfig(host="127.0.0.1", port=5060))
    fired: list[tuple[int, str]] = []
    ep._timer_fired = fired.append  # type: ignore[method-assign]  # the order handle_timer fires in, nothing else
    ep._set_timer((2, "E"), 1.0)
    ep._set_timer((1, "E"), 1.0)
    ep._set_timer((3, "E"), 0.5)
    ep.datagrams_to_send(0.0)
    ep._set_timer((0, "E"), 0.5)  # set later: last among the deadlines at 1.0
    ep._set_timer((2, "E"), 0.75)  # set again: its first deadline (1.0) is gone, its new one is 1.25
    ep.datagrams_to_send(0.5)
    ep.handle_timer(2.0)
    assert fired == [(3, "E"), (1, "E"), (0, "E"), (2, "E")]
    assert ep.get_timer() is None


def test_a_timer_cleared_by_one_that_fires_before_it_does_not_fire() -> None:
    h = Harness()  # T1 0.5 s
    new_call(h.ep, "q")
    h.pump()
    h.advance(31.5)  # A at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5; the next A is due at 63.5, B at 32
    assert [t for t, _m, _p in h.sent] == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    h.sent.clear()
    assert h.ep.get_timer() == 32.0
    h.now = 64.0
    h.ep.handle_timer(64.0)  # B fires first, ends the transaction and clears A (63.5): A does not fire
    h.pump()
    assert h.sent == [] and h.ep.get_timer() is None
    (ended,) = [e for e in h.events if isinstance(e, CallEnded)]
    assert ended.reason is EndReason.TIMEOUT and ended.status == 408


def test_2xx_retransmissions_are_due_at_t1_doubling_to_t2_until_the_ack() -> None:
    h = Harness()
    _leg, tag = answered_call(h)
    deadlines = []
    while (deadline := h.ep.get_timer()) is not None and deadline < 16:
        deadlines.append(deadline)
        h.advance(deadline - h.now)
    assert deadlines == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert [t for t, m, _p in h.sent if isinstance(m, Response) and m.status == 200] == deadlines
    h.sent.clear()
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    h.advance(60)
    assert h.sent == [] and h.ep.get_timer() is None


def test_next_event_gives_the_events_in_order_then_none() -> None:
    ep = SipEndpoint(EndpointConfig(host="127.0.0.1", port=5060))
    ep.receive(invite(), CALLER, 5.0)
    ep.receive(invite(branch="z9hG4bK-2", call_id="call-2", from_tag="t2"), CALLER, 5.0)
    first, second = ep.next_event(), ep.next_event()
    assert isinstance(first, IncomingCall) and first.leg.call_id == "call-1"
    assert isinstance(second, IncomingCall) and second.leg.call_id == "call-2"
    assert ep.next_event() is None
    assert [parse_message(t.data).status for t in ep.datagrams_to_send(5.0)] == [100, 100]  # type: ignore[union-attr]


def test_the_heap_of_deadlines_does_not_keep_every_cleared_timer() -> None:
    h = Harness()
    for n in range(200):
        new_call(h.ep, f"q{n}")
        h.pump()
        (invite_sent,) = h.take()
        assert isinstance(invite_sent, Request)
        h.feed(reply(invite_sent, 200, body=SDP), peer=QUEUE)  # clears A and B; M (32 s) waits for retransmissions
        assert [m.method for m in h.take() if isinstance(m, Request)] == ["ACK"]
    assert len(h.ep._timer_serials) == 200
    assert len(h.ep._timer_heap) <= 2 * 200 + 64  # not 600: the cleared A and B entries are dropped on the way
    assert h.ep.get_timer() == 32.0


def test_draining_is_the_endpoints_state_not_its_configuration() -> None:
    h = Harness()
    assert h.ep.accepting
    h.ep.accepting = False
    h.feed(invite())
    assert h.statuses() == [100, 503]
    h.ep.accepting = True
    h.feed(invite(branch="z9hG4bK-2", call_id="call-2", from_tag="t2"))
    assert h.statuses() == [100] and isinstance(h.events[-1], IncomingCall)
    h.ep.shutdown()
    assert not h.ep.accepting


def test_the_wall_clock_is_a_separate_argument_for_digest_nonces() -> None:
    verifier = DigestVerifier(realm="ivr.test", secret=b"k" * 32, credentials=static_credentials({"alice": "pw"}))
    ep = SipEndpoint(EndpointConfig(host="127.0.0.1", port=5060, auth=verifier))
    ep.receive(invite(), Peer("127.0.0.1", 5070), 12.0, wall_clock=1_700_000_000.0)
    _trying, challenge = (parse_message(t.data) for t in ep.datagrams_to_send(12.0))
    assert isinstance(challenge, Response) and challenge.status == 401
    nonce = (challenge.headers.get("WWW-Authenticate") or "").split('nonce="')[1].split('"')[0]
    issued_ms = int.from_bytes(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))[:8], "big")
    assert issued_ms == 1_700_000_000_000  # stamped with the wall clock, not the driver's 12.0


def test_the_drivers_word_on_trust_stands_in_for_the_endpoints_own_check() -> None:
    """``receive(..., trusted=)`` is the driver's gate's answer (from the same networks as ``config.trusted``); the
    endpoint checks ``config.trusted`` itself only when no answer is given. An empty ``config.trusted`` refuses
    nobody and lets nobody skip digest authentication, whatever the flag says."""
    verifier = DigestVerifier(realm="ivr.test", secret=b"k" * 32, credentials=static_credentials({"alice": "pw"}))
    networks = (ip_network("10.0.0.0/8"),)
    ep = SipEndpoint(EndpointConfig(host="127.0.0.1", port=5060, trusted=networks, auth=verifier))
    inside, outside = Peer("10.1.2.3", 5070), Peer("203.0.113.9", 5070)

    def statuses(peer: Peer, trusted: bool | None, n: int) -> list[int]:
        data = invite(branch=f"z9hG4bK-t{n}", call_id=f"trust-{n}", from_tag=f"f{n}")
        ep.receive(data, peer, 1.0, trusted=trusted)
        return [parse_message(t.data).status for t in ep.datagrams_to_send(1.0)]  # type: ignore[union-attr]

    assert statuses(inside, None, 1) == [100]  # the endpoint's own check: trusted, so not challenged
    assert statuses(outside, None, 2) == [403]
    assert statuses(outside, True, 3) == [100]  # the flag decides, not the address
    assert statuses(inside, False, 4) == [403]
    assert ep.untrusted_messages == 2
    ep.config.trusted = ()
    assert statuses(outside, False, 5) == [100, 401]  # no trust list: nobody refused, everybody challenged
    assert statuses(inside, True, 6) == [100, 401]
