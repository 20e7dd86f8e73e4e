"""The default engine: pocketsphinx 5 with the English model shipped in its wheel, a JSGF grammar per menu, decoding
in a pool of worker processes (the binding holds the GIL, so threads would not scale).

How one utterance goes: the listener's VAD gates the audio, so a session only ever sees speech (plus a little
padding). ``feed`` appends frames to a list (no decoding, no IPC); ``finish`` sends the whole utterance to a worker in
one message, where it is upsampled to 16 kHz, decoded against the grammar (each worker keeps one decoder with a search
per grammar it has seen, keyed by the JSGF text), and scored.

The answer comes from pocketsphinx's forward (Viterbi) search over the grammar, not from the lattice "bestpath"
pass: on this phone-line audio the lattice pass lost the only complete path for about one espeak-ng keyword in six
(empty hypothesis) and mis-scored others; the forward search alone was right far more often and costs half the CPU
(bench/bench_speech.py, docs/speech.md). A hypothesis that is not a whole phrase of the grammar (the search did not
reach a final state) is rejected as out-of-grammar.

Confidence and rejection: the same audio is decoded a second time by a free phone loop (the model's own phonetic
language model, ``allphone`` search): the best reading of the sound with no grammar at all. The confidence measure is
the per-frame log-likelihood margin of the grammar's path over the phone loop's path
(``1000 * (ln P(grammar path) - ln P(phone path)) / frames``): words that are really there score about as well as
free phones (margin near or above zero); an out-of-grammar word, or noise, forced onto the nearest keyword scores far
below. ``confidence = clip((margin - floor) / (ceiling - floor), 0, 1)``, with ``floor``/``ceiling`` measured on the
phone-line corpus; the listener rejects results below the configured confidence threshold.

Options (``speech.options`` in the daemon config):
    pool_size: worker processes (default: number of cores)
    upsampler: "linear" (default, measured better on phone audio) or "soxr"
    hmm, dictionary: another acoustic model directory / pronunciation dictionary (default: the bundled en-us)
    pronunciations: {word: "PH ON EM ES"} added to the dictionary (words the bundled one lacks)
    score_floor, score_ceiling: the per-frame margin over the phone loop mapped to confidence 0 and 1
        (default -0.6, 0.4)
    partial_interval_ms: decode the utterance so far every N ms for partial results (default 0: off)
    languages: the languages the model speaks (default ["en"])
    decoder: extra pocketsphinx Config keys, e.g. {beam: 1e-60, silprob: 0.1} (``bestpath: true`` brings the
        lattice pass back)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ivr.aio import wrap_outside
from ivr.speech.grammar import Grammar, GrammarError
from ivr.speech.recognizer import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    Alternative,
    EngineConfigError,
    NoMatchReason,
    PartialCallback,
    Pcm,
    RecognitionResult,
    RecognitionSession,
    SpeechEngine,
)
from ivr.speech.resample import Upsampler, upsample_2x

__all__ = ["PocketsphinxEngine", "PocketsphinxOptions", "decode_utterance"]


class PocketsphinxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pool_size: int | None = Field(default=None, ge=1, le=256)
    upsampler: Upsampler = "linear"
    hmm: str | None = None
    dictionary: str | None = None
    pronunciations: dict[str, str] = Field(default_factory=dict)
    score_floor: float = -0.6
    score_ceiling: float = 0.4
    partial_interval_ms: int = Field(default=0, ge=0)
    languages: tuple[str, ...] = ("en",)
    decoder: dict[str, str | int | float | bool] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Decoded:
    """What a worker sends back (plain data: it crosses a process boundary)."""

    text: str
    score_per_frame: float
    posterior: float
    nbest: tuple[tuple[str, float], ...]
    frames: int
    cpu_seconds: float
    error: str | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Worker side: one decoder per process, one search per grammar.

_decoder: Any = None
_initial_cmn: str = ""
_searches: dict[str, str] = {}
_worker_opts: PocketsphinxOptions | None = None


def _worker_init(options_json: str) -> None:
    global _decoder, _worker_opts, _initial_cmn, _has_phone_loop
    from pocketsphinx import Decoder  # type: ignore[import-untyped]

    opts = PocketsphinxOptions.model_validate_json(options_json)
    kwargs: dict[str, Any] = {"samprate": 16000, "lm": None, "loglevel": "FATAL", "bestpath": False}
    if opts.hmm:
        kwargs["hmm"] = opts.hmm
    if opts.dictionary:
        kwargs["dict"] = opts.dictionary
    kwargs.update(opts.decoder)
    _decoder = Decoder(**kwargs)
    words = list(opts.pronunciations.items())
    for i, (word, phones) in enumerate(words):
        _decoder.add_word(word, phones, i == len(words) - 1)
    _worker_opts = opts
    _initial_cmn = _decoder.get_cmn(False)
    _searches.clear()
    phone_lm = _phone_lm(opts.hmm)
    _has_phone_loop = phone_lm is not None
    if phone_lm is not None:
        _decoder.add_allphone_file(_PHONE_LOOP, phone_lm)


_PHONE_LOOP = "phone-loop"
_has_phone_loop = False


def _phone_lm(hmm: str | None) -> str | None:
    """The phonetic language model for the phone loop: ``en-us-phone.lm.bin`` beside the bundled model, or a
    ``*phone.lm*`` file in or next to a configured ``hmm`` directory. ``None`` if there is none (then confidence is the
    grammar path's own per-frame score, a weaker measure: set score_floor/score_ceiling for it)."""
    import glob

    import pocketsphinx

    base = hmm or os.path.join(pocketsphinx.get_model_path(), "en-us", "en-us")
    for pattern in ("*phone.lm.bin", "*phone.lm", "*phone.lm.dmp"):
        for folder in (base, os.path.dirname(os.path.normpath(base))):
            found = sorted(glob.glob(os.path.join(folder, pattern)))
            if found:
                return found[0]
    return None


def _search_for(jsgf: str, words: Sequence[str]) -> str:
    name = _searches.get(jsgf)
    if name is None:
        missing = [w for w in words if _decoder.lookup_word(w) is None]
        if missing:
            raise GrammarError(f"not in the pronunciation dictionary: {', '.join(missing)} "
                               "(add them under speech.options.pronunciations)")
        name = f"g{len(_searches)}"
        _decoder.add_jsgf_string(name, jsgf)
        _searches[jsgf] = name
    return name


def decode_utterance(jsgf: str, words: Sequence[str], pcm8k: bytes) -> _Decoded:
    """Decode one utterance (8 kHz int16 bytes) against a JSGF grammar in this worker process."""
    assert _decoder is not None and _worker_opts is not None, "worker not initialised"
    started = time.process_time()
    try:
        search = _search_for(jsgf, words)
    except (GrammarError, RuntimeError) as exc:
        return _Decoded("", -math.inf, 0.0, (), 0, 0.0, str(exc))
    audio = upsample_2x(np.frombuffer(pcm8k, dtype=np.int16), _worker_opts.upsampler).tobytes()
    dec = _decoder
    grammar_score, text = _decode(search, audio)
    frames = int(dec.n_frames())
    nbest_raw = list(dec.nbest() or ())  # empty unless the lattice pass (bestpath) is on
    if not text or not frames:
        per_frame = -math.inf
    elif _has_phone_loop:
        phone_score, _ = _decode(_PHONE_LOOP, audio)
        per_frame = 1000.0 * (grammar_score - phone_score) / frames
    else:
        per_frame = 1000.0 * grammar_score / frames
    nbest: list[tuple[str, float]] = []
    seen: set[str] = set()
    for i, alt in enumerate(nbest_raw):
        if i >= 30 or len(nbest) >= 4:
            break
        if alt is not None and alt.hypstr and alt.hypstr not in seen:
            seen.add(alt.hypstr)
            nbest.append((alt.hypstr, float(alt.score)))
    return _Decoded(text, per_frame, 0.0, tuple(nbest), frames, time.process_time() - started)


def _decode(search: str, audio: bytes) -> tuple[float, str]:
    """One decode of ``audio`` (16 kHz int16 bytes) with ``search``, from a fresh state: (ln path score, text)."""
    dec = _decoder
    dec.activate_search(search)
    # Live CMN carries the cepstral mean over from the previous utterance, which here was another caller's line:
    # start every utterance from the model's initial mean, so a result never depends on who called before.
    dec.set_cmn(_initial_cmn)
    dec.reinit_feat()  # likewise the noise-removal and AGC state of the feature extractor
    dec.start_utt()
    dec.process_raw(audio, full_utt=True)
    dec.end_utt()
    hyp = dec.hyp()
    if hyp is None:
        return -math.inf, ""
    # The binding gives exp(path score); a path so bad that it underflows is scored as hopeless.
    return (math.log(hyp.score) if hyp.score > 0.0 else -745.0), hyp.hypstr


def _ping() -> int:
    return os.getpid()


# ---------------------------------------------------------------------------------------------------------------------
# Event-loop side.


class PocketsphinxEngine(SpeechEngine):
    """See the module docstring. ``close()`` shuts the worker pool down."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        try:
            self.options = PocketsphinxOptions.model_validate(dict(options or {}))
        except ValidationError as exc:
            raise EngineConfigError(f"pocketsphinx options: {exc}") from exc
        try:
            import pocketsphinx
        except ImportError as exc:
            raise EngineConfigError("pocketsphinx is not installed (pip install pocketsphinx==5.1.1)") from exc
        model = pocketsphinx.get_model_path()
        for label, path in (("hmm", self.options.hmm), ("dictionary", self.options.dictionary)):
            if path is not None and not os.path.exists(path):
                raise EngineConfigError(f"pocketsphinx {label}: {path} does not exist")
        if self.options.hmm is None and not os.path.isdir(os.path.join(model, "en-us", "en-us")):
            raise EngineConfigError(f"pocketsphinx: bundled model missing under {model}")
        if self.options.score_floor >= self.options.score_ceiling:
            raise EngineConfigError("pocketsphinx: score_floor must be below score_ceiling")
        self.languages = tuple(self.options.languages)
        self.pool_size = self.options.pool_size or (os.cpu_count() or 1)
        # spawn: never fork a process that runs an event loop and threads.
        self._pool = ProcessPoolExecutor(
            max_workers=self.pool_size,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(self.options.model_dump_json(),),
        )
        self._closed = False

    def warm_up(self) -> None:
        """Start every worker now (each loads the model once) instead of on the first caller. Blocks."""
        futures = [self._pool.submit(_ping) for _ in range(self.pool_size * 2)]
        for fut in futures:
            fut.result(timeout=60)

    def confidence(self, score_per_frame: float) -> float:
        lo, hi = self.options.score_floor, self.options.score_ceiling
        if not math.isfinite(score_per_frame):
            return 0.0
        return float(min(1.0, max(0.0, (score_per_frame - lo) / (hi - lo))))

    def submit(self, grammar: Grammar, pcm8k: bytes) -> Future[_Decoded]:
        if self._closed:
            raise RuntimeError("pocketsphinx engine is closed")
        return self._pool.submit(decode_utterance, _jsgf(grammar), grammar.words(), pcm8k)

    def to_result(self, grammar: Grammar, decoded: _Decoded, audio_seconds: float, final: bool) -> RecognitionResult:
        if decoded.error is not None:
            return RecognitionResult(None, "", 0.0, (), final, "error", audio_seconds, decoded.cpu_seconds)
        confidence = self.confidence(decoded.score_per_frame)
        keyword = grammar.keyword_for(decoded.text)
        best_score = next((s for t, s in decoded.nbest if t == decoded.text), None)
        alternatives: list[Alternative] = []
        for text, score in decoded.nbest:
            if text == decoded.text:
                continue
            ratio = score / best_score if best_score else 0.0
            alternatives.append(Alternative(grammar.keyword_for(text), text, round(confidence * min(1.0, ratio), 3)))
        if keyword is None:
            reason: NoMatchReason = "no-speech" if not decoded.text else "out-of-grammar"
            return RecognitionResult(None, decoded.text, confidence, tuple(alternatives), final, reason,
                                     audio_seconds, decoded.cpu_seconds)
        return RecognitionResult(keyword, decoded.text, confidence, tuple(alternatives), final, None,
                                 audio_seconds, decoded.cpu_seconds)

    def start(self, grammar: Grammar, on_partial: PartialCallback | None = None) -> RecognitionSession:
        if not self.supports(grammar.language):
            raise GrammarError(f"pocketsphinx model speaks {list(self.languages)}, not {grammar.language!r}")
        return _PocketsphinxSession(self, grammar, asyncio.get_running_loop(), on_partial)

    def prepare(self, grammar: Grammar) -> None:
        """Check the grammar compiles (and its words are in the dictionary) by decoding 100 ms of silence. Blocks."""
        decoded = self.submit(grammar, bytes(SAMPLE_RATE // 10 * 2)).result(timeout=60)
        if decoded.error is not None:
            raise GrammarError(decoded.error)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True, cancel_futures=True)


def _jsgf(grammar: Grammar) -> str:
    return grammar.to_jsgf("menu")


class _PocketsphinxSession(RecognitionSession):
    def __init__(self, engine: PocketsphinxEngine, grammar: Grammar, loop: asyncio.AbstractEventLoop,
                 on_partial: PartialCallback | None) -> None:
        self._engine = engine
        self._grammar = grammar
        self._loop = loop
        self._on_partial = on_partial
        self._frames: list[Pcm] = []
        self._cancelled = False
        self._finished = False
        self._pending: Future[_Decoded] | None = None
        interval = engine.options.partial_interval_ms
        self._partial_every = max(1, interval // 20) if interval and on_partial is not None else 0
        self._partial_inflight = False

    def feed(self, frames: Sequence[Pcm]) -> None:
        if self._cancelled or self._finished:
            return
        before = len(self._frames)
        self._frames.extend(frames)
        every = self._partial_every
        if every and not self._partial_inflight and len(self._frames) // every > before // every:
            self._request_partial()

    def _request_partial(self) -> None:
        audio = np.concatenate(self._frames).tobytes()
        seconds = len(self._frames) * FRAME_SAMPLES / SAMPLE_RATE
        fut = self._engine.submit(self._grammar, audio)
        self._partial_inflight = True

        def done(f: Future[_Decoded]) -> None:
            self._loop.call_soon_threadsafe(self._deliver_partial, f, seconds)

        fut.add_done_callback(done)

    def _deliver_partial(self, fut: Future[_Decoded], seconds: float) -> None:
        self._partial_inflight = False
        if self._cancelled or self._finished or fut.cancelled() or fut.exception() is not None:
            return
        if self._on_partial is not None:
            self._on_partial(self._engine.to_result(self._grammar, fut.result(), seconds, final=False))

    async def finish(self) -> RecognitionResult:
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        seconds = len(self._frames) * FRAME_SAMPLES / SAMPLE_RATE
        if self._cancelled:
            return RecognitionResult.no_match("cancelled")
        if not self._frames:
            return RecognitionResult.no_match("no-speech")
        audio = np.concatenate(self._frames).tobytes()
        self._frames = []
        fut = self._engine.submit(self._grammar, audio)
        self._pending = fut
        try:
            decoded = await wrap_outside(fut)
        except asyncio.CancelledError:
            if self._cancelled:
                return RecognitionResult.no_match("cancelled", audio_seconds=seconds)
            raise
        finally:
            self._pending = None
        if self._cancelled:
            return RecognitionResult.no_match("cancelled", audio_seconds=seconds)
        return self._engine.to_result(self._grammar, decoded, seconds, final=True)

    def cancel(self) -> None:
        self._cancelled = True
        self._frames = []
        if self._pending is not None:
            with contextlib.suppress(Exception):
                self._pending.cancel()
