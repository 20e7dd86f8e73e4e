"""The Vosk (Kaldi) engine: a model directory the user supplies, one shared ``vosk.Model``, one ``KaldiRecognizer`` per
utterance with the menu's grammar, decoding on threads (the binding releases the GIL while Kaldi works).

The model is only ever loaded with ``vosk.Model(path)`` from the configured directory, never ``Model(lang=...)``
(that downloads). The directory's layout is checked first and a missing file is named in the error.

Options:
    model: PATH               the model directory (required), e.g. /srv/models/vosk-model-small-en-us-0.15
    languages: [en]           the languages the model speaks (default: the directory name's "vosk-model-*-LANG"
                              part if present, else any)
    threads: 4                decoding threads shared by all calls
    alternatives: 3           candidates asked of Kaldi; their scores become the posterior-style confidences
    check_words: true         refuse a grammar with words the model does not know (Vosk would drop them silently)
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ivr.aio import wrap_outside
from ivr.speech.grammar import DIGIT_WORDS_EN, Grammar, GrammarError
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

__all__ = ["VoskEngine", "VoskOptions", "check_model_dir"]

UNKNOWN = "[unk]"


class VoskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Path
    languages: tuple[str, ...] | None = None
    threads: int = Field(default=4, ge=1, le=256)
    alternatives: int = Field(default=3, ge=1, le=20)
    check_words: bool = True


_IVECTOR_FILES = ("final.dubm", "final.ie", "final.mat", "global_cmvn.stats", "online_cmvn.conf", "splice.conf")


def check_model_dir(path: Path) -> list[str]:
    """What a Vosk model directory lacks, as messages (empty if it looks usable). Layout (as in Vosk's model.cc):
    am/final.mdl; conf/mfcc.conf; a graph: graph/HCLG.fst with graph/words.txt (static, ignores grammars), or
    graph/HCLr.fst + graph/Gr.fst (lookahead, takes grammars); graph/phones/word_boundary.int; ivector/ complete
    if present."""
    problems: list[str] = []
    if not path.is_dir():
        return [f"{path} is not a directory"]
    for rel in ("am/final.mdl", "conf/mfcc.conf"):
        if not (path / rel).is_file():
            problems.append(f"missing {rel}")
    graph = path / "graph"
    static = (graph / "HCLG.fst").is_file()
    lookahead = (graph / "HCLr.fst").is_file() and (graph / "Gr.fst").is_file()
    if not static and not lookahead:
        problems.append("missing graph/HCLG.fst (or graph/HCLr.fst + graph/Gr.fst)")
    if static and not lookahead and not (graph / "words.txt").is_file():
        problems.append("missing graph/words.txt (needed with graph/HCLG.fst)")
    if not (graph / "phones" / "word_boundary.int").is_file():
        problems.append("missing graph/phones/word_boundary.int")
    ivector = path / "ivector"
    if ivector.is_dir():
        problems.extend(f"missing ivector/{name}" for name in _IVECTOR_FILES if not (ivector / name).is_file())
    return problems


def _supports_grammar(path: Path) -> bool:
    return (path / "graph" / "HCLr.fst").is_file() and (path / "graph" / "Gr.fst").is_file()


class VoskEngine(SpeechEngine):
    """See the module docstring. Loading a model takes seconds and hundreds of MB: make one engine per daemon."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        try:
            self.options = VoskOptions.model_validate(dict(options or {}))
        except ValidationError as exc:
            raise EngineConfigError(f"vosk options: {exc}") from exc
        path = self.options.model.expanduser()
        problems = check_model_dir(path)
        if problems:
            raise EngineConfigError(f"vosk model {path}: " + "; ".join(problems))
        try:
            import vosk  # type: ignore[import-untyped]
        except ImportError as exc:
            raise EngineConfigError("vosk is not installed (pip install vosk==0.3.45)") from exc
        vosk.SetLogLevel(-1)
        self._vosk = vosk
        self.model_path = path
        self.grammar_capable = _supports_grammar(path)
        self.knows_unknown = False
        try:
            self.model = vosk.Model(str(path))  # a path, never lang=...: that would download
        except Exception as exc:  # the binding raises a bare Exception when Kaldi refuses the files
            raise EngineConfigError(f"vosk model {path}: failed to load: {exc}") from exc
        self.knows_unknown = self.model.vosk_model_find_word(UNKNOWN) >= 0
        if self.options.languages is not None:
            self.languages = self.options.languages
        else:
            match = re.search(r"-([a-z]{2,3})(?:-[\w.]+)?$", path.name)
            self.languages = (match.group(1),) if match and path.name.startswith("vosk-model") else ()
        self._threads = ThreadPoolExecutor(max_workers=self.options.threads, thread_name_prefix="vosk")
        self._closed = False

    def supports(self, language: str) -> bool:
        return not self.languages or super().supports(language)

    def grammar_words(self, grammar: Grammar) -> list[str]:
        """The phrases given to Kaldi (each a string of words; digit words one by one so any string of them
        decodes), with "[unk]" so that anything else has somewhere to go."""
        phrases = list(grammar.phrases)
        if grammar.digits:
            phrases.extend(DIGIT_WORDS_EN)
        if self.knows_unknown:  # some models have no "[unk]"; Kaldi then forces the nearest phrase (use confidence)
            phrases.append(UNKNOWN)
        return list(dict.fromkeys(phrases))

    def check_grammar(self, grammar: Grammar) -> None:
        if not self.options.check_words:
            return
        missing = [w for w in grammar.words() if self.model.vosk_model_find_word(w) < 0]
        if missing:
            raise GrammarError(f"vosk model {self.model_path.name} does not know: {', '.join(missing)}")

    def prepare(self, grammar: Grammar) -> None:
        self.check_grammar(grammar)

    def start(self, grammar: Grammar, on_partial: PartialCallback | None = None) -> RecognitionSession:
        if self._closed:
            raise RuntimeError("vosk engine is closed")
        if not self.supports(grammar.language):
            raise GrammarError(f"vosk model speaks {list(self.languages)}, not {grammar.language!r}")
        self.check_grammar(grammar)
        words = self.grammar_words(grammar)
        if self.grammar_capable:
            rec = self._vosk.KaldiRecognizer(self.model, float(SAMPLE_RATE), json.dumps(words, ensure_ascii=False))
        else:
            rec = self._vosk.KaldiRecognizer(self.model, float(SAMPLE_RATE))
        rec.SetMaxAlternatives(self.options.alternatives)
        return _VoskSession(self, grammar, rec, asyncio.get_running_loop(), on_partial)

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        return self._threads.submit(fn, *args)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._threads.shutdown(wait=True, cancel_futures=True)


def result_from_json(grammar: Grammar, payload: str, final: bool, audio_seconds: float,
                     decode_seconds: float) -> RecognitionResult:
    """Vosk's JSON (with alternatives: ``{"alternatives": [{"text", "confidence"}...]}``, or ``{"text"}``, or a
    partial ``{"partial"}``) -> RecognitionResult. Alternative scores are log-domain: softmax makes them 0..1."""
    data = json.loads(payload)
    if "partial" in data:
        text = _clean(data["partial"])
        return RecognitionResult(grammar.keyword_for(text), text, 0.0, (), False, None, audio_seconds,
                                 decode_seconds)
    candidates: list[tuple[str, float]] = []
    if "alternatives" in data:
        for alt in data["alternatives"]:
            candidates.append((_clean(alt.get("text", "")), float(alt.get("confidence", 0.0))))
    else:
        candidates.append((_clean(data.get("text", "")), 0.0))
    merged: dict[str, float] = {}
    for text, score in candidates:  # the same words can come back twice (different [unk] placements)
        merged[text] = max(score, merged.get(text, -math.inf))
    top = max(merged.values()) if merged else 0.0
    weights = {t: math.exp(s - top) for t, s in merged.items()}
    total = sum(weights.values()) or 1.0
    ranked = sorted(((t, w / total) for t, w in weights.items()), key=lambda tw: -tw[1])
    if not ranked or not ranked[0][0]:
        alts = tuple(Alternative(grammar.keyword_for(t), t, round(p, 3)) for t, p in ranked[1:] if t)
        return RecognitionResult(None, "", ranked[0][1] if ranked else 0.0, alts, final, "no-speech",
                                 audio_seconds, decode_seconds)
    best_text, best_p = ranked[0]
    alternatives = tuple(Alternative(grammar.keyword_for(t), t, round(p, 3)) for t, p in ranked[1:])
    keyword = grammar.keyword_for(best_text)
    reason: NoMatchReason | None = None if keyword is not None else "out-of-grammar"
    return RecognitionResult(keyword, best_text, round(best_p, 3), alternatives, final, reason, audio_seconds,
                             decode_seconds)


def _clean(text: str) -> str:
    """Whitespace tidied; "[unk]" stays in, so a phrase with unknown words around it is not a whole phrase."""
    return " ".join(text.split())


class _VoskSession(RecognitionSession):
    """Frames are queued and drained by at most one thread job at a time (Kaldi recognisers are not re-entrant)."""

    def __init__(self, engine: VoskEngine, grammar: Grammar, rec: Any, loop: asyncio.AbstractEventLoop,
                 on_partial: PartialCallback | None) -> None:
        self._engine = engine
        self._grammar = grammar
        self._rec = rec
        self._loop = loop
        self._on_partial = on_partial
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._job: Future[None] | None = None
        self._frames = 0
        self._cpu = 0.0
        self._cancelled = False
        self._finished = False
        self._last_partial = ""

    def feed(self, frames: Sequence[Pcm]) -> None:
        if self._cancelled or self._finished or not frames:
            return
        self._frames += len(frames)
        chunk = np.concatenate(frames).astype(np.int16, copy=False).tobytes()
        with self._lock:
            self._pending.append(chunk)
            if self._job is None or self._job.done():
                self._job = self._engine.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending or self._cancelled:
                    self._pending = []
                    return
                data = b"".join(self._pending)
                self._pending = []
            started = time.thread_time()
            self._rec.AcceptWaveform(data)
            partial = self._rec.PartialResult() if self._on_partial is not None else ""
            self._cpu += time.thread_time() - started
            if partial:
                self._loop.call_soon_threadsafe(self._deliver_partial, partial)

    def _deliver_partial(self, payload: str) -> None:
        if self._cancelled or self._finished or self._on_partial is None:
            return
        result = result_from_json(self._grammar, payload, False, self._frames * FRAME_SAMPLES / SAMPLE_RATE,
                                  self._cpu)
        if result.text and result.text != self._last_partial:
            self._last_partial = result.text
            self._on_partial(result)

    def _final(self) -> str:
        self._drain()
        started = time.thread_time()
        payload: str = self._rec.FinalResult()
        self._cpu += time.thread_time() - started
        return payload

    async def finish(self) -> RecognitionResult:
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        seconds = self._frames * FRAME_SAMPLES / SAMPLE_RATE
        if self._cancelled:
            return RecognitionResult.no_match("cancelled")
        if self._frames == 0:
            return RecognitionResult.no_match("no-speech")
        job = self._job
        if job is not None:
            await wrap_outside(job)
        payload = await wrap_outside(self._engine.submit(self._final))
        if self._cancelled:
            return RecognitionResult.no_match("cancelled", audio_seconds=seconds)
        return result_from_json(self._grammar, payload, True, seconds, self._cpu)

    def cancel(self) -> None:
        self._cancelled = True
        with self._lock:
            self._pending = []
