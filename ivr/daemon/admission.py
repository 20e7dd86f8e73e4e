"""Admission: who may talk to the daemon, and how many new calls it takes.

- :class:`TokenBucket`: the one rate limiter (a rate, a burst, refilled on the event loop's clock).
- :class:`SourceGate`: in front of the SIP endpoint (the SIP driver's ``admit``). Trusted sources
  (``security.trusted_sources``, cached per address so no CIDR walk happens per packet) pass; every other address gets
  a token bucket of ``security.max_messages_per_source`` messages a second, so a flood from one source is dropped
  before it costs a parse (RFC 3261 says nothing; this is what keeps one broken or hostile peer from starving the
  others). What it decided about trust goes on with the message: the endpoint refuses untrusted sources (403 or
  silence) and skips digest authentication for trusted ones on this answer, without looking the networks up again.
- :class:`CallAdmission`: a new INVITE is refused 503 with Retry-After when the event loop lags, when more than
  ``calls.max_calls_per_second`` arrive, or at ``calls.max_calls``; the reason names the metric label.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from ivr.sip.endpoint import Peer

__all__ = ["CallAdmission", "Refusal", "SourceGate", "TokenBucket"]

log = structlog.get_logger("ivr.admission")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_TRUST_CACHE = 4096
MAX_SOURCES = 10000


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; starts full."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now

    def take(self, now: float) -> bool:
        """Refill for the time since the last call, then take one token if there is one."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class SourceGate:
    """Trusted addresses pass; each other address is held to its own token bucket (see the module docstring).
    :meth:`admit` is the SIP driver's gate (:data:`ivr.daemon.sip_driver.Admit`)."""

    def __init__(
        self,
        networks: Sequence[Network],
        max_messages_per_source: float,
        now: Callable[[], float],
        *,
        block_seconds: float = 0.0,
    ) -> None:
        self.networks = tuple(networks)
        self.rate = max_messages_per_source
        self.block_seconds = block_seconds
        self._now = now
        self._trust_cache: dict[str, bool] = {}
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._blocked: OrderedDict[str, float] = OrderedDict()
        self.dropped = 0
        """Messages dropped because their source was over its rate (or blocked for it)."""
        self.blocks = 0
        """Times a source was blocked for ``block_seconds`` (as Kamailio's pike module does)."""

    def admit(self, peer: Peer) -> bool | None:
        """None: drop the message (its source is over its rate); else whether its source is trusted."""
        if self.trusted(peer.host):
            return True
        return False if self._allowed(peer.host) else None

    def trusted(self, host: str) -> bool:
        """Whether ``host`` (an address; a name never is) is in the trusted networks; cached per host."""
        known = self._trust_cache.get(host)
        if known is None:
            try:
                address = ipaddress.ip_address(host.strip("[]"))
                known = any(address in n for n in self.networks)
            except ValueError:
                known = False
            if len(self._trust_cache) > MAX_TRUST_CACHE:
                self._trust_cache.clear()
            self._trust_cache[host] = known
        return known

    def _allowed(self, host: str) -> bool:
        now = self._now()
        if self._blocked:
            until = self._blocked.get(host)
            if until is not None:
                if now < until:
                    self.dropped += 1
                    return False
                del self._blocked[host]
        bucket = self._buckets.pop(host, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, 2 * self.rate, now)
        allowed = bucket.take(now)
        if not allowed:
            self.dropped += 1
            if self.block_seconds > 0:
                self._block(host, now)
        self._buckets[host] = bucket  # most recent last: the oldest are forgotten first
        if len(self._buckets) > MAX_SOURCES:
            self._buckets.popitem(last=False)
        return allowed


    def _block(self, host: str, now: float) -> None:
        """Over its rate: every message from ``host`` is dropped for ``block_seconds`` (logged once per block)."""
        self._blocked[host] = now + self.block_seconds
        self.blocks += 1
        log.warning("source over its message rate: blocked", source=host, seconds=self.block_seconds,
                    rate=self.rate)  # fmt: skip
        if len(self._blocked) > MAX_SOURCES:
            self._blocked.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a new call is refused: ``why`` is the metric label, ``reason`` the SIP reason phrase."""

    why: str
    reason: str
    retry_after: int


class CallAdmission:
    """Checks a new INVITE against the loop's lag, the calls-per-second bucket and the call limit."""

    def __init__(
        self,
        *,
        max_calls: int,
        max_calls_per_second: float,
        shed_lag: float,
        now: Callable[[], float],
        lag: Callable[[], float],
    ) -> None:
        self.max_calls = max_calls
        self.max_calls_per_second = max_calls_per_second
        self.shed_lag = shed_lag
        self._now = now
        self._lag = lag
        self._cps = TokenBucket(max_calls_per_second, max_calls_per_second, now())

    def check(self, active_calls: int) -> Refusal | None:
        """None to take the call; otherwise why not. A call refused for lag takes no calls-per-second token."""
        if self._lag() > self.shed_lag:
            return Refusal("lag", "overloaded", 5)
        if not self._cps.take(self._now()):
            return Refusal("cps", "too many new calls per second", 1)
        if active_calls >= self.max_calls:
            return Refusal("max_calls", "at capacity", 5)
        return None
