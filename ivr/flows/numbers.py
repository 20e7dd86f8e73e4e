"""Spoken numbers: numbers, digit strings, amounts and dates as word sequences in Bulgarian and English.

Each function returns a list of words; the engine plays one short prompt per word (recorded, or synthesised once
from :func:`vocabulary`), so "125" costs three prompts, not a recording per number. Bulgarian agrees in gender with
what is counted: един лев / една стотинка / едно евро, два лева / две стотинки, хиляда / две хиляди,
един милион / два милиона. English follows British usage: "one hundred and five".

Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Final, Literal

__all__ = [
    "LANGUAGES",
    "Currency",
    "Gender",
    "SayAs",
    "amount_words",
    "date_words",
    "digit_words",
    "number_words",
    "ordinal_words",
    "say",
    "vocabulary",
]

Gender = Literal["m", "f", "n"]
Currency = Literal["BGN", "EUR"]
SayAs = Literal["number", "digits", "amount", "date", "ordinal"]
LANGUAGES: Final = frozenset({"bg", "en"})
MAX_NUMBER: Final = 10**12 - 1

# ---- Bulgarian --------------------------------------------------------------------------------------------------

_BG_ONE: Final = {"m": "един", "f": "една", "n": "едно"}
_BG_TWO: Final = {"m": "два", "f": "две", "n": "две"}
_BG_UNITS: Final = ("нула", "", "", "три", "четири", "пет", "шест", "седем", "осем", "девет")
_BG_TEENS: Final = (
    "десет", "единадесет", "дванадесет", "тринадесет", "четиринадесет",
    "петнадесет", "шестнадесет", "седемнадесет", "осемнадесет", "деветнадесет",
)  # fmt: skip
_BG_TENS: Final = ("", "", "двадесет", "тридесет", "четиридесет", "петдесет", "шестдесет", "седемдесет",
                   "осемдесет", "деветдесет")  # fmt: skip
_BG_HUNDREDS: Final = ("", "сто", "двеста", "триста", "четиристотин", "петстотин", "шестстотин", "седемстотин",
                       "осемстотин", "деветстотин")  # fmt: skip
# (ordinal masculine, ordinal feminine) for the last component of an ordinal
_BG_ORD_UNITS: Final = (
    ("", ""), ("първи", "първа"), ("втори", "втора"), ("трети", "трета"), ("четвърти", "четвърта"),
    ("пети", "пета"), ("шести", "шеста"), ("седми", "седма"), ("осми", "осма"), ("девети", "девета"),
)  # fmt: skip
_BG_ORD_HUNDREDS: Final = ("", "стот", "двестот", "тристот", "четиристот", "петстот", "шестстот", "седемстот",
                           "осемстот", "деветстот")  # fmt: skip
_BG_MONTHS: Final = ("януари", "февруари", "март", "април", "май", "юни", "юли", "август", "септември", "октомври",
                     "ноември", "декември")  # fmt: skip
_BG_KEYS: Final = {"*": "звезда", "#": "диез"}

# ---- English ----------------------------------------------------------------------------------------------------

_EN_UNITS: Final = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_EN_TEENS: Final = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
                    "eighteen", "nineteen")  # fmt: skip
_EN_TENS: Final = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_EN_ORD: Final = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
    "twelve": "twelfth",
}  # fmt: skip
_EN_MONTHS: Final = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                     "October", "November", "December")  # fmt: skip
_EN_KEYS: Final = {"*": "star", "#": "hash"}
_SCALES: Final = ((10**9, "billion"), (10**6, "million"), (10**3, "thousand"))


def _check_language(language: str) -> str:
    lang = language.lower().split("-")[0]
    if lang not in LANGUAGES:
        raise ValueError(f"numbers can be spoken in {', '.join(sorted(LANGUAGES))}, not {language!r}")
    return lang


def _check_int(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    if abs(value) > MAX_NUMBER:
        raise ValueError(f"{value} is too large to speak (up to {MAX_NUMBER})")
    return value


# ---- Bulgarian cardinals ----------------------------------------------------------------------------------------


def _bg_triad(n: int, gender: Gender) -> list[list[str]]:
    """Components of 1..999 (each a list of words), without the conjunction: 125 -> [[сто], [двадесет], [пет]]."""
    parts: list[list[str]] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        parts.append([_BG_HUNDREDS[hundreds]])
    if 10 <= rest < 20:
        parts.append([_BG_TEENS[rest - 10]])
    else:
        tens, units = divmod(rest, 10)
        if tens:
            parts.append([_BG_TENS[tens]])
        if units == 1:
            parts.append([_BG_ONE[gender]])
        elif units == 2:
            parts.append([_BG_TWO[gender]])
        elif units:
            parts.append([_BG_UNITS[units]])
    return parts


def _bg_join(parts: list[list[str]]) -> list[str]:
    """Bulgarian puts "и" before the last component: сто двадесет и пет, сто и пет."""
    words: list[str] = []
    for i, part in enumerate(parts):
        if i == len(parts) - 1 and i > 0:
            words.append("и")
        words.extend(part)
    return words


def _bg_groups(n: int, gender: Gender) -> list[list[str]]:
    """Words of 1..MAX_NUMBER by scale: 2_300_125 -> [[два, милиона], [триста, хиляди], [сто, двадесет, и, пет]]."""
    groups: list[list[str]] = []
    for scale, one, many, scale_gender in (
        (10**9, "милиард", "милиарда", "m"),
        (10**6, "милион", "милиона", "m"),
        (10**3, "хиляда", "хиляди", "f"),
    ):
        count, n = divmod(n, scale)
        if not count:
            continue
        if count == 1:
            groups.append(["хиляда"] if scale == 1000 else [_BG_ONE["m"], one])
        else:
            groups.append([*_bg_join(_bg_triad(count, scale_gender)), many])  # type: ignore[arg-type]
    if n:
        groups.append(_bg_join(_bg_triad(n, gender)))
    return groups


def _bg_number(n: int, gender: Gender) -> list[str]:
    if n == 0:
        return ["нула"]
    groups = _bg_groups(n, gender)
    words: list[str] = []
    for i, group in enumerate(groups):
        # Between scale groups "и" stands before the last group when that group has no "и" of its own:
        # хиляда и сто, два милиона и триста хиляди, but хиляда сто двадесет и пет.
        if i == len(groups) - 1 and i > 0 and "и" not in group:
            words.append("и")
        words.extend(group)
    return words


# ---- English cardinals ------------------------------------------------------------------------------------------


def _en_below_100(n: int) -> list[str]:
    if n < 10:
        return [_EN_UNITS[n]]
    if n < 20:
        return [_EN_TEENS[n - 10]]
    tens, units = divmod(n, 10)
    return [_EN_TENS[tens]] + ([_EN_UNITS[units]] if units else [])


def _en_triad(n: int) -> list[str]:
    hundreds, rest = divmod(n, 100)
    words: list[str] = []
    if hundreds:
        words += [_EN_UNITS[hundreds], "hundred"]
        if rest:
            words.append("and")
    if rest:
        words += _en_below_100(rest)
    return words


def _en_number(n: int) -> list[str]:
    if n == 0:
        return ["zero"]
    words: list[str] = []
    for scale, name in _SCALES:
        count, n = divmod(n, scale)
        if count:
            words += [*_en_triad(count), name]
    if n:
        if words and n < 100:
            words.append("and")  # one thousand and five
        words += _en_triad(n)
    return words


# ---- public -----------------------------------------------------------------------------------------------------


def number_words(value: int, language: str, *, gender: Gender = "n") -> list[str]:
    """A whole number as words. ``gender`` is what the number counts, in Bulgarian (``"n"``, neuter, is the form used
    for plain counting: едно, две); English ignores it. Negative numbers start with "minus"/"минус".

    >>> number_words(1125, "bg")
    ['хиляда', 'сто', 'двадесет', 'и', 'пет']
    >>> number_words(105, "en")
    ['one', 'hundred', 'and', 'five']
    """
    lang = _check_language(language)
    n = _check_int(value)
    prefix = (["минус"] if lang == "bg" else ["minus"]) if n < 0 else []
    words = _bg_number(abs(n), gender) if lang == "bg" else _en_number(abs(n))
    return prefix + words


def _bg_ordinal(n: int, gender: Literal["m", "f"]) -> list[str]:
    """Bulgarian ordinal 1..9999: the last component becomes ordinal (двадесет и първи, две хиляди двадесет и седма)."""
    idx = 0 if gender == "m" else 1
    if n % 1000 == 0 and 1 <= n // 1000 <= 9:
        count = n // 1000
        stem = {1: "", 2: "две", 3: "три", 4: "четири", 5: "пет", 6: "шест", 7: "седем", 8: "осем", 9: "девет"}[count]
        return [stem + ("хиляден" if gender == "m" else "хилядна")]
    head = n - n % 1000
    rest = n % 1000
    head_words = _bg_number(head, "n") if head else []
    hundreds, below = divmod(rest, 100)
    parts: list[list[str]] = []
    if below == 0:
        parts.append([_BG_ORD_HUNDREDS[hundreds] + ("ен" if gender == "m" else "на")])
    else:
        if hundreds:
            parts.append([_BG_HUNDREDS[hundreds]])
        if 10 <= below < 20:
            word = _BG_TEENS[below - 10]
            parts.append([word + ("и" if gender == "m" else "а")])
        else:
            tens, units = divmod(below, 10)
            if units:
                if tens:
                    parts.append([_BG_TENS[tens]])
                parts.append([_BG_ORD_UNITS[units][idx]])
            else:
                parts.append([_BG_TENS[tens] + ("и" if gender == "m" else "а")])
    words = _bg_join(parts)
    if head_words:
        # хиляда и сто, две хиляди и първа, but две хиляди двадесет и седма
        return head_words + (["и"] if len(parts) == 1 else []) + words
    return words


def _en_ordinal(n: int) -> list[str]:
    words = _en_number(n)
    last = words[-1]
    if last in _EN_ORD:
        words[-1] = _EN_ORD[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return words


def ordinal_words(value: int, language: str, *, gender: Gender = "m") -> list[str]:
    """An ordinal 1..9999: "twenty first" / "двадесет и първи" (Bulgarian ``gender`` "m" or "f"; "n" speaks "m")."""
    lang = _check_language(language)
    n = _check_int(value)
    if not 1 <= n <= 9999:
        raise ValueError(f"ordinals are spoken for 1..9999, not {n}")
    if lang == "en":
        return _en_ordinal(n)
    return _bg_ordinal(n, "f" if gender == "f" else "m")


def digit_words(digits: str, language: str) -> list[str]:
    """A digit string one key at a time: "0888" -> zero eight eight eight / нула осем осем осем.
    Spaces, dashes, dots and brackets are skipped; "+" is spoken as "plus"/"плюс"; * and # by name."""
    lang = _check_language(language)
    words: list[str] = []
    for ch in str(digits):
        if ch.isdigit() and ch.isascii():
            d = int(ch)
            if lang == "en":
                words.append(_EN_UNITS[d])
            else:
                words.append(_BG_ONE["n"] if d == 1 else _BG_TWO["n"] if d == 2 else _BG_UNITS[d])
        elif ch in "*#":
            words.append((_EN_KEYS if lang == "en" else _BG_KEYS)[ch])
        elif ch == "+":
            words.append("plus" if lang == "en" else "плюс")
        elif ch in " -.()/":
            continue
        else:
            raise ValueError(f"{digits!r}: {ch!r} is not a digit or key")
    return words


def _to_decimal(value: Decimal | int | float | str) -> Decimal:
    if isinstance(value, bool):
        raise TypeError("expected an amount, got a bool")
    try:
        amount = Decimal(str(value).strip().replace(",", ".")) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ValueError(f"{value!r} is not an amount; write e.g. 12.50") from None
    if not amount.is_finite():
        raise ValueError(f"{value!r} is not an amount")
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _bg_count(n: int, one: str, many: str, gender: Gender) -> list[str]:
    return [*_bg_number(n, gender), one if n == 1 else many]


def amount_words(value: Decimal | int | float | str, language: str, *, currency: Currency = "EUR") -> list[str]:
    """A money amount: 12.50 BGN -> дванадесет лева и петдесет стотинки / twelve leva and fifty stotinki;
    1.01 EUR -> едно евро и един цент / one euro and one cent. Rounded to cents; zero major units are left out
    when there are minor units (0.50 -> петдесет стотинки)."""
    lang = _check_language(language)
    amount = _to_decimal(value)
    prefix = (["минус"] if lang == "bg" else ["minus"]) if amount < 0 else []
    amount = abs(amount)
    major = int(amount)
    minor = int((amount - major) * 100)
    _check_int(major)
    words: list[str] = []
    if lang == "bg":
        if currency == "BGN":
            major_words = _bg_count(major, "лев", "лева", "m")
            minor_words = _bg_count(minor, "стотинка", "стотинки", "f")
        else:
            major_words = _bg_count(major, "евро", "евро", "n")
            minor_words = _bg_count(minor, "цент", "цента", "m")
        conj = "и"
    else:
        if currency == "BGN":
            major_words = [*_en_number(major), "lev" if major == 1 else "leva"]
            minor_words = [*_en_number(minor), "stotinka" if minor == 1 else "stotinki"]
        else:
            major_words = [*_en_number(major), "euro" if major == 1 else "euros"]
            minor_words = [*_en_number(minor), "cent" if minor == 1 else "cents"]
        conj = "and"
    if major or not minor:
        words += major_words
    if minor:
        if major:
            words.append(conj)
        words += minor_words
    return prefix + words


def _en_year(year: int) -> list[str]:
    if 2000 <= year <= 2009 or year % 1000 == 0 or not 1100 <= year <= 2999:
        return _en_number(year)
    century, rest = divmod(year, 100)
    if rest == 0:
        return [*_en_below_100(century), "hundred"]
    if rest < 10:
        return [*_en_below_100(century), "oh", _EN_UNITS[rest]]
    return _en_below_100(century) + _en_below_100(rest)


def date_words(value: dt.date | str, language: str, *, year: bool = True) -> list[str]:
    """A date: 2027-03-03 -> трети март две хиляди двадесет и седма година / the third of March twenty twenty seven.
    ``value`` is a date or an ISO ``YYYY-MM-DD`` string; ``year=False`` leaves the year out."""
    lang = _check_language(language)
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a date; write YYYY-MM-DD") from None
    if isinstance(value, dt.datetime):
        value = value.date()
    if lang == "bg":
        words = [*_bg_ordinal(value.day, "m"), _BG_MONTHS[value.month - 1]]
        if year:
            words += [*_bg_ordinal(value.year, "f"), "година"]
        return words
    words = ["the", *_en_ordinal(value.day), "of", _EN_MONTHS[value.month - 1]]
    if year:
        words += _en_year(value.year)
    return words


def say(value: object, how: SayAs, language: str, *, gender: Gender | None = None,
        currency: Currency = "EUR") -> list[str]:  # fmt: skip
    """What a flow's ``{say: ..., as: ...}`` item speaks: ``value`` (already rendered, usually text) as ``how``."""
    if how == "digits":
        return digit_words(str(value), language)
    if how == "amount":
        return amount_words(value if isinstance(value, (Decimal, int, float, str)) else str(value), language,
                            currency=currency)  # fmt: skip
    if how == "date":
        return date_words(value if isinstance(value, dt.date) else str(value), language)
    text = str(value).strip()
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if how == "ordinal":
        return ordinal_words(n, language, gender=gender or "m")
    return number_words(n, language, gender=gender or "n")


def vocabulary(language: str) -> frozenset[str]:
    """Every word the functions here can return for ``language``: the prompts to record or synthesise once."""
    lang = _check_language(language)
    words: set[str] = set()
    samples = [*range(0, 1000), 1001, 2000, 10**6, 2 * 10**6, 10**9, 2 * 10**9, -1]
    genders: tuple[Gender, ...] = ("m", "f", "n")
    currencies: tuple[Currency, ...] = ("BGN", "EUR")
    for n in samples:
        for gender in genders:
            words.update(number_words(n, lang, gender=gender))
    for n in [*range(1, 1000), 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 2100, 1900]:
        for gender in genders[:2]:
            words.update(ordinal_words(n, lang, gender=gender))
    words.update(digit_words("0123456789*#+", lang))
    for currency in currencies:
        for amount in ("1.01", "2.02", "0.00"):
            words.update(amount_words(amount, lang, currency=currency))
    for month in range(1, 13):
        words.update(date_words(dt.date(2000, month, 1), lang))
    for year in (1900, 1905, 1999, 2000, 2005, 2027, 2100):
        words.update(date_words(dt.date(year, 1, 1), lang))
    return frozenset(words)
