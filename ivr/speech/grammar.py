"""Grammars built from a menu's options: canonical keyword -> the phrases a caller may say for it, in one language.

A ``Grammar`` is an immutable value (hashable, so engines cache compiled decoders by it). Phrases are normalised
(lower case, single spaces, punctuation dropped) for matching; ``keyword_for`` maps a recognised text back to its
keyword. ``to_jsgf`` renders a JSGF grammar for pocketsphinx, ``words`` lists the vocabulary for Vosk.

Digit strings are a grammar too (``Grammar.digits``): the recogniser returns "four seven one one" and
``digits_from_text`` turns it into "4711".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["DIGIT_WORDS_EN", "Grammar", "GrammarError", "digits_from_text", "normalize"]

DIGIT_WORDS_EN: Final[tuple[str, ...]] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)
_DIGIT_ALIASES: Final[dict[str, str]] = {"oh": "0"}

_SPACES = re.compile(r"\s+")


class GrammarError(ValueError):
    """A grammar that cannot be used: empty, a phrase under two keywords, or a word the engine cannot say."""


def normalize(text: str) -> str:
    """Lower case (Unicode-aware, so Cyrillic works), letters/digits/apostrophes/hyphens kept, single spaces."""
    text = unicodedata.normalize("NFC", text).casefold()
    kept = "".join(ch if (ch.isalnum() or ch in "'-") else " " for ch in text)
    return _SPACES.sub(" ", kept).strip()


@dataclass(frozen=True, slots=True)
class Grammar:
    """What a menu accepts by voice: ``options`` maps each canonical keyword to its phrases (the keyword itself is
    not implied: list it if it may be said). ``digits`` adds (or, with no options, is) a digit-string grammar of
    ``min_digits``..``max_digits`` spoken digits. ``language`` is a BCP 47 tag such as "en" or "bg"."""

    options: tuple[tuple[str, tuple[str, ...]], ...]
    language: str = "en"
    digits: bool = False
    min_digits: int = 1
    max_digits: int = 20
    _index: dict[str, str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.options and not self.digits:
            raise GrammarError("a grammar needs at least one keyword or digits")
        if not 1 <= self.min_digits <= self.max_digits:
            raise GrammarError(f"digit range {self.min_digits}..{self.max_digits} is empty")
        index: dict[str, str] = {}
        for keyword, phrases in self.options:
            if not phrases:
                raise GrammarError(f"keyword {keyword!r} has no phrases")
            for phrase in phrases:
                norm = normalize(phrase)
                if not norm:
                    raise GrammarError(f"keyword {keyword!r}: phrase {phrase!r} has no words")
                owner = index.setdefault(norm, keyword)
                if owner != keyword:
                    raise GrammarError(f"phrase {phrase!r} is under both {owner!r} and {keyword!r}")
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_mapping(cls, options: Mapping[str, Iterable[str]], language: str = "en", *, digits: bool = False,
                     min_digits: int = 1, max_digits: int = 20) -> Grammar:
        """``{"billing": ["billing", "invoice"], ...}`` -> Grammar (order kept, phrases de-duplicated)."""
        items = tuple((str(k), tuple(dict.fromkeys(str(p) for p in v))) for k, v in options.items())
        return cls(items, language, digits, min_digits, max_digits)

    @classmethod
    def digit_string(cls, min_digits: int = 1, max_digits: int = 20, language: str = "en") -> Grammar:
        return cls((), language, True, min_digits, max_digits)

    @property
    def keywords(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.options)

    @property
    def phrases(self) -> tuple[str, ...]:
        """Every normalised phrase, in grammar order."""
        return tuple(self._index)

    def words(self) -> list[str]:
        """The vocabulary: every word of every phrase (and the digit words), each once, in first-seen order."""
        seen: dict[str, None] = {}
        for phrase in self._index:
            for word in phrase.split():
                seen.setdefault(word)
        if self.digits:
            for word in DIGIT_WORDS_EN:
                seen.setdefault(word)
        return list(seen)

    def keyword_for(self, text: str) -> str | None:
        """The keyword whose phrase is exactly ``text`` (normalised); for a digit grammar, the digit string.
        ``None`` when the text is not a whole phrase of this grammar."""
        norm = normalize(text)
        if not norm:
            return None
        found = self._index.get(norm)
        if found is not None:
            return found
        if self.digits:
            digits = digits_from_text(norm)
            if digits is not None and self.min_digits <= len(digits) <= self.max_digits:
                return digits
        return None

    def to_jsgf(self, name: str = "menu") -> str:
        """JSGF text: one public rule with the phrases (and/or a loop of digit words) as alternatives.

        (A garbage loop of one pseudo-word per phone, as an alternative for rejection, was measured: it decoded at
        2.5x real time, far too slow; rejection uses the acoustic score instead, see pocketsphinx_engine.)"""
        alternatives: list[str] = list(self._index)  # normalised: no JSGF operators can be left in them
        rules: list[str] = []
        if self.digits:
            rules.append("<digit> = " + " | ".join(DIGIT_WORDS_EN) + " ;")
            alternatives.append("<digit>+")
        body = "( " + " | ".join(alternatives) + " )"
        lines = ["#JSGF V1.0;", f"grammar {name};", f"public <{name}> = {body} ;", *rules]
        return "\n".join(lines) + "\n"


def digits_from_text(text: str) -> str | None:
    """"four seven one one" -> "4711"; ``None`` if any word is not a digit word."""
    out: list[str] = []
    for word in normalize(text).split():
        if word in _DIGIT_ALIASES:
            out.append(_DIGIT_ALIASES[word])
        elif word in DIGIT_WORDS_EN:
            out.append(str(DIGIT_WORDS_EN.index(word)))
        elif word.isdigit():
            out.append(word)
        else:
            return None
    return "".join(out) or None
