"""Prompt templates: thinking vs direct mode, per-type tails, image placement."""

import pytest

from openvlthinker.data import PROBLEM_TYPES, TaskRecord
from openvlthinker.prompts import TAILS, instruction, record_messages, render_question, to_messages


def test_every_problem_type_has_a_tail():
    assert set(TAILS) == set(PROBLEM_TYPES)
    for pt in PROBLEM_TYPES:
        assert instruction(pt, "think").endswith(TAILS[pt])
        assert "<thinking>" in instruction(pt, "think")
        assert "<thinking>" not in instruction(pt, "direct") and "<answer>" in instruction(pt, "direct")


def test_unknown_mode_and_type():
    with pytest.raises(ValueError, match="valid: think, direct"):
        instruction("math", "ponder")
    with pytest.raises(ValueError, match="unknown problem_type"):
        instruction("poetry")


def test_options_appended_once():
    q = render_question("Which?", "multiple choice", ["A. x", "B. y"])
    assert q.count("A. x") == 1
    listed = render_question("Which?\nA. x\nB. y", "multiple choice", ["A. x", "B. y"])
    assert listed.count("A. x") == 1


def test_images_go_where_placeholders_are():
    msgs = to_messages("Compare <image> with <image> please", ["i1", "i2"])
    kinds = [(p["type"], p.get("image") or p.get("text")[:7]) for p in msgs[0]["content"]]
    assert kinds == [("text", "Compare"), ("image", "i1"), ("text", "with"), ("image", "i2"), ("text", "please\n")]


def test_images_without_placeholders_lead_and_extra_placeholders_drop():
    parts = to_messages("What is this?", ["a", "b"])[0]["content"]
    assert [p["type"] for p in parts] == ["image", "image", "text"]
    parts = to_messages("<image> <image> What?", ["a"])[0]["content"]
    assert [p["type"] for p in parts] == ["image", "text"]


def test_record_messages_use_record_images():
    rec = TaskRecord(problem_id="1", problem="<image> Read it.", problem_type="OCR", answer="hi", images=("/x.png",))
    parts = record_messages(rec, mode="direct")[0]["content"]
    assert parts[0] == {"type": "image", "image": "/x.png"}
    assert TAILS["OCR"] in parts[1]["text"] and "<thinking>" not in parts[1]["text"]
