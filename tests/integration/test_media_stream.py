"""MediaStream, MediaClock and RtpPortPool over real loopback sockets, on asyncio's loop and on uvloop.

Timing is asserted with generous bounds only; continuity of sequence numbers and timestamps, packet counts and
payloads are asserted exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from ivr.media.clock import MediaClock
from ivr.media.ports import PortPoolExhausted, RtpPortPool
from ivr.media.prompts import Prompt
from ivr.media.rtp import RtpPacket
from ivr.media.stream import MediaStream
from ivr.media.telephone_event import key_press_events

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
try:
    import uvloop

    LOOP_FACTORIES["uvloop"] = uvloop.new_event_loop
except ImportError:  # pragma: no cover - uvloop is optional
    pass

Runner = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


@pytest.fixture(params=sorted(LOOP_FACTORIES))
def run(request: pytest.FixtureRequest) -> Runner:
    def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
        with asyncio.Runner(loop_factory=LOOP_FACTORIES[request.param]) as runner:
            runner.run(asyncio.wait_for(scenario(), 20))

    return run


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


class Receiver:
    """A plain UDP socket that records what arrives, with arrival times."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sock = udp_socket()
        self.address: tuple[str, int] = self.sock.getsockname()
        self.packets: list[tuple[float, RtpPacket, tuple[str, int]]] = []
        loop.add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except BlockingIOError:
                return
            self.packets.append((time.monotonic(), RtpPacket.parse(data), addr))

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def started_clock(loop: asyncio.AbstractEventLoop) -> MediaClock:
    """The media clock a scenario's streams share (a stream is always given its clock)."""
    clock = MediaClock(loop)
    clock.start()
    return clock


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def tone_prompt(seconds: float) -> Prompt:
    t = np.arange(int(8000 * seconds)) / 8000
    return Prompt("tone", (np.sin(2 * np.pi * 1000 * t) * 8000).astype(np.int16))


def test_two_streams_play_a_prompt_continuously_and_in_time(run: Runner) -> None:
    prompt = tone_prompt(0.5)  # 25 frames

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        clock = MediaClock(loop)
        clock.start()
        pool = RtpPortPool("127.0.0.1", 20000, 60000)
        receivers = [Receiver(loop), Receiver(loop)]
        done: list[asyncio.Future[None]] = [loop.create_future() for _ in receivers]
        streams = []
        for codec, pt, receiver, future in zip(("PCMU", "PCMA"), (0, 8), receivers, done, strict=True):
            port, sock = pool.acquire()
            stream = MediaStream(loop, sock, codec=codec, payload_type=pt, remote=receiver.address, clock=clock)
            stream.play(prompt.frames(codec), on_done=lambda f=future: f.set_result(None))
            streams.append((stream, port))
        await asyncio.gather(*done)
        frames = len(prompt.frames("PCMU"))
        await until(lambda: all(len(r.packets) >= frames for r in receivers), within=2.0)

        for (stream, port), receiver, codec in zip(streams, receivers, ("PCMU", "PCMA"), strict=True):
            packets = [p for _, p, _ in receiver.packets]
            assert [p.payload for p in packets] == list(prompt.frames(codec))
            assert {addr[1] for _, _, addr in receiver.packets} == {port}
            assert {p.ssrc for p in packets} == {stream.ssrc}
            assert stream.stats.packets_sent == frames and stream.stats.send_errors == 0
            for a, b in itertools.pairwise(packets):
                assert (b.sequence - a.sequence) & 0xFFFF == 1
            steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)]
            assert all(step % 160 == 0 and step >= 160 for step in steps)
            if clock.stats.skipped_ticks == 0:  # only a stall of >100 ms can leave a timestamp gap
                assert set(steps) == {160}
            assert packets[0].marker
            assert [p.marker for p in packets[1:]] == [step != 160 for step in steps]
            arrivals = [t for t, _, _ in receiver.packets]
            gaps = np.diff(arrivals)
            assert 0.008 < statistics.median(gaps) < 0.040
            assert 0.3 < arrivals[-1] - arrivals[0] < 2.0  # nominally 24 * 20 ms = 0.48 s
        assert clock.stats.ticks >= frames
        for (stream, port), receiver in zip(streams, receivers, strict=True):
            stream.close()
            pool.release(port)
            receiver.close()
        assert len(clock) == 0

    run(scenario)


def test_packets_from_a_foreign_source_are_dropped(run: Runner) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        clock = started_clock(loop)
        peer, stranger = udp_socket(), udp_socket()
        audio: list[int] = []
        stream = MediaStream(
            loop,
            udp_socket(),
            codec="PCMU",
            payload_type=0,
            remote=peer.getsockname(),
            on_audio=lambda seq, ts, payload: audio.append(seq),
            clock=clock,
        )
        target = stream.local_address
        for seq in range(1, 4):
            peer.sendto(RtpPacket(0, seq, seq * 160, 7, b"\xff" * 160).serialize(), target)
            stranger.sendto(RtpPacket(0, seq, seq * 160, 8, b"\x00" * 160).serialize(), target)
        peer.sendto(b"\x00junk", target)
        await until(
            lambda: (
                stream.stats.packets_received + stream.stats.dropped_wrong_source >= 6
                and stream.stats.dropped_malformed == 1
            )
        )
        assert stream.stats.packets_received == 3 and stream.stats.dropped_wrong_source == 3
        assert audio == [1, 2, 3]
        stream.close()
        peer.close()
        stranger.close()

    run(scenario)


def test_rfc4733_presses_count_one_digit_each_with_or_without_marker(run: Runner) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        clock = started_clock(loop)
        peer = udp_socket()
        digits: list[str] = []
        stream = MediaStream(
            loop,
            udp_socket(),
            codec="PCMA",
            payload_type=8,
            remote=peer.getsockname(),
            telephone_event_pt=101,
            on_digit=digits.append,
            clock=clock,
        )
        target = stream.local_address
        seq = 5000
        for n, key in enumerate("4#7"):
            for i, report in enumerate(key_press_events(key)):  # updates, then 3 end packets
                seq += 1
                marker = i == 0 and key != "#"  # "#" starts without a marker
                packet = RtpPacket(101, seq, 16000 * (n + 1), 0xABC, report.serialize(), marker=marker)
                peer.sendto(packet.serialize(), target)
                if i % 3 == 0:
                    peer.sendto(packet.serialize(), target)  # a retransmission
            await asyncio.sleep(0.01)
        await until(lambda: len(digits) == 3)
        await asyncio.sleep(0.05)
        assert digits == ["4", "#", "7"] and stream.stats.dtmf_digits == 3
        stream.close()
        peer.close()

    run(scenario)


def test_relatch_to_the_real_source_behind_nat(run: Runner) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        clock = started_clock(loop)
        receiver = Receiver(loop)
        signalled = udp_socket()  # what the SDP said; nothing is ever sent from it
        stream = MediaStream(
            loop, udp_socket(), codec="PCMU", payload_type=0, remote=signalled.getsockname(), allow_relatch=True,
            clock=clock,
        )
        receiver.sock.sendto(RtpPacket(0, 1, 160, 9, b"\xff" * 160).serialize(), stream.local_address)
        await until(lambda: stream.stats.relatched == 1)
        assert stream.remote == receiver.address
        done = loop.create_future()
        stream.play([b"\xff" * 160] * 3, on_done=lambda: done.set_result(None))
        await done
        await until(lambda: len(receiver.packets) == 3)
        stream.close()
        receiver.close()
        signalled.close()

    run(scenario)


def test_hold_stops_packets_and_the_first_after_hold_is_marked(run: Runner) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        clock = started_clock(loop)
        receiver = Receiver(loop)
        stream = MediaStream(loop, udp_socket(), codec="PCMU", payload_type=0, remote=receiver.address, clock=clock)
        stream.play([b"\xff" * 160], loop=True)
        await until(lambda: len(receiver.packets) >= 3)
        stream.set_hold(True)
        await asyncio.sleep(0.03)  # let a packet in flight land
        held = len(receiver.packets)
        await asyncio.sleep(0.15)
        assert len(receiver.packets) == held
        stream.set_hold(False)
        await until(lambda: len(receiver.packets) >= held + 2)
        stream.close()
        before, after = receiver.packets[held - 1][1], receiver.packets[held][1]
        assert after.marker and (after.sequence - before.sequence) & 0xFFFF == 1
        assert ((after.timestamp - before.timestamp) & 0xFFFFFFFF) // 160 >= 5  # time went on during hold
        receiver.close()

    run(scenario)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_stream_from_the_pool_sends_and_receives(run: Runner) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        clock = started_clock(loop)
        peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        peer.bind(("::1", 0))
        peer.setblocking(False)
        pool = RtpPortPool("::1", 40000, 60000)
        port, sock = pool.acquire()
        digits: list[str] = []
        stream = MediaStream(
            loop,
            sock,
            codec="PCMU",
            payload_type=0,
            remote=("0:0::1", peer.getsockname()[1]),  # another spelling of ::1
            telephone_event_pt=101,
            on_digit=digits.append,
            clock=clock,
        )
        for report in key_press_events("5"):
            peer.sendto(RtpPacket(101, 1, 800, 3, report.serialize()).serialize(), ("::1", port))
        await until(lambda: digits == ["5"])
        done = loop.create_future()
        stream.play([b"\xff" * 160] * 2, on_done=lambda: done.set_result(None))
        await done
        await asyncio.sleep(0.05)
        packets = [RtpPacket.parse(peer.recvfrom(2048)[0]) for _ in range(2)]
        assert [p.marker for p in packets] == [True, False]
        stream.close()
        pool.release(port)
        peer.close()

    run(scenario)


# -- RtpPortPool ---------------------------------------------------------------------------------------------


def free_even_range(width: int) -> int:
    """An even base port with (probably) nothing bound at base..base+width on 127.0.0.1."""
    for _ in range(50):
        probe = udp_socket()
        base = probe.getsockname()[1] & ~1
        probe.close()
        if base + width <= 65535:
            return base
    raise AssertionError("no port range")


def test_port_pool_hands_out_bound_non_blocking_even_ports_and_skips_held_ones() -> None:
    base = free_even_range(10)
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        held.bind(("127.0.0.1", base + 2))
    except OSError:
        pytest.skip("port raced away")
    pool = RtpPortPool("127.0.0.1", base - 1, base + 9)  # odd low bound: the first port is base
    assert pool.size == 5 and pool.available == 5
    acquired: list[tuple[int, socket.socket]] = []
    with pytest.raises(PortPoolExhausted, match="no free RTP port"):
        while True:
            acquired.append(pool.acquire())
    ports = [port for port, _ in acquired]
    assert base + 2 not in ports and len(ports) <= 4
    for port, sock in acquired:
        assert port % 2 == 0 and base <= port <= base + 9
        assert sock.getsockname() == ("127.0.0.1", port) and sock.getblocking() is False
    assert pool.in_use == len(ports)
    first_port, first_sock = acquired[0]
    first_sock.close()
    pool.release(first_port)
    with pytest.raises(ValueError):
        pool.release(first_port)
    port, sock = pool.acquire()
    assert port == first_port  # the only free one (base + 2 is still held)
    sock.close()
    for _, s in acquired[1:]:
        s.close()
    held.close()


def test_port_pool_reuses_released_ports_last() -> None:
    base = free_even_range(8)
    pool = RtpPortPool("127.0.0.1", base, base + 7)
    first, sock = pool.acquire()
    sock.close()
    pool.release(first)
    others = []
    for _ in range(3):
        port, s = pool.acquire()
        others.append(port)
        s.close()
    assert first not in others


@pytest.mark.parametrize(
    ("host", "low", "high"),
    [("localhost", 10000, 10010), ("127.0.0.1", 10001, 10001), ("127.0.0.1", 0, 10), ("127.0.0.1", 20, 10)],
)
def test_port_pool_rejects_bad_configuration(host: str, low: int, high: int) -> None:
    with pytest.raises(ValueError):
        RtpPortPool(host, low, high)


# -- issue 4: digits both ways, the inbound audio path and recording over real sockets ---------------------------


def test_recording_real_loopback_rtp_stops_on_pound(run: Runner, tmp_path: Any) -> None:
    import soundfile

    from ivr.media import g711
    from ivr.media.digits import DigitEvent
    from ivr.media.recorder import Recording, RecordingWriter

    rng = np.random.default_rng(3)
    audio = rng.integers(-9000, 9000, 160 * 40).astype(np.int16)
    payload = g711.ulaw_encode(audio)
    writer = RecordingWriter()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        clock = started_clock(loop)
        peer = udp_socket()
        stream = MediaStream(
            loop, udp_socket(), codec="PCMU", payload_type=0, remote=peer.getsockname(), telephone_event_pt=101,
            clock=clock,
        )
        recording = Recording(writer, tmp_path / "caller.wav", loop=loop, source=stream, silence_seconds=None)

        def on_digit(event: DigitEvent) -> None:
            recording.digit(event.key, event.source)

        stream.on_digit_event = on_digit
        target = stream.local_address
        for i in range(40):  # 0.8 s of audio, sent a little faster than real time
            peer.sendto(RtpPacket(0, 100 + i, 8000 + 160 * i, 77, payload[i * 160 : (i + 1) * 160]).serialize(), target)
            await asyncio.sleep(0.004)
        for i, report in enumerate(key_press_events("#")):
            packet = RtpPacket(101, 140 + i, 8000 + 160 * 40, 77, report.serialize(), marker=i == 0)
            peer.sendto(packet.serialize(), target)
        result = await asyncio.wait_for(recording.wait(), 5)
        assert (result.stop_reason, result.digit, result.frames_dropped) == ("dtmf", "#", 0)
        assert result.duration == pytest.approx(0.8)
        assert stream.jitter_buffer is None  # the recording removed itself: nothing is decoded any more
        assert stream.reception.received == 47 and stream.reception.lost == 0
        stream.close()
        peer.close()

    try:
        run(scenario)
    finally:
        writer.close(timeout=5)
    data, rate = soundfile.read(str(tmp_path / "caller.wav"), dtype="int16")
    assert rate == 8000 and np.array_equal(data, g711.ulaw_decode(payload))


def test_in_band_tones_over_loopback_are_digits_without_telephone_event(run: Runner) -> None:
    from ivr.media import g711
    from ivr.media.digits import DigitEvent
    from ivr.media.dtmf_inband import dtmf_tone

    parts = [np.zeros(800)]
    for key in "0888123456#":
        parts += [dtmf_tone(key, 0.05), np.zeros(400)]
    pcm = np.clip(np.rint(np.concatenate([*parts, np.zeros(800)])), -32768, 32767).astype(np.int16)
    payload = g711.alaw_encode(pcm[: len(pcm) - len(pcm) % 160])

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        clock = started_clock(loop)
        peer = udp_socket()
        events: list[DigitEvent] = []
        stream = MediaStream(
            loop, udp_socket(), codec="PCMA", payload_type=8, remote=peer.getsockname(), on_digit_event=events.append,
            clock=clock,
        )
        assert stream.dtmf_source == "inband"
        for i in range(len(payload) // 160):
            peer.sendto(RtpPacket(8, i, i * 160, 5, payload[i * 160 : (i + 1) * 160]).serialize(), stream.local_address)
            if i % 5 == 0:
                await asyncio.sleep(0.002)
        await until(lambda: len(events) == 11 and events[-1].ended)
        assert "".join(e.key for e in events) == "0888123456#"
        assert {e.source for e in events} == {"inband"}
        stream.close()
        peer.close()

    run(scenario)


def test_send_digit_between_two_streams_over_loopback(run: Runner) -> None:
    from ivr.media.digits import DigitEvent

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        clock = started_clock(loop)
        a_sock, b_sock = udp_socket(), udp_socket()
        ended: list[DigitEvent] = []
        a = MediaStream(
            loop, a_sock, codec="PCMU", payload_type=0, remote=b_sock.getsockname(), telephone_event_pt=101, clock=clock
        )
        b = MediaStream(
            loop,
            b_sock,
            codec="PCMU",
            payload_type=0,
            remote=a_sock.getsockname(),
            telephone_event_pt=101,
            on_digit_end=ended.append,
            clock=clock,
        )
        a.play(tone_prompt(0.2).frames("PCMU"))
        for key in "12#":
            a.send_digit(key, duration_ms=80)
        await until(lambda: len(ended) == 3 and a.stats.dtmf_digits_sent == 3, within=3.0)
        assert [(e.key, e.duration_ms) for e in ended] == [("1", 80), ("2", 80), ("#", 80)]
        assert b.stats.dtmf_digits == 3 and a.stats.dtmf_digits_sent == 3
        a.close()
        b.close()

    run(scenario)
