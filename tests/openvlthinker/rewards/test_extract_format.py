"""Answer / thinking extraction and the format and structure rewards."""

from __future__ import annotations

import pytest

from openvlthinker.rewards import (
    extract_answer,
    extract_thinking,
    format_reward,
    structure_reward,
)

GOOD = "<thinking>reason</thinking><answer>B</answer>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<answer>B</answer>", "B"),
        ("<answer>  B \n</answer>", "B"),
        ("<ANSWER>B</Answer>", "B"),
        ("< answer >B< / answer >", "B"),
        ("<answer>A</answer> then <answer>C</answer>", "C"),
        ("<answer>A</answer><answer>unclosed", "A"),
        ("<answer>A<answer>B</answer>", "B"),
        ("no tags at all", None),
        ("<answer>never closed", None),
        ("</answer>B<answer>", None),
        ("", None),
        ("<answer></answer>", ""),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_thinking():
    assert extract_thinking("<thinking> a b </thinking><answer>x</answer>") == "a b"
    assert extract_thinking("<answer>x</answer>") is None
    assert extract_answer(None) is None and extract_thinking(None) is None


@pytest.mark.parametrize(
    ("text", "strict", "lenient"),
    [
        (GOOD, 1.0, 1.0),
        ("  \n" + GOOD + "\n ", 1.0, 1.0),
        ("<thinking>r</thinking>\n\n<answer>B</answer>", 1.0, 1.0),
        ("<answer>B</answer>", 0.0, 1.0),
        ("preamble " + GOOD, 0.0, 0.0),
        (GOOD + " trailing", 0.0, 0.0),
        ("<answer>B</answer><thinking>r</thinking>", 0.0, 0.0),
        ("<thinking>r</thinking>x<answer>B</answer>", 0.0, 0.0),
        ("<thinking>r</thinking><answer>A</answer><answer>B</answer>", 0.0, 0.0),
        ("<thinking>r</thinking><thinking>s</thinking><answer>B</answer>", 0.0, 0.0),
        ("<thinking>r<answer>B</answer>", 0.0, 0.0),
        ("<thinking>r</thinking><answer>B", 0.0, 0.0),
        ("<Thinking>r</Thinking><Answer>B</Answer>", 0.0, 0.0),
        ("", 0.0, 0.0),
    ],
)
def test_format_reward(text, strict, lenient):
    assert format_reward(text) == strict
    assert format_reward(text, require_thinking=False) == lenient


def test_format_reward_is_linear_on_adversarial_repeats():
    text = "<thinking></thinking><answer>" * 50_000 + "</answer>"
    assert format_reward(text) == 0.0


BOX = '{"boxes": [1, 2, 30, 40]}'


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (BOX, 0.5),
        ('{"boxes": [[1, 2, 30, 40], [5, 5, 9, 9]]}', 0.5),
        ("[1, 2, 30, 40]", 0.0),  # a bare list is graded for accuracy but is not the JSON asked for
        ('{"bbox_2d": [1, 2, 30, 40]}', 0.0),
        ('{"boxes": [1, 2, 30]}', 0.0),
        ('{"boxes": [1, 2, 30, true]}', 0.0),
        ('{"boxes": []}', 0.0),
        ('{"boxes": [1, 2, 30, 40]', 0.0),
        ("not json", 0.0),
    ],
)
def test_structure_reward_grounding(answer, expected):
    assert structure_reward(f"<thinking>r</thinking><answer>{answer}</answer>", "spatial grounding") == expected


def test_structure_needs_format_and_a_json_type():
    assert structure_reward(f"junk <answer>{BOX}</answer>", "spatial grounding") == 0.0
    assert structure_reward(f"<answer>{BOX}</answer>", "spatial grounding") == 0.0
    assert structure_reward(f"<answer>{BOX}</answer>", "spatial grounding", require_thinking=False) == 0.5
    # Only JSON-answer types earn structure; a valid box answer to another type earns nothing.
    assert structure_reward(f"<thinking>r</thinking><answer>{BOX}</answer>", "math") == 0.0
    assert structure_reward(GOOD, "multiple choice") == 0.0


def test_structure_unknown_type():
    with pytest.raises(ValueError, match="valid"):
        structure_reward(GOOD, "poetry")
