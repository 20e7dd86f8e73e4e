"""Virtual time: the daemon, simulated callers and every timer on one clock that jumps instead of sleeping.

:class:`VirtualTimeLoop` is an ordinary selector event loop whose ``time()`` is a number it moves itself. When
nothing is ready to run and no worker thread is busy, the loop does not wait: it moves the clock to the next timer
and runs it. A two-minute call then takes as long as the work it does (the media clock's 6000 ticks), not two
minutes, and gives the same outcome, because every timer in the daemon reads the loop's clock (SIP retransmissions,
no-input and inter-digit timeouts, RTP pacing).

Nothing on it touches the network. :class:`VirtualNetwork` carries the datagrams:

* SIP: ``loop.create_datagram_endpoint`` binds a :class:`VirtualDatagramTransport` at a virtual ``host:port``
  (port 0 picks one); ``sendto`` hands the datagram to the protocol bound at the destination on the next loop
  iteration. The daemon and :class:`~ivr.simulator.caller.SimCaller` use the API unchanged.
* RTP: :meth:`VirtualNetwork.socket` is a socket factory (``RtpPortPool(socket_factory=...)``) whose sockets keep
  the datagrams and their source address in memory. For the event loop to see them, each one has a real AF_UNIX
  datagram socket pair beside it: a datagram queued for a virtual socket queues a placeholder of the same length in
  the pair, so ``loop.add_reader`` on its ``fileno()`` and the ``FIONREAD`` ioctl that
  :class:`~ivr.media.stream.MediaStream` asks work as they do on UDP. A local datagram socket queues synchronously
  inside ``send()``, so the loop's zero-timeout poll sees every datagram sent before it: delivery order is fixed and
  runs repeat exactly.

Worker threads (``run_in_executor``: flow loading, prompt synthesis, DNS) take real time: while one is busy the loop
waits for it in real time and the virtual clock stands still, so a timeout never fires early because a thread was
slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import selectors
import socket
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar, cast

__all__ = [
    "VirtualDatagramTransport",
    "VirtualNetwork",
    "VirtualSocket",
    "VirtualTimeLoop",
    "run_virtual",
]

T = TypeVar("T")
Address = tuple[str, int]

EPOCH = 1000.0
"""Where a virtual clock starts (any value works; not zero, so code that treats 0.0 as 'never' still works)."""

FIRST_EPHEMERAL_PORT = 40000
_SocketFactory = Callable[[int, int], socket.socket]


class VirtualNetwork:
    """Addresses to virtual sockets and datagram endpoints; delivery is in memory, in send order, lossless."""

    def __init__(self) -> None:
        self._sockets: dict[Address, VirtualSocket] = {}
        self._endpoints: dict[Address, VirtualDatagramTransport] = {}
        self._next_port = FIRST_EPHEMERAL_PORT
        self.undeliverable = 0
        """Datagrams sent to an address nobody has bound (dropped, as UDP would)."""

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM) -> VirtualSocket:
        """A new unbound datagram socket (the signature of ``socket.socket``, for socket factories)."""
        if type != socket.SOCK_DGRAM:
            raise OSError(errno.EPROTONOSUPPORT, "the virtual network carries datagrams only")
        return VirtualSocket(self, family)

    @property
    def socket_factory(self) -> _SocketFactory:
        """:meth:`socket`, typed as the ``socket.socket`` factory that port pools and streams take."""
        return cast(_SocketFactory, self.socket)

    def _bind(self, address: Address, owner: VirtualSocket | VirtualDatagramTransport) -> Address:
        host, port = address
        if port == 0:
            while (host, self._next_port) in self._sockets or (host, self._next_port) in self._endpoints:
                self._next_port += 1
            port = self._next_port
            self._next_port += 1
        key = (host, port)
        if key in self._sockets or key in self._endpoints:
            raise OSError(errno.EADDRINUSE, f"virtual address {host}:{port} is in use")
        if isinstance(owner, VirtualSocket):
            self._sockets[key] = owner
        else:
            self._endpoints[key] = owner
        return key

    def _unbind(self, address: Address) -> None:
        self._sockets.pop(address, None)
        self._endpoints.pop(address, None)

    def send(self, data: bytes, source: Address, destination: Address) -> None:
        key = (str(destination[0]), int(destination[1]))
        target_socket = self._sockets.get(key)
        if target_socket is not None:
            target_socket._deliver(bytes(data), source)
            return
        endpoint = self._endpoints.get(key)
        if endpoint is not None:
            endpoint._deliver(bytes(data), source)
            return
        self.undeliverable += 1


class VirtualSocket:
    """The part of ``socket.socket`` that RTP streams and port pools use, on a :class:`VirtualNetwork`."""

    def __init__(self, network: VirtualNetwork, family: int) -> None:
        self._network = network
        self.family = family
        self.type = socket.SOCK_DGRAM
        self._address: Address | None = None
        self._queue: deque[tuple[bytes, Address]] = deque()
        # The event loop watches the reading end; each datagram queued here has a placeholder of its length there.
        self._signal_rx, self._signal_tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._signal_rx.setblocking(False)
        self._signal_tx.setblocking(False)
        self._closed = False
        self.dropped = 0

    def bind(self, address: Address) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "socket is closed")
        if self._address is not None:
            raise OSError(errno.EINVAL, "socket is already bound")
        self._address = self._network._bind((str(address[0]), int(address[1])), self)

    def getsockname(self) -> Address:
        if self._address is None:
            return ("0.0.0.0", 0)
        return self._address

    def fileno(self) -> int:
        return self._signal_rx.fileno()

    def setblocking(self, flag: bool) -> None:
        pass  # always non-blocking

    def setsockopt(self, *args: Any) -> None:
        pass  # buffer sizes and DSCP marks mean nothing here

    def sendto(self, data: bytes | bytearray | memoryview, address: Address) -> int:
        if self._closed:
            raise OSError(errno.EBADF, "socket is closed")
        if self._address is None:
            self.bind(("0.0.0.0", 0))
        assert self._address is not None
        self._network.send(bytes(data), self._address, address)
        return len(data)

    def recvfrom_into(self, buffer: bytearray | memoryview, nbytes: int = 0) -> tuple[int, Address]:
        if not self._queue:
            raise BlockingIOError(errno.EAGAIN, "no datagram queued")
        data, source = self._queue.popleft()
        with contextlib.suppress(BlockingIOError):
            self._signal_rx.recv(65536)
        size = min(len(data), len(buffer) if nbytes <= 0 else nbytes)
        buffer[:size] = data[:size]
        return size, source

    def recvfrom(self, bufsize: int) -> tuple[bytes, Address]:
        buffer = bytearray(bufsize)
        size, source = self.recvfrom_into(buffer)
        return bytes(buffer[:size]), source

    def _deliver(self, data: bytes, source: Address) -> None:
        if self._closed:
            return
        try:
            # The placeholder's length is the datagram's: FIONREAD on the watched end reports the next size.
            self._signal_tx.send(bytes(len(data)) if data else b"")
        except BlockingIOError:
            self.dropped += 1  # the reader is not keeping up: a full UDP receive buffer drops too
            return
        self._queue.append((data, source))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._address is not None:
            self._network._unbind(self._address)
        self._queue.clear()
        self._signal_rx.close()
        self._signal_tx.close()

    def __enter__(self) -> VirtualSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VirtualDatagramTransport(asyncio.DatagramTransport):
    """What ``create_datagram_endpoint`` returns on a :class:`VirtualTimeLoop`."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, network: VirtualNetwork, protocol: asyncio.DatagramProtocol
    ) -> None:
        super().__init__()
        self._loop = loop
        self._network = network
        self._protocol = protocol
        self._address: Address | None = None
        self._closing = False

    def _bind(self, address: Address) -> None:
        self._address = self._network._bind(address, self)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._address
        return default

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing or self._address is None:
            return
        if addr is None:
            raise ValueError("a virtual datagram transport has no default peer: pass addr")
        self._network.send(bytes(data), self._address, (str(addr[0]), int(addr[1])))

    def _deliver(self, data: bytes, source: Address) -> None:
        if not self._closing:
            self._loop.call_soon(self._received, data, source)

    def _received(self, data: bytes, source: Address) -> None:
        if not self._closing:
            self._protocol.datagram_received(data, source)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._address is not None:
            self._network._unbind(self._address)
        self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0


class _VirtualSelector(selectors.BaseSelector):
    """A real selector whose waits become jumps of the loop's virtual clock while no worker thread is busy."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()
        self.loop: VirtualTimeLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        loop = self.loop
        if loop is None or loop._busy_workers or timeout is None:
            # A worker thread is busy (its result arrives through the loop's self-pipe), or nothing is scheduled
            # at all: wait in real time; the virtual clock stands still.
            return self._real.select(timeout)
        loop._advance(timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop on virtual time with a :class:`VirtualNetwork` (``loop.network``)."""

    def __init__(self, network: VirtualNetwork | None = None) -> None:
        selector = _VirtualSelector()
        self._now = EPOCH
        self._busy_workers = 0
        self.network = network or VirtualNetwork()
        super().__init__(selector)
        selector.loop = self

    def time(self) -> float:
        return self._now

    def _advance(self, seconds: float) -> None:
        if seconds > 0:
            self._now += seconds

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self.note_outside_work(future)
        return future

    def note_outside_work(self, future: asyncio.Future[Any]) -> None:
        """``future`` completes when work outside the loop (a thread, a process) is done: until then the clock
        waits for it in real time (see :func:`ivr.aio.wrap_outside`)."""
        if future.done():
            return
        self._busy_workers += 1

        def done(_: asyncio.Future[Any]) -> None:
            self._busy_workers -= 1

        future.add_done_callback(done)

    async def create_datagram_endpoint(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: Address | None = None,
        remote_addr: Address | None = None,
        **kwargs: Any,
    ) -> tuple[VirtualDatagramTransport, asyncio.DatagramProtocol]:
        if remote_addr is not None:
            raise OSError(errno.EOPNOTSUPP, "virtual datagram endpoints are not connected; use sendto(data, addr)")
        protocol = protocol_factory()
        transport = VirtualDatagramTransport(self, self.network, protocol)
        transport._bind(local_addr or ("127.0.0.1", 0))
        protocol.connection_made(transport)
        return transport, protocol


def run_virtual(main: Callable[[], Any], *, network: VirtualNetwork | None = None, debug: bool = False) -> Any:
    """Run the coroutine function ``main`` to completion on a fresh :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(network), debug=debug) as runner:
        return runner.run(main())
