"""``DigitEvent``: one key press, whichever way it came (RFC 4733 telephone-event, in-band tones, SIP INFO).

A press is announced once, as soon as it is known (the first telephone-event packet of the press, or the moment
the in-band detector has seen the tone long enough), so that a prompt can be stopped at once (barge-in). Its
length is not known yet then: the same object is updated in place while the press goes on, and ``ended`` turns
True, with the final ``duration_ms``, when the key is released (RFC 4733 end packet, end of the tone). A listener
that keeps the event at the start (the bridge, a test) therefore holds the full figures by the time it reads them
after the press. Presses delivered complete (SIP INFO: ``Signal=`` and ``Duration=`` arrive together) are built with
``ended=True``.

This is the media's view of a press. A flow hears only the key and its source, as ``ivr.flows.runtime.KeyPressed``
(the call controller turns one into the other through ``Call.key``); a ``collect`` node's whole entry, its
checksums and masking, are ``ivr.flows.entries``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["DTMF_KEYS", "DigitEvent", "DigitSource", "DtmfMode", "normalize_key"]

DTMF_KEYS: Final = "0123456789*#ABCD"
"""The sixteen DTMF keys; their index is the RFC 4733 event code."""

DigitSource = Literal["rfc4733", "inband", "info"]

DtmfMode = Literal["auto", "rfc4733", "inband", "none"]
"""How a ``MediaStream`` hears digits: ``auto`` uses RFC 4733 when a telephone-event payload type was negotiated
and the in-band detector otherwise; ``rfc4733`` and ``inband`` force one of them (the other is ignored, so a
sender that does both never gives a digit twice); ``none`` hears no digit in the media (SIP INFO only)."""


def normalize_key(key: str) -> str:
    """``key`` as one of ``DTMF_KEYS`` (A-D upper-cased); raises ``ValueError`` for anything else."""
    if len(key) != 1 or key.upper() not in DTMF_KEYS:
        raise ValueError(f"{key!r} is not a DTMF key (one of {DTMF_KEYS})")
    return key.upper()


@dataclass(slots=True, eq=False)
class DigitEvent:
    """One key press.

    ``volume`` is the power level in -dBm0 as RFC 4733 carries it (0 is loudest, 63 quietest): the sender's
    figure for ``rfc4733``, the measured level of the stronger of the two tones for ``inband``, None when unknown.
    ``duration_ms`` is the length seen so far and final once ``ended``. Compared by identity: two presses of the
    same key are two events.
    """

    key: str
    source: DigitSource
    volume: int | None = None
    duration_ms: int = 0
    ended: bool = False

    def __str__(self) -> str:
        return self.key
