"""RFC 3261 section 17 transactions (with RFC 6026), driven by hand: inputs are method calls, timers fire when the test
says so, and every action list is checked. Messages are the RFC 3261 section 24.2 call flow (Alice calls Bob through
atlanta.com and biloxi.com proxies) and real peers' traces (sipsak, SIPp)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.sip.events import ClearTimer, SetTimer
from ivr.sip.message import Message, Request, Response, make_response, parse_message
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
    ServerNonInviteState,
    ServerNonInviteTransaction,
    Terminated,
    TimedOut,
    TimerValues,
    TransactionError,
    TransportFailure,
    cancel_target_key,
    client_key,
    client_request_key,
    client_transaction_for,
    make_cancel,
    new_branch,
    server_key,
    server_transaction_for,
)


def sip(text: str) -> Message:
    """Parse SIP text written with bare newlines (as in the RFC) into a message."""
    return parse_message(text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n\r\n")


def req(text: str) -> Request:
    message = sip(text)
    assert isinstance(message, Request)
    return message


def resp(text: str) -> Response:
    message = sip(text)
    assert isinstance(message, Response)
    return message


# RFC 3261 24.2 F5: the INVITE as it reaches Bob (the SDP body is left out).
BOB_INVITE = """
INVITE sip:bob@192.0.2.4 SIP/2.0
Via: SIP/2.0/UDP server10.biloxi.com;branch=z9hG4bK4b43c2ff8.1;received=192.0.2.3
Via: SIP/2.0/UDP bigbox3.site3.atlanta.com;branch=z9hG4bK77ef4c2312983.1;received=192.0.2.2
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1
Max-Forwards: 68
To: Bob <sip:bob@biloxi.com>
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.com>
Content-Type: application/sdp
Content-Length: 0
"""

# The biloxi.com proxy's hop-by-hop ACK for a non-2xx final: same branch as its INVITE (RFC 3261 17.1.1.3).
BOB_ACK_NON_2XX = """
ACK sip:bob@192.0.2.4 SIP/2.0
Via: SIP/2.0/UDP server10.biloxi.com;branch=z9hG4bK4b43c2ff8.1;received=192.0.2.3
Max-Forwards: 70
To: Bob <sip:bob@biloxi.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 314159 ACK
Content-Length: 0
"""

# RFC 3261 24.2 F12: Alice's end-to-end ACK for the 200 OK, with a branch of its own.
BOB_ACK_2XX = """
ACK sip:bob@192.0.2.4 SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds9;received=192.0.2.1
Max-Forwards: 70
To: Bob <sip:bob@biloxi.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 314159 ACK
Content-Length: 0
"""

BOB_CANCEL = """
CANCEL sip:bob@192.0.2.4 SIP/2.0
Via: SIP/2.0/UDP server10.biloxi.com;branch=z9hG4bK4b43c2ff8.1;received=192.0.2.3
Max-Forwards: 70
To: Bob <sip:bob@biloxi.com>
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 314159 CANCEL
Content-Length: 0
"""

# RFC 3261 24.2 F1: Alice's INVITE as she sends it.
ALICE_INVITE = """
INVITE sip:bob@biloxi.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8
Max-Forwards: 70
To: Bob <sip:bob@biloxi.com>
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.com>
Content-Type: application/sdp
Content-Length: 0
"""

ALICE_VIA = "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1"
ALICE_DIALOG_HEADERS = """
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 314159 INVITE
"""


def alice_response(status_line: str, to: str = "To: Bob <sip:bob@biloxi.com>;tag=a6c85cf", extra: str = "") -> Response:
    return resp(f"SIP/2.0 {status_line}\n{ALICE_VIA}\n{to}{ALICE_DIALOG_HEADERS}{extra}Content-Length: 0\n")


# RFC 3261 24.2 F13 / F14: Bob's BYE and Alice's 200 OK.
BOB_BYE = """
BYE sip:alice@pc33.atlanta.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds10
Max-Forwards: 70
From: Bob <sip:bob@biloxi.com>;tag=a6c85cf
To: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 231 BYE
Content-Length: 0
"""


def bye_response(status_line: str) -> Response:
    return resp(
        f"""
SIP/2.0 {status_line}
Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds10;received=192.0.2.4
From: Bob <sip:bob@biloxi.com>;tag=a6c85cf
To: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 231 BYE
Content-Length: 0
"""
    )


# sipsak 0.9.8 OPTIONS ping as captured on loopback.
SIPSAK_OPTIONS = """
OPTIONS sip:ivr@127.0.0.1:5080 SIP/2.0
Via: SIP/2.0/UDP 127.0.1.1:38021;branch=z9hG4bK.7c0e2a51;rport;alias
From: sip:sipsak@127.0.1.1:38021;tag=49a3e4a4
To: sip:ivr@127.0.0.1:5080
Call-ID: 1235560612@127.0.1.1
CSeq: 1 OPTIONS
Contact: sip:sipsak@127.0.1.1:38021
Content-Length: 0
Max-Forwards: 70
User-Agent: sipsak 0.9.8.1
Accept: text/plain
"""

# An RFC 2543 UA: no magic cookie in its branch.
RFC2543_INVITE = """
INVITE sip:ivr@192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.20:5060;branch=7a83e1.0
From: "Old Phone" <sip:1001@192.0.2.20>;tag=77fe12
To: <sip:ivr@192.0.2.10>
Call-ID: 9f3e1a@192.0.2.20
CSeq: 101 INVITE
Contact: <sip:1001@192.0.2.20>
Content-Length: 0
"""


def with_header(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


# ---- a virtual-time driver ---------------------------------------------------------------------------------------


@dataclass
class Driver:
    """What the asyncio driver does with actions, on a virtual clock, checking the action protocol as it goes."""

    txn: ServerInviteTransaction | ServerNonInviteTransaction | ClientInviteTransaction | ClientNonInviteTransaction
    now: float = 0.0
    deadlines: dict[str, float] = field(default_factory=dict)
    starts: list[tuple[float, SetTimer[str]]] = field(default_factory=list)
    sent: list[tuple[float, Message]] = field(default_factory=list)
    events: list[tuple[float, Action]] = field(default_factory=list)
    terminated: bool = False

    def apply(self, actions: Sequence[Action]) -> list[Action]:
        actions = list(actions)
        if actions:
            assert not self.terminated, f"actions after Terminated: {actions}"
        for i, action in enumerate(actions):
            if isinstance(action, SetTimer):
                assert action.delay > 0
                self.deadlines[action.token] = self.now + action.delay
                self.starts.append((self.now, action))
            elif isinstance(action, ClearTimer):
                assert action.token in self.deadlines, f"cancel of a timer never armed: {action.token}"
                del self.deadlines[action.token]
            elif isinstance(action, Send):
                self.sent.append((self.now, action.message))
            else:
                if isinstance(action, Terminated):
                    assert i == len(actions) - 1, "Terminated must be the last action"
                    assert not self.deadlines, f"terminated with timers armed: {self.deadlines}"
                    self.terminated = True
                self.events.append((self.now, action))
        assert set(self.deadlines) == set(self.txn.armed_timers)
        return actions

    def fire_next(self) -> str:
        name = min(self.deadlines, key=lambda n: (self.deadlines[n], n))
        self.now = self.deadlines.pop(name)
        self.apply(self.txn.timer_fired(name))
        return name

    def run(self, until: float = float("inf")) -> None:
        while self.deadlines and min(self.deadlines.values()) <= until:
            self.fire_next()
        self.now = max(self.now, until) if until != float("inf") else self.now

    def send_times(self, what: Message) -> list[float]:
        return [t for t, m in self.sent if m is what]


def server_invite(*, reliable: bool = False, text: str = BOB_INVITE) -> tuple[ServerInviteTransaction, Driver]:
    txn = ServerInviteTransaction(req(text), reliable=reliable)
    return txn, Driver(txn)


# ---- server INVITE ------------------------------------------------------------------------------------------------


def test_server_invite_sends_100_trying_at_once() -> None:
    txn, drv = server_invite()
    actions = drv.apply(txn.start())
    assert len(actions) == 1 and isinstance(actions[0], Send)
    trying = actions[0].message
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.headers.values("Via") == txn.request.headers.values("Via")
    assert trying.to.tag is None
    assert txn.state is ServerInviteState.PROCEEDING
    assert not drv.deadlines


def test_lost_ack_retransmits_2xx_at_t1_doubling_to_t2_until_64_t1() -> None:
    txn, drv = server_invite()
    drv.apply(txn.start())
    ok = make_response(txn.request, 200, to_tag="a6c85cf")
    actions = drv.apply(txn.send_response(ok))
    assert actions == [Send(ok), SetTimer("2xx", 0.5), SetTimer("L", 32.0)]
    assert txn.state is ServerInviteState.ACCEPTED
    drv.run()
    assert drv.send_times(ok) == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [s.delay for _, s in drv.starts if s.token == "2xx"] == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4, 4]
    assert drv.events == [(32.0, TimedOut("L", "no ACK for 2xx")), (32.0, Terminated())]
    assert txn.terminated  # state is ServerInviteState.TERMINATED


def test_lost_ack_2xx_retransmission_runs_over_reliable_transports_too() -> None:
    txn, drv = server_invite(reliable=True)
    drv.apply(txn.start())
    ok = make_response(txn.request, 200, to_tag="a6c85cf")
    drv.apply(txn.send_response(ok))
    drv.run()
    assert drv.send_times(ok) == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert drv.events[0] == (32.0, TimedOut("L", "no ACK for 2xx"))


def test_ack_for_2xx_stops_retransmission_and_l_ends_quietly() -> None:
    txn, drv = server_invite()
    drv.apply(txn.start())
    ok = make_response(txn.request, 200, to_tag="a6c85cf")
    drv.apply(txn.send_response(ok))
    drv.run(until=1.6)  # sent at 0, 0.5, 1.5
    assert drv.apply(txn.receive_ack_for_2xx()) == [ClearTimer("2xx")]
    assert drv.apply(txn.receive_ack_for_2xx()) == []  # a retransmitted ACK
    assert txn.state is ServerInviteState.ACCEPTED
    # A retransmitted INVITE after the ACK is absorbed without a resend.
    assert drv.apply(txn.receive_request(req(BOB_INVITE))) == []
    drv.run()
    assert drv.send_times(ok) == [0, 0.5, 1.5]
    assert drv.events == [(32.0, Terminated())]


def test_retransmitted_invite_in_accepted_resends_the_2xx_without_passing_it_up() -> None:
    txn, drv = server_invite()
    drv.apply(txn.start())
    ok = make_response(txn.request, 200, to_tag="a6c85cf")
    drv.apply(txn.send_response(ok))
    assert drv.apply(txn.receive_request(req(BOB_INVITE))) == [Send(ok)]
    assert txn.state is ServerInviteState.ACCEPTED


def test_ack_for_2xx_with_its_own_branch_does_not_match_the_invite_transaction() -> None:
    txn, _ = server_invite()
    ack = req(BOB_ACK_2XX)
    assert server_key(ack) != txn.key
    txn.start()
    with pytest.raises(TransactionError, match=r"17\.2\.3"):
        txn.receive_request(ack)


def test_lost_ack_for_non_2xx_final_retransmits_with_g_and_ends_at_timer_h() -> None:
    txn, drv = server_invite()
    drv.apply(txn.start())
    busy = make_response(txn.request, 486, to_tag="a6c85cf")
    assert drv.apply(txn.send_response(busy)) == [Send(busy), SetTimer("G", 0.5), SetTimer("H", 32.0)]
    assert txn.state is ServerInviteState.COMPLETED
    drv.run()
    assert drv.send_times(busy) == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [s.delay for _, s in drv.starts if s.token == "G"] == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4, 4]
    assert drv.events == [(32.0, TimedOut("H", "no ACK for non-2xx final response")), (32.0, Terminated())]


def test_ack_for_non_2xx_confirms_and_timer_i_terminates() -> None:
    txn, drv = server_invite()
    drv.apply(txn.start())
    busy = make_response(txn.request, 486, to_tag="a6c85cf")
    drv.apply(txn.send_response(busy))
    ack = req(BOB_ACK_NON_2XX)
    assert server_key(ack) == txn.key
    actions = drv.apply(txn.receive_request(ack))
    assert actions == [ClearTimer("G"), ClearTimer("H"), SetTimer("I", 5.0)]
    assert txn.state is ServerInviteState.CONFIRMED
    # Retransmitted ACKs and INVITEs are absorbed in Confirmed.
    assert drv.apply(txn.receive_request(ack)) == []
    assert drv.apply(txn.receive_request(req(BOB_INVITE))) == []
    assert drv.fire_next() == "I"
    assert drv.events == [(5.0, Terminated())]
    assert txn.terminated  # state is ServerInviteState.TERMINATED


def test_reliable_transport_has_no_timer_g_and_timer_i_is_zero() -> None:
    txn, drv = server_invite(reliable=True)
    drv.apply(txn.start())
    busy = make_response(txn.request, 486, to_tag="a6c85cf")
    assert drv.apply(txn.send_response(busy)) == [Send(busy), SetTimer("H", 32.0)]
    assert drv.apply(txn.receive_request(req(BOB_ACK_NON_2XX))) == [ClearTimer("H"), Terminated()]
    assert txn.state is ServerInviteState.TERMINATED


@pytest.mark.parametrize("status", [100, 180, 486])
def test_retransmitted_invite_resends_the_latest_response(status: int) -> None:
    txn, drv = server_invite()
    drv.apply(txn.start())
    if status != 100:
        drv.apply(txn.send_response(make_response(txn.request, status, to_tag="a6c85cf")))
    latest = drv.sent[-1][1]
    assert isinstance(latest, Response) and latest.status == status
    actions = drv.apply(txn.receive_request(req(BOB_INVITE)))
    assert actions == [Send(latest)]


def test_provisional_after_final_names_the_rule() -> None:
    txn, _ = server_invite()
    txn.start()
    txn.send_response(make_response(txn.request, 486, to_tag="t"))
    with pytest.raises(TransactionError, match=r"RFC 3261 17\.2\.1: a final response was already sent"):
        txn.send_response(make_response(txn.request, 180, to_tag="t"))
    with pytest.raises(TransactionError, match="final response was already sent"):
        txn.send_response(make_response(txn.request, 200, to_tag="t"))


def test_2xx_may_be_repeated_by_the_tu_but_nothing_else_follows_it() -> None:
    txn, drv = server_invite()
    drv.apply(txn.start())
    ok = make_response(txn.request, 200, to_tag="t")
    drv.apply(txn.send_response(ok))
    assert drv.apply(txn.send_response(ok)) == [Send(ok)]
    with pytest.raises(TransactionError, match="final response was already sent"):
        txn.send_response(make_response(txn.request, 603, to_tag="t"))


def test_ack_for_2xx_before_any_2xx_is_refused() -> None:
    txn, _ = server_invite()
    txn.start()
    with pytest.raises(TransactionError, match=r"13\.3\.1\.4"):
        txn.receive_ack_for_2xx()


def test_response_not_built_from_the_request_is_refused() -> None:
    txn, _ = server_invite()
    txn.start()
    other = make_response(req(RFC2543_INVITE), 200, to_tag="t")
    with pytest.raises(TransactionError, match=r"8\.2\.6\.2"):
        txn.send_response(other)


def test_transaction_must_be_started_once() -> None:
    txn, _ = server_invite()
    with pytest.raises(TransactionError, match="start"):
        txn.send_response(make_response(txn.request, 180))
    txn.start()
    with pytest.raises(TransactionError, match="already started"):
        txn.start()


def test_stale_timer_is_ignored_and_unknown_timer_is_refused() -> None:
    txn, _ = server_invite()
    txn.start()
    assert txn.timer_fired("H") == []
    with pytest.raises(TransactionError, match="no timer 'B'"):
        txn.timer_fired("B")


def test_transport_error_reports_and_terminates() -> None:
    txn, drv = server_invite()
    drv.apply(txn.start())
    drv.apply(txn.send_response(make_response(txn.request, 486, to_tag="t")))
    actions = drv.apply(txn.transport_error("ICMP port unreachable"))
    assert actions == [
        TransportFailure("ICMP port unreachable"),
        ClearTimer("G"),
        ClearTimer("H"),
        Terminated(),
    ]


def test_ack_reusing_the_invite_branch_in_accepted_is_passed_up() -> None:
    # RFC 2543 peers ACK a 2xx on the INVITE's key; RFC 6026 hands that ACK to the TU.
    txn, drv = server_invite(text=RFC2543_INVITE)
    drv.apply(txn.start())
    ok = make_response(txn.request, 200, to_tag="t1")
    drv.apply(txn.send_response(ok))
    ack_text = with_header(RFC2543_INVITE, "INVITE sip:", "ACK sip:").replace("101 INVITE", "101 ACK")
    ack = req(with_header(ack_text, "To: <sip:ivr@192.0.2.10>", "To: <sip:ivr@192.0.2.10>;tag=t1"))
    assert drv.apply(txn.receive_request(ack)) == [ClearTimer("2xx"), Deliver(ack)]


# ---- server non-INVITE --------------------------------------------------------------------------------------------


def test_server_non_invite_absorbs_retransmissions_and_resends_last_response() -> None:
    options = req(SIPSAK_OPTIONS)
    txn = ServerNonInviteTransaction(options)
    drv = Driver(txn)
    assert drv.apply(txn.start()) == []
    assert drv.apply(txn.receive_request(req(SIPSAK_OPTIONS))) == []  # Trying: nothing to resend
    trying = make_response(options, 100)
    assert drv.apply(txn.send_response(trying)) == [Send(trying)]
    assert txn.state is ServerNonInviteState.PROCEEDING
    assert drv.apply(txn.receive_request(req(SIPSAK_OPTIONS))) == [Send(trying)]
    ok = make_response(options, 200, to_tag="ivr1")
    assert drv.apply(txn.send_response(ok)) == [Send(ok), SetTimer("J", 32.0)]
    assert drv.apply(txn.receive_request(req(SIPSAK_OPTIONS))) == [Send(ok)]
    with pytest.raises(TransactionError, match=r"17\.2\.2: a final response was already sent"):
        txn.send_response(make_response(options, 500))
    assert drv.fire_next() == "J" and drv.now == 32.0
    assert drv.events == [(32.0, Terminated())]


def test_server_non_invite_timer_j_is_zero_over_reliable_transports() -> None:
    options = req(SIPSAK_OPTIONS)
    txn = ServerNonInviteTransaction(options, reliable=True)
    txn.start()
    ok = make_response(options, 200, to_tag="ivr1")
    assert txn.send_response(ok) == [Send(ok), Terminated()]
    assert txn.state is ServerNonInviteState.TERMINATED


def test_server_transaction_for_picks_the_machine_and_refuses_ack() -> None:
    assert isinstance(server_transaction_for(req(BOB_INVITE)), ServerInviteTransaction)
    assert isinstance(server_transaction_for(req(SIPSAK_OPTIONS)), ServerNonInviteTransaction)
    with pytest.raises(TransactionError, match="ACK never creates"):
        server_transaction_for(req(BOB_ACK_2XX))


# ---- client INVITE ------------------------------------------------------------------------------------------------


def client_invite(*, reliable: bool = False, text: str = ALICE_INVITE) -> tuple[ClientInviteTransaction, Driver]:
    txn = ClientInviteTransaction(req(text), reliable=reliable)
    return txn, Driver(txn)


def test_client_invite_timer_a_retransmits_until_timer_b() -> None:
    txn, drv = client_invite()
    actions = drv.apply(txn.start())
    assert actions == [Send(txn.request), SetTimer("A", 0.5), SetTimer("B", 32.0)]
    drv.run()
    assert drv.send_times(txn.request) == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [s.delay for _, s in drv.starts if s.token == "A"] == [0.5, 1, 2, 4, 8, 16, 32]
    assert drv.events == [(32.0, TimedOut("B", "no response to INVITE")), (32.0, Terminated())]
    assert txn.state is ClientInviteState.TERMINATED


def test_client_invite_over_reliable_transport_has_no_timer_a() -> None:
    txn, drv = client_invite(reliable=True)
    assert drv.apply(txn.start()) == [Send(txn.request), SetTimer("B", 32.0)]


def test_provisional_response_stops_timer_a_and_is_delivered() -> None:
    txn, drv = client_invite()
    drv.apply(txn.start())
    drv.run(until=0.6)
    trying = alice_response("100 Trying", to="To: Bob <sip:bob@biloxi.com>")
    actions = drv.apply(txn.receive_response(trying))
    assert actions == [ClearTimer("A"), ClearTimer("B"), Deliver(trying)]
    assert txn.state is ClientInviteState.PROCEEDING
    ringing = alice_response("180 Ringing")
    assert drv.apply(txn.receive_response(ringing)) == [Deliver(ringing)]
    assert drv.send_times(txn.request) == [0, 0.5]


def test_non_2xx_final_is_acked_with_the_same_branch_and_the_response_to_tag() -> None:
    text = with_header(ALICE_INVITE, "Max-Forwards: 70", "Route: <sip:bigbox3.site3.atlanta.com;lr>\nMax-Forwards: 70")
    txn, drv = client_invite(text=text)
    drv.apply(txn.start())
    busy = alice_response("486 Busy Here")
    actions = drv.apply(txn.receive_response(busy))
    assert actions[:3] == [ClearTimer("A"), ClearTimer("B"), Deliver(busy)]
    assert actions[4] == SetTimer("D", 32.0)
    send = actions[3]
    assert isinstance(send, Send)
    ack = send.message
    assert isinstance(ack, Request)
    assert ack.method == "ACK" and ack.uri == "sip:bob@biloxi.com"
    assert ack.headers.values("Via") == ["SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8"]
    assert ack.to.tag == "a6c85cf"
    assert ack.from_.tag == "1928301774"
    assert ack.headers.get("CSeq") == "314159 ACK"
    assert ack.headers.values("Route") == ["<sip:bigbox3.site3.atlanta.com;lr>"]
    assert ack.call_id == "a84b4c76e66710"
    assert bytes(parse_message(bytes(ack))) == bytes(ack)
    assert txn.state is ClientInviteState.COMPLETED
    # A retransmitted 486 is ACKed again and not delivered.
    assert drv.apply(txn.receive_response(alice_response("486 Busy Here"))) == [Send(ack)]
    assert drv.fire_next() == "D"
    assert drv.events[-1] == (32.0, Terminated())


def test_non_2xx_final_over_reliable_transport_terminates_after_the_ack() -> None:
    txn, drv = client_invite(reliable=True)
    drv.apply(txn.start())
    actions = drv.apply(txn.receive_response(alice_response("603 Decline")))
    assert [type(a) for a in actions] == [ClearTimer, Deliver, Send, Terminated]


def test_2xx_is_delivered_and_retransmitted_2xx_delivered_again_until_timer_m() -> None:
    txn, drv = client_invite()
    drv.apply(txn.start())
    drv.apply(txn.receive_response(alice_response("180 Ringing")))
    ok = alice_response("200 OK", extra="Contact: <sip:bob@192.0.2.4>\n")
    assert drv.apply(txn.receive_response(ok)) == [Deliver(ok), SetTimer("M", 32.0)]
    assert txn.state is ClientInviteState.ACCEPTED
    again = alice_response("200 OK", extra="Contact: <sip:bob@192.0.2.4>\n")
    assert drv.apply(txn.receive_response(again)) == [Deliver(again)]
    # Anything but a 2xx is dropped in Accepted; no ACK is built by the transaction for a 2xx.
    assert drv.apply(txn.receive_response(alice_response("486 Busy Here"))) == []
    assert not any(isinstance(m, Request) and m.method == "ACK" for _, m in drv.sent)
    assert drv.fire_next() == "M"
    assert drv.events[-1] == (32.0, Terminated())


def test_2xx_in_calling_stops_a_and_b() -> None:
    txn, drv = client_invite()
    drv.apply(txn.start())
    ok = alice_response("200 OK")
    assert drv.apply(txn.receive_response(ok)) == [ClearTimer("A"), ClearTimer("B"), Deliver(ok), SetTimer("M", 32)]


def test_cancel_must_wait_for_a_provisional_and_then_bounds_the_wait_for_a_final() -> None:
    txn, drv = client_invite()
    drv.apply(txn.start())
    with pytest.raises(TransactionError, match=r"RFC 3261 9\.1"):
        txn.cancel_sent()
    drv.apply(txn.receive_response(alice_response("180 Ringing")))
    assert drv.apply(txn.cancel_sent()) == [SetTimer("cancel", 32.0)]
    drv.run()
    assert drv.events[-2:] == [
        (32.0, TimedOut("cancel", "no final response to INVITE 64*T1 after CANCEL")),
        (32.0, Terminated()),
    ]


def test_487_after_cancel_is_acked_and_stops_the_cancel_wait() -> None:
    txn, drv = client_invite()
    drv.apply(txn.start())
    drv.apply(txn.receive_response(alice_response("180 Ringing")))
    drv.apply(txn.cancel_sent())
    actions = drv.apply(txn.receive_response(alice_response("487 Request Terminated")))
    assert actions[0] == ClearTimer("cancel")
    assert txn.state is ClientInviteState.COMPLETED


def test_make_cancel_copies_the_invite_branch_and_cseq_number() -> None:
    invite = req(ALICE_INVITE)
    cancel = make_cancel(invite)
    assert cancel.method == "CANCEL" and cancel.uri == invite.uri
    assert cancel.headers.values("Via") == invite.headers.values("Via")[:1]
    assert cancel.headers.get("CSeq") == "314159 CANCEL"
    assert cancel.to.tag is None
    assert client_request_key(cancel) != client_request_key(invite)
    assert client_request_key(cancel).branch == client_request_key(invite).branch
    parse_message(bytes(cancel))


def test_response_for_another_transaction_is_refused() -> None:
    txn, _ = client_invite()
    txn.start()
    with pytest.raises(TransactionError, match=r"17\.1\.3"):
        txn.receive_response(bye_response("200 OK"))


def test_client_request_without_magic_cookie_branch_is_refused() -> None:
    with pytest.raises(TransactionError, match=r"8\.1\.1\.7"):
        ClientInviteTransaction(req(RFC2543_INVITE))


# ---- client non-INVITE --------------------------------------------------------------------------------------------


def test_client_non_invite_timer_e_doubles_to_t2_until_timer_f() -> None:
    bye = req(BOB_BYE)
    txn = ClientNonInviteTransaction(bye)
    drv = Driver(txn)
    assert drv.apply(txn.start()) == [Send(bye), SetTimer("E", 0.5), SetTimer("F", 32.0)]
    drv.run()
    assert drv.send_times(bye) == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [s.delay for _, s in drv.starts if s.token == "E"] == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4, 4]
    assert drv.events == [(32.0, TimedOut("F", "no final response to BYE")), (32.0, Terminated())]
    assert txn.state is ClientNonInviteState.TERMINATED


def test_client_non_invite_in_proceeding_retransmits_at_t2() -> None:
    bye = req(BOB_BYE)
    txn = ClientNonInviteTransaction(bye)
    drv = Driver(txn)
    drv.apply(txn.start())
    drv.run(until=0.5)  # E fired once, re-armed at 1 s
    trying = bye_response("100 Trying")
    assert drv.apply(txn.receive_response(trying)) == [Deliver(trying)]
    assert txn.state is ClientNonInviteState.PROCEEDING
    drv.run(until=10)
    assert drv.send_times(bye) == [0, 0.5, 1.5, 5.5, 9.5]
    assert [s.delay for _, s in drv.starts if s.token == "E"] == [0.5, 1, 4, 4, 4]


def test_client_non_invite_final_waits_timer_k_and_absorbs_retransmissions() -> None:
    bye = req(BOB_BYE)
    txn = ClientNonInviteTransaction(bye)
    drv = Driver(txn)
    drv.apply(txn.start())
    ok = bye_response("200 OK")
    assert drv.apply(txn.receive_response(ok)) == [ClearTimer("E"), ClearTimer("F"), Deliver(ok), SetTimer("K", 5)]
    assert drv.apply(txn.receive_response(bye_response("200 OK"))) == []
    assert drv.fire_next() == "K"
    assert drv.events[-1] == (5.0, Terminated())


def test_client_non_invite_timer_k_is_zero_over_reliable_transports() -> None:
    bye = req(BOB_BYE)
    txn = ClientNonInviteTransaction(bye, reliable=True)
    assert txn.start() == [Send(bye), SetTimer("F", 32.0)]
    ok = bye_response("481 Call/Transaction Does Not Exist")
    assert txn.receive_response(ok) == [ClearTimer("F"), Deliver(ok), Terminated()]


def test_custom_timer_values_scale_the_schedule() -> None:
    bye = req(BOB_BYE)
    txn = ClientNonInviteTransaction(bye, timers=TimerValues(t1=0.1, t2=0.4, t4=1.0))
    drv = Driver(txn)
    drv.apply(txn.start())
    drv.run()
    assert [round(s.delay, 9) for _, s in drv.starts if s.token == "E"][:5] == [0.1, 0.2, 0.4, 0.4, 0.4]
    assert drv.events[0][0] == pytest.approx(6.4)


def test_timer_values_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="T1"):
        TimerValues(t1=0)
    with pytest.raises(ValueError, match="T2"):
        TimerValues(t1=2, t2=1)


def test_client_transaction_for_refuses_ack() -> None:
    assert isinstance(client_transaction_for(req(BOB_BYE)), ClientNonInviteTransaction)
    with pytest.raises(TransactionError):
        client_transaction_for(req(BOB_ACK_2XX))


# ---- transaction keys ---------------------------------------------------------------------------------------------


def test_retransmitted_invite_and_non_2xx_ack_share_the_invite_key() -> None:
    key = server_key(req(BOB_INVITE))
    assert key.method == "INVITE" and key.branch == "z9hG4bK4b43c2ff8.1"
    assert key.sent_by == "server10.biloxi.com:"
    assert server_key(req(BOB_INVITE)) == key
    assert server_key(req(BOB_ACK_NON_2XX)) == key
    assert server_key(req(BOB_ACK_2XX)) != key


def test_cancel_has_its_own_key_and_targets_the_invite() -> None:
    invite_key = server_key(req(BOB_INVITE))
    cancel = req(BOB_CANCEL)
    assert server_key(cancel) != invite_key
    assert server_key(cancel).method == "CANCEL"
    assert cancel_target_key(cancel) == invite_key
    with pytest.raises(TransactionError):
        cancel_target_key(req(BOB_INVITE))


def test_same_branch_from_another_sent_by_is_another_transaction() -> None:
    other = with_header(BOB_INVITE, "UDP server10.biloxi.com;", "UDP server11.biloxi.com;")
    assert server_key(req(other)) != server_key(req(BOB_INVITE))


def test_rfc2543_fallback_matches_retransmission_and_ack_but_not_a_new_request() -> None:
    key = server_key(req(RFC2543_INVITE))
    assert key.legacy
    assert server_key(req(RFC2543_INVITE)) == key
    ack_text = with_header(RFC2543_INVITE, "INVITE sip:", "ACK sip:").replace("101 INVITE", "101 ACK")
    ack_text = with_header(ack_text, "To: <sip:ivr@192.0.2.10>", "To: <sip:ivr@192.0.2.10>;tag=ivr-tag")
    assert server_key(req(ack_text)) == key
    cancel_text = with_header(RFC2543_INVITE, "INVITE sip:", "CANCEL sip:").replace("101 INVITE", "101 CANCEL")
    assert server_key(req(cancel_text)) != key
    assert cancel_target_key(req(cancel_text)) == key
    for old, new in [
        ("CSeq: 101 INVITE", "CSeq: 102 INVITE"),
        ("Call-ID: 9f3e1a@", "Call-ID: 9f3e1b@"),
        (";tag=77fe12", ";tag=77fe13"),
        ("INVITE sip:ivr@192.0.2.10 ", "INVITE sip:ivr2@192.0.2.10 "),
        ("192.0.2.20:5060;branch=7a83e1.0", "192.0.2.21:5060;branch=7a83e1.0"),
    ]:
        assert server_key(req(with_header(RFC2543_INVITE, old, new))) != key, new


def test_rfc2543_request_without_any_branch_still_gets_a_key() -> None:
    text = with_header(RFC2543_INVITE, ";branch=7a83e1.0", "")
    assert server_key(req(text)) == server_key(req(text))
    assert server_key(req(text)) != server_key(req(RFC2543_INVITE))


def test_client_key_matches_by_branch_and_cseq_method() -> None:
    invite = req(ALICE_INVITE)
    assert client_key(alice_response("180 Ringing")) == client_request_key(invite)
    response_to_cancel = resp(
        f"SIP/2.0 200 OK\n{ALICE_VIA}\nTo: Bob <sip:bob@biloxi.com>;tag=a6c85cf\n"
        "From: Alice <sip:alice@atlanta.com>;tag=1928301774\nCall-ID: a84b4c76e66710\nCSeq: 314159 CANCEL\n"
        "Content-Length: 0\n"
    )
    assert client_key(response_to_cancel) != client_request_key(invite)
    assert client_key(response_to_cancel) == client_request_key(make_cancel(invite))
    # A server key never equals a client key, so one dict could even hold both.
    assert server_key(invite) != client_request_key(invite)


def test_new_branch_has_the_magic_cookie_and_is_unique() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith("z9hG4bK") and len(b) > 7 + 16 for b in branches)


# ---- property: any sequence of inputs ends Terminated ------------------------------------------------------------

STATUSES = [100, 180, 183, 200, 202, 300, 302, 401, 404, 486, 487, 500, 503, 603]

steps = st.lists(
    st.one_of(
        st.tuples(st.just("response"), st.sampled_from(STATUSES)),
        st.tuples(st.just("retransmit"), st.just(0)),
        st.tuples(st.just("ack"), st.just(0)),
        st.tuples(st.just("ack2xx"), st.just(0)),
        st.tuples(st.just("cancel"), st.just(0)),
        st.tuples(st.just("fire"), st.integers(0, 7)),
        st.tuples(st.just("transport_error"), st.just(0)),
    ),
    max_size=40,
)

LOCAL_CALLS = {"response", "ack2xx", "cancel"}  # for server transactions "response" is the TU sending one


def _run_server(kind: str, reliable: bool, script: list[tuple[str, int]]) -> None:
    request = req(BOB_INVITE) if kind == "invite" else req(SIPSAK_OPTIONS)
    txn: ServerInviteTransaction | ServerNonInviteTransaction
    txn = (
        ServerInviteTransaction(request, reliable=reliable)
        if kind == "invite"
        else ServerNonInviteTransaction(request, reliable=reliable)
    )
    drv = Driver(txn)
    drv.apply(txn.start())
    ack = req(BOB_ACK_NON_2XX) if kind == "invite" else None
    for op, arg in script:
        try:
            if op == "response":
                drv.apply(txn.send_response(make_response(request, arg, to_tag="a6c85cf")))
            elif op == "retransmit":
                drv.apply(txn.receive_request(req(BOB_INVITE) if kind == "invite" else req(SIPSAK_OPTIONS)))
            elif op == "ack" and ack is not None:
                assert isinstance(txn, ServerInviteTransaction)
                drv.apply(txn.receive_request(ack))
            elif op == "ack2xx" and isinstance(txn, ServerInviteTransaction):
                drv.apply(txn.receive_ack_for_2xx())
            elif op == "fire" and drv.deadlines:
                names = sorted(drv.deadlines)
                name = names[arg % len(names)]
                del drv.deadlines[name]
                drv.apply(txn.timer_fired(name))
            elif op == "transport_error":
                drv.apply(txn.transport_error())
        except TransactionError:
            assert op in LOCAL_CALLS, f"{op} must not raise"
    if txn.state in (ServerInviteState.PROCEEDING, ServerNonInviteState.TRYING, ServerNonInviteState.PROCEEDING):
        drv.apply(txn.send_response(make_response(request, 486, to_tag="a6c85cf")))
    drv.run()
    assert drv.terminated
    assert txn.state in (ServerInviteState.TERMINATED, ServerNonInviteState.TERMINATED)
    assert sum(isinstance(e, Terminated) for _, e in drv.events) == 1


def _run_client(kind: str, reliable: bool, script: list[tuple[str, int]]) -> None:
    request = req(ALICE_INVITE) if kind == "invite" else req(BOB_BYE)
    txn: ClientInviteTransaction | ClientNonInviteTransaction
    txn = (
        ClientInviteTransaction(request, reliable=reliable)
        if kind == "invite"
        else ClientNonInviteTransaction(request, reliable=reliable)
    )
    drv = Driver(txn)
    drv.apply(txn.start())
    for op, arg in script:
        try:
            if op == "response":
                if kind == "non-invite":
                    response = bye_response(f"{arg} X")
                elif arg == 100:
                    response = alice_response("100 Trying", to="To: Bob <sip:bob@biloxi.com>")
                else:
                    response = alice_response(f"{arg} X")
                drv.apply(txn.receive_response(response))
            elif op == "cancel" and isinstance(txn, ClientInviteTransaction):
                drv.apply(txn.cancel_sent())
            elif op == "fire" and drv.deadlines:
                names = sorted(drv.deadlines)
                name = names[arg % len(names)]
                del drv.deadlines[name]
                drv.apply(txn.timer_fired(name))
            elif op == "transport_error":
                drv.apply(txn.transport_error())
        except TransactionError:
            assert op == "cancel", f"{op} must not raise"
    if txn.state is ClientInviteState.PROCEEDING:
        assert isinstance(txn, ClientInviteTransaction)
        drv.apply(txn.cancel_sent())
    drv.run()
    assert drv.terminated
    assert txn.state in (ClientInviteState.TERMINATED, ClientNonInviteState.TERMINATED)
    assert sum(isinstance(e, Terminated) for _, e in drv.events) == 1


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["invite", "non-invite"]), reliable=st.booleans(), script=steps)
def test_any_server_input_sequence_ends_terminated_once_timers_fire(
    kind: str, reliable: bool, script: list[tuple[str, int]]
) -> None:
    _run_server(kind, reliable, script)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["invite", "non-invite"]), reliable=st.booleans(), script=steps)
def test_any_client_input_sequence_ends_terminated_once_timers_fire(
    kind: str, reliable: bool, script: list[tuple[str, int]]
) -> None:
    _run_client(kind, reliable, script)
