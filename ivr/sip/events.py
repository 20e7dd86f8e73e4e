"""What the sans-I/O SIP machines hand their driver: small immutable values, nothing that acts.

* :class:`SetTimer` / :class:`ClearTimer` - the one timer action pair of ``ivr.sip``. The transactions
  (:mod:`ivr.sip.transaction`) arm timers by name (``SetTimer[str]``, e.g. ``SetTimer("B", 32.0)``) and the
  REGISTER client (:mod:`ivr.sip.registration`) by a string; setting a token that is already set replaces it, and
  when a set timer expires the driver calls the machine's ``timer_fired(token)``. The endpoint
  (:mod:`ivr.sip.endpoint`) keeps its transactions' timers itself, by ``(transaction serial, name)``
  (:data:`EndpointTimer`): its driver sees only :meth:`~ivr.sip.endpoint.SipEndpoint.get_timer` and
  :meth:`~ivr.sip.endpoint.SipEndpoint.handle_timer`.
* :class:`Transmit` - bytes for a :class:`Peer` (what :meth:`~ivr.sip.endpoint.SipEndpoint.datagrams_to_send`
  returns).
* the call events of :class:`~ivr.sip.endpoint.SipEndpoint` (:data:`CallEvent`), :class:`AuthRefused` and
  :class:`StrayResponse`: :data:`EndpointEvent`, what :meth:`~ivr.sip.endpoint.SipEndpoint.next_event` returns.

The events carry the :class:`~ivr.sip.leg.Leg` (and :class:`~ivr.sip.leg.Transfer`) they are about: those are the
endpoint's mutable records of a call, not events, and live in :mod:`ivr.sip.leg`.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Generic, TypeVar

from ivr.sip.message import Request, Response

if TYPE_CHECKING:  # the leg module imports this one (Peer, EndReason); events only name its classes
    from ivr.sip.leg import Leg, Transfer

# ---- timers -------------------------------------------------------------------------------------------------------

TokenT = TypeVar("TokenT", bound=Hashable)
"""What names a timer: a string for a transaction or the REGISTER client."""

EndpointTimer = tuple[int, str]
"""How the endpoint names a timer it keeps: (the serial of its transaction entry, the transaction's timer name)."""


# Generic frozen dataclasses without slots: with slots=True, calling a subscripted class (``SetTimer[str](...)``)
# fails on Python 3.11, because typing then sets ``__orig_class__`` through the frozen ``__setattr__``.
@dataclass(frozen=True)
class SetTimer(Generic[TokenT]):
    """Arm timer ``token`` to fire after ``delay`` seconds, replacing an armed timer of the same token."""

    token: TokenT
    delay: float


@dataclass(frozen=True)
class ClearTimer(Generic[TokenT]):
    """Disarm timer ``token``."""

    token: TokenT


# ---- addresses and the bytes to send ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from or goes to. ``connection`` names a stream connection (TCP) owned by the driver."""

    host: str
    port: int
    transport: str = "udp"
    connection: int | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


@dataclass(frozen=True, slots=True)
class Transmit:
    data: bytes
    peer: Peer


# ---- call events --------------------------------------------------------------------------------------------------


class EndReason(StrEnum):
    REMOTE_BYE = "remote_bye"
    LOCAL_BYE = "local_bye"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    ACK_TIMEOUT = "ack_timeout"
    SHUTDOWN = "shutdown"
    FAILED = "failed"  # our INVITE got a final non-2xx response
    TIMEOUT = "timeout"  # our INVITE got no final response (timer B)


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A new INVITE: the application answers it (:meth:`SipEndpoint.answer`) or rejects it."""

    leg: Leg


@dataclass(frozen=True, slots=True)
class CallConfirmed:
    """The ACK for our 2xx arrived: media may flow both ways. ``sdp`` is the ACK's body (late offer)."""

    leg: Leg
    body: bytes


@dataclass(frozen=True, slots=True)
class ReInvite:
    """An in-dialog INVITE (hold, unhold, media change). Answer with :meth:`SipEndpoint.respond`."""

    leg: Leg
    request: Request


@dataclass(frozen=True, slots=True)
class CallEnded:
    leg: Leg
    reason: EndReason
    status: int | None = None


@dataclass(frozen=True, slots=True)
class DigitInfo:
    """A key press the caller sent by SIP INFO (already answered 200)."""

    leg: Leg
    key: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class CallProgress:
    """A provisional response (180 Ringing, 183 Session Progress) to an INVITE we sent."""

    leg: Leg
    response: Response


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """Our INVITE was answered 2xx and ACKed; ``response.body`` is the callee's SDP answer."""

    leg: Leg
    response: Response


@dataclass(frozen=True, slots=True)
class TransferProgress:
    """News of a REFER we sent: its own response (``source="refer"``: 202 accepted, or an error that ends it), a
    NOTIFY's sipfrag status (``"notify"``, already answered 200), or no answer at all (``"timeout"``, 408).
    ``final``: the transfer's outcome is known (``status`` >= 200 from a NOTIFY, or the REFER failed)."""

    leg: Leg
    transfer: Transfer
    status: int
    reason: str
    source: str
    final: bool


@dataclass(frozen=True, slots=True)
class ReferReceived:
    """The peer asks us to call ``refer_to`` (we are the transferee; only with ``EndpointConfig.transferee``).
    Answer with :meth:`SipEndpoint.accept_refer` (202, then NOTIFY 100 Trying) or :meth:`SipEndpoint.reject_refer`,
    then report the new call with :meth:`SipEndpoint.notify_refer`. :func:`ivr.sip.refer.parse_refer_to` splits the
    target from the headers to put in the new INVITE."""

    leg: Leg
    refer_to: str
    referred_by: str | None
    request: Request


# ---- other endpoint outputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthRefused:
    """A new INVITE was answered 401/407 (challenge), 403 or 400 by digest authentication; ``detail`` says why
    (for the log: never sent to the peer)."""

    request: Request
    peer: Peer
    status: int
    detail: str


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response that matches no transaction of the endpoint (the REGISTER client runs its own)."""

    response: Response
    peer: Peer


CallEvent = (
    IncomingCall
    | CallConfirmed
    | ReInvite
    | CallEnded
    | DigitInfo
    | CallProgress
    | CallAnswered
    | TransferProgress
    | ReferReceived
)
EndpointEvent = CallEvent | AuthRefused | StrayResponse
"""What :meth:`SipEndpoint.next_event <ivr.sip.endpoint.SipEndpoint.next_event>` returns (a driver's ``on_event``)."""
Output = EndpointEvent
"""The former name of :data:`EndpointEvent` (when the endpoint's one output list also carried bytes and timers)."""


__all__ = [
    "AuthRefused",
    "CallAnswered",
    "CallConfirmed",
    "CallEnded",
    "CallEvent",
    "CallProgress",
    "ClearTimer",
    "DigitInfo",
    "EndReason",
    "EndpointEvent",
    "EndpointTimer",
    "IncomingCall",
    "Output",
    "Peer",
    "ReInvite",
    "ReferReceived",
    "SetTimer",
    "StrayResponse",
    "TransferProgress",
    "Transmit",
]
