"""The SIP driver's gate: what ``admit`` says about a message goes to the endpoint with it (trust looked up once)."""

from __future__ import annotations

import ipaddress

from ivr.daemon.admission import SourceGate
from ivr.daemon.sip_driver import SipDriver
from ivr.sip.endpoint import EndpointConfig, Peer, SipEndpoint


class Spy(SipEndpoint):
    def __init__(self) -> None:
        super().__init__(EndpointConfig(host="127.0.0.1", port=5060, trusted=(ipaddress.ip_network("10.0.0.0/8"),)))
        self.told: list[bool | None] = []

    def receive(
        self, data: bytes, peer: Peer, now: float, *, wall_clock: float | None = None, trusted: bool | None = None
    ) -> None:
        self.told.append(trusted)


async def test_the_gates_answer_goes_to_the_endpoint_and_a_dropped_message_does_not() -> None:
    endpoint = Spy()
    gate = SourceGate(endpoint.config.trusted, max_messages_per_source=1.0, now=lambda: 0.0)
    driver = SipDriver(endpoint, lambda event: None, admit=gate.admit)
    driver.receive(b"x", Peer("10.1.2.3", 5060))
    driver.receive(b"x", Peer("192.0.2.1", 5060))
    driver.receive(b"x", Peer("192.0.2.1", 5060))
    driver.receive(b"x", Peer("192.0.2.1", 5060))  # over its burst of 2: dropped before the endpoint
    assert endpoint.told == [True, False, False]
    assert gate.dropped == 1
    ungated = SipDriver(endpoint, lambda event: None)
    ungated.receive(b"x", Peer("10.1.2.3", 5060))
    assert endpoint.told[-1] is None  # no gate: the endpoint checks config.trusted itself
    await driver.close()
    await ungated.close()
