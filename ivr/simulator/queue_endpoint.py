"""A simulated queue endpoint (a contact-centre ACD) for bridged handoffs: a UAS on the daemon's own SIP code.

It answers the daemon's INVITE (or refuses it with a chosen status, to test the flow's failure path), keeps each
call's Request-URI, headers and the data they carry (:class:`~ivr.simulator.caller.ObservedTransfer`, method
"bridge"), and runs the call's audio: it sends a tone (the agent speaking) and counts what it receives (the caller,
relayed by the daemon). The lab binds one at each bridged queue's address on the virtual network.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import numpy as np

from ivr.daemon.media_session import EphemeralPorts, MediaPolicy, MediaSession, MediaSessions
from ivr.daemon.sip_driver import SipDriver
from ivr.media.clock import MediaClock
from ivr.media.prompts import Prompt
from ivr.simulator.caller import ObservedTransfer, attached_data
from ivr.sip.endpoint import CallEnded, EndpointConfig, IncomingCall, Leg, Output, ReInvite, SipEndpoint
from ivr.sip.sdp import SdpError

__all__ = ["SimQueueEndpoint"]


class SimQueueEndpoint:
    """Answers INVITEs at ``host:port`` with ``answer`` (200, or e.g. 486 Busy Here). ``clock``: the media clock
    its streams send on (the lab gives the daemon's; without one it starts its own)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        answer: int = 200,
        socket_factory: Callable[[int, int], socket.socket] = socket.socket,
        clock: MediaClock | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.answer = answer
        self._ports = EphemeralPorts(host, socket_factory)
        self._clock = clock
        self._own_clock: MediaClock | None = None
        self._sessions: MediaSessions | None = None
        self._driver = SipDriver(None, self._on_event)
        self._media: dict[Leg, MediaSession] = {}
        self.calls: list[ObservedTransfer] = []
        self.frames_received: dict[str, int] = {}
        """Audio frames received per call (Call-ID)."""
        self.ended: list[str] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        clock = self._clock
        if clock is None:  # on its own (not in a lab): a media clock of its own
            clock = self._own_clock = MediaClock(loop)
            clock.start()
        self._sessions = MediaSessions(clock, self._ports, MediaPolicy(address=self.host, ptime=None, dtmf_mode="none"))
        self.port = await self._driver.bind_udp(self.host, self.port)
        self._driver.endpoint = SipEndpoint(EndpointConfig(host=self.host, port=self.port, user_agent="ivr-sim-queue"))

    async def close(self) -> None:
        for media in self._media.values():
            media.close()
        self._media.clear()
        await self._driver.close()
        if self._own_clock is not None:
            self._own_clock.stop()
            self._own_clock = None

    def _on_event(self, out: Output) -> None:
        endpoint = self._driver.endpoint
        if endpoint is None:
            return
        if isinstance(out, IncomingCall):
            self._incoming(endpoint, out.leg)
        elif isinstance(out, ReInvite):
            endpoint.respond(out.leg, 488, request=out.request)
        elif isinstance(out, CallEnded):
            media = self._media.pop(out.leg, None)
            if media is not None:
                media.close()
            self.ended.append(out.leg.call_id)

    def _incoming(self, endpoint: SipEndpoint, leg: Leg) -> None:
        invite = leg.invite
        headers = tuple((name, value) for name, value in invite.headers)
        self.calls.append(ObservedTransfer(str(invite.uri), headers, attached_data(headers), "bridge"))
        if self.answer >= 300 or self._sessions is None:
            endpoint.reject(leg, self.answer)
            return
        call_id = leg.call_id
        media = self._sessions.open()

        def heard(sequence: int, timestamp: int, payload: bytes) -> None:
            self.frames_received[call_id] += 1

        media.on_audio = heard
        try:
            answer = media.answer(invite.body)
        except SdpError as exc:
            media.close()
            endpoint.reject(leg, exc.status)
            return
        self.frames_received[call_id] = 0
        stream = media.stream
        assert stream is not None and media.media is not None
        tone = 4000 * np.sin(2 * np.pi * 425 * np.arange(8000) / 8000)
        stream.play(Prompt("agent", tone.astype(np.int16)).frames(media.media.codec.name), loop=True)
        self._media[leg] = media
        endpoint.answer(leg, answer)
