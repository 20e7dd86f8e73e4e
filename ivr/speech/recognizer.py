"""The Recognizer interface every speech engine implements, the results it gives, and loading an engine by name.

An engine (``SpeechEngine``) is made once per daemon from configuration and shared by all calls. For each utterance
window the listener asks it to ``start(grammar)`` a ``RecognitionSession``, feeds it 20 ms frames of 8 kHz mono int16
PCM (only speech: the VAD gates it), then awaits ``finish()`` at end of speech for the final ``RecognitionResult``, or
calls ``cancel()`` (the caller pressed a key, hung up, or the menu moved on).

``feed`` is called on the event loop from the media path: it must never block. Engines that decode in other threads or
processes queue the audio and return at once; partial results, where an engine has them, are delivered to the
``on_partial`` callback on the event loop.

Engines plug in by configuration: ``engine: pocketsphinx`` / ``engine: vosk`` name the bundled ones, and any other
value is a dotted import path ``package.module:ClassName`` (or ``package.module.ClassName``) of a ``SpeechEngine``
subclass, constructed as ``ClassName(options)`` with the ``options:`` mapping from the configuration.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from ivr.speech.grammar import Grammar

__all__ = [
    "BUILTIN_ENGINES",
    "Alternative",
    "EngineConfigError",
    "NoMatchReason",
    "PartialCallback",
    "Pcm",
    "RecognitionResult",
    "RecognitionSession",
    "SpeechEngine",
    "load_engine",
    "resolve_engine_class",
]

Pcm = npt.NDArray[np.int16]  # 160 samples = 20 ms of 8 kHz mono (same as ivr.media.jitterbuffer.Pcm)
FRAME_SAMPLES: Final = 160
SAMPLE_RATE: Final = 8000

NoMatchReason = Literal["no-speech", "out-of-grammar", "low-confidence", "cancelled", "error"]


class EngineConfigError(ValueError):
    """An engine that cannot be made from its configuration: unknown name, bad options, missing model files."""


@dataclass(frozen=True, slots=True)
class Alternative:
    """One candidate reading of the utterance: the keyword it maps to (``None`` if it maps to none), the words, and
    a confidence in 0..1."""

    keyword: str | None
    text: str
    confidence: float


@dataclass(frozen=True, slots=True)
class RecognitionResult:
    """What the engine heard. ``keyword`` is the canonical keyword (or the digit string) when it matched; ``None``
    means no-match and ``reason`` says why. ``alternatives`` are the other candidates, best first (the winning one
    excluded). ``final`` is False for partial results. ``audio_seconds`` is how much speech was decoded and
    ``decode_seconds`` the engine's processing time for it (CPU of the decoder, not waiting)."""

    keyword: str | None
    text: str
    confidence: float
    alternatives: tuple[Alternative, ...] = ()
    final: bool = True
    reason: NoMatchReason | None = None
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def matched(self) -> bool:
        return self.keyword is not None

    @classmethod
    def no_match(cls, reason: NoMatchReason, text: str = "", confidence: float = 0.0,
                 alternatives: tuple[Alternative, ...] = (), audio_seconds: float = 0.0,
                 decode_seconds: float = 0.0) -> RecognitionResult:
        return cls(None, text, confidence, alternatives, True, reason, audio_seconds, decode_seconds)


PartialCallback = Callable[[RecognitionResult], None]


class RecognitionSession(ABC):
    """One recognition against one grammar (one utterance). Not thread-safe: use it from the event loop."""

    @abstractmethod
    def feed(self, frames: Sequence[Pcm]) -> None:
        """Queue 20 ms frames of speech. Returns at once (no decoding on the caller's thread)."""

    @abstractmethod
    async def finish(self) -> RecognitionResult:
        """End of speech: decode what was fed and return the final result (no-match included). Call once."""

    @abstractmethod
    def cancel(self) -> None:
        """Drop the utterance; a pending ``finish`` returns a no-match with reason "cancelled". Idempotent."""


class SpeechEngine(ABC):
    """A recogniser shared by all calls. Subclasses take ``options`` (the configuration mapping) in ``__init__`` and
    raise ``EngineConfigError`` naming what is wrong."""

    #: language tags this engine (with its model) can recognise; the listener refuses grammars in other languages.
    languages: tuple[str, ...] = ()

    @abstractmethod
    def start(self, grammar: Grammar, on_partial: PartialCallback | None = None) -> RecognitionSession:
        """Begin recognising one utterance against ``grammar``. Must be called on the event loop."""

    def prepare(self, grammar: Grammar) -> None:  # noqa: B027 - optional hook, default does nothing on purpose
        """Optional: compile ``grammar`` ahead of the first caller (e.g. when a flow is loaded)."""

    def supports(self, language: str) -> bool:
        primary = language.split("-")[0].lower()
        return any(lang.split("-")[0].lower() == primary for lang in self.languages)

    @abstractmethod
    def close(self) -> None:
        """Release workers and models. The engine is unusable afterwards."""


BUILTIN_ENGINES: Final[dict[str, str]] = {
    "pocketsphinx": "ivr.speech.pocketsphinx_engine:PocketsphinxEngine",
    "vosk": "ivr.speech.vosk_engine:VoskEngine",
}


def resolve_engine_class(name: str) -> type[SpeechEngine]:
    """``"pocketsphinx"``, ``"vosk"`` or a dotted path ``"pkg.mod:Class"`` / ``"pkg.mod.Class"`` -> the class."""
    path = BUILTIN_ENGINES.get(name, name)
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise EngineConfigError(
            f"speech engine {name!r}: expected one of {sorted(BUILTIN_ENGINES)} or 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineConfigError(f"speech engine {name!r}: cannot import {module_name!r}: {exc}") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, SpeechEngine)):
        raise EngineConfigError(f"speech engine {name!r}: {path!r} is not a SpeechEngine subclass")
    return cls


def load_engine(name: str, options: Mapping[str, Any] | None = None) -> SpeechEngine:
    """Construct the engine ``name`` with ``options`` (see the module docstring)."""
    cls = resolve_engine_class(name)
    engine: Any = cls(dict(options or {}))  # type: ignore[call-arg]  # subclasses take the options mapping
    assert isinstance(engine, SpeechEngine)
    return engine
