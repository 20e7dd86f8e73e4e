"""The collect timer rules of docs/flows.md, driven with explicit times (no clock)."""

from __future__ import annotations

import math

from ivr.flows.collector import DigitCollector
from ivr.flows.model import CollectNode

ACCOUNT = CollectNode.model_validate(
    {"type": "collect", "prompt": "p", "into": "account", "next": "x", "min_digits": 6, "max_digits": 10,
     "first_digit": "7s", "inter_digit": "4s", "total": "30s"}
)  # fmt: skip


def test_no_key_before_first_digit_is_no_input() -> None:
    c = DigitCollector(ACCOUNT)
    assert c.deadline() == math.inf  # the prompt is still playing
    c.prompt_ended(10.0)
    assert c.deadline() == 17.0
    assert c.expire(16.9) is None
    outcome = c.expire(17.0)
    assert outcome is not None and (outcome.kind, outcome.ended_by) == ("no_input", "first_digit")


def test_terminator_ends_the_entry_and_is_not_stored() -> None:
    c = DigitCollector(ACCOUNT)
    c.prompt_ended(0.0)
    for t, key in enumerate("1234567"):
        assert c.press(key, float(t)) is None
    outcome = c.press("#", 7.5)
    assert outcome is not None and (outcome.kind, outcome.digits, outcome.ended_by) == (
        "entry",
        "1234567",
        "terminator",
    )


def test_max_digits_ends_the_entry_at_once() -> None:
    c = DigitCollector(ACCOUNT)
    c.prompt_ended(0.0)
    outcomes = [c.press(k, 1.0 + i) for i, k in enumerate("0123456789")]
    assert outcomes[:-1] == [None] * 9
    assert outcomes[-1] is not None and outcomes[-1].ended_by == "max_digits"


def test_inter_digit_pause_ends_the_entry_and_partial_input_is_judged_not_discarded() -> None:
    c = DigitCollector(ACCOUNT)
    c.prompt_ended(0.0)
    c.press("1", 2.0)
    c.press("2", 3.0)
    assert c.deadline() == 7.0  # 3.0 + inter_digit
    outcome = c.expire(7.0)
    assert outcome is not None
    assert (outcome.kind, outcome.digits, outcome.ended_by) == ("no_match", "12", "inter_digit")
    assert outcome.problem == "too short: 2 of at least 6 digits"


def test_keys_during_the_prompt_count_barge_in() -> None:
    c = DigitCollector(ACCOUNT)
    c.press("9", 1.0)  # during the prompt
    c.prompt_ended(1.0)  # the key stopped it
    c.press("8", 2.0)
    assert c.digits == "98"
    assert c.deadline() == 6.0


def test_inter_digit_overrides_the_total_while_keys_are_coming_by_one_window_at_most() -> None:
    c = DigitCollector(ACCOUNT)
    c.prompt_ended(0.0)
    times = [3.0, 6.5, 10.0, 13.5, 17.0, 20.5, 24.0, 27.5]  # a slow typist: 3.5 s between keys
    for t, key in zip(times, "12345678", strict=True):
        assert c.press(key, t) is None
    assert c.deadline() == 31.5  # past the 30 s total: the caller is not cut off mid-number
    assert c.press("9", 31.0) is None  # still counts
    assert c.deadline() == 34.0  # but never later than total + inter_digit
    outcome = c.expire(34.0)
    assert outcome is not None and (outcome.kind, outcome.digits, outcome.ended_by) == ("entry", "123456789", "total")


def test_total_shorter_than_first_digit_decides_the_no_input() -> None:
    node = ACCOUNT.model_copy(update={"total": 5.0})
    c = DigitCollector(node)
    c.prompt_ended(0.0)
    assert c.deadline() == 5.0
    outcome = c.expire(5.0)
    assert outcome is not None and (outcome.kind, outcome.ended_by) == ("no_input", "total")


def test_terminator_alone_is_a_no_match_and_sensitive_digits_are_masked() -> None:
    c = DigitCollector(ACCOUNT)
    c.prompt_ended(0.0)
    outcome = c.press("#", 1.0)
    assert outcome is not None and outcome.kind == "no_match"
    c = DigitCollector(ACCOUNT)
    c.prompt_ended(0.0)
    for i, key in enumerate("7501020018"):
        c.press(key, float(i))
    assert c.outcome is not None and c.outcome.shown(sensitive=True) == "xxxxxxxxxx"
    assert c.press("1", 20.0) is c.outcome  # finished: later keys change nothing
