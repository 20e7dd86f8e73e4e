"""Every flow's prompts as audio, ready before the first call: recordings decoded and text synthesised at load.

The flow engine asks for audio by :class:`~ivr.flows.runtime.AudioPart` (a resolved prompt, a spoken-number word, a
pause); :meth:`PromptLibrary.compose` joins them into one :class:`~ivr.media.prompts.Prompt` the call plays as a single
talk-spurt. Nothing is synthesised during a call: :meth:`PromptLibrary.prepare` does it all when flows load, in worker
threads (espeak-ng runs as a subprocess, so threads overlap it), with a disk cache keyed by text and voice so a
restart or a reload of unchanged text costs nothing.

One of three prompt modules, each with its own job: this one does the preparing (the only one that runs espeak-ng
and keeps a cache); :mod:`ivr.flows.prompt_sources` only says where a flow's prompt comes from (a
``PromptSource``), and :mod:`ivr.media.prompts` is the audio it produces (``Prompt``, ``load_prompt``).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from ivr.flows.prompt_sources import PromptSource, espeak_argv
from ivr.flows.runtime import AudioPart
from ivr.media import g711
from ivr.media.prompts import SAMPLE_RATE, Prompt, PromptError, load_prompt

log = structlog.get_logger("ivr.prompts")

ESPEAK = "espeak-ng"
SYNTH_TIMEOUT = 30.0
# Words of spoken numbers are trimmed to their sound and joined with this much silence between them.
WORD_GAP_SECONDS = 0.06
_SILENCE_LEVEL = 300  # int16 amplitude below which a word's edges count as silence
_COMPOSED_CACHE = 512


@dataclass(frozen=True, slots=True)
class PrepareReport:
    prompts: int
    words: int
    synthesised: int
    seconds: float


class PromptLibrary:
    def __init__(self, cache_dir: Path, *, espeak: str = ESPEAK, workers: int = 2) -> None:
        self.cache_dir = cache_dir
        self.espeak = espeak
        self.workers = workers
        self._by_key: dict[str, Prompt] = {}
        self._words: dict[tuple[str, str], Prompt] = {}
        self._composed: OrderedDict[tuple[object, ...], Prompt] = OrderedDict()
        self._lock = threading.Lock()
        self._synthesised = 0

    # ---- loading (blocking: run in an executor) ------------------------------------------------------------------

    def prepare(self, parts: Iterable[AudioPart]) -> PrepareReport:
        """Decode or synthesise every prompt and spoken-number word in ``parts`` (``FlowEngine.audio_parts()``), so
        that a call only ever concatenates. Raises :class:`PromptError` naming the prompt that failed."""
        started = time.monotonic()
        self._synthesised = 0
        sources: dict[str, PromptSource] = {}
        words: dict[tuple[str, str], str] = {}
        for part in parts:
            if part.kind == "prompt" and part.source is not None:
                sources.setdefault(part.source.cache_key, part.source)
            elif part.kind == "word":
                words.setdefault((part.language, part.word), part.voice or part.language)
        sources = {k: v for k, v in sources.items() if k not in self._by_key}
        words = {k: v for k, v in words.items() if k not in self._words}
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        source_list = list(sources.values())
        word_list = sorted(words.items())
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="prompt-load") as pool:
            loaded_prompts = list(pool.map(self._load_source, source_list))
            loaded_words = list(pool.map(lambda item: self._load_word(item[0][0], item[1], item[0][1]), word_list))
        with self._lock:
            for source, prompt in zip(source_list, loaded_prompts, strict=True):
                self._by_key[source.cache_key] = prompt
            for ((language, word), _voice), prompt in zip(word_list, loaded_words, strict=True):
                self._words[(language, word)] = prompt
            self._composed.clear()
        report = PrepareReport(len(source_list), len(word_list), self._synthesised, time.monotonic() - started)
        log.info("prompts ready", prompts=report.prompts, words=report.words, synthesised=report.synthesised,
                 seconds=round(report.seconds, 2))  # fmt: skip
        return report

    def _load_source(self, source: PromptSource) -> Prompt:
        if source.kind == "file":
            assert source.path is not None
            return load_prompt(f"{source.name}.{source.language}", source.path)
        path = self.cache_dir / f"{source.cache_key}.wav"
        if not path.is_file():
            self._synthesise(espeak_argv(source, path, executable=self.espeak), path, source.name)
        return load_prompt(f"{source.name}.{source.language}", path)

    def _load_word(self, language: str, voice: str, word: str) -> Prompt:
        digest = sha256(f"{voice}\0{word}".encode()).hexdigest()[:16]
        path = self.cache_dir / f"word.{language}.{digest}.wav"
        if not path.is_file():
            argv = [self.espeak, "-v", voice, "-w", str(path), "--", word]
            self._synthesise(argv, path, f"word {word!r}")
        prompt = load_prompt(f"{language}:{word}", path)
        return Prompt(prompt.name, _trim(prompt.pcm))

    def _synthesise(self, argv: list[str], path: Path, what: str) -> None:
        tmp = path.with_suffix(".tmp.wav")
        argv = [tmp.as_posix() if a == str(path) else a for a in argv]
        try:
            result = subprocess.run(argv, capture_output=True, timeout=SYNTH_TIMEOUT, check=False)
        except FileNotFoundError:
            raise PromptError(f"{what}: {self.espeak} is not installed (Debian: apt-get install espeak-ng)") from None
        except subprocess.TimeoutExpired:
            raise PromptError(f"{what}: {self.espeak} took longer than {SYNTH_TIMEOUT:.0f} s") from None
        if result.returncode != 0 or not tmp.is_file():
            detail = result.stderr.decode("utf-8", "replace").strip()[:200]
            raise PromptError(f"{what}: {self.espeak} failed ({result.returncode}): {detail}")
        tmp.replace(path)  # atomic: a crash never leaves a half-written cache entry behind
        with self._lock:
            self._synthesised += 1

    # ---- the engine's PromptPlayer --------------------------------------------------------------------------------

    def compose(self, parts: Sequence[AudioPart]) -> Prompt:
        """One playable prompt from prompt, word and pause parts (all prepared at load)."""
        key = tuple(_part_key(p) for p in parts)
        with self._lock:
            cached = self._composed.get(key)
            if cached is not None:
                self._composed.move_to_end(key)
                return cached
        pieces: list[npt.NDArray[np.int16]] = []
        names: list[str] = []
        previous_word = False
        for part in parts:
            if part.kind == "pause":
                pieces.append(_framed(np.zeros(int(part.seconds * SAMPLE_RATE), dtype=np.int16)))
                previous_word = False
                continue
            if part.kind == "word":
                prompt = self._words.get((part.language, part.word))
                if prompt is None:
                    raise PromptError(f"the word {part.word!r} in {part.language!r} was not prepared")
                if previous_word:
                    pieces.append(_framed(np.zeros(int(WORD_GAP_SECONDS * SAMPLE_RATE), dtype=np.int16)))
                previous_word = True
            else:
                assert part.source is not None
                prompt = self._by_key.get(part.source.cache_key)
                if prompt is None:
                    raise PromptError(f"prompt {part.source.name!r} in {part.source.language!r} was not prepared")
                previous_word = False
            pieces.append(_framed(prompt.pcm))
            names.append(prompt.name)
        pcm = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
        composed = Prompt("+".join(names) or "silence", pcm)
        with self._lock:
            self._composed[key] = composed
            while len(self._composed) > _COMPOSED_CACHE:
                self._composed.popitem(last=False)
        return composed

    def word(self, language: str, word: str) -> Prompt:
        """A spoken-number word prepared at load (``PromptError`` when it was not)."""
        found = self._words.get((language, word))
        if found is None:
            raise PromptError(f"the word {word!r} in {language!r} was not prepared")
        return found

    def prompt(self, source: PromptSource) -> Prompt:
        found = self._by_key.get(source.cache_key)
        if found is None:
            raise PromptError(f"prompt {source.name!r} in {source.language!r} was not prepared")
        return found


def _part_key(part: AudioPart) -> tuple[object, ...]:
    if part.kind == "pause":
        return ("pause", round(part.seconds, 3))
    if part.kind == "word":
        return ("word", part.language, part.word)
    assert part.source is not None
    return ("prompt", part.source.cache_key)


def _framed(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """``pcm`` padded with silence to whole 20 ms frames. Every part of a composed prompt then starts on a frame
    boundary, so its encoded frames are exactly those of the part alone: a caller (the simulator) can tell which
    prompts and words it heard from the audio alone."""
    short = -len(pcm) % g711.FRAME_SAMPLES
    if not short:
        return pcm
    return np.concatenate([pcm, np.zeros(short, dtype=np.int16)])


def _trim(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """Cut leading and trailing silence (espeak-ng pads each utterance), keeping 10 ms either side."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > _SILENCE_LEVEL)
    if loud.size == 0:
        return pcm
    margin = SAMPLE_RATE // 100
    start = max(0, int(loud[0]) - margin)
    end = min(len(pcm), int(loud[-1]) + margin)
    return pcm[start:end]
