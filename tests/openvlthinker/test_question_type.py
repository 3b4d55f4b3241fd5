"""Reading the answer format a question asks for from its text."""

import pytest

from openvlthinker.question_type import infer_problem_type
from openvlthinker.tiny.shapeworld import split


def test_every_shapeworld_eval_question_is_read_as_its_problem_type():
    samples = split("eval", 40)
    wrong = [(s.record.problem, s.record.problem_type, infer_problem_type(s.record.problem)) for s in samples
             if infer_problem_type(s.record.problem) != s.record.problem_type]
    assert not wrong, wrong[:5]


@pytest.mark.parametrize("question, expected", [
    ("Which is larger, 7 or 3? (A) 7 (B) 3", "multiple choice"),
    ("<image>\nWhat colour is the car?\nA. red\nB. blue\nC. green", "multiple choice"),
    ("What is the bounding box of the dog?", "spatial grounding"),
    ("Transcribe the sign.", "OCR"),
    ("What does the caption say?", "OCR"),
    ("How many times taller is the left tree than the right one?", "regression"),
    ("How many apples are on the table?", "math"),
    ("What is the value of the third bar?", "numerical"),
    ("Describe the image.", None),
    ("hello", None),
    ("Why is the sky blue?", None),
    ("A. Lincoln was a president. Who came after him?", None),  # one lettered line is not a list of options
])
def test_clear_question_shapes_and_open_questions(question, expected):
    assert infer_problem_type(question) == expected
