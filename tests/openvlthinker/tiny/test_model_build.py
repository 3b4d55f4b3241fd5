"""Tiny model plumbing: tokenizer, chat template, config and the saved folder layout."""

import json

import pytest
import torch

from openvlthinker.tiny.build import (
    REASONING_TOKENS, SPECIAL_TOKENS, build_tiny, folder_size_mb, sample_texts, tiny_config, train_tokenizer,
)
from openvlthinker.tiny.chat_template import CHAT_TEMPLATE


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(sample_texts(), vocab_size=3000)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny") / "model", sample_texts(), seed=0)


def test_special_tokens_are_single_special_ids(tok):
    for t in SPECIAL_TOKENS:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids) == [t]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert set(SPECIAL_TOKENS) <= set(tok.all_special_tokens)


def test_reasoning_tags_single_ids_and_visible_after_skip_special(tok):
    text = "<thinking>two red</thinking><answer>2</answer><|im_end|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    for t in REASONING_TOKENS:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
        assert tok.convert_tokens_to_ids(t) in ids
    assert tok.decode(ids, skip_special_tokens=True) == "<thinking>two red</thinking><answer>2</answer>"


@pytest.mark.parametrize("text", [
    "What is the bounding box of the small red circle?",
    '{"boxes": [[12, 34, 56, 78]]}',
    "Unseen wörds, émojis 🙂 and\nnew lines\t tabs.",
])
def test_text_round_trip(tok, text):
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_digits_are_one_token_each(tok):
    tokens = tok.convert_ids_to_tokens(tok("x=2024, 128", add_special_tokens=False)["input_ids"])
    digits = [t.lstrip("Ġ") for t in tokens if any(ch.isdigit() for ch in t)]
    assert digits == list("2024128")


def test_chat_template_images_text_and_generation_prompt(tok):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "image", "image": "x.png"},
                                     {"type": "text", "text": "Same shape?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "<answer>yes</answer>"}]},
        {"role": "user", "content": "Why?"},
    ]
    out = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    pic = "<|vision_start|><|image_pad|><|vision_end|>"
    assert out == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        f"<|im_start|>user\n{pic}{pic}Same shape?<|im_end|>\n"
        "<|im_start|>assistant\n<answer>yes</answer><|im_end|>\n"
        "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    )
    no_prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=False)
    assert no_prompt.endswith("Same shape?<|im_end|>\n")
    assert tok.chat_template == CHAT_TEMPLATE


def test_config_matches_tokenizer_and_architecture(tok):
    cfg = tiny_config(tok)
    assert cfg.model_type == "qwen3_vl" and cfg.text_config.vocab_size == len(tok)
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    v, t = cfg.vision_config, cfg.text_config
    assert v.out_hidden_size == t.hidden_size and all(0 <= i < v.depth for i in v.deepstack_visual_indexes)
    assert sum(t.rope_parameters["mrope_section"]) == t.head_dim // 2
    assert (v.patch_size, v.spatial_merge_size, v.temporal_patch_size) == (16, 2, 2)


def test_config_overrides_route_to_sub_configs(tok):
    cfg = tiny_config(tok, text_num_hidden_layers=2, text_head_dim=32, vision_hidden_size=128,
                      vision_num_heads=4, text_hidden_size=96)
    assert cfg.text_config.num_hidden_layers == 2 and cfg.vision_config.hidden_size == 128
    assert cfg.vision_config.out_hidden_size == 96
    assert sum(cfg.text_config.rope_parameters["mrope_section"]) == 16


def test_default_config_fits_20mb_even_with_4000_token_vocab(tok):
    cfg = tiny_config(tok, text_vocab_size=4000)
    from transformers import Qwen3VLForConditionalGeneration

    with torch.device("meta"):
        n = sum(p.numel() for p in Qwen3VLForConditionalGeneration(cfg).parameters())
    assert n * 4 <= 20e6  # float32


def test_built_folder_is_complete_and_small(folder):
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
            "processor_config.json", "generation_config.json"} <= names
    assert folder_size_mb(folder) <= 20
    gen = json.loads((folder / "generation_config.json").read_text())
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "Qwen2Tokenizer"
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(folder)
    assert reloaded.convert_tokens_to_ids("<|im_end|>") in gen["eos_token_id"]
    text = "<thinking>3 red</thinking><answer>[1, 2]</answer>"
    assert reloaded(text)["input_ids"] == train_tokenizer(sample_texts())(text)["input_ids"]


def test_build_is_deterministic(tmp_path, folder):
    again = build_tiny(tmp_path / "again", sample_texts(), seed=0)
    assert (again / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
