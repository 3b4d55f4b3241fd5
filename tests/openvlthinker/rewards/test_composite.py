"""The composite reward on the 60 real sample records, its weights, and its error cases."""

from __future__ import annotations

import json

import pytest

from openvlthinker.data.records import PROBLEM_TYPES
from openvlthinker.rewards import ACCURACY, RewardBreakdown, accuracy, grade, score
from openvlthinker.rewards.choice import parse_options
from openvlthinker.rewards.mathexpr import normalize_math
from openvlthinker.rewards.numparse import parse_number


def respond(answer: str) -> str:
    return f"<thinking>some reasoning</thinking><answer>{answer}</answer>"


def perturbations(record) -> list[str]:
    """Wrong answers of the record's kind: another letter, a scaled number, dropped words, a moved box."""
    gold = record.answer
    kind = record.problem_type
    if kind == "multiple choice":
        return [letter for letter in parse_options(record.options) if letter != gold][:2]
    if kind in ("numerical", "regression"):
        value = parse_number(gold)
        if value == 0:
            return ["1", "-0.5"]  # scaling zero changes nothing
        return [f"{value * 1.1:g}", f"{value * 2:g}"]
    if kind == "math":
        core = normalize_math(gold)
        value = parse_number(core)
        shifted = [f"{value * 1.1:g}", f"{value * 2:g}"] if value else []
        return [f"{core}+1"] + shifted
    if kind == "OCR":
        words = gold.split()
        return [" ".join(words[1:]), " ".join(words[::2])]
    x1, y1, x2, y2 = json.loads(gold)["boxes"]
    dx = (x2 - x1) // 2
    return [json.dumps({"boxes": [x1 + dx, y1, x2 + dx, y2]}), json.dumps({"boxes": [x1, y1, x1 + 1, y1 + 1]})]


def test_registry_covers_every_problem_type():
    assert set(ACCURACY) == set(PROBLEM_TYPES)


def test_sample_gold_answers_score_full_marks(sample_records):
    assert len(sample_records) == 60
    for record in sample_records:
        got = grade(record, respond(record.answer))
        is_json = record.problem_type == "spatial grounding"
        assert got.accuracy == pytest.approx(1.0), record.problem_id
        assert got.format == 1.0
        assert got.structure == (0.5 if is_json else 0.0)
        assert got.overall == pytest.approx(1.5 if is_json else 1.0)


def test_sample_wrong_answers_score_strictly_less(sample_records):
    for record in sample_records:
        best = grade(record, respond(record.answer))
        wrong = perturbations(record)
        assert wrong, record.problem_id
        for answer in wrong:
            got = grade(record, respond(answer))
            assert got.accuracy < best.accuracy, (record.problem_id, answer)
            assert got.overall < best.overall


def test_weights(rec):
    record = rec("numerical", "3")
    assert grade(record, respond("3")) == RewardBreakdown(1.0, 1.0, 0.0, None, 1.0)
    assert grade(record, respond("4")).overall == pytest.approx(0.1)
    assert grade(record, "<answer>3</answer>").overall == pytest.approx(0.9)
    assert grade(record, "<answer>3</answer>", require_thinking=False).overall == pytest.approx(1.0)
    assert grade(record, "the answer is 3").overall == 0.0
    assert score(record, respond("3")) == pytest.approx(1.0)


def test_length_shaping(rec):
    record = rec("numerical", "3")
    got = grade(record, respond("3"), length_score=0.5, length_weight=0.2)
    assert got.length == 0.5
    assert got.overall == pytest.approx(0.7 * 1 + 0.1 + 0.2 * 0.5)
    # The weight only applies when a length score is given.
    assert grade(record, respond("3"), length_weight=0.2).overall == pytest.approx(1.0)
    assert grade(record, respond("3"), length_score=float("nan"), length_weight=0.2).length == 0.0
    assert grade(record, respond("3"), length_score=7.0, length_weight=0.2).length == 1.0
    for bad in (-0.1, 0.95, float("nan")):
        with pytest.raises(ValueError, match="length_weight"):
            grade(record, respond("3"), length_score=1.0, length_weight=bad)


def test_grounding_breakdown(rec):
    record = rec("spatial grounding", '{"boxes": [0, 0, 10, 10]}')
    got = grade(record, respond('{"boxes": [5, 0, 15, 10]}'))
    assert got.structure == 0.5 and got.format == 1.0
    assert got.overall == pytest.approx(0.9 * (50 / 150) + 0.1 + 0.5)
    assert grade(record, respond("[0, 0, 10, 10]")).structure == 0.0


def test_no_answer_means_no_accuracy(rec):
    record = rec("multiple choice", "B", ("A. Yes", "B. No"))
    assert grade(record, "<thinking>B</thinking>").accuracy == 0.0
    assert grade(record, None).overall == 0.0
    assert grade(record, "").to_dict() == {
        "accuracy": 0.0, "format": 0.0, "structure": 0.0, "length": None, "overall": 0.0,
    }


def test_unknown_problem_type_is_a_clear_error(rec):
    record = rec("math", "5")
    with pytest.raises(ValueError, match="valid: .*'multiple choice'"):
        accuracy("poetry", "5", record)
    with pytest.raises(ValueError, match="poetry"):
        accuracy("poetry", None, record)
