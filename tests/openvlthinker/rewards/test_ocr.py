"""OCR grading: 1 − WER, the bit-parallel edit distance against a plain DP, and speed caps."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openvlthinker.rewards import ocr_accuracy, word_edit_distance


def reference_distance(ref: list[str], hyp: list[str]) -> int:
    """Textbook O(n·m) Levenshtein DP, the loop reference for the bit-parallel version."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row = row, [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (r != h))
    return row[-1]


words = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=80)


@settings(max_examples=300, deadline=None)
@given(words, words)
def test_bit_parallel_matches_dp(ref, hyp):
    assert word_edit_distance(ref, hyp) == reference_distance(ref, hyp)


def test_distance_crosses_machine_word_boundaries():
    ref = [str(i % 7) for i in range(150)]
    hyp = ref[:60] + ["x"] + ref[61:130] + ref[131:]
    assert word_edit_distance(ref, hyp) == reference_distance(ref, hyp) == 2


@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [
        ("the cat sat", "the cat sat", 1.0),
        ("The  Cat\nsat", "the cat SAT", 1.0),
        ("the cat sat", "the cat", pytest.approx(2 / 3)),
        ("the cat sat", "the dog sat", pytest.approx(2 / 3)),
        ("the cat sat", "the cat sat down", pytest.approx(2 / 3)),
        ("the cat sat", "", 0.0),
        ("the cat sat", "a b c d e f", 0.0),
        ("the cat sat", "x y z", 0.0),
        ("", "", 1.0),
        ("", "anything", 0.0),
        ("( C )", "( c )", 1.0),
    ],
)
def test_ocr_accuracy(rec, gold, pred, expected):
    assert ocr_accuracy(pred, rec("OCR", gold)) == expected


def test_huge_inputs_stay_fast(rec):
    gold = " ".join(f"w{i % 97}" for i in range(3000))
    record = rec("OCR", gold)
    for pred in (gold, gold.replace("w1 ", "v1 "), "x " * 5000, "w" * 1_000_000, "a " * 500_000):
        start = time.perf_counter()
        value = ocr_accuracy(pred, record)
        assert time.perf_counter() - start < 0.3, len(pred)
        assert 0.0 <= value <= 1.0


def test_overlong_reference_is_graded_on_prefixes(rec):
    gold = " ".join(f"w{i}" for i in range(10_000))
    start = time.perf_counter()
    assert ocr_accuracy(gold, rec("OCR", gold)) == 1.0
    assert time.perf_counter() - start < 0.5
