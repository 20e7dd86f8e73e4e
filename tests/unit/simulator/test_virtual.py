"""The virtual-time loop and its in-memory network."""

from __future__ import annotations

import asyncio
import errno
import socket
import time

import pytest

from ivr.simulator.virtual import VirtualNetwork, VirtualTimeLoop, run_virtual


def test_an_hour_of_sleeping_takes_no_real_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - start

    started = time.perf_counter()
    assert run_virtual(main) == pytest.approx(3600)
    assert time.perf_counter() - started < 0.5


def test_timers_fire_in_deadline_order_at_their_virtual_times() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        fired: list[tuple[str, float]] = []
        done = loop.create_future()
        for name, delay in (("c", 30.0), ("a", 0.02), ("b", 5.0)):
            loop.call_later(delay, lambda n=name: fired.append((n, round(loop.time() - t0, 6))))
        loop.call_later(31, done.set_result, None)
        await done
        return fired

    assert run_virtual(main) == [("a", 0.02), ("b", 5.0), ("c", 30.0)]


def test_a_busy_worker_thread_freezes_the_virtual_clock() -> None:
    async def main() -> tuple[float, bool]:
        loop = asyncio.get_running_loop()
        timer_fired = []
        loop.call_later(0.01, timer_fired.append, True)
        start = loop.time()
        await loop.run_in_executor(None, time.sleep, 0.2)  # 0.2 s of real work
        return loop.time() - start, bool(timer_fired)

    elapsed, fired = run_virtual(main)
    assert elapsed == 0.0  # the 10 ms timer did not jump the clock while the thread worked
    assert not fired


def test_datagrams_reach_the_bound_socket_in_order_with_their_source() -> None:
    net = VirtualNetwork()
    a = net.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = net.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 20000))
    for i in range(5):
        a.sendto(bytes([i]) * (i + 1), ("127.0.0.1", 20000))
    buf = bytearray(100)
    got = []
    for _ in range(5):
        n, source = b.recvfrom_into(buf)
        got.append((bytes(buf[:n]), source))
    assert got == [(bytes([i]) * (i + 1), a.getsockname()) for i in range(5)]
    with pytest.raises(BlockingIOError):
        b.recvfrom_into(buf)
    a.sendto(b"x", ("127.0.0.1", 9))  # nobody there: dropped, like UDP
    assert net.undeliverable == 1
    with pytest.raises(OSError) as exc:
        net.socket().bind(("127.0.0.1", 20000))
    assert exc.value.errno == errno.EADDRINUSE
    a.close()
    b.close()


def test_the_loop_sees_a_virtual_socket_readable_like_udp() -> None:
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        rx = loop.network.socket()
        rx.bind(("127.0.0.1", 30000))
        tx = loop.network.socket()
        got: asyncio.Future[bytes] = loop.create_future()

        def readable() -> None:
            data, _ = rx.recvfrom(2048)
            got.set_result(data)

        loop.add_reader(rx.fileno(), readable)
        loop.call_later(10, tx.sendto, b"rtp", ("127.0.0.1", 30000))
        data = await got
        loop.remove_reader(rx.fileno())
        rx.close()
        tx.close()
        return data

    assert run_virtual(main) == b"rtp"


def test_datagram_endpoints_talk_over_the_virtual_network() -> None:
    async def main() -> tuple[bytes, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[tuple[bytes, tuple[str, int]]] = loop.create_future()

        class Echo(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                got.set_result((data, addr))

        server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 5060))
        client, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        client.sendto(b"OPTIONS", ("127.0.0.1", 5060))
        result = await got
        assert result[1] == client.get_extra_info("sockname")
        server.close()
        client.close()
        return result

    data, _ = run_virtual(main)
    assert data == b"OPTIONS"
