"""Contract fuzzing: any string in, a finite in-range float out, never an exception."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openvlthinker.data.records import TaskRecord
from openvlthinker.rewards import ACCURACY, extract_answer, format_reward, grade

RECORDS = [
    TaskRecord(problem_id="mc", problem="q", problem_type="multiple choice", answer="B", options=("A. Yes", "B. No")),
    TaskRecord(problem_id="num", problem="q", problem_type="numerical", answer="40.33"),
    TaskRecord(problem_id="reg", problem="q", problem_type="regression", answer="2.55"),
    TaskRecord(problem_id="reg0", problem="q", problem_type="regression", answer="0.0"),
    TaskRecord(problem_id="ocr", problem="q", problem_type="OCR", answer="the quick brown fox"),
    TaskRecord(problem_id="math", problem="q", problem_type="math", answer="\\frac{3}{4}"),
    TaskRecord(problem_id="box", problem="q", problem_type="spatial grounding", answer='{"boxes": [577, 232, 899, 786]}'),
]

NASTY = [
    "", " ", "nan", "NaN", "inf", "-inf", "1e999", "-1e999", "0/0", "1/0", "[]", "{}", "null",
    "[nan, nan, nan, nan]", '{"boxes": [1e999, 1, 2, 3]}', '{"boxes": "x"}', "\x00", "<answer>", "</answer>",
    "$", "$$", "\\frac{", "\\boxed{", "^" * 50, "!" * 50, "9" * 5000, "(" * 2000,
]

number_like = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.sampled_from(NASTY + ["1e-999", "-0", "+0.0", "1,000,000", "1/3"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=6) | st.dictionaries(st.sampled_from(["boxes", "bbox_2d", "x"]), kids, max_size=3),
    max_leaves=20,
)
json_like = st.one_of(
    json_values.map(json.dumps),
    json_values.map(lambda v: json.dumps({"boxes": v})),
    st.lists(number_like, max_size=6).map(lambda xs: '{"boxes": [' + ", ".join(xs) + "]}"),
    json_values.map(json.dumps).map(lambda s: s[: len(s) // 2]),
)
answers = st.one_of(st.text(max_size=200), number_like, json_like)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(breakdown) -> None:
    assert 0.0 <= breakdown.accuracy <= 1.0
    assert breakdown.format in (0.0, 1.0)
    assert breakdown.structure in (0.0, 0.5)
    assert math.isfinite(breakdown.overall) and 0.0 <= breakdown.overall <= 1.5


@FUZZ
@given(st.text())
def test_raw_text_never_breaks_grading(text):
    for record in RECORDS:
        check(grade(record, text))
    assert format_reward(text) in (0.0, 1.0)


@FUZZ
@given(answers, st.booleans())
def test_wrapped_answers_never_break_grading(answer, thinking):
    text = ("<thinking>t</thinking>" if thinking else "") + f"<answer>{answer}</answer>"
    for record in RECORDS:
        check(grade(record, text, require_thinking=thinking))


@FUZZ
@given(answers)
def test_graders_directly(answer):
    for record in RECORDS:
        value = ACCURACY[record.problem_type](answer, record)
        assert isinstance(value, float) and 0.0 <= value <= 1.0


@FUZZ
@given(answers, st.floats(allow_nan=True, allow_infinity=True), st.floats(0.0, 0.9))
def test_length_shaped_overall_stays_in_range(answer, length_score, weight):
    for record in RECORDS:
        check(grade(record, f"<answer>{answer}</answer>", length_score=length_score, length_weight=weight))


@FUZZ
@given(st.lists(st.sampled_from(["<answer>", "</answer>", "<thinking>", "</thinking>", "< Answer >", "x", " "]), max_size=30))
def test_tag_soup(parts):
    text = "".join(parts)
    answer = extract_answer(text)
    assert answer is None or isinstance(answer, str)
    for record in RECORDS:
        check(grade(record, text))


@pytest.mark.parametrize("answer", NASTY)
def test_nasty_answers_score_zero(answer):
    for record in RECORDS:
        got = grade(record, f"<thinking>t</thinking><answer>{answer}</answer>")
        check(got)
        assert got.accuracy == 0.0, (record.problem_id, answer)


@pytest.mark.parametrize(
    "text",
    [
        "x" * 1_000_000,
        "<answer>" + "1" * 1_000_000 + "</answer>",
        "<thinking>" + "a " * 500_000 + "</thinking><answer>B</answer>",
        "<answer>" + "word " * 200_000 + "</answer>",
        "<answer>[" + "1," * 300_000 + "]</answer>",
        "<answer>" * 100_000,
        "<" * 1_000_000,
    ],
)
def test_megabyte_responses(text):
    for record in RECORDS:
        check(grade(record, text))
