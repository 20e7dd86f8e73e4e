"""What a caller heard, by name: every prompt and spoken word a flow can play, fingerprinted by its encoded frames.

The daemon pre-encodes each prompt and each spoken-number word once, and composes what a node plays from whole
20 ms frames of them (:func:`ivr.daemon.prompt_library._framed`), so every frame a caller receives is a frame of some
prompt or word, byte for byte. :class:`PromptCatalog` indexes those frames by the flow's prompt names (per language)
and words; :meth:`PromptCatalog.heard` turns the payloads a :class:`~ivr.simulator.caller.SimCaller` received into
:class:`Heard` items (a prompt and the words spoken right after it, e.g. an account number read back).

The catalog is built from the flow files and the same prompt cache the daemon uses, never from inside the daemon:
what the simulator reports is what reached the caller's ear.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ivr.daemon.prompt_library import PromptLibrary
from ivr.flows.runtime import AudioPart
from ivr.media.prompts import Prompt
from ivr.simulator.fingerprint import PromptIndex, identify_prompts

__all__ = ["CatalogEntry", "Heard", "PromptCatalog"]


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One fingerprinted sound: a flow prompt in one language, or one spoken word."""

    label: str
    kind: str  # "prompt" or "word"
    name: str  # the prompt's name in the flow, or the word
    language: str
    text: str | None = None


@dataclass(slots=True)
class Heard:
    """A prompt (or a run of words alone) heard by the caller: ``words`` are the spoken words right after it."""

    name: str
    language: str
    text: str | None
    start: int
    """Index of its first frame among the frames received."""
    end: int
    """Index after its last frame (words included)."""
    complete: bool
    words: list[str] = field(default_factory=list)

    def describe(self) -> str:
        said = f' saying "{" ".join(self.words)}"' if self.words else ""
        name = self.name if self.name else "words"
        return f"{name} ({self.language}){said}"


class PromptCatalog:
    def __init__(self, library: PromptLibrary, parts: Iterable[AudioPart]) -> None:
        self.entries: dict[str, CatalogEntry] = {}
        prompts: dict[str, Prompt] = {}
        for part in sorted(parts, key=lambda p: p.key):
            if part.kind == "prompt" and part.source is not None:
                source = part.source
                label = f"{source.name}@{source.language}"
                if label in prompts:
                    continue
                prompts[label] = library.prompt(source)
                self.entries[label] = CatalogEntry(label, "prompt", source.name, source.language, source.text)
            elif part.kind == "word":
                label = f"word:{part.language}:{part.word}"
                if label in prompts:
                    continue
                prompts[label] = library.word(part.language, part.word)
                self.entries[label] = CatalogEntry(label, "word", part.word, part.language)
        self._prompts = prompts
        self._indexes: dict[str, PromptIndex] = {}

    def index(self, codec: str) -> PromptIndex:
        key = codec.upper()
        found = self._indexes.get(key)
        if found is None:
            found = self._indexes[key] = PromptIndex(self._prompts, key)
        return found

    def heard(self, frames: Sequence[bytes], codec: str, *, offset: int = 0) -> list[Heard]:
        """The prompts in ``frames`` (received payloads, in order), words folded into the prompt before them.
        ``offset`` is added to the positions (when ``frames`` is a tail of everything received)."""
        out: list[Heard] = []
        for found in identify_prompts(frames, self.index(codec)):
            entry = self.entries[found.name]
            start = offset + found.start
            end = start + found.frames_matched
            if entry.kind == "word":
                last = out[-1] if out else None
                if last is not None and start - last.end <= 10:  # a word right after (the gap between words)
                    last.words.append(entry.name)
                    last.end = end
                    last.complete = found.complete
                    continue
                out.append(Heard("", entry.language, None, start, end, found.complete, [entry.name]))
                continue
            out.append(Heard(entry.name, entry.language, entry.text, start, end, found.complete))
        return out
