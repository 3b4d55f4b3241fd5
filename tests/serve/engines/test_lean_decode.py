"""Lean decoding step and lean prefill: the tokens and logprobs of the model's own forward, adapters included."""


import pytest
import torch

from serve.engines.lean_decode import LeanDecoder


@pytest.fixture(scope="module")
def engines(engine_variants):
    """The same model twice, with the same two LoRA versions: lean decoding steps and full forwards."""
    return engine_variants("lean_decode", (True, False), adapters=2)


def test_lean_and_full_forward_agree_on_a_mixed_batch(engines, h):
    img = h.shape_image
    plan = [(None, h.user("How many red circles?", [img()])),
            ("v1", h.user("How many red circles?", [img()])),
            ("v2", h.user("Count.")),
            ("v1", h.user("What is the box?", [img(96, 160, "blue"), img()])),
            (None, h.user("Count."))]
    # Sampled at temperature 1 with seeds, so every step's whole distribution matters, not only the argmax.
    reqs = [h.request(m, max_tokens=24, adapter=a, rid=str(i), temperature=1.0, seed=i, top_logprobs=3)
            for i, (a, m) in enumerate(plan)]
    lean = [res for _, res in h.run_many(engines[True], reqs)]
    full = [res for _, res in h.run_many(engines[False], reqs)]
    for a, b in zip(lean, full):
        assert a.completion_token_ids == b.completion_token_ids
        assert a.completion_logprobs == pytest.approx(b.completion_logprobs, abs=1e-4)
        assert [[t for t, _ in alts] for alts in a.top_logprobs] == [[t for t, _ in alts] for alts in b.top_logprobs]
    assert len({tuple(r.completion_token_ids) for r in lean}) > 2  # the rows really differ


def test_lean_prefill_equals_the_model_forward_on_a_padded_mixed_batch(tiny_dir, h):
    from transformers import DynamicCache

    from openvlthinker.models import load
    from serve.engines.inputs import render
    from serve.engines.lean_prefill import LeanPrefill
    from serve.engines.running import prefill_positions

    model, processor = load(str(tiny_dir))
    img = h.shape_image
    convs = [h.user("How many red circles are in this picture?", [img()]), h.user("Count."),
             h.user("What is the box?", [img(96, 160, "blue"), img()])]
    for group in (convs, convs[1:2]):  # padded rows with one and two images and none; text only
        texts = [render(processor, m) for m in group]
        images = [part["image"] for m in group for part in m[0]["content"] if part.get("type") == "image"]
        enc = dict(processor(text=texts, images=images or None, return_tensors="pt", padding=True, padding_side="left"))
        positions = prefill_positions(model, enc)
        with torch.inference_mode():
            ref_cache, lean_cache = DynamicCache(), DynamicCache()
            ref = model(**enc, position_ids=positions, cache=ref_cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            prefill = LeanPrefill.build(model)
            assert prefill.handles(enc)
            lean = prefill(enc, positions, lean_cache, None)
            again = prefill(enc, positions, DynamicCache(), None)  # the vision geometry now comes from its cache
        assert torch.allclose(lean, ref, atol=1e-5) and torch.equal(again, lean)
        real = enc["attention_mask"].bool()[:, None, :, None]
        for a, b in zip(lean_cache.layers, ref_cache.layers):  # padding columns may differ; they are masked
            assert torch.allclose(a.keys * real, b.keys * real, atol=1e-5)
            assert torch.allclose(a.values * real, b.values * real, atol=1e-5)


def test_lean_prefill_leaves_lora_in_the_vision_tower_to_the_model(tiny_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from openvlthinker.models import load
    from serve.engines.lean_prefill import LeanPrefill

    model, _ = load(str(tiny_dir))
    prefill = LeanPrefill.build(model)
    images = {"input_ids": None, "pixel_values": None}
    assert prefill.handles(images) and prefill.handles({"input_ids": None})
    get_peft_model(model, LoraConfig(r=2, target_modules=["qkv"]))  # the vision blocks' attention
    assert not prefill.handles(images) and prefill.handles({"input_ids": None})
    assert not prefill.handles({"pixel_values_videos": None})


def test_only_known_decoders_get_a_lean_step(tiny_dir):
    from openvlthinker.models import load

    model, _ = load(str(tiny_dir))
    assert LeanDecoder.build(model) is not None
    assert LeanDecoder.build(torch.nn.Linear(2, 2)) is None


def test_patch_embedding_as_a_matmul_equals_the_convolution(tiny_dir):
    from openvlthinker.models import load
    from serve.engines.lean_decode import linear_patch_embed

    model, _ = load(str(tiny_dir))
    embed = model.model.visual.patch_embed
    pixels = torch.randn(64, embed.in_channels * embed.temporal_patch_size * embed.patch_size ** 2)
    with torch.inference_mode():
        expected = embed(pixels)
        assert linear_patch_embed(model)
        assert torch.allclose(embed(pixels), expected, atol=1e-5)
    assert not linear_patch_embed(torch.nn.Linear(2, 2))
