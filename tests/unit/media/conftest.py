"""Deterministic stand-ins for the event loop and the UDP socket, so the media clock and the stream's send and
receive paths are tested on virtual time without sockets."""

from __future__ import annotations

import errno
import heapq
import itertools
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

from ivr.media.clock import MediaClock
from ivr.media.stream import MediaStream


class FakeTimer:
    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Virtual time. Timers run at exactly their deadline plus ``jitter`` (a callable giving the extra
    lateness of each timer), callbacks from call_soon run right after the callback that scheduled them."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.timers: list[tuple[float, int, FakeTimer]] = []
        self.ready: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self.readers: dict[int, Callable[[], None]] = {}
        self.errors: list[dict[str, Any]] = []
        self.jitter: Callable[[], float] = lambda: 0.0
        self.in_timer = False
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        timer = FakeTimer(when, callback, args)
        heapq.heappush(self.timers, (when, next(self._seq), timer))
        return timer

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self.ready.append((callback, args))

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.readers[fd] = callback

    def remove_reader(self, fd: int) -> bool:
        return self.readers.pop(fd, None) is not None

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self.errors.append(context)

    def pending_timers(self) -> list[FakeTimer]:
        return [t for _, _, t in self.timers if not t.cancelled]

    def _run_ready(self) -> None:
        while self.ready:
            callback, args = self.ready.popleft()
            callback(*args)

    def advance(self, seconds: float) -> None:
        """Run everything due within the next ``seconds`` of virtual time."""
        self.run_until(self.now + seconds)

    def run_until(self, end: float) -> None:
        self._run_ready()
        while self.timers and self.timers[0][0] <= end:
            when, _, timer = heapq.heappop(self.timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, when + self.jitter())
            self.in_timer = True
            try:
                timer.callback(*timer.args)
            finally:
                self.in_timer = False
            self._run_ready()
        self.now = max(self.now, end)

    def stall(self, seconds: float) -> None:
        """The loop is blocked: time passes, nothing runs."""
        self.now += seconds


class FakeSocket:
    """Records what is sent (with the loop time), serves queued datagrams to recvfrom_into."""

    _fds = itertools.count(100)
    by_fd: dict[int, FakeSocket] = {}

    def __init__(self, loop: FakeLoop | None = None, local: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        self.loop = loop
        self.local = local
        self.sent: list[tuple[float, bytes, tuple[str, int]]] = []
        self.inbox: deque[tuple[bytes, tuple[str, int]] | OSError] = deque()
        self.send_error: OSError | None = None
        self.closed = False
        self.blocking = True
        self.family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
        self._fd = next(self._fds)
        FakeSocket.by_fd[self._fd] = self

    def fileno(self) -> int:
        return -1 if self.closed else self._fd

    def setblocking(self, flag: bool) -> None:
        self.blocking = flag

    def getsockname(self) -> tuple[str, int]:
        return self.local

    def close(self) -> None:
        self.closed = True

    def sendto(self, data: bytes | bytearray, addr: tuple[str, int]) -> int:
        assert not self.closed
        if self.send_error is not None:
            raise self.send_error
        self.sent.append((self.loop.now if self.loop else 0.0, bytes(data), addr))
        return len(data)

    def recvfrom_into(self, buf: bytearray) -> tuple[int, tuple[str, int]]:
        if not self.inbox:
            raise BlockingIOError(errno.EAGAIN, "no data")
        item = self.inbox.popleft()
        if isinstance(item, OSError):
            raise item
        data, addr = item
        n = min(len(data), len(buf))
        buf[:n] = data[:n]
        return n, addr


def fake_ioctl(fd: int, request: int, buf: Any, mutate: bool = True) -> int:
    """FIONREAD on a FakeSocket: the size of the next queued datagram, 0 if none."""
    sock = FakeSocket.by_fd[fd]
    item = sock.inbox[0] if sock.inbox else None
    buf[0] = len(item[0]) if isinstance(item, tuple) else 0
    return 0


@pytest.fixture(autouse=True)
def _fake_fionread(monkeypatch: pytest.MonkeyPatch) -> None:
    import ivr.media.stream

    monkeypatch.setattr(ivr.media.stream, "_ioctl", fake_ioctl)


@pytest.fixture
def fake_loop() -> FakeLoop:
    return FakeLoop()


@pytest.fixture
def make_socket(fake_loop: FakeLoop) -> Callable[..., FakeSocket]:
    def make(**kwargs: Any) -> FakeSocket:
        return FakeSocket(fake_loop, **kwargs)

    return make


REMOTE = ("192.0.2.10", 30000)
FRAMES = tuple(bytes([i]) * 160 for i in range(10))


@pytest.fixture
def clock(fake_loop: Any) -> MediaClock:
    clock = MediaClock(fake_loop)
    clock.start()
    return clock


@pytest.fixture
def new_stream(fake_loop: Any, make_socket: Callable[..., Any], clock: MediaClock) -> Callable[..., Any]:
    def make(**kwargs: Any) -> tuple[MediaStream, Any]:
        sock = make_socket()
        options: dict[str, Any] = {"codec": "PCMU", "payload_type": 0, "remote": REMOTE, "clock": clock}
        options.update(kwargs)
        return MediaStream(fake_loop, sock, **options), sock

    return make
