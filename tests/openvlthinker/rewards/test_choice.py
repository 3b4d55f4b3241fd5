"""Multiple-choice grading: letters in many spellings, option texts, and text references."""

from __future__ import annotations

import pytest

from openvlthinker.rewards import multiple_choice_accuracy
from openvlthinker.rewards.choice import parse_options

YES_NO = ("A. Yes", "B. No")


@pytest.mark.parametrize(
    "pred",
    ["B", "b", "(B)", "(b)", "B.", "B)", "[B]", "B. No", "B: No", "(B) No", "Option B", "option b",
     "The answer is B", "No", "no", "  NO. ", "\"No\""],
)
def test_accepts_every_spelling_of_the_right_option(rec, pred):
    assert multiple_choice_accuracy(pred, rec("multiple choice", "B", YES_NO)) == 1.0


@pytest.mark.parametrize("pred", ["A", "a", "(A)", "A. Yes", "Yes", "C", "Nope", "", "B or A", "B" * 5000])
def test_rejects_other_options_and_garbage(rec, pred):
    assert multiple_choice_accuracy(pred, rec("multiple choice", "B", YES_NO)) == 0.0


def test_reference_given_as_option_text(rec):
    record = rec("multiple choice", "No", YES_NO)
    assert multiple_choice_accuracy("B", record) == 1.0
    assert multiple_choice_accuracy("no", record) == 1.0
    assert multiple_choice_accuracy("A", record) == 0.0


def test_reference_text_not_among_options_is_compared_as_text(rec):
    record = rec("multiple choice", "Maybe", YES_NO)
    assert multiple_choice_accuracy("maybe.", record) == 1.0
    assert multiple_choice_accuracy("A", record) == 0.0


def test_single_letter_option_texts(rec):
    # From the sample: options are letters themselves; the exact-case text wins over a letter.
    record = rec("multiple choice", "C", ("A. b", "B. l", "C. r", "D. i"))
    for pred in ("C", "c", "(C)", "r", "C. r"):
        assert multiple_choice_accuracy(pred, record) == 1.0, pred
    for pred in ("b", "B", "A"):
        assert multiple_choice_accuracy(pred, record) == 0.0, pred


def test_no_options_compares_letters(rec):
    record = rec("multiple choice", "B")
    assert multiple_choice_accuracy("(b)", record) == 1.0
    assert multiple_choice_accuracy("C", record) == 0.0


def test_parse_options_styles():
    assert parse_options(("A) x y", "B) The weight", "-")) == {"A": "x y", "B": "The weight"}
    assert parse_options(("(A) one", "(B) two")) == {"A": "one", "B": "two"}
    assert parse_options(("Yes", "No")) == {"A": "Yes", "B": "No"}
    assert parse_options(()) == {}


def test_letter_outside_the_options_is_not_a_letter(rec):
    record = rec("multiple choice", "B", YES_NO)
    assert multiple_choice_accuracy("E", record) == 0.0
