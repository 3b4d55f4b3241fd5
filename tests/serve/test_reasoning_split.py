"""The thinking/answer splitter: whole-text rules, and streaming that agrees with them however tokens fall."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serve.reasoning_split import TAGS, ReasoningSplitter, split_text

WELL_FORMED = [
    "<thinking>I see 3 circles.</thinking><answer>3</answer>",
    "<thinking>\n  two steps:\n a < b, so B  \n</thinking>\n\n<answer> B </answer>",
    '<thinking>box</thinking><answer>{"boxes": [1, 2, 30, 40]}</answer>',
    "<answer>direct</answer>",
    "no tags at all, a < b <x>",
    "<thinking>truncated by max_tokens",
    "<thinking>t</thinking>untagged answer",
    # Stray text between the blocks (the shipped model wrote this one to a text-only question):
    # held after </thinking>, dropped at <answer>, so the stream still equals the final split.
    "<thinking>The green square is notes.</thinking> to is no. 72 / 72.</thinking><answer>no</answer>",
    "<thinking>t</thinking> x <thinking>u</thinking>y",
]


def stream(text, cuts, prefix=""):
    s = ReasoningSplitter(prefix)
    pieces, last = [], 0
    for cut in sorted(set(cuts)) + [len(text)]:
        pieces += s.feed(text[last:cut])
        last = cut
    pieces += s.finish()
    reasoning = "".join(t for k, t in pieces if k == "reasoning")
    content = "".join(t for k, t in pieces if k == "content")
    return pieces, reasoning, content


@pytest.mark.parametrize("text, thinking, answer", [
    (WELL_FORMED[0], "I see 3 circles.", "3"),
    (WELL_FORMED[1], "two steps:\n a < b, so B", "B"),
    (WELL_FORMED[3], "", "direct"),
    (WELL_FORMED[4], "", "no tags at all, a < b <x>"),
    (WELL_FORMED[5], "truncated by max_tokens", ""),
    (WELL_FORMED[6], "t", "untagged answer"),
    ("junk<thinking>t</thinking>after", "t", "after"),  # untagged: the text after the thinking block
    ("junk <answer>A</answer> trailing", "", "A"),  # tagged answer wins over stray text
    ("<thinking>a</thinking><answer>x</answer></answer><thinking>", "a", "x"),  # stray tags never shown
    ("<answer>ends with <", "", "ends with <"),
    ("", "", ""),
])
def test_split_text(text, thinking, answer):
    assert split_text(text) == (thinking, answer)


@pytest.mark.parametrize("text", WELL_FORMED)
def test_every_single_cut_streams_the_same_split(text):
    expected = split_text(text)
    for cut in range(len(text) + 1):
        pieces, reasoning, content = stream(text, [cut])
        assert (reasoning, content) == expected, cut
        assert not any(tag in t for _, t in pieces for tag in TAGS)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(WELL_FORMED), st.lists(st.integers(min_value=0, max_value=80), max_size=12))
def test_any_tokenisation_streams_the_same_split(text, cuts):
    cuts = [c for c in cuts if c <= len(text)]
    pieces, reasoning, content = stream(text, cuts)
    assert (reasoning, content) == split_text(text)
    assert all(t for _, t in pieces)  # never an empty delta


def test_plain_answers_stream_at_once_and_text_after_thinking_waits_for_the_answer_tag():
    s = ReasoningSplitter()
    assert s.feed("plain answer, ") == [("content", "plain answer,")]  # no tags: nothing to wait for
    s = ReasoningSplitter()
    assert s.feed("<thinking>t</thinking> stray") == [("reasoning", "t")]  # may still be followed by <answer>
    assert s.feed("<answer>A") == [("content", "A")] and s.finish() == []
    s = ReasoningSplitter()
    s.feed("<thinking>t</thinking> the answer")
    assert s.finish() == [("content", "the answer")]  # no <answer> came: it was the answer


def test_tag_split_across_tokens_is_held_back():
    s = ReasoningSplitter()
    assert s.feed("<thi") == []
    assert s.feed("nking>ok") == [("reasoning", "ok")]
    assert s.feed("</") == []
    assert s.feed("thinking><ans") == []
    assert s.feed("wer>42</answer>") == [("content", "42")]
    assert s.finish() == []


def test_a_lone_angle_bracket_is_text_once_decided():
    s = ReasoningSplitter()
    assert s.feed("a <") == [("content", "a")]
    assert s.feed(" b") == [("content", " < b")]


def test_prefix_sets_the_starting_state():
    assert split_text("still thinking</thinking><answer>2</answer>", prefix="<thinking>") == ("still thinking", "2")
    _, reasoning, content = stream("more</thinking>ans", [2, 7], prefix="<thinking>I think")
    assert (reasoning, content) == ("more", "ans")
