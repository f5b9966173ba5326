import math

import pytest

from memgym.scoring import (
    bleu1,
    exact_match,
    extract_answer,
    normalize_answer,
    surface_span,
    token_f1,
)


def test_normalize_and_em():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert exact_match("an apple.", "Apple") == 1.0
    assert exact_match("apples", "apple") == 0.0


def test_token_f1_hand_values():
    # pred tokens: cat sat mat ; gold: cat on mat → common 2, P=2/3, R=2/3
    assert token_f1("the cat sat mat", "cat on the mat") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    assert token_f1("dog", "cat") == 0.0


def test_bleu1_hand_values():
    # pred 2 tokens, gold 3: clipped precision 1, BP = exp(1 - 3/2)
    assert bleu1("cat mat", "cat on mat") == pytest.approx(math.exp(-0.5))
    assert bleu1("cat cat cat", "cat") == pytest.approx(1 / 3)


def test_surface_span_copies_the_alias_as_the_passage_writes_it():
    assert surface_span(["usa", "United States"], "Doc 1 (Title: x)\nthe UNITED STATES army") == \
        "UNITED STATES"
    assert surface_span(["Paris"], "Comparison of parish sizes") is None  # whole words only


def test_extract_answer_picks_a_span_by_question_word():
    passage = "The Eiffel Tower was built by Gustave Eiffel in Paris from 1887 to March 31, 1889."
    assert extract_answer("when was the eiffel tower finished", "T", passage) == "1887"
    assert extract_answer("who built the Eiffel Tower", "T", passage) == "Gustave Eiffel"
    assert extract_answer("how many towers", "T", "It has 3 floors and 2 towers.") == "3"
    assert extract_answer("where is it", "A; B|C", "nothing capitalized here") == "A, B/C"
