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
from ivr.sip.endpoint import (
    CallEnded,
    ClearTimer,
    EndpointConfig,
    IncomingCall,
    Leg,
    Peer,
    ReInvite,
    SetTimer,
    SipEndpoint,
    Transmit,
)
from ivr.sip.sdp import PCMA, PCMU, SdpError, SessionDescription, answer_offer

__all__ = ["SimQueueEndpoint"]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SimQueueEndpoint) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.owner._receive(data, Peer(str(addr[0]), int(addr[1]), "udp"))


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
        self._endpoint: SipEndpoint | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[tuple[int, str], asyncio.TimerHandle] = {}
        self._streams: dict[Leg, MediaStream] = {}
        self.calls: list[Transfer] = []
        self.frames_received: dict[str, int] = {}
        """Audio frames received per call (Call-ID)."""
        self.ended: list[str] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=(self.host, self.port))
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        self._endpoint = SipEndpoint(EndpointConfig(host=self.host, port=self.port, user_agent="ivr-sim-queue"))

    async def close(self) -> None:
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _receive(self, data: bytes, peer: Peer) -> None:
        if self._endpoint is not None:
            self._endpoint.receive(data, peer)
            self._flush()

    def _fire(self, token: tuple[int, str]) -> None:
        self._timers.pop(token, None)
        if self._endpoint is not None:
            self._endpoint.timer_fired(token)
            self._flush()

    def _flush(self) -> None:
        endpoint, loop = self._endpoint, self._loop
        if endpoint is None or loop is None:
            return
        while outputs := endpoint.outputs():
            for out in outputs:
                if isinstance(out, Transmit):
                    if self._transport is not None:
                        self._transport.sendto(out.data, (out.peer.host, out.peer.port))
                elif isinstance(out, SetTimer):
                    old = self._timers.pop(out.token, None)
                    if old is not None:
                        old.cancel()
                    self._timers[out.token] = loop.call_later(out.delay, self._fire, out.token)
                elif isinstance(out, ClearTimer):
                    handle = self._timers.pop(out.token, None)
                    if handle is not None:
                        handle.cancel()
                elif isinstance(out, IncomingCall):
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
