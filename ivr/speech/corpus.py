"""A speech test corpus synthesised on the spot: phone-line audio of menu keywords, digit strings and rejection noise.

Nothing here is committed audio. Each utterance is spoken by espeak-ng or flite, converted by sox to 8 kHz µ-law and
back (what a G.711 phone line does to it), and cached under a directory keyed by a hash of how it was made, so a second
run costs nothing. The "noisy" condition adds white-ish noise at a fixed SNR (default 15 dB), then the µ-law round
trip again.
Rejection material: silence (line hiss), noise bursts, and out-of-grammar words spoken by the same voices.

Used by the tests (a small corpus) and by ``bench/bench_speech.py`` (the full one)::

    python -m ivr.speech.corpus --out var/speech-corpus
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import soundfile

from ivr.media import g711

__all__ = [
    "DIGIT_WORDS",
    "ESPEAK_VOICES",
    "FLITE_VOICES",
    "MENU_GRAMMARS",
    "OUT_OF_GRAMMAR",
    "Utterance",
    "Voice",
    "build_corpus",
    "default_cache_dir",
    "digit_strings",
    "rejection_set",
    "synthesize",
]

SAMPLE_RATE: Final = 8000
Kind = Literal["keyword", "digits", "out-of-grammar", "silence", "noise"]
Condition = Literal["clean", "noisy"]


@dataclass(frozen=True, slots=True)
class Voice:
    """One synthetic speaker: ``engine`` is "espeak" or "flite"; ``speed`` is words per minute for espeak-ng and
    a duration stretch (1.0 normal, 0.8 faster) for flite."""

    engine: Literal["espeak", "flite"]
    name: str
    speed: float

    @property
    def family(self) -> str:
        return self.engine

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.name}@{self.speed:g}"


# espeak-ng speeds are words per minute (175 is its default); flite speeds are duration_stretch (lower is faster).
ESPEAK_VOICES: Final[tuple[Voice, ...]] = tuple(
    Voice("espeak", name, speed)
    for name in ("en-us", "en-gb", "en-gb-scotland", "en-us+f3")
    for speed in (150.0, 190.0)
)
FLITE_VOICES: Final[tuple[Voice, ...]] = tuple(
    Voice("flite", name, speed) for name in ("slt", "kal", "rms", "awb") for speed in (1.0, 0.8)
)

# The English words of the example flows' menus (configs/flows/main.yaml), one grammar per menu node:
# canonical keyword -> the phrases a caller may say for it.
MENU_GRAMMARS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "choose-language": {"bulgarian": ("bulgarian",), "english": ("english",)},
    "main-menu": {
        "billing": ("billing", "bill", "invoice", "payment"),
        "support": ("technical support", "support", "internet", "outage"),
        "sales": ("sales", "new contract", "offers"),
        "operator": ("operator", "agent", "person"),
    },
    "offer-message": {"message": ("message", "yes"), "goodbye": ("no", "goodbye")},
}

DIGIT_WORDS: Final[tuple[str, ...]] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)

# Words a caller might say that are in no menu: they must come back as no-match.
OUT_OF_GRAMMAR: Final[tuple[str, ...]] = (
    "banana", "weather", "hello there", "elephant", "computer", "tomorrow morning", "pizza", "umbrella",
)


@dataclass(frozen=True, slots=True)
class Utterance:
    """One corpus item: ``expected`` is the canonical keyword (or the digit string "4711"), ``None`` when the right
    answer is no-match (silence, noise, out-of-grammar speech)."""

    path: Path
    kind: Kind
    text: str
    expected: str | None
    menu: str
    voice: str
    family: str
    condition: Condition

    def pcm(self) -> npt.NDArray[np.int16]:
        data, rate = soundfile.read(str(self.path), dtype="int16")
        if rate != SAMPLE_RATE:
            raise ValueError(f"{self.path}: {rate} Hz, expected {SAMPLE_RATE}")
        return np.ascontiguousarray(data, dtype=np.int16)


def default_cache_dir() -> Path:
    """``$IVR_SPEECH_CORPUS`` if set, else ``var/speech-corpus`` under the current directory (gitignored)."""
    return Path(os.environ.get("IVR_SPEECH_CORPUS", "var/speech-corpus"))


def _require(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise FileNotFoundError(f"{tool} is not installed (apt-get install espeak-ng flite sox)")
    return found


def _synth_raw(voice: Voice, text: str, out: Path) -> None:
    if voice.engine == "espeak":
        cmd = [_require("espeak-ng"), "-v", voice.name, "-s", str(int(voice.speed)), "-w", str(out), text]
    else:
        cmd = [
            _require("flite"), "-voice", voice.name, "--setf", f"duration_stretch={voice.speed:g}",
            "-t", text, "-o", str(out),
        ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def _phone_line(src: Path, dst: Path) -> None:
    """sox: to 8 kHz mono µ-law, then back to 16-bit linear (the G.711 round trip). ``-R`` (repeatable): sox dithers
    when it reduces the bit depth, with a random seed by default, so without it every machine built a different corpus
    and the recognition figures (and the tests' floors) moved from one clean checkout to the next."""
    sox = _require("sox")
    with tempfile.TemporaryDirectory() as tmp:
        ulaw = Path(tmp) / "line.wav"
        subprocess.run([sox, "-R", str(src), "-r", "8000", "-c", "1", "-e", "u-law", str(ulaw)],
                       check=True, capture_output=True, timeout=30)
        subprocess.run([sox, "-R", str(ulaw), "-e", "signed-integer", "-b", "16", str(dst)],
                       check=True, capture_output=True, timeout=30)


def _pad(pcm: npt.NDArray[np.int16], lead_ms: int = 300, tail_ms: int = 300) -> npt.NDArray[np.int16]:
    lead = np.zeros(SAMPLE_RATE * lead_ms // 1000, dtype=np.int16)
    tail = np.zeros(SAMPLE_RATE * tail_ms // 1000, dtype=np.int16)
    return np.concatenate([lead, pcm, tail])


def ulaw_round_trip(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    return g711.ulaw_decode(g711.ulaw_encode(pcm))


def add_noise(pcm: npt.NDArray[np.int16], snr_db: float, seed: int) -> npt.NDArray[np.int16]:
    """Add noise so that the speech-to-noise power ratio is ``snr_db`` (speech power measured over the loud part)."""
    rng = np.random.default_rng(seed)
    x = pcm.astype(np.float64)
    active = x[np.abs(x) > 0.05 * max(1.0, float(np.abs(x).max()))]
    speech_power = float(np.mean(active**2)) if active.size else 1.0
    noise = _coloured_noise(rng, x.size)
    noise *= np.sqrt(speech_power / (10 ** (snr_db / 10)) / float(np.mean(noise**2)))
    return np.clip(x + noise, -32768, 32767).astype(np.int16)


def _coloured_noise(rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
    """White noise with a gentle low-pass (line and room noise is not flat)."""
    white = rng.standard_normal(n + 1)
    return np.asarray(white[1:] + 0.5 * white[:-1], dtype=np.float64)


def _key(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]


def synthesize(voice: Voice, text: str, cache: Path, condition: Condition = "clean", snr_db: float = 15.0) -> Path:
    """Phone-line audio of ``voice`` saying ``text``: 8 kHz int16 WAV, 300 ms of silence around it (cached)."""
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{_key('v2', voice.label, text, condition, snr_db)}.wav"  # v2: repeatable sox (v1 was dithered)
    if out.exists():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        line = Path(tmp) / "line.wav"
        _synth_raw(voice, text, raw)
        _phone_line(raw, line)
        pcm, _ = soundfile.read(str(line), dtype="int16")
        pcm = _pad(np.asarray(pcm, dtype=np.int16))
        if condition == "noisy":
            pcm = ulaw_round_trip(add_noise(pcm, snr_db, seed=int(_key(voice.label, text)[:8], 16)))
        tmp_out = out.with_suffix(".tmp.wav")
        soundfile.write(str(tmp_out), pcm, SAMPLE_RATE, subtype="PCM_16")
        tmp_out.replace(out)  # atomic: concurrent test workers never read half a file
    return out


def digit_strings(count: int, min_len: int = 4, max_len: int = 10, seed: int = 7) -> list[str]:
    """``count`` reproducible random digit strings."""
    rng = np.random.default_rng(seed)
    return ["".join(str(d) for d in rng.integers(0, 10, size=int(rng.integers(min_len, max_len + 1))))
            for _ in range(count)]


def rejection_set(cache: Path, seconds: float = 1.5) -> list[Utterance]:
    """Silence and noise files (no speech at all), made with numpy and put through the µ-law line."""
    cache.mkdir(parents=True, exist_ok=True)
    n = int(seconds * SAMPLE_RATE)
    items: list[tuple[str, Kind, npt.NDArray[np.float64]]] = []
    rng = np.random.default_rng(1234)
    items.append(("digital silence", "silence", np.zeros(n)))
    items.append(("line hiss -60 dBFS", "silence", rng.standard_normal(n) * 32768 * 10 ** (-60 / 20)))
    for level in (-30, -20):
        items.append((f"white noise {level} dBFS", "noise", rng.standard_normal(n) * 32768 * 10 ** (level / 20)))
    brown = np.cumsum(rng.standard_normal(n))
    brown -= np.convolve(brown, np.ones(400) / 400, mode="same")  # remove the drift, keep the rumble
    items.append(("rumble -20 dBFS", "noise", brown / np.std(brown) * 32768 * 0.1))
    t = np.arange(n) / SAMPLE_RATE
    hum = 3000 * np.sin(2 * np.pi * 50 * t) + 1500 * np.sin(2 * np.pi * 150 * t)
    items.append(("hum 50 Hz + harmonics", "noise", hum))
    bursts = rng.standard_normal(n) * 32768 * 0.1 * (np.sin(2 * np.pi * 3 * t) > 0.3)
    items.append(("noise bursts", "noise", bursts))
    items.append(("dial tone 350+440 Hz", "noise", 4000 * (np.sin(2 * np.pi * 350 * t) + np.sin(2 * np.pi * 440 * t))))
    out: list[Utterance] = []
    for text, kind, signal in items:
        path = cache / f"{_key('rej-v1', text, seconds)}.wav"
        if not path.exists():
            pcm = ulaw_round_trip(np.clip(signal, -32768, 32767).astype(np.int16))
            soundfile.write(str(path), pcm, SAMPLE_RATE, subtype="PCM_16")
        out.append(Utterance(path, kind, text, None, "*", "generated", "generated", "clean"))
    return out


def _spoken_digits(digits: str) -> str:
    return " ".join(DIGIT_WORDS[int(d)] for d in digits)


def build_corpus(
    cache: Path | None = None,
    voices: Sequence[Voice] = ESPEAK_VOICES + FLITE_VOICES,
    conditions: Sequence[Condition] = ("clean", "noisy"),
    menus: Iterable[str] = MENU_GRAMMARS,
    n_digit_strings: int = 6,
    out_of_grammar: Sequence[str] = OUT_OF_GRAMMAR,
    snr_db: float = 15.0,
) -> list[Utterance]:
    """Every phrase of every menu, ``n_digit_strings`` digit strings and the out-of-grammar words, by every voice in
    every condition; plus the silence and noise rejection set."""
    cache = cache or default_cache_dir()
    items: list[Utterance] = []
    menu_names = list(menus)
    for voice in voices:
        for condition in conditions:
            for menu in menu_names:
                for keyword, phrases in MENU_GRAMMARS[menu].items():
                    for phrase in phrases:
                        path = synthesize(voice, phrase, cache, condition, snr_db)
                        items.append(Utterance(path, "keyword", phrase, keyword, menu, voice.label, voice.family,
                                               condition))
            for digits in digit_strings(n_digit_strings):
                path = synthesize(voice, _spoken_digits(digits), cache, condition, snr_db)
                items.append(Utterance(path, "digits", digits, digits, "digits", voice.label, voice.family, condition))
            for word in out_of_grammar:
                path = synthesize(voice, word, cache, condition, snr_db)
                items.append(Utterance(path, "out-of-grammar", word, None, "main-menu", voice.label, voice.family,
                                       condition))
    items.extend(rejection_set(cache))
    return items


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=default_cache_dir())
    parser.add_argument("--snr", type=float, default=15.0)
    args = parser.parse_args(argv)
    items = build_corpus(args.out, snr_db=args.snr)
    print(f"{len(items)} utterances in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
