"""A simulated queue endpoint (a contact-centre ACD) for bridged handoffs: a UAS on the daemon's own SIP code.

It answers the daemon's INVITE (or refuses it with a chosen status, to test the flow's failure path), keeps each
call's Request-URI, headers and the data they carry (:class:`~ivr.simulator.caller.Transfer`, method "bridge"),
and runs the call's audio: it sends a tone (the agent speaking) and counts what it receives (the caller, relayed
by the daemon). The lab binds one at each bridged queue's address on the virtual network.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Callable

import numpy as np

from ivr.media.prompts import Prompt
from ivr.media.stream import MediaStream
from ivr.simulator.caller import Transfer, attached_data
from ivr.simulator.udp_ua import UdpUserAgent
from ivr.sip.endpoint import CallEnded, EndpointConfig, IncomingCall, Leg, Output, ReInvite, SipEndpoint
from ivr.sip.sdp import PCMA, PCMU, SdpError, SessionDescription, answer_offer

__all__ = ["SimQueueEndpoint"]


class SimQueueEndpoint:
    """Answers INVITEs at ``host:port`` with ``answer`` (200, or e.g. 486 Busy Here)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        answer: int = 200,
        socket_factory: Callable[[int, int], socket.socket] = socket.socket,
    ) -> None:
        self.host = host
        self.port = port
        self.answer = answer
        self._socket = socket_factory
        self._ua = UdpUserAgent(self._on_event)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: dict[Leg, MediaStream] = {}
        self.calls: list[Transfer] = []
        self.frames_received: dict[str, int] = {}
        """Audio frames received per call (Call-ID)."""
        self.ended: list[str] = []

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.port = await self._ua.start(
            self.host, self.port, lambda port: EndpointConfig(host=self.host, port=port, user_agent="ivr-sim-queue")
        )

    async def close(self) -> None:
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()
        self._ua.close()

    def _on_event(self, out: Output) -> None:
        endpoint, loop = self._ua.endpoint, self._loop
        if endpoint is None or loop is None:
            return
        if isinstance(out, IncomingCall):
            self._incoming(endpoint, loop, out.leg)
        elif isinstance(out, ReInvite):
            endpoint.respond(out.leg, 488, request=out.request)
        elif isinstance(out, CallEnded):
            stream = self._streams.pop(out.leg, None)
            if stream is not None:
                stream.close()
            self.ended.append(out.leg.call_id)

    def _incoming(self, endpoint: SipEndpoint, loop: asyncio.AbstractEventLoop, leg: Leg) -> None:
        invite = leg.invite
        headers = tuple((name, value) for name, value in invite.headers)
        self.calls.append(Transfer(str(invite.uri), headers, attached_data(headers), "bridge"))
        if self.answer >= 300:
            endpoint.reject(leg, self.answer)
            return
        sock = self._socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.host, 0))
        port = int(sock.getsockname()[1])
        session = secrets.randbelow(2**31)
        try:
            answer, media = answer_offer(
                SessionDescription.parse(invite.body),
                local_address=self.host,
                local_port=port,
                supported=(PCMU, PCMA),
                session_id=session,
                session_version=session,
                single_codec=True,
            )
        except SdpError as exc:
            sock.close()
            endpoint.reject(leg, exc.status)
            return
        call_id = leg.call_id
        self.frames_received[call_id] = 0

        def heard(sequence: int, timestamp: int, payload: bytes) -> None:
            self.frames_received[call_id] += 1

        stream = MediaStream(
            loop,
            sock,
            codec=media.codec.name,
            payload_type=media.codec.payload_type,
            remote=(media.remote_address, media.remote_port),
            telephone_event_pt=media.telephone_event_pt,
            on_audio=heard,
            dtmf_mode="none",
        )
        tone = 4000 * np.sin(2 * np.pi * 425 * np.arange(8000) / 8000)
        stream.play(Prompt("agent", tone.astype(np.int16)).frames(media.codec.name), loop=True)
        self._streams[leg] = stream
        endpoint.answer(leg, answer.serialize())
