"""The adaptive reasoning policy: forced efforts, auto decisions, budgets."""

import pytest

from openvlthinker.reasoning import BUDGETS, is_perception, plan


def test_forced_efforts():
    assert plan("none", "How many circles?").mode == "direct"
    efforts = ("minimal", "low", "medium", "high", "xhigh", "max")
    for effort in efforts:
        p = plan(effort, "What is the bounding box of the cat?")
        assert p.mode == "think" and p.budget == BUDGETS[effort]
    assert [BUDGETS[e] for e in efforts] == sorted(set(BUDGETS.values()))  # each effort thinks longer
    assert plan("high", budgets={"high": 7}).budget == 7


@pytest.mark.parametrize("question", [
    "<image> What is the bounding box of the small red circle?",
    "Please provide the bounding box coordinate of the region this sentence describes: black box by hand.",
    "<image> What does the text in the image say?",
    "Transcribe the sign.",
    "<image> What colour is the large square?",
    "Locate the dog.",
])
def test_auto_answers_perception_directly(question):
    p = plan("auto", question)
    assert (p.mode, p.budget) == ("direct", 0)


@pytest.mark.parametrize("question", [
    "<image> Remove all circles. How many objects are left?",
    "<image> How many times wider is the large square than the small circle?",
    "<image> Is the red circle left of the blue square?\nA. yes\nB. no",
    "<image> What is the value of bar B?",
    "Why is the sky blue?",
    "Where is the cat relative to the dog, and how many legs do they have together?",
])
def test_auto_thinks_on_multi_step(question):
    p = plan("auto", question)
    assert p.mode == "think" and p.budget == BUDGETS["medium"]


def test_known_types_decide():
    assert is_perception("anything", problem_type="spatial grounding")
    assert is_perception("anything", task_type="ocr")
    assert not is_perception("What is the bounding box?", task_type="math_reasoning")


def test_unknown_effort():
    with pytest.raises(ValueError, match="valid: none, minimal, low, medium, high, xhigh, max, auto"):
        plan("huge")
