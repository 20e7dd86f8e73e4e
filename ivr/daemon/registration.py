"""Keeping the daemon registered at an upstream registrar: the driver of :class:`ivr.sip.registration.Registration`.

The sans-I/O REGISTER client says what to send and which timers to arm; this driver sends through the daemon's SIP
socket (so the registrar's answers come back where INVITEs arrive), runs the timers on the event loop (the SIP
driver's :class:`~ivr.daemon.sip_driver.LoopTimers`), feeds the
registrar's responses (the endpoint hands over those no transaction of its own claims), logs the state, and
unregisters on shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence

import structlog

from ivr.config import RegistrationSettings
from ivr.daemon.sip_driver import LoopTimers
from ivr.sip.events import ClearTimer, Peer, SetTimer, Transmit
from ivr.sip.message import Response
from ivr.sip.registration import (
    Registered,
    Registration,
    RegistrationConfig,
    RegistrationFailed,
    RegistrationOutput,
    SendRequest,
    Unregistered,
)
from ivr.sip.transaction import TimerValues

__all__ = ["RegistrationDriver"]

log = structlog.get_logger("ivr.register")


class RegistrationDriver:
    def __init__(
        self,
        settings: RegistrationSettings,
        *,
        local_host: str,
        local_port: int,
        timers: TimerValues,
        user_agent: str,
        transmit: Callable[[Transmit], None],
    ) -> None:
        self.settings = settings
        self.registration = Registration(
            RegistrationConfig(
                registrar=settings.registrar,
                aor=settings.aor,
                contact=f"sip:{settings.contact_user}@{local_host}:{local_port}",
                local_host=local_host,
                local_port=local_port,
                expires=settings.expires,
                username=settings.username,
                password=settings.password,
                user_agent=user_agent,
                timers=timers,
            )
        )
        self._transmit = transmit
        self._timers = LoopTimers(self._fire)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.registered = False
        self.last_failure: str | None = None
        self._unregistered = asyncio.Event()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._run(self.registration.start())

    def response(self, response: Response) -> bool:
        """Feed a response the endpoint did not claim; True when it was this registration's."""
        if not self.registration.matches(response):
            return False
        self._run(self.registration.receive_response(response))
        return True

    async def stop(self, timeout: float) -> None:
        """Unregister (expires=0) and wait up to ``timeout`` for the answer."""
        if self._loop is None:
            return
        self._unregistered.clear()
        self._run(self.registration.stop())
        if not self._unregistered.is_set():
            try:
                await asyncio.wait_for(self._unregistered.wait(), timeout)
            except TimeoutError:
                log.warning("registrar did not answer the unregister", registrar=self.settings.registrar)
        self._timers.cancel_all()

    def _fire(self, token: Hashable) -> None:
        self._run(self.registration.timer_fired(str(token)))

    def _run(self, outputs: Sequence[RegistrationOutput]) -> None:
        loop = self._loop
        assert loop is not None
        for out in outputs:
            if isinstance(out, SendRequest):
                self._transmit(Transmit(out.data, Peer(out.host, out.port, out.transport)))
            elif isinstance(out, SetTimer):
                self._timers.arm(loop, out.token, out.delay)
            elif isinstance(out, ClearTimer):
                self._timers.disarm(out.token)
            elif isinstance(out, Registered):
                if not self.registered:
                    log.info("registered", registrar=self.settings.registrar, aor=self.settings.aor,
                             expires=out.expires, refresh_in=round(out.refresh_in, 1))  # fmt: skip
                self.registered = True
                self.last_failure = None
            elif isinstance(out, RegistrationFailed):
                self.registered = False
                self.last_failure = f"{out.status} {out.reason}"
                log.warning("registration failed", registrar=self.settings.registrar, status=out.status,
                            reason=out.reason, retry_in=round(out.retry_in, 1))  # fmt: skip
            elif isinstance(out, Unregistered):
                self.registered = False
                self._unregistered.set()
                log.info("unregistered", registrar=self.settings.registrar, status=out.status)
