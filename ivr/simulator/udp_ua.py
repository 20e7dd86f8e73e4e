"""The small driver that runs a sans-I/O :class:`~ivr.sip.endpoint.SipEndpoint` over an asyncio datagram socket:
datagrams in, outputs drained after every input (transmissions sent, timers armed on the loop's clock), and every
other output (the call events) handed to the owner. The simulated caller and the simulated queue endpoint share it;
the daemon's own driver in ``ivr.server`` adds TCP, trust and rate checks on top of the same loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ivr.sip.endpoint import ClearTimer, EndpointConfig, Output, Peer, SetTimer, SipEndpoint, Transmit

__all__ = ["UdpUserAgent"]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, ua: UdpUserAgent) -> None:
        self.ua = ua

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.ua.receive(data, Peer(str(addr[0]), int(addr[1]), "udp"))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable: the transactions' timers deal with a peer that is gone


class UdpUserAgent:
    """An endpoint on ``host:port`` (0: any free port); ``on_event`` gets every output that is not I/O."""

    def __init__(self, on_event: Callable[[Output], None]) -> None:
        self._on_event = on_event
        self.endpoint: SipEndpoint | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[tuple[int, str], asyncio.TimerHandle] = {}

    async def start(self, host: str, port: int, config: Callable[[int], EndpointConfig]) -> int:
        """Bind, then build the endpoint with ``config(bound_port)``; returns the port."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=(host, port))
        self._transport = transport
        bound = int(transport.get_extra_info("sockname")[1])
        self.endpoint = SipEndpoint(config(bound))
        return bound

    def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def receive(self, data: bytes, peer: Peer) -> None:
        if self.endpoint is not None:
            self.endpoint.receive(data, peer)
            self.flush()

    def flush(self) -> None:
        """Act on everything the endpoint has to say (call after any verb called on it)."""
        endpoint, loop = self.endpoint, self._loop
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
                else:
                    self._on_event(out)

    def _fire(self, token: tuple[int, str]) -> None:
        self._timers.pop(token, None)
        if self.endpoint is not None:
            self.endpoint.timer_fired(token)
            self.flush()
