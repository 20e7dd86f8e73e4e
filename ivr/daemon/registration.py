"""Keeping the daemon registered at an upstream registrar: the binding, its log and its state.

The REGISTER client (:class:`ivr.sip.registration.Registration`) runs inside the SIP endpoint
(:meth:`~ivr.sip.endpoint.SipEndpoint.register`): its transactions, its refresh and retry timers and its sends are the
endpoint's, driven by the one SIP driver, so the registrar's answers come back where INVITEs arrive. This part builds
the binding from the settings and starts it, logs what the endpoint says about it (:class:`Registered`,
:class:`RegistrationFailed`, :class:`Unregistered`, routed here by the server) and keeps the state for health, and on
shutdown unregisters and waits, for a bounded time, for the registrar's answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from ivr.config import RegistrationSettings
from ivr.sip.endpoint import SipEndpoint
from ivr.sip.registration import (
    Registered,
    Registration,
    RegistrationConfig,
    RegistrationEvent,
    RegistrationFailed,
    Unregistered,
)

__all__ = ["UpstreamRegistration"]

log = structlog.get_logger("ivr.register")


class UpstreamRegistration:
    """The daemon's one binding at ``settings.registrar``, registered through ``endpoint`` (``flush``: the SIP
    driver's, after each verb)."""

    def __init__(
        self,
        settings: RegistrationSettings,
        *,
        endpoint: SipEndpoint,
        flush: Callable[[], None],
        local_host: str,
        local_port: int,
        user_agent: str,
    ) -> None:
        self.settings = settings
        self.config = RegistrationConfig(
            registrar=settings.registrar,
            aor=settings.aor,
            contact=f"sip:{settings.contact_user}@{local_host}:{local_port}",
            local_host=local_host,
            local_port=local_port,
            expires=settings.expires,
            username=settings.username,
            password=settings.password,
            user_agent=user_agent,
            timers=endpoint.config.timers,
        )
        self._endpoint = endpoint
        self._flush = flush
        self.registration: Registration | None = None
        self.registered = False
        self.last_failure: str | None = None
        self._unregistered = asyncio.Event()

    def start(self) -> None:
        """Send the first REGISTER."""
        self.registration = self._endpoint.register(self.config)
        self._flush()

    async def stop(self, timeout: float) -> None:
        """Unregister (expires=0) and wait up to ``timeout`` for the answer."""
        registration = self.registration
        if registration is None or registration not in self._endpoint.registrations:
            return
        self._unregistered.clear()
        self._endpoint.unregister(registration)
        self._flush()
        if not self._unregistered.is_set():
            try:
                await asyncio.wait_for(self._unregistered.wait(), timeout)
            except TimeoutError:
                log.warning("registrar did not answer the unregister", registrar=self.settings.registrar)

    def on_event(self, event: RegistrationEvent) -> None:
        """What the endpoint says about the binding: logged, and kept for health."""
        if event.registration is not self.registration:
            return
        if isinstance(event, Registered):
            if not self.registered:
                log.info("registered", registrar=self.settings.registrar, aor=self.settings.aor,
                         expires=event.expires, refresh_in=round(event.refresh_in, 1))  # fmt: skip
            self.registered = True
            self.last_failure = None
        elif isinstance(event, RegistrationFailed):
            self.registered = False
            self.last_failure = f"{event.status} {event.reason}"
            log.warning("registration failed", registrar=self.settings.registrar, status=event.status,
                        reason=event.reason, retry_in=round(event.retry_in, 1))  # fmt: skip
        elif isinstance(event, Unregistered):
            self.registered = False
            self._unregistered.set()
            log.info("unregistered", registrar=self.settings.registrar, status=event.status)
