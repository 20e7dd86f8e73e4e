"""Digit entries (what a ``collect`` node gathers): the checksums it can demand, judging an entry, and masking
sensitive digits. A single key press is ``ivr.flows.runtime.KeyPressed`` to a flow (and ``ivr.media.digits``'
``DigitEvent`` in the media).

Checksums:
  ``luhn``    payment cards and many account numbers (ISO/IEC 7812).
  ``egn``     the Bulgarian personal number (ЕГН): YYMMDD + 3 digits + a mod-11 check digit with weights
              2,4,8,5,10,9,7,3,6; the month carries the century (+20: 1800s, +40: 2000s) and the date must exist.
  ``bulstat`` the Bulgarian company number (ЕИК/БУЛСТАТ), 9 or 13 digits, mod-11 with a second set of weights when
              the first gives 10.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Final

from ivr.flows.model import CollectNode

__all__ = ["CHECKSUM_FUNCTIONS", "bulstat_valid", "egn_birth_date", "egn_valid", "entry_problem", "luhn_valid", "mask"]

_EGN_WEIGHTS: Final = (2, 4, 8, 5, 10, 9, 7, 3, 6)


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (two or more) pass the Luhn check."""
    if len(digits) < 2 or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def egn_birth_date(egn: str) -> dt.date | None:
    """The birth date an EGN encodes, or None when its first six digits are not a real date."""
    if len(egn) != 10 or not egn.isascii() or not egn.isdigit():
        return None
    year, month, day = int(egn[0:2]), int(egn[2:4]), int(egn[4:6])
    if 1 <= month <= 12:
        year += 1900
    elif 21 <= month <= 32:
        year, month = year + 1800, month - 20
    elif 41 <= month <= 52:
        year, month = year + 2000, month - 40
    else:
        return None
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def egn_valid(egn: str) -> bool:
    """True when ``egn`` is 10 digits with a real birth date and the right check digit."""
    if egn_birth_date(egn) is None:
        return False
    remainder = sum(int(d) * w for d, w in zip(egn[:9], _EGN_WEIGHTS, strict=True)) % 11
    return (0 if remainder == 10 else remainder) == int(egn[9])


def _mod11(digits: str, first: tuple[int, ...], second: tuple[int, ...]) -> int:
    remainder = sum(int(d) * w for d, w in zip(digits, first, strict=True)) % 11
    if remainder == 10:
        remainder = sum(int(d) * w for d, w in zip(digits, second, strict=True)) % 11
        if remainder == 10:
            remainder = 0
    return remainder


def bulstat_valid(number: str) -> bool:
    """True when ``number`` is a valid 9- or 13-digit Bulgarian company number (ЕИК)."""
    if len(number) not in (9, 13) or not number.isascii() or not number.isdigit():
        return False
    if _mod11(number[:8], (1, 2, 3, 4, 5, 6, 7, 8), (3, 4, 5, 6, 7, 8, 9, 10)) != int(number[8]):
        return False
    if len(number) == 9:
        return True
    return _mod11(number[8:12], (2, 7, 3, 5), (4, 9, 5, 7)) == int(number[12])


CHECKSUM_FUNCTIONS: Final[dict[str, Callable[[str], bool]]] = {
    "luhn": luhn_valid,
    "egn": egn_valid,
    "bulstat": bulstat_valid,
}


def entry_problem(node: CollectNode, digits: str) -> str | None:
    """None when ``digits`` (without the terminator) is a valid entry for ``node``; else why not, for the trace
    ("too short: 4 of at least 6 digits"). A rejected entry counts as a no-match."""
    if len(digits) < node.min_digits:
        return f"too short: {len(digits)} of at least {node.min_digits} digits"
    if len(digits) > node.max_digits:
        return f"too long: {len(digits)} of at most {node.max_digits} digits"
    bad = sorted({ch for ch in digits if ch not in node.allowed})
    if bad:
        return f"keys not allowed here: {' '.join(bad)}"
    if node.pattern is not None and re.fullmatch(node.pattern, digits) is None:
        return "does not match the pattern"
    if node.check is not None and not CHECKSUM_FUNCTIONS[node.check](digits):
        return f"fails the {node.check} check"
    return None


def mask(digits: str, sensitive: bool = True) -> str:
    """``digits`` as logs and traces may show them: every key replaced by ``x`` when ``sensitive`` (the length stays
    visible, which is what support needs to debug "too short")."""
    return "x" * len(digits) if sensitive else digits
