"""A call leg (one INVITE dialog between a peer and us) and the state machine of its life, in the style of h11's
``_state.py``: the states are :class:`LegState`, what moves a leg is a :class:`LegEvent`, the legal moves are the
table :data:`LEG_TRANSITIONS` (``(state, event) -> next state``), and :func:`next_leg_state` is the one place a
move is checked: a pair the table lacks raises :class:`LegStateError` (a bug of the endpoint, never the peer's doing:
the endpoint checks what a peer sends before it moves a leg).

The life of a leg, both ways it starts::

    we received the INVITE (UAS)                        we sent the INVITE (UAC)
    INCOMING --ANSWER_SENT--> ANSWERED                  INCOMING --ANSWER_RECEIVED--> CONFIRMED
    ANSWERED --ACK_RECEIVED--> CONFIRMED

    INCOMING --NOT_ANSWERED--> ENDED            (rejected, cancelled, our INVITE failed or timed out)
    ANSWERED, CONFIRMED --BYE_SENT--> ENDING    (from ANSWERED only when the ACK never came, RFC 3261 13.3.1.4)
    ANSWERED, CONFIRMED, ENDING --BYE_RECEIVED--> ENDED
    ENDING, ENDED --BYE_DONE--> ENDED           (our BYE was answered or timed out; ENDED when the peer's BYE
                                                 crossed ours)

What the table does not hold, on purpose (they choose which event the endpoint applies next, and keep
:class:`LegState` the five values code outside ``ivr.sip`` compares against):

* ``bye_pending`` / ``end_reason_wanted``: :meth:`~ivr.sip.endpoint.SipEndpoint.hangup` in ANSWERED; the BYE
  waits for the ACK (ACK_RECEIVED, then BYE_SENT at once) or for its timeout (BYE_SENT from ANSWERED) (15.1.1).
* ``provisional``, ``cancel_pending``, ``cancel_requested``: an outgoing leg in INCOMING that the application
  cancelled: the CANCEL waits for the first 1xx (RFC 3261 9.1); a 2xx that races it is ACKed and ended with a BYE
  (ANSWER_RECEIVED, then BYE_SENT at once).
* ``end_reason``: set once, when :class:`~ivr.sip.events.CallEnded` is emitted.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from ivr.sip.dialog import Dialog
from ivr.sip.errors import SipError
from ivr.sip.message import Request, Response
from ivr.sip.primitives import Peer
from ivr.sip.session_timer import SessionTimer
from ivr.sip.transaction import ClientInviteTransaction, ServerInviteTransaction


class EndReason(StrEnum):
    """Why a leg ended (:class:`~ivr.sip.events.CallEnded` carries it)."""

    REMOTE_BYE = "remote_bye"
    LOCAL_BYE = "local_bye"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    ACK_TIMEOUT = "ack_timeout"
    SHUTDOWN = "shutdown"
    FAILED = "failed"  # our INVITE got a final non-2xx response
    TIMEOUT = "timeout"  # our INVITE got no final response (timer B)
    SESSION_EXPIRED = "session_expired"  # RFC 4028 10: no session refresh in time, or ours got 408/481/no answer


class LegState(StrEnum):
    INCOMING = "incoming"  # INVITE received (or, outgoing, sent) and no final response yet
    ANSWERED = "answered"  # 2xx sent, waiting for ACK
    CONFIRMED = "confirmed"  # ACK received
    ENDING = "ending"  # BYE sent, waiting for its response
    ENDED = "ended"


class LegEvent(Enum):
    """What moves a leg: the keys, with the state, of :data:`LEG_TRANSITIONS`."""

    ANSWER_SENT = "we sent a 2xx for the INVITE"
    ACK_RECEIVED = "the ACK for our 2xx arrived"
    ANSWER_RECEIVED = "our INVITE was answered 2xx (and we sent the ACK)"
    NOT_ANSWERED = "the INVITE ended without a 2xx (rejected, cancelled, failed or timed out)"
    BYE_SENT = "we sent BYE"
    BYE_RECEIVED = "the peer's BYE arrived (answered 200)"
    BYE_DONE = "our BYE was answered or timed out"


class LegStateError(SipError):
    """A leg was moved in a way :data:`LEG_TRANSITIONS` does not allow: a bug in the endpoint. It maps to 500."""

    status = 500


_L = LegState
_E = LegEvent
LEG_TRANSITIONS: Mapping[tuple[LegState, LegEvent], LegState] = {
    (_L.INCOMING, _E.ANSWER_SENT): _L.ANSWERED,
    (_L.INCOMING, _E.ANSWER_RECEIVED): _L.CONFIRMED,
    (_L.INCOMING, _E.NOT_ANSWERED): _L.ENDED,
    (_L.ANSWERED, _E.ACK_RECEIVED): _L.CONFIRMED,
    (_L.ANSWERED, _E.BYE_SENT): _L.ENDING,
    (_L.ANSWERED, _E.BYE_RECEIVED): _L.ENDED,
    (_L.CONFIRMED, _E.BYE_SENT): _L.ENDING,
    (_L.CONFIRMED, _E.BYE_RECEIVED): _L.ENDED,
    (_L.ENDING, _E.BYE_RECEIVED): _L.ENDED,
    (_L.ENDING, _E.BYE_DONE): _L.ENDED,
    (_L.ENDED, _E.BYE_DONE): _L.ENDED,
}


def next_leg_state(state: LegState, event: LegEvent) -> LegState:
    """The state a leg in ``state`` moves to on ``event``; :class:`LegStateError` when the table has no such move."""
    try:
        return LEG_TRANSITIONS[state, event]
    except KeyError:
        raise LegStateError(f"a leg in state {state.value!r} cannot take {event.name} ({event.value})") from None


@dataclass(eq=False)
class Transfer:
    """A REFER we sent in a leg's dialog (we are the transferor, RFC 3515). ``result`` is the final status once known
    (the sipfrag's, the REFER's own error, or 408 when nothing came); ``subscription_ended`` once a NOTIFY said
    ``Subscription-State: terminated`` (or the REFER failed)."""

    leg: Leg
    refer: Request
    accepted: bool = False
    result: int | None = None
    reason: str = ""
    subscription_ended: bool = False

    @property
    def done(self) -> bool:
        return self.result is not None


@dataclass(eq=False)
class Leg:
    """One call leg: an INVITE dialog between the caller and us. Its identity is the object itself. ``state`` changes
    only through :meth:`advance`."""

    invite: Request
    peer: Peer
    local_tag: str
    state: LegState = LegState.INCOMING
    dialog: Dialog | None = None
    invite_txn: ServerInviteTransaction | None = None
    end_reason: EndReason | None = None
    bye_pending: bool = False  # hangup() before the ACK: BYE waits for the ACK or its timeout (15.1.1)
    end_reason_wanted: EndReason = EndReason.LOCAL_BYE
    outgoing: bool = False  # we sent the INVITE (the simulator's caller, a bridge to a queue endpoint)
    vouched: bool = False  # an incoming INVITE from a trusted source or digest-authenticated
    client_txn: ClientInviteTransaction | None = None
    provisional: bool = False  # a 1xx arrived for our INVITE: a CANCEL may now be sent (RFC 3261 9.1)
    cancel_pending: bool = False  # cancel() before any 1xx: the CANCEL goes out with the first one
    cancel_requested: bool = False
    ack: bytes | None = None  # our ACK for the 2xx, resent when the 2xx is retransmitted (13.2.2.4)
    answer: Response | None = None
    transfer: Transfer | None = None  # the REFER we sent in this dialog, if any
    # REFERs received in this dialog (we are the transferee): CSeq number -> "pending" | "active" | "terminated"
    refers: dict[int, str] = field(default_factory=dict)
    # RFC 4028 session timer: the one running (None: none), the SDP we last sent in the dialog (a refresh re-INVITE
    # offers it again), our refresh re-INVITE in flight and its ACK, and the serial naming the leg's endpoint timers.
    session_timer: SessionTimer | None = None
    local_sdp: bytes = b""
    refresh_txn: ClientInviteTransaction | None = None
    refresh_ack: bytes | None = None
    timer_owner: int = 0
    id: int = field(default_factory=itertools.count(1).__next__)

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    @property
    def offer(self) -> bytes:
        return self.invite.body

    def advance(self, event: LegEvent) -> LegState:
        """Take the move :data:`LEG_TRANSITIONS` gives for ``event`` (:class:`LegStateError` if none); return the
        state left."""
        previous = self.state
        self.state = next_leg_state(previous, event)
        return previous

    def __repr__(self) -> str:
        return f"<Leg {self.id} {self.call_id} {self.state.value}>"


__all__ = [
    "LEG_TRANSITIONS",
    "EndReason",
    "Leg",
    "LegEvent",
    "LegState",
    "LegStateError",
    "Transfer",
    "next_leg_state",
]
