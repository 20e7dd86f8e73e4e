"""ivr.sip.events and ivr.sip.primitives: the one timer pair the transactions and the REGISTER client emit (the
endpoint keeps all their timers), and the old import paths that still work."""

from __future__ import annotations

import dataclasses

import pytest

from ivr.sip import endpoint, events, leg, primitives, registration
from ivr.sip.endpoint import EndpointConfig, SipEndpoint
from ivr.sip.events import ClearTimer, Peer, SetTimer, Transmit
from ivr.sip.message import Request, parse_message
from ivr.sip.registration import Registration, RegistrationConfig
from ivr.sip.transaction import ClientNonInviteTransaction

BYE = (
    b"BYE sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-bye\r\n"
    b"From: <sip:ivr@127.0.0.1>;tag=a\r\nTo: <sip:alice@127.0.0.1>;tag=b\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_the_transactions_and_the_register_client_share_one_timer_pair_the_endpoint_keeps_its_own() -> None:
    bye = parse_message(BYE)
    assert isinstance(bye, Request)
    txn_timers = [a for a in ClientNonInviteTransaction(bye).start() if isinstance(a, SetTimer)]
    assert txn_timers == [SetTimer("E", 0.5), SetTimer("F", 32.0)]

    # The endpoint's transactions ask for the same timers (A 0.5 s, B 32 s); it keeps them and shows the earliest.
    ep = SipEndpoint(EndpointConfig(host="127.0.0.1", port=5060))
    ep.call(request_uri="sip:q@127.0.0.1:5080", from_uri="sip:ivr@127.0.0.1", to_uri="sip:q@127.0.0.1:5080",
            peer=Peer("127.0.0.1", 5080), sdp=b"")  # fmt: skip
    assert [type(out) for out in ep.datagrams_to_send(100.0)] == [Transmit]
    assert ep.get_timer() == 100.5  # A
    ep.handle_timer(100.5)
    assert len(ep.datagrams_to_send(100.5)) == 1 and ep.get_timer() == 101.5  # retransmitted; A doubled
    assert ep.next_event() is None

    # A REGISTER runs in the endpoint's transaction table too: its E and F are the endpoint's timers ...
    reg_ep = SipEndpoint(EndpointConfig(host="192.0.2.10", port=5060))
    reg = reg_ep.register(
        RegistrationConfig(
            registrar="sip:pbx.example.com", aor="sip:ivr@pbx.example.com", contact="sip:ivr@192.0.2.10",
            local_host="192.0.2.10", local_port=5060,
        )
    )  # fmt: skip
    assert [t.peer for t in reg_ep.datagrams_to_send(100.0)] == [Peer("pbx.example.com", 5060)]
    assert reg_ep.get_timer() == 100.5  # E
    # ... and the REGISTER client's own refresh and retry are the same pair, for the endpoint to keep.
    machine = Registration(reg.config, rng=lambda: 0.0)
    machine.start()
    assert machine.timed_out("timer F")[0] == SetTimer("retry", 30.0)
    assert machine.armed_timers == {"retry": 30.0}
    assert machine.stop()[0] == ClearTimer("retry")


def test_timer_actions_are_immutable_values() -> None:
    assert SetTimer("B", 32) == SetTimer("B", 32.0)
    assert hash(ClearTimer(("x", 1))) == hash(ClearTimer(("x", 1)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        SetTimer("B", 32.0).delay = 1.0  # type: ignore[misc]
    assert SetTimer[str]("B", 1.0) == SetTimer("B", 1.0)  # a subscripted class can still be called


@pytest.mark.parametrize("name", sorted(set(events.__all__) - {"EndpointTimer"}))
def test_the_endpoint_still_exports_every_event_and_output_type(name: str) -> None:
    assert name in endpoint.__all__
    assert getattr(endpoint, name) is getattr(events, name)


@pytest.mark.parametrize("name", ["Leg", "LegState", "Transfer"])
def test_the_endpoint_still_exports_the_leg_types(name: str) -> None:
    assert name in endpoint.__all__
    assert getattr(endpoint, name) is getattr(leg, name)


@pytest.mark.parametrize(("name", "home"), [
    ("Peer", primitives), ("Transmit", primitives), ("SetTimer", primitives), ("ClearTimer", primitives),
    ("EndReason", leg), ("Registered", registration), ("RegistrationFailed", registration),
    ("Unregistered", registration),
])  # fmt: skip
def test_the_events_module_re_exports_the_types_that_moved_below_it(name: str, home: object) -> None:
    assert getattr(events, name) is getattr(home, name)
