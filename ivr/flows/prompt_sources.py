"""Which audio each (prompt, language) pair plays: a recording or text to synthesise, with the fallback language.

For prompt ``name`` in language ``lang`` the first of these that exists wins:

1. the file written for that language in the flow (``welcome: {en: {file: audio/welcome-en.wav}}``);
2. a recording at ``prompts/<lang>/<name>.wav`` (or ``.flac``/``.ogg``) beside the flow file;
3. the text written for that language (synthesised once at load with ``espeak-ng -v <voice>``).

If none exists in ``lang``, the same search runs in the flow's fallback language: the caller hears the fallback
language rather than silence, and ``ivr validate`` lists the gap as a warning.

One of three prompt modules, each with its own job: this one only says where a flow's prompt comes from (a
:class:`PromptSource`, and the ``espeak-ng`` command line for text), with no audio and no I/O beyond looking for
files; :mod:`ivr.daemon.prompt_library` turns sources into audio before the first call (synthesis, decoding, the
disk cache, composing a node's parts); :mod:`ivr.media.prompts` is the audio itself (``Prompt``: decoded,
resampled and G.711-encoded frames, ``load_prompt``, ``PromptCache``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from ivr.flows.model import PromptFile, PromptText
from ivr.flows.problems import LoadedFlow

__all__ = ["AUDIO_SUFFIXES", "PromptMissing", "PromptSource", "espeak_argv", "resolve_prompt", "source_in"]

AUDIO_SUFFIXES: Final = (".wav", ".flac", ".ogg")


class PromptMissing(LookupError):
    """Neither the caller's language nor the fallback has this prompt (``ivr validate`` reports it as an error)."""


@dataclass(frozen=True, slots=True)
class PromptSource:
    """Where the audio of one prompt in one language comes from."""

    name: str
    language: str
    """The language the audio is in (the fallback language when ``fallback`` is true)."""
    requested: str
    """The language that was asked for."""
    kind: Literal["file", "text"]
    path: Path | None = None
    """The recording (kind "file")."""
    text: str | None = None
    """The text to synthesise (kind "text")."""
    voice: str | None = None
    """The espeak-ng voice for the text."""

    @property
    def fallback(self) -> bool:
        return self.language != self.requested

    @property
    def cache_key(self) -> str:
        """A stable name for the synthesised or decoded audio: same text and voice -> same key."""
        what = str(self.path) if self.kind == "file" else f"{self.voice}\0{self.text}"
        digest = hashlib.sha256(what.encode("utf-8")).hexdigest()[:16]
        return f"{self.name}.{self.language}.{digest}"


def _conventional(flow: LoadedFlow, name: str, language: str) -> Path | None:
    folder = flow.base_dir / "prompts" / language
    for suffix in AUDIO_SUFFIXES:
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def source_in(flow: LoadedFlow, name: str, language: str) -> PromptSource | None:
    """The source of prompt ``name`` in exactly ``language`` (no fallback), or None."""
    definition = flow.flow.prompts.get(name) or {}
    variant = definition.get(language)
    if isinstance(variant, PromptFile):
        path = flow.resolve(variant.file)
        if path.is_file():
            return PromptSource(name, language, language, "file", path=path)
        return None
    recording = _conventional(flow, name, language)
    if recording is not None:
        return PromptSource(name, language, language, "file", path=recording)
    if isinstance(variant, PromptText):
        return PromptSource(name, language, language, "text", text=variant.text,
                            voice=variant.voice or flow.flow.voice(language))  # fmt: skip
    if isinstance(variant, str):
        return PromptSource(name, language, language, "text", text=variant, voice=flow.flow.voice(language))
    return None


def resolve_prompt(flow: LoadedFlow, name: str, language: str) -> PromptSource:
    """The audio to play for prompt ``name`` to a caller in ``language``, falling back to the flow's fallback language.
    Raises :class:`PromptMissing` when neither has it (a flow that passed ``ivr validate`` never does)."""
    if name not in flow.flow.prompts:
        raise PromptMissing(f"{flow.file}: no prompt called {name!r}")
    for candidate in dict.fromkeys((language, flow.flow.fallback_language)):
        source = source_in(flow, name, candidate)
        if source is not None:
            if candidate != language:
                return PromptSource(source.name, source.language, language, source.kind, source.path, source.text,
                                    source.voice)  # fmt: skip
            return source
    raise PromptMissing(
        f"{flow.file}: prompt {name!r} has no recording or text in {language!r} "
        f"nor in the fallback language {flow.flow.fallback_language!r}"
    )


def espeak_argv(source: PromptSource, out_path: Path, *, executable: str = "espeak-ng") -> list[str]:
    """The espeak-ng command line that synthesises a text prompt into ``out_path`` (a WAV file).
    The text is passed as one argument (never through a shell)."""
    if source.kind != "text" or source.text is None:
        raise ValueError(f"prompt {source.name!r} in {source.language!r} is a recording, not text")
    return [executable, "-v", source.voice or source.language, "-w", str(out_path), "--", source.text]
