"""Thinking budget: the tracker, the generation logits processor built on it, and the
forcing of multi-token closing tags (real Qwen tokenizers) in sequence."""

import pytest
import torch

from openvlthinker.generation import ThinkingBudget
from openvlthinker.thinking import ThinkTracker, close_tag_suffix_ids, count_thinking


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from openvlthinker.models import load_processor
    from openvlthinker.tiny.build import build_tiny, sample_texts

    return load_processor(build_tiny(tmp_path_factory.mktemp("tiny"), sample_texts())).tokenizer


def _decode_with(tracker, tokenizer, proposals, steps):
    """Feed `proposals` (what the model would say) through the tracker; forced tokens win."""
    text, offsets, ids = "", [], []
    it = iter(proposals)
    for _ in range(steps):
        forced = tracker.forced_next(text, len(ids))
        token = forced if forced is not None else next(it)
        ids.append(token)
        text = tokenizer.decode(ids, skip_special_tokens=False)
        offsets.append(len(text))
        tracker.observe(text, offsets)
    return ids, text


def _through_logits_processor(tokenizer, proposals, budget, steps):
    """The same decode driven by the ThinkingBudget logits processor, as model.generate uses it."""
    proc = ThinkingBudget(tokenizer, [budget], prompt_len=0)
    ids, it = [], iter(proposals)
    vocab = len(tokenizer)
    for _ in range(steps):
        proposal = next(it)
        scores = torch.zeros(1, vocab)
        scores[0, proposal] = 1.0
        token = int(proc(torch.tensor([ids], dtype=torch.long).reshape(1, len(ids)), scores).argmax())
        if token != proposal:
            it = iter([proposal, *it])  # forced: the model's proposal is not consumed
        ids.append(token)
    return ids


@pytest.mark.parametrize("budget", [1, 3, 6])
def test_single_token_tags_close_exactly_at_the_budget(tokenizer, budget):
    open_id, close_id = tokenizer.convert_tokens_to_ids(["<thinking>", "</thinking>"])
    words = tokenizer.encode(" I see a red circle and two squares", add_special_tokens=False)
    model_says = tokenizer.encode("So", add_special_tokens=False) + [open_id] + words * 3
    tracker = ThinkTracker(close_tag_suffix_ids(tokenizer), budget=budget)
    ids, text = _decode_with(tracker, tokenizer, model_says, steps=20)
    assert ids == _through_logits_processor(tokenizer, model_says, budget, steps=20)
    start = ids.index(open_id)
    assert ids.index(close_id) == start + budget + 1
    assert tracker.budget_hit and tracker.thinking_tokens(len(ids)) == count_thinking(tokenizer, ids) == budget + 2


def test_uncapped_rows_are_left_alone(tokenizer):
    proc = ThinkingBudget(tokenizer, [None, 0], prompt_len=0)
    open_id = tokenizer.convert_tokens_to_ids("<thinking>")
    scores = torch.randn(2, len(tokenizer))
    out = proc(torch.tensor([[open_id] * 5, [open_id] * 5]), scores.clone())
    assert torch.equal(out, scores)
    assert count_thinking(tokenizer, tokenizer.encode("no tags here", add_special_tokens=False)) == 0


def test_multi_token_tags_are_forced_in_sequence(tokenizer):
    # "<think>" / "</think>" are not in the tiny vocabulary: several tokens each, like a real Qwen tokenizer.
    close_ids = close_tag_suffix_ids(tokenizer, "</think>")
    assert len(close_ids[0]) > 1
    open_ids = tokenizer.encode("<think>", add_special_tokens=False)
    words = tokenizer.encode(" red circle blue square" * 3, add_special_tokens=False)
    tracker = ThinkTracker(close_ids, budget=4, open_tag="<think>", close_tag="</think>")
    ids, text = _decode_with(tracker, tokenizer, open_ids + words, steps=len(open_ids) + 4 + len(close_ids[0]) + 2)
    n_open = len(open_ids)
    assert ids[n_open + 4:n_open + 4 + len(close_ids[0])] == close_ids[0]
    assert "</think>" in text and tracker.budget_hit and not tracker.is_open
    assert tracker.thinking_tokens(len(ids)) == n_open + 4 + len(close_ids[0])


def test_started_closing_tag_is_completed_not_repeated(tokenizer):
    close_ids = close_tag_suffix_ids(tokenizer, "</think>")
    tracker = ThinkTracker(close_ids, budget=2, open_tag="<think>", close_tag="</think>")
    tracker.observe("<think>", [7])  # opened at token 0
    tracker.observe("<think>x", [7, 8])
    tracker.observe("<think>x</", [7, 8, 10])
    first = tracker.forced_next("<think>x</", 3)
    assert [first] == close_ids[2][:1]  # only "think>" is forced


def test_prefix_opened_block_counts_from_the_first_completion_token(tokenizer):
    tracker = ThinkTracker(close_tag_suffix_ids(tokenizer), budget=2, prefix="Let me see. <thinking>")
    assert tracker.is_open and tracker.forced_next("", 0) is None
    assert tracker.forced_next("ab", 2) == tokenizer.convert_tokens_to_ids("</thinking>")
    closed = ThinkTracker(close_tag_suffix_ids(tokenizer), budget=2, prefix="<thinking>x</thinking>")
    assert not closed.is_open and closed.forced_next("abc", 3) is None


def test_no_budget_never_forces(tokenizer):
    tracker = ThinkTracker(close_tag_suffix_ids(tokenizer), budget=None, prefix="<thinking>")
    assert all(tracker.forced_next("x" * n, n) is None for n in range(50))
