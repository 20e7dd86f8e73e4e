"""The values every sans-I/O machine of ``ivr.sip`` shares with its driver, and nothing else: where a message comes
from or goes to (:class:`Peer`), bytes for a peer (:class:`Transmit`), and a timer to arm or disarm
(:class:`SetTimer` / :class:`ClearTimer`).

This module imports nothing of ``ivr.sip``: the transactions, the dialog, the leg, the REGISTER client, the events
and the endpoint all build on it, and none of them has to import another one back for these types.

* :class:`SetTimer` / :class:`ClearTimer` - the one timer action pair of ``ivr.sip``. The transactions
  (:mod:`ivr.sip.transaction`) arm timers by name (``SetTimer[str]``, e.g. ``SetTimer("B", 32.0)``) and the REGISTER
  client (:mod:`ivr.sip.registration`) its refresh and retry timers the same way; setting a token that is already set
  replaces it, and when a set timer expires its owner's ``timer_fired(token)`` is called. The endpoint
  (:mod:`ivr.sip.endpoint`) keeps all of them itself, on its driver's clock: its driver sees only
  :meth:`~ivr.sip.endpoint.SipEndpoint.get_timer` and :meth:`~ivr.sip.endpoint.SipEndpoint.handle_timer`.
* :class:`Transmit` - bytes for a :class:`Peer` (what :meth:`~ivr.sip.endpoint.SipEndpoint.datagrams_to_send`
  returns).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

TokenT = TypeVar("TokenT", bound=Hashable)
"""What names a timer: a string for a transaction (its RFC letter) or the REGISTER client ("refresh", "retry")."""


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


__all__ = ["ClearTimer", "Peer", "SetTimer", "TokenT", "Transmit"]
