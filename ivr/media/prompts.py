"""Prompts: audio files decoded, resampled and G.711-encoded once, at load time.

A ``Prompt`` holds the 8 kHz mono int16 audio and, for PCMU and PCMA, the tuple of ready 160-byte 20 ms
frames that ``MediaStream.play()`` sends unchanged; nothing about a prompt is computed during a call.

Loading reads the file and resamples it: it blocks for as long as that takes. Load at start-up, or run
``PromptCache.load`` in an executor when reloading under traffic.

One of three prompt modules, each with its own job: this one is the audio (a ``Prompt`` and loading one file into
it), and knows nothing of flows; :mod:`ivr.flows.prompt_sources` says where a flow's prompt comes from (a recording
or text, in which language); :mod:`ivr.daemon.prompt_library` prepares every flow's prompts before the first call
(synthesis, the disk cache, composing) and hands out ``Prompt`` values.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

from ivr.media import g711

__all__ = [
    "AUDIO_SUFFIXES",
    "Prompt",
    "PromptCache",
    "PromptError",
    "PromptNotLoaded",
    "load_prompt",
    "wait_audio",
]

SAMPLE_RATE: Final = g711.CLOCK_RATE
AUDIO_SUFFIXES: Final = (".wav", ".flac", ".ogg")


class PromptError(Exception):
    """A prompt cannot be loaded or found; the message names the file (or prompt) and what is wrong."""


class PromptNotLoaded(PromptError, KeyError):
    """``PromptCache.get`` was asked for a name that was never loaded."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


@dataclass(frozen=True, eq=False)
class Prompt:
    """A loaded prompt: ``pcm`` is int16, 8 kHz, mono (read-only); ``duration`` is in seconds."""

    name: str
    pcm: npt.NDArray[np.int16]
    duration: float = field(init=False)
    _frames: dict[str, tuple[bytes, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pcm = np.array(self.pcm, dtype=np.int16).reshape(-1)  # own copy
        pcm.flags.writeable = False
        padded = np.zeros(-(-len(pcm) // g711.FRAME_SAMPLES) * g711.FRAME_SAMPLES, dtype=np.int16)
        padded[: len(pcm)] = pcm  # the tail of the last frame is linear 0: the codec's silence
        frames: dict[str, tuple[bytes, ...]] = {}
        for codec in g711.STATIC_PAYLOAD_TYPES:
            data = g711.encode(codec, padded)
            step = g711.FRAME_SAMPLES
            frames[codec] = tuple(data[i : i + step] for i in range(0, len(data), step))
        object.__setattr__(self, "pcm", pcm)
        object.__setattr__(self, "duration", len(pcm) / SAMPLE_RATE)
        object.__setattr__(self, "_frames", frames)

    def frames(self, codec: str) -> tuple[bytes, ...]:
        """The prompt as 160-byte 20 ms frames of ``codec`` ("PCMU" or "PCMA", any case)."""
        return self._frames[g711.codec_key(codec)]


def _read_audio(path: Path) -> tuple[npt.NDArray[np.float64], int]:
    if not path.exists():
        raise PromptError(f"{path}: no such file")
    if not path.is_file():
        raise PromptError(f"{path}: not a regular file")
    try:
        data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        raise PromptError(f"{path}: unreadable audio file ({exc})") from exc
    return np.asarray(data, dtype=np.float64), int(rate)


def load_prompt(name: str, path: Path) -> Prompt:
    """Read ``path`` (WAV, FLAC, OGG; any rate and channel count), mix down to mono, resample to 8 kHz with
    soxr (HQ) and convert to int16 with clipping. Raises ``PromptError`` naming the file and the problem."""
    path = Path(path)
    data, rate = _read_audio(path)
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise PromptError(f"{path}: empty audio (no samples)")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    mono = np.nan_to_num(mono, nan=0.0, posinf=1.0, neginf=-1.0)
    if rate != SAMPLE_RATE:
        mono = np.asarray(soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ"), dtype=np.float64)
        if mono.size == 0:
            raise PromptError(f"{path}: empty audio (too short to resample from {rate} Hz to 8000 Hz)")
    # Scale by 32768 so that 16-bit PCM read as float comes back exactly; clip the one value out of range.
    pcm = np.clip(np.rint(mono * 32768.0), -32768, 32767).astype(np.int16)
    return Prompt(name, pcm)


def wait_audio(name: str, prompts: Sequence[Prompt], *, gap: float = 0.0) -> Prompt:
    """One prompt made of ``prompts`` one after another, each followed by ``gap`` seconds of silence: wait audio
    (music on hold, "your call is important to us") to play with ``loop=True`` until something else is played.

    The audio is joined sample by sample and encoded once, so there is no padding between the prompts; the loop
    wraps on a frame boundary (the end is padded to a whole frame, as every prompt is). ``MediaStream.play()``
    replaces it without a gap, and ``on_done`` of the next prompt can start it again: switching to and from wait
    audio keeps one talk-spurt."""
    if not prompts:
        raise ValueError("wait audio needs at least one prompt")
    if gap < 0:
        raise ValueError("gap must not be negative")
    silence = np.zeros(round(gap * SAMPLE_RATE), dtype=np.int16)
    parts: list[npt.NDArray[np.int16]] = []
    for prompt in prompts:
        parts.append(prompt.pcm)
        if len(silence):
            parts.append(silence)
    return Prompt(name, np.concatenate(parts))


class PromptCache:
    """Loaded prompts by name. Loading again under a name replaces the prompt (calls already playing the old
    one keep their frames)."""

    def __init__(self) -> None:
        self._prompts: dict[str, Prompt] = {}

    def load(self, name: str, path: Path) -> Prompt:
        prompt = load_prompt(name, path)
        self._prompts[name] = prompt
        return prompt

    def load_directory(self, directory: Path) -> list[Prompt]:
        """Load every WAV/FLAC/OGG file in ``directory`` (not recursive) under its file name without suffix."""
        directory = Path(directory)
        if not directory.is_dir():
            raise PromptError(f"{directory}: not a directory")
        files = sorted(p for p in directory.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        return [self.load(p.stem, p) for p in files]

    def add(self, prompt: Prompt) -> None:
        """Put an already built prompt (e.g. synthesised audio) into the cache."""
        self._prompts[prompt.name] = prompt

    def get(self, name: str) -> Prompt:
        try:
            return self._prompts[name]
        except KeyError:
            raise PromptNotLoaded(f"prompt {name!r} is not loaded") from None

    def __contains__(self, name: object) -> bool:
        return name in self._prompts

    def __len__(self) -> int:
        return len(self._prompts)

    def __iter__(self) -> Iterator[str]:
        return iter(self._prompts)
