"""Capacity benchmark: how many concurrent calls one ivr process carries on one core, with clean audio.

For each N in --calls: start the daemon pinned to one core (``taskset -c 0``, ``--hold-calls``, so it
loops its prompt), have SIPp (pinned to the other core) place N calls that each stream caller audio
(``rtp_stream``, looping) and hold --hold seconds, and once all N are up:

- capture the daemon's outgoing RTP for --measure seconds with tshark and compute, per stream, loss and
  maximum inter-packet delta (``-z rtp,streams``);
- sample the daemon's CPU time (/proc/PID/stat utime+stime) over the same window;
- read its resident memory (/proc/PID/status VmRSS) against the idle baseline.

Prints one row per N: calls answered, % streams with any loss, p99 of per-stream max delta, daemon CPU %
(100 = one core), RSS per call. ``--against-sipp-uas`` puts SIPp's built-in UAS in the daemon's place to
prove the plumbing (it sends no RTP, so the stream columns stay empty).

    python bench/capacity.py                              # N = 100 250 500 1000 2000, hold 60 s
    python bench/capacity.py --calls 100,500 --hold 30
    python bench/capacity.py --calls 50 --hold 15 --against-sipp-uas

Only 127.0.0.1 is used. Every run is bounded in time; every peer is stopped on the way out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "interop"))

from peers import (  # the harness lives with the interop tests
    LOCALHOST,
    IvrDaemon,
    PeerError,
    Sipp,
    StreamStats,
    TsharkCapture,
    WorkDir,
    free_port_block,
    have,
    late_packets,
    percentile,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_CALLS = (100, 250, 500, 1000, 2000)


@dataclass
class Row:
    calls: int
    answered: int
    failed: int
    streams: int
    loss_pct: float  # % of the daemon's streams with any lost packet
    p99_max_delta_ms: float
    worst_max_delta_ms: float
    late_pct: float  # % of the daemon's packets sent > 30 ms after the one before in their stream
    cpu_pct: float  # 100 = one core
    rss_per_call_kib: float
    rss_idle_mib: float
    capture_dropped: int
    sipp_exit: int
    callee_exit: int | None
    note: str = ""


# --------------------------------------------------------------------------------------------------
# /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), seconds. Fields 14 and 15 of /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 is fields[0]
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise PeerError(f"no VmRSS for pid {pid}")


# --------------------------------------------------------------------------------------------------
# caller audio


def make_caller_audio(directory: Path) -> Path:
    """Raw 8 kHz mu-law (what SIPp's rtp_stream sends as PT 0): synthesised speech, or a tone without espeak."""
    out = directory / "caller_audio.ulaw"
    if have("espeak-ng") and have("sox"):
        wav = directory / "caller_speech.wav"
        subprocess.run(
            [
                "timeout",
                "60",
                "espeak-ng",
                "-w",
                str(wav),
                "I would like to check the balance of my account please. My number is four five six seven.",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["timeout", "60", "sox", str(wav), "-r", "8000", "-c", "1", "-t", "ul", str(out)],
            check=True,
            capture_output=True,
        )
    elif have("sox"):
        subprocess.run(
            [
                "timeout",
                "60",
                "sox",
                "-n",
                "-r",
                "8000",
                "-c",
                "1",
                "-t",
                "ul",
                str(out),
                "synth",
                "4",
                "sine",
                "300-900",
                "tremolo",
                "4",
                "80",
            ],
            check=True,
            capture_output=True,
        )
    else:
        raise PeerError("need sox (and espeak-ng for speech) to make the caller audio")
    return out


# --------------------------------------------------------------------------------------------------
# one load level


def wait_for_calls(sipp: Sipp, n: int, timeout: float) -> int:
    """Wait until SIPp has ``n`` calls up (or the time is out); returns the calls up at the end."""
    deadline = time.monotonic() + timeout
    current = 0
    while time.monotonic() < deadline and sipp.alive():
        stats = sipp.current_stats()
        if stats is not None:
            current = stats.current
            if current >= n:
                break
        time.sleep(0.5)
    return current


def run_level(args: argparse.Namespace, n: int, audio: Path) -> Row:
    ramp_s = n / args.rate
    hold_s = max(args.hold, ramp_s + args.measure + 10)
    note = "" if hold_s == args.hold else f"hold raised to {hold_s:.0f}s to cover ramp + measure"
    sipp_lifetime = ramp_s + hold_s + 120
    media_port, _ = free_port_block(4)  # rtp_stream: every call streams from (and offers) this one port

    if args.against_sipp_uas:
        uas = Sipp("uas", calls=n, cpus=args.daemon_cpu, timeout=sipp_lifetime + 30)
        uas.start()
        time.sleep(0.5)
        callee: IvrDaemon | Sipp = uas
        target = f"{LOCALHOST}:{uas.local_port}"
        rtp_range: tuple[int, int] | None = None
    else:
        callee = IvrDaemon(
            hold_calls=True,
            cpus=args.daemon_cpu,
            rtp_port_count=2 * n + 64,
            overrides={"calls": {"max_calls": max(n + 10, 2000)}, "log": {"level": args.log_level}},
            config=Path(args.config) if args.config else None,
            lifetime=sipp_lifetime + 120,
            stop_timeout=60,
        )
        callee.start()
        target = callee.sip_target
        rtp_range = (callee.rtp_lo, callee.rtp_hi)

    caller: Sipp | None = None
    capture: TsharkCapture | None = None
    try:
        pid = callee.pid
        if pid is None:
            raise PeerError("callee pid not found")
        time.sleep(1.0)
        rss_idle = rss_kib(pid)

        caller = Sipp(
            "uac_rtp_hold.xml",
            target,
            calls=n,
            rate=args.rate,
            limit=n,
            duration_ms=int(hold_s * 1000),
            media_port=media_port,
            files={"caller_audio.ulaw": audio},
            cpus=args.sipp_cpu,
            timeout=sipp_lifetime,
            extra_args=["-rtp_threadtasks", str(args.rtp_threadtasks)],
        )
        caller.start()
        up = wait_for_calls(caller, n, ramp_s + 30)
        if up < n:
            note = (note + "; " if note else "") + f"only {up}/{n} calls up when measuring"
        time.sleep(args.settle)

        rss_load = rss_kib(pid)
        if rtp_range is not None:
            capture = TsharkCapture(
                rtp_range[0],
                rtp_range[1],
                direction="from",
                peer_ports=(media_port, media_port),
                snaplen=96,
                cpus=args.sipp_cpu,
                buffer_mib=256,
                duration_s=args.measure,
                lifetime=args.measure + 300,
            )
            capture.start()
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.measure)
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        streams: list[StreamStats] = []
        late = (0, 0)
        dropped = 0
        if capture is not None:
            summary = capture.wait(30)
            dropped = summary.dropped
            lo, hi = rtp_range  # type: ignore[misc]
            streams = [s for s in capture.streams() if lo <= s.src_port <= hi]
            late = late_packets(capture.pcap, lo, hi, 30.0)

        result = caller.wait(sipp_lifetime)
        callee_exit = callee.wait(30).returncode if isinstance(callee, Sipp) else callee.terminate()
        stats = result.stats
        if stats is not None and (stats.failed or stats.retransmissions):
            why = (
                f"sipp: {stats.failed} failed (unexpected msg {stats.unexpected}, recv timeout {stats.timeouts}, "
                f"max retrans {stats.max_udp_retrans}), {stats.retransmissions} retransmissions"
            )
            note = f"{note}; {why}" if note else why
            first_errors = [ln for ln in result.errors.splitlines() if ln.strip()][1:4]
            print(f"N={n}: {why}\n  " + "\n  ".join(first_errors), file=sys.stderr)
        deltas = [s.max_delta_ms for s in streams]
        return Row(
            calls=n,
            answered=stats.successful if stats else 0,
            failed=stats.failed if stats else 0,
            streams=len(streams),
            loss_pct=100.0 * sum(1 for s in streams if s.lost > 0) / len(streams) if streams else math.nan,
            p99_max_delta_ms=percentile(deltas, 99) if deltas else math.nan,
            worst_max_delta_ms=max(deltas) if deltas else math.nan,
            late_pct=100.0 * late[0] / late[1] if late[1] else math.nan,
            cpu_pct=100.0 * (cpu1 - cpu0) / (t1 - t0),
            rss_per_call_kib=(rss_load - rss_idle) / n,
            rss_idle_mib=rss_idle / 1024,
            capture_dropped=dropped,
            sipp_exit=result.returncode,
            callee_exit=callee_exit,
            note=note,
        )
    finally:
        if capture is not None:
            capture.__exit__(None, None, None)
            capture.cleanup()
        if caller is not None:
            caller.__exit__(None, None, None)
        callee.__exit__(None, None, None)


# --------------------------------------------------------------------------------------------------
# output


def fmt(value: float, spec: str) -> str:
    return "-" if isinstance(value, float) and math.isnan(value) else format(value, spec)


def print_table(rows: Sequence[Row], callee: str) -> None:
    print()
    print(f"callee: {callee}; CPU % is of one core; loss and delta are over the daemon's own RTP streams;")
    print("late % = share of the daemon's packets sent more than 30 ms after the previous one of their stream")
    head = (
        f"{'calls':>6} {'answered':>8} {'failed':>6} {'streams':>7} {'loss %':>7} {'p99 maxΔ ms':>11} "
        f"{'worst ms':>8} {'late %':>7} {'CPU %':>6} {'RSS/call KiB':>12} {'idle MiB':>8} {'cap drop':>8}  note"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.calls:>6} {r.answered:>8} {r.failed:>6} {r.streams:>7} {fmt(r.loss_pct, '.1f'):>7} "
            f"{fmt(r.p99_max_delta_ms, '.1f'):>11} {fmt(r.worst_max_delta_ms, '.1f'):>8} {fmt(r.late_pct, '.3f'):>7} "
            f"{r.cpu_pct:>6.1f} "
            f"{r.rss_per_call_kib:>12.1f} {r.rss_idle_mib:>8.1f} {r.capture_dropped:>8}  {r.note}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", default=",".join(map(str, DEFAULT_CALLS)), help="comma-separated N values")
    ap.add_argument("--hold", type=float, default=60.0, help="seconds each call is held (default 60)")
    ap.add_argument("--rate", type=float, default=100.0, help="new calls per second while ramping up")
    ap.add_argument("--measure", type=float, default=10.0, help="seconds of capture and CPU sampling at full load")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait after the last call is up")
    ap.add_argument("--daemon-cpu", default="0", help="taskset CPU list for the daemon (default 0)")
    ap.add_argument("--sipp-cpu", default="1", help="taskset CPU list for SIPp (default 1)")
    ap.add_argument("--rtp-threadtasks", type=int, default=50, help="SIPp rtp_stream calls per thread")
    ap.add_argument("--config", help="daemon config (default: the repo's configs/ivr.yaml)")
    ap.add_argument("--log-level", default="warning", help="daemon log level during the run (default warning)")
    ap.add_argument("--against-sipp-uas", action="store_true", help="SIPp's built-in UAS instead of the daemon")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)

    for binary, package in (("sipp", "sip-tester"), ("tshark", "tshark"), ("taskset", "util-linux"), ("sox", "sox")):
        if not have(binary):
            print(f"missing {binary}: apt-get install -y {package}", file=sys.stderr)
            return 2
    if os.cpu_count() == 1:
        print("warning: one CPU only; daemon and SIPp share it", file=sys.stderr)
        args.daemon_cpu = args.sipp_cpu = "0"
    # thousands of calls: RTP sockets, SIPp sockets. Children inherit the raised soft limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    levels = [int(x) for x in args.calls.split(",") if x.strip()]
    work = WorkDir("ivr-capacity-")
    rows: list[Row] = []
    try:
        audio = make_caller_audio(work.path)
        for n in levels:
            started = time.monotonic()
            print(f"N={n}: ramp {n / args.rate:.0f}s, hold {args.hold:.0f}s ...", file=sys.stderr, flush=True)
            try:
                row = run_level(args, n, audio)
            except PeerError as exc:
                print(f"N={n}: failed: {exc}", file=sys.stderr)
                nan = math.nan
                row = Row(
                    calls=n,
                    answered=0,
                    failed=0,
                    streams=0,
                    loss_pct=nan,
                    p99_max_delta_ms=nan,
                    worst_max_delta_ms=nan,
                    late_pct=nan,
                    cpu_pct=nan,
                    rss_per_call_kib=nan,
                    rss_idle_mib=nan,
                    capture_dropped=0,
                    sipp_exit=-1,
                    callee_exit=None,
                    note=f"run failed: {str(exc).splitlines()[0]}",
                )
            rows.append(row)
            print(f"N={n}: done in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    finally:
        work.cleanup()
    callee = "sipp -sn uas (plumbing check)" if args.against_sipp_uas else "python -m ivr serve --hold-calls"
    print_table(rows, callee)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2, default=str))
    ok = all(r.sipp_exit == 0 and r.callee_exit in (0, None) for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
