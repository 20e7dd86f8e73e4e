"""Media clock benchmark: N streams play a looping prompt to a sink on loopback, on one MediaClock.

Prints, per event loop (asyncio, uvloop) and stream count: CPU seconds per second of audio (the benchmark
process, user + system, including the kernel's loopback delivery done inside sendto), microseconds of CPU per
packet sent, timer lateness p50/p99/max, and packets sent against the packets the wall clock called for. A
separate sink process counts what arrives.

    python3 bench/bench_media_tick.py                       # 100, 500, 1000, 2000 streams, both loops, 5 s
    python3 bench/bench_media_tick.py --streams 2000 --loops uvloop --seconds 10

Each configuration runs in a fresh process. This is a figure printer, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import os
import resource
import socket
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivr.media.clock import MediaClock
from ivr.media.ports import RtpPortPool
from ivr.media.prompts import Prompt
from ivr.media.stream import MediaStream

WARMUP = 1.0


def sink(conn: multiprocessing.connection.Connection) -> None:
    """Count datagrams until told to stop; runs in its own process."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    conn.send(sock.getsockname())
    buf = bytearray(2048)
    count = 0
    recv_into = sock.recv_into
    while True:
        try:
            for _ in range(1000):
                recv_into(buf)
                count += 1
        except TimeoutError:
            pass
        if conn.poll():
            break
    conn.recv()
    conn.send(count)


def source(conn: multiprocessing.connection.Connection) -> None:
    """Send one 20 ms PCMU packet to every port it is given, every 20 ms, until told to stop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    conn.send(sock.getsockname())
    ports: list[int] = conn.recv()
    packet = bytes([0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7]) + b"\xff" * 160
    targets = [("127.0.0.1", port) for port in ports]
    sent = 0
    deadline = time.monotonic()
    sendto = sock.sendto
    while not conn.poll():
        for target in targets:
            try:  # noqa: SIM105 - keep the source cheap
                sendto(packet, target)
            except OSError:
                pass
        sent += len(targets)
        deadline += 0.020
        delay = deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    conn.recv()
    conn.send(sent)


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


class RawBlast:
    """The floor: one clocked object that sends a fixed 172-byte packet from every socket, no RTP logic."""

    def __init__(self, socks: list[socket.socket], address: tuple[str, int]) -> None:
        self.sends = [s.sendto for s in socks]
        self.address = address
        self.packet = bytes(172)
        self.sent = 0

    def send_tick(self, tick: int) -> None:
        packet, address = self.packet, self.address
        for send in self.sends:
            try:  # noqa: SIM105 - contextlib.suppress would cost more than what is measured here
                send(packet, address)
            except OSError:
                pass
        self.sent += len(self.sends)


def instrument(clock: MediaClock, lateness: array[float], duration: array[float], cpu: array[float]) -> None:
    """Wrap the clock's timer callback to record, with time.monotonic (uvloop's loop.time() is cached in whole
    milliseconds), how late each callback starts, how long it runs (wall) and how much CPU it uses (thread time,
    which descheduling on a busy machine does not inflate)."""
    original = clock._on_timer
    monotonic, perf_counter, thread_time = time.monotonic, time.perf_counter, time.thread_time

    def timed() -> None:
        start, cpu_start = perf_counter(), thread_time()
        lateness.append(monotonic() - clock.deadline(clock._next))
        original()
        cpu.append(thread_time() - cpu_start)
        duration.append(perf_counter() - start)

    clock._on_timer = timed  # type: ignore[method-assign]


async def run_streams(n_streams: int, seconds: float, sink_address: tuple[str, int], raw: bool) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop)
    pool = RtpPortPool("127.0.0.1", 20000, 29999)
    t = np.arange(8000 * 3) / 8000
    prompt = Prompt("tone", (np.sin(2 * np.pi * 440 * t) * 6000).astype(np.int16))
    frames = prompt.frames("PCMU")
    socks = [pool.acquire()[1] for _ in range(n_streams)]
    streams: list[MediaStream] = []
    blast: RawBlast | None = None
    if raw:
        blast = RawBlast(socks, sink_address)
    else:
        streams = [
            MediaStream(loop, sock, codec="PCMU", payload_type=0, remote=sink_address, clock=clock) for sock in socks
        ]

    def packets_sent() -> int:
        return blast.sent if blast is not None else sum(s.stats.packets_sent for s in streams)

    lateness, duration, tick_cpu = array("d"), array("d"), array("d")
    instrument(clock, lateness, duration, tick_cpu)
    clock.start()
    if blast is not None:
        clock.add(blast)
    for stream in streams:
        stream.play(frames, loop=True)
    await asyncio.sleep(WARMUP)

    sent0 = packets_sent()
    errors0 = sum(s.stats.send_errors for s in streams)
    del lateness[:], duration[:], tick_cpu[:]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    late = np.array(lateness) * 1000.0
    work = np.array(duration) * 1000.0
    work_cpu = np.array(tick_cpu) * 1000.0
    sent = packets_sent() - sent0
    errors = sum(s.stats.send_errors for s in streams) - errors0
    total_sent = packets_sent()
    if blast is not None:
        clock.discard(blast)
    for stream in streams:
        stream.close()
    for sock in socks:
        sock.close()

    wall = wall1 - wall0
    cpu = cpu1 - cpu0
    return {
        "streams": n_streams,
        "wall": wall,
        "cpu_per_audio_second": cpu / wall,
        "us_per_packet": cpu / sent * 1e6 if sent else float("nan"),
        "lateness_ms_p50": float(np.percentile(late, 50)),
        "lateness_ms_p99": float(np.percentile(late, 99)),
        "lateness_ms_max": float(late.max()),
        "tick_ms_p50": float(np.percentile(work, 50)),
        "tick_ms_p99": float(np.percentile(work, 99)),
        "tick_cpu_ms_p50": float(np.percentile(work_cpu, 50)),
        "tick_cpu_ms_p99": float(np.percentile(work_cpu, 99)),
        "sent": sent,
        "expected": n_streams * wall / clock.ptime,
        "send_errors": errors,
        "skipped_ticks": clock.stats.skipped_ticks,
        "total_sent": total_sent,
    }


async def run_receive(n_streams: int, seconds: float, conn: multiprocessing.connection.Connection) -> dict[str, Any]:
    """N idle streams receiving 50 packets/s each from the source process."""
    loop = asyncio.get_running_loop()
    source_address = conn.recv()
    pool = RtpPortPool("127.0.0.1", 20000, 29999)
    acquired = [pool.acquire() for _ in range(n_streams)]
    clock = MediaClock(loop)  # idle streams: nothing is sent, the clock never ticks
    options: dict[str, Any] = {"codec": "PCMU", "payload_type": 0, "telephone_event_pt": 101, "clock": clock}
    streams = [MediaStream(loop, sock, remote=source_address, **options) for _, sock in acquired]
    conn.send([port for port, _ in acquired])
    await asyncio.sleep(WARMUP)
    received0 = sum(s.stats.packets_received for s in streams)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    received = sum(s.stats.packets_received for s in streams) - received0
    conn.send("stop")
    source_sent = conn.recv()
    await asyncio.sleep(0.1)
    total = sum(s.stats.packets_received for s in streams)
    dropped = sum(s.stats.dropped_wrong_source + s.stats.dropped_malformed for s in streams)
    for stream in streams:
        stream.close()
    wall, cpu = wall1 - wall0, cpu1 - cpu0
    return {
        "streams": n_streams,
        "cpu_per_audio_second": cpu / wall,
        "us_per_packet": cpu / received * 1e6 if received else float("nan"),
        "received": received,
        "expected": n_streams * wall / 0.020,
        "received_of_sent": total / max(source_sent, 1),
        "dropped": dropped,
    }


def worker(n_streams: int, seconds: float, loop_kind: str, mode: str) -> dict[str, Any]:
    raise_fd_limit(n_streams + 256)
    factory: Any = asyncio.new_event_loop
    if loop_kind == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    parent, child = multiprocessing.Pipe()
    if mode == "recv":
        proc = multiprocessing.Process(target=source, args=(child,), daemon=True)
        proc.start()
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(run_receive(n_streams, seconds, parent))
        proc.join(5)
        return result
    proc = multiprocessing.Process(target=sink, args=(child,), daemon=True)
    proc.start()
    sink_address = parent.recv()
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(run_streams(n_streams, seconds, sink_address, mode == "raw"))
    time.sleep(0.2)
    parent.send("stop")
    result["received"] = parent.recv()
    proc.join(5)
    return result


def run_worker(n: int, loop_kind: str, mode: str, seconds: float) -> dict[str, Any] | str:
    cmd = [sys.executable, __file__, "--worker", str(n), loop_kind, mode, "--seconds", str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=seconds * 4 + 60)
    if out.returncode != 0:
        return f"failed: {out.stderr.strip().splitlines()[-1:]}"
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="100,500,1000,2000")
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--raw", action="store_true", help="also run the floor: bare sendto from every socket")
    parser.add_argument("--receive", action="store_true", help="also measure the receive path (idle streams)")
    parser.add_argument("--worker", nargs=3, metavar=("STREAMS", "LOOP", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        n, loop_kind, mode = args.worker
        print(json.dumps(worker(int(n), args.seconds, loop_kind, mode)))
        return

    counts = [int(x) for x in args.streams.split(",")]
    loops = args.loops.split(",")
    print(f"media clock benchmark: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.seconds:g} s per run")
    print(
        "sending: cpu s/s = CPU seconds of this process per second of audio; late = timer lateness;\n"
        "tick = wall time inside one timer callback; tick cpu = CPU time of that callback"
    )
    header = (
        f"{'loop':12} {'streams':>7} {'cpu s/s':>8} {'us/pkt':>7} {'late p50':>9} {'p99':>7} {'max':>7} "
        f"{'tick p50':>9} {'p99':>7} {'tick cpu p50':>12} {'p99':>7} {'sent/expected':>14} {'recv/sent':>10} "
        f"{'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for loop_kind in loops:
        for mode in ["rtp", "raw"] if args.raw else ["rtp"]:
            for n in counts:
                name = loop_kind + ("/raw" if mode == "raw" else "")
                r = run_worker(n, loop_kind, mode, args.seconds)
                if isinstance(r, str):
                    print(f"{name:12} {n:>7} {r}")
                    continue
                print(
                    f"{name:12} {n:>7} {r['cpu_per_audio_second']:>8.3f} {r['us_per_packet']:>7.2f} "
                    f"{r['lateness_ms_p50']:>7.2f}ms {r['lateness_ms_p99']:>5.2f}ms {r['lateness_ms_max']:>5.1f}ms "
                    f"{r['tick_ms_p50']:>7.2f}ms {r['tick_ms_p99']:>5.2f}ms "
                    f"{r['tick_cpu_ms_p50']:>10.2f}ms {r['tick_cpu_ms_p99']:>5.2f}ms "
                    f"{r['sent'] / r['expected']:>14.4f} {r['received'] / max(r['total_sent'], 1):>10.4f} "
                    f"{r['send_errors']:>6}"
                )
    if not args.receive:
        return
    print()
    print("receiving: idle streams, 50 packets/s each from a source process")
    header = (
        f"{'loop':12} {'streams':>7} {'cpu s/s':>8} {'us/pkt':>7} {'recv/expected':>14} {'recv/sent':>10} "
        f"{'dropped':>7}"
    )
    print(header)
    print("-" * len(header))
    for loop_kind in loops:
        for n in counts:
            r = run_worker(n, loop_kind, "recv", args.seconds)
            if isinstance(r, str):
                print(f"{loop_kind:12} {n:>7} {r}")
                continue
            print(
                f"{loop_kind:12} {n:>7} {r['cpu_per_audio_second']:>8.3f} {r['us_per_packet']:>7.2f} "
                f"{r['received'] / r['expected']:>14.4f} {r['received_of_sent']:>10.4f} {r['dropped']:>7}"
            )


if __name__ == "__main__":
    main()
