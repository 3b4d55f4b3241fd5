"""The answer grammar: what it admits, token by token, on the shipped tokenizer (llguidance)."""

import json

import pytest
import torch

from openvlthinker.models import DEFAULT_MODEL
from serve.engines.grammar import GrammarMasks, answer_grammar, schema_error

SCHEMA = json.dumps({"type": "object", "properties": {"shape": {"enum": ["circle", "square"]}},
                     "required": ["shape"], "additionalProperties": False})


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def masks(tokenizer):
    return GrammarMasks(tokenizer, tokenizer.convert_tokens_to_ids("<|im_end|>"))


def _allowed(masks, matcher, vocab):
    logits = torch.zeros(1, vocab)
    masks.apply(logits, [0], [matcher])
    return set(torch.nonzero(logits[0] == 0).flatten().tolist())


def _walk(masks, tokenizer, start, text):
    matcher = masks.matcher(SCHEMA, start)
    vocab = len(tokenizer) + 5  # a model vocabulary wider than the tokenizer's
    for token in tokenizer.encode(text, add_special_tokens=False):
        allowed = _allowed(masks, matcher, vocab)
        assert token in allowed and not allowed & set(range(len(tokenizer), vocab))
        assert matcher.consume_token(token), matcher.get_error()
    return matcher, _allowed(masks, matcher, vocab)


def test_single_token_tags_are_named_by_id_and_others_spelt(tokenizer):
    grammar = answer_grammar(SCHEMA, tokenizer, "think")
    assert f"<[{tokenizer.convert_tokens_to_ids('<thinking>')}]>" in grammar
    assert '"<answer>"' in answer_grammar(SCHEMA, None, "answer")
    assert '"whitespace_flexible": false' in grammar


@pytest.mark.parametrize("start, text", [
    ("answer", '<answer>{"shape":"circle"}</answer>'),
    ("think", '<thinking>I see a round one.</thinking>\n<answer>{"shape":"square"}</answer>'),
])
def test_a_conforming_completion_is_admitted_and_then_only_the_end(masks, tokenizer, start, text):
    _, allowed = _walk(masks, tokenizer, start, text)
    assert allowed == {masks.end_id}


def test_a_wrong_value_and_free_text_are_masked(masks, tokenizer):
    matcher, allowed = _walk(masks, tokenizer, "answer", '<answer>{"shape":"')
    assert tokenizer.encode("tri", add_special_tokens=False)[0] not in allowed
    matcher = masks.matcher(SCHEMA, "answer")
    allowed = _allowed(masks, matcher, len(tokenizer))
    opening = tokenizer.convert_tokens_to_ids("<answer>")
    assert opening in allowed and all(not tokenizer.decode([t]).strip() for t in allowed - {opening})


def test_schema_error_names_the_fault():
    assert schema_error(SCHEMA) == ""
    assert "objectx" in schema_error(json.dumps({"type": "objectx"}))
