"""A longer fuzzing campaign against the whole daemon on virtual time (the harness of tests/fuzz).

    python bench/fuzz_daemon.py --mutations 200000 --seed 7 [--flows] [--memory] [--out fuzz-findings]

Prints messages per second, the responses by status, the mutations applied, the warnings the daemon logged, and
each invariant violation; each violation's messages are minimised (replayed on a fresh daemon) and saved to a file
in ``--out``, replayable with ``tests.fuzz.fuzz_harness.replay``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fuzz.fuzz_harness import Options, minimise, run_campaign, save_reproducer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutations", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flows", action="store_true", help="the example flows (configs/flows), not the welcome app")
    parser.add_argument("--memory", action="store_true", help="trace memory (about 2x slower)")
    parser.add_argument("--episode", type=int, default=500, help="messages between two quiet periods and end checks")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"))
    parser.add_argument("--minimise-budget", type=int, default=150, help="replays per violation")
    args = parser.parse_args()
    options = Options(flows=args.flows, memory=args.memory, episode=args.episode)
    started = time.perf_counter()
    result = run_campaign(args.seed, args.mutations, options)
    wall = time.perf_counter() - started
    print(f"seed {args.seed}, {'flows' if args.flows else 'welcome'}: {result.mutations} mutations, "
          f"{result.messages} messages ({result.rtp_packets} RTP), {result.episodes} episodes, "
          f"{result.virtual_seconds:.0f} virtual s in {wall:.1f} s wall")  # fmt: skip
    print(f"  {result.mutations / wall:.0f} mutations/s, {result.messages / wall:.0f} messages/s")
    print(f"  INVITEs checked for a final response: {result.invites_checked} (retransmissions exempt: "
          f"{result.retransmissions})")  # fmt: skip
    print("  responses by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(result.responses.items())))
    print("  mutations: " + ", ".join(f"{k}: {n}" for k, n in result.mutation_kinds.most_common()))
    if result.memory_peak:
        print(f"  tracemalloc peak: {result.memory_peak / 1e6:.1f} MB")
    for event, count in result.warnings.most_common(12):
        print(f"  warning x{count}: {event} {result.warning_examples.get(event, '')[:160]}")
    print(f"violations: {len(result.violations)}")
    seen: set[str] = set()
    for n, violation in enumerate(result.violations):
        print(f"  {violation}")
        if violation.kind in seen:
            continue  # one reproducer per kind: the first is the one minimised
        seen.add(violation.kind)
        messages = minimise(violation, options, budget=args.minimise_budget)
        path = save_reproducer(violation, messages, args.out, f"seed{args.seed}-{n}-{violation.kind}")
        print(f"    minimised to {len(messages)} message(s): {path}")
    return 1 if result.violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
