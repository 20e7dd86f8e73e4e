"""Which prompts a caller heard, found in the audio it received.

G.711 is deterministic and the daemon sends ``prompt.frames(codec)`` verbatim, so every 20 ms frame of a prompt is
an exact fingerprint of its place in that prompt. :func:`identify_prompts` indexes every frame of every known prompt
(frame bytes -> where it occurs) and walks the received frames, following each prompt as a run: a lost packet (up to
``max_gap`` frames in a row) does not end a run, a prompt stopped early (barge-in) ends it with ``complete=False``,
and frames of no known prompt are skipped.

Frames that occur in several prompts (silence, mostly) are ambiguous; where a run could belong to several prompts,
the longest run wins. A run made only of frames shared with other prompts is not reported, unless the prompt has no
frame of its own at all (then nothing could tell it apart, and its longest run is reported).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from ivr.media.prompts import Prompt

__all__ = ["HeardPrompt", "PromptIndex", "identify_prompts"]


class HeardPrompt(NamedTuple):
    """One prompt heard: ``start`` is the index of its first matched frame in the received sequence,
    ``frames_matched`` how many received frames belonged to it, ``complete`` whether it was heard to its end
    (allowing for up to ``max_gap`` lost frames at a time, at either end too)."""

    name: str
    start: int
    frames_matched: int
    complete: bool


MAX_START_PLACES = 8


class PromptIndex:
    """Every frame of ``prompts`` in ``codec``, by its bytes."""

    def __init__(self, prompts: Mapping[str, Prompt], codec: str = "PCMU") -> None:
        self.frames: dict[str, tuple[bytes, ...]] = {name: prompt.frames(codec) for name, prompt in prompts.items()}
        self.where: dict[bytes, list[tuple[str, int]]] = {}
        for name, frames in self.frames.items():
            for position, frame in enumerate(frames):
                self.where.setdefault(frame, []).append((name, position))
        self._owners: dict[bytes, frozenset[str]] = {
            frame: frozenset(name for name, _ in places) for frame, places in self.where.items()
        }
        # A run starts only at a frame few prompts share: silence (padding, pauses) occurs in nearly every prompt,
        # and following each of them from every silent frame received would cost more than all the rest.
        self.starts: dict[bytes, list[tuple[str, int]]] = {
            frame: places for frame, places in self.where.items() if len(places) <= MAX_START_PLACES
        }
        self.has_own_frame: dict[str, bool] = {name: False for name in self.frames}
        for owners in self._owners.values():
            if len(owners) == 1:
                (only,) = owners
                self.has_own_frame[only] = True

    def owned_by(self, frame: bytes, name: str) -> bool:
        """Whether ``frame`` occurs in prompt ``name`` and in no other prompt."""
        return self._owners.get(frame) == frozenset((name,))


class _Run(NamedTuple):
    name: str
    first: int  # position in the prompt of the first matched frame
    last: int  # position in the prompt of the last matched frame
    matched: int  # received frames consumed
    distinct: bool  # some matched frame belongs to this prompt only


def _follow(index: PromptIndex, received: Sequence[bytes], start: int, name: str, position: int, max_gap: int) -> _Run:
    frames = index.frames[name]
    expected = position + 1
    matched = 1
    distinct = index.owned_by(received[start], name)
    i = start + 1
    while i < len(received) and expected < len(frames):
        frame = received[i]
        step = next(
            (s for s in range(max_gap + 1) if expected + s < len(frames) and frames[expected + s] == frame), None
        )
        if step is None:
            break
        expected += step + 1
        matched += 1
        distinct = distinct or index.owned_by(frame, name)
        i += 1
    return _Run(name, position, expected - 1, matched, distinct)


def identify_prompts(
    received: Sequence[bytes],
    prompts: Mapping[str, Prompt] | PromptIndex,
    codec: str = "PCMU",
    *,
    max_gap: int = 2,
) -> list[HeardPrompt]:
    """The prompts heard in ``received`` (the payloads of the audio packets, in order), in the order heard.

    ``prompts`` maps names to prompts (or is a :class:`PromptIndex` built once for many calls); ``codec`` is the
    call's codec. ``max_gap`` is the number of consecutive lost frames a run survives."""
    if max_gap < 0:
        raise ValueError("max_gap must not be negative")
    index = prompts if isinstance(prompts, PromptIndex) else PromptIndex(prompts, codec)
    heard: list[HeardPrompt] = []
    i = 0
    floor = 0  # frames before this belong to a prompt already reported
    while i < len(received):
        places = index.starts.get(received[i])
        if not places:
            i += 1
            continue
        best: _Run | None = None
        for name, position in places:
            run = _follow(index, received, i, name, position, max_gap)
            if not run.distinct and index.has_own_frame[name]:
                continue
            if best is None or run.matched > best.matched or (run.matched == best.matched and run.first < best.first):
                best = run
        if best is None:
            i += 1
            continue
        # The run began at a distinctive frame; the prompt's own start (often silence) may come before it.
        frames = index.frames[best.name]
        back = 0
        while best.first - back > 0 and i - back > floor and received[i - back - 1] == frames[best.first - back - 1]:
            back += 1
        first, start, matched = best.first - back, i - back, best.matched + back
        total = len(frames)
        complete = first <= max_gap and best.last >= total - 1 - max_gap
        heard.append(HeardPrompt(best.name, start, matched, complete))
        i = start + matched
        floor = i
    return heard
