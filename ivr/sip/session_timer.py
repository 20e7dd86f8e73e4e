"""RFC 4028 session timers, the rules without the machinery: parsing ``Session-Expires`` and ``Min-SE``, the UAS's
choice of interval and refresher (RFC 4028 9), what a UAC takes from the 2xx (7.2), and when the refresh and the
BYE of an expired session are due (10). :class:`~ivr.sip.endpoint.SipEndpoint` keeps the timers and sends the
requests.

The choices this implementation makes where RFC 4028 leaves one:

* A request with ``Session-Expires`` and ``Supported: timer`` but no ``refresher``: the UAC refreshes (9 lets the
  UAS pick either). A caller that vanishes is then noticed at ``interval - min(32, interval/3)`` without us sending
  re-INVITEs into its media.
* A request with ``Supported: timer`` and no ``Session-Expires``: the UAS applies its own configured interval with
  ``refresher=uas`` (9: "the UAS MAY ... include a Session-Expires header field in the 2xx"), so a vanished caller
  is noticed by our refresh failing (408/481/no answer, 10).
* A request from a UAC that does not support timers and has no ``Session-Expires`` (no proxy inserted one): no session
  timer. RFC 4028 9 would allow one refreshed by the UAS, but the UAC never agreed to re-INVITEs it may mishandle
  (glare, SDP versions), and the media liveness watchdog (``media.rtp_timeout``) already covers such callers.
* A request with ``Session-Expires`` from a UAC without ``Supported: timer`` (a proxy inserted it, 8): the UAS must
  refresh (``refresher=uas``) and must not send ``Require: timer`` (9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ivr.sip.errors import SipError
from ivr.sip.message import Request, Response

Refresher = Literal["uac", "uas"]
TIMER = "timer"
RFC_MIN_SE = 90
"""RFC 4028 4: the smallest Session-Expires (and Min-SE) anyone may ask for, in seconds."""


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """A parsed ``Session-Expires: <delta-seconds>[;refresher=uac|uas]`` (RFC 4028 4)."""

    interval: int
    refresher: Refresher | None = None

    @classmethod
    def parse(cls, value: str) -> SessionExpires:
        delta, *params = (part.strip() for part in value.split(";"))
        if not delta.isdigit():
            raise SipError(f"RFC 4028 4: Session-Expires {value[:40]!r} is not delta-seconds", status=400)
        refresher: Refresher | None = None
        for param in params:
            name, _, arg = param.partition("=")
            if name.strip().lower() == "refresher":
                role = arg.strip().lower()
                if role not in ("uac", "uas"):
                    raise SipError(f"RFC 4028 4: refresher={arg.strip()[:8]!r} is neither uac nor uas", status=400)
                refresher = "uac" if role == "uac" else "uas"
        return cls(min(int(delta), 2**31 - 1), refresher)

    def __str__(self) -> str:
        return f"{self.interval};refresher={self.refresher}" if self.refresher else str(self.interval)


def session_expires_of(message: Request | Response) -> SessionExpires | None:
    """The message's Session-Expires (compact form ``x`` too), None when it has none."""
    value = message.headers.get("Session-Expires")
    return SessionExpires.parse(value) if value else None


def min_se_of(message: Request | Response) -> int | None:
    value = message.headers.get("Min-SE")
    if not value:
        return None
    delta = value.split(";")[0].strip()
    if not delta.isdigit():
        raise SipError(f"RFC 4028 5: Min-SE {value[:40]!r} is not delta-seconds", status=400)
    return int(delta)


def supports_timer(message: Request | Response) -> bool:
    """The message lists ``timer`` in Supported (compact ``k``) or Require."""
    values = [*message.headers.get_all("Supported"), *message.headers.get_all("Require")]
    return any(token.strip().lower() == TIMER for value in values for token in value.split(","))


@dataclass(frozen=True, slots=True)
class SessionTimer:
    """The session timer a dialog runs: its interval, who refreshes, and whether that is us."""

    interval: int
    refresher: Refresher
    we_refresh: bool

    @property
    def refresh_after(self) -> float:
        """RFC 4028 10: the refresher sends its refresh "at half the session interval"."""
        return self.interval / 2

    @property
    def expire_after(self) -> float:
        """RFC 4028 10: without a refresh, the side not refreshing sends BYE at ``interval - min(32, interval/3)``."""
        return self.interval - min(32.0, self.interval / 3)


@dataclass(frozen=True, slots=True)
class UasDecision:
    """What a UAS answers a (re-)INVITE or UPDATE with: ``too_small`` (422 with Min-SE, RFC 4028 8.1), or the
    ``timer`` to run (None: none) with the headers its 2xx carries."""

    timer: SessionTimer | None = None
    headers: tuple[tuple[str, str], ...] = ()
    too_small: bool = False


def uas_decision(request: Request, *, session_expires: int, min_se: int) -> UasDecision:
    """RFC 4028 8.1 and 9 for a UAS configured with ``session_expires`` (0: it asks for no timer of its own) and
    ``min_se``. Raises :class:`SipError` (400) for a Session-Expires or Min-SE that does not parse."""
    asked = session_expires_of(request)
    supported = supports_timer(request)
    if asked is None:
        if not supported or session_expires <= 0:
            return UasDecision()  # module docstring: no timer for a UAC that does not support them
        interval = max(session_expires, min_se, min_se_of(request) or 0)
        timer = SessionTimer(interval, "uas", True)
        return UasDecision(timer, (("Session-Expires", f"{interval};refresher=uas"), ("Require", TIMER)))
    if asked.interval < min_se:
        return UasDecision(too_small=True)
    interval = asked.interval
    if session_expires > 0:  # 9: the UAS MAY lower it, never below the Min-SE (ours, or the request's)
        interval = min(interval, max(session_expires, min_se, min_se_of(request) or 0))
    if not supported:
        refresher: Refresher = "uas"
    else:
        refresher = asked.refresher or "uac"
    headers: tuple[tuple[str, str], ...] = (("Session-Expires", f"{interval};refresher={refresher}"),)
    if supported:
        headers += (("Require", TIMER),)
    return UasDecision(SessionTimer(interval, refresher, refresher == "uas"), headers)


def uac_timer(response: Response) -> SessionTimer | None:
    """RFC 4028 7.2: the timer a UAC runs after a 2xx to its (re-)INVITE: the response's Session-Expires and refresher
    (absent refresher: the UAC refreshes, as the UAS gave it the job by not saying), or none without the header."""
    expires = session_expires_of(response)
    if expires is None or expires.interval <= 0:
        return None
    refresher = expires.refresher or "uac"
    return SessionTimer(expires.interval, refresher, refresher == "uac")


__all__ = [
    "RFC_MIN_SE",
    "TIMER",
    "Refresher",
    "SessionExpires",
    "SessionTimer",
    "UasDecision",
    "min_se_of",
    "session_expires_of",
    "supports_timer",
    "uac_timer",
    "uas_decision",
]
