"""Grammars from menu options: synonyms map to one keyword, text is normalised, conflicts are refused."""

from __future__ import annotations

import pytest

from ivr.speech.grammar import Grammar, GrammarError, digits_from_text, normalize

MAIN_MENU = {
    "billing": ["billing", "bill", "invoice", "payment"],
    "support": ["technical support", "support", "internet", "outage"],
    "operator": ["operator", "agent", "person"],
}


def test_synonyms_map_to_their_canonical_keyword() -> None:
    g = Grammar.from_mapping(MAIN_MENU)
    assert g.keyword_for("invoice") == "billing"
    assert g.keyword_for("Technical  Support!") == "support"
    assert g.keyword_for("agent") == "operator"


def test_text_that_is_not_a_whole_phrase_is_no_match() -> None:
    g = Grammar.from_mapping(MAIN_MENU)
    assert g.keyword_for("technical") is None
    assert g.keyword_for("billing please") is None
    assert g.keyword_for("") is None


def test_cyrillic_phrases_are_normalised_case_insensitively() -> None:
    g = Grammar.from_mapping({"billing": ["Сметка", "фактура"]}, language="bg")
    assert normalize("  СМЕТКА, ") == "сметка"
    assert g.keyword_for("сметка") == "billing"
    assert g.words() == ["сметка", "фактура"]


def test_phrase_under_two_keywords_is_refused() -> None:
    with pytest.raises(GrammarError, match="both 'a' and 'b'"):
        Grammar.from_mapping({"a": ["yes"], "b": ["Yes"]})


def test_empty_grammar_and_empty_phrases_are_refused() -> None:
    with pytest.raises(GrammarError):
        Grammar.from_mapping({})
    with pytest.raises(GrammarError, match="no words"):
        Grammar.from_mapping({"a": ["..."]})


def test_jsgf_lists_every_phrase_as_an_alternative() -> None:
    jsgf = Grammar.from_mapping(MAIN_MENU).to_jsgf("menu")
    assert jsgf.startswith("#JSGF V1.0;\ngrammar menu;\n")
    assert "public <menu> = ( billing | bill | invoice | payment | technical support |" in jsgf


def test_jsgf_operators_in_phrases_never_reach_the_grammar_text() -> None:
    jsgf = Grammar.from_mapping({"a": ["yes|no;<x>"]}).to_jsgf("menu")
    assert "public <menu> = ( yes no x ) ;" in jsgf


def test_digit_grammar_returns_the_digit_string_within_its_length_range() -> None:
    g = Grammar.digit_string(4, 6)
    assert g.keyword_for("four seven one one") == "4711"
    assert g.keyword_for("four seven one") is None  # too short
    assert g.keyword_for("four seven one one two three four") is None  # too long
    assert "<digit>+" in g.to_jsgf()
    assert digits_from_text("oh nine") == "09"
    assert digits_from_text("nine lives") is None


def test_grammars_are_hashable_values() -> None:
    assert Grammar.from_mapping(MAIN_MENU) == Grammar.from_mapping(MAIN_MENU)
    assert len({Grammar.from_mapping(MAIN_MENU), Grammar.from_mapping(MAIN_MENU)}) == 1
