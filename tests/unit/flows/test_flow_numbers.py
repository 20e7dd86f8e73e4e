"""Spoken numbers in Bulgarian (gender, "и", хиляда/хиляди) and English (British "and")."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr.flows.numbers import (
    MAX_NUMBER,
    amount_words,
    date_words,
    digit_words,
    number_words,
    ordinal_words,
    say,
    vocabulary,
)


def bg(n: int, gender: str = "n") -> str:
    return " ".join(number_words(n, "bg", gender=gender))  # type: ignore[arg-type]


def en(n: int) -> str:
    return " ".join(number_words(n, "en"))


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "нула"),
        (1, "едно"),
        (2, "две"),
        (11, "единадесет"),
        (20, "двадесет"),
        (21, "двадесет и едно"),
        (100, "сто"),
        (105, "сто и пет"),
        (120, "сто и двадесет"),
        (125, "сто двадесет и пет"),
        (200, "двеста"),
        (999, "деветстотин деветдесет и девет"),
        (1000, "хиляда"),
        (1001, "хиляда и едно"),
        (1100, "хиляда и сто"),
        (1125, "хиляда сто двадесет и пет"),
        (2000, "две хиляди"),
        (2021, "две хиляди двадесет и едно"),
        (21000, "двадесет и една хиляди"),
        (1_000_000, "един милион"),
        (2_000_000, "два милиона"),
        (2_300_000, "два милиона и триста хиляди"),
        (1_250_300, "един милион двеста и петдесет хиляди и триста"),
        (3_000_000_000, "три милиарда"),
        (-5, "минус пет"),
    ],
)
def test_bulgarian_cardinals(n: int, words: str) -> None:
    assert bg(n) == words


def test_bulgarian_one_and_two_agree_with_gender() -> None:
    assert (bg(1, "m"), bg(1, "f"), bg(1, "n")) == ("един", "една", "едно")
    assert (bg(2, "m"), bg(2, "f"), bg(2, "n")) == ("два", "две", "две")
    assert bg(22, "m") == "двадесет и два"
    assert bg(1002, "f") == "хиляда и две"


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (13, "thirteen"),
        (21, "twenty one"),
        (105, "one hundred and five"),
        (1005, "one thousand and five"),
        (1100, "one thousand one hundred"),
        (2345, "two thousand three hundred and forty five"),
        (100_005, "one hundred thousand and five"),
        (1_000_001, "one million and one"),
    ],
)
def test_english_cardinals(n: int, words: str) -> None:
    assert en(n) == words


def test_ordinals() -> None:
    assert ordinal_words(3, "bg") == ["трети"]
    assert ordinal_words(21, "bg") == ["двадесет", "и", "първи"]
    assert ordinal_words(2027, "bg", gender="f") == ["две", "хиляди", "двадесет", "и", "седма"]
    assert ordinal_words(2001, "bg", gender="f") == ["две", "хиляди", "и", "първа"]
    assert ordinal_words(2000, "bg", gender="f") == ["двехилядна"]
    assert ordinal_words(1900, "bg", gender="f") == ["хиляда", "и", "деветстотна"]
    assert ordinal_words(22, "en") == ["twenty", "second"]
    assert ordinal_words(12, "en") == ["twelfth"]
    assert ordinal_words(40, "en") == ["fortieth"]


def test_digits_are_spoken_one_by_one() -> None:
    assert digit_words("0888 12-3#", "bg") == ["нула", "осем", "осем", "осем", "едно", "две", "три", "диез"]
    assert digit_words("+359*", "en") == ["plus", "three", "five", "nine", "star"]
    with pytest.raises(ValueError, match="not a digit"):
        digit_words("12a", "en")


def test_amounts_in_leva_and_euro() -> None:
    assert amount_words("12.50", "bg", currency="BGN") == ["дванадесет", "лева", "и", "петдесет", "стотинки"]
    assert amount_words("1.01", "bg", currency="BGN") == ["един", "лев", "и", "една", "стотинка"]
    assert amount_words("2.02", "bg", currency="BGN") == ["два", "лева", "и", "две", "стотинки"]
    assert amount_words("1.01", "bg", currency="EUR") == ["едно", "евро", "и", "един", "цент"]
    assert amount_words(Decimal("2.02"), "bg", currency="EUR") == ["две", "евро", "и", "два", "цента"]
    assert amount_words("21", "bg", currency="BGN") == ["двадесет", "и", "един", "лева"]
    assert amount_words("0.50", "bg", currency="BGN") == ["петдесет", "стотинки"]
    assert amount_words("0", "bg", currency="EUR") == ["нула", "евро"]
    assert amount_words("1,5", "en", currency="EUR") == ["one", "euro", "and", "fifty", "cents"]
    assert amount_words(2, "en", currency="BGN") == ["two", "leva"]
    assert amount_words("0.01", "en", currency="BGN") == ["one", "stotinka"]
    assert amount_words("0.005", "en") == ["one", "cent"]  # rounded half up to cents
    assert amount_words("-3", "en") == ["minus", "three", "euros"]


def test_dates() -> None:
    liberation_day = dt.date(2027, 3, 3)
    assert date_words(liberation_day, "bg") == ["трети", "март", "две", "хиляди", "двадесет", "и", "седма", "година"]
    assert date_words("2027-05-21", "en") == ["the", "twenty", "first", "of", "May", "twenty", "twenty", "seven"]
    assert date_words("2005-01-01", "en", year=False) == ["the", "first", "of", "January"]
    assert date_words(dt.date(2005, 1, 1), "en")[-4:] == ["two", "thousand", "and", "five"]
    assert date_words(dt.date(1905, 1, 1), "en")[-3:] == ["nineteen", "oh", "five"]


def test_say_dispatches_on_how() -> None:
    assert say("42", "number", "en") == ["forty", "two"]
    assert say("0042", "digits", "en") == ["zero", "zero", "four", "two"]
    assert say("3", "ordinal", "bg", gender="f") == ["трета"]
    assert say("1", "number", "bg", gender="m") == ["един"]
    assert say("12.5", "amount", "en", currency="BGN") == ["twelve", "leva", "and", "fifty", "stotinki"]
    with pytest.raises(ValueError, match="not a whole number"):
        say("12.5", "number", "en")


def test_unsupported_language_and_range_are_refused() -> None:
    with pytest.raises(ValueError, match="spoken in bg, en"):
        number_words(1, "de")
    with pytest.raises(ValueError, match="too large"):
        number_words(MAX_NUMBER + 1, "en")
    with pytest.raises(TypeError):
        number_words(True, "en")


@given(st.integers(min_value=-MAX_NUMBER, max_value=MAX_NUMBER), st.sampled_from(["m", "f", "n"]))
def test_every_spoken_word_is_in_the_vocabulary(n: int, gender: str) -> None:
    assert set(number_words(n, "bg", gender=gender)) <= BG_WORDS  # type: ignore[arg-type]
    assert set(number_words(n, "en")) <= EN_WORDS


@given(st.integers(min_value=1, max_value=9999), st.sampled_from(["m", "f"]))
def test_every_ordinal_word_is_in_the_vocabulary(n: int, gender: str) -> None:
    assert set(ordinal_words(n, "bg", gender=gender)) <= BG_WORDS  # type: ignore[arg-type]
    assert set(ordinal_words(n, "en")) <= EN_WORDS


@given(st.integers(min_value=0, max_value=999_999))
def test_bulgarian_has_at_most_one_и_per_scale_group_and_never_two_in_a_row(n: int) -> None:
    words = number_words(n, "bg")
    assert all(not (a == b == "и") for a, b in itertools.pairwise(words))
    assert words[0] != "и" and words[-1] != "и"


BG_WORDS = vocabulary("bg")
EN_WORDS = vocabulary("en")
