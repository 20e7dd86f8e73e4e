"""How fast the simulator runs calls on virtual time.

1. A two-minute call with audio the whole way: the daemon loops its welcome prompt to a simulated caller, who
   presses a key every 10 s (RFC 4733) and hangs up after 120 s; every frame received is identified at the end.
   Target (issue 7): <= 0.5 s of real time.
2. The scenario suites shipped with the repository (`ivr test` on configs/flows and the simulator's own tests).

    python bench/bench_simulator.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from ivr.config import load_config
from ivr.daemon.server import IvrServer
from ivr.logs import configure_logging
from ivr.simulator.caller import SimCaller
from ivr.simulator.fingerprint import identify_prompts
from ivr.simulator.runner import run_suite
from ivr.simulator.virtual import VirtualTimeLoop, run_virtual

REPO = Path(__file__).resolve().parent.parent


def two_minute_call() -> tuple[float, float, int, int]:
    """(real seconds for the call, virtual seconds, frames heard, prompts identified)."""

    async def main() -> tuple[float, float, int, int]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        with tempfile.TemporaryDirectory() as tmp:
            config = load_config(
                REPO / "configs" / "ivr.yaml",
                {
                    "sip.listen": "127.0.0.1:5060",
                    "admin.listen": None,
                    "cdr.url": f"sqlite:///{tmp}/cdr.db",
                    "routes": [],
                    "calls.hangup_after_prompt": False,
                },
            )
            server = IvrServer(config, socket_factory=loop.network.socket_factory)
            await server.start()
            try:
                async with SimCaller(socket_factory=loop.network.socket_factory) as caller:
                    started = time.perf_counter()
                    t0 = loop.time()
                    await caller.dial("sip:2000@127.0.0.1:5060")
                    for _ in range(12):
                        await asyncio.sleep(9.5)
                        await caller.press("5")
                    await asyncio.sleep(120 - (loop.time() - t0))
                    await caller.hangup()
                    heard = identify_prompts(caller.heard_frames, {"welcome": server.welcome})
                    real = time.perf_counter() - started
                    return real, loop.time() - t0, len(caller.heard_frames), len(heard)
            finally:
                await server.close()

    result: tuple[float, float, int, int] = run_virtual(main)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    configure_logging("console", "warning")
    runs = [two_minute_call() for _ in range(args.repeat)]
    reals = [r[0] for r in runs]
    _, virtual, frames, prompts = runs[-1]
    print(
        f"2-minute call on virtual time: {virtual:.1f} s of call, {frames} frames heard, {prompts} prompts identified"
    )
    print(
        f"  real time: median {statistics.median(reals):.3f} s, min {min(reals):.3f} s, max {max(reals):.3f} s "
        f"over {len(reals)} runs ({virtual / statistics.median(reals):.0f}x real time); target <= 0.5 s"
    )
    for suite in (REPO / "configs" / "flows", REPO / "tests" / "integration" / "scenarios"):
        started = time.perf_counter()
        result = run_suite([suite])
        elapsed = time.perf_counter() - started
        call_seconds = sum(c.call_seconds for c in result.cases)
        passed = sum(1 for c in result.cases if c.passed)
        print(
            f"suite {suite.relative_to(REPO)}: {passed}/{len(result.cases)} cases passed, "
            f"{call_seconds:.0f} s of calls in {elapsed:.2f} s (flow loading included), "
            f"coverage {result.coverage.percent():.1f}%"
        )


if __name__ == "__main__":
    main()
