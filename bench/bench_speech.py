"""Speech accuracy, rejection, CPU and latency on a synthesised phone-line corpus, through the real SpeechListener.

    timeout 1200 python bench/bench_speech.py                       # full corpus, pocketsphinx, linear upsampling
    timeout 1200 python bench/bench_speech.py --upsampler soxr      # the same with soxr's filter
    timeout 600 python bench/bench_speech.py --quick                # 2 voices per family

Every utterance is fed frame by frame (20 ms) into a SpeechListener with its menu's grammar (the digit strings get a
digit grammar of 4..10 digits); the listener's VAD gates and endpoints it, the engine decodes in its worker pool.
Prints, per voice family and condition: keyword accuracy, digit-string accuracy (whole strings), and how
out-of-grammar words, silence and noise were handled (rejected = no-match or no-input; false accept = a keyword).
Then CPU seconds per second of audio (decoder workers' own CPU; and this process's VAD/listener CPU), end-of-speech
to decision latency p50/p95, and throughput with the pool saturated.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivr.speech.config import SpeechSettings
from ivr.speech.corpus import (
    ESPEAK_VOICES,
    FLITE_VOICES,
    MENU_GRAMMARS,
    Utterance,
    build_corpus,
    default_cache_dir,
)
from ivr.speech.grammar import Grammar
from ivr.speech.listener import SpeechListener
from ivr.speech.recognizer import FRAME_SAMPLES, SpeechEngine

DIGITS = Grammar.digit_string(4, 10)
GRAMMARS = {name: Grammar.from_mapping(options) for name, options in MENU_GRAMMARS.items()}


@dataclass
class Outcome:
    utterance: Utterance
    keyword: str | None
    reason: str | None
    confidence: float
    text: str
    latency: float | None
    decode_cpu: float
    audio_seconds: float


def grammar_for(u: Utterance) -> Grammar:
    return DIGITS if u.menu == "digits" else GRAMMARS.get(u.menu, GRAMMARS["main-menu"])


async def recognise(engine: SpeechEngine, settings: SpeechSettings, u: Utterance) -> Outcome:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[str | None, str | None]] = loop.create_future()

    def on_result(keyword: str, text: str, confidence: float, alternatives: object) -> None:
        if not done.done():
            done.set_result((keyword, None))

    def on_no_match(reason: str) -> None:
        if not done.done():
            done.set_result((None, reason))

    listener = SpeechListener(loop, engine, grammar_for(u), settings, on_result=on_result, on_no_match=on_no_match)
    listener.start()
    pcm = u.pcm()
    tail = np.zeros(int(settings.end_silence * 8000) + 8 * FRAME_SAMPLES, dtype=np.int16)  # room to endpoint
    pcm = np.concatenate([pcm, tail])
    usable = pcm.size - pcm.size % FRAME_SAMPLES
    for start in range(0, usable, FRAME_SAMPLES):
        listener.feed(pcm[start:start + FRAME_SAMPLES])
        if done.done():
            break
    if not done.done() and listener.state == "waiting":
        listener.cancel()
        done.set_result((None, "no-input"))
    keyword, reason = await done
    result = listener.last_result
    return Outcome(u, keyword, reason, result.confidence if result else 0.0, result.text if result else "",
                   listener.decision_latency, result.decode_seconds if result else 0.0,
                   result.audio_seconds if result else 0.0)


def pct(a: int, b: int) -> str:
    return f"{a:>4}/{b:<4} {100.0 * a / b:5.1f}%" if b else "   -/-          "


def report(outcomes: Sequence[Outcome]) -> None:
    groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[(o.utterance.family, o.utterance.condition)].append(o)
    print(f"{'family':<10}{'condition':<10}{'keywords right':>18}{'digit strings':>18}{'OOG rejected':>18}")
    for (family, condition), items in sorted(groups.items()):
        kw = [o for o in items if o.utterance.kind == "keyword"]
        dg = [o for o in items if o.utterance.kind == "digits"]
        oog = [o for o in items if o.utterance.kind == "out-of-grammar"]
        row = (pct(sum(o.keyword == o.utterance.expected for o in kw), len(kw)),
               pct(sum(o.keyword == o.utterance.expected for o in dg), len(dg)),
               pct(sum(o.keyword is None for o in oog), len(oog)))
        if family == "generated":
            continue
        print(f"{family:<10}{condition:<10}{row[0]:>18}{row[1]:>18}{row[2]:>18}")
    kw_all = [o for o in outcomes if o.utterance.kind == "keyword"]
    wrong = sum(o.keyword is not None and o.keyword != o.utterance.expected for o in kw_all)
    print(f"\nkeywords routed to the WRONG keyword: {pct(wrong, len(kw_all))} (the rest of the misses are no-match)")
    rej = [o for o in outcomes if o.utterance.kind in ("silence", "noise")]
    oog = [o for o in outcomes if o.utterance.kind == "out-of-grammar"]
    print(f"silence+noise rejected (no-match/no-input): {pct(sum(o.keyword is None for o in rej), len(rej))}")
    for o in rej:
        print(f"    {o.utterance.text:<26} -> {o.keyword or 'no-match'} ({o.reason}, text={o.text!r})")
    fa = sum(o.keyword is not None for o in rej + oog)
    print(f"false-accept rate (silence, noise, out-of-grammar words): {pct(fa, len(rej) + len(oog))}")
    for o in oog:
        if o.keyword is not None:
            print(f"    FA: {o.utterance.voice} {o.utterance.condition} {o.utterance.text!r} -> {o.keyword} "
                  f"(confidence {o.confidence:.2f})")
    lat = sorted(o.latency for o in outcomes if o.latency is not None)
    if lat:
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        print(f"end-of-speech to decision: p50 {1000 * statistics.median(lat):.0f} ms, p95 {1000 * p95:.0f} ms, "
              f"max {1000 * lat[-1]:.0f} ms (n={len(lat)}; plus the end_silence wait that detects the end)")
    cpu = sum(o.decode_cpu for o in outcomes)
    audio = sum(o.audio_seconds for o in outcomes)
    if audio:
        print(f"decoder CPU: {cpu:.2f} s for {audio:.1f} s of gated speech = {cpu / audio:.3f} CPU-s per audio-s")


async def throughput(engine: SpeechEngine, settings: SpeechSettings, items: Sequence[Utterance]) -> None:
    """All utterances at once: how many seconds of audio per wall second the pool decodes when saturated."""
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(recognise(engine, settings, u) for u in items))
    wall = time.perf_counter() - started
    total = sum(u.pcm().size for u in items) / 8000
    print(f"saturated: {total:.1f} s of line audio in {wall:.2f} s wall = {total / wall:.1f}x real time "
          f"({len(outcomes)} utterances, pool {getattr(engine, 'pool_size', '?')})")


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--engine", default="pocketsphinx")
    parser.add_argument("--upsampler", choices=("linear", "soxr"), default="linear")
    parser.add_argument("--threshold", type=float, default=None, help="confidence threshold (default: settings)")
    parser.add_argument("--quick", action="store_true", help="2 voices per family, 1 speed")
    parser.add_argument("--vad", type=int, default=None, help="VAD aggressiveness 0..3")
    parser.add_argument("--cache", type=Path, default=default_cache_dir())
    parser.add_argument("--decoder", action="append", default=[], metavar="KEY=VALUE",
                        help="extra pocketsphinx config, e.g. --decoder cmn=batch (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a SpeechSettings field, e.g. --set pre_roll=0.6 (repeatable)")
    parser.add_argument("--dump", type=Path, help="write one line per utterance (tsv) here")
    args = parser.parse_args(argv)
    voices = ESPEAK_VOICES + FLITE_VOICES
    if args.quick:
        voices = (ESPEAK_VOICES[0], ESPEAK_VOICES[3], FLITE_VOICES[0], FLITE_VOICES[3])
    t0 = time.perf_counter()
    items = build_corpus(args.cache, voices=voices)
    print(f"corpus: {len(items)} utterances ({time.perf_counter() - t0:.1f} s to build/load), "
          f"{len(voices)} voices, clean + noisy 15 dB SNR, µ-law line")
    overrides: dict[str, object] = {"engine": args.engine}
    if args.engine == "pocketsphinx":
        decoder: dict[str, str | float] = {}
        for item in args.decoder:
            key, _, value = item.partition("=")
            try:
                decoder[key] = float(value)
            except ValueError:
                decoder[key] = value
        overrides["options"] = {"upsampler": args.upsampler, "decoder": decoder}
    if args.threshold is not None:
        overrides["confidence_threshold"] = args.threshold
    if args.vad is not None:
        overrides["vad_aggressiveness"] = args.vad
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = value
    settings = SpeechSettings.model_validate(overrides)
    engine = settings.make_engine()
    warm = getattr(engine, "warm_up", None)
    if callable(warm):
        warm()
    try:
        for g in [*GRAMMARS.values(), DIGITS]:
            engine.prepare(g)
        cpu0 = time.process_time()
        outcomes = [await recognise(engine, settings, u) for u in items]
        main_cpu = time.process_time() - cpu0
        print(f"engine={args.engine} upsampler={args.upsampler} threshold={settings.confidence_threshold} "
              f"vad={settings.vad_aggressiveness} decoder={args.decoder} set={args.set}\n")
        report(outcomes)
        line_audio = sum(u.pcm().size for u in items) / 8000
        print(f"listener+VAD CPU in the loop process: {main_cpu / line_audio:.4f} CPU-s per line audio-s")
        await throughput(engine, settings, items)
        if args.dump:
            with args.dump.open("w") as fh:
                for o in outcomes:
                    u = o.utterance
                    fh.write(f"{u.kind}\t{u.voice}\t{u.condition}\t{u.text}\t{u.expected}\t{o.keyword}\t"
                             f"{o.reason}\t{o.confidence:.3f}\t{o.text}\n")
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
