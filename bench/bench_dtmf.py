"""Barge-in latency: from a caller's key press arriving to the last prompt packet the IVR sends.

A *caller* (this process: plain sockets and threads, no asyncio) sends RTP to an *IVR* (a worker process: one
``MediaStream`` on a ``MediaClock``, playing a looping prompt back to the caller). Every 20 ms the caller sends an
audio packet (silence); now and then it presses a key:

* ``rfc4733``: the press goes out as RFC 4733 telephone-event packets (a marked start, updates, three ends);
* ``inband``: the press is 100 ms of DTMF tone in the audio packets (the IVR has no telephone-event and listens
  in-band, so the detector needs about 30 ms of tone first: in-band barge-in cannot be as fast).

The IVR's ``on_digit`` calls ``stream.stop_playback()``, which is what barge-in does, and restarts the prompt 250 ms
later for the next trial. The caller's 20 ms are 0.05 % long, so its presses meet the IVR's ticks at every phase
over a run. The caller timestamps (``time.monotonic``, one clock for both processes) the first
packet of each press when it sends it, and every prompt packet when it arrives; the latency of a trial is the
arrival of the last prompt packet before the stop minus the press's send time (0 when no prompt packet left after
the press arrived). With ``--load N`` the IVR also plays to N other streams on the same clock (a busy process).

    python3 bench/bench_dtmf.py                                  # both loops, load 0 and 500, both modes
    python3 bench/bench_dtmf.py --trials 500 --loops uvloop --load 0,1000 --modes rfc4733

Each configuration runs in a fresh worker process. This is a figure printer, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import random
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivr.media import g711
from ivr.media.clock import MediaClock
from ivr.media.dtmf_inband import dtmf_tone
from ivr.media.prompts import Prompt
from ivr.media.stream import MediaStream
from ivr.media.telephone_event import key_press_events

TE_PT = 101
RESTART_AFTER = 0.25
CALLER_PERIOD = 0.020 * 1.0005
"""The caller's clock runs 0.05 % fast (as a real phone's may): its packets drift across the IVR's 20 ms ticks, so
the presses arrive at every phase of the media clock over a run, not at one phase chosen by chance."""
SILENCE = g711.SILENCE["PCMU"]


# -- the IVR (worker process) -------------------------------------------------------------------------------------


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    return sock


async def ivr(conn: multiprocessing.connection.Connection, caller: tuple[str, int], sink: tuple[str, int], mode: str,
              load: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop)
    clock.start()
    t = np.arange(8000 * 3) / 8000
    frames = Prompt("prompt", (np.sin(2 * np.pi * 440 * t) * 6000).astype(np.int16)).frames("PCMU")
    stream = MediaStream(
        loop,
        udp_socket(),
        codec="PCMU",
        payload_type=0,
        remote=caller,
        telephone_event_pt=TE_PT if mode == "rfc4733" else None,
        clock=clock,
    )
    digits = 0

    def barge_in(key: str) -> None:
        nonlocal digits
        digits += 1
        stream.stop_playback()
        loop.call_later(RESTART_AFTER, lambda: stream.play(frames, loop=True))

    stream.on_digit = barge_in
    others = [
        MediaStream(loop, udp_socket(), codec="PCMU", payload_type=0, remote=sink, clock=clock) for _ in range(load)
    ]
    stream.play(frames, loop=True)
    for other in others:
        other.play(frames, loop=True)
    conn.send(stream.local_address)
    await loop.run_in_executor(None, conn.recv)  # "stop"
    result = {
        "digits": digits,
        "late_ticks": clock.stats.late_ticks,
        "max_lateness_ms": clock.stats.max_lateness * 1000,
        "dtmf_source": stream.dtmf_source,
    }
    for s in [stream, *others]:
        s.close()
    return result


def worker(conn: multiprocessing.connection.Connection, caller: tuple[str, int], sink: tuple[str, int], mode: str,
           loop_kind: str, load: int) -> None:
    factory: Any = asyncio.new_event_loop
    if loop_kind == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < load + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, load + 256), hard))
    with asyncio.Runner(loop_factory=factory) as runner:
        conn.send(runner.run(ivr(conn, caller, sink, mode, load)))


# -- the caller (this process) ------------------------------------------------------------------------------------


class Caller:
    def __init__(self) -> None:
        self.sock = udp_socket()
        self.sink = udp_socket()
        self.sink.settimeout(0.1)
        self.prompt_arrivals: list[float] = []
        self.running = True
        self._threads = [
            threading.Thread(target=self._receive, daemon=True),
            threading.Thread(target=self._drain, daemon=True),
        ]

    def start(self) -> None:
        self.sock.settimeout(0.1)
        for thread in self._threads:
            thread.start()

    def _receive(self) -> None:
        recv, monotonic, arrivals = self.sock.recv, time.monotonic, self.prompt_arrivals
        while self.running:
            try:
                data = recv(2048)
            except TimeoutError:
                continue
            if len(data) > 12 and data[1] & 0x7F == 0:
                arrivals.append(monotonic())

    def _drain(self) -> None:
        while self.running:
            try:
                self.sink.recv(2048)
            except TimeoutError:
                continue

    def stop(self) -> None:
        self.running = False
        for thread in self._threads:
            thread.join(1)
        self.sock.close()
        self.sink.close()


def press_schedule(mode: str) -> list[tuple[int, bytes]]:
    """(payload type, payload) for each 20 ms slot of one press."""
    if mode == "rfc4733":
        return [(TE_PT, r.serialize()) for r in key_press_events("5", duration=800)]
    tone = np.clip(np.rint(dtmf_tone("5", 0.1, level_dbm0=-10.0)), -32768, 32767).astype(np.int16)
    data = g711.ulaw_encode(tone)
    return [(0, data[i : i + 160]) for i in range(0, len(data), 160)]


def run_config(mode: str, loop_kind: str, load: int, trials: int, seed: int) -> dict[str, Any]:
    caller = Caller()
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(
        target=worker,
        args=(child, caller.sock.getsockname(), caller.sink.getsockname(), mode, loop_kind, load),
        daemon=True,
    )
    proc.start()
    target = parent.recv()
    caller.start()
    rng = random.Random(seed)
    press = press_schedule(mode)
    sendto = caller.sock.sendto
    seq, ts, ssrc = rng.randrange(65536), rng.randrange(1 << 32), 0xB0A7
    header = struct.Struct("!BBHII")
    sends: list[float] = []
    deadline = time.monotonic() + 1.0  # warm-up: audio only
    next_press = deadline + rng.uniform(0.3, 0.5)
    slot = -1  # position within a press in progress
    press_ts = 0
    while len(sends) < trials or slot >= 0:
        now = time.monotonic()
        if deadline > now:
            time.sleep(deadline - now)
        pt, payload, marker = 0, SILENCE, False
        if slot < 0 and len(sends) < trials and deadline >= next_press:
            slot = 0
            press_ts = ts
        if slot >= 0:
            pt, payload = press[slot]
            marker = slot == 0 and pt == TE_PT
        packet = header.pack(0x80, pt | (0x80 if marker else 0), seq, press_ts if pt == TE_PT else ts, ssrc) + payload
        sent_at = time.monotonic()
        sendto(packet, target)
        if slot == 0:
            sends.append(sent_at)
        if slot >= 0:
            slot += 1
            if slot == len(press):
                slot = -1
                next_press = deadline + RESTART_AFTER + rng.uniform(0.1, 0.25)
        seq = (seq + 1) & 0xFFFF
        ts = (ts + 160) & 0xFFFFFFFF
        deadline += CALLER_PERIOD
    time.sleep(0.5)
    parent.send("stop")
    ivr_result = parent.recv()
    proc.join(5)
    caller.stop()

    arrivals = np.array(caller.prompt_arrivals)
    latencies, missed = [], 0
    for sent in sends:
        # Stopped: no prompt packet in the quiet period after the press (the prompt restarts 250 ms after it).
        quiet = ((arrivals > sent + 0.16) & (arrivals < sent + RESTART_AFTER - 0.01)).any()
        before = arrivals[(arrivals > sent - 0.1) & (arrivals < sent + 0.15)]
        if quiet or len(before) == 0:
            missed += 1
            continue
        latencies.append(max(0.0, float(before[-1]) - sent) * 1000)
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {
        "trials": len(sends),
        "missed": missed,
        "p50": float(np.percentile(lat, 50)),
        "p90": float(np.percentile(lat, 90)),
        "p99": float(np.percentile(lat, 99)),
        "max": float(lat.max()),
        **ivr_result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--load", default="0,500", help="other streams playing on the same clock")
    parser.add_argument("--modes", default="rfc4733,inband")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"barge-in latency: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.trials} presses per row")
    print("latency = arrival of the last prompt packet - sending of the press (ms); target p99 <= 25 ms (RFC 4733)")
    header = (
        f"{'mode':8} {'loop':8} {'load':>5} {'presses':>7} {'missed':>6} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} "
        f"{'late ticks':>10}"
    )
    print(header)
    print("-" * len(header))
    for mode in args.modes.split(","):
        for loop_kind in args.loops.split(","):
            for load in (int(n) for n in args.load.split(",")):
                r = run_config(mode, loop_kind, load, args.trials, args.seed)
                print(
                    f"{mode:8} {loop_kind:8} {load:>5} {r['trials']:>7} {r['missed']:>6} {r['p50']:>7.2f} "
                    f"{r['p90']:>7.2f} {r['p99']:>7.2f} {r['max']:>7.2f} {r['late_ticks']:>10}"
                )


if __name__ == "__main__":
    main()
