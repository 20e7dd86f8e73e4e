"""A pool of RTP ports: even UDP ports in a configured range, handed out as bound non-blocking sockets."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from collections import deque
from collections.abc import Callable

__all__ = ["DSCP_EF_TOS", "PortPoolExhausted", "RtpPortPool"]

DSCP_EF_TOS = 0xB8
"""IP TOS byte for DSCP EF (46), the usual marking for voice packets."""


class PortPoolExhausted(Exception):
    """No RTP port in the pool can be bound (all in use); the call should be refused with 503."""


class RtpPortPool:
    """Even ports in ``[low, high]`` on ``host`` (an IPv4 or IPv6 literal).

    ``acquire()`` binds the next free port and returns it with its socket; ports that fail to bind because
    another process holds them are skipped (and tried again later). Ports are handed out round-robin, so a
    port just released is reused last and late packets of the previous call do not reach the next one.
    ``release(port)`` returns the port; the socket is the caller's to close (``MediaStream.close()`` does).
    """

    def __init__(
        self, host: str, low: int, high: int, *, socket_factory: Callable[[int, int], socket.socket] = socket.socket
    ) -> None:
        """``socket_factory(family, type)`` makes the sockets (the simulator's virtual network passes its own)."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"RTP host must be an IP address literal, got {host!r}") from None
        if not 0 < low <= high <= 65535:
            raise ValueError(f"RTP port range must satisfy 0 < low <= high <= 65535, got {low}..{high}")
        first = low + (low & 1)
        if first > high:
            raise ValueError(f"RTP port range {low}..{high} contains no even port")
        self.host = host
        self.low = low
        self.high = high
        self._family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        self._free: deque[int] = deque(range(first, high + 1, 2))
        self._in_use: set[int] = set()
        self.size = len(self._free)
        self._socket = socket_factory

    @property
    def available(self) -> int:
        """Ports not handed out by this pool (some may turn out to be held by another process)."""
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def acquire(self) -> tuple[int, socket.socket]:
        """Bind a free even port; raises ``PortPoolExhausted`` when none can be bound."""
        last_error: OSError | None = None
        for _ in range(len(self._free)):
            port = self._free.popleft()
            sock = self._socket(self._family, socket.SOCK_DGRAM)
            try:
                sock.bind((self.host, port))
            except OSError as exc:
                sock.close()
                self._free.append(port)  # held by someone else now; try it again later
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                last_error = exc
                continue
            sock.setblocking(False)
            if self._family == socket.AF_INET:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, DSCP_EF_TOS)
            self._in_use.add(port)
            return port, sock
        detail = f" (last error: {last_error})" if last_error else ""
        raise PortPoolExhausted(
            f"no free RTP port in {self.host} {self.low}..{self.high}: {len(self._in_use)} in use{detail}"
        )

    def release(self, port: int) -> None:
        """Return a port handed out by ``acquire()``; raises ``ValueError`` for any other port."""
        try:
            self._in_use.remove(port)
        except KeyError:
            raise ValueError(f"RTP port {port} was not acquired from this pool") from None
        self._free.append(port)
