"""What the sans-I/O SIP endpoint hands its driver: small immutable values, nothing that acts.

* the call events of :class:`~ivr.sip.endpoint.SipEndpoint` (:data:`CallEvent`), :class:`AuthRefused` and the REGISTER
  client's :data:`~ivr.sip.registration.RegistrationEvent` (:class:`Registered`, :class:`RegistrationFailed`,
  :class:`Unregistered`): :data:`EndpointEvent`, what :meth:`~ivr.sip.endpoint.SipEndpoint.next_event` returns.
* :data:`EndpointTimer` - how the endpoint names a timer it keeps.
* re-exported from :mod:`ivr.sip.primitives` (the values every machine shares with its driver): :class:`Peer`,
  :class:`Transmit`, :class:`SetTimer` / :class:`ClearTimer`; and :class:`EndReason` from :mod:`ivr.sip.leg`.

The events carry what they are about: the :class:`~ivr.sip.leg.Leg` (and :class:`~ivr.sip.leg.Transfer`), the
endpoint's mutable records of a call, or the :class:`~ivr.sip.registration.Registration`. Those live in their own
modules, which do not import this one: this module imports them, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivr.sip.leg import EndReason, Leg, Transfer
from ivr.sip.message import Request, Response
from ivr.sip.primitives import ClearTimer, Peer, SetTimer, Transmit
from ivr.sip.registration import Registered, RegistrationEvent, RegistrationFailed, Unregistered

EndpointTimer = tuple[int, str]
"""How the endpoint names a timer it keeps: (the serial of its owner - a transaction entry or a registration -, the
owner's timer name)."""


# ---- call events --------------------------------------------------------------------------------------------------


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
EndpointEvent = CallEvent | AuthRefused | RegistrationEvent
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
    "Registered",
    "RegistrationEvent",
    "RegistrationFailed",
    "SetTimer",
    "TransferProgress",
    "Transmit",
    "Unregistered",
]
